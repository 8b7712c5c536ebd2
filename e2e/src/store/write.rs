//! Writes: create, update, patch and server-side apply, with validation, defaults,
//! generation, the status subresource and field ownership.

use std::sync::Arc;

use serde_json::{Value, json};

use super::{
    DNS_SUBDOMAIN_MSG, FieldValidation, PatchKind, Store, WriteOptions, Written, comparable,
    is_dns_subdomain, meta_mut, meta_str, spec_part,
};
use crate::managed::{self, Manager};
use crate::patch;
use crate::resources::Resource;
use crate::status::{ApiError, ApiResult, Cause};
use crate::time::now_rfc3339;
use crate::{crd, validation};

impl Store {
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
    pub(super) fn update_inner(
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
}
