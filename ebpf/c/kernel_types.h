/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The few kernel structures the socket tracer reads, declared with only the fields it
 * uses. preserve_access_index makes clang record each access as a CO-RE relocation: the
 * loader rewrites the offsets from the running kernel's BTF (/sys/kernel/btf/vmlinux),
 * so these declarations need not match any kernel's real layout. The ___px suffix keeps
 * the names apart from real headers; CO-RE ignores everything after "___".
 */
#ifndef PX_KERNEL_TYPES_H
#define PX_KERNEL_TYPES_H

#define PX_CORE __attribute__((preserve_access_index))

struct in6_addr___px {
	__u8 s6_addr[16];
} PX_CORE;

struct sock_common___px {
	__be32 skc_daddr;
	__be32 skc_rcv_saddr;
	__be16 skc_dport;
	__u16 skc_num;
	unsigned short skc_family;
	struct in6_addr___px skc_v6_daddr;
	struct in6_addr___px skc_v6_rcv_saddr;
} PX_CORE;

struct sock___px {
	struct sock_common___px __sk_common;
} PX_CORE;

struct socket___px {
	struct sock___px *sk;
} PX_CORE;

struct file___px {
	void *private_data;
} PX_CORE;

struct fdtable___px {
	unsigned int max_fds;
	struct file___px **fd;
} PX_CORE;

struct files_struct___px {
	struct fdtable___px *fdt;
} PX_CORE;

struct task_struct___px {
	struct files_struct___px *files;
} PX_CORE;

/* The registers a task entered the kernel with, where a syscall's arguments are. They
 * are saved at entry and left alone by the syscalls traced here, so the exit program
 * reads them instead of an entry program saving them in a map. bpf_task_pt_regs returns
 * a pointer whose kernel type the verifier knows, so these are plain loads (relocated by
 * CO-RE), not helper calls. */
#if defined(__TARGET_ARCH_arm64)
struct pt_regs___px {
	__u64 regs[31];
	__u64 orig_x0; /* x0 holds the return value by the exit */
} PX_CORE;
#define PX_SYSCALL_ARG0(r) ((r)->orig_x0)
#define PX_SYSCALL_ARG1(r) ((r)->regs[1])
#define PX_SYSCALL_ARG2(r) ((r)->regs[2])
#else
struct pt_regs___px {
	unsigned long di;
	unsigned long si;
	unsigned long dx;
} PX_CORE;
#define PX_SYSCALL_ARG0(r) ((r)->di)
#define PX_SYSCALL_ARG1(r) ((r)->si)
#define PX_SYSCALL_ARG2(r) ((r)->dx)
#endif

#endif
