//! Kelvin's watch of the cluster: one kube-runtime watcher per kind, cluster-wide, each
//! event reduced at once to the fields [`ClusterState`] keeps (a re-list too: it never
//! holds whole objects). Only Kelvin watches these; no PEM does, so the API server
//! serves them once per cluster, not once per node.

use std::collections::HashSet;
use std::fmt::Debug;

use futures_util::{Stream, StreamExt as _};
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::WatchStreamExt as _;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, Resource, ResourceExt as _};
use serde::de::DeserializeOwned;

use super::{ClusterMetadata, ClusterState, Kind};

/// How one kind enters the state: applied whole, keyed for removal.
struct Handler<K> {
    kind: Kind,
    apply: fn(&mut ClusterState, &K),
    key: fn(&K) -> String,
}

fn uid<K: Resource>(o: &K) -> String {
    o.meta().uid.clone().unwrap_or_default()
}

/// Watches Pods, Services, EndpointSlices, ReplicaSets and Nodes into `metadata` until
/// the returned tasks are aborted. A watch that fails is retried with backoff, and each
/// failure is logged (a missing RBAC rule names itself).
#[must_use]
pub fn watch_cluster(
    client: &Client,
    metadata: &ClusterMetadata,
) -> Vec<tokio::task::JoinHandle<()>> {
    vec![
        spawn::<Pod>(
            client,
            metadata,
            Handler {
                kind: Kind::Pod,
                apply: ClusterState::apply_pod,
                key: uid,
            },
        ),
        spawn::<Service>(
            client,
            metadata,
            Handler {
                kind: Kind::Service,
                apply: ClusterState::apply_service,
                key: uid,
            },
        ),
        spawn::<EndpointSlice>(
            client,
            metadata,
            Handler {
                kind: Kind::EndpointSlice,
                apply: ClusterState::apply_endpoint_slice,
                key: uid,
            },
        ),
        spawn::<ReplicaSet>(
            client,
            metadata,
            Handler {
                kind: Kind::ReplicaSet,
                apply: ClusterState::apply_replica_set,
                key: |o| format!("{}/{}", o.namespace().unwrap_or_default(), o.name_any()),
            },
        ),
        spawn::<Node>(
            client,
            metadata,
            Handler {
                kind: Kind::Node,
                apply: ClusterState::apply_node,
                key: |o| o.name_any(),
            },
        ),
    ]
}

fn spawn<K>(
    client: &Client,
    metadata: &ClusterMetadata,
    handler: Handler<K>,
) -> tokio::task::JoinHandle<()>
where
    K: Resource + Clone + Debug + DeserializeOwned + Send + Sync + 'static,
    K::DynamicType: Default,
{
    let api = Api::<K>::all(client.clone());
    let events = watcher::watcher(api, watcher::Config::default()).default_backoff();
    tokio::spawn(follow(events, metadata.clone(), handler))
}

async fn follow<K>(
    events: impl Stream<Item = Result<Event<K>, watcher::Error>>,
    metadata: ClusterMetadata,
    handler: Handler<K>,
) {
    let mut events = std::pin::pin!(events);
    let kind = handler.kind;
    // What a re-list has listed so far: at its end, everything else is gone.
    let mut listed: HashSet<String> = HashSet::new();
    while let Some(event) = events.next().await {
        match event {
            Ok(Event::Apply(o)) => metadata.update_cluster(|s| (handler.apply)(s, &o)),
            Ok(Event::Delete(o)) => metadata.update_cluster(|s| s.remove(kind, &(handler.key)(&o))),
            Ok(Event::Init) => listed.clear(),
            Ok(Event::InitApply(o)) => {
                listed.insert((handler.key)(&o));
                metadata.update_cluster(|s| (handler.apply)(s, &o));
            }
            Ok(Event::InitDone) => {
                metadata.update_cluster(|s| {
                    for key in s.keys(kind) {
                        if !listed.contains(&key) {
                            s.remove(kind, &key);
                        }
                    }
                });
                tracing::info!(?kind, objects = listed.len(), "cluster metadata listed");
                listed = HashSet::new();
            }
            Err(error) => {
                tracing::warn!(?kind, %error, "cluster metadata watch failed; retrying");
            }
        }
    }
}
