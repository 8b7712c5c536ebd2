//! Application protocols the socket tracer understands.
//!
//! Each protocol is one module with a pure parser behind [`ProtocolParser`] (bytes in,
//! records out, no I/O, no clock) and one entry in [`REGISTRY`]: inference from the
//! first bytes of a connection, a constructor, and the table its records go to.
//! Adding a protocol (DNS, PostgreSQL, MySQL, Redis, HTTP/2) means adding a module
//! and a registry entry; the tracker does not change.

pub(crate) mod http;

use px_tablestore::{RowBuilder, TableSchema};

/// Which way bytes crossed the socket, seen from the traced process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Direction {
    /// The traced process wrote them.
    Egress,
    /// The traced process read them.
    Ingress,
}

/// Which end of the connection the traced process is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    /// It called `connect()`: it sends requests and receives responses.
    Client,
    /// It called `accept()`: it receives requests and sends responses.
    Server,
}

impl Role {
    /// Pixie's `trace_role` value: 1 = client, 2 = server.
    pub(crate) fn trace_role(self) -> i64 {
        match self {
            Role::Client => 1,
            Role::Server => 2,
        }
    }

    /// The direction in which requests travel for this role.
    pub(crate) fn request_direction(self) -> Direction {
        match self {
            Role::Client => Direction::Egress,
            Role::Server => Direction::Ingress,
        }
    }
}

/// What the tracker knows about a connection, for the columns every protocol table has.
#[derive(Clone, Debug)]
pub(crate) struct ConnMeta {
    /// Pixie's 128-bit UPID (ASID, PID, process start time).
    pub(crate) upid: u128,
    /// Remote address as text (`10.0.0.1`, `::1`), empty when unknown.
    pub(crate) remote_addr: String,
    /// Remote port, -1 when unknown.
    pub(crate) remote_port: i64,
    /// Local address as text, empty when unknown.
    pub(crate) local_addr: String,
    /// Local port, -1 when unknown.
    pub(crate) local_port: i64,
    /// The traced process's end of the connection.
    pub(crate) role: Role,
    /// Converts a kernel monotonic timestamp to nanoseconds since the Unix epoch.
    pub(crate) boot_to_epoch_ns: i64,
}

/// Limits every parser honours, so memory per connection stays bounded.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ParserLimits {
    /// Body bytes kept per message (the true size is still recorded).
    pub(crate) max_body_bytes: usize,
    /// Largest header block accepted before the stream is treated as not this protocol.
    pub(crate) max_header_bytes: usize,
    /// Parsed messages waiting for their peer message, per connection; older ones are dropped.
    pub(crate) max_pending_messages: usize,
    /// Record credentials (HTTP `Authorization`, `Cookie`, ...) as `[REDACTED]`: that the
    /// header was there, not what it held. On unless the user opts out.
    pub(crate) redact_credentials: bool,
}

impl Default for ParserLimits {
    fn default() -> Self {
        Self {
            max_body_bytes: 512,
            max_header_bytes: 8192,
            max_pending_messages: 1024,
            redact_credentials: true,
        }
    }
}

/// Counters a parser keeps about what it could not use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct ParserStats {
    /// Bytes skipped because they did not parse (the parser resynchronised after them).
    pub(crate) bytes_skipped: u64,
    /// Messages that never found their peer (dropped over the pending limit or at close).
    pub(crate) messages_unpaired: u64,
}

/// One connection's parser for one protocol: both directions, stitched into records.
///
/// Callers feed each direction's bytes in stream order. Implementations never panic on
/// any input and hold at most a bounded amount of memory (see [`ParserLimits`]).
pub(crate) trait ProtocolParser: Send {
    /// The next bytes of one direction's stream; `ts_ns` is when the syscall that moved them ran.
    fn on_data(&mut self, dir: Direction, data: &[u8], ts_ns: u64);
    /// `len` bytes of one direction's stream were not captured (truncated or lost).
    fn on_gap(&mut self, dir: Direction, len: u64);
    /// The connection closed at `ts_ns`: messages delimited by the close are complete.
    fn on_close(&mut self, ts_ns: u64);
    /// Appends every completed record to `rows` (one row each, columns in schema order).
    fn drain(&mut self, conn: &ConnMeta, rows: &mut RowBuilder);
    /// Heap bytes currently held by this parser.
    fn buffered_bytes(&self) -> usize;
    /// What this parser has had to skip or drop so far.
    fn stats(&self) -> ParserStats;
}

/// What inference concluded from a connection's first bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Inference {
    /// The bytes belong to this protocol.
    Match,
    /// They do not.
    NoMatch,
    /// Too few bytes to tell yet.
    NeedMore,
}

/// One protocol the tracer can parse.
pub(crate) struct ProtocolEntry {
    /// Short name used in logs.
    pub(crate) name: &'static str,
    /// Pixie's `traffic_protocol_t` value (the `conn_stats.protocol` column).
    pub(crate) traffic_protocol: i64,
    /// Decides from the first bytes seen in one direction.
    pub(crate) infer: fn(dir: Direction, role: Role, first_bytes: &[u8]) -> Inference,
    /// A parser for one connection.
    pub(crate) new_parser: fn(role: Role, limits: ParserLimits) -> Box<dyn ProtocolParser>,
    /// The table its records go to.
    pub(crate) table: fn() -> TableSchema,
}

/// Every protocol, in the order inference tries them.
pub(crate) static REGISTRY: &[ProtocolEntry] = &[http::ENTRY];
