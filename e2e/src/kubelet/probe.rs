//! Readiness probes, as the kubelet runs them: `exec` (the command, in the container's
//! pod cgroup and environment; exit 0 is success), `tcpSocket` (a connection to the pod
//! IP and port) and `httpGet` (a status from 200 to 399), every `periodSeconds` after
//! `initialDelaySeconds`, each within `timeoutSeconds`, ready after `successThreshold`
//! successes and unready after `failureThreshold` failures. A container without a
//! readiness probe is ready once it runs.

use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::time::Instant;

use super::process::{environment, exec_probe};
use super::{NodeContext, s};

/// One container's readiness.
pub(super) struct Readiness {
    probe: Option<Value>,
    ready: bool,
    successes: u32,
    failures: u32,
    next: Instant,
}

fn seconds(probe: &Value, field: &str, default: u64) -> Duration {
    Duration::from_secs(probe.get(field).and_then(Value::as_u64).unwrap_or(default))
}

fn threshold(probe: &Value, field: &str, default: u32) -> u32 {
    probe
        .get(field)
        .and_then(Value::as_u64)
        .and_then(|n| u32::try_from(n).ok())
        .unwrap_or(default)
        .max(1)
}

impl Readiness {
    pub(super) fn new(probe: Option<&Value>) -> Self {
        Self {
            probe: probe.cloned(),
            ready: probe.is_none(),
            successes: 0,
            failures: 0,
            next: Instant::now(),
        }
    }

    /// The container (re)started: unready until its probe passes.
    pub(super) fn restart(&mut self) {
        if let Some(probe) = &self.probe {
            self.ready = false;
            self.successes = 0;
            self.failures = 0;
            self.next = Instant::now() + seconds(probe, "initialDelaySeconds", 0);
        }
    }

    pub(super) fn ready(&self) -> bool {
        self.ready
    }

    /// Runs the probe if it is due, and updates readiness.
    pub(super) async fn probe(&mut self, ctx: &NodeContext, pod: &Value, container: &Value) {
        let Some(probe) = self.probe.clone() else {
            return;
        };
        if Instant::now() < self.next {
            return;
        }
        self.next = Instant::now() + seconds(&probe, "periodSeconds", 10);
        let timeout = seconds(&probe, "timeoutSeconds", 1);
        let passed = tokio::time::timeout(timeout, check(ctx, pod, container, &probe))
            .await
            .unwrap_or(false);
        if passed {
            self.failures = 0;
            self.successes += 1;
            if self.successes >= threshold(&probe, "successThreshold", 1) {
                self.ready = true;
            }
        } else {
            self.successes = 0;
            self.failures += 1;
            if self.failures >= threshold(&probe, "failureThreshold", 3) {
                self.ready = false;
            }
        }
    }
}

/// A probe's port: a number, or the name of one of the container's ports.
fn port(container: &Value, port: &Value) -> Option<u16> {
    if let Some(n) = port.as_u64() {
        return u16::try_from(n).ok();
    }
    let name = port.as_str()?;
    if let Ok(n) = name.parse() {
        return Some(n);
    }
    container
        .get("ports")?
        .as_array()?
        .iter()
        .find(|p| s(p, "/name") == name)?
        .get("containerPort")?
        .as_u64()
        .and_then(|n| u16::try_from(n).ok())
}

async fn check(ctx: &NodeContext, pod: &Value, container: &Value, probe: &Value) -> bool {
    if let Some(exec) = probe.get("exec") {
        let command: Vec<String> = exec
            .get("command")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default();
        let Ok(env) = environment(ctx, pod, container).await else {
            return false;
        };
        return exec_probe(ctx, pod, &command, env).await;
    }
    if let Some(tcp) = probe.get("tcpSocket") {
        let host = match s(tcp, "/host") {
            "" => super::pod_ip(ctx, pod),
            h => h,
        };
        let Some(port) = tcp.get("port").and_then(|p| port(container, p)) else {
            return false;
        };
        return tokio::net::TcpStream::connect((host, port)).await.is_ok();
    }
    if let Some(http) = probe.get("httpGet") {
        let host = match s(http, "/host") {
            "" => super::pod_ip(ctx, pod),
            h => h,
        };
        let Some(port) = http.get("port").and_then(|p| port(container, p)) else {
            return false;
        };
        if s(http, "/scheme").eq_ignore_ascii_case("https") {
            // Not simulated: an HTTPS probe counts as passed once the port accepts.
            return tokio::net::TcpStream::connect((host, port)).await.is_ok();
        }
        let path = match s(http, "/path") {
            "" => "/",
            p => p,
        };
        return http_status(host, port, path)
            .await
            .is_some_and(|code| (200..400).contains(&code));
    }
    false
}

/// The status code of `GET path` on `host:port`, over HTTP/1.1.
async fn http_status(host: &str, port: u16, path: &str) -> Option<u16> {
    let mut stream = tokio::net::TcpStream::connect((host, port)).await.ok()?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: kube-probe/1.34\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut head = [0u8; 64];
    let mut read = 0;
    while read < 12 {
        let n = stream.read(&mut head[read..]).await.ok()?;
        if n == 0 {
            break;
        }
        read += n;
    }
    let line = std::str::from_utf8(&head[..read]).ok()?;
    line.split_whitespace().nth(1)?.parse().ok()
}
