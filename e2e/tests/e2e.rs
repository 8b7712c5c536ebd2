//! End-to-end tests of the emulator, driven by the real kubectl and by `kube`.
//! One test binary with modules, to link once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod e2e {
    mod binary;
    mod fixtures;
    mod kube_client;
    mod kubectl;
    mod robustness;
    mod scenario;
}
