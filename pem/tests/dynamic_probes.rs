//! Dynamic probes loaded into this kernel: uprobes on a C program built here, a kernel
//! tracepoint, every failure reason, removal, TTL and the rate limit.
//!
//! Needs root (CAP_BPF, CAP_PERFMON) and tracefs. Under `CI=true` these tests fail
//! rather than skip when the privileges are missing. The tests share one PEM and run
//! one at a time (they count the kernel's links and the probes loaded).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use arrow_array::{Array, RecordBatch};
use px_api::pem::{ProbePhase, ProbeSpec, ProbeState};
use px_tablestore::TableStore;
use serde_json::json;
use vizier_pem::probes::ProbeManager;
use vizier_pem::{Pem, PemConfig};

mod common;

/// Events per second per probe in these tests: low enough for the rate test to hit it.
const RATE: u32 = 2000;
const MAX_PROBES: usize = 4;

struct Harness {
    _runtime: tokio::runtime::Runtime,
    _pem: Pem,
    probes: Arc<ProbeManager>,
    store: Arc<TableStore>,
    target: PathBuf,
}

static HARNESS: OnceLock<Option<Harness>> = OnceLock::new();
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn harness() -> Option<(&'static Harness, MutexGuard<'static, ()>)> {
    let h = HARNESS.get_or_init(|| {
        if !common::privileged("dynamic probe") {
            return None;
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let mut config = PemConfig::for_memory_limit(512 << 20);
        config.max_probes = MAX_PROBES;
        config.probe_rate_per_sec = RATE;
        let pem = {
            let _guard = runtime.enter();
            Pem::start(config).expect("the PEM starts")
        };
        Some(Harness {
            probes: pem.probes(),
            store: pem.store(),
            _runtime: runtime,
            _pem: pem,
            target: build_target(),
        })
    });
    let guard = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    h.as_ref().map(|h| (h, guard))
}

/// Compiles `probe_target.c` (known functions) with clang, which builds the kernel
/// programs too.
fn build_target() -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/probe_target/probe_target.c");
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("probe_target");
    let status = Command::new("clang")
        .args(["-O2", "-Wall", "-o"])
        .arg(&out)
        .arg(&src)
        .status()
        .expect("clang runs (apt-get install clang)");
    assert!(status.success(), "clang failed on {}", src.display());
    out
}

fn probe(id: &str, spec: serde_json::Value) -> ProbeSpec {
    ProbeSpec {
        id: id.to_owned(),
        name: format!("test/{id}"),
        generation: 1,
        spec_json: spec.to_string(),
        ..ProbeSpec::default()
    }
}

fn uprobe_spec(
    binary: &Path,
    symbol: &str,
    table: &str,
    columns: serde_json::Value,
) -> serde_json::Value {
    json!({
        "probe": {"uprobe": {"binary": binary, "symbol": symbol}},
        "target": {"host": {}},
        "columns": columns,
        "table": table,
    })
}

fn add_probe_spec(h: &Harness, table: &str) -> serde_json::Value {
    uprobe_spec(
        &h.target,
        "px_add",
        table,
        json!([
            {"name": "a", "source": "Arg", "index": 0, "type": "int64"},
            {"name": "b", "source": "Arg", "index": 1, "type": "int32"},
            {"name": "label", "source": "Arg", "index": 2, "type": "string", "maxLength": 32},
            {"name": "ret", "source": "Return", "type": "int64"},
            {"name": "latency", "source": "Latency"},
            {"name": "pid", "source": "Pid"},
            {"name": "comm", "source": "Comm"},
        ]),
    )
}

fn phase(state: &ProbeState) -> ProbePhase {
    ProbePhase::try_from(state.phase).unwrap_or(ProbePhase::Unspecified)
}

fn assert_running(state: &ProbeState) {
    assert_eq!(
        phase(state),
        ProbePhase::Running,
        "{}: {} {}",
        state.name,
        state.reason,
        state.message
    );
}

fn run_target(h: &Harness, args: &[&str]) -> u32 {
    let child = Command::new(&h.target)
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "probe_target {args:?} failed");
    pid
}

/// Rows of `table` once `done` holds for them, or a failure after 10 s.
fn wait_rows(h: &Harness, table: &str, done: impl Fn(&[RecordBatch]) -> bool) -> Vec<RecordBatch> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let batches = h
            .store
            .table(table)
            .map(|t| t.snapshot())
            .unwrap_or_default();
        if done(&batches) {
            return batches;
        }
        assert!(
            Instant::now() < deadline,
            "table {table} never got the expected rows: {batches:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn rows(batches: &[RecordBatch]) -> usize {
    batches.iter().map(RecordBatch::num_rows).sum()
}

fn ints(batches: &[RecordBatch], column: &str) -> Vec<i64> {
    batches
        .iter()
        .flat_map(|b| {
            b.column_by_name(column)
                .unwrap()
                .as_primitive::<Int64Type>()
                .values()
                .to_vec()
        })
        .collect()
}

fn strings(batches: &[RecordBatch], column: &str) -> Vec<String> {
    batches
        .iter()
        .flat_map(|b| {
            let c = b.column_by_name(column).unwrap().as_string::<i32>();
            (0..c.len())
                .map(|i| c.value(i).to_owned())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Kernel links (bpf_link) whose program is one of the dynamic probe programs.
fn probe_links() -> usize {
    let ids: BTreeSet<u32> = aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .filter(|p| p.name_as_str().is_some_and(|n| n.starts_with("probe_")))
        .map(|p| p.id())
        .collect();
    aya::programs::loaded_links()
        .filter_map(Result::ok)
        .filter(|l| ids.contains(&l.program_id()))
        .count()
}

#[test]
fn uprobe_records_arguments_return_values_and_latency_of_old_and_new_processes() {
    let Some((h, _one)) = harness() else { return };
    // A process that is already running when the probe is applied.
    let mut early = Command::new(&h.target)
        .args(["calls", "5", "alpha", "wait"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let state = h.probes.apply(probe("adds", add_probe_spec(h, "adds")));
    assert_running(&state);
    assert_eq!(state.attachments, 2, "entry and return");
    let sleepy = h.probes.apply(probe(
        "sleepy",
        uprobe_spec(
            &h.target,
            "px_sleepy",
            "sleepy",
            json!([
                {"name": "ms", "source": "Arg", "index": 0, "type": "int32"},
                {"name": "ret", "source": "Return", "type": "int32"},
                {"name": "latency", "source": "Latency"},
            ]),
        ),
    ));
    assert_running(&sleepy);

    early.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let early_pid = early.id();
    assert!(early.wait_with_output().unwrap().status.success());
    // A process started after the probe was loaded.
    let late_pid = run_target(h, &["calls", "3", "beta"]);

    let batches = wait_rows(h, "adds", |b| rows(b) >= 8);
    let pids = ints(&batches, "pid");
    let (a, b, ret) = (
        ints(&batches, "a"),
        ints(&batches, "b"),
        ints(&batches, "ret"),
    );
    let labels = strings(&batches, "label");
    let mut seen = Vec::new();
    for i in 0..pids.len() {
        let pid = u32::try_from(pids[i]).unwrap();
        assert!(
            pid == early_pid || pid == late_pid,
            "row of an unexpected process {pid}"
        );
        let label = if pid == early_pid { "alpha" } else { "beta" };
        assert_eq!(labels[i], label);
        assert_eq!(b[i], 7);
        assert_eq!(
            ret[i],
            a[i] * 1000 + 7 + label.len() as i64,
            "return value of px_add({}, 7, {label})",
            a[i]
        );
        seen.push((pid, a[i]));
    }
    seen.sort_unstable();
    let mut want: Vec<(u32, i64)> = (0..5)
        .map(|i| (early_pid, i))
        .chain((0..3).map(|i| (late_pid, i)))
        .collect();
    want.sort_unstable();
    assert_eq!(seen, want, "one row per call, from both processes");
    assert!(
        strings(&batches, "comm")
            .iter()
            .all(|c| c == "probe_target")
    );

    let slept = wait_rows(h, "sleepy", |b| rows(b) >= 2);
    let latencies = ints(&slept, "latency");
    assert_eq!(ints(&slept, "ret"), vec![60, 60]);
    assert_eq!(ints(&slept, "ms"), vec![30, 30]);
    for l in latencies {
        assert!(
            (30_000_000..1_000_000_000).contains(&l),
            "px_sleepy(30) took {l} ns"
        );
    }

    for id in ["adds", "sleepy"] {
        assert_eq!(phase(&h.probes.remove(id)), ProbePhase::Terminated);
    }
}

#[test]
fn kernel_tracepoint_records_the_files_a_process_opens() {
    let Some((h, _one)) = harness() else { return };
    let links = probe_links();
    let state = h.probes.apply(probe(
        "opens",
        json!({
            "probe": {"tracepoint": "syscalls/sys_enter_openat"},
            "target": {"host": {}},
            "columns": [
                {"name": "filename", "source": "Field", "field": "filename", "type": "string", "maxLength": 256},
                {"name": "flags", "source": "Field", "field": "flags"},
                {"name": "pid", "source": "Pid"},
                {"name": "comm", "source": "Comm"},
            ],
            "table": "file_opens",
        }),
    ));
    assert_running(&state);
    let marker = format!("/tmp/px-probe-open-{}", std::process::id());
    let (one, two) = (format!("{marker}-one"), format!("{marker}-two"));
    let child = Command::new("cat")
        .args([&one, &two])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = i64::from(child.id());
    let _ = child.wait_with_output();
    let batches = wait_rows(h, "file_opens", |b| {
        let names = strings(b, "filename");
        names.contains(&one) && names.contains(&two)
    });
    let (names, pids, comms) = (
        strings(&batches, "filename"),
        ints(&batches, "pid"),
        strings(&batches, "comm"),
    );
    for (i, name) in names.iter().enumerate() {
        if name.starts_with(&marker) {
            assert_eq!(pids[i], pid, "{name} was opened by cat");
            assert_eq!(comms[i], "cat");
        }
    }
    assert_eq!(
        probe_links(),
        links + 1,
        "one link to the tracepoint while loaded"
    );
    assert_eq!(phase(&h.probes.remove("opens")), ProbePhase::Terminated);
    assert_eq!(probe_links(), links, "and none after removal");
}

#[test]
fn removal_detaches_every_link_drops_the_table_and_frees_its_memory() {
    let Some((h, _one)) = harness() else { return };
    let before = probe_links();
    let state = h
        .probes
        .apply(probe("gone", add_probe_spec(h, "gone_soon")));
    assert_running(&state);
    assert_eq!(
        probe_links(),
        before + 2,
        "the kernel lists the entry and return links"
    );
    run_target(h, &["calls", "4", "x"]);
    wait_rows(h, "gone_soon", |b| rows(b) >= 4);
    let table = Arc::downgrade(&h.store.table("gone_soon").unwrap());
    assert!(table.upgrade().unwrap().stats().bytes_held > 0);

    let removed = h.probes.remove("gone");
    assert_eq!(phase(&removed), ProbePhase::Terminated);
    assert_eq!(
        probe_links(),
        before,
        "no link of the probe is left in the kernel"
    );
    assert!(
        h.store.table("gone_soon").is_none(),
        "the table is gone from the catalog"
    );
    assert!(table.upgrade().is_none(), "the table's memory is released");
    // Calls after removal record nothing, and removing twice is harmless.
    run_target(h, &["calls", "2", "x"]);
    assert_eq!(phase(&h.probes.remove("gone")), ProbePhase::Terminated);
}

#[test]
fn each_failure_has_its_reason_and_leaves_the_other_probes_running() {
    let Some((h, _one)) = harness() else { return };
    assert_running(&h.probes.apply(probe("keeper", add_probe_spec(h, "keeper"))));

    let pid_only = json!([{"name": "pid", "source": "Pid"}]);
    let cases = [
        (
            uprobe_spec(Path::new("/no/such/binary"), "f", "f1", pid_only.clone()),
            "BinaryNotFound",
            "/no/such/binary",
        ),
        (
            uprobe_spec(&h.target, "px_missing", "f2", pid_only.clone()),
            "SymbolNotFound",
            "px_missing",
        ),
        (
            uprobe_spec(
                &h.target,
                "px_eight",
                "f3",
                json!([{"name": "h", "source": "Arg", "index": 7, "type": "int64"}]),
            ),
            "UnsupportedArgument",
            "on the stack",
        ),
        (
            json!({"probe": {"tracepoint": "syscalls/sys_enter_nothing"}, "target": {"host": {}}, "columns": pid_only, "table": "f4"}),
            "TracepointNotFound",
            "sys_enter_nothing",
        ),
        (
            json!({"probe": {"tracepoint": "syscalls/sys_enter_openat"}, "target": {"host": {}},
                   "columns": [{"name": "x", "source": "Field", "field": "no_field"}], "table": "f5"}),
            "FieldNotFound",
            "filename",
        ),
        (
            add_probe_spec(h, "http_events"),
            "TableConflict",
            "built-in",
        ),
        (add_probe_spec(h, "keeper"), "TableConflict", "test/keeper"),
    ];
    for (i, (spec, reason, needle)) in cases.into_iter().enumerate() {
        let state = h.probes.apply(probe(&format!("bad{i}"), spec));
        assert_eq!(phase(&state), ProbePhase::Failed, "case {reason}");
        assert_eq!(state.reason, reason, "{}", state.message);
        assert!(
            state.message.contains(needle),
            "{reason}: {:?} lacks {needle:?}",
            state.message
        );
    }
    let garbled = ProbeSpec {
        spec_json: "{not json".into(),
        ..probe("garbled", json!({}))
    };
    assert_eq!(h.probes.apply(garbled).reason, "InvalidSpec");

    // The probe limit: fill the node, then one more is refused.
    for i in 1..MAX_PROBES {
        assert_running(&h.probes.apply(probe(
            &format!("fill{i}"),
            add_probe_spec(h, &format!("fill{i}")),
        )));
    }
    let over = h.probes.apply(probe("over", add_probe_spec(h, "over")));
    assert_eq!(over.reason, "TooManyProbes", "{}", over.message);

    // The first probe kept recording through all of it.
    let pid = run_target(h, &["calls", "3", "still"]);
    wait_rows(h, "keeper", |b| {
        ints(b, "pid")
            .iter()
            .filter(|p| **p == i64::from(pid))
            .count()
            == 3
    });
    for state in h.probes.list() {
        let _ = h.probes.remove(&state.id);
    }
}

#[test]
fn ttl_removes_the_probe_and_its_table() {
    let Some((h, _one)) = harness() else { return };
    let mut spec = probe("short", add_probe_spec(h, "short_lived"));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    spec.expires_at_unix_ns =
        i64::try_from((now + Duration::from_millis(1500)).as_nanos()).unwrap();
    assert_running(&h.probes.apply(spec));
    assert!(h.store.table("short_lived").is_some());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let state = h
            .probes
            .list()
            .into_iter()
            .find(|s| s.id == "short")
            .unwrap();
        if phase(&state) == ProbePhase::Terminated {
            assert!(state.message.contains("TTL"), "{}", state.message);
            assert_eq!(state.reason, "Expired");
            break;
        }
        assert!(Instant::now() < deadline, "the TTL never removed the probe");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(h.store.table("short_lived").is_none());
}

#[test]
fn a_hot_function_is_rate_limited_and_drops_are_counted() {
    let Some((h, _one)) = harness() else { return };
    let spec = uprobe_spec(
        &h.target,
        "px_hot",
        "hot_calls",
        json!([{"name": "i", "source": "Arg", "index": 0, "type": "int64"}]),
    );
    assert_running(&h.probes.apply(probe("hot", spec)));
    // 200,000 calls in well under a few seconds: far more than RATE per second.
    run_target(h, &["hot", "200000"]);
    std::thread::sleep(Duration::from_millis(300));
    let state = h.probes.list().into_iter().find(|s| s.id == "hot").unwrap();
    assert!(
        state.dropped > 0,
        "calls over the rate are counted as dropped: {state:?}"
    );
    assert_eq!(
        state.events + state.dropped,
        200_000,
        "every call is either a row or a counted drop"
    );
    let elapsed_windows = 10; // generous: the loop takes well under 10 s
    assert!(
        state.events <= u64::from(RATE) * elapsed_windows,
        "{state:?}"
    );
    h.probes.remove("hot");
}

#[test]
fn a_pod_target_traces_only_the_processes_in_the_pods_cgroups() {
    let Some((h, _one)) = harness() else { return };
    let uid = format!("0b9f6c1e-3a55-4c1c-9b3e-{:012x}", std::process::id());
    // kubelet's layout: kubepods/pod<uid>/<container>, the process in the container's cgroup.
    // Dropped in reverse: the container's cgroup, the pod's, then kubepods.
    let kubepods = common::Cgroup::create("kubepods");
    let pod = common::Cgroup(kubepods.0.join(format!("pod{uid}")));
    let container = common::Cgroup(pod.0.join("ctr"));
    std::fs::create_dir_all(&container.0).unwrap();
    let target = h.target.to_str().unwrap();
    let mut inside = container.spawn(target, &["calls", "3", "inside", "wait"]);

    let spec = |uid: &str| ProbeSpec {
        pod_target: true,
        pods: vec![px_api::pem::TargetPod {
            uid: uid.to_owned(),
            namespace: "shop".into(),
            name: "checkout-0".into(),
        }],
        ..probe("pod", add_probe_spec(h, "pod_calls"))
    };
    // A pod with no process on this node yet waits, saying so.
    let waiting = h.probes.apply(ProbeSpec {
        id: "nobody".into(),
        ..spec("no-such-pod")
    });
    assert_eq!(phase(&waiting), ProbePhase::Pending, "{waiting:?}");
    assert!(
        waiting.message.contains("no process"),
        "{}",
        waiting.message
    );
    h.probes.remove("nobody");

    // The binary is resolved through the pod process's own root (/proc/PID/root).
    let deadline = Instant::now() + Duration::from_secs(5);
    let state = loop {
        let state = h.probes.apply(spec(&uid));
        if phase(&state) != ProbePhase::Pending || Instant::now() > deadline {
            break state;
        }
        h.probes.remove("pod");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_running(&state);
    let outside = run_target(h, &["calls", "3", "outside"]);
    inside.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let inside_pid = inside.id();
    assert!(inside.wait_with_output().unwrap().status.success());
    let batches = wait_rows(h, "pod_calls", |b| rows(b) >= 3);
    std::thread::sleep(Duration::from_millis(300));
    let batches = h
        .store
        .table("pod_calls")
        .map(|t| t.snapshot())
        .unwrap_or(batches);
    let pids: BTreeSet<i64> = ints(&batches, "pid").into_iter().collect();
    assert_eq!(
        pids,
        BTreeSet::from([i64::from(inside_pid)]),
        "not the process outside the pod ({outside})"
    );
    assert!(strings(&batches, "label").iter().all(|l| l == "inside"));

    // Another pod of the selector appears on the node: the probe follows, table kept.
    let table = Arc::downgrade(&h.store.table("pod_calls").unwrap());
    let mut more = spec(&uid);
    more.pods.push(px_api::pem::TargetPod {
        uid: "another".into(),
        namespace: "shop".into(),
        name: "checkout-1".into(),
    });
    assert_running(&h.probes.apply(more));
    assert!(
        table.upgrade().is_some_and(|t| t.stats().rows_held >= 3),
        "the rows so far are kept"
    );
    h.probes.remove("pod");
}

/// Builds the Go test program, when Go is installed (`.ci/run` installs Debian's).
fn build_go_target() -> Option<PathBuf> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/probe_target/go/main.go");
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let out = tmp.join("go_checkout");
    let built = Command::new("go")
        .arg("build")
        .arg("-o")
        .arg(&out)
        .arg(&src)
        .env("GOCACHE", tmp.join("gocache"))
        .env("GOPATH", tmp.join("gopath"))
        .env("GOFLAGS", "-mod=mod")
        .status();
    match built {
        Ok(status) if status.success() => Some(out),
        other => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI=true: Go is needed for the Go probe test (apt-get install golang-go): {other:?}"
            );
            eprintln!("skipping: cannot build the Go test program: {other:?}");
            None
        }
    }
}

#[test]
fn go_functions_are_read_with_the_register_abi_chosen_from_the_binary() {
    let Some((h, _one)) = harness() else { return };
    let Some(go) = build_go_target() else { return };
    // No `abi`: the PEM finds Go 1.17+ in the binary's build info.
    let spec = uprobe_spec(
        &go,
        "main.Checkout",
        "checkouts",
        json!([
            {"name": "cart", "source": "Arg", "index": 0, "type": "int64"},
            {"name": "user", "source": "Arg", "index": 1, "type": "string", "maxLength": 16},
            {"name": "qty", "source": "Arg", "index": 2, "type": "int64"},
            {"name": "total", "source": "Return", "index": 0, "type": "int64"},
            {"name": "err", "source": "Return", "index": 1, "type": "pointer"},
            {"name": "latency", "source": "Latency"},
        ]),
    );
    let state = h.probes.apply(probe("go", spec));
    assert_running(&state);
    assert!(
        state.attachments >= 2,
        "the entry and each return instruction: {state:?}"
    );
    let out = Command::new(&go).args(["4", "gopher"]).output().unwrap();
    assert!(
        out.status.success(),
        "the traced Go program still runs correctly"
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "done 96");

    let batches = wait_rows(h, "checkouts", |b| rows(b) >= 4);
    let carts = ints(&batches, "cart");
    assert_eq!(carts, vec![0, 1, 2, 3]);
    assert!(strings(&batches, "user").iter().all(|u| u == "gopher"));
    assert_eq!(ints(&batches, "qty"), vec![3, 3, 3, 3]);
    let want: Vec<i64> = carts.iter().map(|c| c * 10 + 6 + 3).collect();
    assert_eq!(
        ints(&batches, "total"),
        want,
        "the first return value, from AX"
    );
    assert_eq!(ints(&batches, "err"), vec![0, 0, 0, 0], "a nil error");
    for l in ints(&batches, "latency") {
        assert!(
            (20_000_000..1_000_000_000).contains(&l),
            "Checkout sleeps 20 ms; took {l} ns"
        );
    }
    h.probes.remove("go");
}

#[test]
fn a_new_generation_replaces_the_probe_and_its_table() {
    let Some((h, _one)) = harness() else { return };
    let first = uprobe_spec(
        &h.target,
        "px_add",
        "replaced",
        json!([{"name": "a", "source": "Arg", "index": 0, "type": "int64"}]),
    );
    assert_running(&h.probes.apply(probe("replace", first.clone())));
    // The same generation again changes nothing.
    let old = Arc::downgrade(&h.store.table("replaced").unwrap());
    assert_running(&h.probes.apply(probe("replace", first)));
    assert!(old.upgrade().is_some(), "the same table");

    let second = uprobe_spec(
        &h.target,
        "px_add",
        "replaced",
        json!([
            {"name": "a", "source": "Arg", "index": 0, "type": "int64"},
            {"name": "label", "source": "Arg", "index": 2, "type": "string"},
        ]),
    );
    let state = h.probes.apply(ProbeSpec {
        generation: 2,
        ..probe("replace", second)
    });
    assert_running(&state);
    assert_eq!(state.generation, 2);
    assert!(
        old.upgrade().is_none(),
        "the old table and its rows are gone"
    );
    let columns: Vec<String> = h
        .store
        .table("replaced")
        .unwrap()
        .schema()
        .columns
        .iter()
        .map(|c| c.name.clone())
        .collect();
    assert_eq!(columns, ["time_", "upid", "a", "label"]);
    run_target(h, &["calls", "2", "second"]);
    let batches = wait_rows(h, "replaced", |b| rows(b) >= 2);
    assert!(strings(&batches, "label").iter().all(|l| l == "second"));
    h.probes.remove("replace");
}
