//! The operator with the real `vizier-pem` on two simulated nodes (each PEM scoped to
//! its node's cgroup, as on a real node it traces its host): `kubectl apply` of a
//! Tracepoint on pods loads a uprobe into the pods' processes on both nodes, the PEMs
//! record their calls, `kubectl get tp` shows READY 2/2 Running, and deleting the
//! Tracepoint detaches the probe and drops its table on every node. A DataRetention's
//! budgets and age limits reach the running PEMs, and its status shows what they hold.
//!
//! Needs root (the PEM loads eBPF programs); under `CI=true` it fails rather than skips.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use px_api::auth::Bearer;
use px_api::pem::probe_service_client::ProbeServiceClient;
use px_api::pem::table_service_client::TableServiceClient;
use px_api::pem::{ListProbesRequest, ListTablesRequest, ProbePhase};
use px_e2e::{Cluster, eventually};
use tonic::transport::Endpoint;

use super::probes::{
    apply, jsonpath, pem_channel, pem_ip, pem_pod_name, pem_token, probe_on, retention_listing,
    retention_on, secret_key, secret_value, tls_channel, tp_row, two_nodes_with_vizier, uid,
    wait_tp, workspace_binary,
};
use super::vizier::{
    SETTLE, Scratch, assert_operator_never_refused, ok, operator_client, operator_config,
    start_operator, wait_healthy,
};

pub(super) const VIZIER: &str = "apiVersion: px.dev/v1alpha1\nkind: Vizier\nmetadata:\n  name: pixie\n  namespace: pl\nspec:\n  version: 0.14.15\n  pemMemoryLimit: 512Mi\n";

/// A C program with known functions (`pem/tests/probe_target`), and an app image that
/// calls them in a loop.
fn adder(dir: &Path) -> (PathBuf, PathBuf) {
    let src =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../pem/tests/probe_target/probe_target.c");
    let program = dir.join("probe_target");
    let built = std::process::Command::new("clang")
        .args(["-O2", "-o"])
        .arg(&program)
        .arg(&src)
        .status()
        .unwrap();
    assert!(built.success(), "clang failed on {}", src.display());
    let app = dir.join("adder-app");
    std::fs::write(
        &app,
        format!(
            "#!/bin/sh\nwhile true; do {} calls 2 pod; sleep 0.2; done\n",
            program.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&app, std::fs::Permissions::from_mode(0o755)).unwrap();
    (program, app)
}

/// Tracepoint `name` on `px_add` in the pods labelled `app`, into `table`.
fn tracepoint(program: &Path, name: &str, app: &str, table: &str) -> String {
    format!(
        r#"
apiVersion: px.dev/v1alpha1
kind: Tracepoint
metadata: {{name: {name}, namespace: shop}}
spec:
  probe:
    uprobe: {{binary: {}, symbol: px_add}}
  target:
    pods:
      selector:
        matchLabels: {{app: {app}}}
  columns:
  - {{name: a, source: Arg, index: 0, type: int64}}
  - {{name: label, source: Arg, index: 2, type: string}}
  - {{name: pid, source: Pid}}
  table: {table}
"#,
        program.display()
    )
}

const RETENTION: &str = r#"
apiVersion: px.dev/v1alpha1
kind: DataRetention
metadata: {name: retention, namespace: pl}
spec:
  tables:
  - {table: conn_stats, maxBytes: 16Mi}
  - {table: http_events, maxAge: 1h}
"#;

/// A pod on node-a only, and a Tracepoint on it: its table exists on node-a only.
fn lonely(program: &Path) -> String {
    let pod = "
apiVersion: v1
kind: Pod
metadata: {name: lonely, namespace: shop, labels: {app: lonely}}
spec:
  nodeName: node-a
  containers:
  - {name: app, image: px/adder}
---";
    format!(
        "{pod}{}",
        tracepoint(program, "lonely", "lonely", "lonely_adds")
    )
}

const ADDER: &str = r#"
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: adder, namespace: shop}
spec:
  selector:
    matchLabels: {app: adder}
  template:
    metadata:
      labels: {app: adder}
    spec:
      containers:
      - {name: app, image: px/adder}
"#;

pub(super) fn privileged() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "CI=true: the real PEM test must run as root"
    );
    eprintln!("skipping: the real PEM loads eBPF programs and needs root");
    false
}

/// The tables the PEM of `node` holds.
async fn tables_on(cluster: &Cluster, node: &str) -> Option<Vec<String>> {
    let ip = pem_ip(cluster, node).await?;
    let channel = pem_channel(cluster, &ip, true).await?;
    let bearer = Bearer::new(pem_token(cluster).await.map(Into::into).as_ref()).ok()?;
    let listed = TableServiceClient::with_interceptor(channel, bearer)
        .list_tables(ListTablesRequest {})
        .await
        .ok()?;
    Some(
        listed
            .into_inner()
            .tables
            .into_iter()
            .map(|t| t.name)
            .collect(),
    )
}

/// The Kelvin pod's address, once it has one.
pub(super) async fn kelvin_addr(cluster: &Cluster) -> Option<String> {
    let ip = jsonpath(
        cluster,
        &["pods", "-n", "pl", "-l", "app.kubernetes.io/name=kelvin"],
        "{.items[0].status.podIP}",
    )
    .await;
    (!ip.trim().is_empty()).then(|| format!("https://{}:50300", ip.trim()))
}

/// A connection to Kelvin's query API as a client in the cluster makes one: TLS,
/// trusting the Vizier's CA, for Kelvin's Service name.
pub(super) async fn kelvin_channel(cluster: &Cluster) -> Option<tonic::transport::Channel> {
    let url = kelvin_addr(cluster).await?;
    tls_channel(cluster, &url, "pixie-kelvin.pl.svc", None).await
}

/// Kelvin's pod uid, its container's restart count and its Deployment's generation.
async fn kelvin_identity(cluster: &Cluster) -> String {
    let pod = jsonpath(
        cluster,
        &["pods", "-n", "pl", "-l", "app.kubernetes.io/name=kelvin"],
        "{.items[*].metadata.uid} {.items[*].status.containerStatuses[0].restartCount}",
    )
    .await;
    let generation = jsonpath(
        cluster,
        &["deployment", "pixie-kelvin", "-n", "pl"],
        "{.metadata.generation}",
    )
    .await;
    format!("{pod} generation {generation}")
}

/// A query's stream: the status code it ends with, or the rows it returned in all.
async fn execute(
    cluster: &Cluster,
    script: &str,
    key: Option<&str>,
) -> Option<Result<i64, tonic::Code>> {
    execute_on(kelvin_channel(cluster).await?, script, key).await
}

/// Runs `script` on Kelvin over `channel`: the rows of its one table, or the error code.
async fn execute_on(
    channel: tonic::transport::Channel,
    script: &str,
    key: Option<&str>,
) -> Option<Result<i64, tonic::Code>> {
    use px_api::vizierpb::execute_script_response::Result as Part;
    use px_api::vizierpb::vizier_service_client::VizierServiceClient;
    let mut request = tonic::Request::new(px_api::vizierpb::ExecuteScriptRequest {
        query_str: script.to_owned(),
        ..Default::default()
    });
    if let Some(key) = key {
        request
            .metadata_mut()
            .insert("pixie-api-key", key.parse().ok()?);
    }
    let mut stream = match VizierServiceClient::new(channel)
        .execute_script(request)
        .await
    {
        Ok(r) => r.into_inner(),
        Err(status) => return Some(Err(status.code())),
    };
    let mut rows = 0;
    loop {
        match stream.message().await {
            Ok(Some(m)) => {
                if m.status.as_ref().is_some_and(|s| s.code != 0) {
                    return None;
                }
                if let Some(Part::Data(d)) = m.result {
                    rows += d.batch.map_or(0, |b| b.num_rows);
                }
            }
            Ok(None) => return Some(Ok(rows)),
            Err(status) => return Some(Err(status.code())),
        }
    }
}

async fn query_rows(cluster: &Cluster, script: &str) -> Option<i64> {
    let key = secret_value(cluster, "pixie-api-key").await?;
    execute(cluster, script, Some(&key)).await?.ok()
}

async fn query_status(cluster: &Cluster, key: Option<&str>) -> Option<tonic::Code> {
    execute(cluster, "import px\npx.display(px.GetTables(), 't')\n", key)
        .await?
        .err()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_pem_loads_a_pod_tracepoint_records_calls_and_removes_it() {
    if !privileged() {
        return;
    }
    let scratch = Scratch::new("real-pem");
    let (program, app) = adder(&scratch.0);
    let pem = workspace_binary("vizier-pem").await;
    let kelvin = workspace_binary("kelvin").await;
    let images = HashMap::from([
        ("px/vizier-pem".into(), pem),
        ("px/kelvin".into(), kelvin),
        ("px/adder".into(), app),
    ]);
    let cluster = two_nodes_with_vizier(images, VIZIER).await;
    let operator = start_operator(&cluster, "operator-0").await;
    wait_healthy(&cluster).await;
    apply(&cluster, ADDER).await;

    apply(&cluster, &tracepoint(&program, "adds", "adder", "adds")).await;
    wait_tp(&cluster, "shop", "adds", "2/2", "Running").await;
    let row = tp_row(&cluster, "shop", "adds").await;
    assert_eq!(row[..4], ["adds", "adds", "2/2", "Running"], "{row:?}");

    // The PEMs answer only mutual TLS with a certificate of the Vizier's CA (Kelvin's,
    // the operator's), and then only callers with the Vizier's token.
    let ip = pem_ip(&cluster, "node-a").await.unwrap();
    let plaintext = Endpoint::from_shared(format!("http://{ip}:50400"))
        .unwrap()
        .connect()
        .await;
    let refused_plaintext = match plaintext {
        Err(_) => true,
        Ok(channel) => ProbeServiceClient::new(channel)
            .list_probes(ListProbesRequest {})
            .await
            .is_err(),
    };
    assert!(refused_plaintext, "a PEM answered in the clear");
    // With the token but without a certificate: refused by TLS (with TLS 1.3 the client
    // learns it at its first call, not at the handshake).
    let bearer = Bearer::new(pem_token(&cluster).await.map(Into::into).as_ref()).unwrap();
    let refused_without_certificate = match pem_channel(&cluster, &ip, false).await {
        None => true,
        Some(channel) => ProbeServiceClient::with_interceptor(channel, bearer)
            .list_probes(ListProbesRequest {})
            .await
            .is_err(),
    };
    assert!(
        refused_without_certificate,
        "a PEM accepted a client without a certificate"
    );
    let stranger = pem_channel(&cluster, &ip, true).await.unwrap();
    let refused = ProbeServiceClient::new(stranger)
        .list_probes(ListProbesRequest {})
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");

    // Each node's PEM records the calls of its own pod's processes.
    let id = uid(&cluster, "shop", "adds").await;
    for node in ["node-a", "node-b"] {
        let recorded = eventually(SETTLE, || async {
            probe_on(&cluster, node, &id)
                .await
                .flatten()
                .filter(|p| p.events >= 4)
        })
        .await;
        let state = recorded.unwrap_or_else(|| panic!("{node} recorded no calls"));
        assert_eq!(state.phase, i32::from(ProbePhase::Running));
        assert!(state.attachments >= 1, "{state:?}");
        let tables = tables_on(&cluster, node).await.unwrap();
        assert!(tables.contains(&"adds".to_owned()), "{node}: {tables:?}");
    }

    // A user queries the probe's table through Pixie's API on the real Kelvin, which
    // fans out to both PEMs with their token; the API key comes from its Secret.
    let rows = eventually(SETTLE, || async {
        let n = query_rows(
            &cluster,
            "import px\npx.display(px.DataFrame(table='adds'), 'adds')\n",
        )
        .await?;
        (n >= 8).then_some(n)
    })
    .await;
    assert!(
        rows.is_some(),
        "Kelvin never returned the rows of both nodes' calls"
    );
    let unauthorized = query_status(&cluster, None).await;
    assert_eq!(
        unauthorized,
        Some(tonic::Code::Unauthenticated),
        "a query without the API key"
    );

    // A DataRetention reaches the running PEMs: the budget and the age limit are in
    // force on both, and its status reports what each table holds across the nodes.
    apply(&cluster, RETENTION).await;
    for node in ["node-a", "node-b"] {
        let applied = eventually(SETTLE, || async {
            let report = retention_on(&cluster, node).await?;
            let held = |t: &str| report.tables.iter().find(|h| h.table == t).cloned();
            let conn_stats = held("conn_stats")?;
            let http = held("http_events")?;
            (conn_stats.budget_bytes == 16 << 20 && http.max_age_ns == 3_600_000_000_000)
                .then_some(())
        })
        .await;
        assert!(
            applied.is_some(),
            "{node}: {:?}",
            retention_on(&cluster, node).await
        );
    }
    let status = retention_listing(&cluster, &format!("conn_stats={}/2", 16 << 20)).await;
    assert!(
        status.is_some(),
        "{}",
        ok(
            &cluster,
            &["get", "pxdr", "retention", "-n", "pl", "-o", "yaml"]
        )
        .await
    );

    // Deleting the Tracepoint detaches it and drops the table on every node.
    ok(
        &cluster,
        &["delete", "tp", "adds", "-n", "shop", "--wait=true"],
    )
    .await;
    for node in ["node-a", "node-b"] {
        let state = probe_on(&cluster, node, &id).await.flatten().unwrap();
        assert_eq!(
            state.phase,
            i32::from(ProbePhase::Terminated),
            "{node}: {state:?}"
        );
        assert_eq!(state.attachments, 0);
        let tables = tables_on(&cluster, node).await.unwrap();
        assert!(
            !tables.contains(&"adds".to_owned()),
            "{node} still has the table: {tables:?}"
        );
    }
    let gone = cluster
        .kubectl(&["get", "tp", "-A", "--no-headers"])
        .await
        .unwrap();
    assert!(gone.stdout.trim().is_empty(), "{gone:?}");
    // A pod-target Tracepoint on one of the two nodes: its table lives on node-a only,
    // and a query through Kelvin reads it there instead of failing on node-b.
    apply(&cluster, &lonely(&program)).await;
    wait_tp(&cluster, "shop", "lonely", "1/1", "Running").await;
    let lonely_rows = eventually(SETTLE, || async {
        let n = query_rows(
            &cluster,
            "import px\npx.display(px.DataFrame(table='lonely_adds'), 'lonely')\n",
        )
        .await?;
        (n >= 2).then_some(n)
    })
    .await;
    assert!(
        lonely_rows.is_some(),
        "Kelvin never returned node-a's rows of a table node-b does not have"
    );
    let b_tables = tables_on(&cluster, "node-b").await.unwrap();
    assert!(
        !b_tables.contains(&"lonely_adds".to_owned()),
        "{b_tables:?}"
    );

    // node-b's PEM pod is deleted and comes back at another address: Kelvin, the same
    // process (no restart, no rollout), reaches the new one at the next query.
    let kelvin_before = kelvin_identity(&cluster).await;
    let old_ip = pem_ip(&cluster, "node-b").await.unwrap();
    let old_pod = pem_pod_name(&cluster, "node-b").await;
    ok(
        &cluster,
        &["delete", "pod", "-n", "pl", &old_pod, "--wait=true"],
    )
    .await;
    let new_ip = eventually(SETTLE, || async {
        pem_ip(&cluster, "node-b")
            .await
            .filter(|ip| *ip != old_ip && !ip.is_empty())
    })
    .await
    .expect("node-b's PEM never came back");
    let asid = u32::from(new_ip.parse::<std::net::Ipv4Addr>().unwrap());
    let script = format!(
        "import px\ndf = px.GetAgentStatus()\ndf = df[df.hostname == 'node-b']\ndf = df[df.asid == {asid}]\ndf = df[df.cluster_name == 'pixie']\npx.display(df, 'agents')\n"
    );
    let reached = eventually(SETTLE, || async {
        (query_rows(&cluster, &script).await? == 1).then_some(())
    })
    .await;
    assert!(
        reached.is_some(),
        "Kelvin never reached node-b's new PEM at {new_ip} (ASID {asid})"
    );
    assert_eq!(
        kelvin_identity(&cluster).await,
        kelvin_before,
        "Kelvin was restarted or rolled"
    );

    ok(
        &cluster,
        &["delete", "tp", "lonely", "-n", "shop", "--wait=true"],
    )
    .await;
    operator.abort();
    assert_operator_never_refused(&cluster);
    assert_no_secret_in_logs(&cluster).await;
}

/// No key, token or private key of the Vizier in the logs of a full run: the PEMs', the
/// Kelvin's (`kubectl logs`) and the operator's (at debug level).
async fn assert_no_secret_in_logs(cluster: &Cluster) {
    let mut secrets = vec![
        (
            "the API key",
            secret_value(cluster, "pixie-api-key").await.unwrap(),
        ),
        (
            "the PEM token",
            super::probes::pem_token(cluster).await.unwrap(),
        ),
    ];
    for role in ["ca", "pem", "kelvin"] {
        let key = secret_key(cluster, "px-tls", &format!("pixie\\.{role}\\.key"))
            .await
            .unwrap();
        // A line of the key's base64 body stands for all of it.
        let line = key.lines().nth(1).unwrap().to_owned();
        secrets.push(("a private key", line));
    }
    let pods = ok(
        cluster,
        &[
            "logs",
            "-n",
            "pl",
            "-l",
            "app.kubernetes.io/instance=pixie",
            "--all-containers",
            "--prefix",
            "--tail=-1",
        ],
    )
    .await;
    assert!(
        pods.contains("vizier-pem") || pods.contains("tracing"),
        "no PEM log: {pods}"
    );
    let operator = std::fs::read_to_string(crate::operator_log()).unwrap();
    assert!(
        !operator.is_empty(),
        "the operator logged nothing at debug level"
    );
    for (what, value) in &secrets {
        assert!(value.len() >= 16, "{what} is too short to look for");
        assert!(
            !pods.contains(value.as_str()),
            "{what} is in the pods' logs"
        );
        assert!(
            !operator.contains(value.as_str()),
            "{what} is in the operator's log"
        );
    }
}

/// `px.GetAgentStatus()` through Pixie's own Python client (pxapi) on Kelvin's TLS API,
/// trusting the Vizier's CA from `px-tls`, with the API key as its token: one JSON line
/// per agent (or the client's error).
async fn pxapi_agents(cluster: &Cluster) -> Vec<serde_json::Value> {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("pxapi");
    let venv = std::process::Command::new(repo.join("scripts/pxapi-venv.sh"))
        .arg(&dir)
        .output()
        .unwrap();
    assert!(
        venv.status.success(),
        "cannot install pxapi: {}",
        String::from_utf8_lossy(&venv.stderr)
    );
    let python = String::from_utf8_lossy(&venv.stdout).trim().to_string();
    let ca = dir.join("pixie-ca.crt");
    let ca_pem = secret_key(cluster, "px-tls", "pixie\\.ca\\.crt")
        .await
        .unwrap();
    std::fs::write(&ca, ca_pem).unwrap();
    let script = dir.join("agents.pxl");
    std::fs::write(
        &script,
        "import px\npx.display(px.GetAgentStatus(), 'agents')\n",
    )
    .unwrap();
    let addr = kelvin_addr(cluster).await.unwrap();
    let addr = addr.trim_start_matches("https://").to_string();
    let key = secret_value(cluster, "pixie-api-key").await.unwrap();
    let out = tokio::process::Command::new(python)
        .arg(repo.join("cli/tests/pxapi/run_script.py"))
        .args([
            addr.as_str(),
            script.to_str().unwrap(),
            "agents",
            ca.to_str().unwrap(),
        ])
        // The key in the environment, never on a command line.
        .env("PX_API_KEY", key)
        .env("PX_TLS_SERVER_NAME", "pixie-kelvin.pl.svc")
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        rows.iter().all(|r| r.get("error").is_none()),
        "pxapi: {rows:?}"
    );
    rows
}

/// `pixie.<role>.not-after` of the `px-tls` Secret: when that certificate expires.
async fn not_after(cluster: &Cluster, role: &str) -> Option<i64> {
    let key = format!("pixie\\.{role}\\.not-after");
    secret_key(cluster, "px-tls", &key).await?.parse().ok()
}

/// Certificates that live 90 seconds are renewed under the running PEMs and Kelvin:
/// after the first ones expired, queries through Kelvin (new TLS connections to Kelvin,
/// and from Kelvin to both PEMs) and the operator's calls to the PEMs still work, none
/// failed meanwhile, and no pod restarted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_are_renewed_under_the_running_pems_and_kelvin() {
    if !privileged() {
        return;
    }
    let pem = workspace_binary("vizier-pem").await;
    let kelvin = workspace_binary("kelvin").await;
    let images = HashMap::from([("px/vizier-pem".into(), pem), ("px/kelvin".into(), kelvin)]);
    let cluster = two_nodes_with_vizier(images, VIZIER).await;
    crate::init_logs();
    let client = operator_client(&cluster, serde_json::json!({})).await;
    let mut config = operator_config("operator-0", None);
    config.certificate_lifetime = std::time::Duration::from_secs(90);
    let operator = tokio::spawn(async move {
        if let Err(e) = px_operator::run(client, config, std::future::pending()).await {
            panic!("operator stopped: {e}");
        }
    });
    wait_healthy(&cluster).await;
    let first_pem = not_after(&cluster, "pem").await.unwrap();
    let first_kelvin = not_after(&cluster, "kelvin").await.unwrap();
    let pods = || async {
        jsonpath(
            &cluster,
            &["pods", "-n", "pl"],
            "{range .items[*]}{.metadata.uid}:{.status.containerStatuses[0].restartCount} {end}",
        )
        .await
    };
    let pods_before = pods().await;
    // A query that reads from both PEMs (it fails naming a PEM that cannot be reached).
    let script = "import px\npx.display(px.DataFrame(table='process_stats'), 't')\n";
    let first_query = eventually(SETTLE, || query_rows(&cluster, script)).await;
    assert!(first_query.is_some(), "no query before the renewal");
    // Pixie's Python client through Kelvin's TLS API, trusting the Vizier's CA.
    let agents = pxapi_agents(&cluster).await;
    assert_eq!(agents.len(), 2, "{agents:?}");
    // A connection to Kelvin made now, and kept: it must outlive the renewal.
    let held = kelvin_channel(&cluster).await.unwrap();
    let key = secret_value(&cluster, "pixie-api-key").await.unwrap();

    // Queries every two seconds until both first certificates are 10 s past expiry.
    let mut failures = Vec::new();
    let mut queries = 0;
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0))
    };
    while now() < first_pem.max(first_kelvin) + 10 {
        queries += 1;
        if query_rows(&cluster, script).await.is_none() {
            failures.push(now());
        }
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    }
    let renewed_pem = not_after(&cluster, "pem").await.unwrap();
    let renewed_kelvin = not_after(&cluster, "kelvin").await.unwrap();
    assert!(
        renewed_pem > first_pem && renewed_kelvin > first_kelvin,
        "not renewed: pem {first_pem} -> {renewed_pem}, kelvin {first_kelvin} -> {renewed_kelvin}"
    );
    assert!(
        failures.is_empty(),
        "{} of {queries} queries failed around the renewal (at {failures:?}; first certificates expired at {first_pem}/{first_kelvin})",
        failures.len()
    );
    let on_held = execute_on(held, script, Some(&key)).await;
    assert!(
        matches!(on_held, Some(Ok(_))),
        "the connection made before the renewal: {on_held:?}"
    );
    let agents = pxapi_agents(&cluster).await;
    assert_eq!(agents.len(), 2, "after the renewal: {agents:?}");
    // The PEMs serve the renewed certificate (a new connection verifies it) and take
    // the operator's calls with its renewed client certificate.
    apply(&cluster, RETENTION).await;
    for node in ["node-a", "node-b"] {
        let applied = eventually(SETTLE, || async {
            let report = retention_on(&cluster, node).await?;
            report
                .tables
                .iter()
                .any(|h| h.table == "conn_stats" && h.budget_bytes == 16 << 20)
                .then_some(())
        })
        .await;
        assert!(
            applied.is_some(),
            "{node}: the operator's call after the renewal"
        );
    }
    assert_eq!(pods().await, pods_before, "a pod restarted or was replaced");
    operator.abort();
    assert_operator_never_refused(&cluster);
    cluster.stop().await;
}
