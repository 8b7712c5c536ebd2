//! Rust mirrors of `c/dynamic_probe.h`: what the PEM writes to tell the generic probe
//! programs what to capture, and the events they write back. The layout test keeps
//! them in step with the compiled object's BTF.

/// Probes loaded at once (`PX_MAX_PROBES`); each has an entry and a return side.
pub const MAX_PROBES: u32 = 64;
/// Values captured per event (`PX_MAX_CAPTURES`).
pub const MAX_CAPTURES: usize = 12;
/// Bytes of strings and buffers per event (`PX_MAX_DATA`).
pub const MAX_DATA: u32 = 4096;
/// Pod cgroup levels a probe can filter on (`PX_CGROUP_LEVELS`).
pub const CGROUP_LEVELS: usize = 4;

/// Nothing to capture (`PX_CAP_NONE`).
pub const CAP_NONE: u8 = 0;
/// `size` bytes at ctx + offset: a register or a tracepoint field (`PX_CAP_SCALAR`).
pub const CAP_SCALAR: u8 = 1;
/// A user pointer to a NUL-terminated string (`PX_CAP_USER_STR`).
pub const CAP_USER_STR: u8 = 2;
/// A user pointer to a byte buffer (`PX_CAP_USER_BYTES`).
pub const CAP_USER_BYTES: u8 = 3;
/// A tracepoint `__data_loc` field (`PX_CAP_DATA_LOC`).
pub const CAP_DATA_LOC: u8 = 4;
/// `max_len` bytes inside the context, e.g. `char comm[16]` (`PX_CAP_INLINE`).
pub const CAP_INLINE: u8 = 5;
/// For [`CAP_USER_BYTES`]: the length is at `len_offset` (`PX_CAP_FLAG_LEN`).
pub const CAP_FLAG_LEN: u8 = 1;

/// The probe is loaded (`PX_PROBE_ACTIVE`).
pub const PROBE_ACTIVE: u32 = 1;
/// Only threads whose comm equals `comm` (`PX_PROBE_COMM`).
pub const PROBE_COMM: u32 = 2;
/// Only processes in the probe's cgroups (`PX_PROBE_CGROUPS`).
pub const PROBE_CGROUPS: u32 = 4;
/// The entry side remembers the call for its return side (`PX_PROBE_PAIRED`).
pub const PROBE_PAIRED: u32 = 8;

/// `struct px_capture`: one value to read.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Capture {
    /// Offset in the context: a `pt_regs` register or a tracepoint field.
    pub offset: u16,
    /// For buffers with [`CAP_FLAG_LEN`]: offset of the length.
    pub len_offset: u16,
    /// For strings and buffers: most bytes copied.
    pub max_len: u16,
    /// One of the `CAP_*` kinds.
    pub kind: u8,
    /// Scalars: bytes to read (1-8). Buffers: [`CAP_FLAG_LEN`].
    pub size_or_flags: u8,
}

/// `struct px_probe_config`: what one side of a probe captures (index `probe * 2 + side`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProbeConfig {
    /// `PROBE_*` flags.
    pub flags: u32,
    /// Captures in use.
    pub n_captures: u32,
    /// Events per second the probe records; more are counted as dropped.
    pub rate_per_sec: u32,
    /// Copied into each event, so events of a replaced probe are told apart.
    pub generation: u32,
    /// For [`PROBE_COMM`]: the command name, NUL-padded.
    pub comm: [u8; 16],
    /// For [`PROBE_CGROUPS`]: the cgroup levels to check, 0-terminated.
    pub cgroup_levels: [u8; CGROUP_LEVELS],
    /// What to read, in column order.
    pub captures: [Capture; MAX_CAPTURES],
}

/// `struct px_probe_globals`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProbeGlobals {
    /// The PEM's own pid, never traced.
    pub self_tgid: u32,
    /// Depth of `cgroup_id` (the root is 0).
    pub cgroup_level: u32,
    /// Only processes in this cgroup or below it; 0: all.
    pub cgroup_id: u64,
}

/// `struct px_probe_cgroup_key`: a cgroup a probe may trace.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProbeCgroupKey {
    /// The probe.
    pub probe: u32,
    /// Padding.
    pub pad: u32,
    /// The cgroup's id (its inode number).
    pub cgroup_id: u64,
}

/// `struct px_probe_counters`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProbeCounters {
    /// The second `admitted` counts.
    pub window: u64,
    /// Events admitted in that second.
    pub admitted: u64,
    /// Events dropped, over the rate or for a full ring buffer, all time.
    pub dropped: u64,
}

/// `struct px_probe_event`: the fixed part of an event; `data_len` bytes follow.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProbeEvent {
    /// `probe * 2 + side` (0 entry, 1 return).
    pub config: u32,
    /// The config's generation when the event was recorded.
    pub generation: u32,
    /// Process id.
    pub tgid: u32,
    /// Thread id.
    pub tid: u32,
    /// `bpf_ktime_get_ns()` at the hit.
    pub ktime_ns: u64,
    /// The thread's command name.
    pub comm: [u8; 16],
    /// Bytes of data after the struct.
    pub data_len: u32,
    /// Padding.
    pub pad: u32,
    /// Scalars as read; strings and buffers as `offset << 32 | length` into the data.
    pub values: [u64; MAX_CAPTURES],
}

// SAFETY: plain old data: integers and byte arrays, valid for any bit pattern.
unsafe impl aya::Pod for Capture {}
// SAFETY: as above.
unsafe impl aya::Pod for ProbeConfig {}
// SAFETY: as above.
unsafe impl aya::Pod for ProbeGlobals {}
// SAFETY: as above.
unsafe impl aya::Pod for ProbeCgroupKey {}
// SAFETY: as above.
unsafe impl aya::Pod for ProbeCounters {}

const _: () = {
    assert!(size_of::<Capture>() == 8);
    assert!(size_of::<ProbeConfig>() == 36 + MAX_CAPTURES * 8);
    assert!(size_of::<ProbeEvent>() == 48 + MAX_CAPTURES * 8);
};
