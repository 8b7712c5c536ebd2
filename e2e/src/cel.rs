//! `x-kubernetes-validations`: CEL rules of a CRD schema, evaluated with the `cel` crate.
//! Transition rules (those that use `oldSelf`) are not evaluated: the emulator does not
//! keep the old object at this point, and the project's CRDs do not use them.

use serde_json::{Value, json};

use crate::status::Cause;

/// Evaluates every rule in `schema` against `body` (the object without metadata, which
/// is put back, name and generateName only, for rules on the root).
pub(crate) fn validate(schema: &Value, body: &Value, metadata: Option<&Value>) -> Vec<Cause> {
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
    walk(schema, &root, "", &mut errs);
    errs
}

fn walk(schema: &Value, value: &Value, path: &str, errs: &mut Vec<Cause>) {
    if let Some(rules) = schema
        .get("x-kubernetes-validations")
        .and_then(Value::as_array)
    {
        for rule in rules {
            check_rule(schema, rule, value, path, errs);
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
                    walk(sub, child, &join(k), errs);
                }
            }
        }
        Value::Array(items) => {
            if let Some(sub) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    walk(sub, item, &format!("{path}[{i}]"), errs);
                }
            }
        }
        _ => {}
    }
}

fn check_rule(schema: &Value, rule: &Value, value: &Value, path: &str, errs: &mut Vec<Cause>) {
    let Some(expr) = rule.get("rule").and_then(Value::as_str) else {
        return;
    };
    if expr.contains("oldSelf") {
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
    let outcome = evaluate(expr, value);
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
fn evaluate(expr: &str, value: &Value) -> Result<bool, String> {
    let program = cel::Program::compile(expr).map_err(|e| format!("compilation failed: {e}"))?;
    let mut ctx = cel::Context::default();
    ctx.add_variable("self", value).map_err(|e| e.to_string())?;
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
        );
        assert!(ok.is_empty());
        let bad = validate(
            &schema,
            &json!({"spec": {"min": 3, "max": 2, "name": "a"}}),
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
}
