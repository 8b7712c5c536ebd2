//! Errors of the library's public operations.

use std::path::PathBuf;

/// Why starting, stopping or driving the emulator, a node or the harness failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Binding the loopback listener failed.
    #[error("binding the API server listener: {source}")]
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
    /// An object the harness writes was refused by the emulator.
    #[error("the emulator refused {what}: {message}")]
    Refused {
        /// What was being written.
        what: String,
        /// The Status message.
        message: String,
    },
}
