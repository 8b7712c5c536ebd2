//! Benchmark of dynamic probes (ignored by default; figures in docs/benchmarks.md):
//!
//! - the cost per traced call: a tight loop calling a probed C function, without a
//!   probe, with an entry probe recording one argument, and with entry and return
//!   (latency), measured side by side in one run, as nanoseconds per call and ratios;
//! - the rate at which one probe records without drops: the same function called at
//!   rising, evenly paced rates.
//!
//! `cargo test -p vizier-pem --test probe_bench -- --ignored --nocapture` (as root).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use px_api::pem::ProbeSpec;
use serde_json::json;
use vizier_pem::{Pem, PemConfig};

const CALLS: &str = "1000000";

fn ns_per_call(target: &Path) -> f64 {
    let mut runs: Vec<f64> = (0..3)
        .map(|_| {
            let out = Command::new(target).args(["hot", CALLS]).output().unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            text.split_whitespace().next().unwrap().parse().unwrap()
        })
        .collect();
    runs.sort_by(f64::total_cmp);
    runs[1]
}

fn spec(target: &Path, table: &str, latency: bool) -> ProbeSpec {
    spec_for(target, table, latency, None)
}

/// A probe on `px_hot`; with `executable`, only threads of that name are recorded.
fn spec_for(target: &Path, table: &str, latency: bool, executable: Option<&str>) -> ProbeSpec {
    let mut columns = vec![json!({"name": "i", "source": "Arg", "index": 0, "type": "int64"})];
    if latency {
        columns.push(json!({"name": "latency", "source": "Latency"}));
    }
    ProbeSpec {
        id: table.to_owned(),
        name: format!("bench/{table}"),
        generation: 1,
        spec_json: json!({
            "probe": {"uprobe": {"binary": target, "symbol": "px_hot"}},
            "target": {"host": {"executable": executable}},
            "columns": columns,
            "table": table,
        })
        .to_string(),
        ..ProbeSpec::default()
    }
}

#[test]
#[ignore = "a benchmark: run with --ignored --nocapture"]
fn probe_cost_and_drop_free_rate() {
    if !common::privileged("probe benchmark") {
        return;
    }
    let target = Path::new(env!("CARGO_TARGET_TMPDIR")).join("probe_target_bench");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/probe_target/probe_target.c");
    assert!(
        Command::new("clang")
            .args(["-O2", "-o"])
            .arg(&target)
            .arg(&src)
            .status()
            .unwrap()
            .success()
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let mut config = PemConfig::for_memory_limit(1 << 30);
    config.probe_rate_per_sec = u32::MAX;
    let pem = {
        let _guard = runtime.enter();
        Pem::start(config).unwrap()
    };
    let probes = pem.probes();

    let measure = |spec: ProbeSpec| {
        let id = spec.id.clone();
        probes.apply(spec);
        let ns = ns_per_call(&target);
        std::thread::sleep(Duration::from_millis(500)); // let the reader drain the ring
        (ns, probes.remove(&id))
    };
    let bare = ns_per_call(&target);
    let (filtered, _) = measure(spec_for(&target, "bench_filtered", false, Some("nobody")));
    let (entry, entry_state) = measure(spec(&target, "bench_entry", false));
    let (both, both_state) = measure(spec(&target, "bench_both", true));
    println!("calls per run: {CALLS} (median of 3 runs)");
    println!("no probe:           {bare:8.1} ns/call");
    println!(
        "probe, filtered:    {filtered:8.1} ns/call  ({:.0}x, +{:.0} ns: the uprobe trap alone)",
        filtered / bare,
        filtered - bare
    );
    println!(
        "entry probe:        {entry:8.1} ns/call  ({:.0}x, +{:.0} ns)  rows {} dropped {}",
        entry / bare,
        entry - bare,
        entry_state.events,
        entry_state.dropped
    );
    println!(
        "entry+return probe: {both:8.1} ns/call  ({:.0}x, +{:.0} ns)  rows {} dropped {}",
        both / bare,
        both - bare,
        both_state.events,
        both_state.dropped
    );

    println!("paced calls of one probe (2 s each): asked rate -> achieved, rows, dropped");
    for rate in [25_000u32, 50_000, 100_000] {
        let table = format!("bench_paced_{rate}");
        probes.apply(spec(&target, &table, false));
        let n = (rate * 2).to_string();
        let started = std::time::Instant::now();
        assert!(
            Command::new(&target)
                .args(["paced", &n, &rate.to_string()])
                .output()
                .unwrap()
                .status
                .success()
        );
        let achieved = f64::from(rate * 2) / started.elapsed().as_secs_f64();
        std::thread::sleep(Duration::from_millis(500));
        let state = probes.list().into_iter().find(|s| s.id == table).unwrap();
        println!(
            "{rate:>8}/s -> {achieved:>8.0}/s, {:>8} rows, {:>6} dropped",
            state.events, state.dropped
        );
        probes.remove(&table);
    }
    // As fast as two processes (one per core here) can call it.
    probes.apply(spec(&target, "bench_flat_out", false));
    let started = std::time::Instant::now();
    let children: Vec<_> = (0..2)
        .map(|_| {
            Command::new(&target)
                .args(["hot", CALLS])
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    let elapsed = started.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_millis(500));
    let state = probes.remove("bench_flat_out");
    println!(
        "2 processes flat out: {:.0} calls/s, {} rows, {} dropped",
        2.0 * CALLS.parse::<f64>().unwrap() / elapsed,
        state.events,
        state.dropped
    );
    drop(pem);
}
