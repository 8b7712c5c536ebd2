//! The operator on the real control plane (`px-e2e`) with two simulated nodes, acting as
//! the chart's ServiceAccount, driven by the real `kubectl`. One test binary with
//! modules, to link once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod operator {
    mod cert_manager;
    mod chart_install;
    mod lease;
    mod metadata;
    mod probes;
    mod real_pem;
    mod scoping;
    mod vizier;
}

/// Where the operator's logs of this test binary go, at debug level, for the test that
/// checks that no key or token reaches them.
fn operator_log() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("operator-tests.log")
}

/// Logs to the test's output as `RUST_LOG` says, and the operator's, at debug level, to
/// [`operator_log`]. Once per test binary; later calls do nothing.
fn init_logs() {
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let file = std::fs::File::create(operator_log()).unwrap();
        let _ = tracing_subscriber::registry()
            .with(
                tracing_subscriber::fmt::layer()
                    .with_test_writer()
                    .with_filter(tracing_subscriber::EnvFilter::from_default_env()),
            )
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(false)
                    .with_writer(std::sync::Mutex::new(file))
                    .with_filter(tracing_subscriber::EnvFilter::new(
                        "px_operator=debug,kube=info",
                    )),
            )
            .try_init();
    });
}
