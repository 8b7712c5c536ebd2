//! What every controller shares: the client, the event recorder, the namespace scope,
//! and the few API calls they all make (status by server-side apply, events, PEM pods).

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{WatchStreamExt, finalizer, reflector, watcher};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::desired::FIELD_MANAGER;
use crate::error::Error;

/// Labels of every PEM pod the operator made.
pub(crate) const PEM_POD_SELECTOR: &str =
    "app.kubernetes.io/name=vizier-pem,app.kubernetes.io/managed-by=px-operator";

/// What every reconcile shares.
pub struct Context {
    pub(crate) client: Client,
    pub(crate) recorder: Recorder,
    /// The namespace the operator is confined to, if any.
    pub(crate) namespace: Option<String>,
    /// Per Tracepoint uid, the nodes its probe was sent to since this operator started
    /// (so a node that stops being selected is told to remove it). Lost on restart:
    /// the first reconcile after a start tells every other PEM to remove it.
    pub(crate) applied: Mutex<HashMap<String, BTreeSet<String>>>,
    /// Failed reconciles in a row, per object (`kind/namespace/name`): the back-off.
    failures: Mutex<HashMap<String, u32>>,
    /// The PEM pods in scope, from one shared watch, started at first use.
    pem_pods: tokio::sync::OnceCell<PemPodCache>,
    /// How long the certificates the operator issues live.
    pub(crate) certificate_lifetime: Duration,
    /// The operator's own client certificates to the PEMs, per Vizier.
    pub(crate) identities: crate::tls::OperatorIdentities,
    /// The operator's certificate requests to cert-manager in flight.
    pub(crate) pending: crate::tls::PendingRequests,
}

/// Every PEM pod in the operator's scope, kept by one reflector (a watch, not a list
/// per reconcile), and a tick on every change for the controllers.
struct PemPodCache {
    store: reflector::Store<Pod>,
    changes: tokio::sync::broadcast::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for PemPodCache {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// How long a reconcile waits for the PEM pod cache's first list.
const CACHE_SYNC_TIMEOUT: Duration = Duration::from_secs(30);

impl Context {
    /// A context on `client`, watching `namespace` (all when `None`); events are
    /// reported as `px-operator` from `instance`.
    pub fn new(client: Client, namespace: Option<String>, instance: Option<String>) -> Self {
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: FIELD_MANAGER.to_string(),
                instance,
            },
        );
        Self {
            client,
            recorder,
            namespace,
            applied: Mutex::new(HashMap::new()),
            failures: Mutex::new(HashMap::new()),
            pem_pods: tokio::sync::OnceCell::new(),
            certificate_lifetime: crate::certs::DEFAULT_LIFETIME,
            identities: crate::tls::OperatorIdentities::default(),
            pending: crate::tls::PendingRequests::default(),
        }
    }

    /// Issues certificates that live `lifetime` (renewed with a third of it left).
    #[must_use]
    pub fn with_certificate_lifetime(mut self, lifetime: Duration) -> Self {
        self.certificate_lifetime = lifetime;
        self
    }

    /// The PEM pod cache, started (its watch) at the first call.
    async fn pem_pod_cache(&self) -> &PemPodCache {
        self.pem_pods
            .get_or_init(|| async {
                let api: Api<Pod> = self.scoped();
                let (store, writer) = reflector::store();
                let (changes, _) = tokio::sync::broadcast::channel(16);
                let ticks = changes.clone();
                let events = reflector(
                    writer,
                    watcher(api, watcher::Config::default().labels(PEM_POD_SELECTOR)),
                )
                .default_backoff()
                .touched_objects();
                let task = tokio::spawn(async move {
                    let mut events = std::pin::pin!(events);
                    while let Some(event) = events.next().await {
                        match event {
                            // No receiver yet is fine: nobody waits for a tick.
                            Ok(_) => drop(ticks.send(())),
                            Err(error) => {
                                tracing::warn!(%error, "watching the PEM pods failed; retrying");
                            }
                        }
                    }
                });
                PemPodCache {
                    store,
                    changes,
                    task,
                }
            })
            .await
    }

    /// An API over the operator's scope: its namespace, or every namespace.
    pub(crate) fn scoped<K>(&self) -> Api<K>
    where
        K: Resource<DynamicType = (), Scope = NamespaceResourceScope>,
    {
        scoped(&self.client, self.namespace.as_deref())
    }

    /// Publishes an event about `obj`; a failure is logged, never fatal.
    pub(crate) async fn publish<K>(&self, obj: &K, type_: EventType, reason: &str, note: String)
    where
        K: Resource<DynamicType = ()>,
    {
        let event = Event {
            type_,
            reason: reason.to_string(),
            note: Some(note),
            action: "Reconcile".to_string(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&event, &obj.object_ref(&())).await {
            tracing::warn!(error = %e, "cannot publish an event");
        }
    }

    /// Writes `status` on `obj` by server-side apply under the operator's field manager.
    pub(crate) async fn write_status<K, S>(&self, obj: &K, status: &S) -> Result<(), Error>
    where
        K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
            + Clone
            + std::fmt::Debug
            + DeserializeOwned,
        S: Serialize,
    {
        let name = obj.name_any();
        let ns = obj
            .namespace()
            .ok_or(Error::MissingMetadata { field: "namespace" })?;
        let api: Api<K> = Api::namespaced(self.client.clone(), &ns);
        let patch = serde_json::json!({
            "apiVersion": K::api_version(&()),
            "kind": K::kind(&()),
            "metadata": {"name": name, "namespace": ns},
            "status": status,
        });
        crate::metrics::status_written(&K::kind(&()));
        api.patch_status(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await
        .map_err(|source| Error::PatchStatus {
            kind: K::kind(&()).to_string(),
            name,
            source,
        })?;
        Ok(())
    }

    /// Every Vizier in namespace `ns`, or in the operator's whole scope, as (namespace,
    /// name); those being deleted are left out.
    pub(crate) async fn viziers(&self, ns: Option<&str>) -> Result<Vec<(String, String)>, Error> {
        let api: Api<px_crds::Vizier> = match ns {
            Some(ns) => Api::namespaced(self.client.clone(), ns),
            None => self.scoped(),
        };
        let viziers = api
            .list(&ListParams::default())
            .await
            .map_err(|source| Error::Read {
                what: "the Viziers",
                source,
            })?;
        Ok(viziers
            .items
            .iter()
            .filter(|v| v.metadata.deletion_timestamp.is_none())
            .map(|v| (v.namespace().unwrap_or_default(), v.name_any()))
            .collect())
    }

    /// Whether namespace `ns` has a Vizier.
    pub(crate) async fn has_vizier(&self, ns: &str) -> Result<bool, Error> {
        Ok(!self.viziers(Some(ns)).await?.is_empty())
    }

    /// One PEM per node in `namespace` (or the operator's whole scope), each with the
    /// service token and the TLS of its Vizier.
    pub(crate) async fn pems(
        &self,
        namespace: Option<&str>,
    ) -> Result<Vec<crate::pem::Pem>, Error> {
        let mut pems = crate::pem::pems_by_node(&self.pem_pods(namespace).await?);
        type Credentials = (Option<String>, Option<crate::tls::PemTls>);
        let mut credentials: std::collections::BTreeMap<(String, String), Credentials> =
            std::collections::BTreeMap::new();
        for pem in &mut pems {
            let vizier = (pem.namespace.clone(), pem.vizier.clone());
            if !credentials.contains_key(&vizier) {
                let token = crate::api_key::pem_token(self, &vizier.0, &vizier.1).await?;
                let tls = crate::tls::pem_tls(self, &vizier.0, &vizier.1).await?;
                credentials.insert(vizier.clone(), (token, tls));
            }
            if let Some((token, tls)) = credentials.get(&vizier) {
                pem.token.clone_from(token);
                pem.tls.clone_from(tls);
            }
        }
        Ok(pems)
    }

    /// The PEM pods in `namespace`, or in the operator's whole scope, from the shared
    /// cache: no request to the API server per reconcile.
    pub(crate) async fn pem_pods(&self, namespace: Option<&str>) -> Result<Vec<Pod>, Error> {
        let cache = self.pem_pod_cache().await;
        tokio::time::timeout(CACHE_SYNC_TIMEOUT, cache.store.wait_until_ready())
            .await
            .map_err(|_| Error::CacheNotSynced { what: "PEM pods" })?
            .map_err(|_| Error::CacheNotSynced { what: "PEM pods" })?;
        Ok(cache
            .store
            .state()
            .iter()
            .filter(|p| namespace.is_none_or(|ns| p.namespace().as_deref() == Some(ns)))
            .map(|p| (**p).clone())
            .collect())
    }

    /// Ticks whenever a PEM pod in scope is added, changes or goes: a restarted PEM
    /// gets its probes and budgets back, and a new node its probes, without waiting for
    /// the periodic resync.
    pub(crate) fn pem_pod_changes(self: &Arc<Self>) -> impl Stream<Item = ()> + Send + 'static {
        let ctx = Arc::clone(self);
        futures_util::stream::once(async move { ctx.pem_pod_cache().await.changes.subscribe() })
            .flat_map(|rx| {
                futures_util::stream::unfold(rx, |mut rx| async move {
                    match rx.recv().await {
                        // A lagging receiver missed ticks: one tick covers them all.
                        Ok(()) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                            Some(((), rx))
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => None,
                    }
                })
            })
    }
}

/// An API over `ns`, or every namespace when `None`.
pub(crate) fn scoped<K>(client: &Client, ns: Option<&str>) -> Api<K>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>,
{
    match ns {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

impl Context {
    /// Runs `reconcile` under the finalizer `name` of `obj` (kube's `finalizer`: it adds
    /// the finalizer first, and removes it once `Cleanup` succeeds).
    pub(crate) async fn finalized<K, F, Fut>(
        &self,
        obj: Arc<K>,
        name: &'static str,
        reconcile: F,
    ) -> Result<Action, Error>
    where
        K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
            + Clone
            + std::fmt::Debug
            + Serialize
            + DeserializeOwned,
        F: FnOnce(finalizer::Event<K>) -> Fut,
        Fut: Future<Output = Result<Action, Error>>,
    {
        let ns = obj
            .namespace()
            .ok_or(Error::MissingMetadata { field: "namespace" })?;
        let api: Api<K> = Api::namespaced(self.client.clone(), &ns);
        finalizer::finalizer(&api, name, obj, reconcile)
            .await
            .map_err(|e| Error::Finalizer {
                finalizer: name,
                source: Box::new(e),
            })
    }
}

/// Runs the controller of kind `K` over the scope of `ctx` until `shutdown` resolves:
/// on every change of a `K`, on every PEM pod change (every `K`: what the PEMs hold
/// must follow the PEMs), and when each reconcile asks to be requeued.
pub(crate) async fn run_on_pem_changes<K, R, Fut>(
    ctx: Arc<Context>,
    reconcile: R,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + DeserializeOwned
        + Send
        + Sync
        + 'static,
    R: FnMut(Arc<K>, Arc<Context>) -> Fut,
    Fut: Future<Output = Result<Action, Error>> + Send + 'static,
{
    let results = Controller::new(ctx.scoped::<K>(), watcher::Config::default())
        .reconcile_all_on(ctx.pem_pod_changes())
        .graceful_shutdown_on(shutdown)
        .run(observed(reconcile), error_policy::<K>, ctx);
    drain(results).await;
}

/// First retry after a failed reconcile; it doubles with each failure in a row.
const FIRST_RETRY: Duration = Duration::from_secs(2);
/// Longest wait between retries.
const LONGEST_RETRY: Duration = Duration::from_secs(300);

/// The object's key in the back-off table.
fn failure_key<K: Resource<DynamicType = ()>>(obj: &K) -> String {
    format!(
        "{}/{}/{}",
        K::kind(&()),
        obj.namespace().unwrap_or_default(),
        obj.name_any()
    )
}

/// The wait before retrying after the `n`th failure in a row: 2 s, 4 s, 8 s, ... 5 min.
pub(crate) fn retry_after(n: u32) -> Duration {
    FIRST_RETRY
        .saturating_mul(1 << n.saturating_sub(1).min(16))
        .min(LONGEST_RETRY)
}

/// `reconcile`, counted and timed in the metrics, with its failures in a row counted
/// per object for [`error_policy`]'s back-off (a success resets them).
pub(crate) fn observed<K, R, Fut>(
    mut reconcile: R,
) -> impl FnMut(Arc<K>, Arc<Context>) -> futures_util::future::BoxFuture<'static, Result<Action, Error>>
where
    K: Resource<DynamicType = ()> + Send + Sync + 'static,
    R: FnMut(Arc<K>, Arc<Context>) -> Fut,
    Fut: Future<Output = Result<Action, Error>> + Send + 'static,
{
    move |obj, ctx| {
        let key = failure_key(obj.as_ref());
        let run = reconcile(obj, Arc::clone(&ctx));
        Box::pin(async move {
            let started = std::time::Instant::now();
            let result = run.await;
            crate::metrics::reconciled(
                &K::kind(&()),
                started.elapsed(),
                result.as_ref().err().map(Error::metric_label),
            );
            let mut failures = ctx
                .failures
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            match &result {
                Ok(_) => {
                    failures.remove(&key);
                }
                Err(_) => *failures.entry(key).or_insert(0) += 1,
            }
            result
        })
    }
}

/// Logs a failed reconcile of any kind and retries with exponential back-off per object.
pub(crate) fn error_policy<K>(obj: Arc<K>, error: &Error, ctx: Arc<Context>) -> Action
where
    K: Resource<DynamicType = ()>,
{
    let failures = ctx
        .failures
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .get(&failure_key(obj.as_ref()))
        .copied()
        .unwrap_or(1);
    let retry = retry_after(failures);
    tracing::warn!(
        retry_in = ?retry,
        kind = %K::kind(&()),
        name = %obj.name_any(),
        namespace = ?obj.namespace(),
        failure = error.metric_label(),
        error = %error,
        source = ?std::error::Error::source(error).map(ToString::to_string),
        "reconcile failed"
    );
    Action::requeue(retry)
}

/// Drives a controller's result stream to its end, logging each result.
pub(crate) async fn drain<K, E, S>(results: S)
where
    K: Resource,
    E: std::fmt::Display,
    S: Stream<Item = Result<(ObjectRef<K>, Action), E>>,
{
    results
        .for_each(|result| async move {
            match result {
                Ok((obj, _)) => {
                    tracing::debug!(kind = %K::kind(&obj.dyntype), name = %obj.name, "reconciled")
                }
                Err(e) => tracing::debug!(error = %e, "controller"),
            }
        })
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_exponentially_to_five_minutes() {
        let waits: Vec<u64> = (1..=10).map(|n| retry_after(n).as_secs()).collect();
        assert_eq!(waits, [2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
        assert_eq!(retry_after(u32::MAX).as_secs(), 300);
    }
}
