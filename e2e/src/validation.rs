//! Structural-schema handling for custom resources: defaulting, pruning and validation,
//! with the field errors worded as the API server words them.

use regex::Regex;
use serde_json::{Map, Value};

use crate::status::Cause;

/// Go's `%q`/`%v` rendering of a bad value inside `Invalid value: ...`.
pub(crate) fn go_value(v: &Value) -> String {
    match v {
        Value::String(s) => Value::String(s.clone()).to_string(),
        Value::Null => "\"null\"".into(),
        Value::Number(n) => go_number(n),
        Value::Bool(b) => b.to_string(),
        other => other.to_string(),
    }
}

fn go_number(n: &serde_json::Number) -> String {
    match (n.as_i64(), n.as_f64()) {
        (Some(i), _) => i.to_string(),
        (None, Some(f)) if f.fract() == 0.0 && f.abs() < 1e15 => format!("{}", f as i64),
        (None, Some(f)) => f.to_string(),
        _ => n.to_string(),
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// The OpenAPI type name of a JSON value, as type errors report it.
pub(crate) fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if is_integer(n) => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn is_integer(n: &serde_json::Number) -> bool {
    n.is_i64() || n.is_u64() || n.as_f64().is_some_and(|f| f.fract() == 0.0)
}

fn flag(schema: &Value, key: &str) -> bool {
    schema.get(key).and_then(Value::as_bool).unwrap_or(false)
}

fn props(schema: &Value) -> Option<&Map<String, Value>> {
    schema.get("properties").and_then(Value::as_object)
}

/// Applies `default`s bottom-up as the API server does on create, update and read.
/// Nulls of non-nullable fields without a default are dropped, as the server does.
pub(crate) fn apply_defaults(schema: &Value, value: &mut Value) {
    match value {
        Value::Object(map) => {
            if let Some(props) = props(schema) {
                for (key, sub) in props {
                    let is_null = map.get(key).is_some_and(Value::is_null);
                    if is_null && !flag(sub, "nullable") {
                        map.remove(key);
                    }
                    if !map.contains_key(key)
                        && let Some(d) = sub.get("default")
                    {
                        map.insert(key.clone(), d.clone());
                    }
                    if let Some(child) = map.get_mut(key) {
                        apply_defaults(sub, child);
                    }
                }
            }
            if let Some(extra) = schema.get("additionalProperties").filter(|a| a.is_object()) {
                for child in map.values_mut() {
                    apply_defaults(extra, child);
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for item in items {
                    apply_defaults(item_schema, item);
                }
            }
        }
        _ => {}
    }
}

/// Removes fields the schema does not declare; returns their paths (`spec.foo`).
pub(crate) fn prune(schema: &Value, value: &mut Value, path: &str, unknown: &mut Vec<String>) {
    if flag(schema, "x-kubernetes-preserve-unknown-fields") && props(schema).is_none() {
        return;
    }
    match value {
        Value::Object(map) => {
            let declared = props(schema);
            let extra = schema.get("additionalProperties");
            let embedded = flag(schema, "x-kubernetes-embedded-resource");
            let keys: Vec<String> = map.keys().cloned().collect();
            for key in keys {
                let child_path = join(path, &key);
                if let Some(sub) = declared.and_then(|d| d.get(&key)) {
                    if let Some(child) = map.get_mut(&key) {
                        prune(sub, child, &child_path, unknown);
                    }
                } else if let Some(sub) = extra.filter(|e| e.is_object()) {
                    if let Some(child) = map.get_mut(&key) {
                        prune(sub, child, &child_path, unknown);
                    }
                } else if extra == Some(&Value::Bool(true))
                    || flag(schema, "x-kubernetes-preserve-unknown-fields")
                    || (embedded && matches!(key.as_str(), "apiVersion" | "kind" | "metadata"))
                {
                } else {
                    map.remove(&key);
                    unknown.push(child_path);
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter_mut().enumerate() {
                    prune(item_schema, item, &format!("{path}[{i}]"), unknown);
                }
            }
        }
        _ => {}
    }
}

fn invalid(path: &str, bad: &Value, detail: String) -> Cause {
    Cause {
        reason: "FieldValueInvalid".into(),
        message: format!("Invalid value: {}: {detail}", go_value(bad)),
        field: path.into(),
    }
}

fn num(schema: &Value, key: &str) -> Option<f64> {
    schema.get(key).and_then(Value::as_f64)
}

fn fmt_limit(f: f64) -> String {
    if f.fract() == 0.0 && f.abs() < 1e15 {
        format!("{}", f as i64)
    } else {
        f.to_string()
    }
}

/// Validates `value` at `path` against a structural schema; appends one cause per error.
pub(crate) fn validate(schema: &Value, value: &Value, path: &str, errs: &mut Vec<Cause>) {
    if value.is_null() {
        if flag(schema, "nullable") {
            return;
        }
        if schema.get("type").is_some() {
            let want = schema["type"].as_str().unwrap_or("object");
            errs.push(invalid(
                path,
                &Value::String("null".into()),
                format!("{path} in body must be of type {want}: \"null\""),
            ));
        }
        return;
    }
    let int_or_string = flag(schema, "x-kubernetes-int-or-string");
    if let Some(want) = schema.get("type").and_then(Value::as_str) {
        let have = type_name(value);
        let ok = have == want || (want == "number" && have == "integer");
        if !ok && !int_or_string {
            errs.push(invalid(
                path,
                &Value::String(have.into()),
                format!("{path} in body must be of type {want}: \"{have}\""),
            ));
            return;
        }
    }
    if int_or_string
        && !matches!(value, Value::String(_))
        && !matches!(value, Value::Number(n) if is_integer(n))
    {
        let have = type_name(value);
        errs.push(invalid(
            path,
            &Value::String(have.into()),
            format!("{path} in body must be of type integer,string: \"{have}\""),
        ));
        return;
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(value)
    {
        let values: Vec<String> = allowed
            .iter()
            .map(|a| match a {
                Value::String(s) => Value::String(s.clone()).to_string(),
                other => format!("\"{}\"", go_value(other).trim_matches('"')),
            })
            .collect();
        errs.push(Cause {
            reason: "FieldValueNotSupported".into(),
            message: format!(
                "Unsupported value: {}: supported values: {}",
                go_value(value),
                values.join(", ")
            ),
            field: path.into(),
        });
    }
    match value {
        Value::String(s) => {
            let len = s.chars().count() as f64;
            if let Some(max) = num(schema, "maxLength")
                && len > max
            {
                errs.push(Cause {
                    reason: "FieldValueTooLong".into(),
                    message: format!("Too long: may not be more than {} bytes", fmt_limit(max)),
                    field: path.into(),
                });
            }
            if let Some(min) = num(schema, "minLength")
                && len < min
            {
                errs.push(invalid(
                    path,
                    value,
                    format!(
                        "{path} in body should be at least {} chars long",
                        fmt_limit(min)
                    ),
                ));
            }
            if let Some(pattern) = schema.get("pattern").and_then(Value::as_str) {
                match Regex::new(pattern) {
                    Ok(re) if !re.is_match(s) => {
                        errs.push(invalid(
                            path,
                            value,
                            format!("{path} in body should match '{pattern}'"),
                        ));
                    }
                    Ok(_) => {}
                    Err(_) => errs.push(invalid(
                        path,
                        value,
                        format!("{path} has an invalid pattern '{pattern}'"),
                    )),
                }
            }
        }
        Value::Number(n) => {
            let f = n.as_f64().unwrap_or(0.0);
            if let Some(min) = num(schema, "minimum") {
                let exclusive = flag(schema, "exclusiveMinimum");
                if f < min || (exclusive && f == min) {
                    let rel = if exclusive {
                        "greater than"
                    } else {
                        "greater than or equal to"
                    };
                    errs.push(invalid(
                        path,
                        value,
                        format!("{path} in body should be {rel} {}", fmt_limit(min)),
                    ));
                }
            }
            if let Some(max) = num(schema, "maximum") {
                let exclusive = flag(schema, "exclusiveMaximum");
                if f > max || (exclusive && f == max) {
                    let rel = if exclusive {
                        "less than"
                    } else {
                        "less than or equal to"
                    };
                    errs.push(invalid(
                        path,
                        value,
                        format!("{path} in body should be {rel} {}", fmt_limit(max)),
                    ));
                }
            }
            if let Some(m) = num(schema, "multipleOf")
                && m != 0.0
                && (f / m).fract() != 0.0
            {
                errs.push(invalid(
                    path,
                    value,
                    format!("{path} in body should be a multiple of {}", fmt_limit(m)),
                ));
            }
        }
        Value::Array(items) => {
            let len = items.len() as f64;
            if let Some(max) = num(schema, "maxItems")
                && len > max
            {
                errs.push(Cause {
                    reason: "FieldValueTooMany".into(),
                    message: format!(
                        "Too many: {}: must have at most {} items",
                        items.len(),
                        fmt_limit(max)
                    ),
                    field: path.into(),
                });
            }
            if let Some(min) = num(schema, "minItems")
                && len < min
            {
                errs.push(invalid(
                    path,
                    value,
                    format!(
                        "{path} in body should have at least {} items",
                        fmt_limit(min)
                    ),
                ));
            }
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    validate(item_schema, item, &format!("{path}[{i}]"), errs);
                }
            }
        }
        Value::Object(map) => {
            if let Some(required) = schema.get("required").and_then(Value::as_array) {
                for key in required.iter().filter_map(Value::as_str) {
                    if !map.contains_key(key) {
                        errs.push(Cause {
                            reason: "FieldValueRequired".into(),
                            message: "Required value".into(),
                            field: join(path, key),
                        });
                    }
                }
            }
            if let Some(min) = num(schema, "minProperties")
                && (map.len() as f64) < min
            {
                errs.push(invalid(
                    path,
                    value,
                    format!(
                        "{path} in body should have at least {} properties",
                        fmt_limit(min)
                    ),
                ));
            }
            let declared = props(schema);
            let extra = schema.get("additionalProperties").filter(|a| a.is_object());
            for (key, child) in map {
                if let Some(sub) = declared.and_then(|d| d.get(key)).or(extra) {
                    validate(sub, child, &join(path, key), errs);
                }
            }
        }
        _ => {}
    }
    if let Some(all) = schema.get("allOf").and_then(Value::as_array) {
        for sub in all {
            validate(sub, value, path, errs);
        }
    }
    // Value-validation combinators, worded as go-openapi words them.
    let passes = |sub: &Value| {
        let mut branch = Vec::new();
        validate(sub, value, path, &mut branch);
        branch.is_empty()
    };
    let bad = Value::String(type_name(value).into());
    if let Some(one) = schema.get("oneOf").and_then(Value::as_array)
        && one.iter().filter(|s| passes(s)).count() != 1
    {
        errs.push(invalid(
            path,
            &bad,
            format!("{path} in body must validate one and only one schema (oneOf)"),
        ));
    }
    if let Some(any) = schema.get("anyOf").and_then(Value::as_array)
        && !any.iter().any(&passes)
    {
        errs.push(invalid(
            path,
            &bad,
            format!("{path} in body must validate at least one schema (anyOf)"),
        ));
    }
    if let Some(not) = schema.get("not")
        && passes(not)
    {
        errs.push(invalid(
            path,
            &bad,
            format!("{path} in body shouldn't validate the schema (not)"),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": {"type": "string", "pattern": "^[a-z]+$"},
                "replicas": {"type": "integer", "minimum": 1, "maximum": 5, "default": 1},
                "mode": {"type": "string", "enum": ["a", "b"]},
                "tags": {"type": "array", "items": {"type": "string"}},
                "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}
            }
        })
    }

    fn messages(v: Value) -> Vec<String> {
        let mut errs = Vec::new();
        validate(&schema(), &v, "spec", &mut errs);
        errs.into_iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect()
    }

    #[test]
    fn errors_read_like_the_api_server() {
        assert_eq!(messages(json!({})), vec!["spec.name: Required value"]);
        assert_eq!(
            messages(json!({"name": "A1", "replicas": "x", "mode": "c", "tags": [3]})),
            vec![
                "spec.mode: Unsupported value: \"c\": supported values: \"a\", \"b\"",
                "spec.name: Invalid value: \"A1\": spec.name in body should match '^[a-z]+$'",
                "spec.replicas: Invalid value: \"string\": spec.replicas in body must be of type integer: \"string\"",
                "spec.tags[0]: Invalid value: \"integer\": spec.tags[0] in body must be of type string: \"integer\"",
            ]
        );
        assert_eq!(
            messages(json!({"name": "a", "replicas": 9})),
            vec![
                "spec.replicas: Invalid value: 9: spec.replicas in body should be less than or equal to 5"
            ]
        );
    }

    #[test]
    fn one_of_any_of_and_not() {
        let schema = json!({
            "type": "object",
            "properties": {"labels": {"type": "object"}, "nodes": {"type": "array"}},
            "oneOf": [{"required": ["labels"]}, {"required": ["nodes"]}],
            "not": {"required": ["forbidden"]}
        });
        let check = |v: Value| {
            let mut errs = Vec::new();
            validate(&schema, &v, "spec.selector", &mut errs);
            errs.into_iter()
                .map(|c| format!("{}: {}", c.field, c.message))
                .collect::<Vec<_>>()
        };
        assert!(check(json!({"labels": {}})).is_empty());
        assert_eq!(
            check(json!({"labels": {}, "nodes": []})),
            [
                "spec.selector: Invalid value: \"object\": spec.selector in body must validate one and only one schema (oneOf)"
            ]
        );
        assert_eq!(
            check(json!({"nodes": [], "forbidden": 1})),
            [
                "spec.selector: Invalid value: \"object\": spec.selector in body shouldn't validate the schema (not)"
            ]
        );
    }

    #[test]
    fn defaults_and_pruning() {
        let mut v = json!({"name": "a", "mode": null, "extra": 1, "free": {"x": {"y": 1}}});
        apply_defaults(&schema(), &mut v);
        let mut unknown = Vec::new();
        prune(&schema(), &mut v, "spec", &mut unknown);
        assert_eq!(
            v,
            json!({"name": "a", "replicas": 1, "free": {"x": {"y": 1}}})
        );
        assert_eq!(unknown, vec!["spec.extra"]);
    }
}
