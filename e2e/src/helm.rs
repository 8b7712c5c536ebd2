//! Helm's own library, for the tests that render the chart `charts/px`: the PyPI package
//! `helm-python-sdk` (Helm's Go library as a shared object) in a virtualenv that
//! `scripts/helm-venv.sh` makes once, driven by `e2e/helm/helm.py` with one JSON request
//! per call. No helm binary is needed. Also: the operator's identity as the chart makes
//! it, installed on a cluster, so the operator's tests run with exactly the chart's RBAC.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use serde_json::{Value, json};

use crate::error::Error;
use crate::harness::Cluster;

/// The repository's root.
fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The chart's directory.
pub fn chart_dir() -> PathBuf {
    repo().join("charts/px")
}

fn failed(message: String) -> Error {
    Error::Helm { message }
}

/// Helm, ready to run.
#[derive(Debug, Clone)]
pub struct Helm {
    python: PathBuf,
}

impl Helm {
    /// Makes (once per process; the virtualenv once per machine, under `dir`) Helm ready.
    /// Fails with the installer's words when the virtualenv cannot be made (no
    /// `python3-venv`, no package registry).
    pub fn get(dir: &Path) -> Result<Self, Error> {
        static PYTHON: OnceLock<Result<PathBuf, String>> = OnceLock::new();
        let made = PYTHON.get_or_init(|| {
            let out = Command::new(repo().join("scripts/helm-venv.sh"))
                .arg(dir.join("helm"))
                .output()
                .map_err(|e| format!("cannot run scripts/helm-venv.sh: {e}"))?;
            if out.status.success() {
                Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
            } else {
                Err(String::from_utf8_lossy(&out.stderr).into_owned())
            }
        });
        made.clone()
            .map(|python| Self { python })
            .map_err(|e| failed(format!("cannot install helm-python-sdk: {e}")))
    }

    /// The virtualenv's python (for other scripts that need its packages).
    pub fn python(&self) -> &Path {
        &self.python
    }

    /// Runs one request (see `e2e/helm/helm.py`) and returns its JSON answer.
    pub fn request(&self, request: &Value) -> Result<Value, Error> {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("helm/helm.py");
        let mut child = Command::new(&self.python)
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| failed(format!("running helm.py: {e}")))?;
        if let Some(mut stdin) = child.stdin.take() {
            use std::io::Write;
            stdin
                .write_all(request.to_string().as_bytes())
                .map_err(|e| failed(format!("writing to helm.py: {e}")))?;
        }
        let out = child
            .wait_with_output()
            .map_err(|e| failed(format!("running helm.py: {e}")))?;
        if !out.status.success() {
            return Err(failed(format!(
                "helm.py failed for {request}: {}",
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        serde_json::from_slice(&out.stdout).map_err(|e| failed(format!("helm.py's answer: {e}")))
    }

    /// `helm template RELEASE charts/px -n NAMESPACE -f FILES --set SET`: the answer's
    /// `objects`, `manifests`, `crds`, `notes` and `defaults`, or `error`.
    pub fn render(
        &self,
        release: &str,
        namespace: &str,
        files: &[PathBuf],
        set: &Value,
    ) -> Result<Value, Error> {
        self.request(&json!({
            "op": "render", "chart": chart_dir(), "values_files": files, "set": set,
            "name": release, "namespace": namespace,
        }))
    }
}

/// A render's templates as one YAML stream, as `helm template` prints them (for
/// `kubectl apply -f -`).
pub fn stream(rendered: &Value) -> String {
    rendered["manifests"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(_, m)| m.as_str())
        .map(|m| format!("---\n{m}\n"))
        .collect()
}

/// The operator's ServiceAccount, ClusterRoles, Roles and their bindings, rendered from
/// the chart (release `release` in `namespace`, values `set`) and applied with kubectl
/// as a user installing the chart would (the namespace is created first); returns a
/// kubeconfig that acts as that ServiceAccount. Nothing else of the chart is applied.
pub async fn install_operator_identity(
    cluster: &Cluster,
    helm: &Helm,
    release: &str,
    namespace: &str,
    set: &Value,
) -> Result<PathBuf, Error> {
    let out = helm.render(release, namespace, &[], set)?;
    if let Some(error) = out.get("error") {
        return Err(failed(format!("helm template: {error}")));
    }
    let kinds = [
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
    ];
    let items: Vec<Value> = out["objects"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|o| kinds.iter().any(|k| o["kind"] == *k))
        .cloned()
        .collect();
    let list = json!({"apiVersion": "v1", "kind": "List", "items": items});
    let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}});
    for body in [ns, list] {
        let applied = cluster
            .kubectl_stdin(&["apply", "-f", "-"], Some(&body.to_string()))
            .await?;
        if !applied.success() {
            return Err(failed(format!(
                "kubectl apply of the chart's RBAC: {}",
                applied.stderr
            )));
        }
    }
    let account = items
        .iter()
        .find(|o| o["kind"] == "ServiceAccount")
        .and_then(|o| o["metadata"]["name"].as_str())
        .ok_or_else(|| failed("the chart renders no ServiceAccount".into()))?;
    cluster.service_account_kubeconfig(namespace, account).await
}
