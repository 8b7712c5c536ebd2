//! The socket tracer runs on a thread of its own: rows keep arriving while every async
//! worker is busy (as a large query keeps them), and stopping under load is bounded.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use vizier_pem::{Pem, PemConfig};

use crate::support::{Server, http_rows, wait_for};

/// Load clients, killed on drop.
struct Load(Vec<Child>);

impl Load {
    fn start(port: u16, clients: usize) -> Self {
        let script =
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/peer/http_peer.py");
        Self(
            (0..clients)
                .map(|_| {
                    Command::new("python3")
                        .arg(&script)
                        .args(["client", "load", "--host", "127.0.0.1"])
                        .args(["--port", &port.to_string(), "--count", "10000000"])
                        .stdout(Stdio::null())
                        .spawn()
                        .expect("python3 runs the load client")
                })
                .collect(),
        )
    }

    fn pids(&self) -> Vec<u32> {
        self.0.iter().map(Child::id).collect()
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[test]
fn capture_needs_no_async_worker_and_stopping_under_load_is_bounded() {
    if !crate::common::privileged("socket tracer") {
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let pem = {
        let _guard = runtime.enter();
        Pem::start(PemConfig::for_memory_limit(1 << 30)).expect("the PEM starts")
    };
    let store = pem.store();
    // Rows appended so far: the table may expire old rows under this load, so the rows
    // it holds can shrink while rows keep arriving.
    let added = || store.table("http_events").unwrap().stats().rows_added;
    let server = Server::start("127.0.0.1");
    let load = Load::start(server.port, 2);
    let pids = load.pids();
    wait_for("the load's first rows", || {
        (http_rows(&store, &pids).len() > 100).then_some(())
    });

    // Occupy the runtime's only worker for three seconds, as a large scan would.
    let busy = Arc::new(std::sync::Barrier::new(2));
    let started = Arc::clone(&busy);
    let blocker = runtime.spawn(async move {
        started.wait();
        std::thread::sleep(Duration::from_secs(3));
    });
    busy.wait();
    let before = added();
    std::thread::sleep(Duration::from_millis(2500));
    let during = added();
    assert!(
        during > before + 100,
        "rows stopped arriving while the async worker was busy: {before} before, {during} after 2.5 s"
    );
    runtime.block_on(blocker).unwrap();
    assert_eq!(pem.status().kernel_drops, 0, "the kernel dropped events");

    // Stop while both clients keep sending: the programs are detached first, so the
    // final drain has an end, and what was captured is flushed.
    let rows_before_stop = added();
    let stopping = Instant::now();
    let status = runtime.block_on(pem.stop()).expect("the PEM stops cleanly");
    let took = stopping.elapsed();
    assert!(
        took < Duration::from_secs(10),
        "stopping took {took:?} while traffic kept flowing"
    );
    let rows_after_stop = added();
    assert!(rows_after_stop >= rows_before_stop);
    assert!(status.events_received > 0);
    // Detached: the table no longer grows while the clients go on.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(added(), rows_after_stop);
    drop(load);
}
