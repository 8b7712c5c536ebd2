//! JSON merge patch (RFC 7386), JSON patch (RFC 6902) and an approximation of strategic
//! merge patch for the built-in kinds: lists of known fields merge by their key.

use serde_json::{Map, Value};

use crate::status::{ApiError, ApiResult};

/// The merge key of a list field, by field name, for the lists the project's kinds use.
/// Real strategic merge reads this from Go struct tags; a name-based table covers the
/// built-in kinds this project patches.
pub(crate) fn merge_key(field: &str) -> Option<&'static str> {
    Some(match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "imagePullSecrets" => "name",
        "volumeMounts" => "mountPath",
        "conditions" => "type",
        "ownerReferences" => "uid",
        "ports" => "port",
        "containerPorts" => "containerPort",
        _ => return None,
    })
}

/// The key a list item is merged on: `containerPort` for container ports, `port` otherwise.
fn item_key<'a>(field: &str, item: &'a Value) -> Option<(&'static str, &'a Value)> {
    let key = merge_key(field)?;
    if let Some(v) = item.get(key) {
        return Some((key, v));
    }
    if field == "ports" {
        return item.get("containerPort").map(|v| ("containerPort", v));
    }
    None
}

/// Lists of scalars that strategic merge treats as sets.
fn is_merged_set(field: &str) -> bool {
    field == "finalizers"
}

/// Sets `value` at `path`, creating missing objects on the way; leaves `obj` alone and
/// returns false where something on the way is not an object (user data can be anything).
pub(crate) fn set_field(obj: &mut Value, path: &[&str], value: Value) -> bool {
    let Some((last, parents)) = path.split_last() else {
        return false;
    };
    let mut cur = obj;
    for key in parents {
        if cur.is_null() {
            *cur = Value::Object(Map::new());
        }
        let Some(map) = cur.as_object_mut() else {
            return false;
        };
        cur = map.entry(key.to_string()).or_insert(Value::Null);
    }
    if cur.is_null() {
        *cur = Value::Object(Map::new());
    }
    match cur.as_object_mut() {
        Some(map) => {
            map.insert(last.to_string(), value);
            true
        }
        None => false,
    }
}

/// RFC 7386 JSON merge patch.
pub(crate) fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch_map) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(t) = target {
        for (k, v) in patch_map {
            if v.is_null() {
                t.remove(k);
            } else {
                merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    }
}

/// Strategic merge patch, approximated: keyed lists merge by key, `$patch` directives,
/// `$deleteFromPrimitiveList` and `$retainKeys` are honoured, `$setElementOrder` ignored.
pub(crate) fn strategic_merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch_map) = patch else {
        *target = patch.clone();
        return;
    };
    match patch_map.get("$patch").and_then(Value::as_str) {
        Some("replace") => {
            let mut replaced = patch_map.clone();
            replaced.remove("$patch");
            *target = Value::Object(replaced);
            return;
        }
        Some("delete") => {
            *target = Value::Null;
            return;
        }
        _ => {}
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(t) = target else { return };
    if let Some(keep) = patch_map.get("$retainKeys").and_then(Value::as_array) {
        t.retain(|k, _| keep.iter().any(|r| r.as_str() == Some(k)));
    }
    for (k, v) in patch_map {
        if k.starts_with("$setElementOrder/") || k == "$retainKeys" || k == "$patch" {
            continue;
        }
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(list)), Some(drop)) = (t.get_mut(field), v.as_array()) {
                list.retain(|x| !drop.contains(x));
            }
            continue;
        }
        match v {
            Value::Null => {
                t.remove(k);
            }
            Value::Array(items) => {
                let current = t.entry(k.clone()).or_insert(Value::Array(vec![]));
                merge_list(k, current, items);
            }
            Value::Object(_) => {
                let child = t.entry(k.clone()).or_insert(Value::Null);
                strategic_merge_patch(child, v);
                if child.is_null() {
                    t.remove(k);
                }
            }
            _ => {
                t.insert(k.clone(), v.clone());
            }
        }
    }
}

fn merge_list(field: &str, current: &mut Value, patch_items: &[Value]) {
    if is_merged_set(field) {
        let list = current.as_array_mut();
        if let Some(list) = list {
            for item in patch_items {
                if !list.contains(item) {
                    list.push(item.clone());
                }
            }
            return;
        }
    }
    let keyed =
        merge_key(field).is_some() && patch_items.iter().all(|i| item_key(field, i).is_some());
    let Some(list) = current.as_array_mut().filter(|_| keyed) else {
        *current = Value::Array(
            patch_items
                .iter()
                .filter(|i| i.get("$patch").is_none())
                .cloned()
                .collect(),
        );
        return;
    };
    for item in patch_items {
        let Some((key, key_value)) = item_key(field, item) else {
            continue;
        };
        let pos = list.iter().position(|x| x.get(key) == Some(key_value));
        let delete = item.get("$patch").and_then(Value::as_str) == Some("delete");
        match (pos, delete) {
            (Some(i), true) => {
                list.remove(i);
            }
            (None, true) => {}
            (Some(i), false) => strategic_merge_patch(&mut list[i], item),
            (None, false) => {
                let mut fresh = Value::Null;
                strategic_merge_patch(&mut fresh, item);
                list.push(fresh);
            }
        }
    }
}

fn pointer_tokens(path: &str) -> ApiResult<Vec<String>> {
    if path.is_empty() {
        return Ok(vec![]);
    }
    let rest = path
        .strip_prefix('/')
        .ok_or_else(|| ApiError::bad_request(format!("invalid JSON pointer {path:?}")))?;
    Ok(rest
        .split('/')
        .map(|t| t.replace("~1", "/").replace("~0", "~"))
        .collect())
}

fn parent_mut<'a>(doc: &'a mut Value, tokens: &[String]) -> ApiResult<&'a mut Value> {
    let mut cur = doc;
    for t in tokens {
        cur = match cur {
            Value::Object(m) => m.get_mut(t),
            Value::Array(a) => t.parse::<usize>().ok().and_then(|i| a.get_mut(i)),
            _ => None,
        }
        .ok_or_else(|| ApiError::unprocessable(format!("jsonpatch: path not found at {t:?}")))?;
    }
    Ok(cur)
}

fn remove_at(doc: &mut Value, path: &str) -> ApiResult<Value> {
    let tokens = pointer_tokens(path)?;
    let (last, parents) = tokens
        .split_last()
        .ok_or_else(|| ApiError::bad_request("jsonpatch: cannot remove the root"))?;
    let parent = parent_mut(doc, parents)?;
    let removed = match parent {
        Value::Object(m) => m.remove(last),
        Value::Array(a) => last
            .parse::<usize>()
            .ok()
            .filter(|i| *i < a.len())
            .map(|i| a.remove(i)),
        _ => None,
    };
    removed.ok_or_else(|| {
        ApiError::unprocessable(format!(
            "jsonpatch remove operation does not apply: doc is missing path: {path:?}"
        ))
    })
}

fn add_at(doc: &mut Value, path: &str, value: Value, replace: bool) -> ApiResult<()> {
    let tokens = pointer_tokens(path)?;
    let Some((last, parents)) = tokens.split_last() else {
        *doc = value;
        return Ok(());
    };
    let parent = parent_mut(doc, parents)?;
    match parent {
        Value::Object(m) => {
            if replace && !m.contains_key(last) {
                return Err(ApiError::unprocessable(format!(
                    "jsonpatch replace operation does not apply: doc is missing key: {path}"
                )));
            }
            m.insert(last.clone(), value);
        }
        Value::Array(a) => {
            let idx = if last == "-" {
                a.len()
            } else {
                last.parse::<usize>()
                    .map_err(|_| ApiError::bad_request(format!("invalid index {last:?}")))?
            };
            if replace {
                let slot = a.get_mut(idx).ok_or_else(|| {
                    ApiError::unprocessable(format!("jsonpatch: index out of range {path}"))
                })?;
                *slot = value;
            } else if idx <= a.len() {
                a.insert(idx, value);
            } else {
                return Err(ApiError::unprocessable(format!(
                    "jsonpatch: index out of range {path}"
                )));
            }
        }
        _ => {
            return Err(ApiError::unprocessable(format!(
                "jsonpatch: cannot add at {path}"
            )));
        }
    }
    Ok(())
}

/// RFC 6902 JSON patch (`kubectl patch --type=json`).
pub(crate) fn json_patch(doc: &mut Value, ops: &Value) -> ApiResult<()> {
    let ops = ops
        .as_array()
        .ok_or_else(|| ApiError::bad_request("json patch must be an array of operations"))?;
    for op in ops {
        let kind = op.get("op").and_then(Value::as_str).unwrap_or_default();
        let path = op.get("path").and_then(Value::as_str).unwrap_or_default();
        let value = || {
            op.get("value")
                .cloned()
                .ok_or_else(|| ApiError::bad_request(format!("json patch {kind} needs a value")))
        };
        match kind {
            "add" => add_at(doc, path, value()?, false)?,
            "replace" => add_at(doc, path, value()?, true)?,
            "remove" => {
                remove_at(doc, path)?;
            }
            "move" | "copy" => {
                let from = op.get("from").and_then(Value::as_str).unwrap_or_default();
                let v = if kind == "move" {
                    remove_at(doc, from)?
                } else {
                    doc.pointer(from).cloned().ok_or_else(|| {
                        ApiError::unprocessable(format!("jsonpatch copy: missing {from}"))
                    })?
                };
                add_at(doc, path, v, false)?;
            }
            "test" => {
                // As the server's json-patch library does: a missing path tests as null,
                // which kube's finalizer helper relies on.
                let have = doc.pointer(path).cloned().unwrap_or(Value::Null);
                if have != value()? {
                    return Err(ApiError::unprocessable(format!(
                        "testing value {path} failed: test failed"
                    )));
                }
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "unexpected json patch operation {other:?}"
                )));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn strategic_merge_merges_containers_and_env_by_name() {
        let mut pod = json!({"spec": {"containers": [
            {"name": "a", "image": "x", "env": [{"name": "E", "value": "1"}]},
            {"name": "b", "image": "y"}
        ]}});
        let patch = json!({"spec": {
            "$setElementOrder/containers": [{"name": "a"}, {"name": "b"}],
            "containers": [
                {"name": "a", "env": [{"name": "F", "value": "2"}]},
                {"name": "b", "$patch": "delete"}
            ]
        }});
        strategic_merge_patch(&mut pod, &patch);
        assert_eq!(
            pod,
            json!({"spec": {"containers": [
                {"name": "a", "image": "x", "env": [{"name": "E", "value": "1"}, {"name": "F", "value": "2"}]}
            ]}})
        );
    }

    #[test]
    fn merge_patch_replaces_lists_and_deletes_nulls() {
        let mut v = json!({"a": [1, 2], "b": {"c": 1, "d": 2}});
        merge_patch(&mut v, &json!({"a": [3], "b": {"c": null}}));
        assert_eq!(v, json!({"a": [3], "b": {"d": 2}}));
    }

    #[test]
    fn json_patch_ops() {
        let mut v = json!({"metadata": {"labels": {"a": "1"}}, "list": [1]});
        let ops = json!([
            {"op": "add", "path": "/metadata/labels/b", "value": "2"},
            {"op": "remove", "path": "/metadata/labels/a"},
            {"op": "add", "path": "/list/-", "value": 2},
        ]);
        assert_eq!(json_patch(&mut v, &ops), Ok(()));
        assert_eq!(
            v,
            json!({"metadata": {"labels": {"b": "2"}}, "list": [1, 2]})
        );
        assert!(json_patch(&mut v, &json!([{"op": "remove", "path": "/nope"}])).is_err());
    }
}
