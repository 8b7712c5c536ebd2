//! Field ownership (`metadata.managedFields`) and server-side apply: which manager owns
//! which fields, conflicts worded as the API server words them, and removal of fields an
//! applier stops applying.

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

use crate::patch::merge_key;
use crate::status::{ApiError, ApiResult, Cause};

/// A path to a leaf field, as FieldsV1 tokens (`f:spec`, `k:{"name":"a"}`, `v:"x"`).
type FieldPath = Vec<String>;
type FieldSet = BTreeSet<FieldPath>;

/// Who made a change: manager name, operation and subresource.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Manager<'a> {
    pub(crate) name: &'a str,
    pub(crate) apply: bool,
    /// `status` for the status subresource, empty for the main resource.
    pub(crate) subresource: &'a str,
    pub(crate) api_version: &'a str,
}

/// Fields outside the owned set: identity and bookkeeping, never owned by a manager.
fn tracked_top_level(key: &str, track_status: bool) -> bool {
    !matches!(key, "apiVersion" | "kind") && (track_status || key != "status")
}

fn tracked_metadata(key: &str) -> bool {
    matches!(
        key,
        "labels" | "annotations" | "finalizers" | "ownerReferences"
    )
}

/// The leaf fields an object sets.
fn fieldset_of(obj: &Value, track_status: bool) -> FieldSet {
    let mut set = FieldSet::new();
    if let Value::Object(map) = obj {
        for (k, v) in map {
            if k == "metadata" {
                if let Value::Object(meta) = v {
                    for (mk, mv) in meta.iter().filter(|(mk, _)| tracked_metadata(mk)) {
                        let path = vec!["f:metadata".to_string(), format!("f:{mk}")];
                        collect(mv, mk, path, &mut set);
                    }
                }
            } else if tracked_top_level(k, track_status) {
                collect(v, k, vec![format!("f:{k}")], &mut set);
            }
        }
    }
    set
}

fn collect(v: &Value, field: &str, path: FieldPath, set: &mut FieldSet) {
    match v {
        Value::Object(map) if !map.is_empty() => {
            for (k, child) in map {
                let mut p = path.clone();
                p.push(format!("f:{k}"));
                collect(child, k, p, set);
            }
        }
        Value::Array(items) if field == "finalizers" => {
            for item in items {
                let mut p = path.clone();
                p.push(format!("v:{item}"));
                set.insert(p);
            }
        }
        Value::Array(items) if list_key(field, items).is_some() => {
            let key = list_key(field, items).unwrap_or("name");
            for item in items {
                let mut p = path.clone();
                p.push(format!("k:{}", json!({key: item.get(key)})));
                collect(item, "", p, set);
            }
        }
        _ => {
            set.insert(path);
        }
    }
}

/// The merge key of a list, when every item has it.
fn list_key(field: &str, items: &[Value]) -> Option<&'static str> {
    let key = merge_key(field)?;
    let key = if field == "ports" && items.iter().any(|i| i.get("port").is_none()) {
        "containerPort"
    } else {
        key
    };
    items.iter().all(|i| i.get(key).is_some()).then_some(key)
}

/// The value at a field path, if present.
fn value_at<'a>(obj: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut cur = obj;
    for token in path {
        cur = if let Some(f) = token.strip_prefix("f:") {
            cur.get(f)?
        } else if let Some(k) = token.strip_prefix("k:") {
            let key: Value = serde_json::from_str(k).ok()?;
            let (kname, kval) = key.as_object()?.iter().next()?;
            cur.as_array()?
                .iter()
                .find(|i| i.get(kname) == Some(kval))?
        } else if let Some(v) = token.strip_prefix("v:") {
            let want: Value = serde_json::from_str(v).ok()?;
            cur.as_array()?.iter().find(|i| **i == want)?
        } else {
            return None;
        };
    }
    Some(cur)
}

/// Removes the field at a path (a list item for `k:`/`v:` tokens).
fn remove_at(obj: &mut Value, path: &[String]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut cur = obj;
    for token in parents {
        let next = if let Some(f) = token.strip_prefix("f:") {
            cur.get_mut(f)
        } else if let Some(k) = token.strip_prefix("k:") {
            let key: Option<Value> = serde_json::from_str(k).ok();
            let kv = key
                .as_ref()
                .and_then(Value::as_object)
                .and_then(|m| m.iter().next());
            match (cur.as_array_mut(), kv) {
                (Some(a), Some((kn, kv))) => a.iter_mut().find(|i| i.get(kn) == Some(kv)),
                _ => None,
            }
        } else {
            None
        };
        match next {
            Some(n) => cur = n,
            None => return,
        }
    }
    if let Some(f) = last.strip_prefix("f:") {
        if let Some(m) = cur.as_object_mut() {
            m.remove(f);
        }
    } else if let Some(v) = last.strip_prefix("v:")
        && let (Ok(want), Some(a)) = (serde_json::from_str::<Value>(v), cur.as_array_mut())
    {
        a.retain(|i| *i != want);
    }
}

/// `.spec.containers[name="a"].image`: how structured-merge-diff prints a path.
fn display(path: &[String]) -> String {
    let mut out = String::new();
    for token in path {
        if let Some(f) = token.strip_prefix("f:") {
            out.push('.');
            out.push_str(f);
        } else if let Some(k) = token.strip_prefix("k:") {
            let parts: Vec<String> = serde_json::from_str::<Map<String, Value>>(k)
                .map(|m| m.iter().map(|(k, v)| format!("{k}={v}")).collect())
                .unwrap_or_default();
            out.push_str(&format!("[{}]", parts.join(",")));
        } else if let Some(v) = token.strip_prefix("v:") {
            out.push_str(&format!("[={v}]"));
        }
    }
    out
}

fn to_fields_v1(set: &FieldSet) -> Value {
    let mut root = Map::new();
    for path in set {
        let mut node = &mut root;
        for (i, token) in path.iter().enumerate() {
            let entry = node.entry(token.clone()).or_insert_with(|| json!({}));
            let is_item = token.starts_with("k:");
            let Some(map) = entry.as_object_mut() else {
                break;
            };
            if is_item && i + 1 < path.len() {
                map.insert(".".into(), json!({}));
            }
            node = map;
        }
    }
    Value::Object(root)
}

fn from_fields_v1(v: &Value, prefix: &mut FieldPath, set: &mut FieldSet) {
    let Some(map) = v.as_object() else { return };
    let children: Vec<_> = map.iter().filter(|(k, _)| k.as_str() != ".").collect();
    if children.is_empty() {
        if !prefix.is_empty() {
            set.insert(prefix.clone());
        }
        return;
    }
    for (k, child) in children {
        prefix.push(k.clone());
        from_fields_v1(child, prefix, set);
        prefix.pop();
    }
}

struct Entry {
    manager: String,
    apply: bool,
    subresource: String,
    api_version: String,
    fields: FieldSet,
}

impl Entry {
    /// How conflict messages name this manager (`"m" using v1` for updaters).
    fn describe(&self) -> String {
        let mut s = format!("{:?}", self.manager);
        if !self.subresource.is_empty() {
            s.push_str(&format!(" with subresource {:?}", self.subresource));
        }
        if !self.apply {
            s.push_str(&format!(" using {}", self.api_version));
        }
        s
    }

    fn is(&self, m: &Manager<'_>) -> bool {
        self.manager == m.name && self.apply == m.apply && self.subresource == m.subresource
    }
}

fn read_entries(obj: &Value) -> Vec<Entry> {
    let Some(list) = obj
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
    else {
        return vec![];
    };
    list.iter()
        .map(|e| {
            let mut fields = FieldSet::new();
            if let Some(f) = e.get("fieldsV1") {
                from_fields_v1(f, &mut vec![], &mut fields);
            }
            let s = |k: &str| {
                e.get(k)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string()
            };
            Entry {
                manager: s("manager"),
                apply: s("operation") == "Apply",
                subresource: s("subresource"),
                api_version: s("apiVersion"),
                fields,
            }
        })
        .collect()
}

fn write_entries(obj: &mut Value, entries: Vec<Entry>, now: &str) {
    let list: Vec<Value> = entries
        .into_iter()
        .filter(|e| !e.fields.is_empty())
        .map(|e| {
            let mut v = json!({
                "manager": e.manager,
                "operation": if e.apply { "Apply" } else { "Update" },
                "apiVersion": e.api_version,
                "time": now,
                "fieldsType": "FieldsV1",
                "fieldsV1": to_fields_v1(&e.fields),
            });
            if !e.subresource.is_empty() {
                v["subresource"] = json!(e.subresource);
            }
            v
        })
        .collect();
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        if list.is_empty() {
            meta.remove("managedFields");
        } else {
            meta.insert("managedFields".into(), Value::Array(list));
        }
    }
}

fn entry_for<'e>(entries: &'e mut Vec<Entry>, m: &Manager<'_>) -> &'e mut Entry {
    let pos = match entries.iter().position(|e| e.is(m)) {
        Some(p) => p,
        None => {
            entries.push(Entry {
                manager: m.name.to_string(),
                apply: m.apply,
                subresource: m.subresource.to_string(),
                api_version: m.api_version.to_string(),
                fields: FieldSet::new(),
            });
            entries.len() - 1
        }
    };
    let e = &mut entries[pos];
    e.api_version = m.api_version.to_string();
    e
}

/// Records a non-apply write (create, update, patch): the manager takes the fields it
/// changed from everyone else. `new` gets the updated `managedFields`.
pub(crate) fn record_update(
    old: Option<&Value>,
    new: &mut Value,
    m: &Manager<'_>,
    track_status: bool,
    now: &str,
) {
    let mut entries = read_entries(old.unwrap_or(&Value::Null));
    let new_set = fieldset_of(new, track_status);
    let old_set = old
        .map(|o| fieldset_of(o, track_status))
        .unwrap_or_default();
    let changed: FieldSet = new_set
        .iter()
        .filter(|p| old.and_then(|o| value_at(o, p)) != value_at(new, p))
        .cloned()
        .collect();
    let removed: FieldSet = old_set.difference(&new_set).cloned().collect();
    for e in entries.iter_mut() {
        e.fields
            .retain(|p| !changed.contains(p) && !removed.contains(p));
    }
    let mine = entry_for(&mut entries, m);
    mine.fields.extend(changed);
    write_entries(new, entries, now);
}

/// Merges an applied configuration into the live object as server-side apply does.
fn apply_merge(live: &mut Value, applied: &Value, field: &str) {
    match (live, applied) {
        (Value::Object(l), Value::Object(a)) => {
            for (k, v) in a {
                match l.get_mut(k) {
                    Some(existing) => apply_merge(existing, v, k),
                    None => {
                        l.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (Value::Array(l), Value::Array(a)) if field == "finalizers" => {
            for item in a {
                if !l.contains(item) {
                    l.push(item.clone());
                }
            }
        }
        (Value::Array(l), Value::Array(a))
            if list_key(field, a).is_some() && list_key(field, l).is_some() =>
        {
            let key = list_key(field, a).unwrap_or("name");
            for item in a {
                match l.iter_mut().find(|x| x.get(key) == item.get(key)) {
                    Some(existing) => apply_merge(existing, item, ""),
                    None => l.push(item.clone()),
                }
            }
        }
        (live, applied) => *live = applied.clone(),
    }
}

/// Server-side apply: conflicts, merge, ownership, and removal of fields this applier
/// owned alone and no longer applies. `live` is `None` when the object is being created.
pub(crate) fn apply(
    live: Option<&Value>,
    applied: &Value,
    m: &Manager<'_>,
    force: bool,
    track_status: bool,
    now: &str,
) -> ApiResult<Value> {
    let mut entries = read_entries(live.unwrap_or(&Value::Null));
    let applied_set = fieldset_of(applied, track_status);
    let mut conflicts: Vec<(String, FieldPath)> = Vec::new();
    if let Some(live) = live {
        for e in entries.iter().filter(|e| !e.is(m)) {
            for p in e.fields.intersection(&applied_set) {
                if value_at(live, p) != value_at(applied, p) {
                    conflicts.push((e.describe(), p.clone()));
                }
            }
        }
    }
    if !conflicts.is_empty() && !force {
        return Err(conflict_error(&conflicts));
    }
    if force {
        for e in entries.iter_mut().filter(|e| !e.is(m)) {
            e.fields.retain(|p| !conflicts.iter().any(|(_, c)| c == p));
        }
    }
    let mut merged = live.cloned().unwrap_or_else(|| json!({}));
    apply_merge(&mut merged, applied, "");
    let previous = entries
        .iter()
        .find(|e| e.is(m))
        .map(|e| e.fields.clone())
        .unwrap_or_default();
    for p in previous.difference(&applied_set) {
        let owned_elsewhere = entries.iter().any(|e| !e.is(m) && e.fields.contains(p));
        if !owned_elsewhere {
            // An item of a keyed list goes when nothing under it stays owned.
            let item_prefix = p
                .iter()
                .rposition(|t| t.starts_with("k:"))
                .map(|i| &p[..=i]);
            let item_still_owned = item_prefix.is_some_and(|prefix| {
                applied_set
                    .iter()
                    .chain(
                        entries
                            .iter()
                            .filter(|e| !e.is(m))
                            .flat_map(|e| e.fields.iter()),
                    )
                    .any(|q| q.starts_with(prefix))
            });
            match item_prefix {
                Some(prefix) if !item_still_owned => remove_item(&mut merged, prefix),
                _ => remove_at(&mut merged, p),
            }
        }
    }
    entry_for(&mut entries, m).fields = applied_set;
    write_entries(&mut merged, entries, now);
    Ok(merged)
}

fn remove_item(obj: &mut Value, prefix: &[String]) {
    let Some((last, parents)) = prefix.split_last() else {
        return;
    };
    let Some(list) = value_at_mut(obj, parents).and_then(Value::as_array_mut) else {
        return;
    };
    if let Some(k) = last.strip_prefix("k:")
        && let Ok(Value::Object(key)) = serde_json::from_str::<Value>(k)
        && let Some((kn, kv)) = key.iter().next()
    {
        list.retain(|i| i.get(kn) != Some(kv));
    }
}

fn value_at_mut<'a>(obj: &'a mut Value, path: &[String]) -> Option<&'a mut Value> {
    let mut cur = obj;
    for token in path {
        cur = if let Some(f) = token.strip_prefix("f:") {
            cur.get_mut(f)?
        } else if let Some(k) = token.strip_prefix("k:") {
            let key: Value = serde_json::from_str(k).ok()?;
            let (kn, kv) = key
                .as_object()?
                .iter()
                .next()
                .map(|(a, b)| (a.clone(), b.clone()))?;
            cur.as_array_mut()?
                .iter_mut()
                .find(|i| i.get(&kn) == Some(&kv))?
        } else {
            return None;
        };
    }
    Some(cur)
}

/// The 409 a real server sends, worded by `getConflictMessage` in the apiserver.
fn conflict_error(conflicts: &[(String, FieldPath)]) -> ApiError {
    let causes = conflicts
        .iter()
        .map(|(who, p)| Cause {
            reason: "FieldManagerConflict".into(),
            message: format!("conflict with {who}"),
            field: display(p),
        })
        .collect();
    let message = if let [(who, p)] = conflicts {
        format!(
            "Apply failed with 1 conflict: conflict with {who}: {}",
            display(p)
        )
    } else {
        let mut managers: Vec<&String> = conflicts.iter().map(|(w, _)| w).collect();
        managers.sort();
        managers.dedup();
        let mut lines = Vec::new();
        for who in managers {
            lines.push(format!("conflicts with {who}"));
            for (_, p) in conflicts.iter().filter(|(w, _)| w == who) {
                lines.push(format!("- {}", display(p)));
            }
        }
        format!(
            "Apply failed with {} conflicts: {}",
            conflicts.len(),
            lines.join("\n")
        )
    };
    ApiError::apply_conflict(message, causes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mgr(name: &str, apply: bool) -> Manager<'_> {
        Manager {
            name,
            apply,
            subresource: "",
            api_version: "v1",
        }
    }

    #[test]
    fn conflicting_apply_is_refused_then_forced() {
        let a = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"k": "1", "j": "x"}});
        let live = apply(None, &a, &mgr("alice", true), false, false, "t").unwrap_or_default();
        let b = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"k": "2"}});
        let err = apply(Some(&live), &b, &mgr("bob", true), false, false, "t");
        assert_eq!(
            err.as_ref().err().map(|e| e.message.as_str()),
            Some("Apply failed with 1 conflict: conflict with \"alice\": .data.k")
        );
        let forced =
            apply(Some(&live), &b, &mgr("bob", true), true, false, "t").unwrap_or_default();
        assert_eq!(forced["data"], json!({"k": "2", "j": "x"}));
        // alice stops applying j and gives up k: j goes, k stays (bob owns it).
        let a2 = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}});
        let after =
            apply(Some(&forced), &a2, &mgr("alice", true), false, false, "t").unwrap_or_default();
        assert_eq!(after["data"], json!({"k": "2"}));
        let managers: Vec<&str> = read_entries(&after)
            .iter()
            .map(|e| e.manager.as_str())
            .collect::<Vec<_>>()
            .iter()
            .map(|_| "")
            .collect();
        assert_eq!(
            read_entries(&after)
                .iter()
                .map(|e| e.manager.clone())
                .collect::<Vec<_>>(),
            ["bob"],
            "{managers:?} {after}"
        );
    }

    #[test]
    fn updaters_are_named_with_their_api_version() {
        let old = json!({"metadata": {"name": "c"}, "data": {}});
        let mut new = json!({"metadata": {"name": "c"}, "data": {"k": "1"}});
        record_update(
            Some(&old),
            &mut new,
            &mgr("kubectl-edit", false),
            false,
            "t",
        );
        let applied = json!({"metadata": {"name": "c"}, "data": {"k": "2"}});
        let err = apply(
            Some(&new),
            &applied,
            &mgr("kubectl", true),
            false,
            false,
            "t",
        )
        .err();
        assert_eq!(
            err.map(|e| e.message),
            Some(
                "Apply failed with 1 conflict: conflict with \"kubectl-edit\" using v1: .data.k"
                    .to_string()
            )
        );
    }
}

#[cfg(test)]
mod force_tests {
    use super::*;

    #[test]
    fn force_takes_the_field_from_every_other_owner() {
        let m = |name| Manager {
            name,
            apply: true,
            subresource: "",
            api_version: "v1",
        };
        let cm = |data: Value| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": data});
        let live = apply(
            None,
            &cm(json!({"key": "a", "extra": "x"})),
            &m("alice"),
            false,
            true,
            "t",
        )
        .unwrap_or_default();
        let live = apply(
            Some(&live),
            &cm(json!({"key": "a"})),
            &m("carol"),
            false,
            true,
            "t",
        )
        .unwrap_or_default();
        let live = apply(
            Some(&live),
            &cm(json!({"key": "b"})),
            &m("bob"),
            true,
            true,
            "t",
        )
        .unwrap_or_default();
        let managers: Vec<String> = read_entries(&live).into_iter().map(|e| e.manager).collect();
        assert_eq!(managers, ["alice", "bob"]);
        assert_eq!(live["data"], json!({"key": "b", "extra": "x"}));
    }
}
