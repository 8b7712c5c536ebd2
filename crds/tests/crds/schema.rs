//! What every generated CRD must declare, read from the CRD objects.

use px_crds::{MAX_FAILURES, manifests};
use serde_json::Value;

fn crd_json(name: &str) -> Value {
    let m = manifests()
        .unwrap()
        .into_iter()
        .find(|m| m.crd.metadata.name.as_deref() == Some(name))
        .unwrap();
    serde_json::to_value(&m.crd).unwrap()
}

fn version(crd: &Value) -> &Value {
    &crd["spec"]["versions"][0]
}

#[test]
fn every_kind_is_namespaced_with_status_short_names_and_the_px_category() {
    for (name, short) in [
        ("viziers.px.dev", "vz"),
        ("tracepoints.px.dev", "tp"),
        ("dataretentions.px.dev", "pxdr"),
    ] {
        let crd = crd_json(name);
        assert_eq!(crd["spec"]["group"], "px.dev");
        assert_eq!(crd["spec"]["scope"], "Namespaced", "{name}");
        assert_eq!(
            crd["spec"]["names"]["shortNames"],
            serde_json::json!([short])
        );
        assert_eq!(
            crd["spec"]["names"]["categories"],
            serde_json::json!(["px"])
        );
        let v = version(&crd);
        assert_eq!(v["name"], "v1alpha1");
        assert_eq!(v["served"], true);
        assert_eq!(v["storage"], true);
        assert_eq!(v["subresources"]["status"], serde_json::json!({}), "{name}");
        let status = &v["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"];
        assert_eq!(status["observedGeneration"]["type"], "integer", "{name}");
        let conditions = &status["conditions"];
        assert_eq!(conditions["x-kubernetes-list-type"], "map", "{name}");
        assert_eq!(
            conditions["items"]["required"],
            serde_json::json!(["lastTransitionTime", "message", "reason", "status", "type"]),
            "{name}: metav1.Condition shape"
        );
    }
}

#[test]
fn printer_columns_are_the_ones_users_see() {
    let columns = |name: &str| -> Vec<(String, String)> {
        version(&crd_json(name))["additionalPrinterColumns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                (
                    c["name"].as_str().unwrap().to_string(),
                    c["jsonPath"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    let pair = |n: &str, p: &str| (n.to_string(), p.to_string());
    assert_eq!(
        columns("viziers.px.dev"),
        [
            pair("Phase", ".status.vizierPhase"),
            pair("PEMs", ".status.pemsReady"),
            pair("Version", ".status.version"),
            pair("Age", ".metadata.creationTimestamp"),
        ]
    );
    assert_eq!(
        columns("tracepoints.px.dev"),
        [
            pair("Table", ".spec.table"),
            pair("Ready", ".status.ready"),
            pair("Phase", ".status.phase"),
            pair("Age", ".metadata.creationTimestamp"),
        ]
    );
}

#[test]
fn the_failure_list_is_bounded_by_max_failures() {
    let crd = crd_json("tracepoints.px.dev");
    let failures = &version(&crd)["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
        ["failures"];
    assert_eq!(failures["maxItems"], MAX_FAILURES);
}

/// The API server estimates the cost of every CEL rule and refuses a CRD whose rules
/// iterate over lists without `maxItems` or compare strings without `maxLength`.
#[test]
fn lists_and_strings_under_cel_rules_are_bounded() {
    fn walk(schema: &Value, path: &str, unbounded: &mut Vec<String>) {
        if schema["type"] == "array" && schema.get("maxItems").is_none() {
            unbounded.push(path.to_string());
        }
        if let Some(props) = schema["properties"].as_object() {
            for (k, v) in props {
                walk(v, &format!("{path}.{k}"), unbounded);
            }
        }
        if schema.get("items").is_some() {
            walk(&schema["items"], &format!("{path}[]"), unbounded);
        }
    }
    for (name, list) in [
        ("tracepoints.px.dev", "columns"),
        ("dataretentions.px.dev", "tables"),
    ] {
        let crd = crd_json(name);
        let spec = &version(&crd)["schema"]["openAPIV3Schema"]["properties"]["spec"];
        let mut unbounded = Vec::new();
        walk(&spec["properties"][list], list, &mut unbounded);
        assert!(unbounded.is_empty(), "{name}: {unbounded:?}");
        let items = &spec["properties"][list]["items"]["properties"];
        let key = if list == "columns" { "name" } else { "table" };
        assert!(items[key]["maxLength"].as_u64().unwrap() <= 63);
    }
}
