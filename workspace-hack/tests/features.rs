//! Building px and building the tests must resolve every shared dependency's features
//! alike, or each compiles the query engine again (see this crate's Cargo.toml).

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

/// `name version` -> enabled features, for every package `cargo tree` lists.
fn resolved(edges: &str) -> BTreeMap<String, BTreeSet<String>> {
    let out = Command::new(env!("CARGO"))
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .args([
            "tree",
            "--workspace",
            "--locked",
            "--offline",
            "--prefix",
            "none",
        ])
        .args(["-e", edges, "-f", "{p} {f}"])
        .output()
        .expect("cargo runs");
    assert!(
        out.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut packages = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let line = line.trim_end_matches(" (*)");
        let mut words = line.split_whitespace();
        let (Some(name), Some(version)) = (words.next(), words.next()) else {
            continue;
        };
        // What follows the version: "(path)", "(proc-macro)" and the feature list.
        let features: BTreeSet<String> = words
            .filter(|w| !w.starts_with('('))
            .flat_map(|w| w.split(','))
            .map(str::to_owned)
            .collect();
        packages
            .entry(format!("{name} {version}"))
            .or_insert_with(BTreeSet::new)
            .extend(features);
    }
    packages
}

#[test]
fn the_tests_add_no_feature_to_a_dependency_px_shares() {
    let build = resolved("normal,build");
    let test = resolved("normal,build,dev");
    assert!(
        build.len() > 100,
        "cargo tree listed {} packages",
        build.len()
    );
    let gaps: Vec<String> = build
        .iter()
        .filter_map(|(package, features)| {
            let with_tests = test.get(package)?;
            let added: Vec<&String> = with_tests.difference(features).collect();
            (!added.is_empty()).then(|| format!("{package}: {added:?}"))
        })
        .collect();
    assert!(
        gaps.is_empty(),
        "the dev-dependencies turn on features the normal build does not, so the tests \
         would compile these (and everything above them) a second time: {gaps:?}. Enable \
         the same features in workspace-hack/Cargo.toml."
    );
}
