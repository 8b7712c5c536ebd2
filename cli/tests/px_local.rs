//! `px local` as a user runs it: the real binary, real traffic from other processes.
//!
//! Needs root; under `CI=true` these tests fail rather than skip without it.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const PX: &str = env!("CARGO_BIN_EXE_px");

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// True when the test may run; false (with a message) when it must skip.
fn privileged() -> bool {
    if is_root() {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "CI=true: px local tests must run as root"
    );
    eprintln!("skipping: needs root");
    false
}

fn peer() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../pem/tests/peer/http_peer.py")
}

/// A child process that is killed when the test ends, however it ends.
struct Guarded(Child);

impl Drop for Guarded {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Key files made so far by this test binary.
static KEYS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// Starts `px local` and waits until it is tracing.
fn start_px(args: &[&str]) -> Child {
    // Each instance's key in a file of its own: not the machine's /run/px/api-key.
    let key_file = std::env::temp_dir().join(format!(
        "px-local-test-key-{}-{}",
        std::process::id(),
        KEYS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let mut child = Command::new(PX)
        .arg("local")
        .arg("--api-key-file")
        .arg(&key_file)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    for line in lines.by_ref() {
        if line.unwrap().contains("Press Ctrl-C to stop") {
            break;
        }
    }
    // Keep draining stderr so px never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    child
}

fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// The number after `"key":` in px's stats file (flat, written by px itself).
fn number_after(json: &str, key: &str) -> u64 {
    let start = json.find(&format!("\"{key}\":")).unwrap() + key.len() + 3;
    json[start..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn memory_stays_under_the_limit_while_old_rows_expire() {
    if !privileged() {
        return;
    }
    // Large enough for a debug build of px (which links a query engine: about 60 MiB
    // resident before any data); the PEM shrinks its tables to fit what is left.
    let limit: u64 = 160 << 20;
    let stats = std::env::temp_dir().join(format!("px-local-stats-{}.json", std::process::id()));
    let px = start_px(&[
        "--memory-limit",
        "160Mi",
        "--ring-buffer",
        "4Mi",
        "--quiet",
        "--stats-file",
        stats.to_str().unwrap(),
    ]);
    let px_pid = px.id();
    let mut px = Guarded(px);

    let mut server = Guarded(
        Command::new("python3")
            .arg(peer())
            .arg("server")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut port = String::new();
    BufReader::new(server.0.stdout.take().unwrap())
        .read_line(&mut port)
        .unwrap();
    // Each request is about 3 KiB of row (headers as JSON, both bodies), seen from both
    // sides: far more than the 30-odd MiB http_events gets out of 160Mi.
    let requests = 16_000;
    let mut client = Guarded(
        Command::new("python3")
            .arg(peer())
            .args(["client", "load", "--port", port.trim(), "--count"])
            .arg(requests.to_string())
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut peak_seen = 0;
    let deadline = Instant::now() + Duration::from_secs(240);
    while client.0.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "load client did not finish");
        peak_seen = peak_seen.max(rss_bytes(px_pid));
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    // SAFETY: signalling our own child process.
    unsafe { libc::kill(px_pid.cast_signed(), libc::SIGINT) };
    assert!(px.0.wait().unwrap().success());
    drop(server);

    let json = std::fs::read_to_string(&stats).unwrap();
    let _ = std::fs::remove_file(&stats);
    let peak = number_after(&json, "peak_rss_bytes").max(peak_seen);
    let http = &json[json.find("\"http_events\"").unwrap()..];
    let added = number_after(http, "rows_added");
    let expired = number_after(http, "rows_expired");
    let held_bytes = number_after(http, "bytes_held");
    let budget = number_after(http, "budget_bytes");
    eprintln!(
        "peak RSS {peak} of {limit}; http_events {added} rows, {expired} expired, {held_bytes}/{budget} bytes"
    );
    assert!(
        peak < limit,
        "peak RSS {peak} is over the 160Mi limit: {json}"
    );
    assert!(
        expired > 0,
        "the load should have filled http_events: {json}"
    );
    assert!(held_bytes <= budget);
    // Every request is seen from both sides, unless the machine starved the PEM so long
    // that the kernel's ring buffer filled: then the loss must be counted, never silent.
    let kernel_drops = number_after(&json, "kernel_drops");
    assert!(
        added >= 2 * requests || kernel_drops > 0,
        "requests went missing without a counted drop: {json}"
    );
}

#[test]
fn without_privileges_it_says_what_is_missing() {
    if !privileged() {
        return;
    }
    // Run as nobody, with no capabilities at all.
    let output = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(PX)
        .arg("local")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("missing privileges: CAP_BPF and CAP_PERFMON"),
        "{stderr}"
    );
    assert!(stderr.contains("sudo"), "says how to get them: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn without_tracefs_it_says_how_to_mount_it() {
    if !privileged() {
        return;
    }
    // A private mount namespace without tracefs, and no CAP_SYS_ADMIN to mount it.
    let script = format!(
        "umount /sys/kernel/tracing 2>/dev/null; umount /sys/kernel/debug 2>/dev/null; \
         exec setpriv --inh-caps=-sys_admin --bounding-set=-sys_admin {PX} local"
    );
    let output = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("tracefs is not mounted"), "{stderr}");
    assert!(
        stderr.contains("mount -t tracefs nodev /sys/kernel/tracing"),
        "{stderr}"
    );
}

#[test]
fn budgets_that_cannot_fit_are_explained() {
    let output = Command::new(PX)
        .args([
            "local",
            "--memory-limit",
            "64Mi",
            "--table-limit",
            "conn_stats=1Gi",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("per-table budgets add up to"), "{stderr}");
    let output = Command::new(PX)
        .args(["local", "--table-limit", "conn_stats"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&output.stderr).contains("TABLE=QUANTITY"));
}

#[test]
fn a_bad_memory_limit_is_explained() {
    let output = Command::new(PX)
        .args(["local", "--memory-limit", "lots"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("write it like 2Gi"), "{stderr}");
}
