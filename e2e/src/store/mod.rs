//! The object store: every object as JSON, one global resourceVersion counter, a bounded
//! window of change events for watches, and the write semantics of the API server
//! (validation, generation, status subresource, finalizers, field ownership). Reads and
//! the watch window are here; writes are in `write`, deletions in `delete`.

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;

use serde_json::{Map, Value, json};
use tokio::sync::broadcast;

use crate::resources::{self, Resource};
use crate::selectors::{FieldSelector, LabelSelector};
use crate::status::{ApiError, ApiResult};

mod delete;
mod write;

/// One change, as watches deliver it.
#[derive(Debug, Clone)]
pub(crate) struct WatchEvent {
    /// `ADDED`, `MODIFIED` or `DELETED`.
    pub(crate) type_: &'static str,
    pub(crate) group: String,
    pub(crate) plural: String,
    pub(crate) object: Value,
    /// The object before the change, so selector watches can tell entering from leaving.
    pub(crate) old: Option<Value>,
    pub(crate) rv: u64,
}

/// How unknown fields are treated (`fieldValidation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FieldValidation {
    Ignore,
    Warn,
    Strict,
}

/// Per-request write options from the query string.
#[derive(Debug, Clone)]
pub(crate) struct WriteOptions {
    pub(crate) field_manager: String,
    pub(crate) dry_run: bool,
    pub(crate) validation: FieldValidation,
    /// `Some("status")` for the status subresource.
    pub(crate) subresource: Option<String>,
    pub(crate) force: bool,
}

/// The patch formats the API accepts, by Content-Type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PatchKind {
    Json,
    Merge,
    Strategic,
    Apply,
}

/// What a write returns: the object and any warnings for the `Warning` header.
#[derive(Debug)]
pub(crate) struct Written {
    pub(crate) object: Value,
    pub(crate) warnings: Vec<String>,
    pub(crate) created: bool,
}

/// Most bytes of objects the watch history keeps, whatever the event count.
const HISTORY_BYTES: usize = 64 << 20;

/// Approximate memory of an event: its objects' serialized size.
fn event_size(e: &WatchEvent) -> usize {
    let size = |v: &Value| serde_json::to_vec(v).map(|b| b.len()).unwrap_or(0);
    size(&e.object) + e.old.as_ref().map_or(0, size)
}

/// The finalizer that holds an owner deleted with `propagationPolicy=Foreground`.
pub(crate) const FOREGROUND: &str = "foregroundDeletion";

type ResKey = (String, String);
/// Live change events for one watcher.
pub(crate) type EventReceiver = broadcast::Receiver<Arc<WatchEvent>>;
type ObjKey = (String, String);

/// All state of the emulated API server.
pub(crate) struct Store {
    resources: Vec<Arc<Resource>>,
    objects: HashMap<ResKey, BTreeMap<ObjKey, Value>>,
    rv: u64,
    history: VecDeque<Arc<WatchEvent>>,
    /// Approximate bytes held by `history`.
    history_bytes: usize,
    /// Most bytes `history` may hold.
    history_budget: usize,
    window: usize,
    /// Events at or below this resourceVersion are no longer kept.
    compacted: u64,
    events: broadcast::Sender<Arc<WatchEvent>>,
    random: RandomState,
    counter: u64,
    /// Last Service cluster IP handed out (10.96.0.0/16).
    service_ips: u32,
}

fn meta_str<'a>(obj: &'a Value, key: &str) -> &'a str {
    obj.get("metadata")
        .and_then(|m| m.get(key))
        .and_then(Value::as_str)
        .unwrap_or_default()
}

fn meta_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.is_object() {
        *obj = json!({});
    }
    if !obj["metadata"].is_object() {
        obj["metadata"] = json!({});
    }
    match &mut obj["metadata"] {
        Value::Object(m) => m,
        _ => unreachable!("metadata was just made an object"),
    }
}

/// The fields whose change bumps `metadata.generation`.
fn spec_part(obj: &Value, has_status: bool) -> Value {
    let mut v = obj.clone();
    if let Some(m) = v.as_object_mut() {
        m.remove("metadata");
        m.remove("apiVersion");
        m.remove("kind");
        if has_status {
            m.remove("status");
        }
    }
    v
}

/// The object without fields that change on every write, to detect no-op updates.
fn comparable(obj: &Value) -> Value {
    let mut v = obj.clone();
    if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("resourceVersion");
        if let Some(Value::Array(entries)) = m.get_mut("managedFields") {
            for e in entries.iter_mut().filter_map(Value::as_object_mut) {
                e.remove("time");
            }
        }
    }
    v
}

fn is_dns_subdomain(name: &str) -> bool {
    let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.';
    !name.is_empty()
        && name.len() <= 253
        && name.chars().all(ok_char)
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
}

const DNS_SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";

impl Store {
    /// A store with the built-in kinds and the namespaces every cluster has.
    pub(crate) fn new(window: usize) -> Self {
        let (events, _) = broadcast::channel(4096);
        let mut store = Self {
            resources: resources::builtins().into_iter().map(Arc::new).collect(),
            objects: HashMap::new(),
            rv: 0,
            history: VecDeque::new(),
            history_bytes: 0,
            history_budget: HISTORY_BYTES,
            window: window.max(1),
            compacted: 0,
            events,
            random: RandomState::new(),
            counter: 0,
            service_ips: 1,
        };
        let service = json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "kubernetes", "namespace": "default", "labels": {"component": "apiserver", "provider": "kubernetes"}},
            "spec": {"clusterIP": "10.96.0.1", "ports": [{"name": "https", "port": 443, "targetPort": 6443}]},
        });
        for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            let obj = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
            if let Some(res) = store.resource("", "v1", "namespaces") {
                let _ = store.create(&res, None, obj, &WriteOptions::internal("kube-apiserver"));
            }
        }
        if let Some(res) = store.resource("", "v1", "services") {
            let _ = store.create(
                &res,
                None,
                service,
                &WriteOptions::internal("kube-apiserver"),
            );
        }
        store
    }

    /// Every served resource.
    pub(crate) fn resources(&self) -> &[Arc<Resource>] {
        &self.resources
    }

    /// The resource served at `group/version` under `plural`.
    pub(crate) fn resource(
        &self,
        group: &str,
        version: &str,
        plural: &str,
    ) -> Option<Arc<Resource>> {
        self.resources
            .iter()
            .find(|r| {
                r.group == group && r.plural == plural && r.versions.iter().any(|v| v == version)
            })
            .cloned()
    }

    /// The current resourceVersion.
    pub(crate) fn current_rv(&self) -> u64 {
        self.rv
    }

    fn uid(&mut self) -> String {
        self.counter += 1;
        let mut h = self.random.build_hasher();
        h.write_u64(self.counter);
        let a = h.finish();
        h.write_u64(a);
        let b = h.finish();
        format!(
            "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xfff,
            ((b >> 48) & 0x3fff) | 0x8000,
            b & 0xffff_ffff_ffff
        )
    }

    fn random_suffix(&mut self) -> String {
        const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
        let mut h = self.random.build_hasher();
        self.counter += 1;
        h.write_u64(self.counter);
        let mut x = h.finish();
        (0..5)
            .map(|_| {
                let c = ALPHABET[(x % ALPHABET.len() as u64) as usize] as char;
                x /= ALPHABET.len() as u64;
                c
            })
            .collect()
    }

    fn bucket(&self, res: &Resource) -> Option<&BTreeMap<ObjKey, Value>> {
        self.objects.get(&(res.group.clone(), res.plural.clone()))
    }

    /// The stored object, as served at `version`.
    fn stored(&self, res: &Resource, ns: &str, name: &str) -> Option<&Value> {
        self.bucket(res)?.get(&(ns.to_string(), name.to_string()))
    }

    fn served(res: &Resource, version: &str, mut obj: Value) -> Value {
        obj["apiVersion"] = json!(res.api_version(version));
        obj
    }

    /// GET of one object.
    pub(crate) fn get(
        &self,
        res: &Resource,
        version: &str,
        ns: &str,
        name: &str,
    ) -> ApiResult<Value> {
        if let Some(o) = self.stored(res, ns, name) {
            return Ok(Self::served(res, version, o.clone()));
        }
        crate::events::twin(&res.group, &res.plural)
            .and_then(|g| self.objects.get(&(g.to_string(), res.plural.clone())))
            .and_then(|b| b.get(&(ns.to_string(), name.to_string())))
            .map(|o| crate::events::convert(o, &res.group))
            .ok_or_else(|| ApiError::not_found(res.qualified(), name))
    }

    /// LIST, optionally within a namespace, filtered by selectors.
    pub(crate) fn list(
        &self,
        res: &Resource,
        version: &str,
        ns: Option<&str>,
        labels: &LabelSelector,
        fields: &FieldSelector,
    ) -> Vec<Value> {
        let in_ns = |((ons, _), _): &(&ObjKey, &Value)| ns.is_none_or(|n| n == ons);
        let own = self.bucket(res).into_iter().flat_map(|b| {
            b.iter()
                .filter(in_ns)
                .map(|(_, o)| Self::served(res, version, o.clone()))
        });
        let twin = crate::events::twin(&res.group, &res.plural)
            .and_then(|g| self.objects.get(&(g.to_string(), res.plural.clone())))
            .into_iter()
            .flat_map(|b| {
                b.iter()
                    .filter(in_ns)
                    .map(|(_, o)| crate::events::convert(o, &res.group))
            });
        own.chain(twin)
            .filter(|o| labels.matches(o) && fields.matches(o))
            .collect()
    }

    /// Every stored object of every resource (for controllers).
    pub(crate) fn all_objects(&self) -> impl Iterator<Item = (&Arc<Resource>, &Value)> {
        self.resources.iter().flat_map(move |r| {
            self.bucket(r)
                .into_iter()
                .flat_map(move |b| b.values().map(move |o| (r, o)))
        })
    }

    fn emit(&mut self, type_: &'static str, res: &Resource, object: Value, old: Option<Value>) {
        let event = Arc::new(WatchEvent {
            type_,
            group: res.group.clone(),
            plural: res.plural.clone(),
            rv: self.rv,
            object,
            old,
        });
        self.history_bytes += event_size(&event);
        self.history.push_back(Arc::clone(&event));
        // Bounded by count and by bytes; the newest event always stays.
        while self.history.len() > self.window
            || (self.history_bytes > self.history_budget && self.history.len() > 1)
        {
            if let Some(e) = self.history.pop_front() {
                self.history_bytes = self.history_bytes.saturating_sub(event_size(&e));
                self.compacted = e.rv;
            }
        }
        // No receivers is fine: nobody watches.
        let _ = self.events.send(event);
    }

    /// Events after `rv` still in the window, and a receiver for later ones; 410 when the
    /// window no longer reaches back to `rv`.
    pub(crate) fn watch_from(&self, rv: u64) -> ApiResult<(Vec<Arc<WatchEvent>>, EventReceiver)> {
        if rv < self.compacted {
            return Err(ApiError::expired(rv, self.compacted + 1));
        }
        let backlog = self.history.iter().filter(|e| e.rv > rv).cloned().collect();
        Ok((backlog, self.events.subscribe()))
    }

    /// A receiver for changes from now on.
    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Arc<WatchEvent>> {
        self.events.subscribe()
    }

    /// Forgets every kept event, as an etcd compaction does (a test hook for 410 Gone).
    pub(crate) fn compact(&mut self) {
        self.history.clear();
        self.history_bytes = 0;
        self.compacted = self.rv;
    }
}

impl WriteOptions {
    /// Options for writes the emulator makes itself (controllers, node agents).
    pub(crate) fn internal(manager: &str) -> Self {
        Self {
            field_manager: manager.to_string(),
            dry_run: false,
            validation: FieldValidation::Ignore,
            subresource: None,
            force: false,
        }
    }

    /// The same options for the status subresource.
    pub(crate) fn status(mut self) -> Self {
        self.subresource = Some("status".into());
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config_maps(store: &Store) -> Arc<Resource> {
        store
            .resource("", "v1", "configmaps")
            .unwrap_or_else(|| unreachable!("built in"))
    }

    #[test]
    fn watch_history_is_bounded_by_count_and_bytes() {
        let mut store = Store::new(5);
        let cms = config_maps(&store);
        let start = store.current_rv();
        for i in 0..10 {
            let cm = json!({"metadata": {"name": format!("c{i}")}});
            assert!(
                store
                    .create(&cms, Some("default"), cm, &WriteOptions::internal("t"))
                    .is_ok()
            );
        }
        assert_eq!(store.history.len(), 5);
        assert_eq!(store.watch_from(start).err().map(|e| e.code), Some(410));
        assert!(store.watch_from(store.current_rv() - 4).is_ok());

        let mut store = Store::new(1_000_000);
        store.history_budget = 1 << 20;
        let cms = config_maps(&store);
        let big = "x".repeat(64 << 10);
        for i in 0..40 {
            let cm = json!({"metadata": {"name": format!("c{i}")}, "data": {"v": big}});
            assert!(
                store
                    .create(&cms, Some("default"), cm, &WriteOptions::internal("t"))
                    .is_ok()
            );
        }
        assert!(store.history_bytes <= 1 << 20, "{}", store.history_bytes);
        assert!(store.history.len() < 20);
    }

    #[test]
    fn generation_moves_with_spec_only_and_stale_writes_conflict() {
        let mut store = Store::new(100);
        let deploys = store
            .resource("apps", "v1", "deployments")
            .unwrap_or_else(|| unreachable!("built in"));
        let d = json!({"metadata": {"name": "d"}, "spec": {"replicas": 1}});
        let created = store
            .create(&deploys, Some("default"), d, &WriteOptions::internal("t"))
            .map(|w| w.object)
            .unwrap_or_default();
        assert_eq!(created["metadata"]["generation"], 1);
        let mut status = created.clone();
        status["status"] = json!({"replicas": 1});
        let w = store
            .update(
                &deploys,
                "v1",
                "default",
                "d",
                status,
                &WriteOptions::internal("t").status(),
            )
            .map(|w| w.object)
            .unwrap_or_default();
        assert_eq!(
            (
                w["metadata"]["generation"].clone(),
                w["status"]["replicas"].clone()
            ),
            (json!(1), json!(1))
        );
        let mut spec = w.clone();
        spec["spec"]["replicas"] = json!(2);
        spec["status"] = json!({"replicas": 99});
        let w2 = store
            .update(
                &deploys,
                "v1",
                "default",
                "d",
                spec,
                &WriteOptions::internal("t"),
            )
            .map(|w| w.object)
            .unwrap_or_default();
        // Spec changed, status through the main resource ignored.
        assert_eq!(
            (
                w2["metadata"]["generation"].clone(),
                w2["status"]["replicas"].clone()
            ),
            (json!(2), json!(1))
        );
        // The first version is stale now.
        let stale = store.update(
            &deploys,
            "v1",
            "default",
            "d",
            created,
            &WriteOptions::internal("t"),
        );
        assert_eq!(stale.err().map(|e| e.code), Some(409));
    }
}
