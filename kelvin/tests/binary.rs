//! The `kelvin` binary's refusals: it does not serve an open API by accident.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure

use std::process::Command;

fn kelvin(args: &[&str]) -> (bool, String) {
    kelvin_with_key(None, args)
}

/// Runs kelvin with `key` in PX_API_KEY (or none).
fn kelvin_with_key(key: Option<&str>, args: &[&str]) -> (bool, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_kelvin"));
    match key {
        Some(key) => command.env("PX_API_KEY", key),
        None => command.env_remove("PX_API_KEY"),
    };
    let output = command
        .args(args)
        .env_remove("PX_KELVIN_PEMS_FROM_PODS")
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn without_an_api_key_it_refuses_to_serve_and_says_how_to_fix_it() {
    let (ok, stderr) = kelvin(&["--listen", "127.0.0.1:0", "--pem", "a=http://127.0.0.1:1"]);
    assert!(!ok);
    assert!(
        stderr.contains("PX_API_KEY")
            && stderr.contains("--api-key-file")
            && stderr.contains("--allow-unauthenticated"),
        "{stderr}"
    );
}

#[test]
fn a_key_on_the_command_line_is_refused() {
    // Every user of the machine reads /proc/PID/cmdline: keys come from PX_API_KEY or a file.
    let (ok, stderr) = kelvin(&["--api-key", "k", "--pem", "a=http://127.0.0.1:1"]);
    assert!(!ok);
    assert!(
        stderr.contains("unexpected argument '--api-key'"),
        "{stderr}"
    );
}

#[test]
fn a_pem_must_be_named_with_its_address() {
    let (ok, stderr) = kelvin_with_key(Some("k"), &["--pem", "http://127.0.0.1:1"]);
    assert!(!ok);
    assert!(stderr.contains("NAME=URL"), "{stderr}");
    let (ok, stderr) = kelvin_with_key(Some("k"), &[]);
    assert!(!ok);
    assert!(stderr.contains("--pem"), "{stderr}");
}

#[test]
fn without_a_certificate_it_refuses_to_serve_in_the_clear_unless_told() {
    let (ok, stderr) = kelvin_with_key(Some("k"), &["--pem", "a=http://127.0.0.1:1"]);
    assert!(!ok);
    assert!(
        stderr.contains("--tls-cert") && stderr.contains("--disable-tls"),
        "{stderr}"
    );
    let (ok, stderr) = kelvin_with_key(
        Some("k"),
        &[
            "--pem",
            "a=http://127.0.0.1:1",
            "--tls-cert",
            "/no/such/cert.pem",
            "--tls-key",
            "/no/such/key.pem",
        ],
    );
    assert!(!ok);
    assert!(stderr.contains("/no/such/cert.pem"), "{stderr}");
}
