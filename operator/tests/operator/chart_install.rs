//! The chart installed as a user installs it, on two nodes: `helm template` (Helm's own
//! library) with the Vizier enabled, the CRDs and then the templates applied with
//! kubectl. The operator's image runs the real `px-operator` binary as the chart's pod,
//! with its pod's ServiceAccount token (as in a cluster: no credentials of the test's);
//! the PEM and Kelvin images run a stand-in. The operator's Deployment rolls out, the
//! chart's Vizier goes Healthy with PEMS 2/2, nothing the operator asked for was refused,
//! and uninstalling leaves nothing.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use px_e2e::helm::{Helm, stream};
use px_e2e::{Cluster, ClusterConfig, NodeSpec, eventually};
use serde_json::json;

use super::vizier::{
    GC_SETTLE, RELEASE, RELEASE_NAMESPACE, SETTLE, Scratch, assert_operator_never_refused, ok,
    stand_in,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_installed_chart_runs_the_operator_which_deploys_its_vizier() {
    let scratch = Scratch::new("chart-install");
    let exe = stand_in(&scratch.0);
    let cluster = Cluster::start(ClusterConfig {
        nodes: vec![NodeSpec::named("node-a"), NodeSpec::named("node-b")],
        images: HashMap::from([
            (
                "px/px-operator".into(),
                PathBuf::from(env!("CARGO_BIN_EXE_px-operator")),
            ),
            ("px/vizier-pem".into(), exe.clone()),
            ("px/kelvin".into(), exe.clone()),
        ]),
    })
    .await
    .unwrap();
    let helm = Helm::get(Path::new(env!("CARGO_TARGET_TMPDIR")))
        .expect("this test needs Helm (helm-python-sdk)");
    let rendered = helm
        .render(
            RELEASE,
            RELEASE_NAMESPACE,
            &[],
            &json!({"vizier": {"enabled": true, "pemMemoryLimit": "1Gi"}}),
        )
        .unwrap();
    assert!(rendered.get("error").is_none(), "{}", rendered["error"]);

    // helm install --create-namespace: the CRDs first, then the templates.
    ok(&cluster, &["create", "namespace", RELEASE_NAMESPACE]).await;
    for crd in rendered["crds"].as_array().unwrap() {
        let out = cluster
            .kubectl_stdin(&["apply", "-f", "-"], crd["data"].as_str())
            .await
            .unwrap();
        assert!(out.success(), "{}: {out:?}", crd["filename"]);
    }
    let manifests = stream(&rendered);
    let out = cluster
        .kubectl_stdin(&["apply", "-f", "-"], Some(&manifests))
        .await
        .unwrap();
    assert!(out.success(), "{out:?}");

    let deployment = format!("deployment/{RELEASE}-operator");
    ok(
        &cluster,
        &[
            "rollout",
            "status",
            &deployment,
            "-n",
            RELEASE_NAMESPACE,
            "--timeout=60s",
        ],
    )
    .await;
    let healthy = eventually(SETTLE * 2, || async {
        let row = ok(
            &cluster,
            &[
                "get",
                "vz",
                "pixie",
                "-n",
                RELEASE_NAMESPACE,
                "--no-headers",
            ],
        )
        .await;
        let row: Vec<String> = row.split_whitespace().map(String::from).collect();
        (row.get(1).map(String::as_str) == Some("Healthy") && row[2] == "2/2").then_some(row)
    })
    .await;
    assert!(
        healthy.is_some(),
        "the chart's Vizier never went Healthy 2/2: {}",
        ok(
            &cluster,
            &["get", "vz,pods", "-n", RELEASE_NAMESPACE, "-o", "wide"]
        )
        .await
    );
    let limits = pods_field(
        &cluster,
        "vizier-pem",
        "{.items[*].spec.containers[0].resources.limits.memory}",
    )
    .await;
    assert_eq!(limits, "1Gi 1Gi");

    // The operator's /metrics, as Prometheus scrapes it from its pod: the reconciles it
    // ran, the Lease it holds, the status it wrote; /healthz and /readyz answer (the
    // rollout above already waited for the readiness probe).
    let ip = pods_field(&cluster, "px-operator", "{.items[0].status.podIP}").await;
    let metrics = get(ip.trim(), "/metrics").await;
    assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
    for line in [
        "# TYPE px_operator_reconciles counter",
        "px_operator_leader 1",
        "# TYPE px_operator_reconcile_duration_seconds histogram",
    ] {
        assert!(metrics.contains(line), "no {line:?} in {metrics}");
    }
    let vizier_reconciles = metrics
        .lines()
        .find_map(|l| l.strip_prefix("px_operator_reconciles_total{kind=\"Vizier\"} "))
        .and_then(|n| n.trim().parse::<f64>().ok());
    assert!(vizier_reconciles.is_some_and(|n| n >= 1.0), "{metrics}");
    assert!(
        metrics.contains("px_operator_status_writes_total{kind=\"Vizier\"}"),
        "{metrics}"
    );
    assert!(get(ip.trim(), "/healthz").await.starts_with("HTTP/1.1 200"));
    assert!(get(ip.trim(), "/readyz").await.starts_with("HTTP/1.1 200"));
    assert_operator_never_refused(&cluster);

    // helm uninstall: the Vizier (the operator still running) and then the rest; the
    // garbage collector takes what the Vizier owned.
    ok(
        &cluster,
        &[
            "delete",
            "vz",
            "pixie",
            "-n",
            RELEASE_NAMESPACE,
            "--timeout=60s",
        ],
    )
    .await;
    let out = cluster
        .kubectl_stdin(
            &["delete", "-f", "-", "--ignore-not-found"],
            Some(&manifests),
        )
        .await
        .unwrap();
    assert!(out.success(), "{out:?}");
    let left = eventually(GC_SETTLE, || async {
        let out = ok(
            &cluster,
            &[
                "get",
                "daemonsets,deployments,pods,services,secrets",
                "-n",
                RELEASE_NAMESPACE,
                "-o",
                "name",
            ],
        )
        .await;
        out.trim().is_empty().then_some(())
    })
    .await;
    assert!(
        left.is_some(),
        "left after uninstalling: {}",
        ok(&cluster, &["get", "all", "-n", RELEASE_NAMESPACE]).await
    );
    cluster.stop().await;
}

/// `GET path` on the operator's metrics port: the whole response, head and body.
async fn get(ip: &str, path: &str) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect((ip, 8080)).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {ip}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut out = String::new();
    stream.read_to_string(&mut out).await.unwrap();
    out
}

/// A JSONPath over the release namespace's pods named `name` (`app.kubernetes.io/name`).
async fn pods_field(cluster: &Cluster, name: &str, path: &str) -> String {
    let selector = format!("app.kubernetes.io/name={name}");
    let path = format!("jsonpath={path}");
    ok(
        cluster,
        &[
            "get",
            "pods",
            "-n",
            RELEASE_NAMESPACE,
            "-l",
            &selector,
            "-o",
            &path,
        ],
    )
    .await
}
