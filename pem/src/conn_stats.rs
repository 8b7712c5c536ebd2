//! The `conn_stats` table: per remote endpoint and process, cumulative connection and
//! byte counters, sampled every few seconds (Pixie: 5 s).

use std::collections::HashMap;

use px_tablestore::{ColumnSchema, DataType, RowBuilder, SemanticType, TableSchema};

/// Name of the table.
pub(crate) const TABLE: &str = "conn_stats";

/// Pixie's `conn_stats` columns, in order.
pub(crate) fn schema() -> TableSchema {
    use DataType::{Boolean, Int64, String, Time64Ns, UInt128};
    let col = ColumnSchema::new;
    TableSchema::new(
        TABLE,
        "Connection-level counters per process and remote endpoint, sampled periodically",
        vec![
            col(
                "time_",
                Time64Ns,
                SemanticType::None,
                "When the sample was taken",
            ),
            col(
                "upid",
                UInt128,
                SemanticType::Upid,
                "Process that owns the connections",
            ),
            col(
                "remote_addr",
                String,
                SemanticType::IpAddress,
                "IP of the remote endpoint",
            ),
            col(
                "remote_port",
                Int64,
                SemanticType::Port,
                "Port of the remote endpoint",
            ),
            col(
                "trace_role",
                Int64,
                SemanticType::None,
                "1 = client (connect), 2 = server (accept)",
            ),
            col(
                "addr_family",
                Int64,
                SemanticType::None,
                "Socket address family (2 = IPv4, 10 = IPv6, 0 = unknown)",
            ),
            col(
                "protocol",
                Int64,
                SemanticType::None,
                "Traffic protocol (0 unknown, 1 HTTP, ...)",
            ),
            col(
                "ssl",
                Boolean,
                SemanticType::None,
                "Whether TLS was seen on the connections",
            ),
            col(
                "conn_open",
                Int64,
                SemanticType::None,
                "Connections opened since tracing began",
            ),
            col(
                "conn_close",
                Int64,
                SemanticType::None,
                "Connections closed since tracing began",
            ),
            col(
                "conn_active",
                Int64,
                SemanticType::None,
                "Connections open now",
            ),
            col(
                "bytes_sent",
                Int64,
                SemanticType::Bytes,
                "Bytes sent to the remote endpoint since tracing began",
            ),
            col(
                "bytes_recv",
                Int64,
                SemanticType::Bytes,
                "Bytes received from the remote endpoint since tracing began",
            ),
        ],
    )
}

/// What the counters are grouped by.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct ConnStatsKey {
    pub(crate) upid: u128,
    pub(crate) remote_addr: String,
    pub(crate) remote_port: i64,
    pub(crate) trace_role: i64,
    pub(crate) addr_family: i64,
    pub(crate) protocol: i64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Totals {
    open: i64,
    close: i64,
    active: i64,
    sent: i64,
    recv: i64,
}

/// One open connection's counters at sampling time.
pub(crate) struct LiveConn {
    pub(crate) key: ConnStatsKey,
    pub(crate) bytes_sent: u64,
    pub(crate) bytes_recv: u64,
}

/// Keeps the totals of closed connections, and turns them plus the open ones into rows.
///
/// Groups with no open connection whose totals did not change since they were last
/// reported are forgotten after that report, so memory follows the active endpoints,
/// not every endpoint ever seen.
#[derive(Default)]
pub(crate) struct ConnStatsAggregator {
    closed: HashMap<ConnStatsKey, Totals>,
    reported: HashMap<ConnStatsKey, Totals>,
}

fn as_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl ConnStatsAggregator {
    /// A connection closed with these final counters.
    pub(crate) fn closed(&mut self, key: ConnStatsKey, bytes_sent: u64, bytes_recv: u64) {
        let totals = self.closed.entry(key).or_default();
        totals.open += 1;
        totals.close += 1;
        totals.sent = totals.sent.saturating_add(as_i64(bytes_sent));
        totals.recv = totals.recv.saturating_add(as_i64(bytes_recv));
    }

    /// Appends one row per group that has open connections or changed since the last sample.
    pub(crate) fn sample(
        &mut self,
        live: impl IntoIterator<Item = LiveConn>,
        time_ns: i64,
        rows: &mut RowBuilder,
    ) {
        let mut current = self.closed.clone();
        for conn in live {
            let totals = current.entry(conn.key).or_default();
            totals.open += 1;
            totals.active += 1;
            totals.sent = totals.sent.saturating_add(as_i64(conn.bytes_sent));
            totals.recv = totals.recv.saturating_add(as_i64(conn.bytes_recv));
        }
        let mut reported = HashMap::with_capacity(current.len());
        for (key, totals) in current {
            if totals.active == 0 && self.reported.get(&key) == Some(&totals) {
                self.closed.remove(&key);
                continue;
            }
            append_row(rows, &key, &totals, time_ns);
            reported.insert(key, totals);
        }
        self.reported = reported;
    }
}

fn append_row(rows: &mut RowBuilder, key: &ConnStatsKey, totals: &Totals, time_ns: i64) {
    rows.append_time(time_ns);
    rows.append_u128(key.upid);
    rows.append_str(&key.remote_addr);
    rows.append_i64(key.remote_port);
    rows.append_i64(key.trace_role);
    rows.append_i64(key.addr_family);
    rows.append_i64(key.protocol);
    rows.append_bool(false);
    rows.append_i64(totals.open);
    rows.append_i64(totals.close);
    rows.append_i64(totals.active);
    rows.append_i64(totals.sent);
    rows.append_i64(totals.recv);
    rows.finish_row();
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use arrow_array::cast::AsArray;
    use arrow_array::types::Int64Type;

    use super::*;

    fn key(port: i64) -> ConnStatsKey {
        ConnStatsKey {
            upid: 1,
            remote_addr: "127.0.0.1".into(),
            remote_port: port,
            trace_role: 1,
            addr_family: 2,
            protocol: 1,
        }
    }

    fn column(batch: &arrow_array::RecordBatch, name: &str) -> Vec<i64> {
        let index = batch.schema().index_of(name).unwrap();
        batch
            .column(index)
            .as_primitive::<Int64Type>()
            .values()
            .to_vec()
    }

    #[test]
    fn open_and_closed_connections_add_up() {
        let mut agg = ConnStatsAggregator::default();
        let mut rows = RowBuilder::new(&schema());
        agg.closed(key(80), 100, 1000);
        let live = vec![LiveConn {
            key: key(80),
            bytes_sent: 10,
            bytes_recv: 20,
        }];
        agg.sample(live, 5, &mut rows);
        let batch = rows.finish();
        assert_eq!(batch.num_rows(), 1);
        assert_eq!(column(&batch, "conn_open"), vec![2]);
        assert_eq!(column(&batch, "conn_close"), vec![1]);
        assert_eq!(column(&batch, "conn_active"), vec![1]);
        assert_eq!(column(&batch, "bytes_sent"), vec![110]);
        assert_eq!(column(&batch, "bytes_recv"), vec![1020]);
    }

    #[test]
    fn quiet_closed_groups_are_reported_once_more_then_forgotten() {
        let mut agg = ConnStatsAggregator::default();
        let mut rows = RowBuilder::new(&schema());
        agg.closed(key(1), 1, 1);
        agg.sample(Vec::new(), 1, &mut rows);
        assert_eq!(rows.finish().num_rows(), 1);
        agg.sample(Vec::new(), 2, &mut rows);
        assert_eq!(rows.finish().num_rows(), 0);
        assert!(agg.closed.is_empty());
    }
}
