//! Bad input gets an error Status, never a panic or a hang, and the server keeps serving.

use std::time::Duration;

use px_e2e::{Cluster, ClusterConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sends one raw HTTP/1.1 request and returns the status code and body.
async fn raw(addr: &str, request: &[u8]) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut buf))
        .await
        .expect("server answered");
    let text = String::from_utf8_lossy(&buf).into_owned();
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (code, body)
}

fn request(method: &str, path: &str, content_type: &str, body: &str) -> Vec<u8> {
    format!("{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n{body}", body.len()).into_bytes()
}

#[tokio::test]
async fn bad_requests_get_status_errors_and_the_server_survives() {
    let cluster = Cluster::start(ClusterConfig::default()).await.unwrap();
    let addr = cluster
        .emulator()
        .url()
        .trim_start_matches("http://")
        .to_string();
    let cms = "/api/v1/namespaces/default/configmaps";
    let deep = "[".repeat(100_000);
    let cases: Vec<(Vec<u8>, u16, &str)> = vec![
        (
            request("POST", cms, "application/json", "not json"),
            400,
            "error decoding request body as JSON",
        ),
        (
            request("POST", cms, "application/json", "[1, 2]"),
            400,
            "must be a JSON object",
        ),
        (
            request("POST", cms, "application/json", &deep),
            400,
            "recursion limit",
        ),
        (
            request(
                "POST",
                cms,
                "application/json",
                r#"{"metadata":{"name":"Bad_Name"}}"#,
            ),
            422,
            "a lowercase RFC 1123 subdomain",
        ),
        (
            request("POST", cms, "application/json", r#"{"metadata":{}}"#),
            422,
            "name or generateName is required",
        ),
        (
            request(
                "POST",
                "/api/v1/namespaces/nowhere/configmaps",
                "application/json",
                r#"{"metadata":{"name":"a"}}"#,
            ),
            404,
            "namespaces \\\"nowhere\\\" not found",
        ),
        (
            request("PATCH", &format!("{cms}/a"), "text/plain", "{}"),
            415,
            "unknown format",
        ),
        (
            request(
                "PATCH",
                &format!("{cms}/missing"),
                "application/merge-patch+json",
                "{}",
            ),
            404,
            "configmaps \\\"missing\\\" not found",
        ),
        (
            request(
                "GET",
                &format!("{cms}?labelSelector=a%20in%20b"),
                "application/json",
                "",
            ),
            400,
            "unable to parse requirement",
        ),
        (
            request(
                "GET",
                &format!("{cms}?watch=1&resourceVersion=abc"),
                "application/json",
                "",
            ),
            400,
            "invalid resource version",
        ),
        (
            request("GET", "/apis/nope/v1/things", "application/json", ""),
            404,
            "could not find the requested resource",
        ),
        (
            request(
                "GET",
                "/api/v1/namespaces/default/configmaps/a/b/c/d",
                "application/json",
                "",
            ),
            404,
            "could not find",
        ),
        (
            request("DELETE", "/version", "application/json", ""),
            405,
            "does not allow this method",
        ),
        (
            request(
                "PUT",
                &format!("{cms}/a"),
                "application/json",
                r#"{"metadata":{"name":"a"}}"#,
            ),
            404,
            "not found",
        ),
    ];
    for (req, code, needle) in cases {
        let (got, body) = raw(&addr, &req).await;
        assert_eq!(got, code, "{body}");
        assert!(body.contains(needle), "{needle:?} not in {body}");
        assert!(body.contains("\"kind\":\"Status\""), "{body}");
    }
    // A JSON patch that does not apply leaves the object alone.
    raw(
        &addr,
        &request(
            "POST",
            cms,
            "application/json",
            r#"{"metadata":{"name":"a"},"data":{"k":"v"}}"#,
        ),
    )
    .await;
    let (code, _) = raw(
        &addr,
        &request(
            "PATCH",
            &format!("{cms}/a"),
            "application/json-patch+json",
            r#"[{"op":"remove","path":"/data/nope"}]"#,
        ),
    )
    .await;
    assert!(code >= 400, "{code}");
    let (code, body) = raw(
        &addr,
        &request(
            "PATCH",
            &format!("{cms}/a"),
            "application/json-patch+json",
            r#"{"op":"x"}"#,
        ),
    )
    .await;
    assert_eq!(code, 400, "{body}");

    // Garbage that is not HTTP, and a body larger than the limit.
    let (code, _) = raw(&addr, b"\x00\x01garbage\r\n\r\n").await;
    assert_ne!(code, 200);
    let huge = request("POST", cms, "application/json", &"x".repeat(17 << 20));
    let (code, _) = raw(&addr, &huge).await;
    assert_eq!(code, 400);

    let (code, body) = raw(&addr, &request("GET", "/version", "application/json", "")).await;
    assert_eq!(code, 200, "{body}");
    let (code, body) = raw(
        &addr,
        &request("GET", &format!("{cms}/a"), "application/json", ""),
    )
    .await;
    assert_eq!(code, 200);
    assert!(body.contains(r#""data":{"k":"v"}"#), "{body}");
    cluster.stop().await;
}
