//! `kube-emulator --kubeconfig PATH`: starts the API-server emulator on a loopback port
//! (with simulated nodes when `--node` is given), writes a kubeconfig for it to PATH once
//! it is ready, serves until SIGINT or SIGTERM, then stops every pod process, removes
//! the node cgroups and the kubeconfig it wrote.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Parser;
use px_e2e::{Cluster, ClusterConfig, EmulatorConfig, NodeSpec};
use tokio::signal::unix::{SignalKind, signal};

/// A one-machine Kubernetes API-server emulator for tests and by-hand use with kubectl.
#[derive(Debug, Parser)]
#[command(name = "kube-emulator", version)]
struct Args {
    /// Where to write the kubeconfig that points at the emulator.
    #[arg(long)]
    kubeconfig: PathBuf,
    /// How many change events watches can resume from before getting 410 Gone.
    #[arg(long, default_value_t = 10_000)]
    watch_window: usize,
    /// Seconds between watch bookmarks.
    #[arg(long, default_value_t = 5)]
    bookmark_seconds: u64,
    /// A simulated node (repeat for more); pods bound to it run as local processes.
    #[arg(long = "node", value_name = "NAME")]
    nodes: Vec<String>,
    /// The local executable that runs a container image (repeatable).
    #[arg(long = "image", value_name = "IMAGE=PATH")]
    images: Vec<String>,
}

fn images(pairs: &[String]) -> anyhow::Result<HashMap<String, PathBuf>> {
    pairs
        .iter()
        .map(|pair| match pair.split_once('=') {
            Some((image, path)) if !image.is_empty() && !path.is_empty() => {
                Ok((image.to_string(), PathBuf::from(path)))
            }
            _ => bail!("--image wants IMAGE=PATH, got {pair:?}"),
        })
        .collect()
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let config = ClusterConfig {
        emulator: EmulatorConfig {
            watch_window: args.watch_window,
            bookmark_interval: Duration::from_secs(args.bookmark_seconds.max(1)),
        },
        nodes: args.nodes.iter().map(|n| NodeSpec::named(n)).collect(),
        images: images(&args.images)?,
    };
    let cluster = Cluster::start(config).await?;
    cluster.emulator().write_kubeconfig(&args.kubeconfig)?;
    eprintln!(
        "kube-emulator: serving {} (kubeconfig {}, {} node(s))",
        cluster.emulator().url(),
        args.kubeconfig.display(),
        args.nodes.len()
    );
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    cluster.stop().await;
    std::fs::remove_file(&args.kubeconfig)
        .with_context(|| format!("removing {}", args.kubeconfig.display()))?;
    eprintln!("kube-emulator: stopped");
    Ok(())
}
