//! The `kelvin` binary's refusals: it does not serve an open API by accident.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure

use std::process::Command;

fn kelvin(args: &[&str]) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_kelvin"))
        .args(args)
        .env_remove("PX_API_KEY")
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
        stderr.contains("--api-key") && stderr.contains("--allow-unauthenticated"),
        "{stderr}"
    );
}

#[test]
fn a_pem_must_be_named_with_its_address() {
    let (ok, stderr) = kelvin(&["--api-key", "k", "--pem", "http://127.0.0.1:1"]);
    assert!(!ok);
    assert!(stderr.contains("NAME=URL"), "{stderr}");
    let (ok, stderr) = kelvin(&["--api-key", "k"]);
    assert!(!ok);
    assert!(stderr.contains("--pem"), "{stderr}");
}

#[test]
fn without_a_certificate_it_refuses_to_serve_in_the_clear_unless_told() {
    let (ok, stderr) = kelvin(&["--api-key", "k", "--pem", "a=http://127.0.0.1:1"]);
    assert!(!ok);
    assert!(
        stderr.contains("--tls-cert") && stderr.contains("--disable-tls"),
        "{stderr}"
    );
    let (ok, stderr) = kelvin(&[
        "--api-key",
        "k",
        "--pem",
        "a=http://127.0.0.1:1",
        "--tls-cert",
        "/no/such/cert.pem",
        "--tls-key",
        "/no/such/key.pem",
    ]);
    assert!(!ok);
    assert!(stderr.contains("/no/such/cert.pem"), "{stderr}");
}
