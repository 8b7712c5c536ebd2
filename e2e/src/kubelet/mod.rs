//! Simulated nodes: for each, a kubelet for the real control plane. It acts as the node
//! (`system:node:<name>` in `system:nodes`, so the Node authorizer and NodeRestriction
//! confine it to its own Node, Lease and pods, as they confine a real kubelet), registers
//! its Node, renews its heartbeat Lease, runs the containers of the pods the scheduler
//! binds to it as local processes in kubelet-style pod cgroups, writes their status and
//! finishes their graceful deletion. The node is here; one pod's worker is in `pod`, its
//! processes in `process`, readiness probes in `probe`.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt as _, reflector, watcher};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use pod::{PodStop, run_pod};
pub(crate) use process::token_request;

use crate::error::Error;
use crate::time::now_rfc3339;

mod pod;
mod probe;
mod process;
mod server;
mod volume;

pub(crate) use server::ServerIdentity;

/// How often the kubelet renews its Lease (a real kubelet: every 10 s of a 40 s lease;
/// scaled to the controller-manager's shorter grace period here).
const LEASE_RENEW: Duration = Duration::from_secs(2);
const LEASE_SECONDS: i32 = 40;
/// How often the Node's status (its Ready condition) is posted.
const STATUS_EVERY: Duration = Duration::from_secs(10);
/// The field manager of everything the kubelet writes.
pub(crate) const MANAGER: &str = "kubelet";

/// The loopback address of node `index` (0-based) of the cluster numbered `cluster` in
/// this process: 127.P.C.(index+1), with P from the process id and C from `cluster`, so
/// clusters of tests running at the same time (in one process or several) do not share
/// addresses. Linux routes all of 127/8 to `lo`, so each node's pods can listen on the
/// same port on this one machine, as pods of different nodes do in a cluster.
pub(crate) fn node_ip(cluster: u64, index: usize) -> Option<std::net::Ipv4Addr> {
    let process = u8::try_from(std::process::id() % 250 + 1).ok()?;
    let cluster = u8::try_from(cluster % 256).ok()?;
    let host = u8::try_from(index.checked_add(1)?)
        .ok()
        .filter(|h| *h < 254)?;
    Some(std::net::Ipv4Addr::new(127, process, cluster, host))
}

/// The pod addresses of one cluster: 127.P.C.100 to 127.P.C.249, beside its nodes'
/// 127.P.C.N, each held by one pod while it runs. A pod binds (and connects from) its
/// own `status.podIP`, as in a pod network, so a peer's address names the pod; all of
/// 127/8 is `lo`, so no routing is involved. Addresses are handed out in turn, as
/// host-local IPAM does, so a pod recreated at once gets another one.
#[derive(Debug)]
pub(crate) struct PodIps {
    prefix: [u8; 3],
    /// Address (last byte) to the pod uid holding it.
    held: std::sync::Mutex<BTreeMap<u8, String>>,
    /// The last address handed out.
    last: std::sync::atomic::AtomicU8,
}

/// First and last host byte of pod addresses.
const POD_HOSTS: std::ops::RangeInclusive<u8> = 100..=249;

impl PodIps {
    pub(crate) fn for_cluster(cluster: u64) -> Self {
        let base = node_ip(cluster, 0).map_or([127, 0, 0, 1], |ip| ip.octets());
        Self {
            prefix: [base[0], base[1], base[2]],
            held: std::sync::Mutex::new(BTreeMap::new()),
            last: std::sync::atomic::AtomicU8::new(*POD_HOSTS.end()),
        }
    }

    /// An address for pod `uid` until the lease is dropped (the pod's own, if it holds
    /// one already); none left: the lease holds none, and the pod uses the node's.
    pub(crate) fn lease(self: &Arc<Self>, uid: &str) -> PodIpLease {
        let mut held = self
            .held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let host = held
            .iter()
            .find(|(_, u)| u.as_str() == uid)
            .map(|(h, _)| *h)
            .or_else(|| {
                let last = self.last.load(std::sync::atomic::Ordering::Relaxed);
                let after = POD_HOSTS.clone().filter(|h| *h > last);
                let before = POD_HOSTS.clone().filter(|h| *h <= last);
                after.chain(before).find(|h| !held.contains_key(h))
            });
        if let Some(h) = host {
            self.last.store(h, std::sync::atomic::Ordering::Relaxed);
            held.insert(h, uid.to_owned());
        }
        PodIpLease {
            ips: Arc::clone(self),
            host,
        }
    }
}

/// One pod's hold on its address.
pub(crate) struct PodIpLease {
    ips: Arc<PodIps>,
    host: Option<u8>,
}

impl PodIpLease {
    pub(crate) fn ip(&self) -> Option<String> {
        let [a, b, c] = self.ips.prefix;
        self.host
            .map(|h| std::net::Ipv4Addr::new(a, b, c, h).to_string())
    }
}

impl Drop for PodIpLease {
    fn drop(&mut self) {
        if let Some(h) = self.host {
            let mut held = self
                .ips
                .held
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            held.remove(&h);
        }
    }
}

/// The address of `pod` (as the worker running it set it), else its node's.
pub(crate) fn pod_ip<'a>(ctx: &'a NodeContext, pod: &'a Value) -> &'a str {
    match pod.pointer("/status/podIP").and_then(Value::as_str) {
        Some(ip) if !ip.is_empty() => ip,
        _ => &ctx.ip,
    }
}

/// A simulated node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSpec {
    /// Node name (also its `kubernetes.io/hostname` label).
    pub name: String,
    /// Extra labels, for DaemonSet node selectors.
    pub labels: BTreeMap<String, String>,
}

impl NodeSpec {
    /// A node with just the standard labels.
    pub fn named(name: &str) -> Self {
        Self {
            name: name.to_string(),
            labels: BTreeMap::new(),
        }
    }
}

/// What every pod worker of a node needs.
pub(crate) struct NodeContext {
    /// The API as this node (`system:node:<name>`).
    pub(crate) client: kube::Client,
    pub(crate) name: String,
    /// The node's address: its InternalIP, every pod's `hostIP`, and the `podIP` of its
    /// `hostNetwork` pods.
    pub(crate) ip: String,
    /// The cluster's pod addresses: each other pod gets one of its own.
    pub(crate) pod_ips: Arc<PodIps>,
    /// Absolute path of the node's cgroup v2 directory.
    pub(crate) cgroup: PathBuf,
    /// Image name (with or without tag) to local executable.
    pub(crate) images: Arc<HashMap<String, PathBuf>>,
    /// Where container output, working directories and pods' kubeconfigs go.
    pub(crate) dir: PathBuf,
    /// The API server's URL and CA, for the kubeconfig each pod gets in place of the
    /// in-cluster service-account mount.
    pub(crate) server: String,
    pub(crate) ca_pem: String,
    /// Whether the node talks to the API server (false: a silent node, see
    /// [`NodeAgent::set_heartbeat`]): its pods keep running but nothing is reported.
    pub(crate) online: watch::Receiver<bool>,
}

/// How a node's kubelet proves itself: its client identity is in `NodeContext::client`;
/// this is its serving certificate, for the API server's log requests.
pub(crate) struct NodeCredentials {
    pub(crate) serving: ServerIdentity,
}

/// A running node agent; dropping it kills its pods' processes.
pub(crate) struct NodeAgent {
    stop: watch::Sender<bool>,
    heartbeat: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl NodeAgent {
    /// Registers the Node (or takes over the one a previous run of this node left), then
    /// starts the heartbeat and the pod loop.
    pub(crate) async fn start(
        ctx: NodeContext,
        spec: &NodeSpec,
        credentials: NodeCredentials,
        heartbeat: watch::Sender<bool>,
    ) -> Result<Self, Error> {
        let (stop, stop_rx) = watch::channel(false);
        let ip = ctx.ip.parse().map_err(|_| Error::Refused {
            what: format!("node {}", spec.name),
            message: format!("{} is not an IP address", ctx.ip),
        })?;
        let log_server =
            server::serve(ip, ctx.dir.clone(), credentials.serving, stop_rx.clone()).await?;
        register(&ctx, spec).await?;
        let heartbeat_rx = ctx.online.clone();
        let ctx = Arc::new(ctx);
        let tasks = vec![
            log_server,
            tokio::spawn(heartbeats(Arc::clone(&ctx), heartbeat_rx, stop_rx.clone())),
            tokio::spawn(run(ctx, stop_rx)),
        ];
        Ok(Self {
            stop,
            heartbeat,
            tasks,
        })
    }

    /// Stops (false) or resumes (true) the Lease renewals and status posts, as a node
    /// that loses its network and comes back; its pods keep running meanwhile.
    pub(crate) fn set_heartbeat(&self, on: bool) {
        let _ = self.heartbeat.send(on);
    }

    /// Stops every pod (killing its processes) and waits for the agent to finish.
    pub(crate) async fn stop(mut self) {
        let _ = self.stop.send(true);
        for task in self.tasks.drain(..) {
            let _ = task.await;
        }
    }
}

impl Drop for NodeAgent {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// The string at `ptr` in `v`, or "".
pub(super) fn s<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.pointer(ptr).and_then(Value::as_str).unwrap_or_default()
}

/// The Node's status as this kubelet reports it.
fn node_status(ctx: &NodeContext) -> Value {
    let now = now_rfc3339();
    let condition = |kind: &str, status: &str, reason: &str, message: &str| {
        json!({"type": kind, "status": status, "reason": reason, "message": message,
               "lastHeartbeatTime": now, "lastTransitionTime": now})
    };
    json!({
        "conditions": [
            condition("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
            condition("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
            condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
            condition("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
        ],
        "addresses": [{"type": "InternalIP", "address": ctx.ip}, {"type": "Hostname", "address": ctx.name}],
        "capacity": {"cpu": "2", "memory": "8Gi", "pods": "110", "ephemeral-storage": "20Gi"},
        "allocatable": {"cpu": "2", "memory": "8Gi", "pods": "110", "ephemeral-storage": "20Gi"},
        "daemonEndpoints": {"kubeletEndpoint": {"Port": server::KUBELET_PORT}},
        "nodeInfo": {
            "machineID": "", "systemUUID": "", "bootID": "", "kernelVersion": "",
            "osImage": "px-e2e simulated node", "containerRuntimeVersion": "px-e2e://processes",
            "kubeletVersion": "v1.34.4-px-e2e", "kubeProxyVersion": "",
            "operatingSystem": "linux", "architecture": go_arch(),
        },
    })
}

/// The architecture as Go (and so Kubernetes' `kubernetes.io/arch` label) names it.
fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

async fn register(ctx: &NodeContext, spec: &NodeSpec) -> Result<(), Error> {
    let mut labels = json!({
        "kubernetes.io/hostname": spec.name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": go_arch(),
    });
    for (k, v) in &spec.labels {
        labels[k] = json!(v);
    }
    let node: Node = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": spec.name, "labels": labels},
        "spec": {},
        "status": node_status(ctx),
    }))
    .map_err(|e| Error::Refused {
        what: format!("node {}", spec.name),
        message: e.to_string(),
    })?;
    let nodes = Api::<Node>::all(ctx.client.clone());
    match nodes.create(&PostParams::default(), &node).await {
        Ok(_) => {}
        // A node that registers again (its kubelet restarted) keeps its object.
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => {
            return Err(Error::Refused {
                what: format!("node {}", spec.name),
                message: e.to_string(),
            });
        }
    }
    post_status(ctx).await;
    Ok(())
}

/// Posts the Node's status (its Ready condition's heartbeat).
async fn post_status(ctx: &NodeContext) {
    let nodes = Api::<Node>::all(ctx.client.clone());
    let patch = json!({"status": node_status(ctx)});
    if let Err(e) = nodes
        .patch_status(&ctx.name, &PatchParams::default(), &Patch::Strategic(patch))
        .await
    {
        tracing::warn!(node = %ctx.name, "posting node status: {e}");
    }
}

/// Renews the node's Lease in `kube-node-lease` (what the node lifecycle controller
/// watches) and posts its status, while `on` says so.
async fn heartbeats(
    ctx: Arc<NodeContext>,
    mut on: watch::Receiver<bool>,
    mut stop: watch::Receiver<bool>,
) {
    let leases = Api::<Lease>::namespaced(ctx.client.clone(), "kube-node-lease");
    let mut last_status = tokio::time::Instant::now();
    let mut was_on = true;
    loop {
        let now_on = *on.borrow_and_update();
        if now_on {
            let node_uid = Api::<Node>::all(ctx.client.clone())
                .get_metadata_opt(&ctx.name)
                .await
                .ok()
                .flatten()
                .and_then(|n| n.metadata.uid);
            let mut lease = json!({
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": ctx.name, "namespace": "kube-node-lease"},
                "spec": {
                    "holderIdentity": ctx.name,
                    "leaseDurationSeconds": LEASE_SECONDS,
                    "renewTime": crate::time::now_micro_rfc3339(),
                },
            });
            if let Some(uid) = node_uid {
                lease["metadata"]["ownerReferences"] = json!([{
                    "apiVersion": "v1", "kind": "Node", "name": ctx.name, "uid": uid,
                }]);
            }
            if let Err(e) = leases
                .patch(
                    &ctx.name,
                    &PatchParams::apply(MANAGER).force(),
                    &Patch::Apply(lease),
                )
                .await
            {
                tracing::warn!(node = %ctx.name, "renewing the node lease: {e}");
            }
            if !was_on || last_status.elapsed() >= STATUS_EVERY {
                post_status(&ctx).await;
                last_status = tokio::time::Instant::now();
            }
        }
        was_on = now_on;
        tokio::select! {
            _ = stop.changed() => return,
            _ = on.changed() => {}
            _ = tokio::time::sleep(LEASE_RENEW) => {}
        }
    }
}

/// The pod loop: a watch of the pods bound to this node; one worker per pod, told to
/// terminate (with the pod's grace period) once the pod is being deleted.
async fn run(ctx: Arc<NodeContext>, mut stop: watch::Receiver<bool>) {
    let pods = Api::<Pod>::all(ctx.client.clone());
    let config = watcher::Config::default().fields(&format!("spec.nodeName={}", ctx.name));
    let (store, writer) = reflector::store();
    let stream = reflector(writer, watcher(pods, config))
        .default_backoff()
        .touched_objects();
    futures::pin_mut!(stream);
    let mut workers: HashMap<String, (watch::Sender<PodStop>, JoinHandle<()>)> = HashMap::new();
    // Workers whose pod is being deleted and whose processes may still be exiting.
    let mut terminating: HashMap<String, (watch::Sender<PodStop>, JoinHandle<()>)> = HashMap::new();
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            event = stream.next() => {
                if let Some(Err(e)) = event {
                    tracing::debug!(node = %ctx.name, "pod watch: {e}");
                }
            }
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        let mut seen = std::collections::HashSet::new();
        for pod in store.state() {
            let Some(uid) = pod.metadata.uid.clone() else {
                continue;
            };
            seen.insert(uid.clone());
            let deleting = pod.metadata.deletion_timestamp.is_some();
            if deleting {
                if let Some((stop_pod, handle)) = workers.remove(&uid) {
                    let grace = pod.metadata.deletion_grace_period_seconds.unwrap_or(0);
                    let _ = stop_pod.send(PodStop::Terminate(Duration::from_secs(
                        u64::try_from(grace).unwrap_or(0),
                    )));
                    terminating.insert(uid, (stop_pod, handle));
                } else if !terminating.contains_key(&uid) {
                    // Deleted before this kubelet ran it (or after a restart of the
                    // kubelet): nothing runs, so it may go at once.
                    pod::finish_deletion(&ctx, &pod).await;
                }
                continue;
            }
            if let Some(phase) = pod.status.as_ref().and_then(|s| s.phase.as_deref())
                && matches!(phase, "Succeeded" | "Failed")
                && !workers.contains_key(&uid)
            {
                continue;
            }
            workers.entry(uid).or_insert_with(|| {
                let (tx, rx) = watch::channel(PodStop::Run);
                let pod = serde_json::to_value(&*pod).unwrap_or_default();
                (tx, tokio::spawn(run_pod(Arc::clone(&ctx), pod, rx)))
            });
        }
        // Pods removed outright (forced deletion, or the node's pods garbage collected).
        let gone: Vec<String> = workers
            .keys()
            .filter(|uid| !seen.contains(*uid))
            .cloned()
            .collect();
        for uid in gone {
            if let Some((stop_pod, handle)) = workers.remove(&uid) {
                let _ = stop_pod.send(PodStop::Terminate(Duration::ZERO));
                terminating.insert(uid, (stop_pod, handle));
            }
        }
        terminating.retain(|_, (_, h)| !h.is_finished());
    }
    // The node is going away: no grace.
    for (stop_pod, handle) in workers.into_values().chain(terminating.into_values()) {
        let _ = stop_pod.send(PodStop::Kill);
        let _ = handle.await;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_pod_recreated_at_once_gets_another_address() {
        let ips = Arc::new(PodIps::for_cluster(1));
        let first = ips.lease("pod-1");
        let address = first.ip().unwrap();
        assert_eq!(
            ips.lease("pod-1").ip().unwrap(),
            address,
            "a pod keeps its own"
        );
        drop(first);
        let second = ips.lease("pod-2");
        assert_ne!(
            second.ip().unwrap(),
            address,
            "a freed address is not reused at once"
        );
    }
}
