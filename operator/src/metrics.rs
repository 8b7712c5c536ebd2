//! What the operator does, in Prometheus' text format at `/metrics`, and whether it is
//! alive and ready at `/healthz` and `/readyz`, on `--metrics-listen`.
//!
//! The figures are counts and durations by kind, reason and result: no object names,
//! no addresses, nothing secret. So the endpoint needs no credentials, as a kubelet's
//! probes cannot present any; the chart's optional NetworkPolicy keeps it to the pod's
//! namespace.

use std::net::SocketAddr;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// A controller's kind.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: String,
}

/// A failed reconcile: its kind and the failure's fixed label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    kind: String,
    reason: String,
}

/// A call to a PEM: which, and how it ended.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RpcLabels {
    method: String,
    result: String,
}

/// Every metric the operator keeps.
struct Metrics {
    registry: Registry,
    reconciles: Family<KindLabels, Counter>,
    errors: Family<ErrorLabels, Counter>,
    durations: Family<KindLabels, Histogram>,
    rpcs: Family<RpcLabels, Counter>,
    status_writes: Family<KindLabels, Counter>,
    leader: Gauge,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let mut registry = Registry::with_prefix("px_operator");
    let reconciles = Family::<KindLabels, Counter>::default();
    let errors = Family::<ErrorLabels, Counter>::default();
    let durations = Family::<KindLabels, Histogram>::new_with_constructor(|| {
        // 1 ms to about 65 s.
        Histogram::new(exponential_buckets(0.001, 2.0, 17))
    });
    let rpcs = Family::<RpcLabels, Counter>::default();
    let status_writes = Family::<KindLabels, Counter>::default();
    let leader = Gauge::default();
    registry.register("reconciles", "Reconciles run, by kind", reconciles.clone());
    registry.register(
        "reconcile_errors",
        "Reconciles that failed, by kind and reason",
        errors.clone(),
    );
    registry.register(
        "reconcile_duration_seconds",
        "How long a reconcile took, by kind",
        durations.clone(),
    );
    registry.register(
        "pem_rpcs",
        "Calls to the PEMs' ProbeService, by method and result",
        rpcs.clone(),
    );
    registry.register(
        "status_writes",
        "Status writes to the API server, by kind",
        status_writes.clone(),
    );
    registry.register(
        "leader",
        "1 while this instance holds the leader Lease",
        leader.clone(),
    );
    Metrics {
        registry,
        reconciles,
        errors,
        durations,
        rpcs,
        status_writes,
        leader,
    }
});

/// Whether the operator has reached the API server since it started (`/readyz`).
static READY: AtomicBool = AtomicBool::new(false);

/// Counts one reconcile of `kind` that took `took`, and its failure's `reason`, if any.
pub(crate) fn reconciled(kind: &str, took: Duration, failure: Option<&'static str>) {
    let labels = KindLabels {
        kind: kind.to_owned(),
    };
    METRICS.reconciles.get_or_create(&labels).inc();
    METRICS
        .durations
        .get_or_create(&labels)
        .observe(took.as_secs_f64());
    if let Some(reason) = failure {
        METRICS
            .errors
            .get_or_create(&ErrorLabels {
                kind: kind.to_owned(),
                reason: reason.to_owned(),
            })
            .inc();
    }
}

/// Counts one call `method` to a PEM that ended with `result` (`ok`, `error`, `timeout`).
pub(crate) fn pem_rpc(method: &str, result: &str) {
    METRICS
        .rpcs
        .get_or_create(&RpcLabels {
            method: method.to_owned(),
            result: result.to_owned(),
        })
        .inc();
}

/// Counts one status write of `kind`.
pub(crate) fn status_written(kind: &str) {
    METRICS
        .status_writes
        .get_or_create(&KindLabels {
            kind: kind.to_owned(),
        })
        .inc();
}

/// Whether this instance leads.
pub(crate) fn set_leader(leading: bool) {
    METRICS.leader.set(i64::from(leading));
}

/// The metrics in Prometheus' text format.
#[must_use]
pub fn render() -> String {
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, &METRICS.registry);
    out
}

/// Marks the operator ready: it reached the API server.
pub fn set_ready() {
    READY.store(true, Ordering::Relaxed);
}

/// Serves `/metrics`, `/healthz` and `/readyz` on `listener` until the task is aborted.
pub fn serve(listener: tokio::net::TcpListener) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let io = hyper_util::rt::TokioIo::new(stream);
                let service = hyper::service::service_fn(|req: Request<Incoming>| async move {
                    Ok::<_, std::convert::Infallible>(answer(req.uri().path()))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, service)
                    .await;
            });
        }
    })
}

/// Binds `addr` for [`serve`].
///
/// # Errors
/// When the address cannot be bound (in use, not this host's).
pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}

fn answer(path: &str) -> Response<Full<Bytes>> {
    let (status, kind, body) = match path {
        "/metrics" => (
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            render(),
        ),
        "/healthz" => (StatusCode::OK, "text/plain", "ok\n".to_owned()),
        "/readyz" if READY.load(Ordering::Relaxed) => {
            (StatusCode::OK, "text/plain", "ok\n".to_owned())
        }
        "/readyz" => (
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "the API server has not answered yet\n".to_owned(),
        ),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: /metrics, /healthz, /readyz\n".to_owned(),
        ),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if let Ok(value) = hyper::header::HeaderValue::from_str(kind) {
        response
            .headers_mut()
            .insert(hyper::header::CONTENT_TYPE, value);
    }
    response
}
