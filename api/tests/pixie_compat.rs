//! Compares our `px.api.vizierpb` descriptors with those shipped in Pixie's own
//! Python client, `pxapi` 0.9.0 from PyPI: every message, field (name, number,
//! type, label, type name, oneof), enum value and service method must match.
//!
//! The test installs `pxapi` into a virtualenv under `CARGO_TARGET_TMPDIR` (once;
//! later runs reuse it) and runs `tests/compat/check_descriptor.py` with
//! `python3`. When the virtualenv or the install cannot be made (no network, no
//! `python3-venv`), the test fails under `CI=true` and is skipped otherwise.

use std::path::{Path, PathBuf};
use std::process::Command;

const PXAPI: &str = "pxapi==0.9.0";

/// The python of a virtualenv holding pxapi 0.9.0 (made once by scripts/pxapi-venv.sh).
fn python_with_pxapi(dir: &Path) -> Result<PathBuf, String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/pxapi-venv.sh");
    let output = Command::new(script)
        .arg(dir)
        .output()
        .map_err(|e| format!("cannot run pxapi-venv.sh: {e}"))?;
    if output.status.success() {
        Ok(PathBuf::from(
            String::from_utf8_lossy(&output.stdout).trim(),
        ))
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

#[test]
fn vizierpb_descriptors_match_pixie_python_client() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("pixie-compat");
    std::fs::create_dir_all(&dir).expect("create the test directory");

    let python = match python_with_pxapi(&dir) {
        Ok(python) => python,
        Err(error) => {
            if std::env::var("CI").is_ok_and(|ci| ci == "true") {
                panic!("cannot install {PXAPI} to compare descriptors: {error}");
            }
            eprintln!("SKIPPED: cannot install {PXAPI} (set CI=true to fail instead): {error}");
            return;
        }
    };

    let fds = dir.join("px-api.fds.bin");
    std::fs::write(&fds, px_api::FILE_DESCRIPTOR_SET).expect("write the descriptor set");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/compat/check_descriptor.py");
    let output = Command::new(&python)
        .arg(&script)
        .arg("--self-test")
        .arg(&fds)
        .output()
        .expect("run check_descriptor.py");
    let stdout = String::from_utf8_lossy(&output.stdout);
    println!("{stdout}");
    eprintln!("{}", String::from_utf8_lossy(&output.stderr));
    assert!(
        output.status.success(),
        "our descriptors differ from pxapi's ({}):\n{stdout}",
        output.status
    );
    assert!(stdout.contains(": 0 differences"), "{stdout}");
}
