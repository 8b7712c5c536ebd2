//! Compiles the kernel programs under `c/` with clang for the `bpf` target.
#![allow(clippy::expect_used)] // a build script reports failure by panicking
//!
//! Debian: `apt-get install clang llvm libbpf-dev` (the README's commands do it).
//! `-g` is required: aya reads the BTF-style map definitions from the debug info.

use std::path::PathBuf;
use std::process::Command;

const PROGRAMS: &[&str] = &["socket_trace", "dynamic_probe"];

fn main() {
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let arch = match std::env::var("CARGO_CFG_TARGET_ARCH").as_deref() {
        Ok("aarch64") => ("arm64", "aarch64-linux-gnu"),
        _ => ("x86", "x86_64-linux-gnu"),
    };
    println!("cargo:rerun-if-changed=c/socket_trace.h");
    println!("cargo:rerun-if-changed=c/kernel_types.h");
    println!("cargo:rerun-if-changed=c/dynamic_probe.h");
    for name in PROGRAMS {
        let src = format!("c/{name}.bpf.c");
        println!("cargo:rerun-if-changed={src}");
        let out = out_dir.join(format!("{name}.bpf.o"));
        let status = Command::new("clang")
            .args(["-O2", "-g", "-target", "bpf", "-mcpu=v3", "-Wall", "-Werror"])
            .arg(format!("-D__TARGET_ARCH_{}", arch.0))
            .arg(format!("-I/usr/include/{}", arch.1))
            .args(["-c", &src, "-o"])
            .arg(&out)
            .status()
            .unwrap_or_else(|e| {
                panic!("cannot run clang ({e}): install it with `apt-get install clang llvm libbpf-dev`")
            });
        assert!(status.success(), "clang failed to compile {src}");
    }
}
