//! Talking to the PEMs: which PEM serves which node (from the PEM pods), and the
//! `ProbeService` calls of `api/proto/pem.proto`, each with a timeout, fanned out over
//! many PEMs with a bounded number in flight.

use std::future::Future;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use px_api::pem::probe_service_client::ProbeServiceClient;
use tonic::transport::{Channel, Endpoint};

use crate::desired::PEM_PORT;

/// Most PEM calls in flight at once, per reconcile: enough to reach thousands of nodes
/// within a few round trips, few enough not to exhaust file descriptors.
pub const MAX_IN_FLIGHT: usize = 32;
/// How long a PEM may take to accept a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one call may take, connection included.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// The PEM of one node, as its pod says.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Pem {
    /// The node the PEM runs on.
    pub node: String,
    /// The PEM pod's IP, if it has one yet.
    pub ip: Option<String>,
    /// Whether the pod is Ready.
    pub ready: bool,
}

impl Pem {
    /// Whether the operator can call this PEM: ready, with an IP.
    pub fn reachable(&self) -> Option<&str> {
        self.ip.as_deref().filter(|_| self.ready)
    }
}

fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// One PEM per node from the PEM pods (a pod being deleted is left out; of two pods on
/// one node during a roll, a ready one wins), sorted by node.
pub fn pems_by_node(pods: &[Pod]) -> Vec<Pem> {
    let mut pems: Vec<Pem> = pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter_map(|p| {
            Some(Pem {
                node: p.spec.as_ref()?.node_name.clone()?,
                ip: p.status.as_ref().and_then(|s| s.pod_ip.clone()),
                ready: pod_ready(p),
            })
        })
        .collect();
    // Ready first within a node, so dedup keeps it.
    pems.sort_by(|a, b| a.node.cmp(&b.node).then(b.ready.cmp(&a.ready)));
    pems.dedup_by(|a, b| a.node == b.node);
    pems
}

/// Why a call to a PEM did not give an answer.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The PEM's address is not usable.
    #[error("bad PEM address {addr}")]
    Address {
        /// The address.
        addr: String,
        /// Why.
        #[source]
        source: tonic::transport::Error,
    },
    /// No answer within the timeout.
    #[error("no answer from {addr} within {CALL_TIMEOUT:?}")]
    Timeout {
        /// The address.
        addr: String,
    },
    /// The PEM (or the connection to it) returned an error.
    #[error("{addr}: {}", source.message())]
    Rpc {
        /// The address.
        addr: String,
        /// The gRPC status.
        #[source]
        source: tonic::Status,
    },
}

/// A `ProbeService` client for the PEM at `ip` (plaintext: TLS between the operator
/// and the PEMs is not set up yet, as between Kelvin and the PEMs).
fn client(ip: &str) -> Result<(String, ProbeServiceClient<Channel>), CallError> {
    let addr = if ip.contains(':') {
        format!("http://[{ip}]:{PEM_PORT}")
    } else {
        format!("http://{ip}:{PEM_PORT}")
    };
    let endpoint = Endpoint::from_shared(addr.clone())
        .map_err(|source| CallError::Address {
            addr: addr.clone(),
            source,
        })?
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(CALL_TIMEOUT);
    Ok((addr, ProbeServiceClient::new(endpoint.connect_lazy())))
}

/// Calls the PEM at `ip` with `call`, within [`CALL_TIMEOUT`].
pub async fn call<T, F, Fut>(ip: &str, call: F) -> Result<T, CallError>
where
    F: FnOnce(ProbeServiceClient<Channel>) -> Fut,
    Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    let (addr, client) = client(ip)?;
    match tokio::time::timeout(CALL_TIMEOUT, call(client)).await {
        Err(_) => Err(CallError::Timeout { addr }),
        Ok(Err(source)) => Err(CallError::Rpc { addr, source }),
        Ok(Ok(response)) => Ok(response.into_inner()),
    }
}

/// Runs `f` on every item with at most [`MAX_IN_FLIGHT`] at once; results in no
/// particular order.
pub async fn fan_out<I, T, F, Fut>(items: I, f: F) -> Vec<T>
where
    I: IntoIterator,
    F: FnMut(I::Item) -> Fut,
    Fut: Future<Output = T>,
{
    futures_util::stream::iter(items)
        .map(f)
        .buffer_unordered(MAX_IN_FLIGHT)
        .collect()
        .await
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn pod(node: &str, ip: Option<&str>, ready: bool) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": format!("pem-{node}")},
            "spec": {"nodeName": node, "containers": []},
            "status": {
                "podIP": ip,
                "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}],
            },
        }))
        .unwrap()
    }

    #[test]
    fn one_pem_per_node_and_a_ready_one_wins() {
        let pems = pems_by_node(&[
            pod("b", Some("10.0.0.2"), false),
            pod("a", Some("10.0.0.1"), true),
            pod("b", Some("10.0.0.3"), true),
            pod("c", None, false),
        ]);
        let got: Vec<(&str, Option<&str>)> = pems
            .iter()
            .map(|p| (p.node.as_str(), p.reachable()))
            .collect();
        assert_eq!(
            got,
            [
                ("a", Some("10.0.0.1")),
                ("b", Some("10.0.0.3")),
                ("c", None)
            ]
        );
    }

    #[tokio::test]
    async fn an_unreachable_pem_is_an_error_not_a_hang() {
        // Port 50400 on an address of 127/8 where nothing listens.
        let err = call("127.3.2.1", |mut c| async move {
            c.list_probes(px_api::pem::ListProbesRequest {}).await
        })
        .await
        .unwrap_err();
        assert!(
            matches!(err, CallError::Rpc { .. } | CallError::Timeout { .. }),
            "{err}"
        );
    }
}
