//! One traced connection: its identity, the position reached in each direction's
//! stream, and the protocol parser once the protocol is known.

use crate::protocols::{
    ConnMeta, Direction, Inference, ParserLimits, ParserStats, ProtocolEntry, ProtocolParser,
    REGISTRY, Role,
};

/// Bytes kept per direction while the protocol is still unknown.
const MAX_INFERENCE_BYTES: usize = 1024;

enum ProtocolState {
    /// Waiting for enough bytes to tell the protocol; what arrived so far, per direction.
    Inferring([Vec<u8>; 2]),
    /// Parsing with the protocol found.
    Parsing {
        entry: &'static ProtocolEntry,
        parser: Box<dyn ProtocolParser>,
    },
    /// No protocol the PEM parses: bytes are counted, not parsed.
    Untraced,
}

/// What the tracker must do after a connection saw data.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum DataOutcome {
    /// Nothing more.
    Continue,
    /// No parser wants this connection: ask the kernel to stop copying its payload.
    Mute,
}

pub(crate) struct Connection {
    pub(crate) meta: ConnMeta,
    pub(crate) family: u16,
    /// Stream offset reached, per direction (index: [`dir_index`]).
    next_pos: [u64; 2],
    pub(crate) last_active_ns: u64,
    protocol: ProtocolState,
    limits: ParserLimits,
}

fn dir_index(dir: Direction) -> usize {
    match dir {
        Direction::Egress => 0,
        Direction::Ingress => 1,
    }
}

impl Connection {
    pub(crate) fn new(meta: ConnMeta, family: u16, now_ns: u64, limits: ParserLimits) -> Self {
        Self {
            meta,
            family,
            next_pos: [0; 2],
            last_active_ns: now_ns,
            protocol: ProtocolState::Inferring([Vec::new(), Vec::new()]),
            limits,
        }
    }

    /// Starts mid-stream (the connection was opened before tracking of it began).
    pub(crate) fn resume_at(&mut self, dir: Direction, position: u64) {
        self.next_pos[dir_index(dir)] = position;
    }

    /// Bytes sent and received as far as the data events tell.
    pub(crate) fn positions(&self) -> (u64, u64) {
        (self.next_pos[0], self.next_pos[1])
    }

    /// Pixie's `traffic_protocol_t` of this connection (0 while unknown).
    pub(crate) fn traffic_protocol(&self) -> i64 {
        match &self.protocol {
            ProtocolState::Parsing { entry, .. } => entry.traffic_protocol,
            _ => 0,
        }
    }

    /// One data event: `size` bytes at stream `position`, of which `payload` was captured.
    pub(crate) fn on_data(
        &mut self,
        dir: Direction,
        position: u64,
        size: u64,
        payload: &[u8],
        ts_ns: u64,
    ) -> DataOutcome {
        self.last_active_ns = ts_ns;
        let index = dir_index(dir);
        let expected = self.next_pos[index];
        let end = position.saturating_add(size);
        if end <= expected {
            return DataOutcome::Continue; // already seen
        }
        // Bytes before `expected` were already delivered; bytes after `position` not in
        // the stream yet are a gap.
        let overlap = usize::try_from(expected.saturating_sub(position)).unwrap_or(usize::MAX);
        let data = payload.get(overlap..).unwrap_or(&[]);
        let gap_before = position.saturating_sub(expected);
        let delivered_end = position.max(expected) + data.len() as u64;
        let gap_after = end - delivered_end.min(end);
        self.next_pos[index] = end;

        match &mut self.protocol {
            ProtocolState::Untraced => DataOutcome::Continue,
            ProtocolState::Parsing { parser, .. } => {
                if gap_before > 0 {
                    parser.on_gap(dir, gap_before);
                }
                parser.on_data(dir, data, ts_ns);
                if gap_after > 0 {
                    parser.on_gap(dir, gap_after);
                }
                DataOutcome::Continue
            }
            ProtocolState::Inferring(_) => self.infer(dir, data, ts_ns, gap_after),
        }
    }

    /// Tries every protocol on what this direction has carried so far. A gap before the
    /// first bytes means tracking joined mid-stream: inference looks at what follows it.
    fn infer(&mut self, dir: Direction, data: &[u8], ts_ns: u64, gap_after: u64) -> DataOutcome {
        let ProtocolState::Inferring(seen) = &mut self.protocol else {
            return DataOutcome::Continue;
        };
        let index = dir_index(dir);
        let mut candidate = std::mem::take(&mut seen[index]);
        candidate.extend_from_slice(data);
        let mut undecided = false;
        for entry in REGISTRY {
            match (entry.infer)(dir, self.meta.role, &candidate) {
                Inference::Match => {
                    let mut parser = (entry.new_parser)(self.meta.role, self.limits);
                    // Replay what arrived while inferring, requests first.
                    let request_dir = self.meta.role.request_direction();
                    for d in [request_dir, opposite(request_dir)] {
                        let bytes = if d == dir {
                            &candidate
                        } else {
                            &seen[dir_index(d)]
                        };
                        if !bytes.is_empty() {
                            parser.on_data(d, bytes, ts_ns);
                        }
                    }
                    if gap_after > 0 {
                        parser.on_gap(dir, gap_after);
                    }
                    self.protocol = ProtocolState::Parsing { entry, parser };
                    return DataOutcome::Continue;
                }
                Inference::NeedMore => undecided = true,
                Inference::NoMatch => {}
            }
        }
        if undecided && candidate.len() < MAX_INFERENCE_BYTES && gap_after == 0 {
            seen[index] = candidate;
            return DataOutcome::Continue;
        }
        self.protocol = ProtocolState::Untraced;
        DataOutcome::Mute
    }

    /// The connection closed at `ts_ns`.
    pub(crate) fn on_close(&mut self, ts_ns: u64) {
        if let ProtocolState::Parsing { parser, .. } = &mut self.protocol {
            parser.on_close(ts_ns);
        }
    }

    /// The protocol table's name and the parser, when parsing.
    pub(crate) fn parser_mut(
        &mut self,
    ) -> Option<(&'static ProtocolEntry, &mut dyn ProtocolParser)> {
        match &mut self.protocol {
            ProtocolState::Parsing { entry, parser } => Some((*entry, parser.as_mut())),
            _ => None,
        }
    }

    /// Drops parser buffers of an idle connection; parsing resumes from the next message.
    pub(crate) fn release_buffers(&mut self) {
        match &mut self.protocol {
            ProtocolState::Parsing { entry, parser } => {
                *parser = (entry.new_parser)(self.meta.role, self.limits);
            }
            ProtocolState::Inferring(seen) => {
                seen[0] = Vec::new();
                seen[1] = Vec::new();
            }
            ProtocolState::Untraced => {}
        }
    }

    /// Heap bytes held for this connection.
    pub(crate) fn buffered_bytes(&self) -> usize {
        match &self.protocol {
            ProtocolState::Inferring(seen) => seen[0].capacity() + seen[1].capacity(),
            ProtocolState::Parsing { parser, .. } => parser.buffered_bytes(),
            ProtocolState::Untraced => 0,
        }
    }

    /// What the parser had to skip or drop.
    pub(crate) fn parser_stats(&self) -> ParserStats {
        match &self.protocol {
            ProtocolState::Parsing { parser, .. } => parser.stats(),
            _ => ParserStats::default(),
        }
    }
}

fn opposite(dir: Direction) -> Direction {
    match dir {
        Direction::Egress => Direction::Ingress,
        Direction::Ingress => Direction::Egress,
    }
}

/// The role a kernel role value stands for.
pub(crate) fn role_from_kernel(role: u32) -> Role {
    if role == px_ebpf::socket_trace::ROLE_SERVER {
        Role::Server
    } else {
        Role::Client
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use px_tablestore::RowBuilder;

    use super::*;

    fn server() -> Connection {
        let meta = ConnMeta {
            upid: 1,
            remote_addr: "127.0.0.1".into(),
            remote_port: 5000,
            local_addr: String::new(),
            local_port: -1,
            role: Role::Server,
            boot_to_epoch_ns: 0,
        };
        Connection::new(meta, 2, 0, ParserLimits::default())
    }

    fn rows(conn: &mut Connection) -> usize {
        let meta = conn.meta.clone();
        let (entry, parser) = conn.parser_mut().unwrap();
        let mut rows = RowBuilder::new(&(entry.table)());
        parser.drain(&meta, &mut rows);
        rows.finish().num_rows()
    }

    /// A server reading a 10 MiB upload in large reads of which 8 KiB each is captured.
    #[test]
    fn large_bodies_with_truncated_reads_still_pair() {
        let mut conn = server();
        let body = 10 << 20;
        let head = format!("POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: {body}\r\n\r\n");
        let mut first = head.clone().into_bytes();
        first.resize(8192, b'u');
        let mut pos = 0u64;
        let total = head.len() as u64 + body;
        let mut ts = 1;
        assert_eq!(
            conn.on_data(Direction::Ingress, 0, 8192, &first, ts),
            DataOutcome::Continue
        );
        pos += 8192;
        while pos < total {
            let size = (total - pos).min(300_000);
            ts += 1;
            conn.on_data(
                Direction::Ingress,
                pos,
                size,
                &vec![b'u'; 8192.min(size as usize)],
                ts,
            );
            pos += size;
        }
        let response = b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok";
        conn.on_data(
            Direction::Egress,
            0,
            response.len() as u64,
            response,
            ts + 1,
        );
        assert_eq!(rows(&mut conn), 1);

        let get = b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n";
        conn.on_data(Direction::Ingress, pos, get.len() as u64, get, ts + 2);
        let mut big = format!("HTTP/1.1 200 OK\r\nContent-Length: {body}\r\n\r\n").into_bytes();
        let resp_total = big.len() as u64 + body;
        big.resize(8192, b'b');
        conn.on_data(
            Direction::Egress,
            response.len() as u64,
            resp_total,
            &big,
            ts + 3,
        );
        assert_eq!(rows(&mut conn), 1);
    }

    #[test]
    fn a_request_split_before_inference_can_decide_is_kept_whole() {
        let mut conn = server();
        assert_eq!(
            conn.on_data(Direction::Ingress, 0, 2, b"GE", 1),
            DataOutcome::Continue
        );
        let rest = b"T /x HTTP/1.1\r\nHost: x\r\n\r\n";
        conn.on_data(Direction::Ingress, 2, rest.len() as u64, rest, 2);
        let response = b"HTTP/1.1 204 No Content\r\n\r\n";
        conn.on_data(Direction::Egress, 0, response.len() as u64, response, 3);
        assert_eq!(rows(&mut conn), 1);
        assert_eq!(conn.traffic_protocol(), 1);
    }

    #[test]
    fn other_protocols_are_muted() {
        let mut conn = server();
        let tls = b"\x16\x03\x01\x02\x00\x01\x00";
        assert_eq!(
            conn.on_data(Direction::Ingress, 0, tls.len() as u64, tls, 1),
            DataOutcome::Mute
        );
        assert_eq!(conn.buffered_bytes(), 0);
    }
}
