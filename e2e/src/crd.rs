//! CustomResourceDefinitions: turning one into a served resource, and its status.

use serde_json::{Value, json};

use crate::resources::{PrinterColumn, Resource, crd_columns};
use crate::status::Cause;

fn s(v: &Value, ptr: &str) -> String {
    v.pointer(ptr)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
}

/// Field errors in a CRD that would make it unservable.
pub(crate) fn validate(crd: &Value) -> Vec<Cause> {
    let mut errs = Vec::new();
    let required = |field: &str| Cause {
        reason: "FieldValueRequired".into(),
        message: "Required value".into(),
        field: field.into(),
    };
    for (ptr, field) in [
        ("/spec/group", "spec.group"),
        ("/spec/names/plural", "spec.names.plural"),
        ("/spec/names/kind", "spec.names.kind"),
        ("/spec/scope", "spec.scope"),
    ] {
        if s(crd, ptr).is_empty() {
            errs.push(required(field));
        }
    }
    let versions = crd.pointer("/spec/versions").and_then(Value::as_array);
    if versions.is_none_or(|v| v.is_empty()) {
        errs.push(required("spec.versions"));
    } else if versions
        .is_some_and(|vs| vs.iter().filter(|v| v["storage"] == json!(true)).count() != 1)
    {
        errs.push(Cause {
            reason: "FieldValueInvalid".into(),
            message: "Invalid value: \"\": must have exactly one version marked as storage version"
                .into(),
            field: "spec.versions".into(),
        });
    }
    let expected = format!("{}.{}", s(crd, "/spec/names/plural"), s(crd, "/spec/group"));
    let name = s(crd, "/metadata/name");
    if errs.is_empty() && name != expected {
        errs.push(Cause {
            reason: "FieldValueInvalid".into(),
            message: format!("Invalid value: {name:?}: must be spec.names.plural+\".\"+spec.group"),
            field: "metadata.name".into(),
        });
    }
    errs
}

fn columns(version: &Value) -> Vec<PrinterColumn> {
    version
        .get("additionalPrinterColumns")
        .and_then(Value::as_array)
        .map(|cols| {
            cols.iter()
                .map(|c| PrinterColumn {
                    name: s(c, "/name"),
                    type_: s(c, "/type"),
                    json_path: s(c, "/jsonPath"),
                    description: s(c, "/description"),
                    priority: c.get("priority").and_then(Value::as_i64).unwrap_or(0),
                    format: s(c, "/format"),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The resource a (valid) CRD serves; the storage version comes first.
pub(crate) fn to_resource(crd: &Value) -> Resource {
    let versions: Vec<&Value> = crd
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .map(|vs| vs.iter().filter(|v| v["served"] != json!(false)).collect())
        .unwrap_or_default();
    let mut ordered: Vec<&Value> = versions
        .iter()
        .copied()
        .filter(|v| v["storage"] == json!(true))
        .collect();
    ordered.extend(
        versions
            .iter()
            .copied()
            .filter(|v| v["storage"] != json!(true)),
    );
    let storage = ordered.first().copied().cloned().unwrap_or(Value::Null);
    let kind = s(crd, "/spec/names/kind");
    Resource {
        group: s(crd, "/spec/group"),
        versions: ordered.iter().map(|v| s(v, "/name")).collect(),
        singular: {
            let singular = s(crd, "/spec/names/singular");
            if singular.is_empty() {
                kind.to_lowercase()
            } else {
                singular
            }
        },
        kind,
        plural: s(crd, "/spec/names/plural"),
        short_names: strings(crd.pointer("/spec/names/shortNames")),
        categories: strings(crd.pointer("/spec/names/categories")),
        namespaced: s(crd, "/spec/scope") != "Cluster",
        has_status: storage.pointer("/subresources/status").is_some(),
        tracks_generation: true,
        schemas: ordered
            .iter()
            .filter_map(|v| Some((s(v, "/name"), v.pointer("/schema/openAPIV3Schema")?.clone())))
            .collect(),
        columns: crd_columns(&columns(&storage)),
        from_crd: true,
    }
}

/// The status a real server reports once a CRD's names are accepted and it is served.
pub(crate) fn established_status(crd: &Value, now: &str) -> Value {
    let storage: Vec<Value> = crd
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .map(|vs| {
            vs.iter()
                .filter(|v| v["storage"] == json!(true))
                .map(|v| v["name"].clone())
                .collect()
        })
        .unwrap_or_default();
    let names = crd
        .pointer("/spec/names")
        .cloned()
        .unwrap_or_else(|| json!({}));
    let mut accepted = names.clone();
    if accepted.get("listKind").is_none() {
        accepted["listKind"] = json!(format!("{}List", s(crd, "/spec/names/kind")));
    }
    if accepted.get("singular").is_none() {
        accepted["singular"] = json!(s(crd, "/spec/names/kind").to_lowercase());
    }
    json!({
        "conditions": [
            {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts", "message": "no conflicts found", "lastTransitionTime": now},
            {"type": "Established", "status": "True", "reason": "InitialNamesAccepted", "message": "the initial names have been accepted", "lastTransitionTime": now}
        ],
        "acceptedNames": accepted,
        "storedVersions": storage,
    })
}
