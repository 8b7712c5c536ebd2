//! `vizier-pem`, the Pixie Edge Module: the per-node data collector.
//!
//! It loads the socket tracer into the kernel (syscall tracepoints writing into a ring
//! buffer), rebuilds each connection's byte streams, infers and parses the protocol,
//! pairs requests with responses, and appends rows to bounded in-memory tables
//! (`http_events`, `conn_stats`) that queries read.
//!
//! Data flows one way, one module per stage: [`loader`](self) (kernel programs) ->
//! `events` (decode) -> `tracker` (connections, streams) -> `protocols` (parsers) ->
//! the table store.

pub mod allocator;
mod args;
mod cgroup;
mod clock;
mod config;
mod conn_stats;
pub mod container;
mod error;
mod event_loop;
mod events;
mod loader;
mod pem;
mod privileges;
pub mod probes;
mod proc_stats;
mod process;
mod protocols;
/// A synthetic workload through the user-space path, for instruction counts (see
/// `src/bin/tracker_replay.rs`); not part of the API.
#[doc(hidden)]
pub mod replay;
mod table_service;
mod tracker;

pub use args::{PemArgs, parse_bytes};
pub use config::PemConfig;
pub use error::Error;
pub use pem::{Pem, PemStatus};
pub use process::{ProcessInfo, ProcessTable};
pub use table_service::TableScanService;
pub use tracker::TrackerCounters;

/// Names of the tables the PEM fills.
pub mod tables {
    /// HTTP/1.x requests paired with their responses.
    pub const HTTP_EVENTS: &str = "http_events";
    /// Per-endpoint connection counters.
    pub const CONN_STATS: &str = "conn_stats";
    /// Per-process CPU, memory and IO counters.
    pub const PROCESS_STATS: &str = crate::proc_stats::PROCESS_STATS;
    /// Per-pod network interface counters.
    pub const NETWORK_STATS: &str = crate::proc_stats::NETWORK_STATS;

    /// The schemas of the tables the PEM fills.
    #[must_use]
    pub fn schemas() -> Vec<px_tablestore::TableSchema> {
        vec![
            crate::protocols::http::http_events_schema(),
            crate::conn_stats::schema(),
            crate::proc_stats::process_stats_schema(),
            crate::proc_stats::network_stats_schema(),
        ]
    }
}

/// Entry points for `cargo fuzz` (see `fuzz/`); not part of the API.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing {
    /// Feeds arbitrary bytes through the HTTP parser and stitcher.
    pub fn http_parse(data: &[u8]) {
        crate::protocols::http::fuzz_one_input(data);
    }

    /// Feeds arbitrary bytes to the probe service's request decoding and checks.
    pub fn probe_request(data: &[u8]) {
        crate::probes::fuzz::probe_request(data);
    }
}
