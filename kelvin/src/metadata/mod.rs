//! Kubernetes context for queries: which pod, service, namespace and node a row's
//! process or address belongs to. Kelvin resolves what a PEM cannot know (a peer's
//! address, a pod's services) from its own watch of the cluster ([`watch`]), and a
//! row's process from the PEM that wrote it ([`processes`]).

mod cluster;
mod processes;
pub(crate) mod pushdown;
mod watch;

use std::sync::{Arc, PoisonError, RwLock};

pub use cluster::{ClusterState, ContainerEntry, ContainerState, Kind, PodEntry};
pub use processes::ProcessDirectory;
pub use watch::watch_cluster;

/// The cluster's state and every PEM's processes, shared by the watches that fill
/// them and the queries that read them.
#[derive(Clone, Debug, Default)]
pub struct ClusterMetadata {
    cluster: Arc<RwLock<ClusterState>>,
    processes: Arc<RwLock<ProcessDirectory>>,
}

impl ClusterMetadata {
    /// Reads the cluster state.
    pub fn with_cluster<T>(&self, f: impl FnOnce(&ClusterState) -> T) -> T {
        f(&self.cluster.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Changes the cluster state.
    pub fn update_cluster<T>(&self, f: impl FnOnce(&mut ClusterState) -> T) -> T {
        f(&mut self.cluster.write().unwrap_or_else(PoisonError::into_inner))
    }

    /// Reads the process directory.
    pub fn with_processes<T>(&self, f: impl FnOnce(&ProcessDirectory) -> T) -> T {
        f(&self
            .processes
            .read()
            .unwrap_or_else(PoisonError::into_inner))
    }

    /// Changes the process directory.
    pub fn update_processes<T>(&self, f: impl FnOnce(&mut ProcessDirectory) -> T) -> T {
        f(&mut self
            .processes
            .write()
            .unwrap_or_else(PoisonError::into_inner))
    }
}

impl pxl::MetadataLookup for ClusterMetadata {
    fn process(&self, upid: u128) -> Option<pxl::ProcessMeta> {
        let entry = self.with_processes(|d| d.process(upid).cloned())?;
        let container_name = self
            .with_cluster(|c| c.container_name(&entry.pod_uid, &entry.container_id))
            .unwrap_or_default();
        Some(pxl::ProcessMeta {
            cmdline: entry.cmdline.into(),
            pod_uid: entry.pod_uid.into(),
            container_id: entry.container_id.into(),
            container_name,
        })
    }

    fn asid_node(&self, asid: u32) -> Option<String> {
        self.with_processes(|d| d.asid_node(asid))
    }

    fn container_status(&self, id: &str) -> Option<pxl::ContainerMeta> {
        self.with_cluster(|c| c.container_status(id))
    }

    fn pod(&self, uid: &str) -> Option<pxl::PodMeta> {
        self.with_cluster(|c| c.pod(uid))
    }

    fn pod_uid_by_name(&self, namespaced: &str) -> Option<String> {
        self.with_cluster(|c| c.pod_uid_by_name(namespaced))
    }

    fn pod_uid_by_ip(&self, ip: &str) -> Option<String> {
        self.with_cluster(|c| c.pod_uid_by_ip(ip))
    }

    fn service(&self, uid: &str) -> Option<pxl::ServiceMeta> {
        self.with_cluster(|c| c.service(uid))
    }

    fn service_uid_by_name(&self, namespaced: &str) -> Option<String> {
        self.with_cluster(|c| c.service_uid_by_name(namespaced))
    }

    fn service_uid_by_ip(&self, ip: &str) -> Option<String> {
        self.with_cluster(|c| c.service_uid_by_ip(ip))
    }

    fn node_by_ip(&self, ip: &str) -> Option<String> {
        self.with_cluster(|c| c.node_by_ip(ip))
    }
}
