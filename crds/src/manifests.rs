//! The CRD manifests: one YAML file per kind, generated from the types.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

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

/// The header of every generated file.
const HEADER: &str = "# Generated from the Rust types in crds/src by `cargo run -p px-crds --bin crdgen`.\n# Do not edit: change the types and run it again.\n";

/// The CRD manifests of the three kinds, in file-name order.
///
/// # Errors
/// When a CRD cannot be serialized (not expected: the types are plain data).
pub fn manifests() -> Result<Vec<Manifest>, serde_saphyr::SerializeError> {
    let mut out = Vec::new();
    for crd in [DataRetention::crd(), Tracepoint::crd(), Vizier::crd()] {
        let name = crd.metadata.name.clone().unwrap_or_default();
        let yaml = format!("{HEADER}{}", serde_saphyr::to_string(&crd)?);
        out.push(Manifest {
            file_name: format!("{name}.yaml"),
            crd,
            yaml,
        });
    }
    Ok(out)
}
