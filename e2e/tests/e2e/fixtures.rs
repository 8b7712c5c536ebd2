//! Manifests and helpers shared by the tests.

use std::time::Duration;

use px_e2e::{Cluster, ClusterConfig, KubectlOutput};

/// A CRD shaped like the project's Tracepoint: printer columns, a status subresource,
/// a pattern, an enum, a minimum, a default and a CEL rule.
pub(crate) const TRACEPOINT_CRD: &str = include_str!("tracepoint-crd.yaml");

/// A valid Tracepoint named `name` with `replicas`.
pub(crate) fn tracepoint(name: &str, replicas: i64) -> String {
    format!(
        "apiVersion: px.dev/v1alpha1\nkind: Tracepoint\nmetadata:\n  name: {name}\nspec:\n  probe: http_events\n  mode: http\n  replicas: {replicas}\n"
    )
}

/// A cluster with the Tracepoint CRD applied.
pub(crate) async fn cluster_with_crd() -> Cluster {
    let cluster = Cluster::start(ClusterConfig::default()).await.unwrap();
    let out = apply(&cluster, TRACEPOINT_CRD).await;
    assert_eq!(
        out.stdout, "customresourcedefinition.apiextensions.k8s.io/tracepoints.px.dev created\n",
        "{out:?}"
    );
    cluster
}

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

/// The project's CRD manifests (`crds/*.yaml`), once the control-plane issue adds them.
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

/// Generous limit for things the emulator's controllers do in the background.
pub(crate) const SETTLE: Duration = Duration::from_secs(10);
