//! Manifests and helpers shared by the tests.

use std::time::Duration;

use px_e2e::{Cluster, KubectlOutput};

/// `kubectl apply -f -` with `yaml`.
pub(crate) async fn apply(cluster: &Cluster, yaml: &str) -> KubectlOutput {
    cluster
        .kubectl_stdin(&["apply", "-f", "-"], Some(yaml))
        .await
        .unwrap()
}

/// kubectl that must succeed; returns stdout.
pub(crate) async fn ok(cluster: &Cluster, args: &[&str]) -> String {
    let out = cluster.kubectl(args).await.unwrap();
    assert!(out.success(), "kubectl {args:?} failed: {out:?}");
    out.stdout
}

/// The whitespace-separated words of each line of a kubectl table.
pub(crate) fn table(stdout: &str) -> Vec<Vec<String>> {
    stdout
        .lines()
        .map(|l| l.split_whitespace().map(String::from).collect())
        .collect()
}

/// The project's CRD manifests (`crds/*.yaml`).
pub(crate) fn project_crd_files() -> Vec<std::path::PathBuf> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../crds");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

/// Generous limit for what the controllers, the scheduler and the kubelets do in the
/// background.
pub(crate) const SETTLE: Duration = Duration::from_secs(30);
