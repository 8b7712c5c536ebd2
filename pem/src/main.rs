//! `vizier-pem`: the per-node collector as its own process, as the PEM DaemonSet runs
//! it. It traces the node, keeps the tables, and serves scans of them to Kelvin.

use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;
use tonic::service::interceptor::InterceptedService;
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
    /// Require the token in this file (`authorization: Bearer ...`) on every call of the
    /// table and probe services [default: the token in the environment variable
    /// PX_PEM_SERVICE_TOKEN]: whoever can load probes can read any process's memory. The
    /// operator passes it from the Vizier's `px-pem-token` Secret, as Kelvin gets it.
    #[arg(long, env = "PX_PEM_SERVICE_TOKEN_FILE", value_name = "FILE")]
    service_token_file: Option<std::path::PathBuf>,
    /// Serve beyond loopback without a token: anyone who reaches the port may read the
    /// tables and load probes.
    #[arg(long)]
    allow_unauthenticated: bool,
    /// The node this PEM runs on (the downward API's `spec.nodeName`), reported with its
    /// processes so Kelvin can name the node of every row.
    #[arg(long, env = "NODE_NAME", default_value = "")]
    node_name: String,
    /// The ASID: the top 32 bits of every UPID this PEM writes, unique in the cluster
    /// [default: the --listen address's IPv4 as a number (the low 32 bits of an IPv6),
    /// unique because pod addresses are].
    #[arg(long, env = "PX_PEM_ASID")]
    asid: Option<u32>,
}

/// The ASID a PEM listening at `listen` takes when not told one: its address, which no
/// other pod of the cluster has at the same time.
fn default_asid(listen: &SocketAddr) -> u32 {
    match listen.ip() {
        std::net::IpAddr::V4(ip) => u32::from(ip),
        // The low 32 bits: the last two groups.
        std::net::IpAddr::V6(ip) => (u128::from(ip) & u128::from(u32::MAX)) as u32,
    }
}

fn main() -> ExitCode {
    vizier_pem::allocator::return_freed_memory_promptly();
    let args = Args::parse();
    px_api::process::run_main("vizier-pem", "info", 2, run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let token = px_api::secret::load("PX_PEM_SERVICE_TOKEN", args.service_token_file.as_deref())?;
    if token.is_none() && !args.listen.ip().is_loopback() && !args.allow_unauthenticated {
        anyhow::bail!(
            "no service token to serve {} with: put it in PX_PEM_SERVICE_TOKEN or in a file named by --service-token-file, or pass --allow-unauthenticated to let anyone who can reach it read the tables and load probes",
            args.listen
        );
    }
    let tls = args.tls.server_config()?;
    let mut config = args.pem.to_config()?;
    config.asid = args.asid.unwrap_or_else(|| default_asid(&args.listen));
    // On a node of a cluster, the host's own processes are not the user's workloads.
    config.stats_pods_only = !args.node_name.is_empty();
    let pem = Pem::start(config)?;
    let incoming = px_api::process::listen(args.listen, "--listen").await?;
    let pem_asid = args.asid.unwrap_or_else(|| default_asid(&args.listen));
    tracing::info!(
        listen = %args.listen,
        asid = pem_asid,
        node = %args.node_name,
        cgroup = ?args.pem.cgroup,
        "tracing; serving the table and probe services"
    );
    let shutdown = px_api::process::shutdown_signal()?;
    if token.is_none() && !args.listen.ip().is_loopback() {
        tracing::warn!(
            listen = %args.listen,
            "--allow-unauthenticated: anyone who can reach this address can read the tables and load probes"
        );
    }
    let check = px_api::auth::TokenCheck::new(token);
    let mut server = tonic::transport::Server::builder();
    server
        .add_service(InterceptedService::new(
            TableScanService::new(pem.store())
                .with_processes(pem.processes(), pem_asid, args.node_name.clone())
                .into_server(),
            check.clone(),
        ))
        .add_service(InterceptedService::new(
            ProbeControl::new(pem.probes()).into_server(),
            check,
        ))
        .serve_with_incoming_shutdown(px_api::tls::incoming(incoming, tls), shutdown)
        .await
        .context("table service failed")?;
    let status = pem.stop().await?;
    tracing::info!(?status, "stopped");
    Ok(())
}
