//! The CRD manifests: one YAML file per kind, generated from the types.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;
use serde_json::Value;

use crate::{DataRetention, Tracepoint, Vizier};

/// One generated CRD manifest.
#[derive(Clone, Debug)]
pub struct Manifest {
    /// File name under `crds/`, the CRD's name plus `.yaml` (`viziers.px.dev.yaml`).
    pub file_name: String,
    /// The CRD object.
    pub crd: CustomResourceDefinition,
    /// Its YAML text, as committed.
    pub yaml: String,
}

/// Errors building the manifests (not expected: the types are plain data).
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The CRD did not convert to or from JSON.
    #[error("converting the {crd} CRD through JSON")]
    Json {
        /// The CRD's name.
        crd: String,
        /// What failed.
        #[source]
        source: serde_json::Error,
    },
    /// The CRD did not serialize as YAML.
    #[error("writing the {crd} CRD as YAML")]
    Yaml {
        /// The CRD's name.
        crd: String,
        /// What failed.
        #[source]
        source: serde_saphyr::SerializeError,
    },
}

/// The header of every generated file.
const HEADER: &str = "# Generated from the Rust types in crds/src by `cargo run -p px-crds --bin crdgen`.\n# Do not edit: change the types and run it again.\n";

/// The CRD manifests of the three kinds, in file-name order.
///
/// # Errors
/// When a CRD cannot be converted or serialized (not expected: the types are plain data).
pub fn manifests() -> Result<Vec<Manifest>, ManifestError> {
    let mut out = Vec::new();
    for crd in [DataRetention::crd(), Tracepoint::crd(), Vizier::crd()] {
        let name = crd.metadata.name.clone().unwrap_or_default();
        let json_err = |source| ManifestError::Json {
            crd: name.clone(),
            source,
        };
        let mut value = serde_json::to_value(&crd).map_err(json_err)?;
        replace_unsigned_formats(&mut value);
        let crd: CustomResourceDefinition = serde_json::from_value(value).map_err(json_err)?;
        let body = serde_saphyr::to_string(&crd).map_err(|source| ManifestError::Yaml {
            crd: name.clone(),
            source,
        })?;
        out.push(Manifest {
            file_name: format!("{name}.yaml"),
            crd,
            yaml: format!("{HEADER}{body}"),
        });
    }
    Ok(out)
}

/// schemars writes `format: uint8` (`uint16`, `uint32`, `uint64`) for unsigned integers;
/// the API server does not know these formats (1.34 and later warn about each one on
/// every apply). Drop them and keep what they meant as `minimum` / `maximum` bounds.
fn replace_unsigned_formats(value: &mut Value) {
    match value {
        Value::Object(map) => {
            let max = match map.get("format").and_then(Value::as_str) {
                Some("uint8") => Some(u64::from(u8::MAX)),
                Some("uint16") => Some(u64::from(u16::MAX)),
                Some("uint32") => Some(u64::from(u32::MAX)),
                Some("uint64") => Some(i64::MAX.unsigned_abs()),
                _ => None,
            };
            if let Some(max) = max {
                map.remove("format");
                map.entry("minimum").or_insert(Value::from(0));
                map.entry("maximum").or_insert(Value::from(max));
            }
            map.values_mut().for_each(replace_unsigned_formats);
        }
        Value::Array(items) => items.iter_mut().for_each(replace_unsigned_formats),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn unsigned_formats_become_bounds() {
        let mut schema = serde_json::json!({
            "properties": {
                "a": {"type": "integer", "format": "uint32", "minimum": 0.0},
                "b": {"type": "integer", "format": "uint8", "minimum": 0.0, "maximum": 8.0},
                "c": {"type": "integer", "format": "int64"},
            }
        });
        replace_unsigned_formats(&mut schema);
        assert_eq!(
            schema["properties"]["a"],
            serde_json::json!({"type": "integer", "minimum": 0.0, "maximum": 4294967295u64})
        );
        assert_eq!(
            schema["properties"]["b"],
            serde_json::json!({"type": "integer", "minimum": 0.0, "maximum": 8.0})
        );
        assert_eq!(schema["properties"]["c"]["format"], "int64");
    }

    #[test]
    fn generated_crds_use_only_formats_the_api_server_knows() {
        fn formats(v: &Value, out: &mut Vec<String>) {
            match v {
                Value::Object(m) => {
                    if let Some(f) = m.get("format").and_then(Value::as_str) {
                        out.push(f.to_string());
                    }
                    m.values().for_each(|c| formats(c, out));
                }
                Value::Array(a) => a.iter().for_each(|c| formats(c, out)),
                _ => {}
            }
        }
        for m in manifests().unwrap() {
            let mut found = Vec::new();
            formats(&serde_json::to_value(&m.crd).unwrap(), &mut found);
            for f in found {
                assert!(
                    ["int32", "int64", "date-time"].contains(&f.as_str()),
                    "{}: format {f}",
                    m.file_name
                );
            }
        }
    }
}
