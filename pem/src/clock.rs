//! Kernel timestamps are CLOCK_MONOTONIC; tables hold nanoseconds since the Unix epoch.

fn now_ns(clock: libc::clockid_t) -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec through a valid pointer.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec)
}

/// The clock `bpf_ktime_get_ns` reads, in nanoseconds.
pub(crate) fn monotonic_ns() -> u64 {
    now_ns(libc::CLOCK_MONOTONIC).max(0).cast_unsigned()
}

/// Nanoseconds since the Unix epoch.
pub(crate) fn epoch_ns() -> i64 {
    now_ns(libc::CLOCK_REALTIME)
}

/// What to add to a monotonic timestamp to get nanoseconds since the epoch.
pub(crate) fn boot_to_epoch_ns() -> i64 {
    let mono = now_ns(libc::CLOCK_MONOTONIC);
    epoch_ns() - mono
}
