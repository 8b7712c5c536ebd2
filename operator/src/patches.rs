//! The Vizier's `patches`: for each object the operator makes, the patch named by the
//! object's name is merged into it before it is applied, as Pixie applies them.
//!
//! The merge is a strategic merge patch for what these objects hold: maps merge key by
//! key, `null` deletes a key, and a list whose items all have a `name` (containers, env,
//! volumes, volume mounts, ports) merges item by item on that name, as Kubernetes' own
//! strategic merge does for those fields. Other lists are replaced whole (Kubernetes
//! replaces tolerations and args too). The `$patch` directives are not supported: a
//! patch that uses one is refused with its name.

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Why a patch cannot be applied.
#[derive(Debug, thiserror::Error)]
pub enum PatchError {
    /// The patch text is neither JSON nor YAML of an object.
    #[error("spec.patches[{name:?}] is not a YAML or JSON object: {reason}")]
    Unreadable {
        /// The object it names.
        name: String,
        /// What the parser said.
        reason: String,
    },
    /// The patched object is no longer an object of its kind.
    #[error("spec.patches[{name:?}] makes the {kind} invalid: {reason}")]
    Invalid {
        /// The object it names.
        name: String,
        /// The object's kind.
        kind: &'static str,
        /// What was wrong.
        reason: String,
    },
    /// A `$patch` directive, which this merge does not implement.
    #[error(
        "spec.patches[{name:?}] uses the directive {directive}, which is not supported; write the fields to set, or null to remove one"
    )]
    Directive {
        /// The object it names.
        name: String,
        /// The directive.
        directive: String,
    },
}

/// `object` with the patch of `patches` that names it (by `name`) merged in.
///
/// # Errors
/// [`PatchError`] naming the patch when it cannot be read or makes the object invalid.
pub fn patched<T: Serialize + DeserializeOwned>(
    object: T,
    kind: &'static str,
    name: &str,
    patches: Option<&std::collections::BTreeMap<String, String>>,
) -> Result<T, PatchError> {
    let Some(text) = patches.and_then(|p| p.get(name)) else {
        return Ok(object);
    };
    let patch: Value = serde_norway::from_str(text).map_err(|e| PatchError::Unreadable {
        name: name.to_owned(),
        reason: e.to_string(),
    })?;
    if !patch.is_object() {
        return Err(PatchError::Unreadable {
            name: name.to_owned(),
            reason: "it is not a mapping".to_owned(),
        });
    }
    if let Some(directive) = find_directive(&patch) {
        return Err(PatchError::Directive {
            name: name.to_owned(),
            directive,
        });
    }
    let invalid = |reason: String| PatchError::Invalid {
        name: name.to_owned(),
        kind,
        reason,
    };
    let mut value = serde_json::to_value(object).map_err(|e| invalid(e.to_string()))?;
    merge(&mut value, patch);
    serde_json::from_value(value).map_err(|e| invalid(e.to_string()))
}

/// The first `$patch`-style directive key in `patch`.
fn find_directive(patch: &Value) -> Option<String> {
    match patch {
        Value::Object(map) => map.iter().find_map(|(k, v)| {
            k.starts_with('$')
                .then(|| k.clone())
                .or_else(|| find_directive(v))
        }),
        Value::Array(items) => items.iter().find_map(find_directive),
        _ => None,
    }
}

/// Merges `patch` into `target` (see the module docs).
fn merge(target: &mut Value, patch: Value) {
    match (target, patch) {
        (Value::Object(target), Value::Object(patch)) => {
            for (key, value) in patch {
                if value.is_null() {
                    target.remove(&key);
                } else {
                    merge(target.entry(key).or_insert(Value::Null), value);
                }
            }
        }
        (Value::Array(target), Value::Array(patch)) if named(target) && named(&patch) => {
            for item in patch {
                let name = item.get("name").cloned();
                match target.iter_mut().find(|t| t.get("name") == name.as_ref()) {
                    Some(existing) => merge(existing, item),
                    None => target.push(item),
                }
            }
        }
        (target, patch) => *target = patch,
    }
}

/// Whether every item of `items` is an object with a string `name`.
fn named(items: &[Value]) -> bool {
    items
        .iter()
        .all(|i| i.get("name").is_some_and(Value::is_string))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::BTreeMap;

    use k8s_openapi::api::apps::v1::DaemonSet;
    use serde_json::json;

    use super::*;

    fn daemonset() -> DaemonSet {
        serde_json::from_value(json!({
            "metadata": {"name": "pixie-pem", "labels": {"a": "1", "b": "2"}},
            "spec": {
                "selector": {"matchLabels": {"app": "pem"}},
                "template": {"spec": {
                    "containers": [
                        {"name": "pem", "image": "px/vizier-pem:1", "args": ["--x"],
                         "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]},
                    ],
                    "tolerations": [{"operator": "Exists"}],
                }},
            },
        }))
        .unwrap()
    }

    #[test]
    fn a_patch_merges_maps_and_named_lists_and_replaces_the_rest() {
        let patches = BTreeMap::from([(
            "pixie-pem".to_string(),
            "metadata:\n  labels: {b: null, c: '3'}\nspec:\n  template:\n    spec:\n      containers:\n      - name: pem\n        resources: {limits: {cpu: 500m}}\n        env: [{name: B, value: changed}, {name: C, value: new}]\n      - name: sidecar\n        image: busybox\n      tolerations: [{key: gpu, operator: Exists}]\n".to_string(),
        )]);
        let ds = patched(daemonset(), "DaemonSet", "pixie-pem", Some(&patches)).unwrap();
        let v = serde_json::to_value(&ds).unwrap();
        assert_eq!(v["metadata"]["labels"], json!({"a": "1", "c": "3"}));
        let pod = &v["spec"]["template"]["spec"];
        let pem = &pod["containers"][0];
        assert_eq!(pem["image"], "px/vizier-pem:1", "untouched fields stay");
        assert_eq!(pem["args"], json!(["--x"]));
        assert_eq!(pem["resources"]["limits"]["cpu"], "500m");
        assert_eq!(
            pem["env"],
            json!([{"name": "A", "value": "1"}, {"name": "B", "value": "changed"}, {"name": "C", "value": "new"}])
        );
        assert_eq!(pod["containers"][1]["name"], "sidecar");
        assert_eq!(
            pod["tolerations"],
            json!([{"key": "gpu", "operator": "Exists"}])
        );
        // Objects no patch names are left alone.
        let other = patched(daemonset(), "DaemonSet", "other", Some(&patches)).unwrap();
        assert_eq!(other, daemonset());
    }

    #[test]
    fn a_bad_patch_is_refused_naming_it() {
        let bad = |text: &str| {
            let patches = BTreeMap::from([("pixie-pem".to_string(), text.to_string())]);
            patched(daemonset(), "DaemonSet", "pixie-pem", Some(&patches))
                .unwrap_err()
                .to_string()
        };
        assert!(
            bad("{not yaml").contains("spec.patches[\"pixie-pem\"] is not a YAML or JSON object")
        );
        assert!(bad("- a list").contains("not a mapping"));
        assert!(bad("spec: {selector: 7}").contains("makes the DaemonSet invalid"));
        assert!(bad("spec:\n  template:\n    spec:\n      $patch: replace\n").contains("$patch"));
    }
}
