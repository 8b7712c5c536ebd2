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
