/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Structs shared by the dynamic probe program and the PEM (mirrored in
 * src/dynamic_probe.rs; tests/layout.rs checks them against the object's BTF).
 *
 * One precompiled program per hook kind serves every dynamic probe: the PEM writes
 * what to capture into `probe_configs`, keyed by the attachment's cookie, so no
 * compiler is needed on the node.
 */
#ifndef PX_DYNAMIC_PROBE_H
#define PX_DYNAMIC_PROBE_H

#include <linux/types.h>

/* Probes loaded at once, per PEM. Each has an entry and a return side. */
#define PX_MAX_PROBES 64
#define PX_MAX_CAPTURES 12
/* Bytes of strings and buffers per event. Power of two: offsets are masked with it. */
#define PX_MAX_DATA 4096
/* Pod cgroup levels a probe can filter on (kubelet puts pods at two or three). */
#define PX_CGROUP_LEVELS 4

enum px_capture_kind {
	PX_CAP_NONE = 0,
	/* `size` bytes at ctx + offset (a register of pt_regs, or a tracepoint field). */
	PX_CAP_SCALAR = 1,
	/* A user pointer at ctx + offset to a NUL-terminated string. */
	PX_CAP_USER_STR = 2,
	/* A user pointer at ctx + offset to `max_len` bytes, or to as many as the value at
	 * ctx + len_offset says when PX_CAP_FLAG_LEN is set. */
	PX_CAP_USER_BYTES = 3,
	/* A tracepoint `__data_loc` field: u32 at ctx + offset, low half the offset of the
	 * bytes in the record, high half their length. */
	PX_CAP_DATA_LOC = 4,
	/* `max_len` bytes inside the context (a tracepoint's `char comm[16]`). */
	PX_CAP_INLINE = 5,
};

#define PX_CAP_FLAG_LEN 1

struct px_capture {
	__u16 offset;
	__u16 len_offset;
	__u16 max_len;
	__u8 kind;
	__u8 size_or_flags; /* scalar: bytes to read (1-8); bytes: PX_CAP_FLAG_LEN */
};

/* Probe flags. */
#define PX_PROBE_ACTIVE 1
/* Only threads whose comm equals `comm`. */
#define PX_PROBE_COMM 2
/* Only processes in one of the cgroups of `probe_cgroups`, checked at `cgroup_levels`. */
#define PX_PROBE_CGROUPS 4
/* The entry side of a probe that also has a return side: remember the call. */
#define PX_PROBE_PAIRED 8

/* What one side (entry or return) of a probe captures. Index: probe * 2 + side. */
struct px_probe_config {
	__u32 flags;
	__u32 n_captures;
	/* Events per second recorded by the probe's entry side; 0 = none allowed. */
	__u32 rate_per_sec;
	__u32 generation;
	char comm[16];
	__u8 cgroup_levels[PX_CGROUP_LEVELS];
	struct px_capture captures[PX_MAX_CAPTURES];
};

/* Settings of the whole program (one entry). */
struct px_probe_globals {
	__u32 self_tgid;
	__u32 cgroup_level;
	__u64 cgroup_id;
};

struct px_probe_cgroup_key {
	__u32 probe;
	__u32 _pad;
	__u64 cgroup_id;
};

/* Per-probe counters. */
struct px_probe_counters {
	__u64 window;   /* the second the counts below belong to */
	__u64 admitted; /* events recorded in that second */
	__u64 dropped;  /* events over the rate, or not queued (full ring buffer): all time */
};

/* One event: the header, then `data_len` bytes of strings and buffers. */
struct px_probe_event {
	__u32 config; /* probe * 2 + side */
	__u32 generation;
	__u32 tgid;
	__u32 tid;
	__u64 ktime_ns;
	char comm[16];
	__u32 data_len;
	__u32 _pad;
	/* Scalars as read; strings and buffers as (offset << 32 | length) into the data. */
	__u64 values[PX_MAX_CAPTURES];
};

#endif
