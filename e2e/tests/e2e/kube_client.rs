//! The emulator driven by the `kube` client and runtime, as the operator drives it.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::{ApiResource, GroupVersionKind, PartialObjectMeta};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::{Controller, conditions, wait::await_condition, watcher};
use kube::{Client, Config, Resource, ResourceExt};
use px_e2e::{Cluster, ClusterConfig, EmulatorConfig};
use serde_json::json;
use tokio::sync::mpsc;

use super::fixtures::{SETTLE, TRACEPOINT_CRD};

async fn client(cluster: &Cluster) -> Client {
    let kubeconfig = Kubeconfig::read_from(cluster.kubeconfig()).unwrap();
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap();
    Client::try_from(config).unwrap()
}

fn config_map(name: &str, labels: &[(&str, &str)], value: &str) -> ConfigMap {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels.iter().copied().collect::<std::collections::BTreeMap<_, _>>()},
        "data": {"value": value},
    }))
    .unwrap()
}

/// What a watcher reported, reduced to what the tests compare.
#[derive(Debug, Clone, PartialEq)]
enum Seen {
    Init,
    InitApply(String),
    InitDone,
    Apply(String, String),
    Delete(String),
    Gone,
    OtherError(String),
}

fn spawn_watcher(api: Api<ConfigMap>, cfg: watcher::Config) -> mpsc::UnboundedReceiver<Seen> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut stream = watcher(api, cfg).boxed();
        while let Some(item) = stream.next().await {
            let seen = match item {
                Ok(watcher::Event::Init) => Seen::Init,
                Ok(watcher::Event::InitApply(o)) => Seen::InitApply(o.name_any()),
                Ok(watcher::Event::InitDone) => Seen::InitDone,
                Ok(watcher::Event::Apply(o)) => {
                    let value = o
                        .data
                        .as_ref()
                        .and_then(|d| d.get("value").cloned())
                        .unwrap_or_default();
                    Seen::Apply(o.name_any(), value)
                }
                Ok(watcher::Event::Delete(o)) => Seen::Delete(o.name_any()),
                Err(watcher::Error::WatchError(e)) if e.code == 410 => Seen::Gone,
                Err(e) => Seen::OtherError(e.to_string()),
            };
            if tx.send(seen).is_err() {
                return;
            }
        }
    });
    rx
}

async fn expect(rx: &mut mpsc::UnboundedReceiver<Seen>, want: Seen) {
    let got = tokio::time::timeout(SETTLE, rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, want);
}

#[tokio::test]
async fn watcher_sees_every_change() {
    let cluster = Cluster::start(ClusterConfig::default()).await.unwrap();
    let api: Api<ConfigMap> = Api::default_namespaced(client(&cluster).await);
    let mut seen = spawn_watcher(api.clone(), watcher::Config::default());
    expect(&mut seen, Seen::Init).await;
    expect(&mut seen, Seen::InitDone).await;

    api.create(&PostParams::default(), &config_map("a", &[], "1"))
        .await
        .unwrap();
    expect(&mut seen, Seen::Apply("a".into(), "1".into())).await;
    api.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"value": "2"}})),
    )
    .await
    .unwrap();
    expect(&mut seen, Seen::Apply("a".into(), "2".into())).await;
    let mut current = api.get("a").await.unwrap();
    current.data = Some([("value".to_string(), "3".to_string())].into());
    api.replace("a", &PostParams::default(), &current)
        .await
        .unwrap();
    expect(&mut seen, Seen::Apply("a".into(), "3".into())).await;
    api.create(&PostParams::default(), &config_map("b", &[], "1"))
        .await
        .unwrap();
    expect(&mut seen, Seen::Apply("b".into(), "1".into())).await;
    api.delete("a", &DeleteParams::default()).await.unwrap();
    expect(&mut seen, Seen::Delete("a".into())).await;

    // A stale replace is refused with 409, as on a real server.
    let err = api
        .replace("b", &PostParams::default(), &current)
        .await
        .unwrap_err();
    match err {
        kube::Error::Api(e) => assert_eq!((e.code, e.reason.as_str()), (409, "Conflict")),
        other => panic!("unexpected error {other:?}"),
    }
    cluster.stop().await;
}

#[tokio::test]
async fn watcher_relists_after_410_gone() {
    let config = ClusterConfig {
        emulator: EmulatorConfig {
            // No bookmark may move the watcher's resourceVersion past the compaction.
            bookmark_interval: Duration::from_secs(3600),
            ..EmulatorConfig::default()
        },
        ..ClusterConfig::default()
    };
    let cluster = Cluster::start(config).await.unwrap();
    let client = client(&cluster).await;
    let api: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let mut seen = spawn_watcher(
        api.clone(),
        watcher::Config::default().labels("app=watched"),
    );
    expect(&mut seen, Seen::Init).await;
    expect(&mut seen, Seen::InitDone).await;
    api.create(
        &PostParams::default(),
        &config_map("one", &[("app", "watched")], "1"),
    )
    .await
    .unwrap();
    expect(&mut seen, Seen::Apply("one".into(), "1".into())).await;

    // Changes the watcher does not see move the resourceVersion on; compaction then
    // drops the watcher's version from the window, and the reconnect gets 410 Gone.
    let secrets: Api<Secret> = Api::default_namespaced(client.clone());
    for i in 0..3 {
        let s: Secret =
            serde_json::from_value(json!({"metadata": {"name": format!("s{i}")}})).unwrap();
        secrets.create(&PostParams::default(), &s).await.unwrap();
    }
    cluster.emulator().compact();
    cluster.emulator().close_watches();
    expect(&mut seen, Seen::Gone).await;
    expect(&mut seen, Seen::Init).await;
    expect(&mut seen, Seen::InitApply("one".into())).await;
    expect(&mut seen, Seen::InitDone).await;
    api.create(
        &PostParams::default(),
        &config_map("two", &[("app", "watched")], "2"),
    )
    .await
    .unwrap();
    expect(&mut seen, Seen::Apply("two".into(), "2".into())).await;
    cluster.stop().await;
}

#[tokio::test]
async fn server_side_apply_behaves_as_documented() {
    let cluster = Cluster::start(ClusterConfig::default()).await.unwrap();
    let api: Api<ConfigMap> = Api::default_namespaced(client(&cluster).await);
    let applied = |data: serde_json::Value| {
        Patch::Apply(
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": data}),
        )
    };

    // Apply creates the object.
    api.patch(
        "c",
        &PatchParams::apply("alice"),
        &applied(json!({"key": "a", "extra": "x"})),
    )
    .await
    .unwrap();
    // Another manager setting the same field to another value conflicts.
    let err = api
        .patch(
            "c",
            &PatchParams::apply("bob"),
            &applied(json!({"key": "b"})),
        )
        .await
        .unwrap_err();
    match err {
        kube::Error::Api(e) => {
            assert_eq!((e.code, e.reason.as_str()), (409, "Conflict"));
            assert_eq!(
                e.message,
                "Apply failed with 1 conflict: conflict with \"alice\": .data.key"
            );
        }
        other => panic!("unexpected error {other:?}"),
    }
    // Setting it to the same value shares ownership instead.
    api.patch(
        "c",
        &PatchParams::apply("carol"),
        &applied(json!({"key": "a"})),
    )
    .await
    .unwrap();
    // Force takes the field over.
    let forced = api
        .patch(
            "c",
            &PatchParams::apply("bob").force(),
            &applied(json!({"key": "b"})),
        )
        .await
        .unwrap();
    assert_eq!(forced.data.unwrap()["key"], "b");
    // Alice stops applying both fields: `extra` (hers alone) goes, `key` (now bob's) stays.
    let nothing =
        Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}));
    let after = api
        .patch("c", &PatchParams::apply("alice"), &nothing)
        .await
        .unwrap();
    let data = after.data.clone().unwrap_or_default();
    assert_eq!(data.get("key").map(String::as_str), Some("b"));
    assert_eq!(data.get("extra"), None);
    let managers: Vec<String> = after
        .managed_fields()
        .iter()
        .filter_map(|m| m.manager.clone())
        .collect();
    // Force took the field from carol too, and managers left with nothing are dropped.
    assert_eq!(managers, ["bob"], "{:?}", after.managed_fields());
    cluster.stop().await;
}

/// A controller context: where reconciles report what they saw.
struct Ctx {
    seen: mpsc::UnboundedSender<(String, String)>,
}

#[derive(Debug, thiserror::Error)]
#[error("reconcile failed")]
struct ReconcileError;

#[tokio::test]
async fn controller_reconciles_custom_resources_and_writes_status() {
    let cluster = Cluster::start(ClusterConfig::default()).await.unwrap();
    let client = client(&cluster).await;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd: CustomResourceDefinition =
        serde_json::from_value(yaml_to_json(&cluster, TRACEPOINT_CRD).await).unwrap();
    crds.create(&PostParams::default(), &crd).await.unwrap();
    let established = await_condition(crds, "tracepoints.px.dev", conditions::is_crd_established());
    tokio::time::timeout(SETTLE, established)
        .await
        .unwrap()
        .unwrap();

    let gvk = GroupVersionKind::gvk("px.dev", "v1alpha1", "Tracepoint");
    let ar = ApiResource::from_gvk_with_plural(&gvk, "tracepoints");
    let tracepoints: Api<DynamicObject> = Api::default_namespaced_with(client.clone(), &ar);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let controller = Controller::new_with(tracepoints.clone(), watcher::Config::default(), ar.clone())
        .run(
            |tp: Arc<DynamicObject>, ctx: Arc<(Ctx, Api<DynamicObject>)>| async move {
                let replicas = tp.data["spec"]["replicas"].to_string();
                let status = Patch::Apply(json!({"apiVersion": "px.dev/v1alpha1", "kind": "Tracepoint", "metadata": {"name": tp.name_any()}, "status": {"state": format!("replicas={replicas}")}}));
                ctx.1.patch_status(&tp.name_any(), &PatchParams::apply("px-operator").force(), &status).await.map_err(|_| ReconcileError)?;
                let _ = ctx.0.seen.send((tp.name_any(), replicas));
                Ok::<_, ReconcileError>(Action::await_change())
            },
            |_, _, _| Action::requeue(Duration::from_millis(100)),
            Arc::new((Ctx { seen: tx }, tracepoints.clone())),
        )
        .for_each(|_| async {});
    let controller = tokio::spawn(controller);

    let tp = |replicas: i64| -> DynamicObject {
        serde_json::from_value(json!({"apiVersion": "px.dev/v1alpha1", "kind": "Tracepoint", "metadata": {"name": "tp1"}, "spec": {"probe": "http_events", "replicas": replicas}})).unwrap()
    };
    tracepoints
        .create(&PostParams::default(), &tp(1))
        .await
        .unwrap();
    let first = tokio::time::timeout(SETTLE, rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first, ("tp1".to_string(), "1".to_string()));
    tracepoints
        .patch(
            "tp1",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 2}})),
        )
        .await
        .unwrap();
    // The status write itself triggers a reconcile too; wait for the one that saw 2.
    let second = tokio::time::timeout(SETTLE, async {
        loop {
            let (name, replicas) = rx.recv().await.unwrap();
            if replicas == "2" {
                break name;
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(second, "tp1");
    let stored = tracepoints.get_status("tp1").await.unwrap();
    assert_eq!(stored.data["status"]["state"], "replicas=2");
    // Status writes do not bump the generation; the spec patch did.
    assert_eq!(stored.metadata.generation, Some(2));

    // Events recorded through events.k8s.io show in `kubectl describe` (core events).
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "px-operator".into(),
            instance: None,
        },
    );
    let reference = stored.object_ref(&ar);
    let event = Event {
        type_: EventType::Normal,
        reason: "Loaded".into(),
        note: Some("probe loaded on 2 nodes".into()),
        action: "Load".into(),
        secondary: None,
    };
    recorder.publish(&event, &reference).await.unwrap();
    let described = cluster
        .kubectl(&["describe", "tracepoint", "tp1"])
        .await
        .unwrap()
        .stdout;
    let events: Vec<&str> = described
        .lines()
        .skip_while(|l| !l.starts_with("Events:"))
        .collect();
    assert_eq!(
        events[1].split_whitespace().collect::<Vec<_>>(),
        ["Type", "Reason", "Age", "From", "Message"],
        "{described}"
    );
    let row: Vec<&str> = events[3].split_whitespace().collect();
    assert_eq!((row[0], row[1]), ("Normal", "Loaded"), "{described}");
    assert!(
        events[3].ends_with("px-operator  probe loaded on 2 nodes"),
        "{described}"
    );
    let listed = cluster.kubectl(&["get", "events"]).await.unwrap().stdout;
    let rows: Vec<Vec<&str>> = listed
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows[0],
        ["LAST", "SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"],
        "{listed}"
    );
    assert_eq!(
        rows[1][1..],
        [
            "Normal",
            "Loaded",
            "tracepoint/tp1",
            "probe",
            "loaded",
            "on",
            "2",
            "nodes"
        ],
        "{listed}"
    );
    controller.abort();
    cluster.stop().await;
}

/// The CRD fixture as JSON, converted by kubectl.
async fn yaml_to_json(cluster: &Cluster, yaml: &str) -> serde_json::Value {
    let out = cluster
        .kubectl_stdin(
            &["create", "--dry-run=client", "-o", "json", "-f", "-"],
            Some(yaml),
        )
        .await
        .unwrap();
    serde_json::from_str(&out.stdout).unwrap()
}

#[tokio::test]
async fn metadata_lists_and_watches() {
    let cluster = Cluster::start(ClusterConfig::default()).await.unwrap();
    let client = client(&cluster).await;
    let api: Api<ConfigMap> = Api::default_namespaced(client.clone());
    api.create(
        &PostParams::default(),
        &config_map("m1", &[("tier", "a")], "1"),
    )
    .await
    .unwrap();
    let listed = api
        .list_metadata(&kube::api::ListParams::default().labels("tier=a"))
        .await
        .unwrap();
    let names: Vec<String> = listed.items.iter().map(|m| m.name_any()).collect();
    assert_eq!(names, ["m1"]);
    let mut stream = watcher(
        Api::<PartialObjectMeta<ConfigMap>>::default_namespaced(client.clone()),
        watcher::Config::default().labels("tier=a"),
    )
    .boxed();
    let mut seen = Vec::new();
    api.create(
        &PostParams::default(),
        &config_map("m2", &[("tier", "a")], "2"),
    )
    .await
    .unwrap();
    while seen.len() < 2 {
        match tokio::time::timeout(SETTLE, stream.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
        {
            watcher::Event::InitApply(m) | watcher::Event::Apply(m) => {
                // The server sent metadata only, not whole objects.
                assert_eq!(
                    m.types.as_ref().map(|t| t.kind.as_str()),
                    Some("PartialObjectMetadata")
                );
                seen.push(m.name_any());
            }
            _ => {}
        }
    }
    seen.sort();
    assert_eq!(seen, ["m1", "m2"]);
    cluster.stop().await;
}

#[tokio::test]
async fn discovery_and_streaming_lists() {
    let cluster = Cluster::start(ClusterConfig::default()).await.unwrap();
    let client = client(&cluster).await;
    let crd: CustomResourceDefinition =
        serde_json::from_value(yaml_to_json(&cluster, TRACEPOINT_CRD).await).unwrap();
    Api::<CustomResourceDefinition>::all(client.clone())
        .create(&PostParams::default(), &crd)
        .await
        .unwrap();
    let discovery = kube::Discovery::new(client.clone()).run().await.unwrap();
    let group = discovery
        .groups()
        .find(|g| g.name() == "px.dev")
        .expect("px.dev discovered");
    let (ar, caps) = group
        .recommended_kind("Tracepoint")
        .expect("Tracepoint discovered");
    assert_eq!(
        (ar.plural.as_str(), ar.version.as_str()),
        ("tracepoints", "v1alpha1")
    );
    assert_eq!(caps.scope, kube::discovery::Scope::Namespaced);
    assert!(
        caps.subresources
            .iter()
            .any(|(sub, _)| sub.plural == "tracepoints/status" || sub.plural == "status"),
        "{:?}",
        caps.subresources
    );

    // A watcher using streaming lists (sendInitialEvents) gets the initial state, then changes.
    let api: Api<ConfigMap> = Api::default_namespaced(client);
    api.create(&PostParams::default(), &config_map("before", &[], "1"))
        .await
        .unwrap();
    let mut seen = spawn_watcher(api.clone(), watcher::Config::default().streaming_lists());
    expect(&mut seen, Seen::Init).await;
    expect(&mut seen, Seen::InitApply("before".into())).await;
    expect(&mut seen, Seen::InitDone).await;
    api.create(&PostParams::default(), &config_map("after", &[], "2"))
        .await
        .unwrap();
    expect(&mut seen, Seen::Apply("after".into(), "2".into())).await;
    cluster.stop().await;
}

#[tokio::test]
async fn kube_finalizer_helper_adds_and_removes_its_finalizer() {
    use kube::runtime::finalizer::{Event as Finalizer, finalizer};
    let cluster = Cluster::start(ClusterConfig::default()).await.unwrap();
    let api: Api<ConfigMap> = Api::default_namespaced(client(&cluster).await);
    api.create(&PostParams::default(), &config_map("guarded", &[], "1"))
        .await
        .unwrap();
    let name = "px.dev/cleanup";
    let run = |cm: ConfigMap| {
        let api = api.clone();
        async move {
            finalizer(&api, name, Arc::new(cm), |event| async move {
                Ok::<_, ReconcileError>(match event {
                    Finalizer::Apply(_) => Action::await_change(),
                    Finalizer::Cleanup(_) => Action::await_change(),
                })
            })
            .await
        }
    };
    // First pass adds the finalizer (a JSON patch that tests the list is absent).
    run(api.get("guarded").await.unwrap()).await.unwrap();
    assert_eq!(api.get("guarded").await.unwrap().finalizers(), [name]);
    // A second pass only reconciles.
    run(api.get("guarded").await.unwrap()).await.unwrap();
    assert_eq!(api.get("guarded").await.unwrap().finalizers(), [name]);
    // Deleting marks the object; the cleanup pass removes the finalizer and it goes.
    api.delete("guarded", &DeleteParams::default())
        .await
        .unwrap();
    let marked = api.get("guarded").await.unwrap();
    assert!(marked.metadata.deletion_timestamp.is_some());
    run(marked).await.unwrap();
    match api.get("guarded").await {
        Err(kube::Error::Api(e)) => assert_eq!(e.code, 404),
        other => panic!("still there: {other:?}"),
    }
    cluster.stop().await;
}
