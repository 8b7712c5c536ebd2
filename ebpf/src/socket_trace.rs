//! Rust mirrors of `c/socket_trace.h`. Keep the two in step: the layout test fails
//! when a size or an offset differs from the compiled object's BTF.

/// Largest payload one data event carries (`PX_MAX_CHUNK`).
pub const MAX_CHUNK: u32 = 8192;

/// Ring buffer record kinds (`enum px_event_kind`).
pub const EVENT_OPEN: u32 = 1;
/// A traced connection was closed.
pub const EVENT_CLOSE: u32 = 2;
/// Bytes crossed a traced connection.
pub const EVENT_DATA: u32 = 3;
/// A traced process ended.
pub const EVENT_PROC_EXIT: u32 = 4;

/// The traced process called `connect()` (`PX_ROLE_CLIENT`).
pub const ROLE_CLIENT: u32 = 1;
/// The traced process called `accept()` (`PX_ROLE_SERVER`).
pub const ROLE_SERVER: u32 = 2;

/// Bytes the traced process sent (`PX_DIR_EGRESS`).
pub const DIR_EGRESS: u32 = 1;
/// Bytes the traced process received (`PX_DIR_INGRESS`).
pub const DIR_INGRESS: u32 = 2;

/// `struct px_conn_id`: one connection, unique across fd reuse.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ConnId {
    /// Kernel time at which the connection was opened.
    pub generation: u64,
    /// Process (thread group) id.
    pub tgid: u32,
    /// File descriptor in that process.
    pub fd: i32,
}

/// `struct px_config`: settings the PEM writes before attaching.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Config {
    /// The PEM's own pid, never traced.
    pub self_tgid: u32,
    /// Payload bytes copied per event, at most [`MAX_CHUNK`].
    pub chunk_limit: u32,
    /// Bytes queued in the ring buffer before the kernel wakes the PEM early.
    pub wakeup_bytes: u32,
    /// Depth of `cgroup_id` in the cgroup v2 hierarchy (the root is 0).
    pub cgroup_level: u32,
    /// Trace only processes in this cgroup v2 or below it; 0 traces every process.
    pub cgroup_id: u64,
}

/// `struct px_endpoints`: both ends of a connection, read from the kernel's socket.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Endpoints {
    /// Remote address: IPv4 in the first four bytes, or IPv6.
    pub raddr: [u8; 16],
    /// Local address, same layout.
    pub laddr: [u8; 16],
    /// `AF_INET` or `AF_INET6`.
    pub family: u16,
    /// Remote port, host byte order.
    pub rport: u16,
    /// Local port, host byte order.
    pub lport: u16,
    /// Padding.
    pub pad: u16,
}

/// `struct px_conn_info`: a connection as the `conns` map holds it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ConnInfo {
    /// Matches [`ConnId::generation`].
    pub generation: u64,
    /// Bytes sent so far.
    pub bytes_sent: u64,
    /// Bytes received so far.
    pub bytes_recv: u64,
    /// Both ends.
    pub ends: Endpoints,
    /// [`ROLE_CLIENT`] or [`ROLE_SERVER`].
    pub role: u32,
    /// Padding.
    pub pad: u32,
}

/// `struct px_event_header`: the start of every ring buffer record.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct EventHeader {
    /// `CLOCK_MONOTONIC` nanoseconds.
    pub timestamp_ns: u64,
    /// The connection (for a process exit: tgid only).
    pub conn: ConnId,
    /// One of the `EVENT_*` kinds.
    pub kind: u32,
    /// Padding.
    pub pad: u32,
}

/// `struct px_open_event`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct OpenEvent {
    /// Common header.
    pub hdr: EventHeader,
    /// Both ends.
    pub ends: Endpoints,
    /// [`ROLE_CLIENT`] or [`ROLE_SERVER`].
    pub role: u32,
    /// Padding.
    pub pad: u32,
}

/// `struct px_close_event`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct CloseEvent {
    /// Common header.
    pub hdr: EventHeader,
    /// Final count of bytes sent.
    pub bytes_sent: u64,
    /// Final count of bytes received.
    pub bytes_recv: u64,
}

/// `struct px_data_event`, followed in the ring buffer by `captured` payload bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct DataEvent {
    /// Common header.
    pub hdr: EventHeader,
    /// Stream offset of the first byte, per direction.
    pub position: u64,
    /// Bytes the syscall moved.
    pub size: u32,
    /// Payload bytes captured (at most the configured chunk limit).
    pub captured: u32,
    /// [`DIR_EGRESS`] or [`DIR_INGRESS`].
    pub direction: u32,
    /// Padding.
    pub pad: u32,
}

/// `struct px_proc_exit_event`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcExitEvent {
    /// Common header; `conn.tgid` is the process that ended.
    pub hdr: EventHeader,
}

// SAFETY: plain old data: integers and byte arrays, no padding the kernel does not write.
unsafe impl aya::Pod for Config {}
// SAFETY: as above.
unsafe impl aya::Pod for ConnInfo {}

const _: () = {
    assert!(size_of::<ConnId>() == 16);
    assert!(size_of::<Config>() == 24);
    assert!(size_of::<Endpoints>() == 40);
    assert!(size_of::<ConnInfo>() == 72);
    assert!(size_of::<EventHeader>() == 32);
    assert!(size_of::<OpenEvent>() == 80);
    assert!(size_of::<CloseEvent>() == 48);
    assert!(size_of::<DataEvent>() == 56);
    assert!(size_of::<ProcExitEvent>() == 32);
};
