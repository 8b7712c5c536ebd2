//! A test-only Kubernetes API-server emulator, simulated nodes that run pods as local
//! processes, and the end-to-end test harness built on them.
//!
//! The emulator speaks enough of the API for the real `kubectl` and the `kube` crate:
//! discovery, OpenAPI v3, CRDs with schema validation, every write verb including
//! server-side apply, watches, Tables, finalizers and garbage collection. See the
//! crate's README for what it leaves out.

mod cel;
mod cgroup;
mod controllers;
mod crd;
mod defaults;
mod discovery;
mod error;
mod events;
mod handlers;
mod harness;
mod http;
mod managed;
mod node;
mod openapi;
mod patch;
mod protobuf;
mod resources;
mod selectors;
mod server;
pub mod standin_pem;
mod status;
mod store;
mod subresources;
mod table;
mod time;
mod validation;
mod watch;

pub use error::Error;
pub use harness::{Cluster, ClusterConfig, KubectlOutput, eventually};
pub use node::NodeSpec;
pub use server::{Emulator, EmulatorConfig};
