//! Protobuf messages and gRPC services of the system, generated at build time
//! from `proto/`:
//!
//! - [`vizierpb`]: Pixie's public API (`px.api.vizierpb`), wire-compatible with
//!   Pixie's own clients: `VizierService` (`ExecuteScript`, `HealthCheck`,
//!   `GenerateOTelScript`) and `VizierDebugService` (`DebugLog`, `DebugPods`),
//!   served by Kelvin.
//! - [`pem`]: the internal `px.internal.pem.v1.TableService` through which Kelvin
//!   reads table data (as Arrow IPC) from each PEM, and `ProbeService` through which
//!   the operator (or `px trace` locally) loads and removes dynamic probes, sets table
//!   retention, and reads back each probe's state and each table's history.
//!
//! Each module holds the messages, a `*_client` module with a tonic client and a
//! `*_server` module with the server trait and its tonic service. The clients
//! have no `connect()`: build a `tonic::transport::Channel` and pass it to
//! `new()`.

/// Pixie's public API, package `px.api.vizierpb`.
pub mod auth;
pub mod process;
pub mod secret;
pub mod tls;

#[allow(
    missing_docs,
    unreachable_pub,
    clippy::all,
    clippy::pedantic,
    clippy::unwrap_used,
    clippy::expect_used
)]
pub mod vizierpb {
    include!(concat!(env!("OUT_DIR"), "/px.api.vizierpb.rs"));
}

/// The internal PEM table service, package `px.internal.pem.v1`.
#[allow(
    missing_docs,
    unreachable_pub,
    clippy::all,
    clippy::pedantic,
    clippy::unwrap_used,
    clippy::expect_used
)]
pub mod pem {
    include!(concat!(env!("OUT_DIR"), "/px.internal.pem.v1.rs"));
}

/// The encoded `google.protobuf.FileDescriptorSet` of every `.proto` file of this
/// crate (with source comments), for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/file_descriptor_set.bin"));
