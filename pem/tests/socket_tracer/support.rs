//! One PEM for the whole test binary (loading probes is slow and they see every
//! process anyway), a server and clients in child processes, and row readers.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use arrow_array::cast::AsArray;
use arrow_array::types::{Int64Type, TimestampNanosecondType};
use arrow_array::{Array, RecordBatch};
use px_tablestore::{TableStore, u128_from_bytes};
use vizier_pem::{Pem, PemConfig, PemStatus};

pub(crate) struct Harness {
    runtime: tokio::runtime::Runtime,
    pem: Pem,
    pub(crate) store: Arc<TableStore>,
}

impl Harness {
    pub(crate) fn status(&self) -> PemStatus {
        let _guard = self.runtime.enter();
        self.pem.status()
    }
}

static HARNESS: OnceLock<Option<Harness>> = OnceLock::new();

/// The shared PEM, or `None` (with a message) when not privileged outside CI.
pub(crate) fn harness() -> Option<&'static Harness> {
    HARNESS
        .get_or_init(|| {
            if !crate::common::privileged("socket tracer") {
                return None;
            }
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap();
            let mut config = PemConfig::for_memory_limit(512 << 20);
            config.conn_stats_interval = Duration::from_secs(1);
            let pem = {
                let _guard = runtime.enter();
                Pem::start(config).expect("the PEM starts")
            };
            let store = pem.store();
            Some(Harness {
                runtime,
                pem,
                store,
            })
        })
        .as_ref()
}

fn peer_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/peer/http_peer.py")
}

/// An HTTP server in its own process, killed on drop.
pub(crate) struct Server {
    child: Child,
    pub(crate) port: u16,
}

impl Server {
    pub(crate) fn start(bind: &str) -> Self {
        let mut child = Command::new("python3")
            .arg(peer_script())
            .args(["server", "--bind", bind])
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs the test server");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line.trim().parse().expect("the server prints its port");
        Self { child, port }
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a client scenario to completion; returns its JSON report and pid.
pub(crate) fn client(scenario: &str, host: &str, port: u16, count: usize) -> (String, u32) {
    let child = Command::new("python3")
        .arg(peer_script())
        .args(["client", scenario, "--host", host])
        .args(["--port", &port.to_string(), "--count", &count.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 runs the test client");
    let pid = child.id();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "client {scenario} failed");
    (String::from_utf8_lossy(&output.stdout).into_owned(), pid)
}

/// Polls until `check` holds, or fails after a generous timeout.
pub(crate) fn wait_for<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One `http_events` row, for assertions.
#[derive(Clone, Debug)]
#[allow(dead_code)] // every column is read; not every test looks at each
pub(crate) struct HttpRow {
    pub(crate) time: i64,
    pub(crate) pid: u32,
    pub(crate) upid: u128,
    pub(crate) remote_addr: String,
    pub(crate) remote_port: i64,
    pub(crate) local_addr: String,
    pub(crate) local_port: i64,
    pub(crate) trace_role: i64,
    pub(crate) major_version: i64,
    pub(crate) minor_version: i64,
    pub(crate) content_type: i64,
    pub(crate) req_headers: String,
    pub(crate) req_method: String,
    pub(crate) req_path: String,
    pub(crate) req_body: String,
    pub(crate) req_body_size: i64,
    pub(crate) resp_headers: String,
    pub(crate) resp_status: i64,
    pub(crate) resp_message: String,
    pub(crate) resp_body: String,
    pub(crate) resp_body_size: i64,
    pub(crate) latency: i64,
}

fn int(batch: &RecordBatch, name: &str, row: usize) -> i64 {
    batch
        .column_by_name(name)
        .unwrap()
        .as_primitive::<Int64Type>()
        .value(row)
}

fn text(batch: &RecordBatch, name: &str, row: usize) -> String {
    batch
        .column_by_name(name)
        .unwrap()
        .as_string::<i32>()
        .value(row)
        .to_owned()
}

/// Every `http_events` row written by the processes `pids`.
pub(crate) fn http_rows(store: &TableStore, pids: &[u32]) -> Vec<HttpRow> {
    let table = store.table("http_events").unwrap();
    let mut rows = Vec::new();
    for batch in table.snapshot() {
        let upids = batch.column_by_name("upid").unwrap().as_fixed_size_binary();
        let times = batch
            .column_by_name("time_")
            .unwrap()
            .as_primitive::<TimestampNanosecondType>();
        for i in 0..batch.num_rows() {
            let upid = u128_from_bytes(upids.value(i)).unwrap();
            let pid = (upid >> 64) as u32;
            if !pids.contains(&pid) {
                continue;
            }
            assert!(!times.is_null(i));
            rows.push(HttpRow {
                time: times.value(i),
                pid,
                upid,
                remote_addr: text(&batch, "remote_addr", i),
                remote_port: int(&batch, "remote_port", i),
                local_addr: text(&batch, "local_addr", i),
                local_port: int(&batch, "local_port", i),
                trace_role: int(&batch, "trace_role", i),
                major_version: int(&batch, "major_version", i),
                minor_version: int(&batch, "minor_version", i),
                content_type: int(&batch, "content_type", i),
                req_headers: text(&batch, "req_headers", i),
                req_method: text(&batch, "req_method", i),
                req_path: text(&batch, "req_path", i),
                req_body: text(&batch, "req_body", i),
                req_body_size: int(&batch, "req_body_size", i),
                resp_headers: text(&batch, "resp_headers", i),
                resp_status: int(&batch, "resp_status", i),
                resp_message: text(&batch, "resp_message", i),
                resp_body: text(&batch, "resp_body", i),
                resp_body_size: int(&batch, "resp_body_size", i),
                latency: int(&batch, "latency", i),
            });
        }
    }
    rows
}

/// Waits until the processes `pids` have at least `count` rows, and returns them.
pub(crate) fn wait_for_http_rows(store: &TableStore, pids: &[u32], count: usize) -> Vec<HttpRow> {
    let mut last = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        last = http_rows(store, pids);
        if last.len() >= count {
            return last;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!(
        "timed out waiting for {count} http_events rows of pids {pids:?}; found {}: {last:#?}",
        last.len()
    );
}

/// `conn_stats` rows of one process, newest last: (remote_port, role, open, close, active, sent, recv).
pub(crate) fn conn_stats_rows(store: &TableStore, pid: u32) -> Vec<[i64; 7]> {
    let table = store.table("conn_stats").unwrap();
    let mut rows = Vec::new();
    for batch in table.snapshot() {
        let upids = batch.column_by_name("upid").unwrap().as_fixed_size_binary();
        for i in 0..batch.num_rows() {
            let upid = u128_from_bytes(upids.value(i)).unwrap();
            if (upid >> 64) as u32 != pid {
                continue;
            }
            rows.push([
                int(&batch, "remote_port", i),
                int(&batch, "trace_role", i),
                int(&batch, "conn_open", i),
                int(&batch, "conn_close", i),
                int(&batch, "conn_active", i),
                int(&batch, "bytes_sent", i),
                int(&batch, "bytes_recv", i),
            ]);
        }
    }
    rows
}
