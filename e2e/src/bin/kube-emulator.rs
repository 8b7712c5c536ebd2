//! `kube-emulator --kubeconfig PATH`: starts the API-server emulator on a loopback port,
//! writes a kubeconfig for it to PATH once it is ready, serves until SIGINT or SIGTERM,
//! then removes the kubeconfig it wrote.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use px_e2e::{Emulator, EmulatorConfig};
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
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let emulator = Emulator::start(EmulatorConfig {
        watch_window: args.watch_window,
        bookmark_interval: Duration::from_secs(args.bookmark_seconds.max(1)),
    })
    .await?;
    emulator.write_kubeconfig(&args.kubeconfig)?;
    eprintln!(
        "kube-emulator: serving {} (kubeconfig {})",
        emulator.url(),
        args.kubeconfig.display()
    );
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    emulator.stop().await;
    std::fs::remove_file(&args.kubeconfig)
        .with_context(|| format!("removing {}", args.kubeconfig.display()))?;
    eprintln!("kube-emulator: stopped");
    Ok(())
}
