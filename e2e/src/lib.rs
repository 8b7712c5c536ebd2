//! The end-to-end tests' Kubernetes: the real control plane (etcd, kube-apiserver,
//! kube-controller-manager and kube-scheduler, built from their Go modules in
//! `control-plane/`), simulated nodes whose kubelet runs pods as local processes in
//! kubelet-style cgroups, and the harness that starts and stops all of it for one test.
//! See the crate's README for what is real and what is simulated.

mod cgroup;
mod control_plane;
mod error;
mod harness;
pub mod helm;
mod kubelet;
pub mod standin_pem;
mod time;

pub use error::Error;
pub use harness::{Cluster, ClusterConfig, KubectlOutput, eventually};
pub use kubelet::NodeSpec;
