//! Simulated nodes: a Node object and an agent that plays the kubelet's part, running
//! each pod's containers as local processes in the node's cgroup and writing back the
//! pod's status. An exited container is restarted with back-off (restartPolicy Always
//! or OnFailure), as a kubelet would. The agent is here; one pod's worker is in `pod`,
//! its processes in `process`.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use pod::{PodStop, run_pod};

use crate::server::Shared;
use crate::store::WriteOptions;
use crate::time::now_rfc3339;

mod pod;
mod process;

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
        .filter(|h| *h < 255)?;
    Some(std::net::Ipv4Addr::new(127, process, cluster, host))
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
    pub(crate) shared: Arc<Shared>,
    pub(crate) name: String,
    /// The node's address: its InternalIP, and every pod's `podIP` and `hostIP` (the
    /// pods share the node's network, as with `hostNetwork`).
    pub(crate) ip: String,
    /// Absolute path of the node's cgroup v2 directory.
    pub(crate) cgroup: PathBuf,
    /// Image name (with or without tag) to local executable.
    pub(crate) images: Arc<HashMap<String, PathBuf>>,
    pub(crate) kubeconfig: PathBuf,
    /// Where container output and working directories go.
    pub(crate) dir: PathBuf,
}

/// A running node agent; dropping it kills its pods' processes.
pub(crate) struct NodeAgent {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl NodeAgent {
    /// Registers the Node object and starts the agent.
    pub(crate) fn start(ctx: NodeContext, spec: &NodeSpec) -> Result<Self, crate::Error> {
        register(&ctx, spec)?;
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(run(Arc::new(ctx), stop_rx));
        Ok(Self { stop, task })
    }

    /// Stops every pod (killing its processes) and waits for the agent to finish.
    pub(crate) async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = (&mut { self }.task).await;
    }
}

impl Drop for NodeAgent {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        self.task.abort();
    }
}

fn register(ctx: &NodeContext, spec: &NodeSpec) -> Result<(), crate::Error> {
    let now = now_rfc3339();
    let mut labels = json!({
        "kubernetes.io/hostname": spec.name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": std::env::consts::ARCH,
    });
    for (k, v) in &spec.labels {
        labels[k] = json!(v);
    }
    let node = json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": spec.name, "labels": labels},
        "spec": {},
        "status": {
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "kubelet is posting ready status", "lastHeartbeatTime": now, "lastTransitionTime": now}],
            "addresses": [{"type": "InternalIP", "address": ctx.ip}, {"type": "Hostname", "address": spec.name}],
            "capacity": {"cpu": "2", "memory": "8Gi", "pods": "110"},
            "allocatable": {"cpu": "2", "memory": "8Gi", "pods": "110"},
            "nodeInfo": {"kubeletVersion": "v1.32.0-px-e2e", "containerRuntimeVersion": "px-e2e://processes", "operatingSystem": "linux", "architecture": std::env::consts::ARCH},
        },
    });
    let mut store = ctx.shared.lock();
    let res = store
        .resource("", "v1", "nodes")
        .ok_or_else(|| crate::Error::Refused {
            what: "node".into(),
            message: "nodes are not served".into(),
        })?;
    store
        .create(&res, None, node, &WriteOptions::internal("kubelet"))
        .map(|_| ())
        .map_err(|e| crate::Error::Refused {
            what: format!("node {}", spec.name),
            message: e.message,
        })
}

pub(super) fn s<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.pointer(ptr).and_then(Value::as_str).unwrap_or_default()
}

/// The agent: one worker per pod bound to this node, stopped when the pod goes.
async fn run(ctx: Arc<NodeContext>, mut stop: watch::Receiver<bool>) {
    let mut events = ctx.shared.lock().subscribe();
    let mut workers: HashMap<String, (watch::Sender<PodStop>, JoinHandle<()>)> = HashMap::new();
    // Pods whose processes were asked to terminate and may still be exiting.
    let mut terminating: Vec<(watch::Sender<PodStop>, JoinHandle<()>)> = Vec::new();
    loop {
        let pods: Vec<Value> = {
            let store = ctx.shared.lock();
            let Some(res) = store.resource("", "v1", "pods") else {
                return;
            };
            let on_node =
                crate::selectors::FieldSelector::parse(&format!("spec.nodeName={}", ctx.name))
                    .unwrap_or_default();
            store.list(
                &res,
                "v1",
                None,
                &crate::selectors::LabelSelector::default(),
                &on_node,
            )
        };
        let wanted: HashMap<String, Value> = pods
            .into_iter()
            .filter(|p| p.pointer("/metadata/deletionTimestamp").is_none())
            .map(|p| (s(&p, "/metadata/uid").to_string(), p))
            .collect();
        let gone: Vec<String> = workers
            .keys()
            .filter(|uid| !wanted.contains_key(*uid))
            .cloned()
            .collect();
        for uid in gone {
            if let Some((stop_pod, handle)) = workers.remove(&uid) {
                let _ = stop_pod.send(PodStop::Terminate);
                terminating.push((stop_pod, handle));
            }
        }
        terminating.retain(|(_, h)| !h.is_finished());
        for (uid, pod) in wanted {
            workers.entry(uid).or_insert_with(|| {
                let (tx, rx) = watch::channel(PodStop::Run);
                (tx, tokio::spawn(run_pod(Arc::clone(&ctx), pod, rx)))
            });
        }
        tokio::select! {
            _ = stop.changed() => break,
            e = events.recv() => {
                if let Err(tokio::sync::broadcast::error::RecvError::Closed) = e {
                    break;
                }
                while events.try_recv().is_ok() {}
            }
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
    // The node is going away: no grace.
    for (stop_pod, handle) in workers.into_values().chain(terminating) {
        let _ = stop_pod.send(PodStop::Kill);
        let _ = handle.await;
    }
}
