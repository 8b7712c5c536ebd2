//! OpenAPI v3 documents: the root index and one document per group-version, with the
//! installed CRD schemas and the PATCH operations (with their `fieldValidation`
//! parameter) that kubectl inspects to decide that the server validates fields itself.

use std::collections::BTreeSet;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;

use serde_json::{Map, Value, json};

use crate::resources::Resource;

/// `io.k8s.api.apps.v1.Deployment` / `dev.px.v1alpha1.Tracepoint`: the schema's name.
fn schema_name(r: &Resource, version: &str) -> String {
    if r.from_crd {
        let reversed: Vec<&str> = r.group.split('.').rev().collect();
        format!("{}.{version}.{}", reversed.join("."), r.kind)
    } else {
        let group = match r.group.as_str() {
            "" => "core",
            "apiextensions.k8s.io" => {
                return format!(
                    "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.{version}.{}",
                    r.kind
                );
            }
            g => g.split('.').next().unwrap_or(g),
        };
        format!("io.k8s.api.{group}.{version}.{}", r.kind)
    }
}

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// Every served group-version, as its path (`api/v1`, `apis/px.dev/v1alpha1`).
fn group_versions(resources: &[Arc<Resource>]) -> BTreeSet<(String, String)> {
    resources
        .iter()
        .flat_map(|r| r.versions.iter().map(|v| (r.group.clone(), v.clone())))
        .collect()
}

fn hash_of(doc: &Value) -> String {
    let mut h = DefaultHasher::new();
    doc.to_string().hash(&mut h);
    format!("{:016X}", h.finish())
}

/// `/openapi/v3`: where each group-version's document is, with a content hash so
/// clients' caches see CRD changes.
pub(crate) fn root(resources: &[Arc<Resource>]) -> Value {
    let mut paths = Map::new();
    for (group, version) in group_versions(resources) {
        let path = gv_path(&group, &version);
        let doc = group_version_doc(resources, &group, &version);
        paths.insert(
            path.clone(),
            json!({"serverRelativeURL": format!("/openapi/v3/{path}?hash={}", hash_of(&doc))}),
        );
    }
    json!({"paths": paths})
}

fn operation(r: &Resource, version: &str, action: &str, patch: bool) -> Value {
    let mut op = json!({
        "operationId": format!("{action}{}", r.kind),
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": {"group": r.group, "version": version, "kind": r.kind},
        "parameters": [
            {"name": "dryRun", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
            {"name": "fieldManager", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
            {"name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
        ],
        "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{}", schema_name(r, version))}}}}},
    });
    if patch {
        let body = json!({"schema": {"$ref": "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.Patch"}});
        // No strategic-merge content type: kubectl then computes strategic patches for
        // built-in kinds from its own Go types, and merge patches for custom resources.
        op["requestBody"] = json!({"content": {
            "application/apply-patch+yaml": body,
            "application/json-patch+json": body,
            "application/merge-patch+json": body,
        }});
        if let Some(params) = op["parameters"].as_array_mut() {
            params.push(json!({"name": "force", "in": "query", "schema": {"type": "boolean", "uniqueItems": true}}));
        }
    }
    op
}

/// The object schema of a resource: the CRD's own, or an open one for built-ins.
fn object_schema(r: &Resource, version: &str) -> Value {
    let mut schema = r
        .schema(version)
        .cloned()
        .unwrap_or_else(|| json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}));
    if let Some(obj) = schema.as_object_mut() {
        let props = obj.entry("properties").or_insert_with(|| json!({}));
        if let Some(props) = props.as_object_mut() {
            props.insert("apiVersion".into(), json!({"type": "string", "description": "APIVersion defines the versioned schema of this representation of an object."}));
            props.insert("kind".into(), json!({"type": "string", "description": "Kind is a string value representing the REST resource this object represents."}));
            props.insert("metadata".into(), json!({"allOf": [{"$ref": "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"}], "description": "Standard object's metadata."}));
        }
        obj.insert(
            "x-kubernetes-group-version-kind".into(),
            json!([{"group": r.group, "kind": r.kind, "version": version}]),
        );
    }
    schema
}

/// `/openapi/v3/<gv>`: paths and schemas of one group-version.
pub(crate) fn group_version_doc(resources: &[Arc<Resource>], group: &str, version: &str) -> Value {
    let mut paths = Map::new();
    let mut schemas = Map::new();
    schemas.insert(
        "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta".into(),
        json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}),
    );
    schemas.insert("io.k8s.apimachinery.pkg.apis.meta.v1.Patch".into(), json!({"type": "object", "description": "Patch is provided to give a concrete name and type to the Kubernetes PATCH request body."}));
    for r in resources
        .iter()
        .filter(|r| r.group == group && r.versions.iter().any(|v| v == version))
    {
        let base = format!("/{}", gv_path(group, version));
        let item = if r.namespaced {
            format!("{base}/namespaces/{{namespace}}/{}/{{name}}", r.plural)
        } else {
            format!("{base}/{}/{{name}}", r.plural)
        };
        let collection = item.trim_end_matches("/{name}").to_string();
        paths.insert(
            item.clone(),
            json!({
                "get": operation(r, version, "get", false),
                "put": operation(r, version, "put", false),
                "patch": operation(r, version, "patch", true),
                "delete": operation(r, version, "delete", false),
            }),
        );
        paths.insert(
            collection,
            json!({
                "get": operation(r, version, "list", false),
                "post": operation(r, version, "post", false),
            }),
        );
        if r.has_status {
            paths.insert(
                format!("{item}/status"),
                json!({
                    "get": operation(r, version, "get", false),
                    "put": operation(r, version, "put", false),
                    "patch": operation(r, version, "patch", true),
                }),
            );
        }
        schemas.insert(schema_name(r, version), object_schema(r, version));
    }
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.32.0"},
        "paths": paths,
        "components": {"schemas": schemas},
    })
}

/// Whether a group-version is served.
pub(crate) fn serves(resources: &[Arc<Resource>], group: &str, version: &str) -> bool {
    group_versions(resources).contains(&(group.to_string(), version.to_string()))
}
