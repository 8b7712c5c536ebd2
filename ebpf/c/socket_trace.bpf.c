// SPDX-License-Identifier: GPL-2.0
/*
 * Socket tracer: syscall tracepoints that record TCP connection opens and closes,
 * and the bytes that cross each traced connection, into one ring buffer.
 *
 * Only file descriptors that became connections through connect() or accept() are
 * traced: every other read or write costs one failed hash lookup and nothing more.
 * Minimum kernel version: 5.15 (bpf_task_pt_regs; ring buffer since 5.8).
 */
#include <linux/bpf.h>
#include <linux/types.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

#include "socket_trace.h"
#include "kernel_types.h"

#define AF_INET 2
#define AF_INET6 10
#define EINPROGRESS 115

/* Tracepoint contexts, as /sys/kernel/tracing/events/syscalls/<name>/format lays them out. */
struct sys_enter_ctx {
	__u64 common;
	__s32 syscall_nr;
	__u32 _pad;
	__u64 args[6];
};

struct sys_exit_ctx {
	__u64 common;
	__s32 syscall_nr;
	__u32 _pad;
	__s64 ret;
};

struct sched_process_exit_ctx {
	__u64 common;
	char comm[16];
	__s32 pid;
	__s32 prio;
	__u8 group_dead;
};

enum io_buffer_kind {
	IO_PLAIN = 1,  /* read/write/recvfrom/sendto: one buffer */
	IO_IOVEC = 2,  /* readv/writev: an iovec array */
	IO_MSGHDR = 3, /* recvmsg/sendmsg: a msghdr holding an iovec array */
};

struct iovec_user {
	__u64 base;
	__u64 len;
};

/* One data event as it is assembled before it goes into the ring buffer. The payload
 * has twice the room a chunk needs so that (offset < MAX) + (length <= MAX) is provably
 * in bounds without exact arithmetic. */
struct data_scratch {
	struct px_data_event event;
	__u8 payload[2 * PX_MAX_CHUNK];
};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 8 << 20); /* replaced by the PEM's setting at load */
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct px_config);
} config SEC(".maps");

/* (tgid << 32 | fd) -> connection. LRU so that a flood of connections cannot fill it. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct px_conn_info);
} conns SEC(".maps");

/* (tgid << 32 | fd) -> generation of a connection whose payload the PEM does not want
 * (no protocol it parses): its bytes are still counted, not copied. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, __u64);
} muted SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct data_scratch);
} scratch SEC(".maps");

/* Records lost because the ring buffer was full (the PEM fell behind), per CPU. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} ringbuf_drops SEC(".maps");

static __always_inline void count_drop(void)
{
	__u32 zero = 0;
	__u64 *drops = bpf_map_lookup_elem(&ringbuf_drops, &zero);
	if (drops)
		*drops += 1;
}

static __always_inline struct px_config *get_config(void)
{
	__u32 zero = 0;
	return bpf_map_lookup_elem(&config, &zero);
}

/* The tgid of the caller, or 0 when it must not be traced (the PEM itself, or a
 * process outside the configured cgroup). */
static __always_inline __u32 traced_tgid(__u64 pid_tgid)
{
	__u32 tgid = pid_tgid >> 32;
	struct px_config *cfg = get_config();
	if (!cfg || cfg->self_tgid == tgid)
		return 0;
	/* A PEM scoped to one cgroup (a node's, when several share a machine) sees only
	 * the processes under it. */
	if (cfg->cgroup_id && bpf_get_current_ancestor_cgroup_id(cfg->cgroup_level) != cfg->cgroup_id)
		return 0;
	return tgid;
}

/* Waking the PEM for every record would cost a context switch per syscall traced; it
 * polls the ring buffer on a short timer instead, and is woken early only when enough
 * has queued up that waiting for the timer could fill the buffer. */
static __always_inline __u64 submit_flags(void)
{
	struct px_config *cfg = get_config();
	__u64 queued = bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA);
	return cfg && queued >= cfg->wakeup_bytes ? BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP;
}

static __always_inline __u64 conn_key(__u32 tgid, __s32 fd)
{
	return ((__u64)tgid << 32) | (__u32)fd;
}

static __always_inline void fill_header(struct px_event_header *hdr, __u32 kind, __u32 tgid,
					__s32 fd, __u64 generation)
{
	hdr->timestamp_ns = bpf_ktime_get_ns();
	hdr->conn.generation = generation;
	hdr->conn.tgid = tgid;
	hdr->conn.fd = fd;
	hdr->kind = kind;
	hdr->_pad = 0;
}

/* Reads both ends of the socket behind `fd` of the current process from the kernel:
 * task->files->fdt->fd[fd]->private_data (struct socket)->sk. Offsets come from the
 * running kernel's BTF (CO-RE), so no kernel headers are needed and the object runs on
 * any kernel with BTF. Returns 0 for an IPv4 or IPv6 socket. */
static __always_inline int read_endpoints(__s32 fd, struct px_endpoints *ends)
{
	struct task_struct___px *task = (void *)bpf_get_current_task();
	struct fdtable___px *fdt = BPF_CORE_READ(task, files, fdt);
	if (!fdt || fd < 0 || (__u32)fd >= BPF_CORE_READ(fdt, max_fds))
		return -1;
	struct file___px **fds = BPF_CORE_READ(fdt, fd);
	struct file___px *file = NULL;
	if (bpf_probe_read_kernel(&file, sizeof(file), &fds[fd]) != 0 || !file)
		return -1;
	struct socket___px *sock = BPF_CORE_READ(file, private_data);
	struct sock___px *sk = BPF_CORE_READ(sock, sk);
	if (!sk)
		return -1;
	__u16 family = BPF_CORE_READ(sk, __sk_common.skc_family);
	__be16 dport = BPF_CORE_READ(sk, __sk_common.skc_dport);
	ends->rport = (__u16)((dport >> 8) | (dport << 8));
	ends->lport = BPF_CORE_READ(sk, __sk_common.skc_num);
	if (family == AF_INET) {
		__u32 daddr = BPF_CORE_READ(sk, __sk_common.skc_daddr);
		__u32 saddr = BPF_CORE_READ(sk, __sk_common.skc_rcv_saddr);
		__builtin_memcpy(ends->raddr, &daddr, 4);
		__builtin_memcpy(ends->laddr, &saddr, 4);
	} else if (family == AF_INET6) {
		BPF_CORE_READ_INTO(&ends->raddr, sk, __sk_common.skc_v6_daddr);
		BPF_CORE_READ_INTO(&ends->laddr, sk, __sk_common.skc_v6_rcv_saddr);
	} else {
		return -1;
	}
	ends->family = family;
	return 0;
}

static __always_inline void open_conn(__u32 tgid, __s32 fd, __u32 role)
{
	struct px_conn_info info = {.role = role};
	/* Unix sockets and the like are not connections to trace. */
	if (read_endpoints(fd, &info.ends) != 0)
		return;
	__u64 key = conn_key(tgid, fd);
	info.generation = bpf_ktime_get_ns();
	bpf_map_update_elem(&conns, &key, &info, BPF_ANY);
	bpf_map_delete_elem(&muted, &key);

	struct px_open_event *ev = bpf_ringbuf_reserve(&events, sizeof(*ev), 0);
	if (!ev) {
		count_drop();
		return;
	}
	fill_header(&ev->hdr, PX_EVENT_OPEN, tgid, fd, info.generation);
	ev->ends = info.ends;
	ev->role = role;
	ev->_pad = 0;
	bpf_ringbuf_submit(ev, submit_flags());
}

/* The registers of the syscall the current task is in (see kernel_types.h). */
static __always_inline struct pt_regs___px *syscall_regs(void)
{
	return (struct pt_regs___px *)bpf_task_pt_regs(bpf_get_current_task_btf());
}

/* ---- connect ---- */

SEC("tracepoint/syscalls/sys_exit_connect")
int sys_exit_connect(struct sys_exit_ctx *ctx)
{
	/* A non-blocking connect returns EINPROGRESS with its local port already bound. */
	if (ctx->ret != 0 && ctx->ret != -EINPROGRESS)
		return 0;
	__u32 tgid = traced_tgid(bpf_get_current_pid_tgid());
	if (!tgid)
		return 0;
	open_conn(tgid, (__s32)PX_SYSCALL_ARG0(syscall_regs()), PX_ROLE_CLIENT);
	return 0;
}

/* ---- accept / accept4 ---- */

/* Only the exit matters: the new fd is the return value, and the peer is read from the
 * socket, so it is known even when the caller passed no address buffer. */
static __always_inline int exit_accept(struct sys_exit_ctx *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tgid = traced_tgid(id);
	if (!tgid || ctx->ret < 0)
		return 0;
	open_conn(tgid, (__s32)ctx->ret, PX_ROLE_SERVER);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_accept")
int sys_exit_accept(struct sys_exit_ctx *ctx) { return exit_accept(ctx); }

SEC("tracepoint/syscalls/sys_exit_accept4")
int sys_exit_accept4(struct sys_exit_ctx *ctx) { return exit_accept(ctx); }

/* ---- close ---- */

SEC("tracepoint/syscalls/sys_enter_close")
int sys_enter_close(struct sys_enter_ctx *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tgid = traced_tgid(id);
	if (!tgid)
		return 0;
	__s32 fd = (__s32)ctx->args[0];
	__u64 key = conn_key(tgid, fd);
	struct px_conn_info *info = bpf_map_lookup_elem(&conns, &key);
	if (!info)
		return 0;
	struct px_close_event *ev = bpf_ringbuf_reserve(&events, sizeof(*ev), 0);
	if (ev) {
		fill_header(&ev->hdr, PX_EVENT_CLOSE, tgid, fd, info->generation);
		ev->bytes_sent = info->bytes_sent;
		ev->bytes_recv = info->bytes_recv;
		bpf_ringbuf_submit(ev, submit_flags());
	} else {
		count_drop();
	}
	bpf_map_delete_elem(&conns, &key);
	bpf_map_delete_elem(&muted, &key);
	return 0;
}

/* ---- data: read/write and friends ---- */

/* Copies up to `limit` of the `total` bytes an iovec array moved; returns bytes copied. */
static __always_inline __u32 copy_iovecs(__u8 *payload, __u64 iov, __u64 iovcnt, __u64 total,
					  __u32 limit)
{
	__u64 off = 0;
#pragma unroll
	for (int i = 0; i < PX_MAX_IOV; i++) {
		if (i >= iovcnt || off >= limit || off >= total)
			break;
		struct iovec_user vec = {};
		if (bpf_probe_read_user(&vec, sizeof(vec), (void *)(iov + i * sizeof(vec))) != 0)
			break;
		__u64 len = vec.len;
		if (len > total - off)
			len = total - off;
		if (len > limit - off)
			len = limit - off;
		__u64 at = off & (PX_MAX_CHUNK - 1);
		/* barrier_var (bpf_helpers.h) keeps clang from folding these bound checks
		 * into arithmetic the verifier cannot follow. */
		barrier_var(len);
		if (len > PX_MAX_CHUNK)
			len = PX_MAX_CHUNK;
		if (len == 0)
			continue;
		if (bpf_probe_read_user(payload + at, len, (void *)vec.base) != 0)
			break;
		off += len;
	}
	return off;
}

/* What a data record says besides its payload. */
struct data_meta {
	__u64 generation;
	__u64 position;
	__u64 buf; /* the caller's buffer, iovec array or msghdr (second argument) */
	__u32 tgid;
	__s32 fd;
	__u32 size;
	__u32 direction;
};

static __always_inline void fill_data(struct px_data_event *ev, const struct data_meta *m,
				      __u32 captured)
{
	fill_header(&ev->hdr, PX_EVENT_DATA, m->tgid, m->fd, m->generation);
	ev->position = m->position;
	ev->size = m->size;
	ev->captured = captured;
	ev->direction = m->direction;
	ev->_pad = 0;
}

/* A data record, assembled in the per-CPU scratch and copied into the ring buffer at its
 * exact size. Reading user memory straight into a reserved record would save that copy
 * (tens of nanoseconds), but a reservation's size must be a constant: size classes made
 * a small request's record up to three times larger, so the ring buffer held a third as
 * many and filled (and dropped) that much sooner. */
static __always_inline void emit_data(const struct data_meta *m, __u16 kind, __u64 iovcnt,
				      __u64 total, __u32 limit)
{
	__u32 zero = 0;
	struct data_scratch *buf = bpf_map_lookup_elem(&scratch, &zero);
	if (!buf)
		return;
	__u64 captured = 0;
	if (kind == IO_PLAIN) {
		captured = total < limit ? total : limit;
		barrier_var(captured);
		if (captured > PX_MAX_CHUNK)
			captured = PX_MAX_CHUNK;
		if (bpf_probe_read_user(buf->payload, captured, (void *)m->buf) != 0)
			captured = 0;
	} else {
		__u64 iov = m->buf;
		if (kind == IO_MSGHDR) {
			/* struct user_msghdr: msg_iov at 16, msg_iovlen at 24 */
			bpf_probe_read_user(&iov, sizeof(iov), (void *)(m->buf + 16));
			bpf_probe_read_user(&iovcnt, sizeof(iovcnt), (void *)(m->buf + 24));
		}
		captured = copy_iovecs(buf->payload, iov, iovcnt, total, limit);
	}
	barrier_var(captured);
	if (captured > PX_MAX_CHUNK)
		captured = PX_MAX_CHUNK;
	fill_data(&buf->event, m, captured);
	if (bpf_ringbuf_output(&events, buf, sizeof(struct px_data_event) + captured,
			       submit_flags()) != 0)
		count_drop();
}

/* Every data syscall is traced at its exit alone: by then the return value says how
 * many bytes moved, and the arguments are still in the task's saved registers. */
static __always_inline int exit_io(struct sys_exit_ctx *ctx, __u16 kind, __u16 direction)
{
	__s64 ret = ctx->ret;
	if (ret <= 0)
		return 0;
	__u32 tgid = traced_tgid(bpf_get_current_pid_tgid());
	if (!tgid)
		return 0;
	struct pt_regs___px *regs = syscall_regs();
	__s32 fd = (__s32)PX_SYSCALL_ARG0(regs);
	__u64 key = conn_key(tgid, fd);
	struct px_conn_info *info = bpf_map_lookup_elem(&conns, &key);
	if (!info)
		return 0;
	struct data_meta m = {
		.buf = PX_SYSCALL_ARG1(regs),
		.tgid = tgid,
		.fd = fd,
		.size = ret > 0xffffffff ? 0xffffffff : (__u32)ret,
		.direction = direction,
	};
	if (direction == PX_DIR_EGRESS)
		m.position = __sync_fetch_and_add(&info->bytes_sent, ret);
	else
		m.position = __sync_fetch_and_add(&info->bytes_recv, ret);
	m.generation = info->generation;

	__u64 *muted_gen = bpf_map_lookup_elem(&muted, &key);
	if (muted_gen && *muted_gen == m.generation)
		return 0;

	struct px_config *cfg = get_config();
	if (!cfg)
		return 0;
	__u32 limit = cfg->chunk_limit;
	if (limit > PX_MAX_CHUNK)
		limit = PX_MAX_CHUNK;
	emit_data(&m, kind, kind == IO_IOVEC ? PX_SYSCALL_ARG2(regs) : 0, ret, limit);
	return 0;
}

#define IO_PROBES(name, kind, dir)                                                         \
	SEC("tracepoint/syscalls/sys_exit_" #name)                                         \
	int sys_exit_##name(struct sys_exit_ctx *ctx) { return exit_io(ctx, kind, dir); }

IO_PROBES(read, IO_PLAIN, PX_DIR_INGRESS)
IO_PROBES(recvfrom, IO_PLAIN, PX_DIR_INGRESS)
IO_PROBES(readv, IO_IOVEC, PX_DIR_INGRESS)
IO_PROBES(recvmsg, IO_MSGHDR, PX_DIR_INGRESS)
IO_PROBES(write, IO_PLAIN, PX_DIR_EGRESS)
IO_PROBES(sendto, IO_PLAIN, PX_DIR_EGRESS)
IO_PROBES(writev, IO_IOVEC, PX_DIR_EGRESS)
IO_PROBES(sendmsg, IO_MSGHDR, PX_DIR_EGRESS)

/* ---- process exit: its sockets close without a close() ---- */

SEC("tracepoint/sched/sched_process_exit")
int sched_process_exit(struct sched_process_exit_ctx *ctx)
{
	if (!ctx->group_dead)
		return 0;
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tgid = traced_tgid(id);
	if (!tgid)
		return 0;
	struct px_proc_exit_event *ev = bpf_ringbuf_reserve(&events, sizeof(*ev), 0);
	if (!ev) {
		count_drop();
		return 0;
	}
	fill_header(&ev->hdr, PX_EVENT_PROC_EXIT, tgid, -1, 0);
	bpf_ringbuf_submit(ev, submit_flags());
	return 0;
}

/* Keeps every shared struct in the object's BTF (map value types always are), so the
 * layout test can compare the Rust mirrors with it. One tiny entry, never read. */
struct px_layouts {
	struct px_conn_id conn_id;
	struct px_config config;
	struct px_conn_info conn_info;
	struct px_event_header header;
	struct px_endpoints endpoints;
	struct px_open_event open;
	struct px_close_event close;
	struct px_data_event data;
	struct px_proc_exit_event proc_exit;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct px_layouts);
} layouts SEC(".maps");

char LICENSE[] SEC("license") = "GPL";
