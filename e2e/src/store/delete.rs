//! Deletes: finalizers, foreground and orphan propagation, CRD and namespace removal.

use std::sync::Arc;

use serde_json::{Value, json};

use super::{FOREGROUND, ResKey, Store, WriteOptions, meta_mut, meta_str};
use crate::resources::Resource;
use crate::status::{ApiError, ApiResult};
use crate::time::now_rfc3339;

impl Store {
    pub(super) fn remove(
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
