//! What every binary of this project does around its own work (`px`, `vizier-pem`,
//! `kelvin`): log to stderr as `RUST_LOG` says, run on a Tokio runtime, stop cleanly on
//! SIGINT or SIGTERM (Kubernetes stops a pod with SIGTERM), and print a failure as one
//! line with its causes.

use std::io::IsTerminal as _;
use std::process::ExitCode;

use anyhow::Context as _;
use tokio::signal::unix::{SignalKind, signal};

/// Sets up logging (at `default_log` unless `RUST_LOG` says otherwise), runs `main` on a
/// runtime with `worker_threads` threads, and turns its result into an exit code.
pub fn run_main<F>(program: &str, default_log: &str, worker_threads: usize, main: F) -> ExitCode
where
    F: Future<Output = anyhow::Result<()>>,
{
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_log)),
        )
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
    let result = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(worker_threads)
        .enable_all()
        .build()
        .context("cannot start the async runtime")
        .and_then(|runtime| runtime.block_on(main));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("{program}: {}", one_line(&error));
            ExitCode::FAILURE
        }
    }
}

/// An error and its causes on one line, as `{:#}` prints them, except that a cause whose
/// words its error already says (a `thiserror` message that embeds `{source}`, as aya's
/// and ours do) is not said again.
pub fn one_line(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

/// Completes at the first SIGINT or SIGTERM.
///
/// # Errors
/// When the signal handlers cannot be installed.
pub fn shutdown_signal() -> anyhow::Result<impl Future<Output = ()>> {
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot watch for SIGINT")?;
    let mut terminate = signal(SignalKind::terminate()).context("cannot watch for SIGTERM")?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
    })
}

/// A listener on `addr` for a server's connections; when the address is taken, the
/// error names the flag (`flag`) that chooses another.
///
/// # Errors
/// When `addr` cannot be bound.
pub async fn listen(
    addr: std::net::SocketAddr,
    flag: &str,
) -> anyhow::Result<tokio_stream::wrappers::TcpListenerStream> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}; choose another address with {flag}"))?;
    Ok(tokio_stream::wrappers::TcpListenerStream::new(listener))
}

#[cfg(test)]
mod tests {
    use super::one_line;

    #[derive(Debug, thiserror::Error)]
    #[error("loading failed: {source}")]
    struct Embeds {
        source: std::io::Error,
    }

    #[test]
    fn a_cause_already_in_its_message_is_said_once() {
        let inner = std::io::Error::other("map type unsupported");
        let error = anyhow::Error::new(Embeds { source: inner }).context("px local");
        assert_eq!(
            one_line(&error),
            "px local: loading failed: map type unsupported"
        );
        let plain = anyhow::anyhow!("no such file").context("reading the key");
        assert_eq!(one_line(&plain), "reading the key: no such file");
    }
}
