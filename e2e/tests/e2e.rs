//! End-to-end tests of the test cluster itself: the real control plane with simulated
//! nodes, driven by the real kubectl. One test binary with modules, to link once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod e2e {
    mod fixtures;
    mod scenario;
}
