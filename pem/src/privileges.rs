//! Checks, before anything is loaded, that this process may load eBPF programs and
//! find the tracepoints, so a user gets one clear message instead of a loader error.

use std::fs;
use std::path::Path;

use crate::error::Error;

const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// Where tracefs is looked for, newest convention first.
pub(crate) const TRACEFS_DIRS: &[&str] = &["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

/// Fails with the capabilities that are missing to load and attach the socket tracer.
///
/// CAP_BPF loads programs and creates maps; CAP_PERFMON attaches tracing programs
/// and lets them read user memory. Before Linux 5.8 both were part of CAP_SYS_ADMIN,
/// which still grants them.
pub(crate) fn check_capabilities() -> Result<(), Error> {
    let effective = effective_capabilities();
    let has = |cap: u32| effective & (1u64 << cap) != 0;
    if has(CAP_SYS_ADMIN) {
        return Ok(());
    }
    let missing: Vec<&str> = [(CAP_BPF, "CAP_BPF"), (CAP_PERFMON, "CAP_PERFMON")]
        .into_iter()
        .filter(|(cap, _)| !has(*cap))
        .map(|(_, name)| name)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(Error::MissingPrivileges {
        missing: missing.join(" and "),
    })
}

/// Makes sure tracefs is available, mounting it at /sys/kernel/tracing when it is not
/// and this process may mount (as the PEM's container or `sudo px local` may).
pub(crate) fn ensure_tracefs() -> Result<(), Error> {
    if TRACEFS_DIRS
        .iter()
        .any(|dir| Path::new(dir).join("events").is_dir())
    {
        return Ok(());
    }
    if mount_tracefs(TRACEFS_DIRS[0]) {
        return Ok(());
    }
    Err(Error::TracefsMissing {
        looked_in: TRACEFS_DIRS.join(" and "),
    })
}

fn mount_tracefs(dir: &str) -> bool {
    let (Ok(source), Ok(target), Ok(fstype)) = (
        std::ffi::CString::new("nodev"),
        std::ffi::CString::new(dir),
        std::ffi::CString::new("tracefs"),
    ) else {
        return false;
    };
    // SAFETY: all pointers are valid NUL-terminated strings for the duration of the call.
    let rc = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    rc == 0 && Path::new(dir).join("events").is_dir()
}

fn effective_capabilities() -> u64 {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        })
        .unwrap_or(0)
}
