//! Errors of the library's public operations.

use std::path::PathBuf;

/// Why starting, stopping or driving the control plane, a node or the harness failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Finding a free loopback port failed.
    #[error("finding a free loopback port: {source}")]
    Bind {
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Writing or removing a file (kubeconfig, cgroup) failed.
    #[error("writing {path}: {source}")]
    WriteFile {
        /// The file.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// No cgroup v2 hierarchy is mounted and mounting one failed.
    #[error("no cgroup v2 mount found and mounting one at {path} failed: {source}")]
    Cgroup {
        /// Where the mount was tried or the directory that failed.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Running kubectl failed to start.
    #[error("running kubectl: {source}")]
    Kubectl {
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Making a certificate or key failed.
    #[error("making {what}: {source}")]
    Certificate {
        /// Which certificate or key.
        what: String,
        /// The underlying error.
        #[source]
        source: rcgen::Error,
    },
    /// A control-plane component could not be built, failed to start or exited.
    #[error("{component}: {message}")]
    ControlPlane {
        /// etcd, kube-apiserver, kube-controller-manager, kube-scheduler (or `build`).
        component: String,
        /// What went wrong, with the end of its log.
        message: String,
    },
    /// A client for a kubeconfig could not be made.
    #[error("a client for {kubeconfig}: {message}")]
    Client {
        /// The kubeconfig.
        kubeconfig: PathBuf,
        /// Why.
        message: String,
    },
    /// Helm (helm-python-sdk) could not be installed, or refused a request.
    #[error("helm: {message}")]
    Helm {
        /// What failed, in Helm's or the installer's words.
        message: String,
    },
    /// An object the harness writes was refused by the API server.
    #[error("the API server refused {what}: {message}")]
    Refused {
        /// What was being written.
        what: String,
        /// The Status message.
        message: String,
    },
}
