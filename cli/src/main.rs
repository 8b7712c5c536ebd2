//! `px`: the command-line tool. `px local` runs the whole system on this machine.

mod live_view;
mod local;
mod quantity;
mod run;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// The PEM allocates a little for every message it parses; mimalloc's thread-local
/// free lists make that cheap (glibc malloc was a quarter of its CPU time under load).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's defaults keep freed memory around and commit arenas eagerly, which let
/// resident memory pass `--memory-limit` while tables expired old rows (the px local
/// memory test catches it). Return memory at once and commit only what is used.
/// Values from `enum mi_option_e` of the mimalloc that libmimalloc-sys 0.1 bundles.
fn return_freed_memory_promptly() {
    const ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;
    const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
    // SAFETY: setting options has no memory-safety preconditions.
    unsafe {
        libmimalloc_sys::mi_option_set(ARENA_EAGER_COMMIT, 0);
        libmimalloc_sys::mi_option_set(PURGE_DELAY, 0);
    }
}

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
}

fn main() -> ExitCode {
    return_freed_memory_promptly();
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
            Command::Run(args) => run::run(args).await,
            Command::Scripts => {
                run::list_scripts();
                Ok(())
            }
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
