//! What the kernel-facing test binaries share.

#![allow(dead_code)] // each test binary uses its own part
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

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

/// A cgroup v2 directory, removed (after its processes are gone) when dropped.
pub(crate) struct Cgroup(pub(crate) PathBuf);

impl Cgroup {
    pub(crate) fn create(name: &str) -> Self {
        let root = cgroup2_mount();
        let path = root.join(format!("px-test-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }

    /// `command` started inside this cgroup (it moves itself there before exec).
    pub(crate) fn spawn(&self, program: &str, args: &[&str]) -> Child {
        let procs = self.0.join("cgroup.procs");
        let script = format!("echo $$ > '{}' && exec \"$@\"", procs.display());
        Command::new("sh")
            .args(["-c", &script, "sh", program])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap()
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        for _ in 0..50 {
            if std::fs::remove_dir(&self.0).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Where cgroup v2 is mounted (alone, or beside v1 as "unified"); mounted if nowhere.
pub(crate) fn cgroup2_mount() -> PathBuf {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
    if let Some(point) = mounts.lines().find_map(|line| {
        let mut fields = line.split(' ');
        let point = fields.nth(1)?;
        (fields.next()? == "cgroup2").then(|| PathBuf::from(point))
    }) {
        return point;
    }
    let point = PathBuf::from("/run/px-test-cgroup2");
    std::fs::create_dir_all(&point).unwrap();
    let status = Command::new("mount")
        .args(["-t", "cgroup2", "none"])
        .arg(&point)
        .status()
        .unwrap();
    assert!(
        status.success(),
        "cannot mount cgroup2 at {}",
        point.display()
    );
    point
}
