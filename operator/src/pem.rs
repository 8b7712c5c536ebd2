//! Talking to the PEMs: which PEM serves which node (from the PEM pods), and the
//! `ProbeService` calls of `api/proto/pem.proto`, each with a timeout, fanned out over
//! many PEMs with a bounded number in flight.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use px_api::auth::Bearer;
use px_api::pem::probe_service_client::ProbeServiceClient;
use tonic::service::interceptor::InterceptedService;
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
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Pem {
    /// The node the PEM runs on.
    pub node: String,
    /// The PEM pod's IP, if it has one yet.
    pub ip: Option<String>,
    /// Whether the pod is Ready.
    pub ready: bool,
    /// The PEM pod's namespace (the Vizier's), where its token Secret is.
    pub namespace: String,
    /// The name of its Vizier (the pod's `app.kubernetes.io/instance`).
    pub vizier: String,
    /// The service token the PEM requires, from that Secret.
    pub token: Option<String>,
    /// How to reach it over TLS, from the Vizier's TLS Secret (`None` until the Vizier
    /// has its CA).
    pub tls: Option<crate::tls::PemTls>,
}

impl std::fmt::Debug for Pem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token: debug output reaches logs.
        f.debug_struct("Pem")
            .field("node", &self.node)
            .field("ip", &self.ip)
            .field("ready", &self.ready)
            .field("namespace", &self.namespace)
            .field("vizier", &self.vizier)
            .finish_non_exhaustive()
    }
}

/// Where and how to call one PEM.
#[derive(Clone)]
pub struct Address {
    /// The PEM pod's IP.
    pub ip: String,
    /// The token it requires.
    token: Option<px_api::secret::SecretString>,
    /// Its TLS; a call without is refused before it is made.
    tls: Option<crate::tls::PemTls>,
}

impl Address {
    /// A PEM at `ip` that requires `token`, reached over `tls`.
    pub fn new(ip: &str, token: Option<&str>, tls: Option<crate::tls::PemTls>) -> Self {
        Self {
            ip: ip.to_string(),
            token: token.map(|t| t.to_owned().into()),
            tls,
        }
    }
}

impl Pem {
    /// Whether the operator can call this PEM (ready, with an IP), and how.
    pub fn reachable(&self) -> Option<Address> {
        let ip = self.ip.as_deref().filter(|_| self.ready)?;
        Some(Address::new(ip, self.token.as_deref(), self.tls.clone()))
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
                namespace: p.metadata.namespace.clone().unwrap_or_default(),
                vizier: p
                    .metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get("app.kubernetes.io/instance"))
                    .cloned()
                    .unwrap_or_default(),
                token: None,
                tls: None,
            })
        })
        .collect();
    // One per node and Vizier (two Viziers may run PEMs on one node); ready first
    // within a node, so dedup keeps it.
    let key = |p: &Pem| (p.node.clone(), p.namespace.clone(), p.vizier.clone());
    pems.sort_by(|a, b| key(a).cmp(&key(b)).then(b.ready.cmp(&a.ready)));
    pems.dedup_by(|a, b| key(a) == key(b));
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
    /// The Vizier has no CA yet, so the PEM cannot be called over TLS.
    #[error(
        "no TLS certificate to call the PEM at {addr} with yet (its Vizier has no CA in Secret px-tls)"
    )]
    NoCertificate {
        /// The address.
        addr: String,
    },
    /// The token cannot be sent.
    #[error("the PEM token for {addr} cannot be sent: {reason}")]
    Token {
        /// The address.
        addr: String,
        /// Why.
        reason: String,
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

/// A `ProbeService` client presenting the PEM's service token.
pub type PemClient = ProbeServiceClient<InterceptedService<Channel, Bearer>>;

/// A `ProbeService` client for the PEM at `address`: mutual TLS with the operator's
/// certificate for the Vizier, and the token inside it.
fn client(address: &Address) -> Result<(String, PemClient), CallError> {
    let ip = address.ip.as_str();
    let addr = if ip.contains(':') {
        format!("https://[{ip}]:{PEM_PORT}")
    } else {
        format!("https://{ip}:{PEM_PORT}")
    };
    let tls = address
        .tls
        .as_ref()
        .ok_or_else(|| CallError::NoCertificate { addr: addr.clone() })?;
    let channel = channel(&addr, tls)?;
    let bearer = Bearer::new(address.token.as_ref()).map_err(|reason| CallError::Token {
        addr: addr.clone(),
        reason,
    })?;
    Ok((addr, ProbeServiceClient::with_interceptor(channel, bearer)))
}

/// PEM addresses kept with a channel; past this many the cache starts over (PEM pods
/// come and go at new addresses, and a channel to a gone one holds nothing but memory).
const MAX_CHANNELS: usize = 8192;

/// One channel per PEM address and TLS configuration, reused by every call: an HTTP/2
/// connection that carries the calls of every reconcile, reconnected by tonic when it
/// breaks, instead of a TCP and TLS handshake per call. A renewed certificate makes a
/// new channel (the old one is dropped once its calls finish).
fn channel(addr: &str, tls: &crate::tls::PemTls) -> Result<Channel, CallError> {
    static CHANNELS: std::sync::LazyLock<std::sync::Mutex<HashMap<String, (u64, Channel)>>> =
        std::sync::LazyLock::new(Default::default);
    let mut channels = CHANNELS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some((fingerprint, channel)) = channels.get(addr)
        && *fingerprint == tls.fingerprint
    {
        return Ok(channel.clone());
    }
    let bad = |source| CallError::Address {
        addr: addr.to_owned(),
        source,
    };
    let channel = Endpoint::from_shared(addr.to_owned())
        .map_err(bad)?
        .tls_config(tls.config.clone())
        .map_err(bad)?
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(CALL_TIMEOUT)
        .connect_lazy();
    if channels.len() >= MAX_CHANNELS {
        channels.clear();
    }
    channels.insert(addr.to_owned(), (tls.fingerprint, channel.clone()));
    Ok(channel)
}

/// Calls the PEM at `address` with `call` (the RPC `method`, for the metrics), within
/// [`CALL_TIMEOUT`].
pub async fn call<T, F, Fut>(address: &Address, method: &str, call: F) -> Result<T, CallError>
where
    F: FnOnce(PemClient) -> Fut,
    Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    let (addr, client) = client(address)?;
    let (result, outcome) = match tokio::time::timeout(CALL_TIMEOUT, call(client)).await {
        Err(_) => (Err(CallError::Timeout { addr }), "timeout"),
        Ok(Err(source)) => (Err(CallError::Rpc { addr, source }), "error"),
        Ok(Ok(response)) => (Ok(response.into_inner()), "ok"),
    };
    crate::metrics::pem_rpc(method, outcome);
    result
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
    fn two_viziers_on_one_node_are_two_pems() {
        let mut other = pod("a", Some("10.0.0.9"), true);
        other.metadata.labels = Some(std::collections::BTreeMap::from([(
            "app.kubernetes.io/instance".to_string(),
            "other".to_string(),
        )]));
        let pems = pems_by_node(&[pod("a", Some("10.0.0.1"), true), other]);
        let got: Vec<(&str, &str)> = pems
            .iter()
            .map(|p| (p.vizier.as_str(), p.ip.as_deref().unwrap()))
            .collect();
        assert_eq!(got, [("", "10.0.0.1"), ("other", "10.0.0.9")]);
    }

    #[test]
    fn one_pem_per_node_and_a_ready_one_wins() {
        let pems = pems_by_node(&[
            pod("b", Some("10.0.0.2"), false),
            pod("a", Some("10.0.0.1"), true),
            pod("b", Some("10.0.0.3"), true),
            pod("c", None, false),
        ]);
        let got: Vec<(&str, Option<String>)> = pems
            .iter()
            .map(|p| (p.node.as_str(), p.reachable().map(|a| a.ip)))
            .collect();
        assert_eq!(
            got,
            [
                ("a", Some("10.0.0.1".to_string())),
                ("b", Some("10.0.0.3".to_string())),
                ("c", None)
            ]
        );
    }

    #[tokio::test]
    async fn an_unreachable_pem_is_an_error_not_a_hang() {
        // Port 50400 on an address of 127/8 where nothing listens.
        let ca = crate::certs::Ca::generate("pl", "pixie", 1_800_000_000).unwrap();
        let tls = crate::tls::PemTls {
            config: tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(&ca.cert_pem)),
            fingerprint: 1,
        };
        let no_tls = call(
            &Address::new("127.3.2.1", Some("t"), None),
            "ListProbes",
            |mut c| async move { c.list_probes(px_api::pem::ListProbesRequest {}).await },
        )
        .await
        .unwrap_err();
        assert!(
            matches!(no_tls, CallError::NoCertificate { .. }),
            "{no_tls}"
        );
        let err = call(
            &Address::new("127.3.2.1", Some("t"), Some(tls)),
            "ListProbes",
            |mut c| async move { c.list_probes(px_api::pem::ListProbesRequest {}).await },
        )
        .await
        .unwrap_err();
        assert!(
            matches!(err, CallError::Rpc { .. } | CallError::Timeout { .. }),
            "{err}"
        );
    }
}
