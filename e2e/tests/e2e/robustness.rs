//! Raw HTTP: bad input gets an error Status, never a panic or a hang, and the server keeps
//! serving; watch bookmarks and 410 Gone as they look on the wire.

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

/// Reads from a streaming response until `needle` shows up; returns all read so far.
async fn read_until(stream: &mut TcpStream, needle: &str) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !String::from_utf8_lossy(&buf).contains(needle) {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut chunk))
            .await
            .expect("data in time")
            .unwrap();
        assert!(
            n > 0,
            "stream ended before {needle:?}: {}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    }
    String::from_utf8_lossy(&buf).into_owned()
}

#[tokio::test]
async fn watches_get_bookmarks_and_410_for_expired_versions() {
    let config = ClusterConfig {
        emulator: px_e2e::EmulatorConfig {
            bookmark_interval: Duration::from_millis(100),
            ..Default::default()
        },
        ..ClusterConfig::default()
    };
    let cluster = Cluster::start(config).await.unwrap();
    let addr = cluster
        .emulator()
        .url()
        .trim_start_matches("http://")
        .to_string();
    let cms = "/api/v1/namespaces/default/configmaps";
    let (_, body) = raw(
        &addr,
        &request(
            "POST",
            cms,
            "application/json",
            r#"{"metadata":{"name":"a"}}"#,
        ),
    )
    .await;
    let created: serde_json::Value = serde_json::from_str(&body).unwrap();
    let rv = created["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();

    let mut stream = TcpStream::connect(&addr).await.unwrap();
    let watch = format!(
        "GET {cms}?watch=1&allowWatchBookmarks=true&resourceVersion={rv} HTTP/1.1\r\nHost: x\r\n\r\n"
    );
    stream.write_all(watch.as_bytes()).await.unwrap();
    let seen = read_until(&mut stream, "BOOKMARK").await;
    let expected = format!(
        r#"{{"object":{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"resourceVersion":"{rv}"}}}},"type":"BOOKMARK"}}"#
    );
    assert!(seen.contains(&expected), "{seen}");

    // A change arrives on the open watch; after a compaction, resuming from the old
    // version is answered with a 410 Expired ERROR event.
    raw(
        &addr,
        &request(
            "POST",
            cms,
            "application/json",
            r#"{"metadata":{"name":"b"}}"#,
        ),
    )
    .await;
    read_until(&mut stream, r#""type":"ADDED""#).await;
    cluster.emulator().compact();
    let mut stale = TcpStream::connect(&addr).await.unwrap();
    stale.write_all(format!("GET {cms}?watch=1&resourceVersion={rv} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes()).await.unwrap();
    let gone = read_until(&mut stale, "ERROR").await;
    assert!(
        gone.contains(r#""code":410"#) && gone.contains(r#""reason":"Expired""#),
        "{gone}"
    );
    assert!(
        gone.contains(&format!("too old resource version: {rv} (")),
        "{gone}"
    );
    cluster.stop().await;
}

#[tokio::test]
async fn odd_objects_do_not_stop_the_controllers() {
    let config = ClusterConfig {
        nodes: vec![px_e2e::NodeSpec::named("n")],
        ..ClusterConfig::default()
    };
    let cluster = Cluster::start(config).await.unwrap();
    let addr = cluster
        .emulator()
        .url()
        .trim_start_matches("http://")
        .to_string();
    let ns = "/api/v1/namespaces/default";
    let deploys = "/apis/apps/v1/namespaces/default/deployments";
    // Built-in kinds are not validated, so anything can be stored; nothing may panic on it.
    for (path, body) in [
        (
            format!("{ns}/pods"),
            r#"{"metadata":{"name":"p"},"spec":5}"#,
        ),
        (
            deploys.to_string(),
            r#"{"metadata":{"name":"d1"},"spec":{"template":{"metadata":{"labels":"x"},"spec":"y"}}}"#,
        ),
        (
            deploys.to_string(),
            r#"{"metadata":{"name":"d2"},"spec":"z"}"#,
        ),
        (
            format!("{ns}/services"),
            r#"{"metadata":{"name":"s"},"spec":{"ports":"none"}}"#,
        ),
    ] {
        let (code, out) = raw(&addr, &request("POST", &path, "application/json", body)).await;
        assert!(code == 201 || code == 400 || code == 422, "{code} {out}");
    }
    let (code, out) = raw(
        &addr,
        &request(
            "PATCH",
            &format!("{deploys}/d2/scale"),
            "application/merge-patch+json",
            r#"{"spec":{"replicas":2}}"#,
        ),
    )
    .await;
    assert_eq!(code, 400, "{out}");
    let (code, _) = raw(
        &addr,
        &request(
            "DELETE",
            &format!("{ns}/pods/p?propagationPolicy=Foreground"),
            "application/json",
            "[1]",
        ),
    )
    .await;
    assert_eq!(code, 400);
    // A date column over a field the user sets, holding no date.
    let crd = r#"{"apiVersion":"apiextensions.k8s.io/v1","kind":"CustomResourceDefinition","metadata":{"name":"things.px.dev"},"spec":{"group":"px.dev","scope":"Namespaced","names":{"plural":"things","kind":"Thing"},"versions":[{"name":"v1","served":true,"storage":true,"additionalPrinterColumns":[{"name":"When","type":"date","jsonPath":".spec.when"}],"schema":{"openAPIV3Schema":{"type":"object","x-kubernetes-preserve-unknown-fields":true}}}]}}"#;
    let (code, out) = raw(
        &addr,
        &request(
            "POST",
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
            "application/json",
            crd,
        ),
    )
    .await;
    assert_eq!(code, 201, "{out}");
    let thing = r#"{"apiVersion":"px.dev/v1","kind":"Thing","metadata":{"name":"t"},"spec":{"when":"2026-11-22T11:24:19é"}}"#;
    let (code, out) = raw(
        &addr,
        &request(
            "POST",
            "/apis/px.dev/v1/namespaces/default/things",
            "application/json",
            thing,
        ),
    )
    .await;
    assert_eq!(code, 201, "{out}");
    let rows = super::fixtures::table(&super::fixtures::ok(&cluster, &["get", "things"]).await);
    assert_eq!(rows[1], ["t", "<unknown>"]);

    // The controllers still work: a well-formed Deployment gets its pod, scheduled.
    let good = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: good\nspec:\n  selector:\n    matchLabels: {app: good}\n  template:\n    metadata:\n      labels: {app: good}\n    spec:\n      containers:\n      - {name: c, image: none}\n";
    assert!(super::fixtures::apply(&cluster, good).await.success());
    let scheduled = px_e2e::eventually(super::fixtures::SETTLE, || async {
        let node = super::fixtures::ok(
            &cluster,
            &[
                "get",
                "pods",
                "-l",
                "app=good",
                "-o",
                "jsonpath={.items[0].spec.nodeName}",
            ],
        )
        .await;
        (node == "n").then_some(())
    })
    .await;
    assert!(
        scheduled.is_some(),
        "the good deployment's pod was not created and scheduled"
    );
    cluster.stop().await;
}
