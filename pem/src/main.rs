//! `vizier-pem`: the per-node collector as its own process, as the PEM DaemonSet runs
//! it. It traces the node, keeps the tables, and serves scans of them to Kelvin.

use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;
use vizier_pem::probes::ProbeControl;
use vizier_pem::{Pem, PemArgs, TableScanService};

/// See `vizier_pem::allocator`.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The Pixie Edge Module: traces this node with eBPF and serves its tables to Kelvin.
#[derive(Parser)]
#[command(name = "vizier-pem", version, about)]
struct Args {
    /// Serve the table service (Kelvin's scans) and the probe service (the operator's
    /// Tracepoints and retention) here.
    #[arg(long, env = "PX_PEM_LISTEN", default_value = "0.0.0.0:50400")]
    listen: SocketAddr,
    #[command(flatten)]
    pem: PemArgs,
    #[command(flatten)]
    tls: px_api::tls::ServerTlsArgs,
}

fn main() -> ExitCode {
    vizier_pem::allocator::return_freed_memory_promptly();
    let args = Args::parse();
    px_api::process::run_main("vizier-pem", "info", 2, run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let tls = args.tls.server_config()?;
    let pem = Pem::start(args.pem.to_config()?)?;
    let incoming = px_api::process::listen(args.listen, "--listen").await?;
    tracing::info!(
        listen = %args.listen,
        cgroup = ?args.pem.cgroup,
        "tracing; serving the table and probe services"
    );
    let shutdown = px_api::process::shutdown_signal()?;
    let mut server = px_api::tls::server(tls)?;
    server
        .add_service(TableScanService::new(pem.store()).into_server())
        .add_service(ProbeControl::new(pem.probes()).into_server())
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
        .context("table service failed")?;
    let status = pem.stop().await?;
    tracing::info!(?status, "stopped");
    Ok(())
}
