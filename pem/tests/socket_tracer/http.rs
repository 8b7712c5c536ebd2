//! `http_events` rows for real HTTP traffic, from both ends of each connection.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support::{HttpRow, Server, client, harness, http_rows, wait_for_http_rows};

fn by_role(rows: &[HttpRow], role: i64) -> Vec<&HttpRow> {
    rows.iter().filter(|r| r.trace_role == role).collect()
}

#[test]
fn basic_requests_are_captured_on_both_sides() {
    let Some(h) = harness() else { return };
    let server = Server::start("127.0.0.1");
    let (_, client_pid) = client("basic", "127.0.0.1", server.port, 0);
    // GET, POST, a JSON GET, HEAD and a 204, seen by the client and by the server.
    let rows = wait_for_http_rows(&h.store, &[client_pid, server.pid()], 10);
    assert_eq!(rows.len(), 10, "{rows:#?}");

    for (role, pid) in [(1, client_pid), (2, server.pid())] {
        let side = by_role(&rows, role);
        assert_eq!(side.len(), 5, "role {role}: {side:#?}");
        assert!(side.iter().all(|r| r.pid == pid));
        let get = side
            .iter()
            .find(|r| r.req_method == "GET" && r.req_path == "/hello")
            .unwrap();
        assert_eq!((get.major_version, get.minor_version), (1, 1));
        assert_eq!(get.resp_status, 200);
        assert_eq!(get.resp_message, "OK");
        assert_eq!(get.resp_body, "hello world\n");
        assert_eq!(get.resp_body_size, 12);
        assert!(
            get.req_headers.contains("\"X-Request\":\"abc\""),
            "{}",
            get.req_headers
        );
        assert!(
            get.resp_headers.contains("\"X-Test\":\"yes\""),
            "{}",
            get.resp_headers
        );
        // Credentials are recorded as present, their values redacted (the default).
        assert!(
            get.req_headers
                .contains("\"Authorization\":\"Bearer [REDACTED]\"")
                && get.req_headers.contains("\"Cookie\":\"sid=[REDACTED]\""),
            "{}",
            get.req_headers
        );
        assert!(
            get.resp_headers
                .contains("\"Set-Cookie\":\"sid=[REDACTED]; Path=/\""),
            "{}",
            get.resp_headers
        );
        for secret in ["tok-3f9a", "c00k1e", "n3w"] {
            assert!(
                !get.req_headers.contains(secret) && !get.resp_headers.contains(secret),
                "{secret} was recorded"
            );
        }
        assert!(get.latency > 0);
        assert!(
            get.time > 1_600_000_000_000_000_000,
            "time_ is wall-clock ns"
        );

        let post = side.iter().find(|r| r.req_method == "POST").unwrap();
        assert_eq!(post.req_path, "/echo");
        assert_eq!(post.req_body, format!("ping={}", "p".repeat(27)));
        assert_eq!(post.req_body_size, 32);
        assert_eq!(post.content_type, 0, "the response is text/plain");
        let json = side.iter().find(|r| r.req_path == "/json").unwrap();
        assert_eq!(json.content_type, 1, "the response is application/json");
        assert_eq!(
            (post.resp_status, post.resp_message.as_str()),
            (201, "Created")
        );

        let head = side.iter().find(|r| r.req_method == "HEAD").unwrap();
        assert_eq!((head.resp_status, head.resp_body_size), (200, 0));
        let no_content = side.iter().find(|r| r.req_path == "/nocontent").unwrap();
        assert_eq!(
            (no_content.resp_status, no_content.resp_body_size),
            (204, 0)
        );
    }

    // Addresses: the client's remote end is the server's local end, and back.
    let client_row = by_role(&rows, 1)[0];
    let server_row = by_role(&rows, 2)[0];
    assert_eq!(client_row.remote_addr, "127.0.0.1");
    assert_eq!(client_row.remote_port, i64::from(server.port));
    assert_eq!(server_row.local_port, i64::from(server.port));
    assert_eq!(server_row.remote_addr, "127.0.0.1");
    assert_eq!(server_row.remote_port, client_row.local_port);
    assert!(client_row.local_port > 0);
}

#[test]
fn keep_alive_hundred_requests_on_one_connection() {
    let Some(h) = harness() else { return };
    let server = Server::start("127.0.0.1");
    let (_, pid) = client("keepalive", "127.0.0.1", server.port, 100);
    let rows = wait_for_http_rows(&h.store, &[pid, server.pid()], 200);
    for role in [1, 2] {
        let mut paths: Vec<String> = by_role(&rows, role)
            .iter()
            .map(|r| r.req_path.clone())
            .collect();
        paths.sort();
        paths.dedup();
        assert_eq!(paths.len(), 100, "role {role}: every request once");
    }
    // One connection: one client port.
    let mut ports: Vec<i64> = by_role(&rows, 1).iter().map(|r| r.local_port).collect();
    ports.dedup();
    assert_eq!(ports.len(), 1);
}

#[test]
fn pipelined_requests_are_paired_in_order() {
    let Some(h) = harness() else { return };
    let server = Server::start("127.0.0.1");
    let (_, pid) = client("pipeline", "127.0.0.1", server.port, 0);
    let rows = wait_for_http_rows(&h.store, &[pid, server.pid()], 6);
    for role in [1, 2] {
        let mut side = by_role(&rows, role);
        side.sort_by_key(|r| r.time);
        let paths: Vec<&str> = side.iter().map(|r| r.req_path.as_str()).collect();
        assert_eq!(
            paths,
            ["/hello?p=0", "/hello?p=1", "/hello?p=2"],
            "role {role}"
        );
        assert!(
            side.iter()
                .all(|r| r.resp_status == 200 && r.resp_body == "hello world\n")
        );
    }
}

#[test]
fn chunked_response_body_is_decoded() {
    let Some(h) = harness() else { return };
    let server = Server::start("127.0.0.1");
    let (_, pid) = client("chunked", "127.0.0.1", server.port, 0);
    let rows = wait_for_http_rows(&h.store, &[pid, server.pid()], 2);
    for row in &rows {
        assert_eq!(row.resp_body, "first chunk;second chunk;third");
        assert_eq!(row.resp_body_size, 30);
        assert!(row.resp_headers.contains("chunked"));
    }
}

#[test]
fn ten_mib_bodies_are_truncated_with_their_true_size() {
    let Some(h) = harness() else { return };
    let server = Server::start("127.0.0.1");
    let (_, pid) = client("big", "127.0.0.1", server.port, 0);
    let rows = wait_for_http_rows(&h.store, &[pid, server.pid()], 4);
    let size = 10 * 1024 * 1024;
    for role in [1, 2] {
        let side = by_role(&rows, role);
        let upload = side.iter().find(|r| r.req_method == "POST").unwrap();
        assert_eq!(upload.req_body_size, size);
        assert_eq!(upload.req_body, "u".repeat(512));
        assert_eq!(upload.resp_status, 201);
        let download = side
            .iter()
            .find(|r| r.req_path.starts_with("/big/"))
            .unwrap();
        assert_eq!(download.resp_body_size, size);
        assert_eq!(download.resp_body, "b".repeat(512));
    }
    // The bodies went by; the parsers did not keep them.
    assert!(
        h.status().tracker.parser_bytes < 4 << 20,
        "{:?}",
        h.status()
    );
}

#[test]
fn thousand_concurrent_connections() {
    let Some(h) = harness() else { return };
    let server = Server::start("127.0.0.1");
    let (report, pid) = client("concurrent", "127.0.0.1", server.port, 1000);
    assert!(report.contains("\"ok\": 1000"), "{report}");
    let rows = wait_for_http_rows(&h.store, &[pid, server.pid()], 2000);
    for role in [1, 2] {
        let mut paths: Vec<String> = by_role(&rows, role)
            .iter()
            .map(|r| r.req_path.clone())
            .collect();
        paths.sort();
        paths.dedup();
        assert_eq!(paths.len(), 1000, "role {role}");
    }
}

#[test]
fn ipv6_connections_carry_ipv6_addresses() {
    let Some(h) = harness() else { return };
    let server = Server::start("::1");
    let (_, pid) = client("basic", "::1", server.port, 0);
    let rows = wait_for_http_rows(&h.store, &[pid, server.pid()], 10);
    for row in &rows {
        assert_eq!(row.remote_addr, "::1");
        assert_eq!(row.local_addr, "::1");
    }
    assert!(
        by_role(&rows, 1)
            .iter()
            .all(|r| r.remote_port == i64::from(server.port))
    );
}

#[test]
fn non_http_bytes_are_ignored_and_tracing_goes_on() {
    let Some(h) = harness() else { return };
    let muted_before = h.status().tracker.connections_muted;
    let server = Server::start("127.0.0.1");
    let (report, pid) = client("garbage", "127.0.0.1", server.port, 0);
    assert!(report.contains("\"after\": 200"), "{report}");
    let rows = wait_for_http_rows(&h.store, &[pid, server.pid()], 2);
    // Only the real request became rows; the garbage connection was muted.
    std::thread::sleep(std::time::Duration::from_millis(500));
    let rows_now = http_rows(&h.store, &[pid, server.pid()]);
    assert_eq!(rows_now.len(), 2, "{rows:#?}");
    assert!(rows_now.iter().all(|r| r.req_path == "/hello"));
    assert!(h.status().tracker.connections_muted > muted_before);
}
