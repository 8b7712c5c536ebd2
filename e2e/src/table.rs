//! Table responses (`Accept: application/json;as=Table;g=meta.k8s.io;v=v1`): the columns
//! kubectl prints, from a CRD's `additionalPrinterColumns` or the built-in printers.

use serde_json::{Value, json};

use crate::resources::{PrinterColumn, Resource};
use crate::time::{human_age, human_duration, now_secs, parse_rfc3339};

/// What each row carries besides its cells (`includeObject`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IncludeObject {
    None,
    Metadata,
    Object,
}

impl IncludeObject {
    pub(crate) fn parse(s: Option<&str>) -> Self {
        match s {
            Some("None") => Self::None,
            Some("Object") => Self::Object,
            _ => Self::Metadata,
        }
    }
}

/// Splits a JSONPath like `.status.conditions[?(@.type=="Ready")].status` into steps.
fn steps(path: &str) -> Vec<String> {
    let path = path.trim().trim_start_matches('{').trim_end_matches('}');
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut depth = 0;
    for c in path.chars() {
        match c {
            '[' if depth == 0 => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
                depth += 1;
                cur.push(c);
            }
            '[' => {
                depth += 1;
                cur.push(c);
            }
            ']' => {
                depth -= 1;
                cur.push(c);
                if depth == 0 {
                    out.push(std::mem::take(&mut cur));
                }
            }
            '.' if depth == 0 => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            _ => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Evaluates the JSONPath subset printer columns use; `None` when nothing matches.
pub(crate) fn json_path<'a>(obj: &'a Value, path: &str) -> Option<&'a Value> {
    let mut cur = obj;
    for step in steps(path) {
        if let Some(inner) = step.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
            if let Some(filter) = inner.strip_prefix("?(@.").and_then(|f| f.strip_suffix(')')) {
                let (field, want) = filter.split_once("==")?;
                let want = want.trim().trim_matches(|c| c == '"' || c == '\'');
                cur = cur
                    .as_array()?
                    .iter()
                    .find(|item| item.get(field.trim()).and_then(Value::as_str) == Some(want))?;
            } else if let Ok(i) = inner.parse::<usize>() {
                cur = cur.as_array()?.get(i)?;
            } else {
                let key = inner.trim_matches(|c| c == '"' || c == '\'');
                cur = cur.get(key)?;
            }
        } else {
            cur = cur.get(&step)?;
        }
    }
    Some(cur)
}

fn cell(col: &PrinterColumn, obj: &Value) -> Value {
    let Some(v) = json_path(obj, &col.json_path) else {
        return Value::Null;
    };
    match (col.type_.as_str(), v) {
        ("date", Value::String(s)) => json!(human_age(s)),
        ("string", Value::String(_))
        | ("integer", Value::Number(_))
        | ("number", Value::Number(_))
        | ("boolean", Value::Bool(_)) => v.clone(),
        (_, Value::Array(items)) => {
            let parts: Vec<String> = items
                .iter()
                .map(|i| {
                    i.as_str()
                        .map(String::from)
                        .unwrap_or_else(|| i.to_string())
                })
                .collect();
            json!(parts.join(","))
        }
        (_, Value::String(s)) => json!(s),
        (_, other) => json!(other.to_string()),
    }
}

fn pod_cells(obj: &Value, name: &str) -> Option<Value> {
    let statuses = obj
        .pointer("/status/containerStatuses")
        .and_then(Value::as_array);
    Some(match name {
        "Ready" => {
            let total = obj
                .pointer("/spec/containers")
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
            let ready = statuses.map_or(0, |s| {
                s.iter().filter(|c| c["ready"] == json!(true)).count()
            });
            json!(format!("{ready}/{total}"))
        }
        "Status" => {
            if obj.pointer("/metadata/deletionTimestamp").is_some() {
                return Some(json!("Terminating"));
            }
            // As the pod printer does: a waiting reason wins, then the reason of a
            // container that terminated while none runs, then the phase.
            let all = statuses.map(Vec::as_slice).unwrap_or_default();
            let waiting = all
                .iter()
                .find_map(|c| c.pointer("/state/waiting/reason").and_then(Value::as_str));
            let running = all.iter().any(|c| c.pointer("/state/running").is_some());
            let terminated = all.iter().find_map(|c| {
                c.pointer("/state/terminated/reason")
                    .and_then(Value::as_str)
            });
            let phase = obj
                .pointer("/status/phase")
                .and_then(Value::as_str)
                .unwrap_or("Unknown");
            json!(waiting.or(terminated.filter(|_| !running)).unwrap_or(phase))
        }
        "Restarts" => {
            let restarts: i64 = statuses.map_or(0, |s| {
                s.iter().filter_map(|c| c["restartCount"].as_i64()).sum()
            });
            let last = statuses.and_then(|s| {
                s.iter()
                    .filter_map(|c| {
                        c.pointer("/lastState/terminated/finishedAt")
                            .and_then(Value::as_str)
                            .and_then(parse_rfc3339)
                    })
                    .max()
            });
            match last {
                Some(t) if restarts > 0 => json!(format!(
                    "{restarts} ({} ago)",
                    human_duration(now_secs() - t)
                )),
                _ => json!(restarts.to_string()),
            }
        }
        _ => return None,
    })
}

/// `k=v,k2=v2` from a label map, empty when there is none.
pub(crate) fn selector_text(labels: Option<&Value>) -> String {
    labels
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

fn computed(res: &Resource, col: &PrinterColumn, obj: &Value) -> Value {
    if !col.json_path.is_empty() {
        let v = cell(col, obj);
        // Built-in printers show `<none>` where a CRD column shows an empty cell.
        return if v.is_null() && !res.from_crd {
            json!("<none>")
        } else {
            v
        };
    }
    let computed = match (res.kind.as_str(), col.name.as_str()) {
        ("Pod", name) => pod_cells(obj, name),
        ("Deployment", "Ready") => {
            let ready = obj
                .pointer("/status/readyReplicas")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            let want = obj
                .pointer("/spec/replicas")
                .and_then(Value::as_i64)
                .unwrap_or(1);
            Some(json!(format!("{ready}/{want}")))
        }
        ("DaemonSet", "Node Selector") => {
            let selector = selector_text(obj.pointer("/spec/template/spec/nodeSelector"));
            Some(json!(if selector.is_empty() {
                "<none>".to_string()
            } else {
                selector
            }))
        }
        ("Node", "Status") => {
            let ready = obj
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .is_some_and(|cs| {
                    cs.iter()
                        .any(|c| c["type"] == "Ready" && c["status"] == "True")
                });
            Some(json!(if ready { "Ready" } else { "NotReady" }))
        }
        ("Node", "Roles") => Some(json!("<none>")),
        ("Service", "External-IP") => Some(json!("<none>")),
        ("Service", "Port(s)") => {
            let ports: Vec<String> = obj
                .pointer("/spec/ports")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|p| {
                    let proto = p.get("protocol").and_then(Value::as_str).unwrap_or("TCP");
                    match p.get("nodePort") {
                        Some(n) => format!("{}:{n}/{proto}", p["port"]),
                        None => format!("{}/{proto}", p["port"]),
                    }
                })
                .collect();
            Some(json!(if ports.is_empty() {
                "<none>".to_string()
            } else {
                ports.join(",")
            }))
        }
        ("Service", "Selector") => {
            let selector = selector_text(obj.pointer("/spec/selector"));
            Some(json!(if selector.is_empty() {
                "<none>".to_string()
            } else {
                selector
            }))
        }
        ("Event", "Last Seen") => {
            let when = [
                "/lastTimestamp",
                "/deprecatedLastTimestamp",
                "/eventTime",
                "/series/lastObservedTime",
                "/metadata/creationTimestamp",
            ]
            .iter()
            .find_map(|p| {
                obj.pointer(p)
                    .and_then(Value::as_str)
                    .filter(|s| !s.is_empty())
            });
            Some(json!(
                when.map(human_age)
                    .unwrap_or_else(|| "<unknown>".to_string())
            ))
        }
        ("Event", "Type") => Some(obj.get("type").cloned().unwrap_or(json!(""))),
        ("Event", "Reason") => Some(obj.get("reason").cloned().unwrap_or(json!(""))),
        ("Event", "Object") => {
            let about = obj.get("involvedObject").or_else(|| obj.get("regarding"));
            let kind = about
                .and_then(|a| a.get("kind"))
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_lowercase();
            let name = about
                .and_then(|a| a.get("name"))
                .and_then(Value::as_str)
                .unwrap_or_default();
            Some(json!(format!("{kind}/{name}")))
        }
        ("Event", "Message") => {
            let text = obj
                .get("message")
                .or_else(|| obj.get("note"))
                .and_then(Value::as_str)
                .unwrap_or_default();
            Some(json!(text.trim()))
        }
        ("ConfigMap", "Data") => {
            let count = |k: &str| obj.get(k).and_then(Value::as_object).map_or(0, |m| m.len());
            Some(json!(count("data") + count("binaryData")))
        }
        _ => None,
    };
    computed.unwrap_or(Value::Null)
}

fn row_object(obj: &Value, include: IncludeObject) -> Option<Value> {
    match include {
        IncludeObject::None => None,
        IncludeObject::Object => Some(obj.clone()),
        IncludeObject::Metadata => Some(partial_metadata(obj)),
    }
}

/// The `PartialObjectMetadata` form of an object.
pub(crate) fn partial_metadata(obj: &Value) -> Value {
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": obj.get("metadata").cloned().unwrap_or_else(|| json!({})),
    })
}

/// A Table of `objects`; `headers` false for watch events after the first.
pub(crate) fn to_table(
    res: &Resource,
    objects: &[Value],
    rv: &str,
    include: IncludeObject,
    headers: bool,
) -> Value {
    let columns: Vec<Value> = res
        .columns
        .iter()
        .map(|c| {
            let mut d = json!({"name": c.name, "type": if c.type_ == "date" { "string" } else { c.type_.as_str() }, "format": c.format, "description": c.description, "priority": c.priority});
            if c.name == "Name" && c.format == "name" && c.description.is_empty() {
                d["description"] = json!("Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names");
            }
            d
        })
        .collect();
    let rows: Vec<Value> = objects
        .iter()
        .map(|obj| {
            let cells: Vec<Value> = res.columns.iter().map(|c| computed(res, c, obj)).collect();
            let mut row = json!({"cells": cells});
            if let Some(o) = row_object(obj, include) {
                row["object"] = o;
            }
            row
        })
        .collect();
    let mut table = json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": rv},
        "rows": rows,
    });
    if headers {
        table["columnDefinitions"] = Value::Array(columns);
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_path_subset() {
        let obj = json!({"status": {"conditions": [{"type": "A", "status": "False"}, {"type": "Ready", "status": "True"}]}, "spec": {"list": [{"x": 1}]}});
        assert_eq!(
            json_path(&obj, ".status.conditions[?(@.type==\"Ready\")].status"),
            Some(&json!("True"))
        );
        assert_eq!(json_path(&obj, ".spec.list[0].x"), Some(&json!(1)));
        assert_eq!(json_path(&obj, ".spec.missing"), None);
    }
}
