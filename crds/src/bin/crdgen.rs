//! Writes the CRD manifests (`crds/*.yaml`) from the types: `cargo run -p px-crds --bin
//! crdgen`, or with a directory argument to write them elsewhere.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    for manifest in px_crds::manifests()? {
        let path = dir.join(&manifest.file_name);
        std::fs::write(&path, &manifest.yaml)?;
        println!("wrote {}", path.display());
    }
    Ok(())
}
