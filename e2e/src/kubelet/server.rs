//! The kubelet's HTTPS endpoint (port 10250 of the node's address) for the one thing the
//! API server asks of it here: container logs (`kubectl logs`, with `--tail`,
//! `--limit-bytes` and `-f`). Only callers with a client certificate from the cluster's
//! CA get in, as the API server has (`--kubelet-client-certificate`); the API server, in
//! turn, checks this node's serving certificate against the CA.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _};
use tokio::sync::watch;

use crate::error::Error;

/// The kubelet port, as the Node's `daemonEndpoints` says.
pub(crate) const KUBELET_PORT: u16 = 10250;

/// The certificates the endpoint serves with and trusts, DER.
pub(crate) struct ServerIdentity {
    pub(crate) cert: Vec<u8>,
    pub(crate) key: Vec<u8>,
    pub(crate) ca: Vec<u8>,
}

type Body = BoxBody<Bytes, Infallible>;

fn text(status: StatusCode, message: String) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(message)).boxed());
    *response.status_mut() = status;
    response
}

/// Starts serving on `ip:10250` until `stop` turns true.
pub(crate) async fn serve(
    ip: std::net::IpAddr,
    logs: PathBuf,
    identity: ServerIdentity,
    stop: watch::Receiver<bool>,
) -> Result<tokio::task::JoinHandle<()>, Error> {
    let tls_error = |e: rustls::Error| Error::ControlPlane {
        component: "kubelet".into(),
        message: format!("TLS setup: {e}"),
    };
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(identity.ca))
        .map_err(tls_error)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .map_err(|e| Error::ControlPlane {
        component: "kubelet".into(),
        message: format!("TLS client verifier: {e}"),
    })?;
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(tls_error)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![CertificateDer::from(identity.cert)],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(identity.key)),
        )
        .map_err(tls_error)?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind(SocketAddr::new(ip, KUBELET_PORT))
        .await
        .map_err(|source| Error::Bind { source })?;
    let logs = Arc::new(logs);
    Ok(tokio::spawn(async move {
        let mut stop_accept = stop.clone();
        loop {
            let (tcp, _) = tokio::select! {
                _ = stop_accept.changed() => return,
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(_) => continue,
                },
            };
            let (acceptor, logs, stop) = (acceptor.clone(), Arc::clone(&logs), stop.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = hyper::service::service_fn(move |req| {
                    let (logs, stop) = (Arc::clone(&logs), stop.clone());
                    async move { Ok::<_, Infallible>(handle(req, &logs, stop).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
            });
        }
    }))
}

async fn handle(
    req: Request<Incoming>,
    logs: &std::path::Path,
    stop: watch::Receiver<bool>,
) -> Response<Body> {
    let path = req.uri().path().to_string();
    let Some(rest) = path.strip_prefix("/containerLogs/") else {
        return text(
            StatusCode::NOT_FOUND,
            format!("{path} is not served by this simulated kubelet (container logs only)"),
        );
    };
    let parts: Vec<&str> = rest.split('/').collect();
    let [namespace, pod, container] = parts.as_slice() else {
        return text(
            StatusCode::BAD_REQUEST,
            format!("expected /containerLogs/NAMESPACE/POD/CONTAINER, got {path}"),
        );
    };
    let query: HashMap<String, String> = req
        .uri()
        .query()
        .unwrap_or_default()
        .split('&')
        .filter_map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect();
    let file = logs.join(format!("{namespace}_{pod}_{container}.log"));
    let Ok(mut log) = tokio::fs::File::open(&file).await else {
        return text(
            StatusCode::NOT_FOUND,
            format!("no logs for container {container} of pod {namespace}/{pod} on this node"),
        );
    };
    let mut content = Vec::new();
    if log.read_to_end(&mut content).await.is_err() {
        return text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("reading {}", file.display()),
        );
    }
    let mut start = 0;
    if let Some(tail) = query.get("tailLines").and_then(|t| t.parse::<usize>().ok()) {
        let ends: Vec<usize> = content
            .iter()
            .enumerate()
            .filter(|(_, b)| **b == b'\n')
            .map(|(i, _)| i + 1)
            .collect();
        // The last `tail` complete lines (and a partial one after them).
        let complete = ends.len();
        start = if tail >= complete {
            0
        } else {
            ends[complete - tail - 1]
        };
    }
    let mut first = content.split_off(start);
    let limit = query
        .get("limitBytes")
        .and_then(|l| l.parse::<usize>().ok());
    if let Some(limit) = limit {
        first.truncate(limit);
    }
    if query.get("follow").map(String::as_str) != Some("true") || limit.is_some() {
        return Response::new(Full::new(Bytes::from(first)).boxed());
    }
    // Follow: what is there, then whatever the container writes, until the client goes
    // or the node stops.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(16);
    let mut offset = start as u64 + first.len() as u64;
    let mut stop = stop;
    tokio::spawn(async move {
        if tx.send(Ok(Frame::data(Bytes::from(first)))).await.is_err() {
            return;
        }
        loop {
            tokio::select! {
                _ = stop.changed() => return,
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
            let mut more = Vec::new();
            if log.seek(std::io::SeekFrom::Start(offset)).await.is_err()
                || log.read_to_end(&mut more).await.is_err()
            {
                return;
            }
            if more.is_empty() {
                if tx.is_closed() {
                    return;
                }
                continue;
            }
            offset += more.len() as u64;
            if tx.send(Ok(Frame::data(Bytes::from(more)))).await.is_err() {
                return;
            }
        }
    });
    Response::new(StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx)).boxed())
}
