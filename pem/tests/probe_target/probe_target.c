/* A program with known functions for the dynamic probe tests and benchmark.
 *
 *   probe_target calls N LABEL [wait]  px_add(i, 7, LABEL) for i < N, then px_sleepy(30)
 *                                      (with `wait`: after reading a line from stdin)
 *   probe_target hot N                 N calls of px_hot; prints nanoseconds per call
 *   probe_target paced N PER_SEC       N calls of px_hot, spread evenly at PER_SEC
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

__attribute__((noinline)) long px_add(long a, int b, const char *label)
{
	__asm__ volatile("" ::: "memory");
	return a * 1000 + b + (long)strlen(label);
}

__attribute__((noinline)) int px_sleepy(int ms)
{
	usleep(ms * 1000);
	return ms * 2;
}

__attribute__((noinline)) long px_eight(long a, long b, long c, long d, long e, long f, long g, long h)
{
	__asm__ volatile("" ::: "memory");
	return a + b + c + d + e + f + g + h;
}

__attribute__((noinline)) long px_hot(long i)
{
	__asm__ volatile("" ::: "memory");
	return i + 1;
}

static long now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000000L + ts.tv_nsec;
}

int main(int argc, char **argv)
{
	if (argc >= 3 && strcmp(argv[1], "hot") == 0) {
		long n = atol(argv[2]), sum = 0;
		long start = now_ns();
		for (long i = 0; i < n; i++)
			sum += px_hot(i);
		long elapsed = now_ns() - start;
		printf("%.2f %ld\n", (double)elapsed / (double)n, sum);
		return 0;
	}
	if (argc >= 4 && strcmp(argv[1], "paced") == 0) {
		long n = atol(argv[2]), rate = atol(argv[3]), sum = 0;
		long start = now_ns();
		for (long i = 0; i < n; i++) {
			long due = start + i * (1000000000L / rate);
			while (now_ns() < due)
				;
			sum += px_hot(i);
		}
		printf("%ld\n", sum);
		return 0;
	}
	if (argc >= 4 && strcmp(argv[1], "calls") == 0) {
		if (argc >= 5 && strcmp(argv[4], "wait") == 0) {
			char line[16];
			if (!fgets(line, sizeof(line), stdin))
				return 1;
		}
		long n = atol(argv[2]), sum = 0;
		for (long i = 0; i < n; i++)
			sum += px_add(i, 7, argv[3]);
		sum += px_sleepy(30);
		sum += px_eight(1, 2, 3, 4, 5, 6, 7, 8);
		printf("done %ld\n", sum);
		return 0;
	}
	fprintf(stderr, "usage: probe_target calls N LABEL [wait] | hot N\n");
	return 2;
}
