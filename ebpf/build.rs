//! Compiles the kernel programs under `c/` with clang for the `bpf` target.
#![allow(clippy::expect_used)] // a build script reports failure by panicking
//!
//! Debian: `apt-get install clang llvm libbpf-dev` (the README's commands do it).
//! `-g` is required: aya reads the BTF-style map definitions from the debug info.

use std::path::PathBuf;
use std::process::Command;

/// (output name, source name, extra clang flags).
const PROGRAMS: &[(&str, &str, &[&str])] = &[
    ("socket_trace", "socket_trace", &[]),
    ("dynamic_probe", "dynamic_probe", &[]),
    // The same program with a deliberate out-of-bounds read the verifier must refuse:
    // the tests use it to check that the verifier's words reach the user.
    (
        "dynamic_probe_rejected",
        "dynamic_probe",
        &["-DPX_VERIFIER_REJECT_TEST"],
    ),
];

fn main() {
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let arch = match std::env::var("CARGO_CFG_TARGET_ARCH").as_deref() {
        Ok("aarch64") => ("arm64", "aarch64-linux-gnu"),
        _ => ("x86", "x86_64-linux-gnu"),
    };
    println!("cargo:rerun-if-changed=c/socket_trace.h");
    println!("cargo:rerun-if-changed=c/kernel_types.h");
    println!("cargo:rerun-if-changed=c/dynamic_probe.h");
    for (name, source, flags) in PROGRAMS {
        let src = format!("c/{source}.bpf.c");
        println!("cargo:rerun-if-changed={src}");
        let out = out_dir.join(format!("{name}.bpf.o"));
        let status = Command::new("clang")
            .args(["-O2", "-g", "-target", "bpf", "-mcpu=v3", "-Wall", "-Werror"])
            .args(*flags)
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
