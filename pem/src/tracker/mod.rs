//! Connection tracking: kernel events in, table rows out.
//!
//! The tracker owns one [`Connection`] per traced socket, feeds each direction's bytes
//! to the connection's protocol parser in stream order, keeps `conn_stats`, and
//! releases what idle or closed connections held. It does no I/O on the kernel maps itself: what it wants done
//! there (mute a connection, forget one) it queues for the caller.

mod connection;

// foldhash: the maps on the per-event path are keyed by integers the kernel hands out;
// SipHash's flood resistance buys nothing there and costs a share of every event.
use foldhash::{HashMap, HashMapExt};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use arrow_array::RecordBatch;
use px_ebpf::socket_trace::{CloseEvent, ConnId, ConnInfo, DataEvent, Endpoints, OpenEvent};
use px_tablestore::{RowBuilder, TableStore};

use crate::conn_stats::{self, ConnStatsAggregator, ConnStatsKey, LiveConn};
use crate::events::{Event, conn_key};
use crate::process::{ProcessCache, ProcessTable};
use crate::protocols::{ConnMeta, Direction, ParserLimits, REGISTRY};
use connection::{Connection, DataOutcome, role_from_kernel};
use std::sync::Arc;

const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;

/// Read access to the kernel's connection map (a trait so tests need no kernel).
pub(crate) trait KernelConns {
    /// The connection under `tgid << 32 | fd`, if the kernel still tracks it.
    fn lookup(&self, key: u64) -> Option<ConnInfo>;
}

/// How the tracker bounds itself.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TrackerSettings {
    pub(crate) asid: u32,
    pub(crate) limits: ParserLimits,
    pub(crate) idle_timeout_ns: u64,
    pub(crate) max_connections: usize,
}

/// Counters of what the tracker saw and let go.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TrackerCounters {
    /// Connections opened while tracing.
    pub connections_opened: u64,
    /// Connections closed (by close() or process exit).
    pub connections_closed: u64,
    /// Connections tracked now.
    pub connections_tracked: u64,
    /// Connections whose payload the kernel was asked to stop copying (not a parsed protocol).
    pub connections_muted: u64,
    /// Data events received.
    pub data_events: u64,
    /// Payload bytes received from the kernel.
    pub data_bytes_captured: u64,
    /// Connections released for idleness or to stay within the connection limit.
    pub connections_released: u64,
    /// Heap bytes held by parsers now.
    pub parser_bytes: u64,
    /// Bytes parsers skipped because they did not parse (then resynchronised).
    pub parser_bytes_skipped: u64,
    /// Requests or responses that never found their peer.
    pub messages_unpaired: u64,
}

pub(crate) struct Tracker {
    settings: TrackerSettings,
    conns: HashMap<u64, (u64, Connection)>,
    conns_per_process: HashMap<u32, usize>,
    processes: ProcessCache,
    /// One row builder per protocol (by registry name): (table name, builder).
    protocol_rows: HashMap<&'static str, (String, RowBuilder)>,
    conn_stats_rows: RowBuilder,
    conn_stats: ConnStatsAggregator,
    mutes: Vec<(u64, u64)>,
    forgets: Vec<u64>,
    boot_to_epoch_ns: i64,
    counters: TrackerCounters,
}

impl Tracker {
    pub(crate) fn new(
        settings: TrackerSettings,
        processes: Arc<ProcessTable>,
        boot_to_epoch_ns: i64,
    ) -> Self {
        let protocol_rows = REGISTRY
            .iter()
            .map(|entry| {
                let schema = (entry.table)();
                (entry.name, (schema.name.clone(), RowBuilder::new(&schema)))
            })
            .collect();
        Self {
            settings,
            conns: HashMap::new(),
            conns_per_process: HashMap::new(),
            processes: ProcessCache::new(settings.asid, processes),
            protocol_rows,
            conn_stats_rows: RowBuilder::new(&conn_stats::schema()),
            conn_stats: ConnStatsAggregator::default(),
            mutes: Vec::new(),
            forgets: Vec::new(),
            boot_to_epoch_ns,
            counters: TrackerCounters::default(),
        }
    }

    /// Keeps wall-clock conversion current (the clocks drift apart slowly).
    pub(crate) fn set_boot_to_epoch_ns(&mut self, offset: i64) {
        self.boot_to_epoch_ns = offset;
    }

    pub(crate) fn counters(&self) -> TrackerCounters {
        let mut counters = self.counters;
        counters.connections_tracked = self.conns.len() as u64;
        for (_, conn) in self.conns.values() {
            counters.parser_bytes += conn.buffered_bytes() as u64;
            let stats = conn.parser_stats();
            counters.parser_bytes_skipped += stats.bytes_skipped;
            counters.messages_unpaired += stats.messages_unpaired;
        }
        counters
    }

    /// Connections (key, generation) whose payload the kernel should stop copying.
    pub(crate) fn take_mutes(&mut self) -> Vec<(u64, u64)> {
        std::mem::take(&mut self.mutes)
    }

    /// Kernel map keys of connections that ended without a close() (process exit).
    pub(crate) fn take_forgets(&mut self) -> Vec<u64> {
        std::mem::take(&mut self.forgets)
    }

    pub(crate) fn handle(&mut self, event: Event<'_>, kernel: &dyn KernelConns) {
        match event {
            Event::Open(open) => self.on_open(&open),
            Event::Close(close) => self.on_close(&close),
            Event::Data {
                event,
                direction,
                payload,
            } => self.on_data(&event, direction, payload, kernel),
            Event::ProcExit { tgid } => self.on_proc_exit(tgid),
        }
    }

    fn on_open(&mut self, open: &OpenEvent) {
        let id = open.hdr.conn;
        let key = conn_key(&id);
        if self.conns.contains_key(&key) {
            // The fd was reused without a close we saw (dup2, lost event).
            self.finish(key, open.hdr.timestamp_ns, None);
        }
        let conn = self.new_connection(&id, &open.ends, open.role, open.hdr.timestamp_ns);
        self.insert(key, id.generation, conn);
        self.counters.connections_opened += 1;
    }

    fn new_connection(
        &mut self,
        id: &ConnId,
        ends: &Endpoints,
        role: u32,
        now_ns: u64,
    ) -> Connection {
        let address = |addr: &[u8; 16]| {
            ip_from_kernel(ends.family, addr)
                .map(display_ip)
                .unwrap_or_default()
        };
        let meta = ConnMeta {
            upid: self.processes.upid(id.tgid),
            remote_addr: address(&ends.raddr),
            remote_port: i64::from(ends.rport),
            local_addr: address(&ends.laddr),
            local_port: i64::from(ends.lport),
            role: role_from_kernel(role),
            boot_to_epoch_ns: self.boot_to_epoch_ns,
        };
        Connection::new(meta, ends.family, now_ns, self.settings.limits)
    }

    fn insert(&mut self, key: u64, generation: u64, conn: Connection) {
        if self.conns.len() >= self.settings.max_connections {
            self.release_least_recent();
        }
        *self
            .conns_per_process
            .entry((key >> 32) as u32)
            .or_default() += 1;
        self.conns.insert(key, (generation, conn));
    }

    fn on_close(&mut self, close: &CloseEvent) {
        let key = conn_key(&close.hdr.conn);
        if self
            .conns
            .get(&key)
            .is_some_and(|(generation, _)| *generation == close.hdr.conn.generation)
        {
            self.finish(
                key,
                close.hdr.timestamp_ns,
                Some((close.bytes_sent, close.bytes_recv)),
            );
        }
    }

    fn on_data(
        &mut self,
        data: &DataEvent,
        direction: Direction,
        payload: &[u8],
        kernel: &dyn KernelConns,
    ) {
        self.counters.data_events += 1;
        self.counters.data_bytes_captured += payload.len() as u64;
        let id = data.hdr.conn;
        let key = conn_key(&id);
        match self.conns.get(&key) {
            Some((generation, _)) if *generation == id.generation => {}
            Some((generation, _)) if *generation > id.generation => return, // stale
            _ => {
                if !self.recover(key, &id, direction, data.position, kernel) {
                    return;
                }
            }
        }
        let Some((_, conn)) = self.conns.get_mut(&key) else {
            return;
        };
        let outcome = conn.on_data(
            direction,
            data.position,
            u64::from(data.size),
            payload,
            data.hdr.timestamp_ns,
        );
        if outcome == DataOutcome::Mute {
            tracing::debug!(
                tgid = id.tgid,
                fd = id.fd,
                "no known protocol: connection muted"
            );
            self.mutes.push((key, id.generation));
            self.counters.connections_muted += 1;
        }
    }

    /// Rebuilds a connection the tracker lost (opened before an event was dropped, or
    /// released while idle) from the kernel's map, joining its stream where it is now.
    fn recover(
        &mut self,
        key: u64,
        id: &ConnId,
        direction: Direction,
        position: u64,
        kernel: &dyn KernelConns,
    ) -> bool {
        let Some(info) = kernel.lookup(key).filter(|i| i.generation == id.generation) else {
            return false;
        };
        if self.conns.contains_key(&key) {
            self.finish(key, 0, None);
        }
        let mut conn = self.new_connection(id, &info.ends, info.role, 0);
        conn.resume_at(direction, position);
        self.insert(key, id.generation, conn);
        true
    }

    fn on_proc_exit(&mut self, tgid: u32) {
        self.processes.forget(tgid);
        if !self.conns_per_process.contains_key(&tgid) {
            return;
        }
        let keys: Vec<u64> = self
            .conns
            .keys()
            .copied()
            .filter(|k| (k >> 32) as u32 == tgid)
            .collect();
        for key in keys {
            self.finish(key, 0, None);
            self.forgets.push(key);
        }
    }

    /// Ends a connection: completes its parser, drains its records, counts it closed.
    fn finish(&mut self, key: u64, ts_ns: u64, final_bytes: Option<(u64, u64)>) {
        let Some((_, mut conn)) = self.conns.remove(&key) else {
            return;
        };
        let tgid = (key >> 32) as u32;
        if let Some(count) = self.conns_per_process.get_mut(&tgid) {
            *count -= 1;
            if *count == 0 {
                self.conns_per_process.remove(&tgid);
            }
        }
        let ts = if ts_ns == 0 {
            conn.last_active_ns
        } else {
            ts_ns
        };
        conn.on_close(ts);
        self.drain_one(&mut conn);
        let stats = conn.parser_stats();
        self.counters.parser_bytes_skipped += stats.bytes_skipped;
        self.counters.messages_unpaired += stats.messages_unpaired;
        let (sent, recv) = final_bytes.unwrap_or_else(|| conn.positions());
        self.conn_stats.closed(stats_key(&conn), sent, recv);
        self.counters.connections_closed += 1;
    }

    fn release_least_recent(&mut self) {
        let oldest = self
            .conns
            .iter()
            .min_by_key(|(_, (_, c))| c.last_active_ns)
            .map(|(k, _)| *k);
        if let Some(key) = oldest {
            self.finish(key, 0, None);
            self.counters.connections_released += 1;
        }
    }

    /// Moves every completed record into its table's row builder.
    pub(crate) fn drain_records(&mut self) {
        let mut conns = std::mem::take(&mut self.conns);
        for (_, conn) in conns.values_mut() {
            self.drain_one(conn);
        }
        self.conns = conns;
    }

    fn drain_one(&mut self, conn: &mut Connection) {
        conn.meta.boot_to_epoch_ns = self.boot_to_epoch_ns;
        let meta = conn.meta.clone();
        if let Some((entry, parser)) = conn.parser_mut()
            && let Some((_, rows)) = self.protocol_rows.get_mut(entry.name)
        {
            parser.drain(&meta, rows);
        }
    }

    /// Appends a `conn_stats` sample taken at `time_ns` (epoch), counters read from the kernel.
    pub(crate) fn sample_conn_stats(&mut self, kernel: &dyn KernelConns, time_ns: i64) {
        let live: Vec<LiveConn> = self
            .conns
            .iter()
            .map(|(key, (generation, conn))| {
                let (sent, recv) = kernel
                    .lookup(*key)
                    .filter(|info| info.generation == *generation)
                    .map_or_else(
                        || conn.positions(),
                        |info| (info.bytes_sent, info.bytes_recv),
                    );
                LiveConn {
                    key: stats_key(conn),
                    bytes_sent: sent,
                    bytes_recv: recv,
                }
            })
            .collect();
        self.conn_stats
            .sample(live, time_ns, &mut self.conn_stats_rows);
    }

    /// Releases parser state of connections idle for longer than the timeout.
    pub(crate) fn release_idle(&mut self, now_ns: u64) {
        let timeout = self.settings.idle_timeout_ns;
        for (_, conn) in self.conns.values_mut() {
            if now_ns.saturating_sub(conn.last_active_ns) > timeout && conn.buffered_bytes() > 0 {
                conn.release_buffers();
                self.counters.connections_released += 1;
            }
        }
    }

    /// Appends every table's finished rows to the store.
    pub(crate) fn flush(&mut self, store: &TableStore) {
        for (table, rows) in self.protocol_rows.values_mut() {
            if rows.rows() > 0 {
                append(store, table, rows.finish());
            }
        }
        if self.conn_stats_rows.rows() > 0 {
            append(store, conn_stats::TABLE, self.conn_stats_rows.finish());
        }
    }
}

fn append(store: &TableStore, table: &str, batch: RecordBatch) {
    let result = match store.table(table) {
        Some(t) => t.append(batch),
        None => return tracing::warn!(table, "rows for a table that does not exist were dropped"),
    };
    if let Err(error) = result {
        tracing::warn!(table, %error, "rows were dropped");
    }
}

fn stats_key(conn: &Connection) -> ConnStatsKey {
    ConnStatsKey {
        upid: conn.meta.upid,
        remote_addr: conn.meta.remote_addr.clone(),
        remote_port: conn.meta.remote_port,
        trace_role: conn.meta.role.trace_role(),
        addr_family: i64::from(conn.family),
        protocol: conn.traffic_protocol(),
    }
}

fn ip_from_kernel(family: u16, addr: &[u8; 16]) -> Option<IpAddr> {
    match family {
        AF_INET => Some(IpAddr::V4(Ipv4Addr::new(
            addr[0], addr[1], addr[2], addr[3],
        ))),
        AF_INET6 => Some(IpAddr::V6(Ipv6Addr::from(*addr))),
        _ => None,
    }
}

/// The address as users expect to read it: IPv4-mapped IPv6 shown as IPv4.
fn display_ip(ip: IpAddr) -> String {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => v6.to_string(),
        },
        IpAddr::V4(v4) => v4.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::collections::HashMap as StdHashMap;

    use px_ebpf::socket_trace::{DIR_EGRESS, DIR_INGRESS, EventHeader, ROLE_SERVER};
    use px_tablestore::BudgetConfig;

    use super::*;

    /// The kernel's connection map, as a test controls it.
    #[derive(Default)]
    struct FakeKernel(RefCell<StdHashMap<u64, ConnInfo>>);

    impl KernelConns for FakeKernel {
        fn lookup(&self, key: u64) -> Option<ConnInfo> {
            self.0.borrow().get(&key).copied()
        }
    }

    fn tracker(max_connections: usize) -> Tracker {
        let settings = TrackerSettings {
            asid: 7,
            limits: ParserLimits::default(),
            idle_timeout_ns: 1_000,
            max_connections,
        };
        Tracker::new(settings, Arc::new(ProcessTable::new()), 0)
    }

    fn id(fd: i32, generation: u64) -> ConnId {
        ConnId {
            generation,
            tgid: std::process::id(),
            fd,
        }
    }

    fn header(conn: ConnId, ts: u64) -> EventHeader {
        EventHeader {
            timestamp_ns: ts,
            conn,
            ..EventHeader::default()
        }
    }

    fn ends() -> Endpoints {
        let mut ends = Endpoints {
            family: AF_INET,
            rport: 40000,
            lport: 8080,
            ..Endpoints::default()
        };
        ends.raddr[..4].copy_from_slice(&[10, 0, 0, 2]);
        ends.laddr[..4].copy_from_slice(&[10, 0, 0, 1]);
        ends
    }

    fn open(t: &mut Tracker, conn: ConnId) {
        let event = OpenEvent {
            hdr: header(conn, 1),
            ends: ends(),
            role: ROLE_SERVER,
            pad: 0,
        };
        t.handle(Event::Open(event), &FakeKernel::default());
    }

    fn data(
        t: &mut Tracker,
        kernel: &FakeKernel,
        conn: ConnId,
        dir: u32,
        pos: u64,
        bytes: &[u8],
        ts: u64,
    ) {
        let event = DataEvent {
            hdr: header(conn, ts),
            position: pos,
            size: bytes.len() as u32,
            captured: bytes.len() as u32,
            direction: dir,
            pad: 0,
        };
        let direction = if dir == DIR_EGRESS {
            Direction::Egress
        } else {
            Direction::Ingress
        };
        t.handle(
            Event::Data {
                event,
                direction,
                payload: bytes,
            },
            kernel,
        );
    }

    fn close(t: &mut Tracker, conn: ConnId, sent: u64, recv: u64) {
        let event = CloseEvent {
            hdr: header(conn, 100),
            bytes_sent: sent,
            bytes_recv: recv,
        };
        t.handle(Event::Close(event), &FakeKernel::default());
    }

    fn store() -> TableStore {
        let store = TableStore::new(BudgetConfig::for_memory_limit(64 << 20)).unwrap();
        store
            .create_table(crate::protocols::http::http_events_schema())
            .unwrap();
        store.create_table(conn_stats::schema()).unwrap();
        store
    }

    fn rows(store: &TableStore, table: &str) -> usize {
        store.table(table).unwrap().stats().rows_added as usize
    }

    const REQUEST: &[u8] = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n";
    const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

    #[test]
    fn a_closed_connection_leaves_its_rows_and_counters() {
        let mut t = tracker(16);
        let kernel = FakeKernel::default();
        let c = id(5, 1);
        open(&mut t, c);
        data(&mut t, &kernel, c, DIR_INGRESS, 0, REQUEST, 10);
        data(&mut t, &kernel, c, DIR_EGRESS, 0, RESPONSE, 20);
        close(&mut t, c, RESPONSE.len() as u64, REQUEST.len() as u64);
        t.sample_conn_stats(&kernel, 1);
        let store = store();
        t.flush(&store);
        assert_eq!(rows(&store, "http_events"), 1);
        assert_eq!(rows(&store, "conn_stats"), 1);
        let counters = t.counters();
        assert_eq!(
            (counters.connections_opened, counters.connections_closed),
            (1, 1)
        );
        assert_eq!(counters.connections_tracked, 0);
    }

    #[test]
    fn a_reused_fd_starts_a_new_connection_and_stale_data_is_ignored() {
        let mut t = tracker(16);
        let kernel = FakeKernel::default();
        open(&mut t, id(5, 1));
        open(&mut t, id(5, 2));
        assert_eq!(t.counters().connections_closed, 1);
        // Bytes of the old generation arriving late must not reach the new parser.
        data(&mut t, &kernel, id(5, 1), DIR_INGRESS, 0, b"garbage", 5);
        data(&mut t, &kernel, id(5, 2), DIR_INGRESS, 0, REQUEST, 10);
        data(&mut t, &kernel, id(5, 2), DIR_EGRESS, 0, RESPONSE, 20);
        t.drain_records();
        let store = store();
        t.flush(&store);
        assert_eq!(rows(&store, "http_events"), 1);
        assert!(t.take_mutes().is_empty());
    }

    #[test]
    fn a_process_exit_ends_its_connections_and_clears_the_kernel_map() {
        let mut t = tracker(16);
        open(&mut t, id(5, 1));
        open(&mut t, id(6, 1));
        t.handle(
            Event::ProcExit {
                tgid: std::process::id(),
            },
            &FakeKernel::default(),
        );
        assert_eq!(t.counters().connections_tracked, 0);
        let mut forgotten = t.take_forgets();
        forgotten.sort_unstable();
        assert_eq!(forgotten, vec![conn_key(&id(5, 1)), conn_key(&id(6, 1))]);
    }

    #[test]
    fn connections_that_are_not_http_are_muted_once() {
        let mut t = tracker(16);
        let kernel = FakeKernel::default();
        open(&mut t, id(5, 1));
        data(
            &mut t,
            &kernel,
            id(5, 1),
            DIR_INGRESS,
            0,
            b"\x16\x03\x01\x00\x05hello",
            10,
        );
        data(&mut t, &kernel, id(5, 1), DIR_INGRESS, 10, b"more", 11);
        assert_eq!(t.take_mutes(), vec![(conn_key(&id(5, 1)), 1)]);
        assert_eq!(t.counters().connections_muted, 1);
    }

    #[test]
    fn a_connection_missed_at_open_is_recovered_from_the_kernel_map() {
        let mut t = tracker(16);
        let kernel = FakeKernel::default();
        let c = id(9, 3);
        // Unknown to the kernel with this generation: ignored.
        data(&mut t, &kernel, c, DIR_INGRESS, 100, REQUEST, 10);
        assert_eq!(t.counters().connections_tracked, 0);
        kernel.0.borrow_mut().insert(
            conn_key(&c),
            ConnInfo {
                generation: 3,
                ends: ends(),
                role: ROLE_SERVER,
                ..ConnInfo::default()
            },
        );
        data(&mut t, &kernel, c, DIR_INGRESS, 200, REQUEST, 10);
        data(&mut t, &kernel, c, DIR_EGRESS, 50, RESPONSE, 20);
        t.drain_records();
        let store = store();
        t.flush(&store);
        assert_eq!(t.counters().connections_tracked, 1);
        assert_eq!(rows(&store, "http_events"), 1);
    }

    #[test]
    fn the_connection_limit_releases_the_least_recently_active() {
        let mut t = tracker(2);
        for fd in 0..3 {
            open(&mut t, id(fd, 1));
        }
        let counters = t.counters();
        assert_eq!(counters.connections_tracked, 2);
        assert_eq!(counters.connections_released, 1);
    }

    #[test]
    fn idle_connections_give_back_their_buffers() {
        let mut t = tracker(16);
        let kernel = FakeKernel::default();
        open(&mut t, id(5, 1));
        // Half a request: the parser holds it, waiting for the rest.
        data(
            &mut t,
            &kernel,
            id(5, 1),
            DIR_INGRESS,
            0,
            b"GET /slow HTTP/1.1\r\nHost",
            10,
        );
        assert!(t.counters().parser_bytes > 0);
        t.release_idle(10 + 500);
        assert!(t.counters().parser_bytes > 0, "not idle yet");
        t.release_idle(10 + 5_000);
        assert_eq!(t.counters().parser_bytes, 0);
        assert_eq!(
            t.counters().connections_tracked,
            1,
            "still open, only its buffers go"
        );
    }

    #[test]
    fn kernel_addresses_read_naturally() {
        let mut v4 = [0u8; 16];
        v4[..4].copy_from_slice(&[10, 1, 2, 3]);
        assert_eq!(
            ip_from_kernel(AF_INET, &v4).map(display_ip).unwrap(),
            "10.1.2.3"
        );
        let mapped = "::ffff:127.0.0.1".parse::<Ipv6Addr>().unwrap().octets();
        assert_eq!(
            ip_from_kernel(AF_INET6, &mapped).map(display_ip).unwrap(),
            "127.0.0.1"
        );
        let v6 = "fd00::1".parse::<Ipv6Addr>().unwrap().octets();
        assert_eq!(
            ip_from_kernel(AF_INET6, &v6).map(display_ip).unwrap(),
            "fd00::1"
        );
        assert!(ip_from_kernel(1, &v6).is_none());
    }
}
