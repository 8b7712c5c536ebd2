//! Kelvin, the query node: serves Pixie's public API (`px.api.vizierpb.VizierService`),
//! compiles PxL scripts with [`pxl`], runs the plans with DataFusion over the tables,
//! and streams the results in the order Pixie's clients expect: one metadata message
//! per output table, then its row batches (at most about 1 MB each, the last marked
//! end-of-stream), then execution statistics.
//!
//! In `px local` Kelvin reads the PEM's table store in the same process; in a cluster it
//! fans each query out to the PEMs' table services ([`RemotePems`]), pushing down the
//! columns, time window and filters each scan needs. On Kubernetes it finds the PEMs by
//! watching their pods ([`discovery`]).

pub mod discovery;
pub mod metadata;
mod remote;
mod results;
mod service;
mod tracepoints;

pub use px_api::auth::TokenCheck;
pub use remote::{DEFAULT_SCAN_TIMEOUT, PemError, RemotePem, RemotePems};
pub use service::{Kelvin, QueryLimits, func_calls};
pub use tracepoints::{LocalProbes, roll_up as roll_up_tracepoints};

/// The generated server type, behind the token check, ready for
/// `tonic::transport::Server::add_service`.
pub type VizierServer = tonic::service::interceptor::InterceptedService<
    px_api::vizierpb::vizier_service_server::VizierServiceServer<Kelvin>,
    TokenCheck,
>;
