//! `x-kubernetes-validations`: CEL rules of a CRD schema, evaluated with the `cel` crate.
//! Transition rules (those that use `oldSelf`) run on updates only, where the old value
//! at the same path exists; inside lists they are not evaluated (the server correlates
//! list items by key, which this does not).

use serde_json::{Value, json};

use crate::status::Cause;

/// Evaluates every rule in `schema` against `body` (the object without metadata, which
/// is put back, name and generateName only, for rules on the root).
pub(crate) fn validate(
    schema: &Value,
    body: &Value,
    old: Option<&Value>,
    metadata: Option<&Value>,
) -> Vec<Cause> {
    let mut errs = Vec::new();
    let mut root = body.clone();
    if let (Some(meta), Some(map)) = (metadata, root.as_object_mut()) {
        let mut visible = json!({});
        for key in ["name", "generateName"] {
            if let Some(v) = meta.get(key) {
                visible[key] = v.clone();
            }
        }
        map.insert("metadata".into(), visible);
    }
    let old_root = old.map(|o| {
        let mut o = o.clone();
        if let Some(m) = o.as_object_mut() {
            m.remove("apiVersion");
            m.remove("kind");
            m.insert(
                "metadata".into(),
                root.get("metadata").cloned().unwrap_or(Value::Null),
            );
        }
        o
    });
    walk(schema, &root, old_root.as_ref(), "", &mut errs);
    errs
}

fn walk(schema: &Value, value: &Value, old: Option<&Value>, path: &str, errs: &mut Vec<Cause>) {
    if let Some(rules) = schema
        .get("x-kubernetes-validations")
        .and_then(Value::as_array)
    {
        for rule in rules {
            check_rule(schema, rule, value, old, path, errs);
        }
    }
    let join = |k: &str| {
        if path.is_empty() {
            k.to_string()
        } else {
            format!("{path}.{k}")
        }
    };
    match value {
        Value::Object(map) => {
            let props = schema.get("properties").and_then(Value::as_object);
            let extra = schema.get("additionalProperties").filter(|a| a.is_object());
            for (k, child) in map {
                if let Some(sub) = props.and_then(|p| p.get(k)).or(extra) {
                    walk(sub, child, old.and_then(|o| o.get(k)), &join(k), errs);
                }
            }
        }
        Value::Array(items) => {
            if let Some(sub) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    walk(sub, item, None, &format!("{path}[{i}]"), errs);
                }
            }
        }
        _ => {}
    }
}

fn check_rule(
    schema: &Value,
    rule: &Value,
    value: &Value,
    old: Option<&Value>,
    path: &str,
    errs: &mut Vec<Cause>,
) {
    let Some(expr) = rule.get("rule").and_then(Value::as_str) else {
        return;
    };
    let transition = expr.contains("oldSelf");
    if transition && old.is_none() {
        return;
    }
    let type_name = schema
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("object");
    let field = match rule.get("fieldPath").and_then(Value::as_str) {
        Some(fp) => format!("{path}{fp}"),
        None => path.to_string(),
    };
    let message = rule
        .get("message")
        .and_then(Value::as_str)
        .map(String::from)
        .unwrap_or_else(|| format!("failed rule: {expr}"));
    let outcome = evaluate(expr, value, old.filter(|_| transition));
    let failed = match outcome {
        Ok(true) => return,
        Ok(false) => message,
        Err(e) => format!("{message}: {e}"),
    };
    let (reason, text) = match rule.get("reason").and_then(Value::as_str) {
        Some("FieldValueForbidden") => ("FieldValueForbidden", format!("Forbidden: {failed}")),
        Some("FieldValueRequired") => ("FieldValueRequired", format!("Required value: {failed}")),
        Some("FieldValueDuplicate") => (
            "FieldValueDuplicate",
            format!("Duplicate value: {type_name:?}"),
        ),
        _ => (
            "FieldValueInvalid",
            format!("Invalid value: {type_name:?}: {failed}"),
        ),
    };
    errs.push(Cause {
        reason: reason.into(),
        message: text,
        field,
    });
}

/// Runs one rule with `self` bound to `value`; `Err` carries a compile or runtime error.
fn evaluate(expr: &str, value: &Value, old: Option<&Value>) -> Result<bool, String> {
    // The rule text comes from whoever wrote the CRD: a panic inside the CEL crate on
    // some odd input must become an error, not take the request down.
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        evaluate_inner(expr, value, old)
    }))
    .unwrap_or_else(|_| Err("the CEL evaluator failed on this rule".to_string()))
}

fn evaluate_inner(expr: &str, value: &Value, old: Option<&Value>) -> Result<bool, String> {
    let program = cel::Program::compile(expr).map_err(|e| format!("compilation failed: {e}"))?;
    let mut ctx = cel::Context::default();
    ctx.add_variable("self", value).map_err(|e| e.to_string())?;
    if let Some(old) = old {
        ctx.add_variable("oldSelf", old)
            .map_err(|e| e.to_string())?;
    }
    match program.execute(&ctx) {
        Ok(cel::Value::Bool(b)) => Ok(b),
        Ok(other) => Err(format!("rule did not evaluate to a bool: {other:?}")),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_pass_and_fail_with_their_messages() {
        let schema = json!({"type": "object", "properties": {"spec": {
            "type": "object",
            "x-kubernetes-validations": [
                {"rule": "self.min <= self.max", "message": "min must not exceed max"},
                {"rule": "self.name.startsWith('px-')"}
            ],
            "properties": {"min": {"type": "integer"}, "max": {"type": "integer"}, "name": {"type": "string"}}
        }}});
        let ok = validate(
            &schema,
            &json!({"spec": {"min": 1, "max": 2, "name": "px-a"}}),
            None,
            None,
        );
        assert!(ok.is_empty());
        let bad = validate(
            &schema,
            &json!({"spec": {"min": 3, "max": 2, "name": "a"}}),
            None,
            None,
        );
        let rendered: Vec<String> = bad
            .iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect();
        assert_eq!(
            rendered,
            vec![
                "spec: Invalid value: \"object\": min must not exceed max",
                "spec: Invalid value: \"object\": failed rule: self.name.startsWith('px-')",
            ]
        );
    }

    #[test]
    fn transition_rules_run_on_updates_only() {
        let schema = json!({"type": "object", "properties": {"spec": {
            "type": "object",
            "properties": {"cluster": {
                "type": "string",
                "x-kubernetes-validations": [{"rule": "self == oldSelf", "message": "cluster is immutable"}]
            }}
        }}});
        let v1 = json!({"spec": {"cluster": "a"}});
        let v2 = json!({"spec": {"cluster": "b"}});
        assert!(validate(&schema, &v1, None, None).is_empty());
        assert!(validate(&schema, &v1, Some(&v1), None).is_empty());
        let errs: Vec<String> = validate(&schema, &v2, Some(&v1), None)
            .into_iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect();
        assert_eq!(
            errs,
            ["spec.cluster: Invalid value: \"string\": cluster is immutable"]
        );
    }
}
