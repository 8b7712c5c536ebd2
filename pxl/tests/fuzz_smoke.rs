//! What the `pxl_compiler` fuzz target tries first, on every build: the bundled scripts,
//! prefixes of them and copies with a byte dropped, and a few shapes that
//! break naive compilers (deep nesting, long chains). Each must compile or fail with a
//! `CompileError`; a panic fails the test, as a finding would fail the fuzzer.

use std::path::Path;

#[test]
fn mangled_scripts_get_an_error_or_a_plan_never_a_panic() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../cli/scripts/px");
    let mut sources: Vec<String> = std::fs::read_dir(&dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|e| std::fs::read_to_string(e.path()).ok())
                .collect()
        })
        .unwrap_or_default();
    assert!(
        sources.len() >= 10,
        "the bundled scripts in {}",
        dir.display()
    );
    sources.push(format!(
        "import px\nx = {}1{}\n",
        "(".repeat(200),
        ")".repeat(200)
    ));
    sources.push(format!("import px\nx = 1{}\n", " + 1".repeat(2000)));
    sources.push(
        "import px\ndf = px.DataFrame('http_events')\n".to_owned()
            + &"df = df[df.latency > 1]\n".repeat(300),
    );
    let mut compiled = 0;
    for source in &sources {
        let bytes = source.as_bytes();
        // Prefixes, every 23 bytes (the steps keep a debug build's run to seconds).
        for end in (0..=bytes.len()).step_by(23) {
            let _ = pxl::fuzzing::compile_any(&bytes[..end]);
            compiled += 1;
        }
        // One byte dropped, every 37 bytes.
        for drop in (0..bytes.len()).step_by(37) {
            let mut mangled = bytes.to_vec();
            mangled.remove(drop);
            let _ = pxl::fuzzing::compile_any(&mangled);
            compiled += 1;
        }
    }
    assert!(compiled > 300, "{compiled} inputs");
    // The bundled scripts themselves compile against this catalog or say why.
    assert!(
        pxl::fuzzing::compile_any(b"import px\npx.display(px.DataFrame('http_events'))\n").is_ok()
    );
}
