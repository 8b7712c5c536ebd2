//! What Kelvin keeps of the cluster's objects: the few fields PxL's metadata functions
//! read, with the indexes they look up by (an address, `namespace/name`). A pod costs a
//! few hundred bytes here however large its object is; namespace and node names are
//! shared between the pods that carry them.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// One pod, as Kelvin keeps it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodEntry {
    /// Namespace (shared).
    pub namespace: Arc<str>,
    /// Name.
    pub name: Box<str>,
    /// Node (shared).
    pub node: Arc<str>,
    /// Its own address (none for a pod on the host's network).
    pub ip: Option<IpAddr>,
    /// `status.startTime`, ns since the epoch.
    pub start_time_ns: i64,
    /// `status.phase`.
    pub phase: Box<str>,
    /// `status.message` and `status.reason`.
    pub message: Box<str>,
    /// `status.reason`.
    pub reason: Box<str>,
    /// Its Ready condition is True.
    pub ready: bool,
    /// Its containers, by id (without the runtime's prefix).
    pub containers: Box<[ContainerEntry]>,
    /// Its controller: (kind, name), e.g. ("ReplicaSet", "web-5d4f").
    pub owner: Option<(Box<str>, Box<str>)>,
    /// Its labels, for the selectors of services.
    pub labels: Labels,
}

/// One container of a pod.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContainerEntry {
    /// Its id, without the runtime's prefix.
    pub id: Box<str>,
    /// Its name in the pod's spec.
    pub name: Box<str>,
    /// Its state.
    pub state: ContainerState,
    /// Why it is in that state: the state's reason and message, when it has either (a
    /// running container has neither, so most cost nothing here).
    pub detail: Option<Box<(Box<str>, Box<str>)>>,
}

/// A container's state, as Pixie names them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ContainerState {
    /// Running.
    Running,
    /// Waiting (to start, or to restart).
    Waiting,
    /// Terminated.
    Terminated,
    /// Not said.
    #[default]
    Unknown,
}

impl ContainerState {
    /// Pixie's name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "Running",
            Self::Waiting => "Waiting",
            Self::Terminated => "Terminated",
            Self::Unknown => "Unknown",
        }
    }
}

/// `(namespace, name)` of an object, the namespace shared.
type NamespacedName = (Arc<str>, Box<str>);

/// One service, as Kelvin keeps it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct ServiceEntry {
    namespace: Arc<str>,
    name: Box<str>,
    /// Its pod selector (empty: a service without one, whose endpoints are set by hand).
    selector: Labels,
}

/// Whether `selector` (all of its pairs) matches `labels`.
fn selects(selector: &[(Arc<str>, Arc<str>)], labels: &[(Arc<str>, Arc<str>)]) -> bool {
    !selector.is_empty() && selector.iter().all(|pair| labels.contains(pair))
}

/// Label pairs, interned: the same keys and values repeat across a workload's pods.
type Labels = Box<[(Arc<str>, Arc<str>)]>;

/// The cluster as PxL sees it.
#[derive(Debug, Default)]
pub struct ClusterState {
    strings: HashSet<Arc<str>>,
    pods: HashMap<Arc<str>, PodEntry>,
    pod_by_name: HashMap<(Arc<str>, Box<str>), Box<str>>,
    pod_by_ip: HashMap<IpAddr, Box<str>>,
    /// A hash of each container id to the uid of its pod: the ids themselves are kept once,
    /// in the pod's entry, where a lookup checks them.
    pod_by_container: HashMap<u64, Arc<str>>,
    services: HashMap<Box<str>, ServiceEntry>,
    /// Namespace to the uids of its services with a selector.
    selecting: HashMap<Arc<str>, BTreeSet<Box<str>>>,
    /// Namespace to the uids of its pods.
    pods_in: HashMap<Arc<str>, BTreeSet<Box<str>>>,
    /// Pod uid to the services whose selector matches it, kept as either changes, so a
    /// lookup costs no matching.
    selected_by: HashMap<Box<str>, Vec<Box<str>>>,
    service_by_name: HashMap<(Arc<str>, Box<str>), Box<str>>,
    service_by_ip: HashMap<IpAddr, Box<str>>,
    /// EndpointSlice uid to its service `(namespace, name)` and the pods it lists.
    slices: HashMap<Box<str>, (NamespacedName, Vec<Box<str>>)>,
    /// Pod uid to the services (`namespace`, `name`) whose endpoints list it.
    pod_services: HashMap<Box<str>, BTreeSet<NamespacedName>>,
    /// ReplicaSet `(namespace, name)` to the Deployment that owns it.
    deployments: HashMap<(Arc<str>, Box<str>), Box<str>>,
    node_by_ip: HashMap<IpAddr, Arc<str>>,
}

/// The key of a container id in the index of containers.
fn container_key(id: &str) -> u64 {
    use std::hash::{BuildHasher as _, BuildHasherDefault, DefaultHasher};
    BuildHasherDefault::<DefaultHasher>::default().hash_one(id)
}

fn timestamp_ns(t: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time) -> i64 {
    t.0.as_nanosecond().try_into().unwrap_or(i64::MAX)
}

fn controller(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> Option<(Box<str>, Box<str>)> {
    meta.owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))
        .map(|o| (o.kind.as_str().into(), o.name.as_str().into()))
}

impl ClusterState {
    /// A shared copy of `s` (namespace and node names repeat across many pods).
    fn intern(&mut self, s: &str) -> Arc<str> {
        if let Some(shared) = self.strings.get(s) {
            return Arc::clone(shared);
        }
        let shared: Arc<str> = s.into();
        self.strings.insert(Arc::clone(&shared));
        shared
    }

    fn pairs(&mut self, map: Option<&std::collections::BTreeMap<String, String>>) -> Labels {
        map.into_iter()
            .flatten()
            .map(|(k, v)| (self.intern(k), self.intern(v)))
            .collect()
    }

    /// Pods kept.
    #[must_use]
    pub fn pod_count(&self) -> usize {
        self.pods.len()
    }

    /// Adds or replaces a pod.
    pub fn apply_pod(&mut self, pod: &Pod) {
        let Some(uid) = pod.metadata.uid.as_deref() else {
            return;
        };
        self.delete_pod(uid);
        let namespace = self.intern(pod.metadata.namespace.as_deref().unwrap_or_default());
        let spec = pod.spec.as_ref();
        let node = self.intern(
            spec.and_then(|s| s.node_name.as_deref())
                .unwrap_or_default(),
        );
        let host_network = spec.and_then(|s| s.host_network).unwrap_or(false);
        let status = pod.status.as_ref();
        let ip = status
            .and_then(|s| s.pod_ip.as_deref())
            .and_then(|ip| ip.parse().ok())
            .filter(|_| !host_network);
        let containers = status
            .and_then(|s| s.container_statuses.as_ref())
            .into_iter()
            .flatten()
            .filter_map(|c| {
                let id = c.container_id.as_deref()?;
                let id = id.split_once("://").map_or(id, |(_, id)| id);
                let state = c.state.as_ref();
                let (state, reason, message) = match (
                    state.and_then(|s| s.running.as_ref()),
                    state.and_then(|s| s.waiting.as_ref()),
                    state.and_then(|s| s.terminated.as_ref()),
                ) {
                    (Some(_), _, _) => (ContainerState::Running, None, None),
                    (_, Some(w), _) => (
                        ContainerState::Waiting,
                        w.reason.as_ref(),
                        w.message.as_ref(),
                    ),
                    (_, _, Some(t)) => (
                        ContainerState::Terminated,
                        t.reason.as_ref(),
                        t.message.as_ref(),
                    ),
                    _ => (ContainerState::Unknown, None, None),
                };
                let text = |f: Option<&String>| f.map_or_else(Box::default, |s| s.as_str().into());
                let detail = (reason.is_some() || message.is_some())
                    .then(|| Box::new((text(reason), text(message))));
                Some(ContainerEntry {
                    id: id.into(),
                    name: c.name.as_str().into(),
                    state,
                    detail,
                })
            })
            .collect::<Box<[_]>>();
        let text = |f: Option<&String>| f.map_or_else(Box::default, |s| s.as_str().into());
        let entry = PodEntry {
            namespace: Arc::clone(&namespace),
            name: pod.metadata.name.as_deref().unwrap_or_default().into(),
            node,
            ip,
            start_time_ns: status
                .and_then(|s| s.start_time.as_ref())
                .map_or(0, timestamp_ns),
            phase: text(status.and_then(|s| s.phase.as_ref())),
            message: text(status.and_then(|s| s.message.as_ref())),
            reason: text(status.and_then(|s| s.reason.as_ref())),
            ready: status
                .and_then(|s| s.conditions.as_ref())
                .into_iter()
                .flatten()
                .any(|c| c.type_ == "Ready" && c.status == "True"),
            containers,
            owner: controller(&pod.metadata),
            labels: self.pairs(pod.metadata.labels.as_ref()),
        };
        self.pod_by_name
            .insert((namespace, entry.name.clone()), uid.into());
        if let Some(ip) = ip {
            self.pod_by_ip.insert(ip, uid.into());
        }
        let selected: Vec<Box<str>> = self
            .selecting
            .get(&entry.namespace)
            .into_iter()
            .flatten()
            .filter(|s| {
                self.services
                    .get(*s)
                    .is_some_and(|s| selects(&s.selector, &entry.labels))
            })
            .cloned()
            .collect();
        if !selected.is_empty() {
            self.selected_by.insert(uid.into(), selected);
        }
        self.pods_in
            .entry(Arc::clone(&entry.namespace))
            .or_default()
            .insert(uid.into());
        let uid: Arc<str> = uid.into();
        for container in &entry.containers {
            self.pod_by_container
                .insert(container_key(&container.id), Arc::clone(&uid));
        }
        self.pods.insert(uid, entry);
    }

    /// Forgets a pod.
    pub fn delete_pod(&mut self, uid: &str) {
        let Some(old) = self.pods.remove(uid) else {
            return;
        };
        self.selected_by.remove(uid);
        for container in &old.containers {
            let key = container_key(&container.id);
            if self.pod_by_container.get(&key).is_some_and(|u| &**u == uid) {
                self.pod_by_container.remove(&key);
            }
        }
        if let Some(uids) = self.pods_in.get_mut(&old.namespace) {
            uids.remove(uid);
            if uids.is_empty() {
                self.pods_in.remove(&old.namespace);
            }
        }
        let key = (old.namespace, old.name);
        if self.pod_by_name.get(&key).is_some_and(|u| &**u == uid) {
            self.pod_by_name.remove(&key);
        }
        if let Some(ip) = old.ip
            && self.pod_by_ip.get(&ip).is_some_and(|u| &**u == uid)
        {
            self.pod_by_ip.remove(&ip);
        }
    }

    /// Adds or replaces a service.
    pub fn apply_service(&mut self, service: &Service) {
        let Some(uid) = service.metadata.uid.as_deref() else {
            return;
        };
        self.delete_service(uid);
        let namespace = self.intern(service.metadata.namespace.as_deref().unwrap_or_default());
        let name: Box<str> = service.metadata.name.as_deref().unwrap_or_default().into();
        for ip in service
            .spec
            .as_ref()
            .and_then(|s| s.cluster_ips.as_ref())
            .into_iter()
            .flatten()
            .filter_map(|ip| ip.parse().ok())
        {
            self.service_by_ip.insert(ip, uid.into());
        }
        self.service_by_name
            .insert((Arc::clone(&namespace), name.clone()), uid.into());
        let selector = self.pairs(service.spec.as_ref().and_then(|s| s.selector.as_ref()));
        if !selector.is_empty() {
            self.selecting
                .entry(Arc::clone(&namespace))
                .or_default()
                .insert(uid.into());
            for pod in self.pods_in.get(&namespace).into_iter().flatten() {
                if self
                    .pods
                    .get(&**pod)
                    .is_some_and(|p| selects(&selector, &p.labels))
                {
                    self.selected_by
                        .entry(pod.clone())
                        .or_default()
                        .push(uid.into());
                }
            }
        }
        self.services.insert(
            uid.into(),
            ServiceEntry {
                namespace,
                name,
                selector,
            },
        );
    }

    /// Forgets a service.
    pub fn delete_service(&mut self, uid: &str) {
        let Some(old) = self.services.remove(uid) else {
            return;
        };
        if let Some(uids) = self.selecting.get_mut(&old.namespace) {
            uids.remove(uid);
            if uids.is_empty() {
                self.selecting.remove(&old.namespace);
            }
        }
        for pod in self.pods_in.get(&old.namespace).into_iter().flatten() {
            if let Some(services) = self.selected_by.get_mut(pod) {
                services.retain(|s| &**s != uid);
                if services.is_empty() {
                    self.selected_by.remove(pod);
                }
            }
        }
        let key = (old.namespace, old.name);
        if self.service_by_name.get(&key).is_some_and(|u| &**u == uid) {
            self.service_by_name.remove(&key);
        }
        self.service_by_ip.retain(|_, u| &**u != uid);
    }

    /// Adds or replaces an EndpointSlice: which pods back which service.
    pub fn apply_endpoint_slice(&mut self, slice: &EndpointSlice) {
        let Some(uid) = slice.metadata.uid.as_deref() else {
            return;
        };
        self.delete_endpoint_slice(uid);
        let Some(service) = slice
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("kubernetes.io/service-name"))
        else {
            return;
        };
        let namespace = self.intern(slice.metadata.namespace.as_deref().unwrap_or_default());
        let service = (namespace, Box::<str>::from(service.as_str()));
        let pods: Vec<Box<str>> = slice
            .endpoints
            .iter()
            .flatten()
            .filter_map(|e| e.target_ref.as_ref())
            .filter(|r| r.kind.as_deref() == Some("Pod"))
            .filter_map(|r| r.uid.as_deref().map(Box::from))
            .collect();
        for pod in &pods {
            self.pod_services
                .entry(pod.clone())
                .or_default()
                .insert(service.clone());
        }
        self.slices.insert(uid.into(), (service, pods));
    }

    /// Forgets an EndpointSlice.
    pub fn delete_endpoint_slice(&mut self, uid: &str) {
        let Some((service, pods)) = self.slices.remove(uid) else {
            return;
        };
        for pod in pods {
            if let Some(services) = self.pod_services.get_mut(&pod) {
                // Another slice of the same service may list the pod too.
                let elsewhere = self
                    .slices
                    .values()
                    .any(|(s, p)| *s == service && p.contains(&pod));
                if !elsewhere {
                    services.remove(&service);
                }
                if services.is_empty() {
                    self.pod_services.remove(&pod);
                }
            }
        }
    }

    /// Adds or replaces a ReplicaSet: the Deployment it belongs to.
    pub fn apply_replica_set(&mut self, rs: &ReplicaSet) {
        let namespace = self.intern(rs.metadata.namespace.as_deref().unwrap_or_default());
        let key = (
            namespace,
            Box::<str>::from(rs.metadata.name.as_deref().unwrap_or_default()),
        );
        match controller(&rs.metadata) {
            Some((kind, name)) if &*kind == "Deployment" => {
                self.deployments.insert(key, name);
            }
            _ => {
                self.deployments.remove(&key);
            }
        }
    }

    /// Forgets a ReplicaSet.
    pub fn delete_replica_set(&mut self, namespace: &str, name: &str) {
        self.deployments
            .retain(|(ns, n), _| !(&**ns == namespace && &**n == name));
    }

    /// Adds or replaces a node: its addresses.
    pub fn apply_node(&mut self, node: &Node) {
        let name = self.intern(node.metadata.name.as_deref().unwrap_or_default());
        self.delete_node(&name);
        for ip in node
            .status
            .as_ref()
            .and_then(|s| s.addresses.as_ref())
            .into_iter()
            .flatten()
            .filter_map(|a| a.address.parse().ok())
        {
            self.node_by_ip.insert(ip, Arc::clone(&name));
        }
    }

    /// Forgets a node.
    pub fn delete_node(&mut self, name: &str) {
        self.node_by_ip.retain(|_, n| &**n != name);
    }

    /// The key of every object of a kind kept (as [`Self::remove`] takes it), so a
    /// re-list can drop what it no longer lists.
    #[must_use]
    pub fn keys(&self, kind: Kind) -> Vec<String> {
        match kind {
            Kind::Pod => self.pods.keys().map(|k| k.to_string()).collect(),
            Kind::Service => self.services.keys().map(|k| k.to_string()).collect(),
            Kind::EndpointSlice => self.slices.keys().map(|k| k.to_string()).collect(),
            Kind::ReplicaSet => self
                .deployments
                .keys()
                .map(|(ns, name)| format!("{ns}/{name}"))
                .collect(),
            Kind::Node => {
                let names: BTreeSet<&Arc<str>> = self.node_by_ip.values().collect();
                names.into_iter().map(|n| n.to_string()).collect()
            }
        }
    }

    /// Forgets the object of `kind` with this key (a uid; `namespace/name` for a
    /// ReplicaSet; the name for a node).
    pub fn remove(&mut self, kind: Kind, key: &str) {
        match kind {
            Kind::Pod => self.delete_pod(key),
            Kind::Service => self.delete_service(key),
            Kind::EndpointSlice => self.delete_endpoint_slice(key),
            Kind::ReplicaSet => {
                let (ns, name) = key.split_once('/').unwrap_or(("", key));
                self.delete_replica_set(ns, name);
            }
            Kind::Node => self.delete_node(key),
        }
    }

    /// The pod with this uid, in PxL's terms.
    #[must_use]
    pub fn pod(&self, uid: &str) -> Option<pxl::PodMeta> {
        let pod = self.pods.get(uid)?;
        // The services whose selector matches the pod's labels, and those whose
        // EndpointSlices list it (services without a selector).
        let mut service_uids: BTreeSet<String> = self
            .pod_services
            .get(uid)
            .into_iter()
            .flatten()
            .filter_map(|key| self.service_by_name.get(key).map(|u| u.to_string()))
            .collect();
        service_uids.extend(
            self.selected_by
                .get(uid)
                .into_iter()
                .flatten()
                .map(|s| s.to_string()),
        );
        let service_uids = service_uids.into_iter().collect();
        let (deployment, replica_set) = match &pod.owner {
            Some((kind, name)) if &**kind == "ReplicaSet" => (
                self.deployments
                    .get(&(Arc::clone(&pod.namespace), name.clone()))
                    .map(|d| format!("{}/{d}", pod.namespace))
                    .unwrap_or_default(),
                format!("{}/{name}", pod.namespace),
            ),
            _ => (String::new(), String::new()),
        };
        Some(pxl::PodMeta {
            namespace: pod.namespace.to_string(),
            name: pod.name.to_string(),
            node: pod.node.to_string(),
            start_time_ns: pod.start_time_ns,
            phase: pod.phase.to_string(),
            message: pod.message.to_string(),
            reason: pod.reason.to_string(),
            ready: pod.ready,
            service_uids,
            deployment,
            replica_set,
            ip: pod.ip.map(|ip| ip.to_string()).unwrap_or_default(),
        })
    }

    /// The name of container `id` of pod `uid`.
    #[must_use]
    pub fn container_name(&self, uid: &str, id: &str) -> Option<String> {
        let pod = self.pods.get(uid)?;
        pod.containers
            .iter()
            .find(|c| &*c.id == id)
            .map(|c| c.name.to_string())
    }

    /// The state of container `id`, whichever pod it is in.
    #[must_use]
    pub fn container_status(&self, id: &str) -> Option<pxl::ContainerMeta> {
        let pod = self
            .pods
            .get(self.pod_by_container.get(&container_key(id))?)?;
        let container = pod.containers.iter().find(|c| &*c.id == id)?;
        let (reason, message) = container.detail.as_deref().cloned().unwrap_or_default();
        Some(pxl::ContainerMeta {
            state: container.state.as_str().to_owned(),
            reason: reason.into(),
            message: message.into(),
        })
    }

    /// The uid of pod `namespace/name`.
    #[must_use]
    pub fn pod_uid_by_name(&self, namespaced: &str) -> Option<String> {
        let (ns, name) = namespaced.split_once('/')?;
        let key = (Arc::<str>::from(ns), Box::<str>::from(name));
        self.pod_by_name.get(&key).map(|u| u.to_string())
    }

    /// The uid of the pod with address `ip`.
    #[must_use]
    pub fn pod_uid_by_ip(&self, ip: &str) -> Option<String> {
        self.pod_by_ip.get(&ip.parse().ok()?).map(|u| u.to_string())
    }

    /// The service with this uid.
    #[must_use]
    pub fn service(&self, uid: &str) -> Option<pxl::ServiceMeta> {
        self.services.get(uid).map(|s| pxl::ServiceMeta {
            namespace: s.namespace.to_string(),
            name: s.name.to_string(),
        })
    }

    /// The uid of service `namespace/name`.
    #[must_use]
    pub fn service_uid_by_name(&self, namespaced: &str) -> Option<String> {
        let (ns, name) = namespaced.split_once('/')?;
        let key = (Arc::<str>::from(ns), Box::<str>::from(name));
        self.service_by_name.get(&key).map(|u| u.to_string())
    }

    /// The uid of the service whose cluster IP is `ip`.
    #[must_use]
    pub fn service_uid_by_ip(&self, ip: &str) -> Option<String> {
        self.service_by_ip
            .get(&ip.parse().ok()?)
            .map(|u| u.to_string())
    }

    /// The node with address `ip`.
    #[must_use]
    pub fn node_by_ip(&self, ip: &str) -> Option<String> {
        self.node_by_ip
            .get(&ip.parse().ok()?)
            .map(|n| n.to_string())
    }
}

/// The kinds Kelvin watches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Pods: names, nodes, addresses, containers, owners.
    Pod,
    /// Services: names and cluster IPs.
    Service,
    /// EndpointSlices: which pods back a service.
    EndpointSlice,
    /// ReplicaSets: the Deployment a pod belongs to.
    ReplicaSet,
    /// Nodes: their addresses.
    Node,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn pod(uid: &str, ns: &str, name: &str, ip: &str) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"uid": uid, "namespace": ns, "name": name,
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-1", "uid": "rs", "controller": true}]},
            "spec": {"nodeName": "node-a", "containers": []},
            "status": {"podIP": ip, "phase": "Running",
                "containerStatuses": [{"name": "app", "containerID": "containerd://abc", "image": "", "imageID": "", "ready": true, "restartCount": 0}]},
        }))
        .unwrap()
    }

    #[test]
    fn pods_resolve_by_address_and_name_and_a_recreated_pod_replaces_the_old() {
        let mut state = ClusterState::default();
        state.apply_pod(&pod("u1", "shop", "web-a", "10.0.0.5"));
        assert_eq!(state.pod_uid_by_ip("10.0.0.5").as_deref(), Some("u1"));
        assert_eq!(state.pod_uid_by_name("shop/web-a").as_deref(), Some("u1"));
        assert_eq!(state.container_name("u1", "abc").as_deref(), Some("app"));
        assert_eq!(
            state.container_status("abc").map(|c| c.state),
            Some("Unknown".to_owned()),
            "a status without a state"
        );
        assert_eq!(state.pod("u1").unwrap().replica_set, "shop/web-1");
        // Deleted and recreated under another name, at the same address.
        state.delete_pod("u1");
        state.apply_pod(&pod("u2", "shop", "web-b", "10.0.0.5"));
        assert_eq!(state.pod_uid_by_ip("10.0.0.5").as_deref(), Some("u2"));
        assert_eq!(state.pod_uid_by_name("shop/web-a"), None);
        assert_eq!(state.pod("u2").unwrap().name, "web-b");
        assert_eq!(state.pod_uid_by_ip("10.9.9.9"), None);
    }

    #[test]
    fn a_services_selector_names_the_pods_it_selects() {
        let mut state = ClusterState::default();
        let mut web = pod("u1", "shop", "web-a", "10.0.0.5");
        web.metadata.labels = Some([("app".to_owned(), "web".to_owned())].into());
        state.apply_pod(&web);
        state.apply_pod(&pod("u2", "shop", "db-a", "10.0.0.6"));
        let service: Service = serde_json::from_value(serde_json::json!({
            "metadata": {"uid": "s1", "namespace": "shop", "name": "web"},
            "spec": {"selector": {"app": "web"}},
        }))
        .unwrap();
        state.apply_service(&service);
        assert_eq!(state.pod("u1").unwrap().service_uids, ["s1"]);
        assert!(state.pod("u2").unwrap().service_uids.is_empty());
        state.delete_service("s1");
        assert!(state.pod("u1").unwrap().service_uids.is_empty());
    }

    #[test]
    fn endpoint_slices_name_a_pods_services() {
        let mut state = ClusterState::default();
        state.apply_pod(&pod("u1", "shop", "web-a", "10.0.0.5"));
        let service: Service = serde_json::from_value(serde_json::json!({
            "metadata": {"uid": "s1", "namespace": "shop", "name": "web"},
            "spec": {"clusterIPs": ["10.96.0.10"]},
        }))
        .unwrap();
        state.apply_service(&service);
        let slice: EndpointSlice = serde_json::from_value(serde_json::json!({
            "metadata": {"uid": "e1", "namespace": "shop", "name": "web-x", "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.0.0.5"], "targetRef": {"kind": "Pod", "uid": "u1", "name": "web-a", "namespace": "shop"}}],
        }))
        .unwrap();
        state.apply_endpoint_slice(&slice);
        assert_eq!(state.pod("u1").unwrap().service_uids, ["s1"]);
        assert_eq!(state.service_uid_by_ip("10.96.0.10").as_deref(), Some("s1"));
        assert_eq!(state.service_uid_by_name("shop/web").as_deref(), Some("s1"));
        state.delete_endpoint_slice("e1");
        assert!(state.pod("u1").unwrap().service_uids.is_empty());
    }
}
