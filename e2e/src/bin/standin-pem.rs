//! `standin-pem`: serves the PEM's `ProbeService` from memory, for the operator's e2e
//! tests (see `px_e2e::standin_pem`). It accepts the flags the operator gives the real
//! `vizier-pem`, and ignores those it has no use for.

use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;
use px_e2e::standin_pem::{ProbeFailure, StandinConfig, serve};

/// A stand-in PEM: keeps probes and retention budgets in memory.
#[derive(Parser, Debug)]
#[command(about, ignore_errors = true)]
struct Args {
    /// Address to serve on (the operator passes `$(POD_IP):50400`).
    #[arg(long, env = "PX_STANDIN_LISTEN", default_value = "127.0.0.1:50400")]
    listen: SocketAddr,
    /// This node's name (downward API `spec.nodeName`).
    #[arg(long, env = "NODE_NAME", default_value = "")]
    node_name: String,
    /// The memory limit in bytes, as the operator passes it to the real PEM.
    #[arg(long, default_value_t = 2 << 30)]
    memory_limit: u64,
    /// Fail every ApplyProbe with `Reason: message`.
    #[arg(long, env = "PX_STANDIN_FAIL")]
    fail: Option<String>,
    /// Fail only on these nodes (comma-separated); every node when unset.
    #[arg(long, env = "PX_STANDIN_FAIL_NODES")]
    fail_nodes: Option<String>,
    /// TLS as `vizier-pem` takes it: served, with mutual TLS when a client CA is given.
    #[command(flatten)]
    tls: px_api::tls::ServerTlsArgs,
    /// Accepted for compatibility with `vizier-pem` (`customPEMFlags`); not modelled.
    #[arg(long)]
    table_store_limit: Option<String>,
    /// Accepted for compatibility with `vizier-pem` (`customPEMFlags`); not modelled.
    #[arg(long)]
    http_events_percent: Option<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    px_api::process::run_main("standin-pem", "info", 1, async move {
        let tls = args.tls.server_config()?;
        let config = StandinConfig {
            fail: ProbeFailure::for_node(
                args.fail.as_deref(),
                args.fail_nodes.as_deref(),
                &args.node_name,
            ),
            node: args.node_name,
            memory_limit_bytes: args.memory_limit,
        };
        tracing::info!(listen = %args.listen, node = %config.node, fail = ?config.fail, "serving ProbeService");
        let shutdown = px_api::process::shutdown_signal()?;
        serve(args.listen, tls, config, shutdown)
            .await
            .with_context(|| format!("cannot serve on {}", args.listen))
    })
}
