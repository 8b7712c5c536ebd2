//! `px-operator`: finds its cluster as kubectl does (`KUBECONFIG`, then the in-cluster
//! service account), and needs no flags to start.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;

/// Reconciles px.dev Viziers into PEMs and Kelvin.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Watch only this namespace [default: every namespace].
    #[arg(long, env = "PX_WATCH_NAMESPACE")]
    watch_namespace: Option<String>,
    /// Name of the leader-election Lease.
    #[arg(long, env = "PX_LEASE_NAME", default_value = "px-operator")]
    lease_name: String,
    /// Namespace of the Lease [default: the namespace of the kubeconfig context, or the
    /// operator's own in a cluster].
    #[arg(long, env = "PX_LEASE_NAMESPACE")]
    lease_namespace: Option<String>,
    /// This instance's identity in the Lease [default: the host name and process id].
    #[arg(long, env = "PX_POD_NAME")]
    pod_name: Option<String>,
    /// Serve /metrics (Prometheus), /healthz and /readyz here.
    #[arg(long, env = "PX_METRICS_LISTEN", default_value = "0.0.0.0:8080")]
    metrics_listen: std::net::SocketAddr,
    /// How long the certificates the operator issues inside each Vizier live (a number
    /// of seconds, or with a unit: 90d, 12h, 30m); renewed with a third of it left.
    #[arg(long, env = "PX_CERTIFICATE_LIFETIME", default_value = "90d", value_parser = px_operator::certs::parse_lifetime)]
    certificate_lifetime: Duration,
    /// Seconds the Lease stays held without renewal.
    #[arg(long, default_value_t = 15)]
    lease_seconds: u64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    px_api::process::run_main("px-operator", "info", 2, async move {
        let identity = args.pod_name.filter(|p| !p.is_empty()).unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
            format!("{}-{}", host.trim(), std::process::id())
        });
        let listener = px_operator::metrics::bind(args.metrics_listen)
            .await
            .with_context(|| format!("--metrics-listen {}", args.metrics_listen))?;
        let _endpoints = px_operator::metrics::serve(listener);
        let client = kube::Client::try_default()
            .await
            .context("cannot find a cluster (KUBECONFIG, ~/.kube/config or in-cluster)")?;
        // Ready once the API server answers (a candidate that does not lead is ready
        // too: it is waiting for the Lease, as it should).
        let probe = client.clone();
        tokio::spawn(async move {
            while probe.apiserver_version().await.is_err() {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            px_operator::metrics::set_ready();
        });
        let config = px_operator::Config {
            watch_namespace: args.watch_namespace.filter(|n| !n.is_empty()),
            lease_name: args.lease_name,
            lease_namespace: args.lease_namespace.filter(|n| !n.is_empty()),
            identity,
            lease_duration: Duration::from_secs(args.lease_seconds.max(3)),
            certificate_lifetime: args.certificate_lifetime,
        };
        let shutdown = async {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(t) => t,
                    Err(_) => return std::future::pending().await,
                };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        };
        px_operator::run(client, config, shutdown)
            .await
            .context("the operator stopped")
    })
}
