//! Kubernetes context in queries, on the real PEMs and the real Kelvin: pods in two
//! namespaces on two nodes talk HTTP over real sockets, one behind a Service. Every row
//! says which pod, namespace, service, node and container traced it, and
//! `px.ip_to_pod_id(df.remote_addr)` names the peer pod and its service; a pod
//! recreated under another name at the same address resolves to the new name.
//!
//! Needs root (the PEM loads eBPF programs); under `CI=true` it fails rather than skips.

use std::collections::{BTreeSet, HashMap};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use px_api::vizierpb::column::ColData;
use px_e2e::{Cluster, eventually};

use super::probes::{apply, jsonpath, secret_value, two_nodes_with_vizier, workspace_binary};
use super::real_pem::{VIZIER, kelvin_channel, privileged};
use super::vizier::{SETTLE, Scratch, start_operator, wait_healthy};

/// What the chart grants the Kelvin of its own Vizier (`charts/px/templates/
/// kelvin-metadata.yaml`), for the Vizier this test makes itself.
const KELVIN_METADATA_RBAC: &str = r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: px-kelvin-metadata}
rules:
- {apiGroups: [""], resources: [pods, services, nodes], verbs: [get, list, watch]}
- {apiGroups: [discovery.k8s.io], resources: [endpointslices], verbs: [get, list, watch]}
- {apiGroups: [apps], resources: [replicasets], verbs: [get, list, watch]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: px-kelvin-metadata}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: px-kelvin-metadata}
subjects:
- {kind: ServiceAccount, name: pixie-kelvin, namespace: pl}
"#;

/// An HTTP server on the pod's own address, behind Service `shop/web`, on node-a.
const SERVER: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: v1
kind: Namespace
metadata: {name: front}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  replicas: 1
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      nodeSelector: {kubernetes.io/hostname: node-a}
      containers:
      - name: server
        image: px/http-server
        env:
        - name: POD_IP
          valueFrom: {fieldRef: {fieldPath: status.podIP}}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  selector: {app: web}
  ports:
  - {port: 8080, targetPort: 8080}
"#;

/// A client pod on node-b that requests the server's pod address from its own.
fn client(name: &str, server_ip: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: front}}
spec:
  nodeName: node-b
  containers:
  - name: client
    image: px/http-client
    args: ["{server_ip}"]
    env:
    - name: POD_IP
      valueFrom: {{fieldRef: {{fieldPath: status.podIP}}}}
"#
    )
}

/// From a pod's creation to its traffic traced on both sides and its Service's
/// endpoints known: PEM start, EndpointSlice controller, Kelvin's watch.
const METADATA_SETTLE: std::time::Duration = std::time::Duration::from_secs(120);

fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// The string columns of a query's one output table, as rows of (column, value).
async fn string_rows(cluster: &Cluster, query: &str) -> Option<Vec<HashMap<String, String>>> {
    use px_api::vizierpb::execute_script_response::Result as Part;
    use px_api::vizierpb::vizier_service_client::VizierServiceClient;
    let key = secret_value(cluster, "pixie-api-key").await?;
    let channel = kelvin_channel(cluster).await?;
    let mut request = tonic::Request::new(px_api::vizierpb::ExecuteScriptRequest {
        query_str: query.to_owned(),
        ..Default::default()
    });
    request
        .metadata_mut()
        .insert("pixie-api-key", key.parse().ok()?);
    let mut stream = VizierServiceClient::new(channel)
        .execute_script(request)
        .await
        .ok()?
        .into_inner();
    let mut names = Vec::new();
    let mut rows = Vec::new();
    while let Some(message) = stream.message().await.ok()? {
        if let Some(status) = &message.status {
            assert_eq!(status.code, 0, "{status:?}");
        }
        match message.result {
            Some(Part::MetaData(meta)) => {
                names = meta
                    .relation
                    .map(|r| r.columns.into_iter().map(|c| c.column_name).collect())
                    .unwrap_or_default();
            }
            Some(Part::Data(data)) => {
                let Some(batch) = data.batch else { continue };
                let columns: Vec<Option<Vec<String>>> = batch
                    .cols
                    .into_iter()
                    .map(|c| match c.col_data {
                        Some(ColData::StringData(s)) => Some(
                            s.data
                                .into_iter()
                                .map(|b| String::from_utf8_lossy(&b).into_owned())
                                .collect(),
                        ),
                        _ => None,
                    })
                    .collect();
                for i in 0..usize::try_from(batch.num_rows).unwrap_or(0) {
                    let row = names
                        .iter()
                        .zip(&columns)
                        .filter_map(|(n, c)| Some((n.clone(), c.as_ref()?.get(i)?.clone())))
                        .collect();
                    rows.push(row);
                }
            }
            None => {}
        }
    }
    Some(rows)
}

const QUERY: &str = "import px
df = px.DataFrame('http_events', start_time='-5m')
df.pod = df.ctx['pod']
df.namespace = df.ctx['namespace']
df.service = df.ctx['service']
df.node = df.ctx['node']
df.container = df.ctx['container']
df.peer = px.pod_id_to_pod_name(px.ip_to_pod_id(df.remote_addr))
df.peer_service = px.pod_id_to_service_name(px.ip_to_pod_id(df.remote_addr))
df = df.groupby(['pod', 'namespace', 'service', 'node', 'container', 'peer', 'peer_service']).agg(n=('latency', px.count))
px.display(df, 'seen')
";

/// The distinct (pod, namespace, service, node, container, peer, peer service) rows.
async fn seen(cluster: &Cluster) -> BTreeSet<[String; 7]> {
    let rows = string_rows(cluster, QUERY).await.unwrap_or_default();
    rows.into_iter()
        .map(|r| {
            let get = |k: &str| r.get(k).cloned().unwrap_or_default();
            [
                get("pod"),
                get("namespace"),
                get("service"),
                get("node"),
                get("container"),
                get("peer"),
                get("peer_service"),
            ]
        })
        .collect()
}

fn row(cells: [&str; 7]) -> [String; 7] {
    cells.map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_name_their_pods_services_namespaces_nodes_and_peers() {
    if !privileged() {
        return;
    }
    let scratch = Scratch::new("metadata");
    let server = script(
        &scratch.0,
        "http-server",
        "cd \"$(mktemp -d)\" && echo hello > index.html && exec python3 -m http.server --bind \"$POD_IP\" 8080",
    );
    let client_app = script(
        &scratch.0,
        "http-client",
        "while true; do curl -s -o /dev/null --interface \"$POD_IP\" \"http://$1:8080/\"; sleep 0.3; done",
    );
    let images = HashMap::from([
        ("px/vizier-pem".into(), workspace_binary("vizier-pem").await),
        ("px/kelvin".into(), workspace_binary("kelvin").await),
        ("px/http-server".into(), server),
        ("px/http-client".into(), client_app),
    ]);
    let cluster = two_nodes_with_vizier(images, VIZIER).await;
    apply(&cluster, KELVIN_METADATA_RBAC).await;
    let operator = start_operator(&cluster, "operator-0").await;
    wait_healthy(&cluster).await;
    apply(&cluster, SERVER).await;
    let server_pod = eventually(SETTLE, || async {
        let out = jsonpath(
            &cluster,
            &["pods", "-n", "shop", "-l", "app=web"],
            "{.items[0].metadata.name} {.items[0].status.podIP}",
        )
        .await;
        let (name, ip) = out.trim().split_once(' ')?;
        (!ip.is_empty()).then(|| (name.to_owned(), ip.to_owned()))
    })
    .await;
    let (server_name, server_ip) = server_pod.expect("the server pod has an address");
    apply(&cluster, &client("client", &server_ip)).await;

    let server_side = format!("shop/{server_name}");
    let want_server = row([
        &server_side,
        "shop",
        "shop/web",
        "node-a",
        "server",
        "front/client",
        "",
    ]);
    let want_client = row([
        "front/client",
        "front",
        "",
        "node-b",
        "client",
        &server_side,
        "shop/web",
    ]);
    let both = eventually(METADATA_SETTLE, || async {
        let seen = seen(&cluster).await;
        (seen.contains(&want_server) && seen.contains(&want_client)).then_some(seen)
    })
    .await;
    assert!(
        both.is_some(),
        "want {want_server:?} and {want_client:?}; seen {:?}",
        seen(&cluster).await
    );

    // Filters on a row's pod or namespace, which the PEMs apply as sets of UPIDs, keep
    // exactly that pod's rows.
    let pods_where = |condition: &str| {
        format!(
            "import px\ndf = px.DataFrame('http_events', start_time='-5m')\n\
             df = df[{condition}]\ndf.pod = df.ctx['pod']\n\
             df = df.groupby('pod').agg(n=('latency', px.count))\npx.display(df, 'pods')\n"
        )
    };
    let pods_of = |rows: Vec<HashMap<String, String>>| -> BTreeSet<String> {
        rows.into_iter()
            .filter_map(|r| r.get("pod").cloned())
            .collect()
    };
    let only_server = string_rows(
        &cluster,
        &pods_where(&format!("df.ctx['pod'] == '{server_side}'")),
    )
    .await
    .map(pods_of);
    assert_eq!(only_server, Some(BTreeSet::from([server_side.clone()])));
    let outside_shop = string_rows(&cluster, &pods_where("df.ctx['namespace'] != 'shop'"))
        .await
        .map(pods_of)
        .unwrap_or_default();
    assert!(
        outside_shop.contains("front/client") && !outside_shop.contains(&server_side),
        "{outside_shop:?}"
    );

    // The views of Pixie's pxviews module, this project's own, name the same pods.
    let view = |call: &str| format!("import px\nimport pxviews\npx.display(pxviews.{call})\n");
    let column = |rows: &[HashMap<String, String>], name: &str| -> BTreeSet<String> {
        rows.iter().filter_map(|r| r.get(name).cloned()).collect()
    };
    let resources = eventually(METADATA_SETTLE, || async {
        let rows = string_rows(&cluster, &view("pod_resource_stats('-5m', px.now())")).await?;
        let pods = column(&rows, "pod");
        (pods.contains(&server_side) && pods.contains("front/client")).then_some(pods)
    })
    .await;
    assert!(
        resources.is_some(),
        "pxviews.pod_resource_stats names both pods"
    );
    let graph = string_rows(&cluster, &view("http_graph('-5m', px.now())"))
        .await
        .unwrap_or_default();
    assert!(
        graph
            .iter()
            .any(|r| r.get("responder_pod") == Some(&server_side)
                && r.get("requestor_pod").map(String::as_str) == Some("front/client")
                && r.get("responder_service").map(String::as_str) == Some("shop/web")),
        "{graph:?}"
    );

    // The client pod deleted and made again under another name (at the same address,
    // or another): the server's rows name the new pod.
    let deleted = cluster
        .kubectl(&["delete", "pod", "-n", "front", "client", "--wait=true"])
        .await
        .unwrap();
    assert!(deleted.success(), "{deleted:?}");
    apply(&cluster, &client("client-2", &server_ip)).await;
    let want_new = row([
        &server_side,
        "shop",
        "shop/web",
        "node-a",
        "server",
        "front/client-2",
        "",
    ]);
    let renamed = eventually(METADATA_SETTLE, || async {
        seen(&cluster).await.contains(&want_new).then_some(())
    })
    .await;
    assert!(renamed.is_some(), "seen {:?}", seen(&cluster).await);

    // Every script bundled with px runs on this cluster and returns rows.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../cli/scripts/px");
    let mut scripts: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    scripts.sort();
    assert!(scripts.len() >= 20, "{scripts:?}");
    let mut empty = Vec::new();
    for path in &scripts {
        let source = std::fs::read_to_string(path).unwrap();
        let rows = eventually(METADATA_SETTLE, || async {
            let rows = string_rows(&cluster, &source).await?;
            (!rows.is_empty()).then_some(rows.len())
        })
        .await;
        if rows.is_none() {
            empty.push(path.file_name().unwrap().to_string_lossy().into_owned());
        }
    }
    assert!(empty.is_empty(), "bundled scripts without rows: {empty:?}");

    // GetAgentStatus lists both PEMs with their nodes.
    let agents = string_rows(
        &cluster,
        "import px\npx.display(px.GetAgentStatus(), 'agents')\n",
    )
    .await
    .unwrap();
    let mut hosts: Vec<String> = agents
        .iter()
        .filter_map(|r| r.get("hostname").cloned())
        .collect();
    hosts.sort();
    assert_eq!(hosts, ["node-a", "node-b"], "{agents:?}");
    operator.abort();
}
