//! Tracepoints and DataRetentions on the real control plane, with `standin-pem` (an
//! in-memory `ProbeService`, `px_e2e::standin_pem`) as the PEM image on two nodes, each
//! PEM on its own node's loopback address: a Tracepoint shows READY 2/2 Running in
//! `kubectl get tp`; a PEM that fails on one node makes it PartiallyRunning with that
//! node's reason in the status and in `kubectl describe`; deleting it removes the probe
//! from both PEMs; a host target outside the Vizier's namespace and a taken table are
//! refused; a DataRetention reaches the PEMs without restarting them; a restarted PEM
//! and a killed operator both converge; deleting the Vizier leaves nothing.

use std::collections::HashMap;
use std::path::PathBuf;

use px_api::auth::Bearer;
use px_api::pem::probe_service_client::ProbeServiceClient;
use px_api::pem::{
    GetRetentionRequest, ListProbesRequest, ProbePhase, ProbeState, RetentionReport,
};
use px_e2e::{Cluster, ClusterConfig, NodeSpec, eventually};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Endpoint;

use super::vizier::{
    GC_SETTLE, SETTLE, Scratch, apply_crds, assert_operator_never_refused, ok, stand_in,
    start_operator, wait_healthy,
};

/// The Vizier of these tests: default registry (`px`), the stand-in's failure settings
/// passed through `customPEMFlags` (they become PEM environment variables).
fn vizier(fail_on: Option<&str>) -> String {
    let flags = match fail_on {
        Some(node) => format!(
            "\n  dataCollectorParams:\n    customPEMFlags:\n      PX_STANDIN_FAIL: \"SymbolNotFound: symbol main.handler not found in /app/server\"\n      PX_STANDIN_FAIL_NODES: {node}"
        ),
        None => String::new(),
    };
    format!(
        "apiVersion: px.dev/v1alpha1\nkind: Vizier\nmetadata:\n  name: pixie\n  namespace: pl\nspec:\n  version: 0.14.15\n  pemMemoryLimit: 1Gi{flags}\n"
    )
}

/// Pods labelled app=web on every node of namespace `shop`: the pod target.
pub(super) const WEB: &str = r#"
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: web, namespace: shop}
spec:
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - {name: server, image: px/app}
"#;

pub(super) fn uprobe(name: &str, ns: &str, table: &str) -> String {
    format!(
        r#"
apiVersion: px.dev/v1alpha1
kind: Tracepoint
metadata: {{name: {name}, namespace: {ns}}}
spec:
  probe:
    uprobe: {{binary: /app/server, symbol: main.handler}}
  target:
    pods:
      selector:
        matchLabels: {{app: web}}
  columns:
  - {{name: pid, source: Pid}}
  - {{name: latency_ns, source: Latency}}
  table: {table}
"#
    )
}

fn host(name: &str, ns: &str, table: &str) -> String {
    format!(
        r#"
apiVersion: px.dev/v1alpha1
kind: Tracepoint
metadata: {{name: {name}, namespace: {ns}}}
spec:
  probe: {{tracepoint: syscalls/sys_enter_openat}}
  target:
    host: {{}}
  columns:
  - {{name: filename, source: Field, field: filename, type: string}}
  table: {table}
"#
    )
}

const RETENTION: &str = r#"
apiVersion: px.dev/v1alpha1
kind: DataRetention
metadata: {name: retention, namespace: pl}
spec:
  tables:
  - {table: http_events, memoryPercent: 50, maxAge: 24h}
  - {table: conn_stats, maxBytes: 128Mi}
"#;

/// A binary of this workspace (cargo does not build other packages' binaries for this
/// package's tests), built into the target directory these tests run from.
pub(super) async fn workspace_binary(bin: &str) -> PathBuf {
    // <target>/debug/deps/operator-<hash> -> <target>/debug
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().unwrap().parent().unwrap().to_path_buf();
    let target = profile_dir.parent().unwrap();
    let mut cargo = tokio::process::Command::new(env!("CARGO"));
    // `--workspace`, not `-p`: the workspace's features, so the binary reuses what
    // `cargo test --workspace` built instead of building DataFusion again with others.
    cargo
        .args(["build", "--workspace", "--bin", bin, "--target-dir"])
        .arg(target)
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    if profile_dir.ends_with("release") {
        cargo.arg("--release");
    }
    let status = cargo.status().await.unwrap();
    assert!(status.success(), "building {bin}: {status}");
    profile_dir.join(bin)
}

/// `standin-pem`, an in-memory ProbeService (`px_e2e::standin_pem`).
async fn standin_pem() -> PathBuf {
    static BUILT: tokio::sync::OnceCell<PathBuf> = tokio::sync::OnceCell::const_new();
    BUILT
        .get_or_init(|| workspace_binary("standin-pem"))
        .await
        .clone()
}

pub(super) async fn start(scratch: &Scratch, fail_on: Option<&str>) -> Cluster {
    start_with(scratch, &vizier(fail_on)).await
}

/// Like [`start`], with the Vizier `vizier` (YAML).
pub(super) async fn start_with(scratch: &Scratch, vizier: &str) -> Cluster {
    crate::init_logs();
    let pem = standin_pem().await;
    let sleeper = stand_in(&scratch.0);
    let images = HashMap::from([
        ("px/vizier-pem".into(), pem),
        ("px/kelvin".into(), sleeper.clone()),
        ("px/app".into(), sleeper),
    ]);
    two_nodes_with_vizier(images, vizier).await
}

/// Two nodes running `images`, the CRDs, namespaces `pl` and `shop`, and `vizier`.
pub(super) async fn two_nodes_with_vizier(
    images: HashMap<String, PathBuf>,
    vizier: &str,
) -> Cluster {
    let cluster = Cluster::start(ClusterConfig {
        nodes: vec![NodeSpec::named("node-a"), NodeSpec::named("node-b")],
        images,
    })
    .await
    .unwrap();
    apply_crds(&cluster).await;
    for ns in ["pl", "shop"] {
        ok(&cluster, &["create", "namespace", ns]).await;
    }
    apply(&cluster, vizier).await;
    cluster
}

pub(super) async fn apply(cluster: &Cluster, yaml: &str) {
    let out = cluster
        .kubectl_stdin(&["apply", "-f", "-"], Some(yaml))
        .await
        .unwrap();
    assert!(out.success(), "{out:?}");
}

/// A field of the PEM pod (of Vizier `pl/pixie`) on `node`, by JSONPath; empty if none.
async fn pem_pod_field(cluster: &Cluster, node: &str, path: &str) -> String {
    let selector = format!("spec.nodeName={node}");
    jsonpath(
        cluster,
        &[
            "pods",
            "-n",
            "pl",
            "-l",
            "app.kubernetes.io/name=vizier-pem,app.kubernetes.io/instance=pixie",
            "--field-selector",
            &selector,
        ],
        path,
    )
    .await
    .trim()
    .to_owned()
}

/// The name of the PEM pod on `node`.
pub(super) async fn pem_pod_name(cluster: &Cluster, node: &str) -> String {
    pem_pod_field(cluster, node, "{.items[0].metadata.name}").await
}

/// The address of the PEM pod on `node`: each pod has its own.
pub(super) async fn pem_ip(cluster: &Cluster, node: &str) -> Option<String> {
    let ip = pem_pod_field(cluster, node, "{.items[0].status.podIP}").await;
    (!ip.is_empty()).then_some(ip)
}

pub(super) async fn pem_client(
    cluster: &Cluster,
    node: &str,
) -> Option<ProbeServiceClient<InterceptedService<tonic::transport::Channel, Bearer>>> {
    let ip = pem_ip(cluster, node).await?;
    let channel = pem_channel(cluster, &ip, true).await?;
    // The PEMs' service token, as Kelvin and the operator present it.
    let token = pem_token(cluster).await;
    let bearer = Bearer::new(token.map(Into::into).as_ref()).ok()?;
    Some(ProbeServiceClient::with_interceptor(channel, bearer))
}

/// A connection to the PEM at `ip` as Kelvin makes one: mutual TLS, trusting Vizier
/// `pixie`'s CA, presenting Kelvin's certificate (none when `!with_certificate`), all
/// from the `px-tls` Secret.
pub(super) async fn pem_channel(
    cluster: &Cluster,
    ip: &str,
    with_certificate: bool,
) -> Option<tonic::transport::Channel> {
    let identity = with_certificate.then_some("kelvin");
    tls_channel(
        cluster,
        &format!("https://{ip}:50400"),
        "pixie-pem.pl.svc",
        identity,
    )
    .await
}

/// A connection to `url` over Vizier `pixie`'s TLS: its CA trusted for `server_name`,
/// and the certificate of `identity` (`kelvin`) presented if given.
pub(super) async fn tls_channel(
    cluster: &Cluster,
    url: &str,
    server_name: &str,
    identity: Option<&str>,
) -> Option<tonic::transport::Channel> {
    use tonic::transport::{Certificate, ClientTlsConfig, Identity};
    let part = |p: String| async move {
        // jsonpath: the dots inside a data key are escaped.
        let key = format!("pixie.{p}").replace('.', "\\.");
        secret_key(cluster, "px-tls", &key).await
    };
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(part("ca.crt".into()).await?))
        .domain_name(server_name);
    if let Some(who) = identity {
        tls = tls.identity(Identity::from_pem(
            part(format!("{who}.crt")).await?,
            part(format!("{who}.key")).await?,
        ));
    }
    Endpoint::from_shared(url.to_owned())
        .ok()?
        .tls_config(tls)
        .ok()?
        .connect()
        .await
        .ok()
}

/// The PEMs' service token of namespace `pl`, if its Secret exists.
pub(super) async fn pem_token(cluster: &Cluster) -> Option<String> {
    secret_key(cluster, "px-pem-token", "pixie").await
}

/// The `key` of Secret `name` in namespace `pl`, decoded, if it exists.
pub(super) async fn secret_value(cluster: &Cluster, name: &str) -> Option<String> {
    secret_key(cluster, name, "key").await
}

/// Data key `key` of Secret `pl/name`, decoded.
pub(super) async fn secret_key(cluster: &Cluster, name: &str, key: &str) -> Option<String> {
    let path = format!("jsonpath={{.data.{key}}}");
    let out = cluster
        .kubectl(&["get", "secret", name, "-n", "pl", "-o", &path])
        .await
        .ok()?;
    let decoded = std::process::Command::new("base64")
        .arg("-d")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .ok()
        .and_then(|mut child| {
            use std::io::Write as _;
            child
                .stdin
                .take()?
                .write_all(out.stdout.trim().as_bytes())
                .ok()?;
            child.wait_with_output().ok()
        })?;
    let value = String::from_utf8(decoded.stdout).ok()?;
    (!value.is_empty()).then_some(value)
}

/// What the stand-in PEM of `node` says about probe `id`, if it answers.
pub(super) async fn probe_on(
    cluster: &Cluster,
    node: &str,
    id: &str,
) -> Option<Option<ProbeState>> {
    let mut c = pem_client(cluster, node).await?;
    let probes = c.list_probes(ListProbesRequest {}).await.ok()?.into_inner();
    Some(probes.probes.into_iter().find(|p| p.id == id))
}

pub(super) async fn retention_on(cluster: &Cluster, node: &str) -> Option<RetentionReport> {
    let mut c = pem_client(cluster, node).await?;
    Some(
        c.get_retention(GetRetentionRequest {})
            .await
            .ok()?
            .into_inner(),
    )
}

/// Polls until the stand-in of every node reports probe `id` in `phase`.
async fn wait_probe_phase(cluster: &Cluster, id: &str, phase: ProbePhase) {
    for node in ["node-a", "node-b"] {
        let seen = eventually(SETTLE, || async {
            probe_on(cluster, node, id)
                .await
                .flatten()
                .filter(|p| p.phase == i32::from(phase))
        })
        .await;
        assert!(
            seen.is_some(),
            "{node} never reported {id} as {phase:?}: {:?}",
            probe_on(cluster, node, id).await
        );
    }
}

/// `kubectl get tp NAME` columns: NAME TABLE READY PHASE AGE.
pub(super) async fn tp_row(cluster: &Cluster, ns: &str, name: &str) -> Vec<String> {
    let out = cluster
        .kubectl(&["get", "tp", name, "-n", ns, "--no-headers"])
        .await
        .unwrap();
    out.stdout.split_whitespace().map(String::from).collect()
}

pub(super) async fn wait_tp(cluster: &Cluster, ns: &str, name: &str, ready: &str, phase: &str) {
    let row = eventually(SETTLE, || async {
        let row = tp_row(cluster, ns, name).await;
        (row.get(2).map(String::as_str) == Some(ready)
            && row.get(3).map(String::as_str) == Some(phase))
        .then_some(row)
    })
    .await;
    if row.is_none() {
        panic!(
            "{ns}/{name} never {ready} {phase}:\n{}",
            ok(cluster, &["get", "tp", name, "-n", ns, "-o", "yaml"]).await
        );
    }
}

pub(super) async fn jsonpath(cluster: &Cluster, what: &[&str], path: &str) -> String {
    let mut args = vec!["get"];
    args.extend_from_slice(what);
    let expr = format!("jsonpath={path}");
    args.extend_from_slice(&["-o", &expr]);
    ok(cluster, &args).await
}

/// `reason message` of a Tracepoint's Stalled condition.
pub(super) async fn stalled(cluster: &Cluster, ns: &str, name: &str) -> String {
    jsonpath(
        cluster,
        &["tp", name, "-n", ns],
        "{.status.conditions[?(@.type==\"Stalled\")].reason} {.status.conditions[?(@.type==\"Stalled\")].message}",
    )
    .await
}

pub(super) async fn uid(cluster: &Cluster, ns: &str, name: &str) -> String {
    jsonpath(cluster, &["tp", name, "-n", ns], "{.metadata.uid}").await
}

/// The DataRetention `pl/retention`'s tables as `table=budgetBytes/nodes ...`, once it
/// contains `want`.
pub(super) async fn retention_listing(cluster: &Cluster, want: &str) -> Option<String> {
    eventually(SETTLE, || async {
        let out = jsonpath(
            cluster,
            &["pxdr", "retention", "-n", "pl"],
            "{range .status.tables[*]}{.table}={.budgetBytes}/{.nodes} {end}",
        )
        .await;
        out.contains(want).then_some(out)
    })
    .await
}

/// `uid containerID restarts` of each PEM pod, sorted: equal before and after means no
/// PEM restarted.
async fn pem_processes(cluster: &Cluster) -> String {
    jsonpath(
        cluster,
        &["pods", "-n", "pl", "-l", "app.kubernetes.io/name=vizier-pem"],
        "{range .items[*]}{.metadata.uid} {.status.containerStatuses[0].containerID} {.status.containerStatuses[0].restartCount}{\"\\n\"}{end}",
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tracepoints_run_on_the_pems_they_select_and_go_away_everywhere() {
    let scratch = Scratch::new("probes");
    let cluster = start(&scratch, None).await;
    let operator = start_operator(&cluster, "operator-0").await;
    wait_healthy(&cluster).await;
    apply(&cluster, WEB).await;

    // READY 2/2 Running, and each stand-in PEM runs it with the pods of its node.
    apply(&cluster, &uprobe("calls", "shop", "calls")).await;
    wait_tp(&cluster, "shop", "calls", "2/2", "Running").await;
    let row = tp_row(&cluster, "shop", "calls").await;
    assert_eq!(row[..4], ["calls", "calls", "2/2", "Running"], "{row:?}");
    let id = uid(&cluster, "shop", "calls").await;
    wait_probe_phase(&cluster, &id, ProbePhase::Running).await;
    let probe = probe_on(&cluster, "node-a", &id).await.flatten().unwrap();
    assert_eq!(
        (probe.name.as_str(), probe.table.as_str()),
        ("shop/calls", "calls")
    );
    let describe = ok(&cluster, &["describe", "tp", "calls", "-n", "shop"]).await;
    assert!(describe.contains("ProbeLoaded"), "{describe}");
    assert!(describe.contains("running on 2/2 nodes"), "{describe}");

    // A reconcile with nothing new writes nothing: after an annotation (which triggers
    // one), the resourceVersion stays where the annotation left it.
    let version = || {
        jsonpath(
            &cluster,
            &["tp", "calls", "-n", "shop"],
            "{.metadata.resourceVersion}",
        )
    };
    let before = version().await;
    ok(
        &cluster,
        &["annotate", "tp", "calls", "-n", "shop", "touch=1"],
    )
    .await;
    let touched = version().await;
    assert_ne!(touched, before);
    let moved = eventually(std::time::Duration::from_secs(3), || async {
        let v = version().await;
        (v != touched).then_some(v)
    })
    .await;
    assert_eq!(
        moved, None,
        "a reconcile with nothing new wrote the Tracepoint"
    );

    // A host target outside the Vizier's namespace is refused, with the reason.
    apply(&cluster, &host("opens", "shop", "opens")).await;
    wait_tp(&cluster, "shop", "opens", "0/0", "Failed").await;
    let refused = stalled(&cluster, "shop", "opens").await;
    assert!(refused.starts_with("HostTargetRefused "), "{refused}");
    assert!(
        refused.contains("spec.target.host") && refused.contains("namespace of a Vizier"),
        "{refused}"
    );

    // The same in the Vizier's namespace runs on both nodes.
    apply(&cluster, &host("opens", "pl", "opens_pl")).await;
    wait_tp(&cluster, "pl", "opens", "2/2", "Running").await;

    // A table another Tracepoint owns is refused, naming the owner.
    apply(&cluster, &uprobe("copy", "shop", "calls")).await;
    wait_tp(&cluster, "shop", "copy", "0/0", "Failed").await;
    let reason = stalled(&cluster, "shop", "copy").await;
    assert!(reason.starts_with("TableConflict "), "{reason}");
    assert!(reason.contains("Tracepoint shop/calls"), "{reason}");

    // A DataRetention reaches both PEMs without restarting them.
    let processes = pem_processes(&cluster).await;
    apply(&cluster, RETENTION).await;
    for node in ["node-a", "node-b"] {
        let report = eventually(SETTLE, || async {
            let r = retention_on(&cluster, node).await?;
            let http = r.tables.iter().find(|t| t.table == "http_events")?;
            (http.budget_bytes == 512 << 20).then_some(r)
        })
        .await
        .unwrap_or_else(|| panic!("{node} never got the budgets"));
        let conn = report
            .tables
            .iter()
            .find(|t| t.table == "conn_stats")
            .unwrap();
        assert_eq!(conn.budget_bytes, 128 << 20);
    }
    let listed = retention_listing(&cluster, "http_events=536870912/2").await;
    let listed = listed.expect("the status lists the tables");
    assert!(listed.contains("conn_stats=134217728/2"), "{listed}");
    let ready = jsonpath(
        &cluster,
        &["pxdr", "retention", "-n", "pl"],
        "{.status.conditions[?(@.type==\"Ready\")].status}",
    )
    .await;
    assert_eq!(ready, "True");
    assert_eq!(pem_processes(&cluster).await, processes, "a PEM restarted");

    // Deleted: the default budgets come back.
    ok(
        &cluster,
        &["delete", "pxdr", "retention", "-n", "pl", "--timeout=60s"],
    )
    .await;
    let default = retention_on(&cluster, "node-a").await.unwrap();
    let http = default
        .tables
        .iter()
        .find(|t| t.table == "http_events")
        .unwrap();
    assert_ne!(http.budget_bytes, 512 << 20, "{default:?}");

    // Deleting the Tracepoint removes the probe from both PEMs before it goes.
    ok(
        &cluster,
        &["delete", "tp", "calls", "-n", "shop", "--timeout=60s"],
    )
    .await;
    for node in ["node-a", "node-b"] {
        let probe = probe_on(&cluster, node, &id).await.flatten().unwrap();
        assert_eq!(
            probe.phase,
            i32::from(ProbePhase::Terminated),
            "{node}: {probe:?}"
        );
    }
    let gone = cluster
        .kubectl(&["get", "tp", "calls", "-n", "shop"])
        .await
        .unwrap();
    assert!(gone.stderr.contains("NotFound"), "{gone:?}");

    // The loser of the table conflict takes the table over once the owner is gone.
    wait_tp(&cluster, "shop", "copy", "2/2", "Running").await;

    // The rest go, then the Vizier: nothing is left behind.
    for (ns, name) in [("shop", "copy"), ("shop", "opens"), ("pl", "opens")] {
        ok(&cluster, &["delete", "tp", name, "-n", ns, "--timeout=60s"]).await;
    }
    ok(
        &cluster,
        &["delete", "vz", "pixie", "-n", "pl", "--timeout=60s"],
    )
    .await;
    let left = eventually(GC_SETTLE, || async {
        let out = ok(
            &cluster,
            &["get", "daemonsets,deployments,pods,services,serviceaccounts,roles,rolebindings,tracepoints,dataretentions", "-n", "pl", "-o", "name"],
        )
        .await;
        // The `default` ServiceAccount is the controller-manager's, in every namespace.
        out.lines()
            .all(|l| l == "serviceaccount/default")
            .then_some(())
    })
    .await;
    assert!(
        left.is_some(),
        "left in pl: {}",
        ok(&cluster, &["get", "all", "-n", "pl"]).await
    );
    let tps = ok(&cluster, &["get", "tp", "-A", "-o", "name"]).await;
    assert!(tps.trim().is_empty(), "{tps}");
    operator.abort();
    assert_operator_never_refused(&cluster);
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pem_failing_on_one_node_makes_it_partially_running_and_everything_heals() {
    let scratch = Scratch::new("probes-fail");
    let cluster = start(&scratch, Some("node-b")).await;
    let operator = start_operator(&cluster, "operator-0").await;
    wait_healthy(&cluster).await;

    // Killed right after the Tracepoint is applied, mid-reconcile; a new operator with
    // the same identity takes the Lease back and converges.
    apply(&cluster, &host("opens", "pl", "opens")).await;
    eventually(SETTLE, || async {
        let f = jsonpath(
            &cluster,
            &["tp", "opens", "-n", "pl"],
            "{.metadata.finalizers}",
        )
        .await;
        f.contains("px.dev/probes").then_some(())
    })
    .await
    .expect("the finalizer is added");
    operator.abort();
    let _ = operator.await;
    let operator = start_operator(&cluster, "operator-0").await;

    wait_tp(&cluster, "pl", "opens", "1/2", "PartiallyRunning").await;
    let failure = jsonpath(
        &cluster,
        &["tp", "opens", "-n", "pl"],
        "{.status.failures[0].node} {.status.failures[0].reason}: {.status.failures[0].message}",
    )
    .await;
    assert_eq!(
        failure,
        "node-b SymbolNotFound: symbol main.handler not found in /app/server"
    );
    let describe = eventually(SETTLE, || async {
        let d = ok(&cluster, &["describe", "tp", "opens", "-n", "pl"]).await;
        d.contains("ProbeFailed").then_some(d)
    })
    .await
    .expect("a ProbeFailed event");
    assert!(
        describe.contains("node node-b: SymbolNotFound"),
        "{describe}"
    );

    // A PEM that restarts (its pod replaced) gets its probe back.
    let id = uid(&cluster, "pl", "opens").await;
    let pod_a = pem_pod_name(&cluster, "node-a").await;
    ok(&cluster, &["delete", "pod", &pod_a, "-n", "pl"]).await;
    let back = eventually(SETTLE, || async {
        let p = probe_on(&cluster, "node-a", &id).await.flatten()?;
        (p.phase == i32::from(ProbePhase::Running)).then_some(())
    })
    .await;
    assert!(back.is_some(), "the restarted PEM never got the probe back");
    wait_tp(&cluster, "pl", "opens", "1/2", "PartiallyRunning").await;

    ok(
        &cluster,
        &["delete", "tp", "opens", "-n", "pl", "--timeout=60s"],
    )
    .await;
    wait_probe_phase(&cluster, &id, ProbePhase::Terminated).await;

    // A TTL that runs out: removed from the PEMs, Failed with reason Expired.
    let brief =
        host("brief", "pl", "brief").replace("  table: brief\n", "  table: brief\n  ttl: 4s\n");
    assert!(brief.contains("ttl: 4s"), "{brief}");
    apply(&cluster, &brief).await;
    let id = uid(&cluster, "pl", "brief").await;
    wait_tp(&cluster, "pl", "brief", "0/0", "Failed").await;
    let why = stalled(&cluster, "pl", "brief").await;
    assert!(why.starts_with("Expired spec.ttl (4s) ran out"), "{why}");
    wait_probe_phase(&cluster, &id, ProbePhase::Terminated).await;
    let expires = jsonpath(
        &cluster,
        &["tp", "brief", "-n", "pl"],
        "{.status.expiresAt}",
    )
    .await;
    assert!(!expires.is_empty());
    ok(
        &cluster,
        &["delete", "tp", "brief", "-n", "pl", "--timeout=60s"],
    )
    .await;
    operator.abort();
    assert_operator_never_refused(&cluster);
    cluster.stop().await;
}
