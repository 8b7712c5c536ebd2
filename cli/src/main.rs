//! `px`: the command-line tool. `px local` runs the whole system on this machine.

mod api_client;
mod key_file;
mod live_view;
mod local;
mod quantity;
mod run;
mod trace;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// See `vizier_pem::allocator`: the PEM in this process needs mimalloc, tuned.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Observe this machine's or cluster's network traffic with eBPF, Pixie-compatible.
#[derive(Parser)]
#[command(name = "px", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Trace this host (no Kubernetes needed), show HTTP requests as they happen, and
    /// serve the query API for `px run`.
    Local(local::LocalArgs),
    /// Run a PxL script (bundled, or from a file) and print its tables.
    Run(run::RunArgs),
    /// List the bundled scripts.
    Scripts,
    /// Load, list and remove Tracepoints (dynamic probes) in `px local`.
    Trace(trace::TraceArgs),
}

fn main() -> ExitCode {
    vizier_pem::allocator::return_freed_memory_promptly();
    let cli = Cli::parse();
    px_api::process::run_main("px", "warn", 2, async {
        match cli.command {
            Command::Local(args) => local::run(args).await,
            Command::Run(args) => run::run(args).await,
            Command::Trace(args) => trace::run(args).await,
            Command::Scripts => {
                run::list_scripts();
                Ok(())
            }
        }
    })
}
