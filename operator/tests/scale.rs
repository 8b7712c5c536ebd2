//! The operator at 1,000 nodes, simulated on the e2e control plane: 1,000 Node objects,
//! a PEM pod bound to each (Ready, with its own loopback address), and behind each
//! address an in-process stand-in PEM serving mutual TLS, as the real PEMs do; no
//! kubelets (the controllers that act on silent nodes are off). The operator's
//! Tracepoint controller runs as the chart's ServiceAccount. For one host Tracepoint
//! applied, changed and deleted, at 20 nodes and then at 1,000, it measures the API
//! requests and status writes the operator made (from the API server's audit log), the
//! calls the PEMs received, and the time until the status was final; it checks that the
//! status writes do not grow with the nodes and that each PEM got one call per change.
//!
//! A test binary of its own, so that it runs alone: its figures are printed (with
//! `--nocapture`) and recorded in docs/benchmarks.md.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use k8s_openapi::api::core::v1::{Node, Pod, Secret};
use kube::api::{Api, Patch, PatchParams, PostParams};
use px_api::pem::probe_service_server::ProbeServiceServer;
use px_e2e::standin_pem::{StandinConfig, StandinPem};
use px_e2e::{Cluster, ClusterConfig, eventually};
use px_operator::certs::{Ca, Role, pem_server_name};
use serde_json::json;

const SIZES: [usize; 2] = [20, 1000];
const RELEASE: &str = "px";
const RELEASE_NAMESPACE: &str = "px-system";
const SETTLE: Duration = Duration::from_secs(180);

const VIZIER: &str = "apiVersion: px.dev/v1alpha1\nkind: Vizier\nmetadata: {name: pixie, namespace: pl}\nspec: {version: 0.14.15}\n";

fn tracepoint(column: &str) -> String {
    format!(
        "apiVersion: px.dev/v1alpha1\nkind: Tracepoint\nmetadata: {{name: sim, namespace: pl}}\nspec:\n  probe: {{tracepoint: syscalls/sys_enter_openat}}\n  target:\n    host: {{}}\n  columns:\n  - {{name: {column}, source: Field, field: filename, type: string}}\n  table: sim\n"
    )
}

/// Simulated node `i`'s address: 127.P.(200 + i / 250).(i % 250 + 1), P from the
/// process as the e2e kubelet's (which use third bytes below 200).
fn address(i: usize) -> String {
    let p = std::process::id() % 250 + 1;
    format!("127.{p}.{}.{}", 200 + i / 250, i % 250 + 1)
}

async fn kubectl(cluster: &Cluster, args: &[&str], stdin: Option<&str>) -> String {
    let out = cluster.kubectl_stdin(args, stdin).await.unwrap();
    assert!(out.success(), "kubectl {args:?}: {out:?}");
    out.stdout
}

/// Adds simulated nodes `range`: each a Node, a Ready PEM pod of Vizier `pixie` bound to
/// it, and a stand-in PEM on its address, counting the calls it gets in `calls`.
async fn add_nodes(
    cluster: &Cluster,
    range: std::ops::Range<usize>,
    tls: &px_api::tls::ServerTls,
    calls: &Arc<AtomicU64>,
) {
    let nodes: Api<Node> = Api::all(cluster.client());
    let pods: Api<Pod> = Api::namespaced(cluster.client(), "pl");
    for i in range.clone() {
        let ip = address(i);
        let listener = px_api::process::listen(format!("{ip}:50400").parse().unwrap(), "sim")
            .await
            .unwrap();
        let calls = Arc::clone(calls);
        let pem = StandinPem::new(StandinConfig {
            node: format!("sim-{i}"),
            memory_limit_bytes: 1 << 30,
            fail: None,
        });
        let service = ProbeServiceServer::with_interceptor(pem, move |request| {
            calls.fetch_add(1, Ordering::Relaxed);
            Ok(request)
        });
        let incoming = px_api::tls::incoming(listener, Some(tls.clone()));
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(incoming),
        );
    }
    futures_util::stream::iter(range)
        .map(|i| {
            let (nodes, pods) = (nodes.clone(), pods.clone());
            async move {
                let name = format!("sim-{i}");
                let node = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
                nodes.create(&PostParams::default(), &node).await.unwrap();
                let pod = serde_json::from_value(json!({
                    "metadata": {"name": format!("pixie-pem-{name}"), "labels": {
                        "app.kubernetes.io/name": "vizier-pem",
                        "app.kubernetes.io/instance": "pixie",
                        "app.kubernetes.io/managed-by": "px-operator",
                        "px.dev/vizier": "pixie",
                    }},
                    "spec": {"nodeName": name, "containers": [{"name": "pem", "image": "px/vizier-pem"}]},
                }))
                .unwrap();
                let pod: Pod = pods.create(&PostParams::default(), &pod).await.unwrap();
                let ip = address(i);
                let status = json!({"status": {
                    "phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
                    "conditions": [{"type": "Ready", "status": "True"}],
                }});
                pods.patch_status(
                    &pod.metadata.name.unwrap(),
                    &PatchParams::default(),
                    &Patch::Merge(&status),
                )
                .await
                .unwrap();
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<()>>()
        .await;
}

/// What the operator did for one change, from the audit log and the stand-ins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Counts {
    requests: usize,
    status_writes: usize,
    pem_calls: u64,
}

fn counts(cluster: &Cluster, user: &str, calls: &AtomicU64) -> Counts {
    let events = cluster.audit_events(user);
    let mut requests = std::collections::BTreeSet::new();
    let mut status = std::collections::BTreeSet::new();
    for e in &events {
        let s = |p: &str| e.pointer(p).and_then(|v| v.as_str()).unwrap_or("");
        requests.insert(s("/auditID").to_string());
        if s("/verb") == "patch"
            && s("/objectRef/resource") == "tracepoints"
            && s("/objectRef/subresource") == "status"
        {
            status.insert(s("/auditID").to_string());
        }
    }
    Counts {
        requests: requests.len(),
        status_writes: status.len(),
        pem_calls: calls.load(Ordering::Relaxed),
    }
}

fn delta(after: Counts, before: Counts) -> Counts {
    Counts {
        requests: after.requests - before.requests,
        status_writes: after.status_writes - before.status_writes,
        pem_calls: after.pem_calls - before.pem_calls,
    }
}

/// `READY PHASE observedGeneration` of the Tracepoint, or `gone`.
async fn tp_state(cluster: &Cluster) -> String {
    let out = cluster
        .kubectl(&[
            "get",
            "tp",
            "sim",
            "-n",
            "pl",
            "-o",
            "jsonpath={.status.ready} {.status.phase} {.status.observedGeneration}",
        ])
        .await
        .unwrap();
    if out.stderr.contains("NotFound") {
        "gone".to_string()
    } else {
        out.stdout
    }
}

/// Waits for the Tracepoint's state to be `want`; how long it took.
async fn until(cluster: &Cluster, want: &str, since: Instant) -> Duration {
    let reached = eventually(SETTLE, || async {
        (tp_state(cluster).await == want).then_some(())
    })
    .await;
    assert!(
        reached.is_some(),
        "never {want:?}: {:?}",
        tp_state(cluster).await
    );
    since.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tracepoints_status_writes_do_not_grow_with_the_nodes() {
    let cluster = Cluster::start_for_static_nodes(ClusterConfig::default())
        .await
        .unwrap();
    let crds = Path::new(env!("CARGO_MANIFEST_DIR")).join("../crds");
    for file in [
        "viziers.px.dev.yaml",
        "tracepoints.px.dev.yaml",
        "dataretentions.px.dev.yaml",
    ] {
        kubectl(
            &cluster,
            &["apply", "-f", crds.join(file).to_str().unwrap()],
            None,
        )
        .await;
    }
    kubectl(&cluster, &["create", "namespace", "pl"], None).await;
    kubectl(&cluster, &["apply", "-f", "-"], Some(VIZIER)).await;
    // The default ServiceAccount, which pod admission needs, comes from a controller.
    let sa = eventually(SETTLE, || async {
        let out = cluster
            .kubectl(&["get", "sa", "default", "-n", "pl"])
            .await
            .ok()?;
        out.success().then_some(())
    })
    .await;
    assert!(sa.is_some());

    // The Vizier's CA as the operator keeps it in px-tls, and the PEMs' certificate.
    let now = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap();
    let ca = Ca::generate("pl", "pixie", now).unwrap();
    let pem = ca
        .issue(
            Role::Pem,
            "vizier-pem",
            &[pem_server_name("pl", "pixie")],
            now,
            Duration::from_secs(86_400),
        )
        .unwrap();
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("scale-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (file, text) in [
        ("tls.crt", &pem.cert_pem),
        ("tls.key", &pem.key_pem),
        ("ca.crt", &ca.cert_pem),
    ] {
        std::fs::write(dir.join(file), text).unwrap();
    }
    let secrets: Api<Secret> = Api::namespaced(cluster.client(), "pl");
    for (name, data) in [
        (
            "px-tls",
            json!({"pixie.ca.crt": ca.cert_pem, "pixie.ca.key": ca.key_pem}),
        ),
        ("px-pem-token", json!({"pixie": "simulated-token"})),
    ] {
        let secret =
            serde_json::from_value(json!({"metadata": {"name": name}, "stringData": data}))
                .unwrap();
        secrets
            .create(&PostParams::default(), &secret)
            .await
            .unwrap();
    }
    let tls = px_api::tls::ServerTlsArgs {
        tls_cert: Some(dir.join("tls.crt")),
        tls_key: Some(dir.join("tls.key")),
        tls_client_ca: Some(dir.join("ca.crt")),
        disable_tls: false,
    }
    .server_config()
    .unwrap()
    .unwrap();

    // The operator's Tracepoint controller, as the chart's ServiceAccount.
    let helm = px_e2e::helm::Helm::get(Path::new(env!("CARGO_TARGET_TMPDIR"))).unwrap();
    let kubeconfig = px_e2e::helm::install_operator_identity(
        &cluster,
        &helm,
        RELEASE,
        RELEASE_NAMESPACE,
        &json!({}),
    )
    .await
    .unwrap();
    let client = cluster.client_for(&kubeconfig).await.unwrap();
    let user = format!("system:serviceaccount:{RELEASE_NAMESPACE}:{RELEASE}-operator");
    let ctx = Arc::new(px_operator::Context::new(
        client,
        None,
        Some("scale".into()),
    ));
    let operator = tokio::spawn(px_operator::tracepoint::run(ctx, std::future::pending()));

    let calls = Arc::new(AtomicU64::new(0));
    let mut nodes = 0;
    let mut table = Vec::new();
    for size in SIZES {
        let added = Instant::now();
        add_nodes(&cluster, nodes..size, &tls, &calls).await;
        eprintln!(
            "scale: {} nodes added in {:?}",
            size - nodes,
            added.elapsed()
        );
        nodes = size;
        let ready = format!("{size}/{size}");
        let mut phases = Vec::new();
        for (phase, yaml, want) in [
            (
                "apply",
                Some(tracepoint("filename")),
                format!("{ready} Running 1"),
            ),
            (
                "change",
                Some(tracepoint("path")),
                format!("{ready} Running 2"),
            ),
            ("delete", None, "gone".to_string()),
        ] {
            let before = counts(&cluster, &user, &calls);
            let started = Instant::now();
            match yaml {
                Some(yaml) => {
                    kubectl(&cluster, &["apply", "-f", "-"], Some(&yaml)).await;
                }
                None => {
                    kubectl(
                        &cluster,
                        &["delete", "tp", "sim", "-n", "pl", "--wait=false"],
                        None,
                    )
                    .await;
                }
            }
            let took = until(&cluster, &want, started).await;
            // Let what follows the final status (a last write, stray calls) be counted.
            tokio::time::sleep(Duration::from_secs(2)).await;
            let done = delta(counts(&cluster, &user, &calls), before);
            eprintln!("scale: {size} nodes, {phase}: final after {took:?}, {done:?}");
            phases.push((phase, took, done));
        }
        table.push((size, phases));
    }
    operator.abort();

    println!(
        "| nodes | change | time to final status | operator API requests | status writes | PEM calls |"
    );
    println!("| --- | --- | --- | --- | --- | --- |");
    for (size, phases) in &table {
        for (phase, took, c) in phases {
            println!(
                "| {size} | {phase} | {:.2} s | {} | {} | {} |",
                took.as_secs_f64(),
                c.requests,
                c.status_writes,
                c.pem_calls
            );
        }
    }
    let (small, large) = (&table[0].1, &table[1].1);
    for ((phase, _, s), (_, _, l)) in small.iter().zip(large) {
        assert!(
            l.status_writes <= s.status_writes + 1,
            "{phase}: {} status writes at {} nodes, {} at {}",
            l.status_writes,
            SIZES[1],
            s.status_writes,
            SIZES[0]
        );
    }
    // Each PEM is called once per change: the calls grow with the nodes, and only so.
    for (size, phases) in &table {
        for (phase, _, c) in phases {
            let per_node = c.pem_calls as f64 / *size as f64;
            assert!(
                (1.0..=2.0).contains(&per_node),
                "{phase} at {size} nodes: {} PEM calls",
                c.pem_calls
            );
        }
    }
    cluster.stop().await;
}
