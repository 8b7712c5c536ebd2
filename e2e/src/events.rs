//! Core `v1` Events and `events.k8s.io/v1` Events are one kind on a real server, seen
//! through two APIs. Here each API keeps its own objects, and each also shows the
//! other's, converted: so events recorded with `kube`'s Recorder (events.k8s.io) appear
//! in `kubectl describe` (which lists core events).

use serde_json::{Map, Value, json};

/// Field names that differ: (core v1, events.k8s.io/v1).
const RENAMED: [(&str, &str); 7] = [
    ("involvedObject", "regarding"),
    ("message", "note"),
    ("source", "deprecatedSource"),
    ("firstTimestamp", "deprecatedFirstTimestamp"),
    ("lastTimestamp", "deprecatedLastTimestamp"),
    ("count", "deprecatedCount"),
    ("reportingComponent", "reportingController"),
];

/// The group whose events are the same objects as `group`'s, for the `events` resource.
pub(crate) fn twin(group: &str, plural: &str) -> Option<&'static str> {
    match (group, plural) {
        ("", "events") => Some("events.k8s.io"),
        ("events.k8s.io", "events") => Some(""),
        _ => None,
    }
}

/// An event converted to the form `to_group` serves (`""` core, or `events.k8s.io`).
pub(crate) fn convert(obj: &Value, to_group: &str) -> Value {
    let Some(map) = obj.as_object() else {
        return obj.clone();
    };
    let to_core = to_group.is_empty();
    let mut out = Map::new();
    for (k, v) in map {
        let renamed = RENAMED.iter().find_map(|(core, new)| {
            if to_core && k == new {
                Some(*core)
            } else if !to_core && k == core {
                Some(*new)
            } else {
                None
            }
        });
        out.insert(renamed.unwrap_or(k).to_string(), v.clone());
    }
    out.insert(
        "apiVersion".into(),
        json!(if to_core { "v1" } else { "events.k8s.io/v1" }),
    );
    out.insert("kind".into(), json!("Event"));
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_both_ways() {
        let new = json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "regarding": {"name": "tp1"}, "note": "loaded", "reason": "Loaded"});
        let core = convert(&new, "");
        assert_eq!(
            core,
            json!({"apiVersion": "v1", "kind": "Event", "involvedObject": {"name": "tp1"}, "message": "loaded", "reason": "Loaded"})
        );
        assert_eq!(convert(&core, "events.k8s.io"), new);
    }
}
