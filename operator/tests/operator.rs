//! The operator against the e2e API-server emulator with two simulated nodes, driven by
//! the real `kubectl`. One test binary with modules, to link once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod operator {
    mod lease;
    mod probes;
    mod real_pem;
    mod vizier;
}
