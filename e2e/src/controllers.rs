//! The emulated controller-manager and scheduler: garbage collection, namespace
//! deletion, Deployment and DaemonSet pods, and pod placement on nodes.
//!
//! Deployments own their pods directly (no ReplicaSets) and replace them all at once
//! when the template changes: enough for tests that create, scale and delete them.

use std::collections::{HashMap, HashSet};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::{broadcast, watch};

use crate::patch::set_field;
use crate::resources::Resource;
use crate::selectors::{FieldSelector, LabelSelector, labels_match};
use crate::server::Shared;
use crate::store::{FOREGROUND, Store, WriteOptions};

const MANAGER: &str = "kube-controller-manager";

/// Runs until `stop` changes: reconciles after every change and once a second.
pub(crate) async fn run(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut events = shared.lock().subscribe();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tick.tick() => {}
            e = events.recv() => {
                if let Err(broadcast::error::RecvError::Closed) = e {
                    return;
                }
                // Coalesce a burst of changes into one pass.
                while events.try_recv().is_ok() {}
            }
        }
        reconcile(&mut shared.lock());
    }
}

fn s<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.pointer(ptr).and_then(Value::as_str).unwrap_or_default()
}

fn res(store: &Store, group: &str, plural: &str) -> Option<Arc<Resource>> {
    store.resource(group, "v1", plural)
}

/// One pass of every controller.
pub(crate) fn reconcile(store: &mut Store) {
    namespaces(store);
    foreground(store);
    garbage_collect(store);
    deployments(store);
    daemonsets(store);
    schedule(store);
}

fn namespaces(store: &mut Store) {
    let terminating: Vec<String> = store
        .all_objects()
        .filter(|(r, o)| {
            r.group.is_empty()
                && r.kind == "Namespace"
                && o.pointer("/metadata/deletionTimestamp").is_some()
        })
        .map(|(_, o)| s(o, "/metadata/name").to_string())
        .collect();
    for ns in terminating {
        let inside: Vec<(Arc<Resource>, String, bool)> = store
            .all_objects()
            .filter(|(r, o)| r.namespaced && s(o, "/metadata/namespace") == ns)
            .map(|(r, o)| {
                (
                    Arc::clone(r),
                    s(o, "/metadata/name").to_string(),
                    o.pointer("/metadata/deletionTimestamp").is_some(),
                )
            })
            .collect();
        if inside.is_empty() {
            store.finalize_namespace(&ns);
            continue;
        }
        for (r, name, deleting) in inside {
            if !deleting {
                let version = r.storage_version().to_string();
                let _ = store.delete(&r, &version, &ns, &name, &json!({}), false);
            }
        }
    }
}

/// Owners deleted in the foreground: delete their dependents, then let them go.
fn foreground(store: &mut Store) {
    let owners: Vec<(Arc<Resource>, Value)> = store
        .all_objects()
        .filter(|(_, o)| {
            o.pointer("/metadata/deletionTimestamp").is_some()
                && o.pointer("/metadata/finalizers")
                    .and_then(Value::as_array)
                    .is_some_and(|f| f.contains(&json!(FOREGROUND)))
        })
        .map(|(r, o)| (Arc::clone(r), o.clone()))
        .collect();
    for (r, owner) in owners {
        let uid = s(&owner, "/metadata/uid").to_string();
        let dependents: Vec<(Arc<Resource>, String, String, bool)> = store
            .all_objects()
            .filter(|(_, o)| {
                o.pointer("/metadata/ownerReferences")
                    .and_then(Value::as_array)
                    .is_some_and(|refs| refs.iter().any(|x| s(x, "/uid") == uid))
            })
            .map(|(dr, o)| {
                (
                    Arc::clone(dr),
                    s(o, "/metadata/namespace").to_string(),
                    s(o, "/metadata/name").to_string(),
                    o.pointer("/metadata/deletionTimestamp").is_some(),
                )
            })
            .collect();
        if dependents.is_empty() {
            let mut released = owner.clone();
            if let Some(Value::Array(f)) = released.pointer_mut("/metadata/finalizers") {
                f.retain(|x| x != FOREGROUND);
            }
            let version = r.storage_version().to_string();
            let _ = store.update(
                &r,
                &version,
                s(&owner, "/metadata/namespace"),
                s(&owner, "/metadata/name"),
                released,
                &WriteOptions::internal(MANAGER),
            );
            continue;
        }
        for (dr, ns, name, deleting) in dependents {
            if !deleting {
                let version = dr.storage_version().to_string();
                let _ = store.delete(
                    &dr,
                    &version,
                    &ns,
                    &name,
                    &json!({"propagationPolicy": "Foreground"}),
                    false,
                );
            }
        }
    }
}

fn garbage_collect(store: &mut Store) {
    let live: HashSet<String> = store
        .all_objects()
        .map(|(_, o)| s(o, "/metadata/uid").to_string())
        .collect();
    let orphans: Vec<(Arc<Resource>, String, String)> = store
        .all_objects()
        .filter(|(_, o)| o.pointer("/metadata/deletionTimestamp").is_none())
        .filter(|(_, o)| {
            o.pointer("/metadata/ownerReferences")
                .and_then(Value::as_array)
                .is_some_and(|refs| {
                    !refs.is_empty() && refs.iter().all(|r| !live.contains(s(r, "/uid")))
                })
        })
        .map(|(r, o)| {
            (
                Arc::clone(r),
                s(o, "/metadata/namespace").to_string(),
                s(o, "/metadata/name").to_string(),
            )
        })
        .collect();
    for (r, ns, name) in orphans {
        let version = r.storage_version().to_string();
        let _ = store.delete(
            &r,
            &version,
            &ns,
            &name,
            &json!({"propagationPolicy": "Background"}),
            false,
        );
    }
}

fn template_hash(template: &Value) -> String {
    let mut h = DefaultHasher::new();
    template.to_string().hash(&mut h);
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut x = h.finish();
    (0..10)
        .map(|_| {
            let c = ALPHABET[(x % 27) as usize] as char;
            x /= 27;
            c
        })
        .collect()
}

fn owned_by<'a>(pods: &'a [Value], uid: &str) -> Vec<&'a Value> {
    pods.iter()
        .filter(|p| {
            p.pointer("/metadata/ownerReferences")
                .and_then(Value::as_array)
                .is_some_and(|refs| {
                    refs.iter()
                        .any(|r| s(r, "/uid") == uid && r["controller"] == json!(true))
                })
        })
        .collect()
}

fn pod_ready(pod: &Value) -> bool {
    pod.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
}

fn new_pod(owner: &Value, kind: &str, hash: &str, node: Option<&str>) -> Value {
    let template = owner
        .pointer("/spec/template")
        .cloned()
        .unwrap_or_else(|| json!({}));
    let mut labels = template
        .pointer("/metadata/labels")
        .cloned()
        .unwrap_or_else(|| json!({}));
    let hash_label = if kind == "DaemonSet" {
        "controller-revision-hash"
    } else {
        "pod-template-hash"
    };
    if !labels.is_object() {
        labels = json!({});
    }
    set_field(&mut labels, &[hash_label], json!(hash));
    let name = s(owner, "/metadata/name");
    let prefix = if kind == "DaemonSet" {
        format!("{name}-")
    } else {
        format!("{name}-{hash}-")
    };
    let mut pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": prefix,
            "namespace": s(owner, "/metadata/namespace"),
            "labels": labels,
            "ownerReferences": [{
                "apiVersion": "apps/v1",
                "kind": kind,
                "name": name,
                "uid": s(owner, "/metadata/uid"),
                "controller": true,
                "blockOwnerDeletion": true,
            }],
        },
        "spec": template.get("spec").cloned().unwrap_or_else(|| json!({})),
    });
    if let Some(a) = template.pointer("/metadata/annotations") {
        pod["metadata"]["annotations"] = a.clone();
    }
    if let Some(n) = node {
        set_field(&mut pod, &["spec", "nodeName"], json!(n));
    }
    pod
}

fn list_all(store: &Store, r: &Resource) -> Vec<Value> {
    store.list(
        r,
        "v1",
        None,
        &LabelSelector::default(),
        &FieldSelector::default(),
    )
}

fn delete_pod(store: &mut Store, pods: &Resource, pod: &Value) {
    let Some(r) = store.resource("", "v1", &pods.plural) else {
        return;
    };
    let _ = store.delete(
        &r,
        "v1",
        s(pod, "/metadata/namespace"),
        s(pod, "/metadata/name"),
        &json!({}),
        false,
    );
}

fn set_status(store: &mut Store, r: &Arc<Resource>, obj: &Value, status: Value) {
    if obj.get("status") == Some(&status) {
        return;
    }
    let mut new = obj.clone();
    new["status"] = status;
    let version = r.storage_version().to_string();
    let _ = store.update(
        r,
        &version,
        s(obj, "/metadata/namespace"),
        s(obj, "/metadata/name"),
        new,
        &WriteOptions::internal(MANAGER).status(),
    );
}

fn deployments(store: &mut Store) {
    let (Some(deploys), Some(pods_res)) = (
        store.resource("apps", "v1", "deployments"),
        res(store, "", "pods"),
    ) else {
        return;
    };
    for d in list_all(store, &deploys) {
        if d.pointer("/metadata/deletionTimestamp").is_some() {
            continue;
        }
        let hash = template_hash(d.pointer("/spec/template").unwrap_or(&Value::Null));
        let want = d
            .pointer("/spec/replicas")
            .and_then(Value::as_i64)
            .unwrap_or(1)
            .max(0) as usize;
        let pods = list_all(store, &pods_res);
        let mine: Vec<Value> = owned_by(&pods, s(&d, "/metadata/uid"))
            .into_iter()
            .cloned()
            .collect();
        let (current, stale): (Vec<&Value>, Vec<&Value>) = mine
            .iter()
            .partition(|p| s(p, "/metadata/labels/pod-template-hash") == hash);
        for p in stale {
            delete_pod(store, &pods_res, p);
        }
        let live: Vec<&Value> = current
            .into_iter()
            .filter(|p| p.pointer("/metadata/deletionTimestamp").is_none())
            .collect();
        for p in live.iter().skip(want) {
            delete_pod(store, &pods_res, p);
        }
        for _ in live.len()..want {
            let _ = store.create(
                &pods_res,
                None,
                new_pod(&d, "Deployment", &hash, None),
                &WriteOptions::internal(MANAGER),
            );
        }
        let kept = live.len().min(want);
        let ready = live.iter().take(want).filter(|p| pod_ready(p)).count();
        let available = if ready >= want { "True" } else { "False" };
        let old_available = d
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .and_then(|cs| cs.iter().find(|c| c["type"] == "Available"))
            .cloned();
        let condition = match old_available {
            Some(c) if c["status"] == available => c,
            _ => {
                json!({"type": "Available", "status": available, "reason": if available == "True" { "MinimumReplicasAvailable" } else { "MinimumReplicasUnavailable" }, "lastTransitionTime": crate::time::now_rfc3339(), "lastUpdateTime": crate::time::now_rfc3339()})
            }
        };
        let status = json!({
            "observedGeneration": d.pointer("/metadata/generation").cloned().unwrap_or(json!(1)),
            "replicas": kept,
            "updatedReplicas": kept,
            "readyReplicas": ready,
            "availableReplicas": ready,
            "unavailableReplicas": want.saturating_sub(ready),
            "conditions": [condition],
        });
        set_status(store, &deploys, &d, status);
    }
}

fn node_ready(node: &Value) -> bool {
    node.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
}

fn daemonsets(store: &mut Store) {
    let (Some(sets), Some(pods_res), Some(nodes_res)) = (
        store.resource("apps", "v1", "daemonsets"),
        res(store, "", "pods"),
        res(store, "", "nodes"),
    ) else {
        return;
    };
    let nodes = list_all(store, &nodes_res);
    for ds in list_all(store, &sets) {
        if ds.pointer("/metadata/deletionTimestamp").is_some() {
            continue;
        }
        let hash = template_hash(ds.pointer("/spec/template").unwrap_or(&Value::Null));
        let selector = ds.pointer("/spec/template/spec/nodeSelector");
        let eligible: Vec<&str> = nodes
            .iter()
            .filter(|n| labels_match(n.pointer("/metadata/labels"), selector))
            .map(|n| s(n, "/metadata/name"))
            .collect();
        let pods = list_all(store, &pods_res);
        let mine: Vec<Value> = owned_by(&pods, s(&ds, "/metadata/uid"))
            .into_iter()
            .cloned()
            .collect();
        let mut placed: HashMap<String, &Value> = HashMap::new();
        for p in &mine {
            let node = s(p, "/spec/nodeName");
            let current = s(p, "/metadata/labels/controller-revision-hash") == hash;
            if !eligible.contains(&node) || !current || placed.contains_key(node) {
                delete_pod(store, &pods_res, p);
            } else if p.pointer("/metadata/deletionTimestamp").is_none() {
                placed.insert(node.to_string(), p);
            }
        }
        for node in &eligible {
            if !placed.contains_key(*node) {
                let _ = store.create(
                    &pods_res,
                    None,
                    new_pod(&ds, "DaemonSet", &hash, Some(node)),
                    &WriteOptions::internal(MANAGER),
                );
            }
        }
        let ready = placed.values().filter(|p| pod_ready(p)).count();
        let status = json!({
            "observedGeneration": ds.pointer("/metadata/generation").cloned().unwrap_or(json!(1)),
            "desiredNumberScheduled": eligible.len(),
            "currentNumberScheduled": placed.len(),
            "updatedNumberScheduled": placed.len(),
            "numberReady": ready,
            "numberAvailable": ready,
            "numberMisscheduled": 0,
        });
        set_status(store, &sets, &ds, status);
    }
}

/// Places pods without `spec.nodeName` on the ready node (matching their nodeSelector)
/// that runs the fewest pods.
fn schedule(store: &mut Store) {
    let (Some(pods_res), Some(nodes_res)) = (res(store, "", "pods"), res(store, "", "nodes"))
    else {
        return;
    };
    let nodes: Vec<Value> = list_all(store, &nodes_res)
        .into_iter()
        .filter(node_ready)
        .collect();
    if nodes.is_empty() {
        return;
    }
    let pods = list_all(store, &pods_res);
    let mut load: HashMap<String, usize> = HashMap::new();
    for p in &pods {
        *load.entry(s(p, "/spec/nodeName").to_string()).or_default() += 1;
    }
    for p in pods.iter().filter(|p| {
        s(p, "/spec/nodeName").is_empty() && p.pointer("/metadata/deletionTimestamp").is_none()
    }) {
        let selector = p.pointer("/spec/nodeSelector");
        let best = nodes
            .iter()
            .filter(|n| labels_match(n.pointer("/metadata/labels"), selector))
            .map(|n| s(n, "/metadata/name").to_string())
            .min_by_key(|n| (load.get(n).copied().unwrap_or(0), n.clone()));
        if let Some(node) = best {
            let mut bound = p.clone();
            if !set_field(&mut bound, &["spec", "nodeName"], json!(node)) {
                continue;
            }
            let _ = store.update(
                &pods_res,
                "v1",
                s(p, "/metadata/namespace"),
                s(p, "/metadata/name"),
                bound,
                &WriteOptions::internal("kube-scheduler"),
            );
            *load.entry(node).or_default() += 1;
        }
    }
}
