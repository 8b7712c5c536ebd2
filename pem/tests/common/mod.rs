//! What the kernel-facing test binaries share.

/// True when this process may load eBPF programs. Outside CI an unprivileged run skips
/// with a message; under `CI=true` it fails, so privileged tests never silently skip.
pub(crate) fn privileged(what: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "CI=true: the {what} tests must run as root, and this process is not"
    );
    eprintln!("skipping: loading eBPF programs needs root (run the tests with sudo)");
    false
}
