//! A synthetic HTTP workload replayed through the PEM's user-space path, for
//! instruction counts (`bench/http_overhead.sh` runs it under callgrind).
//!
//! CPU seconds on these shared machines vary by a factor of two from hour to hour;
//! instructions counted by callgrind repeat to a fraction of a percent, so a change's
//! effect on the cost per row is visible. The path is the event loop's, minus the ring
//! buffer read: record bytes -> decode -> tracker -> parser -> row builders -> table.

use std::sync::Arc;

use px_ebpf::socket_trace::{
    ConnId, DIR_EGRESS, DIR_INGRESS, DataEvent, EVENT_DATA, EVENT_OPEN, EventHeader, OpenEvent,
    ROLE_CLIENT, ROLE_SERVER,
};
use px_tablestore::TableStore;

use crate::config::PemConfig;
use crate::error::Error;
use crate::process::ProcessTable;
use crate::protocols::REGISTRY;
use crate::tracker::{KernelConns, Tracker};

/// What wrk sends and nginx answers in `bench/http_overhead.sh`.
const REQUEST: &[u8] = b"GET /bench HTTP/1.1\r\nHost: 127.0.0.1:18080\r\n\r\n";
const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\n\
Date: Thu, 03 Dec 2026 17:00:00 GMT\r\nContent-Type: text/plain\r\nContent-Length: 17\r\n\
Connection: keep-alive\r\n\r\nhello from nginx\n";

/// Records handled between flushes (the event loop flushes on a timer; at saturation
/// about this many records arrive per flush).
const RECORDS_PER_FLUSH: u64 = 4096;

/// What a replay produced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplaySummary {
    /// Ring buffer records fed in.
    pub records: u64,
    /// `http_events` rows the table received.
    pub rows: u64,
}

struct NoKernel;

impl KernelConns for NoKernel {
    fn lookup(&self, _key: u64) -> Option<px_ebpf::socket_trace::ConnInfo> {
        None
    }
}

/// One connection seen from one end.
struct End {
    conn: ConnId,
    sent: u64,
    received: u64,
}

/// Replays `requests` keep-alive request/response pairs spread over `connections`
/// connections, each seen from both ends (client and server on one host, as wrk and
/// nginx are), so every request makes two rows and four data records.
///
/// # Errors
/// When the table store cannot be made.
pub fn replay_http(requests: u64, connections: u32) -> Result<ReplaySummary, Error> {
    let config = PemConfig::for_memory_limit(1 << 30);
    let store = Arc::new(TableStore::new(config.budgets.clone())?);
    for entry in REGISTRY {
        store.create_table((entry.table)())?;
    }
    let mut tracker = Tracker::new(
        crate::pem::tracker_settings(&config),
        Arc::new(ProcessTable::new()),
        0,
    );
    let tgid = std::process::id();
    let connections = connections.max(1);
    let mut ends: Vec<[End; 2]> = Vec::new();
    let mut record = Vec::with_capacity(512);
    let mut clock = 1_000_000u64;
    let mut records = 0u64;
    let mut feed = |tracker: &mut Tracker, record: &[u8]| {
        if let Ok(event) = crate::events::decode(record) {
            tracker.handle(event, &NoKernel);
        }
        records += 1;
        if records.is_multiple_of(RECORDS_PER_FLUSH) {
            tracker.drain_records();
            tracker.flush(&store);
        }
    };
    for c in 0..connections {
        let fd = i32::try_from(c).unwrap_or(i32::MAX);
        let pair =
            [(ROLE_CLIENT, 1000 + 2 * fd), (ROLE_SERVER, 1001 + 2 * fd)].map(|(role, fd)| {
                let conn = ConnId {
                    generation: 1,
                    tgid,
                    fd,
                };
                clock += 1;
                open_record(&mut record, conn, role, clock);
                feed(&mut tracker, &record);
                End {
                    conn,
                    sent: 0,
                    received: 0,
                }
            });
        ends.push(pair);
    }
    for i in 0..requests {
        let index = usize::try_from(i % u64::from(connections)).unwrap_or(0);
        // Client sends, server reads, server answers, client reads.
        for (side, direction, payload) in [
            (0, DIR_EGRESS, REQUEST),
            (1, DIR_INGRESS, REQUEST),
            (1, DIR_EGRESS, RESPONSE),
            (0, DIR_INGRESS, RESPONSE),
        ] {
            clock += 7_000;
            let end = &mut ends[index][side];
            let position = if direction == DIR_EGRESS {
                &mut end.sent
            } else {
                &mut end.received
            };
            data_record(&mut record, end.conn, direction, *position, payload, clock);
            *position += payload.len() as u64;
            feed(&mut tracker, &record);
        }
    }
    tracker.drain_records();
    tracker.flush(&store);
    let rows = store
        .table(crate::tables::HTTP_EVENTS)
        .map_or(0, |t| t.stats().rows_added);
    Ok(ReplaySummary { records, rows })
}

fn push_struct<T>(out: &mut Vec<u8>, value: &T) {
    // SAFETY: T is a #[repr(C)] plain-data mirror of a kernel record (integers and byte
    // arrays, no padding left uninitialised by these constructors' Default).
    let bytes = unsafe {
        std::slice::from_raw_parts(std::ptr::from_ref(value).cast::<u8>(), size_of::<T>())
    };
    out.extend_from_slice(bytes);
}

fn open_record(out: &mut Vec<u8>, conn: ConnId, role: u32, ts: u64) {
    let mut open = OpenEvent {
        hdr: EventHeader {
            timestamp_ns: ts,
            conn,
            kind: EVENT_OPEN,
            pad: 0,
        },
        role,
        ..OpenEvent::default()
    };
    open.ends.family = 2;
    open.ends.raddr[..4].copy_from_slice(&[127, 0, 0, 1]);
    open.ends.laddr[..4].copy_from_slice(&[127, 0, 0, 1]);
    open.ends.rport = 18080;
    open.ends.lport = 40000;
    out.clear();
    push_struct(out, &open);
}

fn data_record(
    out: &mut Vec<u8>,
    conn: ConnId,
    direction: u32,
    position: u64,
    payload: &[u8],
    ts: u64,
) {
    let size = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    let data = DataEvent {
        hdr: EventHeader {
            timestamp_ns: ts,
            conn,
            kind: EVENT_DATA,
            pad: 0,
        },
        position,
        size,
        captured: size,
        direction,
        pad: 0,
    };
    out.clear();
    push_struct(out, &data);
    out.extend_from_slice(payload);
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    #[test]
    fn every_replayed_request_makes_two_rows() {
        let summary = super::replay_http(1000, 8).unwrap();
        assert_eq!(summary.rows, 2000);
        assert_eq!(summary.records, 4000 + 16);
    }
}
