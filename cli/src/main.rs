//! `px`: the command-line tool. `px local` runs the whole system on this machine.

mod live_view;
mod local;
mod quantity;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Observe this machine's or cluster's network traffic with eBPF, Pixie-compatible.
#[derive(Parser)]
#[command(name = "px", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Trace this host (no Kubernetes needed) and show HTTP requests as they happen.
    Local(local::LocalArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("px: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Local(args) => local::run(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("px: {error:#}");
            ExitCode::FAILURE
        }
    }
}
