//! A Vizier applied with `kubectl` becomes PEMs on both nodes and Kelvin; its status goes
//! Updating then Healthy; a `pemMemoryLimit` change rolls the PEMs; a second reconcile
//! changes nothing; a killed and restarted operator converges to the same objects;
//! deleting the Vizier leaves nothing behind. Kelvin's process gets the API key of the
//! Secret the operator made.
//!
//! The PEM and Kelvin images are mapped to a stand-in script that sleeps, not to the real
//! `vizier-pem` and `kelvin`: building the PEM (aya, DataFusion) here is out of budget.
//! (`probes.rs` runs `standin-pem`, which serves the PEM's ProbeService.)

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::Client;
use kube::api::{Api, ListParams};
use kube::runtime::watcher;
use px_crds::{Vizier, VizierPhase};
use px_e2e::{Cluster, ClusterConfig, NodeSpec, eventually};

/// Pixie's own example Vizier (registry `registry.example.com/pixie`, version 0.14.15,
/// `pemMemoryLimit: 2Gi`, Pixie Cloud fields).
const PIXIE_VIZIER: &str = include_str!("../../../crds/examples/vizier-pixie.yaml");

pub(super) const SETTLE: Duration = Duration::from_secs(30);

/// How long the garbage collector may take to delete what a deleted Vizier owned: it
/// learns of custom resources from discovery, which it refreshes every 30 s, so owners
/// of a kind installed just before (as in these tests) wait up to that long.
pub(super) const GC_SETTLE: Duration = Duration::from_secs(75);

/// Kinds a Vizier makes, as `kubectl get` names them (their pods apart: the kubelets
/// keep writing pod status).
const KINDS: &str = "daemonsets,deployments,services,serviceaccounts,roles,rolebindings,secrets";

/// A scratch directory removed when the test ends, passed or not.
pub(super) struct Scratch(pub(super) PathBuf);

impl Scratch {
    pub(super) fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("px-operator-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub(super) fn stand_in(dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join("stand-in");
    std::fs::write(
        &path,
        "#!/bin/sh\n# stands in for vizier-pem / kelvin\nexec sleep 3600\n",
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// Applies the three CRDs from `crds/`.
pub(super) async fn apply_crds(cluster: &Cluster) {
    let crds = Path::new(env!("CARGO_MANIFEST_DIR")).join("../crds");
    for kind in ["viziers", "tracepoints", "dataretentions"] {
        let path = crds.join(format!("{kind}.px.dev.yaml"));
        ok(cluster, &["apply", "-f", &path.display().to_string()]).await;
    }
}

pub(super) async fn ok(cluster: &Cluster, args: &[&str]) -> String {
    let out = cluster.kubectl(args).await.unwrap();
    assert!(out.success(), "kubectl {args:?} failed: {out:?}");
    out.stdout
}

/// A client acting as the cluster's admin, for what the test itself reads and writes.
pub(super) async fn client(cluster: &Cluster) -> Client {
    cluster.client()
}

/// The chart's release and namespace: the operator runs as the ServiceAccount, with the
/// ClusterRoles, Roles and bindings, that `helm template` renders for them.
pub(super) const RELEASE: &str = "px";
pub(super) const RELEASE_NAMESPACE: &str = "px-system";

/// A client acting as the chart's operator ServiceAccount, after applying the chart's
/// RBAC (rendered with values `set`) with kubectl. Never admin: a permission the chart
/// does not grant fails the test.
pub(super) async fn operator_client(cluster: &Cluster, set: serde_json::Value) -> Client {
    let helm = px_e2e::helm::Helm::get(Path::new(env!("CARGO_TARGET_TMPDIR")))
        .expect("the operator's tests need Helm (helm-python-sdk) to render its RBAC");
    let kubeconfig =
        px_e2e::helm::install_operator_identity(cluster, &helm, RELEASE, RELEASE_NAMESPACE, &set)
            .await
            .unwrap();
    cluster.client_for(&kubeconfig).await.unwrap()
}

/// The user the operator acts as: the chart's ServiceAccount.
pub(super) fn operator_user() -> String {
    format!("system:serviceaccount:{RELEASE_NAMESPACE}:{RELEASE}-operator")
}

/// Fails if the API server refused any request the operator made (the audit log has
/// each one with its response code): a permission the chart does not grant is a bug,
/// even where the operator recovers from it. With `PX_E2E_AUDIT=1`, prints every kind
/// of request the operator made (`verb group/resource[/subresource]`), to check the
/// chart's rules against.
pub(super) fn assert_operator_never_refused(cluster: &Cluster) {
    let events = cluster.audit_events(&operator_user());
    assert!(!events.is_empty(), "no request of the operator was audited");
    let mut made = std::collections::BTreeSet::new();
    let mut refused = Vec::new();
    for e in &events {
        let s = |p: &str| e.pointer(p).and_then(|v| v.as_str()).unwrap_or("");
        let what = format!(
            "{} {}/{}{}{}",
            s("/verb"),
            s("/objectRef/apiGroup"),
            s("/objectRef/resource"),
            if s("/objectRef/subresource").is_empty() {
                ""
            } else {
                "/"
            },
            s("/objectRef/subresource"),
        );
        if e.pointer("/responseStatus/code").and_then(|c| c.as_i64()) == Some(403) {
            refused.push(format!(
                "{what} {}: {}",
                s("/objectRef/namespace"),
                s("/responseStatus/message")
            ));
        }
        made.insert(what);
    }
    if std::env::var_os("PX_E2E_AUDIT").is_some() {
        for what in &made {
            eprintln!("operator request: {what}");
        }
    }
    assert!(
        refused.is_empty(),
        "the API server refused the operator: {refused:#?}"
    );
}

/// The operator's settings as the chart's Deployment gives them (the Lease in the
/// release's namespace, named after the release).
pub(super) fn operator_config(
    identity: &str,
    watch_namespace: Option<&str>,
) -> px_operator::Config {
    px_operator::Config {
        watch_namespace: watch_namespace.map(String::from),
        lease_name: format!("{RELEASE}-operator"),
        lease_namespace: Some(RELEASE_NAMESPACE.into()),
        identity: identity.into(),
        lease_duration: Duration::from_secs(15),
        certificate_lifetime: px_operator::certs::DEFAULT_LIFETIME,
    }
}

/// Starts the operator in this process, as instance `identity`, acting as the chart's
/// ServiceAccount; aborting the task is a kill (no clean-up, the Lease stays held).
pub(super) async fn start_operator(
    cluster: &Cluster,
    identity: &str,
) -> tokio::task::JoinHandle<()> {
    crate::init_logs();
    let client = operator_client(cluster, serde_json::json!({})).await;
    let config = operator_config(identity, None);
    tokio::spawn(async move {
        if let Err(e) = px_operator::run(client, config, std::future::pending()).await {
            panic!("operator stopped: {e}");
        }
    })
}

/// `kubectl get vz` row for `pixie`: NAME PHASE PEMS VERSION AGE.
/// The message of Vizier `pl/pixie`'s IgnoredFields condition.
async fn ignored_fields(cluster: &Cluster) -> String {
    ok(
        cluster,
        &[
            "get",
            "vz",
            "pixie",
            "-n",
            "pl",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"IgnoredFields\")].message}",
        ],
    )
    .await
}

async fn vz_row(cluster: &Cluster) -> Vec<String> {
    let out = ok(cluster, &["get", "vz", "-n", "pl", "--no-headers"]).await;
    out.split_whitespace().map(String::from).collect()
}

pub(super) async fn wait_healthy(cluster: &Cluster) -> Vec<String> {
    let row = eventually(SETTLE, || async {
        let row = vz_row(cluster).await;
        (row.get(1).map(String::as_str) == Some("Healthy") && row[2] == "2/2").then_some(row)
    })
    .await;
    match row {
        Some(row) => row,
        None => panic!(
            "never Healthy 2/2:\n{}\n{}",
            ok(cluster, &["get", "vz", "-n", "pl", "-o", "yaml"]).await,
            ok(
                cluster,
                &[
                    "get",
                    "daemonsets,deployments,pods",
                    "-n",
                    "pl",
                    "-o",
                    "wide"
                ]
            )
            .await
        ),
    }
}

/// `name resourceVersion` of every object a Vizier makes, sorted.
async fn made_objects(cluster: &Cluster) -> Vec<String> {
    let out = ok(
        cluster,
        &[
            "get",
            KINDS,
            "-n",
            "pl",
            "-l",
            "px.dev/vizier=pixie",
            "-o",
            "jsonpath={range .items[*]}{.kind}/{.metadata.name} {.metadata.resourceVersion}{\"\\n\"}{end}",
        ],
    )
    .await;
    let mut lines: Vec<String> = out.lines().map(String::from).collect();
    lines.sort();
    lines
}

/// The API key in the Vizier's Secret, and the Secret's resourceVersion.
async fn api_key(client: &Client) -> (String, Option<String>) {
    let secret = Api::<Secret>::namespaced(client.clone(), "pl")
        .get("pixie-api-key")
        .await
        .unwrap();
    let key = &secret.data.as_ref().unwrap()["key"].0;
    (
        String::from_utf8(key.clone()).unwrap(),
        secret.metadata.resource_version,
    )
}

/// `PX_API_KEY` in the environment of the running Kelvin container's process (the
/// stand-in execs `sleep`, which keeps the environment it was started with).
async fn kelvin_api_key(cluster: &Cluster, client: &Client) -> Option<String> {
    let pods = Api::<Pod>::namespaced(client.clone(), "pl")
        .list(&ListParams::default().labels("app.kubernetes.io/name=kelvin"))
        .await
        .ok()?;
    let [pod] = pods.items.as_slice() else {
        return None;
    };
    let name = pod.metadata.name.as_deref()?;
    cluster
        .container_env("pl", name)
        .await
        .iter()
        .find_map(|e| e.strip_prefix("PX_API_KEY=").map(String::from))
}

async fn pem_pods(cluster: &Cluster) -> BTreeMap<String, (String, String)> {
    let out = ok(
        cluster,
        &[
            "get",
            "pods",
            "-n",
            "pl",
            "-l",
            "app.kubernetes.io/name=vizier-pem",
            "-o",
            "jsonpath={range .items[*]}{.metadata.name} {.spec.nodeName} {.spec.containers[0].args}{\"\\n\"}{end}",
        ],
    )
    .await;
    out.lines()
        .filter_map(|l| {
            let mut parts = l.splitn(3, ' ');
            Some((
                parts.next()?.to_string(),
                (parts.next()?.to_string(), parts.next()?.to_string()),
            ))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vizier_becomes_pems_and_kelvin_and_goes_away_with_nothing_left() {
    crate::init_logs();
    let scratch = Scratch::new("test");
    let exe = stand_in(&scratch.0);
    let cluster = Cluster::start(ClusterConfig {
        nodes: vec![NodeSpec::named("node-a"), NodeSpec::named("node-b")],
        images: HashMap::from([
            ("registry.example.com/pixie/vizier-pem".into(), exe.clone()),
            ("registry.example.com/pixie/kelvin".into(), exe.clone()),
        ]),
    })
    .await
    .unwrap();
    apply_crds(&cluster).await;
    ok(&cluster, &["create", "namespace", "pl"]).await;

    let client = client(&cluster).await;
    // Every phase the Vizier goes through, as a watch sees it.
    let phases = Arc::new(Mutex::new(Vec::<VizierPhase>::new()));
    let seen = phases.clone();
    let vz_api: Api<Vizier> = Api::namespaced(client.clone(), "pl");
    let watch = tokio::spawn(
        watcher::watcher(vz_api.clone(), watcher::Config::default()).for_each(move |ev| {
            let seen = seen.clone();
            async move {
                if let Ok(watcher::Event::Apply(vz)) = ev
                    && let Some(p) = vz.status.and_then(|s| s.vizier_phase)
                {
                    let mut seen = seen.lock().unwrap();
                    if seen.last() != Some(&p) {
                        seen.push(p);
                    }
                }
            }
        }),
    );
    let operator = start_operator(&cluster, "operator-0").await;

    let out = cluster
        .kubectl_stdin(&["apply", "-f", "-"], Some(PIXIE_VIZIER))
        .await
        .unwrap();
    assert!(out.success(), "{out:?}");

    // Updating, then Healthy with both PEMs.
    let row = wait_healthy(&cluster).await;
    assert_eq!(row[3], "0.14.15", "VERSION column: {row:?}");
    {
        let seen = phases.lock().unwrap();
        assert_eq!(seen.first(), Some(&VizierPhase::Updating), "{seen:?}");
        assert_eq!(seen.last(), Some(&VizierPhase::Healthy), "{seen:?}");
    }
    let pods = pem_pods(&cluster).await;
    let nodes: Vec<&str> = pods.values().map(|(n, _)| n.as_str()).collect();
    assert_eq!(nodes.len(), 2, "{pods:?}");
    assert!(
        nodes.contains(&"node-a") && nodes.contains(&"node-b"),
        "{pods:?}"
    );
    assert!(
        pods.values()
            .all(|(_, a)| a.contains("--memory-limit=2147483648")),
        "{pods:?}"
    );
    let ready = ok(
        &cluster,
        &[
            "get",
            "deployment",
            "pixie-kelvin",
            "-n",
            "pl",
            "-o",
            "jsonpath={.status.readyReplicas}",
        ],
    )
    .await;
    assert_eq!(ready, "1");
    // Kelvin finds the PEMs by watching their pods: the selector it is given matches
    // exactly the two PEM pods.
    let kelvin_args = ok(
        &cluster,
        &[
            "get",
            "deployment",
            "pixie-kelvin",
            "-n",
            "pl",
            "-o",
            "jsonpath={.spec.template.spec.containers[0].args}",
        ],
    )
    .await;
    let selector = kelvin_args
        .split('"')
        .find_map(|a| a.strip_prefix("--pems-from-pods="))
        .unwrap_or_else(|| panic!("Kelvin is not told where the PEMs are: {kelvin_args}"));
    let selected = ok(
        &cluster,
        &[
            "get",
            "pods",
            "-n",
            "pl",
            "-l",
            selector,
            "-o",
            "jsonpath={.items[*].spec.nodeName}",
        ],
    )
    .await;
    let mut nodes: Vec<&str> = selected.split_whitespace().collect();
    nodes.sort_unstable();
    assert_eq!(nodes, ["node-a", "node-b"], "{selector}");
    let ignored = ignored_fields(&cluster).await;
    assert!(ignored.contains("deployKey"), "{ignored}");
    let describe = ok(&cluster, &["describe", "vz", "pixie", "-n", "pl"]).await;
    assert!(
        describe.contains("Deploying") && describe.contains("APIKeyCreated"),
        "events in describe: {describe}"
    );

    // The API key: a Secret owned by the Vizier, in Kelvin's environment, in no spec.
    let (key, key_rv) = api_key(&client).await;
    assert_eq!(key.len(), 64, "32 random bytes, hex");
    assert!(key.bytes().all(|b| b.is_ascii_hexdigit()));
    let owner = ok(
        &cluster,
        &[
            "get",
            "secret",
            "pixie-api-key",
            "-n",
            "pl",
            "-o",
            "jsonpath={.type} {.metadata.ownerReferences[0].kind}/{.metadata.ownerReferences[0].name} {.metadata.ownerReferences[0].uid}",
        ],
    )
    .await;
    let vz_uid = vz_api.get("pixie").await.unwrap().metadata.uid.unwrap();
    assert_eq!(owner, format!("Opaque Vizier/pixie {vz_uid}"));
    let seen = eventually(SETTLE, || async {
        kelvin_api_key(&cluster, &client)
            .await
            .filter(|k| *k == key)
    })
    .await;
    assert!(
        seen.is_some(),
        "Kelvin's process never had the Secret's key"
    );
    let kelvin = Api::<Deployment>::namespaced(client.clone(), "pl")
        .get("pixie-kelvin")
        .await
        .unwrap();
    let kelvin_spec = serde_json::to_string(&kelvin).unwrap();
    assert!(!kelvin_spec.contains(&key), "the key is in the Deployment");
    assert!(!kelvin_spec.contains("--allow-unauthenticated"));

    // A second reconcile changes nothing.
    let before = made_objects(&cluster).await;
    assert_eq!(
        before.len(),
        8,
        "2 SA, Kelvin's Role and RB (the PEM has none), DS, Deploy, Svc, the API-key Secret (the PEM tokens' is shared by the namespace's Viziers): {before:?}"
    );
    let vz_rv = vz_api.get("pixie").await.unwrap().metadata.resource_version;
    let ctx = Arc::new(px_operator::Context::new(client.clone(), None, None));
    px_operator::vizier::reconcile(Arc::new(vz_api.get("pixie").await.unwrap()), ctx)
        .await
        .unwrap();
    assert_eq!(
        made_objects(&cluster).await,
        before,
        "the second reconcile wrote"
    );
    assert_eq!(
        vz_api.get("pixie").await.unwrap().metadata.resource_version,
        vz_rv
    );
    assert_eq!(
        api_key(&client).await,
        (key.clone(), key_rv.clone()),
        "the key was rewritten"
    );

    // pemMemoryLimit 2Gi -> 3Gi rolls the PEMs with the new limit.
    ok(
        &cluster,
        &[
            "patch",
            "vz",
            "pixie",
            "-n",
            "pl",
            "--type",
            "merge",
            "-p",
            r#"{"spec":{"pemMemoryLimit":"3Gi","dataAccess":"Restricted","patches":{"pixie-pem":"metadata: {labels: {team: sre}}"}}}"#,
        ],
    )
    .await;
    // The patch reaches the DaemonSet; dataAccess reaches the PEMs' arguments.
    let patched = eventually(SETTLE, || async {
        let team = ok(
            &cluster,
            &[
                "get",
                "ds",
                "pixie-pem",
                "-n",
                "pl",
                "-o",
                "jsonpath={.metadata.labels.team}",
            ],
        )
        .await;
        (team == "sre").then_some(())
    })
    .await;
    assert!(
        patched.is_some(),
        "spec.patches never reached the DaemonSet"
    );
    let rolled = eventually(SETTLE, || async {
        let now = pem_pods(&cluster).await;
        (now.len() == 2
            && now.keys().all(|k| !pods.contains_key(k))
            && now.values().all(|(_, a)| {
                a.contains("--memory-limit=3221225472") && a.contains("--data-access=Restricted")
            }))
        .then_some(now)
    })
    .await;
    assert!(
        rolled.is_some(),
        "PEMs not rolled: {:?}",
        pem_pods(&cluster).await
    );
    wait_healthy(&cluster).await;
    {
        let seen = phases.lock().unwrap();
        assert_eq!(
            seen.as_slice(),
            [
                VizierPhase::Updating,
                VizierPhase::Healthy,
                VizierPhase::Updating,
                VizierPhase::Healthy
            ],
            "Updating while the PEMs roll"
        );
    }
    let generation = ok(
        &cluster,
        &[
            "get",
            "vz",
            "pixie",
            "-n",
            "pl",
            "-o",
            "jsonpath={.metadata.generation} {.status.observedGeneration}",
        ],
    )
    .await;
    let (g, o) = generation.split_once(' ').unwrap();
    assert_eq!(g, o, "observedGeneration follows the spec");

    // Killed (mid-whatever), an object lost meanwhile; restarted, it converges.
    operator.abort();
    let _ = operator.await;
    let converged = made_objects(&cluster).await;
    ok(&cluster, &["delete", "service", "pixie-kelvin", "-n", "pl"]).await;
    let operator = start_operator(&cluster, "operator-0").await;
    let back = eventually(SETTLE, || async {
        let now = made_objects(&cluster).await;
        (now.len() == converged.len()).then_some(now)
    })
    .await
    .expect("the restarted operator did not recreate the Service");
    let unchanged: Vec<_> = back.iter().filter(|l| !l.starts_with("Service/")).collect();
    let expected: Vec<_> = converged
        .iter()
        .filter(|l| !l.starts_with("Service/"))
        .collect();
    assert_eq!(
        unchanged, expected,
        "a restart rewrote objects it had right"
    );
    wait_healthy(&cluster).await;
    assert_eq!(
        api_key(&client).await,
        (key, key_rv),
        "the restarted operator rotated the key"
    );

    // Deleting the Vizier leaves nothing behind, the API-key Secret included.
    ok(&cluster, &["delete", "vz", "pixie", "-n", "pl"]).await;
    let gone = eventually(GC_SETTLE, || async {
        let pods = ok(&cluster, &["get", "pods", "-n", "pl", "-o", "name"]).await;
        (made_objects(&cluster).await.is_empty() && pods.is_empty()).then_some(())
    })
    .await;
    assert!(
        gone.is_some(),
        "left behind: {:?} {:?}",
        made_objects(&cluster).await,
        ok(&cluster, &["get", "pods", "-n", "pl", "-o", "name"]).await
    );

    operator.abort();
    watch.abort();
    assert_operator_never_refused(&cluster);
    cluster.stop().await;
}

/// A Vizier whose PEM fails on one node is Degraded with Pixie's reason and PEMS 1/2; a
/// spec asking for more memory than its limit is Unhealthy with the reason, and nothing
/// about the PEMs changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pem_failing_on_one_node_degrades_and_a_bad_spec_is_reported() {
    let scratch = Scratch::new("degraded");
    let exe = scratch.0.join("pem-fails-on-node-b");
    std::fs::write(
        &exe,
        "#!/bin/sh\ncase \"$PX_PEM_CGROUP\" in *node-b*) echo 'no BTF' >&2; exit 1;; esac\nexec sleep 3600\n",
    )
    .unwrap();
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (cluster, operator) = two_nodes_running(&exe).await;
    let vizier = "apiVersion: px.dev/v1alpha1\nkind: Vizier\nmetadata: {name: pixie, namespace: pl}\nspec: {version: '1.0.0', pemMemoryLimit: 1Gi}\n";
    let out = cluster
        .kubectl_stdin(&["apply", "-f", "-"], Some(vizier))
        .await
        .unwrap();
    assert!(out.success(), "{out:?}");

    // Polled for both at once: node-b's PEM is restarted between crashes, and while its
    // process is up the pod is briefly ready (2/2) while its restarts keep it Degraded.
    let degraded = eventually(SETTLE, || async {
        let row = vz_row(&cluster).await;
        let fields = (
            row.get(1).map(String::as_str),
            row.get(2).map(String::as_str),
        );
        (fields == (Some("Degraded"), Some("1/2"))).then_some(row)
    })
    .await;
    assert!(
        degraded.is_some(),
        "never Degraded with 1/2: {:?}",
        vz_row(&cluster).await
    );
    let why = eventually(SETTLE, || async {
        let why = ok(
            &cluster,
            &[
                "get",
                "vz",
                "pixie",
                "-n",
                "pl",
                "-o",
                "jsonpath={.status.vizierReason}|{.status.conditions[?(@.type==\"Degraded\")].status}",
            ],
        )
        .await;
        (why == "PEMsHighFailureRate|True").then_some(why)
    })
    .await;
    assert!(
        why.is_some(),
        "never PEMsHighFailureRate with Degraded True"
    );

    let pem_generation = || async {
        ok(
            &cluster,
            &[
                "get",
                "daemonset",
                "pixie-pem",
                "-n",
                "pl",
                "-o",
                "jsonpath={.metadata.generation}",
            ],
        )
        .await
    };
    let before = pem_generation().await;
    ok(
        &cluster,
        &[
            "patch",
            "vz",
            "pixie",
            "-n",
            "pl",
            "--type",
            "merge",
            "-p",
            r#"{"spec":{"pemMemoryRequest":"2Gi"}}"#,
        ],
    )
    .await;
    let reported = eventually(SETTLE, || async {
        let why = ok(
            &cluster,
            &[
                "get",
                "vz",
                "pixie",
                "-n",
                "pl",
                "-o",
                "jsonpath={.status.vizierPhase}|{.status.vizierReason}|{.status.message}",
            ],
        )
        .await;
        why.starts_with("Unhealthy|InvalidSpec").then_some(why)
    })
    .await
    .expect("the bad spec was not reported");
    assert!(reported.contains("exceeds pemMemoryLimit"), "{reported}");
    assert_eq!(
        pem_generation().await,
        before,
        "a bad spec must not touch the PEMs"
    );
    let describe = ok(&cluster, &["describe", "vz", "pixie", "-n", "pl"]).await;
    assert!(describe.contains("InvalidSpec"), "{describe}");

    operator.abort();
    assert_operator_never_refused(&cluster);
    cluster.stop().await;
}

/// Two nodes whose PEM and Kelvin images run `exe`, the Vizier CRD, namespace `pl` and
/// the operator.
async fn two_nodes_running(exe: &Path) -> (Cluster, tokio::task::JoinHandle<()>) {
    let cluster = Cluster::start(ClusterConfig {
        nodes: vec![NodeSpec::named("node-a"), NodeSpec::named("node-b")],
        images: HashMap::from([
            ("px/vizier-pem".into(), exe.to_path_buf()),
            ("px/kelvin".into(), exe.to_path_buf()),
        ]),
    })
    .await
    .unwrap();
    let crds = Path::new(env!("CARGO_MANIFEST_DIR")).join("../crds/viziers.px.dev.yaml");
    ok(&cluster, &["apply", "-f", &crds.display().to_string()]).await;
    ok(&cluster, &["create", "namespace", "pl"]).await;
    let operator = start_operator(&cluster, "operator-0").await;
    (cluster, operator)
}

/// A node whose kubelet stops reporting: the node lifecycle controller marks its PEM not
/// ready, and the Vizier says which node, Degraded (not Updating: nothing is rolling),
/// until the node is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_stops_reporting_degrades_the_vizier_until_it_is_back() {
    let scratch = Scratch::new("lost-node");
    let exe = stand_in(&scratch.0);
    let (cluster, operator) = two_nodes_running(&exe).await;
    let vizier = "apiVersion: px.dev/v1alpha1\nkind: Vizier\nmetadata: {name: pixie, namespace: pl}\nspec: {version: '1.0.0'}\n";
    assert!(
        cluster
            .kubectl_stdin(&["apply", "-f", "-"], Some(vizier))
            .await
            .unwrap()
            .success()
    );
    wait_healthy(&cluster).await;

    cluster.set_node_heartbeat("node-b", false);
    let lost = eventually(Duration::from_secs(60), || async {
        let why = ok(
            &cluster,
            &["get", "vz", "pixie", "-n", "pl", "-o", "jsonpath={.status.vizierPhase}|{.status.vizierReason}|{.status.message}|{.status.pemsReady}"],
        )
        .await;
        // PEMS is the DaemonSet's count, which leaves an unreachable node out of
        // "desired"; the DaemonSet controller updates it a moment after the node's
        // condition, so both are waited for.
        (why == "Degraded|PEMsNodeNotReady|1 of 2 PEMs are on nodes that stopped reporting: node-b|1/1")
            .then_some(why)
    })
    .await;
    assert!(
        lost.is_some(),
        "a lost node never degraded the Vizier: {}",
        ok(
            &cluster,
            &["get", "vz", "pixie", "-n", "pl", "-o", "jsonpath={.status.vizierPhase}|{.status.vizierReason}|{.status.message}|{.status.pemsReady}"],
        )
        .await
    );

    cluster.set_node_heartbeat("node-b", true);
    let row = wait_healthy(&cluster).await;
    assert_eq!(row[2], "2/2");
    operator.abort();
    assert_operator_never_refused(&cluster);
    cluster.stop().await;
}

/// With a watch namespace, a Vizier elsewhere is left alone and one inside is deployed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_namespace_confines_the_operator() {
    let scratch = Scratch::new("watch-ns");
    let exe = stand_in(&scratch.0);
    let cluster = Cluster::start(ClusterConfig {
        nodes: vec![NodeSpec::named("node-a")],
        images: HashMap::from([
            ("px/vizier-pem".into(), exe.clone()),
            ("px/kelvin".into(), exe.clone()),
        ]),
    })
    .await
    .unwrap();
    let crds = Path::new(env!("CARGO_MANIFEST_DIR")).join("../crds/viziers.px.dev.yaml");
    ok(&cluster, &["apply", "-f", &crds.display().to_string()]).await;
    ok(&cluster, &["create", "namespace", "pl"]).await;
    ok(&cluster, &["create", "namespace", "other"]).await;
    let config = operator_config("operator-0", Some("other"));
    let client = operator_client(&cluster, serde_json::json!({"watchNamespace": "other"})).await;
    let operator =
        tokio::spawn(async move { px_operator::run(client, config, std::future::pending()).await });
    for ns in ["pl", "other"] {
        let vz = format!(
            "apiVersion: px.dev/v1alpha1\nkind: Vizier\nmetadata: {{name: pixie, namespace: {ns}}}\nspec: {{version: '1.0.0'}}\n"
        );
        let out = cluster
            .kubectl_stdin(&["apply", "-f", "-"], Some(&vz))
            .await
            .unwrap();
        assert!(out.success(), "{out:?}");
    }
    let healthy = eventually(SETTLE, || async {
        let row = ok(
            &cluster,
            &["get", "vz", "pixie", "-n", "other", "--no-headers"],
        )
        .await;
        row.contains("Healthy").then_some(row)
    })
    .await;
    assert!(
        healthy.is_some(),
        "the Vizier in the watched namespace was not deployed"
    );
    let elsewhere = ok(
        &cluster,
        &[
            "get",
            "daemonsets,deployments,serviceaccounts",
            "-n",
            "pl",
            "-o",
            "name",
        ],
    )
    .await;
    // The `default` ServiceAccount is the controller-manager's, in every namespace.
    assert_eq!(
        elsewhere, "serviceaccount/default\n",
        "objects made outside the watch namespace"
    );
    let status = ok(
        &cluster,
        &["get", "vz", "pixie", "-n", "pl", "-o", "jsonpath={.status}"],
    )
    .await;
    assert_eq!(status, "", "status written outside the watch namespace");
    operator.abort();
    assert_operator_never_refused(&cluster);
    cluster.stop().await;
}
