//! Kelvin finds the PEMs by watching their pods: a PEM that comes, goes or moves to
//! another address changes the set the next query fans out to, without a restart. The
//! watch is of one namespace and one label selector (the Vizier's PEM pods), with
//! kube-runtime's reflector; a PEM whose address did not change keeps its connection.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures_util::StreamExt as _;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::watcher::{self, Event};
use kube::runtime::{WatchStreamExt as _, reflector};
use kube::{Api, Client};

use crate::remote::{PemError, RemotePem, RemotePems};

/// Where the PEM pods are and how to reach them.
#[derive(Clone, Debug)]
pub struct PemPods {
    /// The namespace of the PEM pods.
    pub namespace: String,
    /// Their label selector, as `kubectl -l` takes it.
    pub selector: String,
    /// The port each PEM serves on.
    pub port: u16,
    /// `https` or `http`.
    pub scheme: &'static str,
}

impl PemPods {
    /// The address of the PEM at `ip`.
    #[must_use]
    pub fn url(&self, ip: &str) -> String {
        if ip.contains(':') {
            format!("{}://[{ip}]:{}", self.scheme, self.port)
        } else {
            format!("{}://{ip}:{}", self.scheme, self.port)
        }
    }
}

/// The PEM of each node, from its pods: a pod not being deleted, scheduled, with an
/// address and not finished. Of two on one node (a rolling update), the ready one, then
/// the newer. A PEM that is down but whose pod is still there stays in the set, so a
/// query fails naming it rather than answering without its node.
#[must_use]
pub fn pem_addresses(pods: &[Arc<Pod>]) -> BTreeMap<String, String> {
    let mut chosen: BTreeMap<String, (bool, String, String)> = BTreeMap::new();
    for pod in pods {
        if pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let (Some(spec), Some(status)) = (&pod.spec, &pod.status) else {
            continue;
        };
        let (Some(node), Some(ip)) = (&spec.node_name, &status.pod_ip) else {
            continue;
        };
        if matches!(status.phase.as_deref(), Some("Succeeded" | "Failed")) || ip.is_empty() {
            continue;
        }
        let ready = status
            .conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        let created = pod
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|t| t.0.to_string())
            .unwrap_or_default();
        let candidate = (ready, created, ip.clone());
        match chosen.get(node) {
            Some(current) if (current.0, &current.1) >= (candidate.0, &candidate.1) => {}
            _ => {
                chosen.insert(node.clone(), candidate);
            }
        }
    }
    chosen
        .into_iter()
        .map(|(node, (_, _, ip))| (node, ip))
        .collect()
}

/// Watches the PEM pods and keeps `pems` to them until the task is aborted. `connect`
/// makes a PEM from its node name and URL (TLS and token included); a PEM at the same
/// URL as before keeps its connection. Until the first list, queries fail saying so; a
/// watch that fails later keeps the last set and is retried with back-off.
///
/// When `reconnect` changes (the client certificate was renewed), every PEM gets a new
/// connection from `connect`; queries in flight finish on the old ones.
pub fn watch_pem_pods<F, T>(
    client: Client,
    pods: PemPods,
    pems: RemotePems,
    connect: F,
    mut reconnect: Option<tokio::sync::watch::Receiver<T>>,
) -> tokio::task::JoinHandle<()>
where
    F: Fn(&str, &str) -> Result<RemotePem, PemError> + Send + 'static,
    T: Send + Sync + 'static,
{
    pems.set_unknown(format!(
        "Kelvin has not listed the PEM pods yet (namespace {}, selector {})",
        pods.namespace, pods.selector
    ));
    let api: Api<Pod> = Api::namespaced(client, &pods.namespace);
    let config = watcher::Config::default().labels(&pods.selector);
    let (store, writer) = reflector::store();
    let events = reflector(writer, watcher::watcher(api, config)).default_backoff();
    tokio::spawn(async move {
        let mut events = std::pin::pin!(events);
        let mut listed = false;
        loop {
            let renewed = async {
                match reconnect.as_mut() {
                    Some(r) => r.changed().await.is_ok(),
                    None => std::future::pending().await,
                }
            };
            let (event, renewed) = tokio::select! {
                event = events.next() => match event {
                    Some(event) => (event, false),
                    None => return,
                },
                true = renewed => (Ok(Event::InitDone), true),
            };
            if renewed && !listed {
                continue;
            }
            match event {
                Ok(Event::Init | Event::InitApply(_)) => continue,
                Ok(_) => listed = true,
                Err(error) => {
                    tracing::warn!(%error, namespace = %pods.namespace, selector = %pods.selector, "watching the PEM pods failed; retrying");
                    if !listed {
                        pems.set_unknown(format!(
                            "Kelvin cannot list the PEM pods (namespace {}, selector {}): {error}",
                            pods.namespace, pods.selector
                        ));
                    }
                    continue;
                }
            }
            let wanted = pem_addresses(&store.state());
            let current = pems.current();
            let mut next = Vec::with_capacity(wanted.len());
            for (node, ip) in &wanted {
                let url = pods.url(ip);
                // After a renewal every PEM gets a new connection with the new certificate.
                match current
                    .iter()
                    .find(|p| !renewed && p.name() == node && p.addr() == url)
                {
                    Some(same) => next.push(same.clone()),
                    None => match connect(node, &url) {
                        Ok(pem) => next.push(pem),
                        Err(error) => tracing::warn!(%error, "a PEM cannot be queried"),
                    },
                }
            }
            let changed = next.len() != current.len()
                || next
                    .iter()
                    .zip(current.iter())
                    .any(|(a, b)| a.name() != b.name() || a.addr() != b.addr());
            if changed || renewed || !pems.is_known() {
                tracing::info!(pems = ?next, "the PEMs changed");
                pems.replace(next);
            }
        }
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn pod(name: &str, node: &str, ip: &str, ready: bool, created: &str) -> Arc<Pod> {
        Arc::new(
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": name, "creationTimestamp": created},
                "spec": {"nodeName": node, "containers": []},
                "status": {
                    "phase": "Running",
                    "podIP": ip,
                    "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}],
                },
            }))
            .unwrap(),
        )
    }

    #[test]
    fn each_node_has_the_address_of_its_ready_then_newest_pem() {
        let mut gone = (*pod("old", "node-c", "10.0.0.9", true, "2026-01-01T00:00:00Z")).clone();
        gone.metadata.deletion_timestamp = gone.metadata.creation_timestamp.clone();
        let unscheduled: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "pending"}, "spec": {"containers": []}, "status": {"phase": "Pending"},
        }))
        .unwrap();
        let pods = vec![
            pod("a", "node-a", "10.0.0.1", true, "2026-01-01T00:00:00Z"),
            pod("b-old", "node-b", "10.0.0.2", true, "2026-01-01T00:00:00Z"),
            pod("b-new", "node-b", "10.0.0.3", false, "2026-01-02T00:00:00Z"),
            pod(
                "b-newer",
                "node-b",
                "10.0.0.4",
                true,
                "2026-01-03T00:00:00Z",
            ),
            pod("d", "node-d", "10.0.0.5", false, "2026-01-01T00:00:00Z"),
            Arc::new(gone),
            Arc::new(unscheduled),
        ];
        let addresses = pem_addresses(&pods);
        assert_eq!(
            addresses.into_iter().collect::<Vec<_>>(),
            [
                ("node-a".to_owned(), "10.0.0.1".to_owned()),
                ("node-b".to_owned(), "10.0.0.4".to_owned()),
                // Not ready, but there: a query names it rather than missing its node.
                ("node-d".to_owned(), "10.0.0.5".to_owned()),
            ]
        );
    }

    #[test]
    fn an_ipv6_address_is_bracketed() {
        let pods = PemPods {
            namespace: "pl".into(),
            selector: "app=pem".into(),
            port: 50400,
            scheme: "https",
        };
        assert_eq!(pods.url("10.0.0.1"), "https://10.0.0.1:50400");
        assert_eq!(pods.url("fd00::1"), "https://[fd00::1]:50400");
    }
}
