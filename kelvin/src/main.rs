//! `kelvin`: the query node as its own process, as the Kelvin Deployment runs it. It
//! serves Pixie's public API and fans every query out to the PEMs it is given.

use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;
use kelvin::{Kelvin, RemotePem, RemotePems};

/// The query node: serves Pixie's API (VizierService) and runs each query on the PEMs.
#[derive(Parser)]
#[command(name = "kelvin", version, about)]
struct Args {
    /// Serve the query API here.
    #[arg(long, env = "PX_KELVIN_LISTEN", default_value = "0.0.0.0:50300")]
    listen: SocketAddr,
    /// A PEM to query, as NAME=URL (e.g. node-a=http://10.0.0.7:50400); repeatable,
    /// or comma-separated in the environment variable.
    #[arg(long = "pem", value_name = "NAME=URL", env = "PX_KELVIN_PEMS", value_delimiter = ',', required = true, value_parser = parse_pem)]
    pems: Vec<(String, String)>,
    /// Require this key on every request (`pixie-api-key` metadata or a bearer token).
    #[arg(long, env = "PX_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Serve without an API key: anyone who reaches the port may query every node.
    #[arg(long, conflicts_with = "api_key")]
    allow_unauthenticated: bool,
    #[command(flatten)]
    tls: px_api::tls::ServerTlsArgs,
    /// The CA that signed the PEMs' certificates (PEM), for PEMs at https:// URLs.
    #[arg(long, env = "PX_PEM_TLS_CA", value_name = "FILE")]
    pem_tls_ca: Option<std::path::PathBuf>,
    /// Kelvin's client certificate for PEMs that require one (mutual TLS).
    #[arg(
        long,
        env = "PX_PEM_TLS_CERT",
        value_name = "FILE",
        requires = "pem_tls_key"
    )]
    pem_tls_cert: Option<std::path::PathBuf>,
    /// The private key of --pem-tls-cert.
    #[arg(
        long,
        env = "PX_PEM_TLS_KEY",
        value_name = "FILE",
        requires = "pem_tls_cert"
    )]
    pem_tls_key: Option<std::path::PathBuf>,
    /// The name the PEMs' certificates carry, when not the host of their URLs.
    #[arg(long, env = "PX_PEM_TLS_SERVER_NAME")]
    pem_tls_server_name: Option<String>,
    /// The token the PEMs require (their `--service-token`), sent on every call.
    #[arg(long, env = "PX_PEM_SERVICE_TOKEN", hide_env_values = true)]
    pem_token: Option<String>,
    /// Watch the cluster (Pods, Services, EndpointSlices, ReplicaSets, Nodes, with the
    /// pod's ServiceAccount or KUBECONFIG) so queries can name the pod, service,
    /// namespace and node of every row.
    #[arg(long, env = "PX_KELVIN_CLUSTER_METADATA")]
    cluster_metadata: bool,
}

impl Args {
    /// How Kelvin reaches PEMs at https:// URLs.
    fn pem_tls(&self) -> px_api::tls::ClientTls {
        px_api::tls::ClientTls {
            ca: self.pem_tls_ca.clone(),
            identity: self.pem_tls_cert.clone().zip(self.pem_tls_key.clone()),
            server_name: self.pem_tls_server_name.clone(),
        }
    }
}

fn parse_pem(text: &str) -> Result<(String, String), String> {
    let (name, url) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} must be NAME=URL, like node-a=http://10.0.0.7:50400"))?;
    Ok((name.to_owned(), url.to_owned()))
}

fn main() -> ExitCode {
    let args = Args::parse();
    px_api::process::run_main("kelvin", "info", 2, run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    if args.api_key.is_none() && !args.allow_unauthenticated {
        anyhow::bail!(
            "no API key: set --api-key (or PX_API_KEY), or pass --allow-unauthenticated to serve anyone who can reach {}",
            args.listen
        );
    }
    let tls = args.tls.server_config()?;
    let pem_tls = args.pem_tls().config()?;
    let pems = args
        .pems
        .iter()
        .map(|(name, url)| {
            let tls = url.starts_with("https://").then(|| pem_tls.clone());
            RemotePem::new(name, url, tls)?.with_token(args.pem_token.as_deref())
        })
        .collect::<Result<Vec<_>, _>>()?;
    let incoming = px_api::process::listen(args.listen, "--listen").await?;
    tracing::info!(listen = %args.listen, pems = ?args.pems, "serving the query API");
    let shutdown = px_api::process::shutdown_signal()?;
    let mut server = px_api::tls::server(tls)?;
    let pems = RemotePems::new(pems);
    let (kelvin, _watches) = if args.cluster_metadata {
        let client = kube::Client::try_default()
            .await
            .context("--cluster-metadata: no Kubernetes credentials (in-cluster or KUBECONFIG)")?;
        let metadata = kelvin::metadata::ClusterMetadata::default();
        let watches = kelvin::metadata::watch_cluster(&client, &metadata);
        (Kelvin::over_pems_with_metadata(pems, metadata), watches)
    } else {
        (Kelvin::over_pems(pems), Vec::new())
    };
    server
        .add_service(kelvin.into_server(args.api_key))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
        .context("query API failed")
}
