//! The socket tracer loaded into this kernel, fed real HTTP traffic on loopback by a
//! real server and client (Python's standard library, `tests/peer/http_peer.py`).
//!
//! Needs root (CAP_BPF, CAP_PERFMON) and tracefs; the PEM mounts tracefs itself.
//! Under `CI=true` these tests fail rather than skip when the privileges are missing.

#[path = "../common/mod.rs"]
mod common;
mod conn_stats;
mod http;
mod support;
mod threads;
