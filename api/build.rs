//! Compiles `proto/*.proto` at build time without a system `protoc`: `protox` (a
//! protobuf compiler in Rust) parses them into a `FileDescriptorSet`, which
//! `tonic-prost-build` turns into prost messages and tonic clients and servers in
//! `OUT_DIR` (one file per package). The descriptor set itself is written to
//! `OUT_DIR/file_descriptor_set.bin` for gRPC reflection.

use std::error::Error;
use std::path::PathBuf;

use prost::Message as _;

const PROTOS: &[&str] = &["proto/vizierapi.proto", "proto/pem.proto"];

fn main() -> Result<(), Box<dyn Error>> {
    println!("cargo:rerun-if-changed=build.rs");
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }

    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").ok_or("OUT_DIR is not set")?);
    let fds = protox::compile(PROTOS, ["proto"])?;
    std::fs::write(out_dir.join("file_descriptor_set.bin"), fds.encode_to_vec())?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // No `connect()` helpers: they would pull in tonic's whole transport
        // stack. Callers build a `tonic::transport::Channel` and use `new()`.
        .build_transport(false)
        .emit_rerun_if_changed(false)
        .compile_fds(fds)?;
    Ok(())
}
