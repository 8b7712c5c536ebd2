/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The contract between the socket tracer's kernel programs and the PEM.
 *
 * Every struct here is mirrored in Rust (ebpf/src/socket_trace.rs) with #[repr(C)];
 * a test compares the Rust sizes and offsets with this object's BTF, so change both
 * together. Fields are ordered largest first so neither side needs padding rules.
 */
#ifndef PX_SOCKET_TRACE_H
#define PX_SOCKET_TRACE_H

/* Largest data chunk one event can carry. The runtime limit (config.chunk_limit) is
 * at most this; it must be a power of two so the verifier can bound copies with a mask,
 * and twice it (the scratch payload) must fit the 32 KiB limit of a per-CPU map value. */
#define PX_MAX_CHUNK 8192
/* iovecs copied per readv/writev/recvmsg/sendmsg call; later iovecs are counted, not copied. */
#define PX_MAX_IOV 8

enum px_event_kind {
	PX_EVENT_OPEN = 1,
	PX_EVENT_CLOSE = 2,
	PX_EVENT_DATA = 3,
	PX_EVENT_PROC_EXIT = 4,
};

enum px_role {
	PX_ROLE_CLIENT = 1, /* the traced process called connect() */
	PX_ROLE_SERVER = 2, /* the traced process called accept() */
};

enum px_direction {
	PX_DIR_EGRESS = 1,  /* bytes the traced process sent */
	PX_DIR_INGRESS = 2, /* bytes the traced process received */
};

/* One connection: the fd of one process, made unique across fd reuse by the
 * generation (the kernel time at which the connection was opened). */
struct px_conn_id {
	__u64 generation;
	__u32 tgid;
	__s32 fd;
};

/* Runtime settings, written by the PEM into the `config` array before attaching. */
struct px_config {
	__u32 self_tgid;    /* the PEM itself: never traced */
	__u32 chunk_limit;  /* bytes of payload copied per event, <= PX_MAX_CHUNK */
	__u32 wakeup_bytes; /* wake the PEM only once this much is queued; it also polls */
	__u32 cgroup_level; /* depth of cgroup_id in the cgroup v2 hierarchy */
	__u64 cgroup_id;    /* trace only this cgroup v2 and its descendants; 0 = all */
};

/* Both ends of a connection, read from the kernel's socket when it is opened. */
struct px_endpoints {
	__u8 raddr[16]; /* remote; IPv4 in the first 4 bytes, or IPv6 */
	__u8 laddr[16]; /* local, same layout */
	__u16 family;   /* AF_INET or AF_INET6; 0 when the socket could not be read */
	__u16 rport;    /* host byte order */
	__u16 lport;    /* host byte order */
	__u16 _pad;
};

/* Per-connection state kept in the `conns` map; byte counters live here. */
struct px_conn_info {
	__u64 generation;
	__u64 bytes_sent;
	__u64 bytes_recv;
	struct px_endpoints ends;
	__u32 role; /* enum px_role */
	__u32 _pad;
};

/* Common header of every ring buffer record. */
struct px_event_header {
	__u64 timestamp_ns; /* CLOCK_MONOTONIC (bpf_ktime_get_ns) */
	struct px_conn_id conn;
	__u32 kind; /* enum px_event_kind */
	__u32 _pad;
};

/* PX_EVENT_OPEN: connect() succeeded or accept() returned a socket. */
struct px_open_event {
	struct px_event_header hdr;
	struct px_endpoints ends;
	__u32 role;
	__u32 _pad;
};

/* PX_EVENT_CLOSE: close() on a traced connection, with its final counters. */
struct px_close_event {
	struct px_event_header hdr;
	__u64 bytes_sent;
	__u64 bytes_recv;
};

/* PX_EVENT_DATA: bytes one syscall moved, followed by `captured` bytes of payload. */
struct px_data_event {
	struct px_event_header hdr;
	__u64 position;  /* stream offset of the first byte, per direction */
	__u32 size;      /* bytes the syscall moved (may exceed captured) */
	__u32 captured;  /* payload bytes that follow this header */
	__u32 direction; /* enum px_direction */
	__u32 _pad;
};

/* PX_EVENT_PROC_EXIT: a process ended; its connections end with it (no close()). */
struct px_proc_exit_event {
	struct px_event_header hdr;
};

#endif
