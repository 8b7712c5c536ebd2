//! A kernel tracepoint attached with an attach cookie, which aya's `TracePoint::attach`
//! does not pass: `perf_event_open` on the tracepoint, then `BPF_LINK_CREATE` with the
//! cookie. Closing the two descriptors detaches it.

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// `PERF_TYPE_TRACEPOINT`.
const PERF_TYPE_TRACEPOINT: u32 = 2;
/// `PERF_ATTR_SIZE_VER5`: the fields up to `sample_max_stack`; the rest stay zero.
const PERF_ATTR_SIZE: usize = 112;
/// `PERF_FLAG_FD_CLOEXEC`.
const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 8;
/// `BPF_LINK_CREATE`.
const BPF_LINK_CREATE: libc::c_long = 28;
/// `BPF_PERF_EVENT`, the attach type of a link to a perf event.
const BPF_PERF_EVENT: u32 = 41;

/// The two descriptors that keep a program attached to a tracepoint.
#[derive(Debug)]
pub(crate) struct PerfLink {
    _link: OwnedFd,
    _event: OwnedFd,
}

/// Attaches `program` to the tracepoint with event id `event_id`, with `cookie` for
/// `bpf_get_attach_cookie()`.
pub(crate) fn attach(
    program: BorrowedFd<'_>,
    event_id: u32,
    cookie: u64,
) -> std::io::Result<PerfLink> {
    let mut attr = [0u8; PERF_ATTR_SIZE];
    attr[0..4].copy_from_slice(&PERF_TYPE_TRACEPOINT.to_ne_bytes());
    attr[4..8].copy_from_slice(&(PERF_ATTR_SIZE as u32).to_ne_bytes());
    attr[8..16].copy_from_slice(&u64::from(event_id).to_ne_bytes());
    attr[16..24].copy_from_slice(&1u64.to_ne_bytes()); // sample_period
    // SAFETY: perf_event_open reads PERF_ATTR_SIZE bytes of a valid attr buffer; pid -1
    // with cpu 0 is how a tracepoint event for BPF is opened (the program runs on every
    // CPU, as it hangs off the tracepoint itself).
    let fd = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            attr.as_ptr(),
            -1 as libc::pid_t,
            0 as libc::c_int,
            -1 as libc::c_int,
            PERF_FLAG_FD_CLOEXEC,
        )
    };
    let event = owned(fd)?;

    // union bpf_attr, link_create: prog_fd, target_fd, attach_type, flags, then
    // perf_event.bpf_cookie at offset 16.
    let mut link_attr = [0u8; 64];
    let prog_fd = u32::try_from(program.as_raw_fd()).map_err(std::io::Error::other)?;
    let target_fd = u32::try_from(event.as_raw_fd()).map_err(std::io::Error::other)?;
    link_attr[0..4].copy_from_slice(&prog_fd.to_ne_bytes());
    link_attr[4..8].copy_from_slice(&target_fd.to_ne_bytes());
    link_attr[8..12].copy_from_slice(&BPF_PERF_EVENT.to_ne_bytes());
    link_attr[16..24].copy_from_slice(&cookie.to_ne_bytes());
    // SAFETY: bpf(2) reads `size` bytes of a valid, zero-padded attr buffer.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_LINK_CREATE,
            link_attr.as_ptr(),
            link_attr.len() as libc::c_uint,
        )
    };
    let link = owned(fd)?;
    Ok(PerfLink {
        _link: link,
        _event: event,
    })
}

fn owned(fd: libc::c_long) -> std::io::Result<OwnedFd> {
    let fd = libc::c_int::try_from(fd).map_err(std::io::Error::other)?;
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the syscall just returned this descriptor; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}
