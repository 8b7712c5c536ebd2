//! The committed `crds/*.yaml` are exactly what the types generate.

use std::path::Path;

const REGENERATE: &str = "run `cargo run -p px-crds --bin crdgen`";

#[test]
fn committed_manifests_match_the_types() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let manifests = px_crds::manifests().unwrap();
    for m in &manifests {
        let path = dir.join(&m.file_name);
        let committed = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("crds/{} cannot be read ({e}): {REGENERATE}", m.file_name));
        if committed != m.yaml {
            let line = committed
                .lines()
                .zip(m.yaml.lines())
                .position(|(a, b)| a != b)
                .map_or_else(
                    || committed.lines().count().min(m.yaml.lines().count()) + 1,
                    |i| i + 1,
                );
            panic!(
                "crds/{} is out of date with the types (first difference at line {line}): {REGENERATE}",
                m.file_name
            );
        }
    }
    // No manifest of a kind that no longer exists is left behind.
    let mut on_disk: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml"))
        .collect();
    on_disk.sort();
    let generated: Vec<&str> = manifests.iter().map(|m| m.file_name.as_str()).collect();
    assert_eq!(
        on_disk, generated,
        "crds/ holds YAML files the types do not generate: remove them, then {REGENERATE}"
    );
}

#[test]
fn one_file_per_kind_named_after_the_crd() {
    let names: Vec<String> = px_crds::manifests()
        .unwrap()
        .into_iter()
        .map(|m| m.file_name)
        .collect();
    assert_eq!(
        names,
        [
            "dataretentions.px.dev.yaml",
            "tracepoints.px.dev.yaml",
            "viziers.px.dev.yaml"
        ]
    );
}
