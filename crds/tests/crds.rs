//! The CRD manifests: committed YAML equals the generated one, and the real `kubectl`
//! installs them and applies good objects and refuses bad ones against the real
//! kube-apiserver. One test binary with modules, to link once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod crds {
    mod cluster;
    mod drift;
    mod schema;
}
