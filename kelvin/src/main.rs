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
    /// A PEM to query, as NAME=URL (e.g. node-a=http://10.0.0.7:50400); repeatable.
    /// For a fixed set of PEMs outside Kubernetes; on a cluster use --pems-from-pods.
    #[arg(long = "pem", value_name = "NAME=URL", value_parser = parse_pem, required_unless_present = "pems_from_pods", conflicts_with = "pems_from_pods")]
    pems: Vec<(String, String)>,
    /// Find the PEMs by watching the pods with this label selector (in --pem-namespace):
    /// each node's PEM pod, at its pod IP, joins or leaves the set without a restart.
    #[arg(long, value_name = "SELECTOR", env = "PX_KELVIN_PEMS_FROM_PODS")]
    pems_from_pods: Option<String>,
    /// The namespace of the PEM pods (default: Kelvin's own, from POD_NAMESPACE or the
    /// client's default).
    #[arg(long, env = "PX_KELVIN_PEM_NAMESPACE")]
    pem_namespace: Option<String>,
    /// The port the PEM pods serve on.
    #[arg(long, env = "PX_KELVIN_PEM_PORT", default_value_t = 50400)]
    pem_port: u16,
    /// Reach the watched PEM pods without TLS (only where the PEMs run --disable-tls).
    #[arg(long)]
    pem_plaintext: bool,
    /// The cluster's name, for `px.vizier_name()` and `px.GetAgentStatus()` (the
    /// operator passes the Vizier's `clusterName`, or its name).
    #[arg(long, env = "PX_CLUSTER_NAME", default_value = "")]
    cluster_name: String,
    /// Fail a query when one PEM has not sent all of a table's rows within this many
    /// seconds.
    #[arg(long, env = "PX_KELVIN_SCAN_TIMEOUT_SECS", default_value_t = kelvin::DEFAULT_SCAN_TIMEOUT.as_secs())]
    scan_timeout_secs: u64,
    /// Queries that may run at once; one more is refused with RESOURCE_EXHAUSTED.
    #[arg(long, env = "PX_KELVIN_MAX_QUERIES", default_value_t = 16)]
    max_concurrent_queries: usize,
    /// Memory the running queries' joins, aggregates and sorts may hold together, as a
    /// Kubernetes quantity (e.g. 1Gi); past it a query fails with RESOURCE_EXHAUSTED.
    #[arg(long, env = "PX_KELVIN_QUERY_MEMORY", default_value = "1Gi", value_parser = parse_bytes)]
    query_memory_limit: u64,
    /// Require the key in this file on every request (`pixie-api-key` metadata or a
    /// bearer token) [default: the key in the environment variable PX_API_KEY]. Never on
    /// the command line, which every user of the machine can read.
    #[arg(long, env = "PX_API_KEY_FILE", value_name = "FILE")]
    api_key_file: Option<std::path::PathBuf>,
    /// Serve without an API key: anyone who reaches the port may query every node.
    #[arg(long)]
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
    /// The file holding the token the PEMs require, sent on every call [default: the
    /// token in the environment variable PX_PEM_SERVICE_TOKEN].
    #[arg(long, env = "PX_PEM_SERVICE_TOKEN_FILE", value_name = "FILE")]
    pem_token_file: Option<std::path::PathBuf>,
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

/// Gives every PEM of a fixed set a new connection when the client certificate is
/// renewed; queries in flight finish on the old ones.
fn reconnect_on_renewal<T: Send + Sync + 'static>(
    pems: RemotePems,
    mut renewed: tokio::sync::watch::Receiver<T>,
    connect: impl Fn(&str, &str) -> Result<RemotePem, kelvin::PemError> + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while renewed.changed().await.is_ok() {
            let next = pems
                .current()
                .iter()
                .filter_map(|p| {
                    connect(p.name(), p.addr())
                        .inspect_err(|error| tracing::warn!(%error, "a PEM cannot be queried"))
                        .ok()
                })
                .collect();
            pems.replace(next);
        }
    })
}

fn parse_pem(text: &str) -> Result<(String, String), String> {
    let (name, url) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} must be NAME=URL, like node-a=http://10.0.0.7:50400"))?;
    Ok((name.to_owned(), url.to_owned()))
}

fn parse_bytes(text: &str) -> Result<u64, String> {
    px_crds::quantity_bytes(text)
        .filter(|b| *b > 0)
        .ok_or_else(|| {
            format!("{text:?} is not a positive Kubernetes quantity; write it like 1Gi or 512Mi")
        })
}

fn main() -> ExitCode {
    let args = Args::parse();
    // The cores it is given: the runtime's workers run DataFusion's operators too.
    let workers = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
    px_api::process::run_main("kelvin", "info", workers, run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let api_key = px_api::secret::load("PX_API_KEY", args.api_key_file.as_deref())?;
    match (&api_key, args.allow_unauthenticated) {
        (None, false) => anyhow::bail!(
            "no API key: put it in PX_API_KEY or in a file named by --api-key-file, or pass --allow-unauthenticated to serve anyone who can reach {}",
            args.listen
        ),
        (Some(_), true) => {
            anyhow::bail!("--allow-unauthenticated and an API key contradict each other: drop one")
        }
        _ => {}
    }
    let pem_token = px_api::secret::load("PX_PEM_SERVICE_TOKEN", args.pem_token_file.as_deref())?
        .map(std::sync::Arc::new);
    let tls = args.tls.server_config()?;
    // Followed: a renewed client certificate reaches new connections without a restart.
    let pem_tls = args.pem_tls().follow()?;
    let connect = {
        let token = pem_token;
        let pem_tls = pem_tls.clone();
        move |name: &str, url: &str| {
            let tls = url
                .starts_with("https://")
                .then(|| pem_tls.borrow().clone());
            RemotePem::new(name, url, tls)?.with_token(token.as_deref())
        }
    };
    let fixed = args
        .pems
        .iter()
        .map(|(name, url)| connect(name, url))
        .collect::<Result<Vec<_>, _>>()?;
    let incoming = px_api::process::listen(args.listen, "--listen").await?;
    let shutdown = px_api::process::shutdown_signal()?;
    let mut server = tonic::transport::Server::builder();
    let pems = RemotePems::new(fixed)
        .with_scan_timeout(std::time::Duration::from_secs(args.scan_timeout_secs));
    let needs_cluster = args.cluster_metadata || args.pems_from_pods.is_some();
    let client = if needs_cluster {
        Some(
            kube::Client::try_default()
                .await
                .context("no Kubernetes credentials (in-cluster or KUBECONFIG) for --cluster-metadata or --pems-from-pods")?,
        )
    } else {
        None
    };
    let mut tasks = Vec::new();
    if let (Some(selector), Some(client)) = (&args.pems_from_pods, &client) {
        let namespace = args
            .pem_namespace
            .clone()
            .or_else(|| std::env::var("POD_NAMESPACE").ok())
            .unwrap_or_else(|| client.default_namespace().to_owned());
        let pods = kelvin::discovery::PemPods {
            namespace,
            selector: selector.clone(),
            port: args.pem_port,
            scheme: if args.pem_plaintext { "http" } else { "https" },
        };
        tracing::info!(namespace = %pods.namespace, selector = %pods.selector, "finding the PEMs by their pods");
        tasks.push(kelvin::discovery::watch_pem_pods(
            client.clone(),
            pods,
            pems.clone(),
            connect,
            Some(pem_tls),
        ));
    } else {
        tracing::info!(pems = ?args.pems, "querying a fixed set of PEMs");
        tasks.push(reconnect_on_renewal(pems.clone(), pem_tls, connect));
    }
    let kelvin = match (&client, args.cluster_metadata) {
        (Some(client), true) => {
            let metadata = kelvin::metadata::ClusterMetadata::default();
            tasks.extend(kelvin::metadata::watch_cluster(client, &metadata));
            Kelvin::over_pems_with_metadata(pems, metadata)
        }
        _ => Kelvin::over_pems(pems),
    };
    let namespace = std::env::var("POD_NAMESPACE").unwrap_or_default();
    let kelvin = kelvin.with_cluster_name(args.cluster_name.clone(), namespace);
    let kelvin = kelvin.with_limits(kelvin::QueryLimits {
        max_concurrent: args.max_concurrent_queries,
        memory_bytes: Some(usize::try_from(args.query_memory_limit).unwrap_or(usize::MAX)),
    });
    tracing::info!(listen = %args.listen, "serving the query API");
    let _tasks = tasks;
    server
        .add_service(kelvin.into_server(kelvin::TokenCheck::new(api_key)))
        .serve_with_incoming_shutdown(px_api::tls::incoming(incoming, tls), shutdown)
        .await
        .context("query API failed")
}
