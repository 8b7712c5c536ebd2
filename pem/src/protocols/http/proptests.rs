//! Property tests: any input keeps the parsers within their memory bounds without
//! panicking, splitting never changes what is parsed, and valid traffic is paired with
//! the right fields however its bytes are split.

use proptest::prelude::*;
use px_tablestore::RowBuilder;

use super::parser::MethodClass;
use super::{HttpConnection, HttpMessage, MessageKind, MessageParser, http_events_schema};
use crate::protocols::{ConnMeta, Direction, ParserLimits, ProtocolParser, Role};

/// Pieces of HTTP that steer random input into the parser's deeper states.
const FRAGMENTS: &[&[u8]] = &[
    b"GET / HTTP/1.1\r\n",
    b"HEAD /h HTTP/1.0\r\n",
    b"POST /p HTTP/1.1\r\n",
    b"CONNECT host:443 HTTP/1.1\r\n",
    b"HTTP/1.1 200 OK\r\n",
    b"HTTP/1.0 404 Not Found\r\n",
    b"HTTP/1.1 100 Continue\r\n\r\n",
    b"HTTP/1.1 101 Switching Protocols\r\n",
    b"HTTP/1.1 204 No Content\r\n",
    b"Content-Length: 5\r\n",
    b"Content-Length: 18446744073709551615\r\n",
    b"Transfer-Encoding: chunked\r\n",
    b"Transfer-Encoding: gzip\r\n",
    b"X-Header: value\r\n",
    b"\r\n",
    b"\n",
    b"5\r\nhello\r\n",
    b"5;ext=1\r\n",
    b"fffffffffffffff\r\n",
    b"0\r\n\r\n",
    b"0\r\nTrailer: x\r\n\r\n",
];

/// Random bytes or a fragment.
fn chunk() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..48),
        prop::sample::select(FRAGMENTS).prop_map(<[u8]>::to_vec),
    ]
}

/// A few chunks glued together.
fn bytes() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(chunk(), 1..5).prop_map(|parts| parts.concat())
}

/// One thing that can happen to a connection.
#[derive(Clone, Debug)]
enum Op {
    Data(Direction, Vec<u8>),
    Gap(Direction, u64),
    Drain,
    Close,
}

fn direction() -> impl Strategy<Value = Direction> {
    prop_oneof![Just(Direction::Egress), Just(Direction::Ingress)]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (direction(), bytes()).prop_map(|(d, b)| Op::Data(d, b)),
        2 => (direction(), prop_oneof![0u64..16, 0u64..1_000_000]).prop_map(|(d, n)| Op::Gap(d, n)),
        1 => Just(Op::Drain),
        1 => Just(Op::Close),
    ]
}

/// Small limits, so every limit is reached.
fn limits() -> impl Strategy<Value = ParserLimits> {
    (0usize..100, 0usize..300, 0usize..5).prop_map(|(body, header, pending)| ParserLimits {
        max_body_bytes: body,
        max_header_bytes: header,
        max_pending_messages: pending,
        redact_credentials: true,
    })
}

fn role() -> impl Strategy<Value = Role> {
    prop_oneof![Just(Role::Client), Just(Role::Server)]
}

fn kind() -> impl Strategy<Value = MessageKind> {
    prop_oneof![Just(MessageKind::Request), Just(MessageKind::Response)]
}

fn meta(role: Role) -> ConnMeta {
    ConnMeta {
        upid: 7,
        remote_addr: "127.0.0.1".into(),
        remote_port: 80,
        local_addr: "127.0.0.1".into(),
        local_port: 40000,
        role,
        boot_to_epoch_ns: 0,
    }
}

/// Feeds `input` to a fresh parser in pieces of the given sizes (cycled); returns the
/// messages (timestamps cleared) and the skipped-byte count.
fn parse_split(
    kind: MessageKind,
    limits: ParserLimits,
    input: &[u8],
    sizes: &[usize],
) -> (Vec<HttpMessage>, u64) {
    let mut p = MessageParser::new(kind, limits);
    let mut out = Vec::new();
    let mut rest = input;
    let mut sizes = sizes.iter().cycle();
    while !rest.is_empty() {
        let n = sizes
            .next()
            .copied()
            .unwrap_or(rest.len())
            .clamp(1, rest.len());
        let (piece, tail) = rest.split_at(n);
        p.on_data(piece, 0, &mut out);
        rest = tail;
    }
    p.on_close(&mut out);
    (out, p.bytes_skipped())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn connection_stays_bounded(
        limits in limits(),
        role in role(),
        ops in prop::collection::vec(op(), 0..40),
    ) {
        let mut conn = HttpConnection::new(role, limits);
        let bound = HttpConnection::memory_bound(&limits);
        let schema = http_events_schema();
        let mut rows = RowBuilder::new(&schema);
        let meta = meta(role);
        for (ts, op) in ops.into_iter().enumerate() {
            match op {
                Op::Data(dir, bytes) => conn.on_data(dir, &bytes, ts as u64),
                Op::Gap(dir, len) => conn.on_gap(dir, len),
                Op::Drain => conn.drain(&meta, &mut rows),
                Op::Close => conn.on_close(ts as u64),
            }
            prop_assert!(conn.buffered_bytes() <= bound);
        }
        conn.on_close(u64::MAX);
        conn.drain(&meta, &mut rows);
        let batch = rows.finish();
        prop_assert_eq!(batch.num_columns(), schema.columns.len());
    }

    #[test]
    fn parser_stays_bounded(
        kind in kind(),
        limits in limits(),
        feeds in prop::collection::vec((bytes(), prop::option::of(0u64..5000)), 0..30),
        methods in prop::collection::vec(0u8..3, 0..8),
    ) {
        let mut p = MessageParser::new(kind, limits);
        for m in methods {
            p.push_request_method(match m {
                0 => MethodClass::Head,
                1 => MethodClass::Connect,
                _ => MethodClass::Other,
            });
        }
        let bound = MessageParser::memory_bound(&limits);
        let mut out = Vec::new();
        for (ts, (data, gap)) in feeds.into_iter().enumerate() {
            p.on_data(&data, ts as u64, &mut out);
            prop_assert!(p.buffered_bytes() <= bound);
            prop_assert!(p.invariants_hold());
            if let Some(len) = gap {
                p.on_gap(len, &mut out);
                prop_assert!(p.buffered_bytes() <= bound);
                prop_assert!(p.invariants_hold());
            }
            // Messages handed out respect the limits too.
            prop_assert!(out.iter().all(|m| m.body.len() <= limits.max_body_bytes));
            prop_assert!(out.iter().all(|m| m.heap_bytes() <= HttpMessage::heap_bound(&limits)));
            out.clear();
        }
        p.on_close(&mut out);
        prop_assert_eq!(p.buffered_bytes(), 0);
    }

    #[test]
    fn splitting_never_changes_the_result(
        kind in kind(),
        input in prop::collection::vec(chunk(), 0..12).prop_map(|p| p.concat()),
        sizes in prop::collection::vec(1usize..20, 1..8),
        header in 16usize..200,
    ) {
        let limits = ParserLimits {
            max_body_bytes: 16,
            max_header_bytes: header,
            max_pending_messages: 4,
            redact_credentials: true,
        };
        let whole = parse_split(kind, limits, &input, &[usize::MAX]);
        prop_assert_eq!(&parse_split(kind, limits, &input, &sizes), &whole);
        prop_assert_eq!(&parse_split(kind, limits, &input, &[1]), &whole);
    }
}

/// One request/response exchange of a generated conversation.
#[derive(Clone, Debug)]
struct Exchange {
    method: &'static str,
    path: String,
    req_body: Vec<u8>,
    req_chunked: bool,
    interim: bool,
    status: u16,
    resp_body: Vec<u8>,
    resp_chunked: bool,
    header: (String, String),
}

impl Exchange {
    /// Whether the response carries a body.
    fn resp_has_body(&self) -> bool {
        self.method != "HEAD" && !matches!(self.status, 204 | 304)
    }

    fn request_bytes(&self) -> Vec<u8> {
        let mut out = format!("{} {} HTTP/1.1\r\nHost: test\r\n", self.method, self.path);
        out.push_str(&format!("{}: {}\r\n", self.header.0, self.header.1));
        let mut bytes = if self.req_chunked {
            out.push_str("Transfer-Encoding: chunked\r\n\r\n");
            let mut bytes = out.into_bytes();
            push_chunked(&mut bytes, &self.req_body);
            bytes
        } else {
            if !self.req_body.is_empty() {
                out.push_str(&format!("Content-Length: {}\r\n", self.req_body.len()));
            }
            out.push_str("\r\n");
            let mut bytes = out.into_bytes();
            bytes.extend_from_slice(&self.req_body);
            bytes
        };
        bytes.shrink_to_fit();
        bytes
    }

    /// The response; `until_close` leaves its body delimited by the connection's end.
    fn response_bytes(&self, until_close: bool) -> Vec<u8> {
        let mut out = String::new();
        if self.interim {
            out.push_str("HTTP/1.1 100 Continue\r\n\r\n");
        }
        out.push_str(&format!(
            "HTTP/1.1 {} Reason {}\r\n",
            self.status, self.status
        ));
        out.push_str(&format!("{}: {}\r\n", self.header.0, self.header.1));
        if !self.resp_has_body() {
            // HEAD, 204 and 304 may announce a length they do not send.
            out.push_str(&format!("Content-Length: {}\r\n\r\n", self.resp_body.len()));
            return out.into_bytes();
        }
        if until_close {
            out.push_str("\r\n");
            let mut bytes = out.into_bytes();
            bytes.extend_from_slice(&self.resp_body);
            return bytes;
        }
        if self.resp_chunked {
            out.push_str("Transfer-Encoding: chunked\r\n\r\n");
            let mut bytes = out.into_bytes();
            push_chunked(&mut bytes, &self.resp_body);
            return bytes;
        }
        out.push_str(&format!("Content-Length: {}\r\n\r\n", self.resp_body.len()));
        let mut bytes = out.into_bytes();
        bytes.extend_from_slice(&self.resp_body);
        bytes
    }
}

/// Chunked encoding with chunks of varying size, an extension and a trailer.
fn push_chunked(out: &mut Vec<u8>, body: &[u8]) {
    let mut rest = body;
    let mut size = 1;
    while !rest.is_empty() {
        let (chunk, tail) = rest.split_at(size.min(rest.len()));
        out.extend_from_slice(format!("{:x};n={size}\r\n", chunk.len()).as_bytes());
        out.extend_from_slice(chunk);
        out.extend_from_slice(b"\r\n");
        rest = tail;
        size = size * 3 % 17 + 1;
    }
    out.extend_from_slice(b"0\r\nX-Checksum: 0\r\n\r\n");
}

fn exchange() -> impl Strategy<Value = Exchange> {
    let method = prop::sample::select(&["GET", "POST", "PUT", "DELETE", "HEAD", "PATCH"][..]);
    let status = prop::sample::select(&[200u16, 201, 204, 304, 404, 500][..]);
    (
        (
            method,
            "/[a-z0-9/._-]{0,16}",
            prop::collection::vec(any::<u8>(), 0..80),
            any::<bool>(),
        ),
        (
            any::<bool>(),
            status,
            prop::collection::vec(any::<u8>(), 0..80),
            any::<bool>(),
        ),
        ("X-[A-Za-z]{1,8}", "[ -~]{0,20}"),
    )
        .prop_map(
            |(
                (method, path, req_body, req_chunked),
                (interim, status, resp_body, resp_chunked),
                header,
            )| {
                let sends_body = matches!(method, "POST" | "PUT" | "PATCH");
                Exchange {
                    method,
                    path,
                    req_body: if sends_body { req_body } else { Vec::new() },
                    req_chunked: sends_body && req_chunked,
                    interim,
                    status,
                    resp_body,
                    resp_chunked,
                    header: (header.0, header.1.trim().to_owned()),
                }
            },
        )
}

/// Splits `bytes` into pieces of the given sizes (cycled).
fn pieces<'a>(bytes: &'a [u8], sizes: &'a [usize]) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    let mut rest = bytes;
    let mut sizes = sizes.iter().cycle();
    while !rest.is_empty() {
        let n = sizes
            .next()
            .copied()
            .unwrap_or(rest.len())
            .clamp(1, rest.len());
        let (piece, tail) = rest.split_at(n);
        out.push(piece);
        rest = tail;
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn valid_traffic_pairs_correctly(
        exchanges in prop::collection::vec(exchange(), 1..10),
        sizes in prop::collection::vec(1usize..64, 1..6),
        pipelined in any::<bool>(),
        until_close in any::<bool>(),
        role in role(),
        max_body in 0usize..100,
    ) {
        let limits = ParserLimits {
            max_body_bytes: max_body,
            max_header_bytes: 1024,
            max_pending_messages: 16,
            redact_credentials: true,
        };
        let req_dir = role.request_direction();
        let resp_dir = match req_dir {
            Direction::Egress => Direction::Ingress,
            Direction::Ingress => Direction::Egress,
        };
        let last = exchanges.len() - 1;
        let requests: Vec<_> = exchanges.iter().map(Exchange::request_bytes).collect();
        let responses: Vec<_> = exchanges
            .iter()
            .enumerate()
            .map(|(i, e)| e.response_bytes(until_close && i == last))
            .collect();
        // Pipelined: every request before any response; otherwise one exchange at a time.
        let mut feeds: Vec<(Direction, &[u8])> = Vec::new();
        if pipelined {
            feeds.extend(requests.iter().flat_map(|r| pieces(r, &sizes)).map(|p| (req_dir, p)));
            feeds.extend(responses.iter().flat_map(|r| pieces(r, &sizes)).map(|p| (resp_dir, p)));
        } else {
            for (req, resp) in requests.iter().zip(&responses) {
                feeds.extend(pieces(req, &sizes).into_iter().map(|p| (req_dir, p)));
                feeds.extend(pieces(resp, &sizes).into_iter().map(|p| (resp_dir, p)));
            }
        }
        let mut conn = HttpConnection::new(role, limits);
        for (ts, (dir, piece)) in feeds.into_iter().enumerate() {
            conn.on_data(dir, piece, ts as u64 + 1);
        }
        conn.on_close(u64::MAX);
        let rows = conn.take_rows(0);
        prop_assert_eq!(conn.stats(), Default::default());
        prop_assert_eq!(rows.len(), exchanges.len());
        let truncated = |b: &[u8]| String::from_utf8_lossy(&b[..b.len().min(max_body)]).into_owned();
        for (row, e) in rows.iter().zip(&exchanges) {
            prop_assert_eq!(&row.req_method, e.method);
            prop_assert_eq!(&row.req_path, &e.path);
            prop_assert_eq!(&row.req_body, &truncated(&e.req_body));
            prop_assert_eq!(row.req_body_size, e.req_body.len() as i64);
            prop_assert_eq!(row.resp_status, i64::from(e.status));
            prop_assert_eq!(&row.resp_message, &format!("Reason {}", e.status));
            let resp_body: &[u8] = if e.resp_has_body() { &e.resp_body } else { b"" };
            prop_assert_eq!(&row.resp_body, &truncated(resp_body));
            prop_assert_eq!(row.resp_body_size, resp_body.len() as i64);
            prop_assert!(row.latency_ns >= 0);
            let header = format!("\"{}\":\"{}\"", e.header.0, e.header.1.replace('\\', "\\\\").replace('"', "\\\""));
            prop_assert!(row.req_headers.contains(&header), "{} lacks {}", row.req_headers, header);
            prop_assert!(row.resp_headers.contains(&header));
        }
        prop_assert_eq!(conn.buffered_bytes(), 0);
    }
}

proptest! {
    #[test]
    fn fuzz_entry_point_never_panics(
        data in prop::collection::vec(
            prop_oneof![any::<u8>().prop_map(|b| vec![b]), chunk()],
            0..60,
        ).prop_map(|p| p.concat()),
    ) {
        super::fuzz_one_input(&data);
    }
}

/// What the header JSON must say, written the slow, obvious way: each name at its first
/// appearance, with the values of every header of that name (ASCII case ignored).
fn headers_json_reference(headers: &[(String, Vec<u8>)]) -> String {
    let mut fields: Vec<(String, Vec<String>)> = Vec::new();
    for (name, value) in headers {
        let value = String::from_utf8(value.clone()).unwrap_or_default();
        match fields
            .iter_mut()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
        {
            Some((_, values)) => values.push(value),
            None => fields.push((name.clone(), vec![value])),
        }
    }
    let fields: Vec<String> = fields
        .iter()
        .map(|(name, values)| format!("\"{name}\":\"{}\"", values.join(", ")))
        .collect();
    format!("{{{}}}", fields.join(","))
}

proptest! {
    #[test]
    fn repeated_header_names_are_merged_whatever_their_case(
        // Few names, in random case, so repeats and fingerprint collisions are common.
        headers in prop::collection::vec(
            (
                prop::sample::select(vec!["a", "b", "ab", "ba", "accept", "Accept-Encoding", "x-y", "X@y"]),
                any::<u8>(),
                "[a-z0-9]{0,6}",
            ),
            0..24,
        ),
    ) {
        let headers: Vec<(String, Vec<u8>)> = headers
            .into_iter()
            .map(|(name, case, value)| {
                let name: String = name
                    .chars()
                    .enumerate()
                    .map(|(i, c)| if case >> (i % 8) & 1 == 1 { c.to_ascii_uppercase() } else { c })
                    .collect();
                (name, value.into_bytes())
            })
            .collect();
        let pairs: Vec<(&str, &[u8])> =
            headers.iter().map(|(n, v)| (n.as_str(), v.as_slice())).collect();
        let msg = HttpMessage {
            headers: super::parser::Headers::from_pairs(&pairs),
            ..HttpMessage::default()
        };
        prop_assert_eq!(super::headers_json(&msg), headers_json_reference(&headers));
    }
}
