//! The object store: every object as JSON, one global resourceVersion counter, a bounded
//! window of change events for watches, and the write semantics of the API server
//! (validation, generation, status subresource, finalizers, field ownership).

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;

use serde_json::{Map, Value, json};
use tokio::sync::broadcast;

use crate::managed::{self, Manager};
use crate::patch;
use crate::resources::{self, Resource};
use crate::selectors::{FieldSelector, LabelSelector};
use crate::status::{ApiError, ApiResult, Cause};
use crate::time::now_rfc3339;
use crate::{crd, validation};

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

    fn check_scope(&self, res: &Resource, ns: Option<&str>) -> ApiResult<String> {
        match (res.namespaced, ns) {
            (true, Some(ns)) => {
                let ns_res = self.resource("", "v1", "namespaces");
                let exists = ns_res
                    .as_ref()
                    .is_some_and(|r| self.stored(r, "", ns).is_some());
                if exists {
                    Ok(ns.to_string())
                } else {
                    Err(ApiError::not_found(
                        crate::status::Qualified {
                            group: "",
                            plural: "namespaces",
                            kind: "Namespace",
                        },
                        ns,
                    ))
                }
            }
            (true, None) => Err(ApiError::bad_request(
                "the namespace of the object must be set for a namespaced resource",
            )),
            (false, _) => Ok(String::new()),
        }
    }

    /// Schema handling for custom resources; field validation for unknown fields.
    fn validate_object(
        &self,
        res: &Resource,
        version: &str,
        obj: &mut Value,
        old: Option<&Value>,
        opts: &WriteOptions,
    ) -> ApiResult<Vec<String>> {
        let name = meta_str(obj, "name").to_string();
        let mut causes = Vec::new();
        if !is_dns_subdomain(&name) && !name.is_empty() {
            causes.push(Cause {
                reason: "FieldValueInvalid".into(),
                message: format!(
                    "Invalid value: {}: {DNS_SUBDOMAIN_MSG}",
                    validation::go_value(&json!(name))
                ),
                field: "metadata.name".into(),
            });
        }
        let mut warnings = Vec::new();
        if let Some(schema) = res.schema(version).cloned() {
            // Metadata, apiVersion and kind are checked by the server itself, not the schema.
            let mut body = obj.clone();
            if let Some(m) = body.as_object_mut() {
                m.remove("metadata");
                m.remove("apiVersion");
                m.remove("kind");
            }
            let mut schema = schema;
            if let Some(p) = schema.get_mut("properties").and_then(Value::as_object_mut) {
                p.remove("metadata");
                p.remove("apiVersion");
                p.remove("kind");
            }
            validation::apply_defaults(&schema, &mut body);
            let mut unknown = Vec::new();
            validation::prune(&schema, &mut body, "", &mut unknown);
            if !unknown.is_empty() {
                let listed: Vec<String> = unknown
                    .iter()
                    .map(|u| format!("unknown field {u:?}"))
                    .collect();
                match opts.validation {
                    FieldValidation::Strict => {
                        return Err(ApiError::bad_request(format!(
                            "{kind} in version {version:?} cannot be handled as a {kind}: strict decoding error: {}",
                            listed.join(", "),
                            kind = res.kind
                        )));
                    }
                    FieldValidation::Warn => warnings.extend(listed),
                    FieldValidation::Ignore => {}
                }
            }
            validation::validate(&schema, &body, "", &mut causes);
            if causes.is_empty() {
                causes.extend(crate::cel::validate(
                    &schema,
                    &body,
                    old,
                    obj.get("metadata"),
                ));
            }
            if let (Some(m), Value::Object(b)) = (obj.as_object_mut(), body) {
                m.retain(|k, _| matches!(k.as_str(), "metadata" | "apiVersion" | "kind"));
                m.extend(b);
            }
        }
        if res.kind == "CustomResourceDefinition" {
            causes.extend(crd::validate(obj));
        }
        if causes.is_empty() {
            Ok(warnings)
        } else {
            Err(ApiError::invalid(res.qualified(), &name, causes))
        }
    }

    fn apply_defaults(&mut self, res: &Resource, obj: &mut Value, old: Option<&Value>) {
        let ips = &mut self.service_ips;
        let mut next_ip = || {
            *ips += 1;
            format!("10.96.{}.{}", (*ips >> 8) & 0xff, *ips & 0xff)
        };
        crate::defaults::apply(res, obj, old, &mut next_ip);
    }

    /// POST: creates an object in `ns` (ignored for cluster-scoped resources).
    pub(crate) fn create(
        &mut self,
        res: &Arc<Resource>,
        ns: Option<&str>,
        mut obj: Value,
        opts: &WriteOptions,
    ) -> ApiResult<Written> {
        self.create_inner(res, res.storage_version(), ns, &mut obj, opts, false)
    }

    /// POST at a served version.
    pub(crate) fn create_at(
        &mut self,
        res: &Arc<Resource>,
        version: &str,
        ns: Option<&str>,
        mut obj: Value,
        opts: &WriteOptions,
    ) -> ApiResult<Written> {
        self.create_inner(res, version, ns, &mut obj, opts, false)
    }

    /// Creation at a served version; `applied` when server-side apply already recorded
    /// field ownership.
    fn create_inner(
        &mut self,
        res: &Arc<Resource>,
        version: &str,
        ns: Option<&str>,
        obj: &mut Value,
        opts: &WriteOptions,
        applied: bool,
    ) -> ApiResult<Written> {
        if !obj.is_object() {
            return Err(ApiError::bad_request(
                "the body of the request must be a JSON object",
            ));
        }
        obj["apiVersion"] = json!(res.api_version(version));
        obj["kind"] = json!(res.kind);
        let body_ns = meta_str(obj, "namespace").to_string();
        if let Some(n) = ns
            && !body_ns.is_empty()
            && body_ns != n
            && res.namespaced
        {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        let ns = self.check_scope(res, ns.or(Some(body_ns.as_str()).filter(|n| !n.is_empty())))?;
        if meta_str(obj, "name").is_empty() {
            let prefix = meta_str(obj, "generateName").to_string();
            if prefix.is_empty() {
                return Err(ApiError::invalid(
                    res.qualified(),
                    "",
                    vec![Cause {
                        reason: "FieldValueRequired".into(),
                        message: "Required value: name or generateName is required".into(),
                        field: "metadata.name".into(),
                    }],
                ));
            }
            let name = format!("{prefix}{}", self.random_suffix());
            meta_mut(obj).insert("name".into(), json!(name));
        }
        let name = meta_str(obj, "name").to_string();
        self.apply_defaults(res, obj, None);
        let warnings = self.validate_object(res, version, obj, None, opts)?;
        if self.stored(res, &ns, &name).is_some() {
            return Err(ApiError::already_exists(res.qualified(), &name));
        }
        let now = now_rfc3339();
        let uid = self.uid();
        {
            let meta = meta_mut(obj);
            if res.namespaced {
                meta.insert("namespace".into(), json!(ns));
            } else {
                meta.remove("namespace");
            }
            meta.insert("uid".into(), json!(uid));
            meta.insert("creationTimestamp".into(), json!(now));
            meta.remove("deletionTimestamp");
            meta.remove("resourceVersion");
            if res.tracks_generation {
                meta.insert("generation".into(), json!(1));
            } else {
                meta.remove("generation");
            }
        }
        match res.kind.as_str() {
            "Pod" if res.group.is_empty() => {
                obj["status"] = json!({"phase": "Pending", "qosClass": "BestEffort"});
            }
            "Namespace" if res.group.is_empty() => {
                obj["spec"] = json!({"finalizers": ["kubernetes"]});
                obj["status"] = json!({"phase": "Active"});
            }
            "CustomResourceDefinition" => {
                obj["status"] = crd::established_status(obj, &now);
            }
            "Node" if res.group.is_empty() => {}
            _ if res.has_status => {
                if let Some(m) = obj.as_object_mut() {
                    m.remove("status");
                }
            }
            _ => {}
        }
        if !applied {
            let manager = Manager {
                name: &opts.field_manager,
                apply: false,
                subresource: "",
                api_version: &res.api_version(version),
            };
            managed::record_update(None, obj, &manager, !res.has_status, &now);
        }
        if opts.dry_run {
            return Ok(Written {
                object: obj.clone(),
                warnings,
                created: true,
            });
        }
        if res.kind == "CustomResourceDefinition" {
            self.install_crd(obj)?;
        }
        self.rv += 1;
        meta_mut(obj).insert("resourceVersion".into(), json!(self.rv.to_string()));
        let stored = Self::served(res, res.storage_version(), obj.clone());
        self.objects
            .entry((res.group.clone(), res.plural.clone()))
            .or_default()
            .insert((ns, name), stored.clone());
        self.emit("ADDED", res, stored, None);
        Ok(Written {
            object: obj.clone(),
            warnings,
            created: true,
        })
    }

    fn install_crd(&mut self, crd_obj: &Value) -> ApiResult<()> {
        let served = crd::to_resource(crd_obj);
        if self
            .resources
            .iter()
            .any(|r| r.group == served.group && r.plural == served.plural)
        {
            return Err(ApiError::invalid(
                crate::status::Qualified {
                    group: "apiextensions.k8s.io",
                    plural: "customresourcedefinitions",
                    kind: "CustomResourceDefinition",
                },
                meta_str(crd_obj, "name"),
                vec![Cause {
                    reason: "FieldValueInvalid".into(),
                    message: "Invalid value: \"\": the resource is already served".into(),
                    field: "spec.names.plural".into(),
                }],
            ));
        }
        self.resources.push(Arc::new(served));
        Ok(())
    }

    /// PUT (and the tail of PATCH): replaces an object, at `version`.
    pub(crate) fn update(
        &mut self,
        res: &Arc<Resource>,
        version: &str,
        ns: &str,
        name: &str,
        mut obj: Value,
        opts: &WriteOptions,
    ) -> ApiResult<Written> {
        let old = self
            .stored(res, ns, name)
            .cloned()
            .ok_or_else(|| ApiError::not_found(res.qualified(), name))?;
        let want_rv = meta_str(&obj, "resourceVersion");
        if !want_rv.is_empty() && want_rv != meta_str(&old, "resourceVersion") {
            return Err(ApiError::stale(res.qualified(), name));
        }
        let body_name = meta_str(&obj, "name");
        if !body_name.is_empty() && body_name != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        self.update_inner(res, version, ns, name, old, &mut obj, opts, false)
    }

    #[allow(clippy::too_many_arguments)]
    fn update_inner(
        &mut self,
        res: &Arc<Resource>,
        version: &str,
        ns: &str,
        name: &str,
        old: Value,
        obj: &mut Value,
        opts: &WriteOptions,
        applied: bool,
    ) -> ApiResult<Written> {
        if !obj.is_object() {
            return Err(ApiError::bad_request(
                "the body of the request must be a JSON object",
            ));
        }
        let status_only = opts.subresource.as_deref() == Some("status");
        let mut new = if status_only {
            let mut n = old.clone();
            n["status"] = obj.get("status").cloned().unwrap_or(Value::Null);
            if let Some(m) = n.as_object_mut().filter(|_| obj.get("status").is_none()) {
                m.remove("status");
            }
            if applied && let Some(mf) = obj.pointer("/metadata/managedFields") {
                meta_mut(&mut n).insert("managedFields".into(), mf.clone());
            }
            n
        } else {
            let mut n = obj.clone();
            if res.has_status {
                match old.get("status") {
                    Some(s) => n["status"] = s.clone(),
                    None => {
                        if let Some(m) = n.as_object_mut() {
                            m.remove("status");
                        }
                    }
                }
            }
            n
        };
        new["apiVersion"] = json!(res.api_version(version));
        new["kind"] = json!(res.kind);
        {
            let old_meta = old.get("metadata").cloned().unwrap_or_else(|| json!({}));
            let meta = meta_mut(&mut new);
            meta.insert("name".into(), json!(name));
            if res.namespaced {
                meta.insert("namespace".into(), json!(ns));
            }
            for key in [
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
                "resourceVersion",
            ] {
                match old_meta.get(key) {
                    Some(v) => meta.insert(key.into(), v.clone()),
                    None => meta.remove(key),
                };
            }
            if !applied {
                match old_meta.get("managedFields") {
                    Some(v) => meta.insert("managedFields".into(), v.clone()),
                    None => meta.remove("managedFields"),
                };
            }
        }
        if !status_only {
            self.apply_defaults(res, &mut new, Some(&old));
        }
        let warnings = if status_only {
            Vec::new()
        } else {
            self.validate_object(res, version, &mut new, Some(&old), opts)?
        };
        if status_only {
            // Status is validated against the schema too.
            let mut check = new.clone();
            self.validate_object(
                res,
                version,
                &mut check,
                Some(&old),
                &WriteOptions {
                    validation: FieldValidation::Ignore,
                    ..opts.clone()
                },
            )?;
        }
        if comparable(&new) == comparable(&old) {
            return Ok(Written {
                object: Self::served(res, version, old),
                warnings,
                created: false,
            });
        }
        if res.tracks_generation
            && spec_part(&new, res.has_status) != spec_part(&old, res.has_status)
        {
            let g = old
                .pointer("/metadata/generation")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            meta_mut(&mut new).insert("generation".into(), json!(g + 1));
        }
        let now = now_rfc3339();
        if !applied {
            let sub = if status_only { "status" } else { "" };
            let manager = Manager {
                name: &opts.field_manager,
                apply: false,
                subresource: sub,
                api_version: &res.api_version(version),
            };
            managed::record_update(
                Some(&old),
                &mut new,
                &manager,
                status_only || !res.has_status,
                &now,
            );
        }
        let crd_change = res.kind == "CustomResourceDefinition" && !status_only;
        if crd_change {
            let (was, now_served) = (crd::to_resource(&old), crd::to_resource(&new));
            if was.group != now_served.group || was.plural != now_served.plural {
                return Err(ApiError::invalid(
                    res.qualified(),
                    name,
                    vec![Cause {
                        reason: "FieldValueInvalid".into(),
                        message: "Invalid value: \"\": the group and plural name of a served CRD cannot change in this emulator".into(),
                        field: "spec".into(),
                    }],
                ));
            }
            new["status"] = crd::established_status(&new, &now);
        }
        if opts.dry_run {
            return Ok(Written {
                object: new,
                warnings,
                created: false,
            });
        }
        if crd_change {
            // The served resource follows the CRD: new schema, columns, names, versions.
            let served = crd::to_resource(&new);
            if let Some(slot) = self
                .resources
                .iter_mut()
                .find(|r| r.from_crd && r.group == served.group && r.plural == served.plural)
            {
                *slot = Arc::new(served);
            }
        }
        let deleting = new.pointer("/metadata/deletionTimestamp").is_some();
        let no_finalizers = new
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .is_none_or(|f| f.is_empty());
        self.rv += 1;
        meta_mut(&mut new).insert("resourceVersion".into(), json!(self.rv.to_string()));
        let stored = Self::served(res, res.storage_version(), new.clone());
        if deleting && no_finalizers && !(res.kind == "Namespace" && res.group.is_empty()) {
            self.remove(res, ns, name, stored.clone(), Some(old));
        } else {
            self.objects
                .entry((res.group.clone(), res.plural.clone()))
                .or_default()
                .insert((ns.to_string(), name.to_string()), stored.clone());
            self.emit("MODIFIED", res, stored, Some(old));
        }
        Ok(Written {
            object: Self::served(res, version, new),
            warnings,
            created: false,
        })
    }

    /// PATCH in any of the four formats; apply creates the object when it is missing.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn patch(
        &mut self,
        res: &Arc<Resource>,
        version: &str,
        ns: Option<&str>,
        name: &str,
        kind: PatchKind,
        body: &Value,
        opts: &WriteOptions,
    ) -> ApiResult<Written> {
        let ns_key = if res.namespaced {
            ns.unwrap_or_default().to_string()
        } else {
            String::new()
        };
        let existing = self.stored(res, &ns_key, name).cloned();
        if kind == PatchKind::Apply {
            return self.apply(res, version, ns, name, existing, body, opts);
        }
        let old = existing.ok_or_else(|| ApiError::not_found(res.qualified(), name))?;
        let mut new = Self::served(res, version, old.clone());
        match kind {
            PatchKind::Merge => patch::merge_patch(&mut new, body),
            PatchKind::Strategic => {
                if res.from_crd {
                    return Err(ApiError::unsupported_media_type(
                        "application/strategic-merge-patch+json",
                    ));
                }
                patch::strategic_merge_patch(&mut new, body)
            }
            PatchKind::Json => patch::json_patch(&mut new, body)?,
            PatchKind::Apply => {}
        }
        // A patch carries a precondition only when it sets resourceVersion itself.
        let patched_rv = meta_str(&new, "resourceVersion");
        if !patched_rv.is_empty() && patched_rv != meta_str(&old, "resourceVersion") {
            return Err(ApiError::stale(res.qualified(), name));
        }
        self.update_inner(res, version, &ns_key, name, old, &mut new, opts, false)
    }

    #[allow(clippy::too_many_arguments)]
    fn apply(
        &mut self,
        res: &Arc<Resource>,
        version: &str,
        ns: Option<&str>,
        name: &str,
        existing: Option<Value>,
        body: &Value,
        opts: &WriteOptions,
    ) -> ApiResult<Written> {
        let api_version = body
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let kind = body.get("kind").and_then(Value::as_str).unwrap_or_default();
        if api_version.is_empty() || kind.is_empty() {
            return Err(ApiError::bad_request("invalid object type: /, Kind="));
        }
        if kind != res.kind || api_version != res.api_version(version) {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({api_version}) does not match the expected API version ({})",
                res.api_version(version)
            )));
        }
        if opts.field_manager.is_empty() {
            return Err(ApiError::bad_request(
                "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
            ));
        }
        let body_name = meta_str(body, "name");
        if body_name != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        let status_only = opts.subresource.as_deref() == Some("status");
        let manager = Manager {
            name: &opts.field_manager,
            apply: true,
            subresource: if status_only { "status" } else { "" },
            api_version: &res.api_version(version),
        };
        let mut applied = body.clone();
        if !status_only
            && res.has_status
            && let Some(m) = applied.as_object_mut()
        {
            m.remove("status");
        }
        let live = existing
            .as_ref()
            .map(|e| Self::served(res, version, e.clone()));
        let now = now_rfc3339();
        let track_status = status_only || !res.has_status;
        let mut merged = managed::apply(
            live.as_ref(),
            &applied,
            &manager,
            opts.force,
            track_status,
            &now,
        )?;
        match existing {
            None => {
                let w = self.create_inner(res, version, ns, &mut merged, opts, true)?;
                Ok(w)
            }
            Some(old) => {
                let ns_key = meta_str(&old, "namespace").to_string();
                self.update_inner(res, version, &ns_key, name, old, &mut merged, opts, true)
            }
        }
    }

    fn remove(
        &mut self,
        res: &Resource,
        ns: &str,
        name: &str,
        mut last: Value,
        old: Option<Value>,
    ) {
        if let Some(b) = self
            .objects
            .get_mut(&(res.group.clone(), res.plural.clone()))
        {
            b.remove(&(ns.to_string(), name.to_string()));
        }
        meta_mut(&mut last).insert("resourceVersion".into(), json!(self.rv.to_string()));
        self.emit("DELETED", res, last, old);
        if res.kind == "CustomResourceDefinition" {
            self.uninstall_crd(&self.objects_key_for_crd(name));
        }
    }

    fn objects_key_for_crd(&self, crd_name: &str) -> ResKey {
        let (plural, group) = crd_name.split_once('.').unwrap_or((crd_name, ""));
        (group.to_string(), plural.to_string())
    }

    fn uninstall_crd(&mut self, key: &ResKey) {
        let Some(pos) = self
            .resources
            .iter()
            .position(|r| r.from_crd && r.group == key.0 && r.plural == key.1)
        else {
            return;
        };
        let res = self.resources.remove(pos);
        if let Some(bucket) = self.objects.remove(key) {
            for (_, obj) in bucket {
                self.rv += 1;
                let mut last = obj.clone();
                meta_mut(&mut last).insert("resourceVersion".into(), json!(self.rv.to_string()));
                self.emit("DELETED", &res, last, Some(obj));
            }
        }
    }

    /// DELETE: gone at once, or marked with `deletionTimestamp` while finalizers remain.
    pub(crate) fn delete(
        &mut self,
        res: &Arc<Resource>,
        version: &str,
        ns: &str,
        name: &str,
        options: &Value,
        dry_run: bool,
    ) -> ApiResult<Value> {
        let old = self
            .stored(res, ns, name)
            .cloned()
            .ok_or_else(|| ApiError::not_found(res.qualified(), name))?;
        if let Some(uid) = options
            .pointer("/preconditions/uid")
            .and_then(Value::as_str)
            && uid != meta_str(&old, "uid")
        {
            return Err(ApiError::stale(res.qualified(), name));
        }
        if let Some(rv) = options
            .pointer("/preconditions/resourceVersion")
            .and_then(Value::as_str)
            && rv != meta_str(&old, "resourceVersion")
        {
            return Err(ApiError::stale(res.qualified(), name));
        }
        if dry_run {
            return Ok(Self::served(res, version, old));
        }
        let uid = meta_str(&old, "uid").to_string();
        if options.get("propagationPolicy").and_then(Value::as_str) == Some("Orphan")
            || options.get("orphanDependents") == Some(&json!(true))
        {
            self.orphan_dependents(&uid);
        }
        let is_namespace = res.kind == "Namespace" && res.group.is_empty();
        // Foreground: the owner stays, marked, until the garbage collector has deleted
        // its dependents and removed the `foregroundDeletion` finalizer.
        let foreground = options.get("propagationPolicy").and_then(Value::as_str)
            == Some("Foreground")
            && self.has_dependents(&uid);
        let has_finalizers = old
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .is_some_and(|f| !f.is_empty());
        if has_finalizers || is_namespace || foreground {
            if old.pointer("/metadata/deletionTimestamp").is_some() {
                return Ok(Self::served(res, version, old));
            }
            let mut new = old.clone();
            {
                let meta = meta_mut(&mut new);
                meta.insert("deletionTimestamp".into(), json!(now_rfc3339()));
                meta.insert("deletionGracePeriodSeconds".into(), json!(0));
                if foreground {
                    let finalizers = meta.entry("finalizers").or_insert_with(|| json!([]));
                    if let Some(list) = finalizers.as_array_mut() {
                        list.push(json!(FOREGROUND));
                    }
                }
            }
            if is_namespace {
                new["status"] = json!({"phase": "Terminating"});
            }
            self.rv += 1;
            meta_mut(&mut new).insert("resourceVersion".into(), json!(self.rv.to_string()));
            self.objects
                .entry((res.group.clone(), res.plural.clone()))
                .or_default()
                .insert((ns.to_string(), name.to_string()), new.clone());
            self.emit("MODIFIED", res, new.clone(), Some(old));
            return Ok(Self::served(res, version, new));
        }
        self.rv += 1;
        self.remove(res, ns, name, old.clone(), Some(old.clone()));
        Ok(Self::served(res, version, old))
    }

    /// Whether any object names `uid` among its owners.
    pub(crate) fn has_dependents(&self, uid: &str) -> bool {
        self.all_objects().any(|(_, o)| {
            o.pointer("/metadata/ownerReferences")
                .and_then(Value::as_array)
                .is_some_and(|refs| refs.iter().any(|r| r["uid"] == json!(uid)))
        })
    }

    /// Removes a namespace whose contents are gone (the namespace controller's last step).
    pub(crate) fn finalize_namespace(&mut self, name: &str) {
        let Some(res) = self.resource("", "v1", "namespaces") else {
            return;
        };
        if let Some(old) = self.stored(&res, "", name).cloned() {
            self.rv += 1;
            self.remove(&res, "", name, old.clone(), Some(old));
        }
    }

    fn orphan_dependents(&mut self, owner_uid: &str) {
        let mut changes = Vec::new();
        for (res, obj) in self.all_objects() {
            let refs = obj
                .pointer("/metadata/ownerReferences")
                .and_then(Value::as_array);
            if refs.is_some_and(|r| r.iter().any(|o| o["uid"] == json!(owner_uid))) {
                changes.push((Arc::clone(res), obj.clone()));
            }
        }
        for (res, obj) in changes {
            let mut new = obj.clone();
            if let Some(Value::Array(refs)) = new.pointer_mut("/metadata/ownerReferences") {
                refs.retain(|o| o["uid"] != json!(owner_uid));
            }
            let (ns, name) = (
                meta_str(&obj, "namespace").to_string(),
                meta_str(&obj, "name").to_string(),
            );
            let _ = self.update_inner(
                &res,
                res.storage_version(),
                &ns,
                &name,
                obj,
                &mut new,
                &WriteOptions::internal("kube-controller-manager"),
                false,
            );
        }
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
