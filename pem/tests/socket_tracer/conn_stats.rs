//! `conn_stats` counters against the bytes a client really sent and received.

#![allow(clippy::unwrap_used)]

use crate::support::{Server, client, conn_stats_rows, harness, wait_for};

#[test]
fn counters_match_the_bytes_sent() {
    let Some(h) = harness() else { return };
    let server = Server::start("127.0.0.1");
    let (report, pid) = client("exact", "127.0.0.1", server.port, 0);
    let number = |key: &str| -> i64 {
        let start = report.find(&format!("\"{key}\": ")).unwrap() + key.len() + 4;
        report[start..]
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let (sent, received) = (number("sent"), number("received"));
    let port = i64::from(server.port);
    // The closed connection shows in the next sample: one opened, one closed, none active.
    let row = wait_for("a conn_stats row for the closed connection", || {
        conn_stats_rows(&h.store, pid)
            .into_iter()
            .find(|r| r[0] == port && r[3] == 1)
    });
    assert_eq!(row, [port, 1, 1, 1, 0, sent, received]);
}
