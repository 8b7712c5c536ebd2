//! HTTP/1.0 and HTTP/1.1: inference, parsing, stitching, and Pixie's `http_events` table.
//!
//! [`HttpConnection`] owns one [`MessageParser`] per direction and a [`Stitcher`]. The
//! role decides which direction carries requests. Request methods flow from the request
//! parser to the response parser (a response to HEAD has no body), and completed
//! messages flow into the stitcher, which pairs them into records for `drain`.

mod parser;
#[cfg(test)]
mod proptests;
mod stitcher;

use px_tablestore::{ColumnSchema, DataType, RowBuilder, SemanticType, TableSchema};

pub(crate) use parser::{HttpMessage, KNOWN_METHODS, MessageKind, MessageParser, MessageSink};
pub(crate) use stitcher::{HttpRecord, Stitcher};

use super::{
    ConnMeta, Direction, Inference, ParserLimits, ParserStats, ProtocolEntry, ProtocolParser, Role,
};

/// The registry entry for HTTP/1.x (a `const`: `REGISTRY` copies it into its array).
pub(crate) const ENTRY: ProtocolEntry = ProtocolEntry {
    name: "http",
    traffic_protocol: 1,
    infer,
    new_parser,
    table: http_events_schema,
};

/// `content_type` column: the body is not a type Pixie knows.
pub(crate) const CONTENT_TYPE_UNKNOWN: i64 = 0;
/// `content_type` column: JSON.
pub(crate) const CONTENT_TYPE_JSON: i64 = 1;
/// `content_type` column: gRPC.
pub(crate) const CONTENT_TYPE_GRPC: i64 = 2;

fn new_parser(role: Role, limits: ParserLimits) -> Box<dyn ProtocolParser> {
    Box::new(HttpConnection::new(role, limits))
}

/// Whether `bytes`, the first seen in `dir`, start an HTTP/1.x request or response.
pub(crate) fn infer(dir: Direction, role: Role, bytes: &[u8]) -> Inference {
    if dir == role.request_direction() {
        infer_request(bytes)
    } else {
        infer_prefix(bytes, &[b"HTTP/1.0 ", b"HTTP/1.1 "])
    }
}

/// A known method followed by a space.
fn infer_request(bytes: &[u8]) -> Inference {
    let mut need_more = false;
    for method in KNOWN_METHODS {
        match bytes.strip_prefix(method) {
            Some([b' ', ..]) => return Inference::Match,
            Some([]) => need_more = true,
            Some(_) => {}
            None => need_more |= method.starts_with(bytes),
        }
    }
    if need_more {
        Inference::NeedMore
    } else {
        Inference::NoMatch
    }
}

/// Match if `bytes` start with one of `prefixes`, NeedMore if they are a prefix of one.
fn infer_prefix(bytes: &[u8], prefixes: &[&[u8]]) -> Inference {
    if prefixes.iter().any(|p| bytes.starts_with(p)) {
        Inference::Match
    } else if prefixes.iter().any(|p| p.starts_with(bytes)) {
        Inference::NeedMore
    } else {
        Inference::NoMatch
    }
}

/// Pixie's `http_events` columns in order: name, type, semantic type, description.
#[rustfmt::skip] // A table reads better than one field per line.
const HTTP_EVENTS_COLUMNS: [(&str, DataType, SemanticType, &str); 21] = {
    use DataType as D;
    use SemanticType as S;
    [
        ("time_", D::Time64Ns, S::None, "Time the response began, ns since the epoch"),
        ("upid", D::UInt128, S::Upid, "Unique ID of the traced process"),
        ("remote_addr", D::String, S::IpAddress, "IP address of the remote endpoint"),
        ("remote_port", D::Int64, S::Port, "Port of the remote endpoint"),
        ("local_addr", D::String, S::IpAddress, "IP address of the local endpoint"),
        ("local_port", D::Int64, S::Port, "Port of the local endpoint"),
        ("trace_role", D::Int64, S::None, "Side traced: 1 client, 2 server"),
        ("major_version", D::Int64, S::None, "HTTP major version"),
        ("minor_version", D::Int64, S::None, "HTTP minor version"),
        ("content_type", D::Int64, S::None, "Body type: 0 unknown, 1 JSON, 2 gRPC"),
        ("req_headers", D::String, S::None, "Request headers as a JSON object"),
        ("req_method", D::String, S::HttpReqMethod, "Request method"),
        ("req_path", D::String, S::None, "Request target"),
        ("req_body", D::String, S::None, "Request body, truncated"),
        ("req_body_size", D::Int64, S::Bytes, "Real request body size in bytes"),
        ("resp_headers", D::String, S::None, "Response headers as a JSON object"),
        ("resp_status", D::Int64, S::HttpRespStatus, "Response status code"),
        ("resp_message", D::String, S::HttpRespMessage, "Response reason phrase"),
        ("resp_body", D::String, S::None, "Response body, truncated"),
        ("resp_body_size", D::Int64, S::Bytes, "Real response body size in bytes"),
        ("latency", D::Int64, S::DurationNs, "Response start minus request start, ns"),
    ]
};

/// The columns Pixie's planner redacts under a restricted data access mode.
const SENSITIVE: [&str; 4] = ["req_headers", "req_body", "resp_headers", "resp_body"];

/// Pixie's `http_events` table.
pub(crate) fn http_events_schema() -> TableSchema {
    let columns = HTTP_EVENTS_COLUMNS
        .into_iter()
        .map(|(name, data_type, semantic, desc)| {
            let column = ColumnSchema::new(name, data_type, semantic, desc);
            // Pixie's sensitive columns of http_events: what a restricted mode redacts.
            if SENSITIVE.contains(&name) {
                column.sensitive()
            } else {
                column
            }
        })
        .collect();
    TableSchema::new("http_events", "HTTP/1.x request-response pairs", columns)
}

/// Appends the `http_events` row of `record`, columns in [`http_events_schema`] order.
///
/// Runs once per request/response pair on the hot path: values go straight into the
/// Arrow builders, and the header JSON is built in `scratch`, reused across rows, so a
/// row costs no allocation of its own.
fn append_record(
    record: &HttpRecord,
    conn: &ConnMeta,
    role: Role,
    rows: &mut RowBuilder,
    scratch: &mut String,
    redact_credentials: bool,
) {
    let HttpRecord { req, resp } = record;
    rows.append_time(saturating_i64(resp.ts_ns).saturating_add(conn.boot_to_epoch_ns));
    rows.append_u128(conn.upid);
    rows.append_str(&conn.remote_addr);
    rows.append_i64(conn.remote_port);
    rows.append_str(&conn.local_addr);
    rows.append_i64(conn.local_port);
    rows.append_i64(role.trace_role());
    rows.append_i64(1);
    rows.append_i64(i64::from(resp.minor_version));
    rows.append_i64(content_type(req, resp));
    scratch.clear();
    write_headers_json(scratch, req, redact_credentials);
    rows.append_str(scratch);
    rows.append_str(&req.method);
    rows.append_str(&req.path);
    rows.append_str(&String::from_utf8_lossy(&req.body));
    rows.append_i64(saturating_i64(req.body_size));
    scratch.clear();
    write_headers_json(scratch, resp, redact_credentials);
    rows.append_str(scratch);
    rows.append_i64(i64::from(resp.status));
    rows.append_str(&resp.reason);
    rows.append_str(&String::from_utf8_lossy(&resp.body));
    rows.append_i64(saturating_i64(resp.body_size));
    rows.append_i64(saturating_i64(resp.ts_ns.saturating_sub(req.ts_ns)));
    rows.finish_row();
}

/// A connection with no addresses, for tests that look only at the per-record columns.
#[cfg(test)]
fn blank_conn(role: Role, boot_to_epoch_ns: i64) -> ConnMeta {
    ConnMeta {
        upid: 0,
        remote_addr: String::new(),
        remote_port: 0,
        local_addr: String::new(),
        local_port: 0,
        role,
        boot_to_epoch_ns,
    }
}

/// One `http_events` row read back from a batch, for tests.
#[cfg(test)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct HttpRow {
    pub(crate) time_ns: i64,
    pub(crate) minor_version: i64,
    pub(crate) content_type: i64,
    pub(crate) req_headers: String,
    pub(crate) req_method: String,
    pub(crate) req_path: String,
    pub(crate) req_body: String,
    pub(crate) req_body_size: i64,
    pub(crate) resp_headers: String,
    pub(crate) resp_status: i64,
    pub(crate) resp_message: String,
    pub(crate) resp_body: String,
    pub(crate) resp_body_size: i64,
    pub(crate) latency_ns: i64,
}

#[cfg(test)]
impl HttpRow {
    /// Every row of an `http_events` batch.
    pub(crate) fn from_batch(batch: &arrow_array::RecordBatch) -> Vec<Self> {
        use arrow_array::cast::AsArray;
        use arrow_array::types::{Int64Type, TimestampNanosecondType};
        let int = |name: &str, i: usize| {
            batch
                .column_by_name(name)
                .map_or(0, |c| c.as_primitive::<Int64Type>().value(i))
        };
        let text = |name: &str, i: usize| {
            batch
                .column_by_name(name)
                .map(|c| c.as_string::<i32>().value(i).to_owned())
                .unwrap_or_default()
        };
        let time = |i: usize| {
            batch
                .column_by_name("time_")
                .map_or(0, |c| c.as_primitive::<TimestampNanosecondType>().value(i))
        };
        (0..batch.num_rows())
            .map(|i| Self {
                time_ns: time(i),
                minor_version: int("minor_version", i),
                content_type: int("content_type", i),
                req_headers: text("req_headers", i),
                req_method: text("req_method", i),
                req_path: text("req_path", i),
                req_body: text("req_body", i),
                req_body_size: int("req_body_size", i),
                resp_headers: text("resp_headers", i),
                resp_status: int("resp_status", i),
                resp_message: text("resp_message", i),
                resp_body: text("resp_body", i),
                resp_body_size: int("resp_body_size", i),
                latency_ns: int("latency", i),
            })
            .collect()
    }
}

fn saturating_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The response's Content-Type decides (as in Pixie); the request's if the response has none.
fn content_type(req: &HttpMessage, resp: &HttpMessage) -> i64 {
    let of = |m: &HttpMessage| {
        m.header_values("content-type")
            .next()
            .map(classify_content_type)
    };
    of(resp).or_else(|| of(req)).unwrap_or(CONTENT_TYPE_UNKNOWN)
}

/// Maps a Content-Type value to the `content_type` column.
fn classify_content_type(value: &[u8]) -> i64 {
    let value = value.trim_ascii_start();
    let starts = |prefix: &[u8]| {
        value.len() >= prefix.len() && value[..prefix.len()].eq_ignore_ascii_case(prefix)
    };
    if starts(b"application/json") {
        CONTENT_TYPE_JSON
    } else if starts(b"application/grpc") {
        CONTENT_TYPE_GRPC
    } else {
        CONTENT_TYPE_UNKNOWN
    }
}

/// Headers as a JSON object; repeated names (case-insensitive) are joined with ", ".
#[cfg(test)]
pub(crate) fn headers_json(msg: &HttpMessage) -> String {
    let mut out = String::new();
    write_headers_json(&mut out, msg, false);
    out
}

/// The headers that carry credentials: with redaction on, their values are recorded as
/// [`REDACTED`] (an `Authorization` keeps its scheme, a cookie its name), so a row says
/// a request was authenticated, and how, without holding the secret.
const CREDENTIAL_HEADERS: [&str; 5] = [
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "x-api-key",
];
/// What stands for a credential's value.
const REDACTED: &str = "[REDACTED]";

/// Appends `value` of credential header `name`, redacted, JSON-escaped.
fn push_redacted(out: &mut String, name: &str, value: &[u8]) {
    let text = String::from_utf8_lossy(value);
    match name.to_ascii_lowercase().as_str() {
        "authorization" | "proxy-authorization" => {
            // `Bearer abc` -> `Bearer [REDACTED]`: the scheme is not the secret.
            if let Some((scheme, _)) = text.split_once(' ')
                && !scheme.is_empty()
                && scheme
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            {
                push_json_escaped(out, scheme.as_bytes());
                out.push(' ');
            }
            out.push_str(REDACTED);
        }
        "cookie" => {
            // `a=1; b=2` -> `a=[REDACTED]; b=[REDACTED]`.
            for (i, pair) in text.split(';').enumerate() {
                if i > 0 {
                    out.push_str("; ");
                }
                let cookie = pair.trim().split_once('=').map_or("", |(n, _)| n);
                push_json_escaped(out, cookie.as_bytes());
                out.push('=');
                out.push_str(REDACTED);
            }
        }
        "set-cookie" => {
            // `id=1; Path=/; HttpOnly` -> `id=[REDACTED]; Path=/; HttpOnly`.
            let (first, attributes) = text.split_once(';').unwrap_or((&text, ""));
            let cookie = first.split_once('=').map_or("", |(n, _)| n);
            push_json_escaped(out, cookie.trim().as_bytes());
            out.push('=');
            out.push_str(REDACTED);
            if !attributes.is_empty() {
                out.push(';');
                push_json_escaped(out, attributes.as_bytes());
            }
        }
        _ => out.push_str(REDACTED),
    }
}

/// Writes the headers of `msg` as a JSON object into `out`, credentials redacted when
/// `redact_credentials`. Repeated names are looked up among the earlier headers instead
/// of being collected first: no allocation for headers that carry no credential.
fn write_headers_json(out: &mut String, msg: &HttpMessage, redact_credentials: bool) {
    out.push('{');
    let headers = &msg.headers;
    // Repeated names are rare: one byte per name, case folded, compared first leaves the
    // name comparisons to the few pairs that may match (the parser keeps at most
    // MAX_HEADERS; a header past that would be compared by name with every other).
    let mut prints = [0u8; parser::MAX_HEADERS];
    for (print, (name, _)) in prints.iter_mut().zip(headers.iter()) {
        *print = name_print(name);
    }
    let same_name = |i: usize, j: usize| match (prints.get(i), prints.get(j)) {
        (Some(a), Some(b)) if a != b => false,
        _ => headers.get(i).0.eq_ignore_ascii_case(headers.get(j).0),
    };
    for (i, (name, value)) in headers.iter().enumerate() {
        if (0..i).any(|j| same_name(i, j)) {
            continue; // already written, joined with this one
        }
        if i > 0 {
            out.push(',');
        }
        push_json_string(out, name);
        out.push(':');
        out.push('"');
        let redact = redact_credentials
            && CREDENTIAL_HEADERS
                .iter()
                .any(|c| c.as_bytes().eq_ignore_ascii_case(name));
        let push = |out: &mut String, value: &[u8]| {
            if redact {
                push_redacted(out, &String::from_utf8_lossy(name), value);
            } else {
                push_json_escaped(out, value);
            }
        };
        push(out, value);
        for j in (i + 1..headers.len()).filter(|&j| same_name(i, j)) {
            out.push_str(", ");
            push(out, headers.get(j).1);
        }
        out.push('"');
    }
    out.push('}');
}

/// A byte standing for a header name, equal for names equal but for ASCII case.
fn name_print(name: &[u8]) -> u8 {
    // `| 0x20` folds ASCII letters to lower case (and maps a few other bytes together,
    // which only makes more pairs compared by name).
    let fold = |b: Option<&u8>| b.map_or(0, |b| b | 0x20);
    let len = name.len().to_le_bytes()[0]; // its low byte: a fingerprint, not a length
    len.wrapping_mul(31) ^ fold(name.first()) ^ fold(name.last()).rotate_left(4)
}

/// Appends `bytes` as a JSON string literal.
fn push_json_string(out: &mut String, bytes: &[u8]) {
    out.push('"');
    push_json_escaped(out, bytes);
    out.push('"');
}

/// Appends `bytes` (invalid UTF-8 replaced by U+FFFD) escaped for a JSON string.
fn push_json_escaped(out: &mut String, bytes: &[u8]) {
    // Nearly every header name and value is printable ASCII with nothing to escape:
    // one check eight bytes at a time, one copy.
    if plain_ascii(bytes) {
        // SAFETY: every byte is ASCII (checked just above), so `out` stays valid UTF-8.
        unsafe { out.as_mut_vec() }.extend_from_slice(bytes);
        return;
    }
    // Header values are nearly always valid UTF-8: validate in one fast pass first.
    if let Ok(text) = std::str::from_utf8(bytes) {
        return push_json_escaped_str(out, text);
    }
    for chunk in bytes.utf8_chunks() {
        push_json_escaped_str(out, chunk.valid());
        if !chunk.invalid().is_empty() {
            out.push(char::REPLACEMENT_CHARACTER);
        }
    }
}

/// Appends `text` escaped for a JSON string, copying runs that need no escape at once.
/// Runs once per header on the per-row path: eight bytes are checked at a time, since
/// header values rarely hold anything to escape.
fn push_json_escaped_str(out: &mut String, text: &str) {
    let bytes = text.as_bytes();
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        if let Some(word) = bytes.get(i..i + 8)
            && let Ok(word) = <[u8; 8]>::try_from(word)
            && !any_needs_escape(u64::from_le_bytes(word))
        {
            i += 8;
            continue;
        }
        let escape = match bytes[i] {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            b if b < 0x20 => "",
            _ => {
                i += 1;
                continue;
            }
        };
        // An escaped byte is ASCII, so `i` is a char boundary.
        out.push_str(&text[start..i]);
        if escape.is_empty() {
            out.push_str(&format!("\\u{:04x}", bytes[i]));
        } else {
            out.push_str(escape);
        }
        i += 1;
        start = i;
    }
    out.push_str(&text[start..]);
}

/// Whether every byte is printable ASCII other than `"` and `\\`.
fn plain_ascii(bytes: &[u8]) -> bool {
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let mut words = bytes.chunks_exact(8);
    for word in &mut words {
        let word = u64::from_le_bytes(<[u8; 8]>::try_from(word).unwrap_or([0; 8]));
        if word & HIGH != 0 || any_needs_escape(word) {
            return false;
        }
    }
    words
        .remainder()
        .iter()
        .all(|&b| (0x20..0x80).contains(&b) && b != b'"' && b != b'\\')
}

/// Whether any of the eight bytes in `word` is a control character, `"` or `\`
/// (exact as a yes/no: the classic "has a zero byte" and "has a byte less than n" tests).
fn any_needs_escape(word: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let has_zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGH;
    let below_space = word.wrapping_sub(ONES * 0x20) & !word & HIGH;
    below_space
        | has_zero(word ^ (ONES * u64::from(b'"')))
        | has_zero(word ^ (ONES * u64::from(b'\\')))
        != 0
}

/// Feeds request messages to the stitcher and their methods to the response parser.
struct RequestSink<'a> {
    stitcher: &'a mut Stitcher,
    responses: &'a mut MessageParser,
}

impl MessageSink for RequestSink<'_> {
    fn message(&mut self, msg: HttpMessage) {
        self.responses.push_request_method(msg.method_class());
        self.stitcher.push_request(msg);
    }
}

/// Feeds response messages and response-side losses to the stitcher.
struct ResponseSink<'a> {
    stitcher: &'a mut Stitcher,
}

impl MessageSink for ResponseSink<'_> {
    fn message(&mut self, msg: HttpMessage) {
        self.stitcher.push_response(msg);
    }

    fn desync(&mut self) {
        self.stitcher.note_response_loss();
    }
}

/// One HTTP/1.x connection: both directions parsed and stitched into `http_events` rows.
#[derive(Debug)]
pub(crate) struct HttpConnection {
    role: Role,
    requests: MessageParser,
    responses: MessageParser,
    stitcher: Stitcher,
    redact_credentials: bool,
}

impl HttpConnection {
    /// A connection on which the traced process plays `role`.
    pub(crate) fn new(role: Role, limits: ParserLimits) -> Self {
        Self {
            role,
            requests: MessageParser::new(MessageKind::Request, limits),
            responses: MessageParser::new(MessageKind::Response, limits),
            stitcher: Stitcher::new(&limits),
            redact_credentials: limits.redact_credentials,
        }
    }

    /// Upper bound of [`ProtocolParser::buffered_bytes`] under `limits`, whatever the input.
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn memory_bound(limits: &ParserLimits) -> usize {
        2 * MessageParser::memory_bound(limits) + Stitcher::memory_bound(limits)
    }

    /// Takes the completed records as rows (without the connection columns).
    #[cfg(test)]
    pub(crate) fn take_rows(&mut self, boot_to_epoch_ns: i64) -> Vec<HttpRow> {
        let conn = blank_conn(self.role, boot_to_epoch_ns);
        let mut rows = RowBuilder::new(&http_events_schema());
        self.drain(&conn, &mut rows);
        HttpRow::from_batch(&rows.finish())
    }

    /// Requests waiting for responses.
    #[cfg(test)]
    pub(crate) fn pending_requests(&self) -> usize {
        self.stitcher.pending_requests()
    }

    fn is_request_direction(&self, dir: Direction) -> bool {
        dir == self.role.request_direction()
    }

    /// After a protocol switch the request direction is no longer HTTP either.
    fn follow_upgrade(&mut self) {
        if self.responses.is_upgraded() && !self.requests.is_upgraded() {
            self.requests.upgrade();
        }
    }
}

impl ProtocolParser for HttpConnection {
    fn on_data(&mut self, dir: Direction, data: &[u8], ts_ns: u64) {
        if self.is_request_direction(dir) {
            let mut sink = RequestSink {
                stitcher: &mut self.stitcher,
                responses: &mut self.responses,
            };
            self.requests.on_data(data, ts_ns, &mut sink);
        } else {
            let mut sink = ResponseSink {
                stitcher: &mut self.stitcher,
            };
            self.responses.on_data(data, ts_ns, &mut sink);
            self.follow_upgrade();
        }
    }

    fn on_gap(&mut self, dir: Direction, len: u64) {
        if self.is_request_direction(dir) {
            let mut sink = RequestSink {
                stitcher: &mut self.stitcher,
                responses: &mut self.responses,
            };
            self.requests.on_gap(len, &mut sink);
        } else {
            let mut sink = ResponseSink {
                stitcher: &mut self.stitcher,
            };
            self.responses.on_gap(len, &mut sink);
        }
    }

    fn on_close(&mut self, _ts_ns: u64) {
        let mut sink = RequestSink {
            stitcher: &mut self.stitcher,
            responses: &mut self.responses,
        };
        self.requests.on_close(&mut sink);
        let mut sink = ResponseSink {
            stitcher: &mut self.stitcher,
        };
        self.responses.on_close(&mut sink);
        self.stitcher.on_close();
    }

    fn drain(&mut self, conn: &ConnMeta, rows: &mut RowBuilder) {
        let mut scratch = String::new();
        for record in self.stitcher.take_records() {
            let redact = self.redact_credentials;
            append_record(&record, conn, self.role, rows, &mut scratch, redact);
        }
    }

    fn buffered_bytes(&self) -> usize {
        self.requests.buffered_bytes()
            + self.responses.buffered_bytes()
            + self.stitcher.buffered_bytes()
    }

    fn stats(&self) -> ParserStats {
        ParserStats {
            bytes_skipped: self.requests.bytes_skipped() + self.responses.bytes_skipped(),
            messages_unpaired: self.stitcher.messages_unpaired(),
        }
    }
}

/// Runs one fuzz input through both roles; panics if a memory bound is broken.
///
/// Layout: byte 0 picks the limits; then each control byte `c` is followed by its payload.
/// Bit 0 of `c` picks the direction; bits 1-2 the action (0-1 data, 2 gap, 3 drain); bits
/// 3-7 a size `s`: data takes the next `s * s` bytes, a gap is `s * s * s` bytes long.
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn fuzz_one_input(data: &[u8]) {
    let Some((&config, ops)) = data.split_first() else {
        return;
    };
    let limits = if config & 0x80 != 0 {
        ParserLimits::default()
    } else {
        ParserLimits {
            max_body_bytes: usize::from(config & 0x0f) * 8,
            max_header_bytes: usize::from((config >> 4) & 0x07) * 48,
            max_pending_messages: usize::from(config & 0x03),
            redact_credentials: true,
        }
    };
    for role in [Role::Client, Role::Server] {
        fuzz_role(role, limits, ops);
    }
}

#[cfg(any(test, feature = "fuzzing"))]
fn fuzz_role(role: Role, limits: ParserLimits, mut ops: &[u8]) {
    let meta = ConnMeta {
        upid: 1,
        remote_addr: "10.0.0.1".into(),
        remote_port: 80,
        local_addr: "10.0.0.2".into(),
        local_port: 43210,
        role,
        boot_to_epoch_ns: 1_000,
    };
    let schema = http_events_schema();
    let mut rows = RowBuilder::new(&schema);
    let mut conn = HttpConnection::new(role, limits);
    let bound = HttpConnection::memory_bound(&limits);
    let mut ts = 0u64;
    while let Some((&c, rest)) = ops.split_first() {
        ops = rest;
        ts += 1;
        let dir = if c & 1 == 0 {
            Direction::Egress
        } else {
            Direction::Ingress
        };
        let size = usize::from(c >> 3);
        match (c >> 1) & 3 {
            0 | 1 => {
                let (piece, rest) = ops.split_at((size * size).min(ops.len()));
                conn.on_data(dir, piece, ts);
                ops = rest;
            }
            2 => conn.on_gap(dir, (size * size * size) as u64),
            _ => conn.drain(&meta, &mut rows),
        }
        assert!(
            conn.buffered_bytes() <= bound,
            "buffered bytes over the bound"
        );
    }
    conn.on_close(ts + 1);
    conn.drain(&meta, &mut rows);
    let batch = rows.finish();
    assert_eq!(batch.num_columns(), schema.columns.len());
}

#[cfg(test)]
mod tests {
    use super::parser::Headers;
    use super::*;

    fn limits() -> ParserLimits {
        ParserLimits {
            max_body_bytes: 32,
            max_header_bytes: 1024,
            max_pending_messages: 8,
            redact_credentials: true,
        }
    }

    fn meta(role: Role) -> ConnMeta {
        ConnMeta {
            upid: 42,
            remote_addr: "10.0.0.1".into(),
            remote_port: 8080,
            local_addr: "10.0.0.2".into(),
            local_port: 50000,
            role,
            boot_to_epoch_ns: 1_000_000,
        }
    }

    const REQ: Direction = Direction::Egress;
    const RESP: Direction = Direction::Ingress;

    #[test]
    fn infers_requests_and_responses() {
        use Inference::*;
        let client = |dir, bytes: &[u8]| infer(dir, Role::Client, bytes);
        assert_eq!(client(REQ, b"GET / HTTP/1.1\r\n"), Match);
        assert_eq!(client(REQ, b"OPTIONS * HTTP/1.1"), Match);
        assert_eq!(client(REQ, b"GE"), NeedMore);
        assert_eq!(client(REQ, b"GET"), NeedMore);
        assert_eq!(client(REQ, b""), NeedMore);
        assert_eq!(client(REQ, b"GETX / HTTP/1.1"), NoMatch);
        assert_eq!(client(REQ, b"HTTP/1.1 200 OK"), NoMatch);
        assert_eq!(client(RESP, b"HTTP/1.1 200 OK"), Match);
        assert_eq!(client(RESP, b"HTTP/1.0 "), Match);
        assert_eq!(client(RESP, b"HTTP/1."), NeedMore);
        assert_eq!(client(RESP, b"HTTP/2 200"), NoMatch);
        assert_eq!(client(RESP, b"GET / HTTP/1.1"), NoMatch);
        // A server reads requests.
        assert_eq!(infer(Direction::Ingress, Role::Server, b"POST /x"), Match);
        assert_eq!(
            infer(Direction::Egress, Role::Server, b"HTTP/1.1 500"),
            Match
        );
        assert_eq!(infer(Direction::Egress, Role::Server, b"POST /x"), NoMatch);
    }

    #[test]
    fn schema_matches_pixie() {
        let schema = http_events_schema();
        assert_eq!(schema.name, "http_events");
        let names: Vec<_> = schema.columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "time_",
                "upid",
                "remote_addr",
                "remote_port",
                "local_addr",
                "local_port",
                "trace_role",
                "major_version",
                "minor_version",
                "content_type",
                "req_headers",
                "req_method",
                "req_path",
                "req_body",
                "req_body_size",
                "resp_headers",
                "resp_status",
                "resp_message",
                "resp_body",
                "resp_body_size",
                "latency",
            ]
        );
        use DataType as D;
        use SemanticType as S;
        let expect = |name: &str, data_type: D, semantic: S| {
            let col = schema.columns.iter().find(|c| c.name == name);
            assert!(
                col.is_some_and(|c| c.data_type == data_type && c.semantic_type == semantic),
                "{name}"
            );
        };
        expect("time_", D::Time64Ns, S::None);
        expect("upid", D::UInt128, S::Upid);
        expect("remote_addr", D::String, S::IpAddress);
        expect("remote_port", D::Int64, S::Port);
        expect("local_addr", D::String, S::IpAddress);
        expect("local_port", D::Int64, S::Port);
        expect("trace_role", D::Int64, S::None);
        expect("major_version", D::Int64, S::None);
        expect("minor_version", D::Int64, S::None);
        expect("content_type", D::Int64, S::None);
        expect("req_headers", D::String, S::None);
        expect("req_method", D::String, S::HttpReqMethod);
        expect("req_path", D::String, S::None);
        expect("req_body", D::String, S::None);
        expect("req_body_size", D::Int64, S::Bytes);
        expect("resp_headers", D::String, S::None);
        expect("resp_status", D::Int64, S::HttpRespStatus);
        expect("resp_message", D::String, S::HttpRespMessage);
        expect("resp_body", D::String, S::None);
        expect("resp_body_size", D::Int64, S::Bytes);
        expect("latency", D::Int64, S::DurationNs);
        assert!(schema.columns.iter().all(|c| !c.desc.is_empty()));
        assert_eq!(ENTRY.name, "http");
        assert_eq!(ENTRY.traffic_protocol, 1);
        assert_eq!((ENTRY.table)().columns.len(), 21);
    }

    #[test]
    fn pairs_request_and_response_into_row() {
        let mut c = HttpConnection::new(Role::Client, limits());
        c.on_data(
            REQ,
            b"POST /api/v1?x=1 HTTP/1.1\r\nHost: svc\r\nContent-Type: application/json\r\nContent-Length: 7\r\n\r\n{\"a\":1}",
            100,
        );
        c.on_data(
            RESP,
            b"HTTP/1.1 201 Created\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: 2\r\n\r\n{}",
            350,
        );
        let rows = c.take_rows(1_000_000);
        assert_eq!(rows.len(), 1);
        let row = &rows[0];
        assert_eq!(row.time_ns, 1_000_350);
        assert_eq!(row.latency_ns, 250);
        assert_eq!(row.minor_version, 1);
        assert_eq!(row.content_type, CONTENT_TYPE_JSON);
        assert_eq!(row.req_method, "POST");
        assert_eq!(row.req_path, "/api/v1?x=1");
        assert_eq!(
            row.req_headers,
            r#"{"Host":"svc","Content-Type":"application/json","Content-Length":"7"}"#
        );
        assert_eq!(row.req_body, r#"{"a":1}"#);
        assert_eq!(row.req_body_size, 7);
        assert_eq!(row.resp_status, 201);
        assert_eq!(row.resp_message, "Created");
        assert_eq!(row.resp_body, "{}");
        assert_eq!(row.resp_body_size, 2);
        assert_eq!(c.stats(), ParserStats::default());
        assert_eq!(c.buffered_bytes(), 0);
    }

    #[test]
    fn drain_appends_rows_in_schema_order() {
        let mut c = HttpConnection::new(Role::Server, limits());
        for i in 0..3u64 {
            c.on_data(Direction::Ingress, b"GET / HTTP/1.1\r\n\r\n", 10 * i);
            c.on_data(
                Direction::Egress,
                b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
                10 * i + 5,
            );
        }
        let schema = http_events_schema();
        let mut rows = RowBuilder::new(&schema);
        c.drain(&meta(Role::Server), &mut rows);
        assert_eq!(rows.rows(), 3);
        assert_eq!(rows.misuses(), 0);
        let batch = rows.finish();
        assert_eq!(batch.num_rows(), 3);
        assert_eq!(batch.num_columns(), schema.columns.len());
    }

    #[test]
    fn pipelined_requests_pair_in_order() {
        let mut c = HttpConnection::new(Role::Client, limits());
        c.on_data(
            REQ,
            b"GET /1 HTTP/1.1\r\n\r\nHEAD /2 HTTP/1.1\r\n\r\nGET /3 HTTP/1.1\r\n\r\n",
            1,
        );
        c.on_data(
            RESP,
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\naHTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n",
            2,
        );
        c.on_data(
            RESP,
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 1\r\n\r\nc",
            3,
        );
        let rows = c.take_rows(0);
        let got: Vec<_> = rows
            .iter()
            .map(|r| (r.req_path.as_str(), r.resp_status, r.resp_body.as_str()))
            .collect();
        assert_eq!(got, [("/1", 200, "a"), ("/2", 200, ""), ("/3", 404, "c")]);
        assert_eq!(rows[1].resp_body_size, 0);
        assert_eq!(c.stats(), ParserStats::default());
    }

    #[test]
    fn expect_continue_waits_for_final_response() {
        let mut c = HttpConnection::new(Role::Client, limits());
        c.on_data(
            REQ,
            b"PUT /up HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n",
            1,
        );
        c.on_data(RESP, b"HTTP/1.1 100 Continue\r\n\r\n", 2);
        c.on_data(REQ, b"data", 3);
        c.on_data(RESP, b"HTTP/1.1 204 No Content\r\n\r\n", 4);
        let rows = c.take_rows(0);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].resp_status, 204);
        assert_eq!(rows[0].req_body, "data");
        assert_eq!(rows[0].latency_ns, 3);
        assert_eq!(c.stats(), ParserStats::default());
    }

    #[test]
    fn keep_alive_hundred_exchanges_byte_at_a_time() {
        let mut c = HttpConnection::new(Role::Server, limits());
        let mut ts = 0;
        let mut rows = Vec::new();
        for i in 0..100 {
            let req = format!("GET /item/{i} HTTP/1.1\r\nHost: h\r\n\r\n");
            let body = format!("item {i}");
            let resp = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            for b in req.as_bytes() {
                ts += 1;
                c.on_data(Direction::Ingress, std::slice::from_ref(b), ts);
            }
            for b in resp.as_bytes() {
                ts += 1;
                c.on_data(Direction::Egress, std::slice::from_ref(b), ts);
            }
            // Drain as the tracker would: undrained records are bounded.
            rows.extend(c.take_rows(0));
        }
        assert_eq!(rows.len(), 100);
        for (i, row) in rows.iter().enumerate() {
            assert_eq!(row.req_path, format!("/item/{i}"));
            assert_eq!(row.resp_body, format!("item {i}"));
            assert!(row.latency_ns > 0);
        }
        assert_eq!(c.stats(), ParserStats::default());
    }

    #[test]
    fn until_close_response_completes_on_close() {
        let mut c = HttpConnection::new(Role::Client, limits());
        c.on_data(REQ, b"GET / HTTP/1.0\r\n\r\n", 1);
        c.on_data(RESP, b"HTTP/1.0 200 OK\r\n\r\nhello", 2);
        assert!(c.take_rows(0).is_empty());
        c.on_close(3);
        let rows = c.take_rows(0);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].resp_body, "hello");
        assert_eq!(rows[0].minor_version, 0);
    }

    #[test]
    fn close_counts_unanswered_requests() {
        let mut c = HttpConnection::new(Role::Client, limits());
        c.on_data(REQ, b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n", 1);
        assert_eq!(c.pending_requests(), 2);
        c.on_close(2);
        assert_eq!(c.stats().messages_unpaired, 2);
        assert_eq!(c.buffered_bytes(), 0);
    }

    #[test]
    fn response_without_request_is_counted() {
        let mut c = HttpConnection::new(Role::Client, limits());
        c.on_data(RESP, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 1);
        assert!(c.take_rows(0).is_empty());
        assert_eq!(c.stats().messages_unpaired, 1);
    }

    #[test]
    fn lost_response_does_not_shift_later_pairs() {
        let mut c = HttpConnection::new(Role::Client, limits());
        c.on_data(REQ, b"GET /a HTTP/1.1\r\n\r\n", 1);
        c.on_data(RESP, b"HTTP/1.1 200 OK\r\nContent-Len", 2);
        c.on_gap(RESP, 100);
        c.on_data(REQ, b"GET /b HTTP/1.1\r\n\r\n", 3);
        c.on_data(
            RESP,
            b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n",
            4,
        );
        let rows = c.take_rows(0);
        assert_eq!(rows.len(), 1);
        assert_eq!(
            (rows[0].req_path.as_str(), rows[0].resp_status),
            ("/b", 201)
        );
        assert_eq!(c.stats().messages_unpaired, 1);
        assert_eq!(c.stats().bytes_skipped, 28);
    }

    #[test]
    fn upgrade_stops_both_directions() {
        let mut c = HttpConnection::new(Role::Client, limits());
        c.on_data(
            REQ,
            b"GET /chat HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
            1,
        );
        c.on_data(
            RESP,
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
            2,
        );
        c.on_data(REQ, b"\x81\x85abcdefghi", 3);
        c.on_data(RESP, b"\x81\x05hello", 4);
        let rows = c.take_rows(0);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].resp_status, 101);
        assert_eq!(c.stats(), ParserStats::default());
        assert_eq!(c.buffered_bytes(), 0);
    }

    proptest::proptest! {
        /// The fast paths (eight bytes at a time, plain ASCII) write what a JSON parser
        /// reads back as the bytes given, invalid UTF-8 replaced.
        #[test]
        fn json_escaping_round_trips(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64)) {
            let mut out = String::new();
            push_json_string(&mut out, &bytes);
            let back: String = serde_json::from_str(&out).unwrap();
            proptest::prop_assert_eq!(back, String::from_utf8_lossy(&bytes));
        }

        #[test]
        fn json_escaping_round_trips_text(text in "[ -~\\t\\n\"\\\\é€]{0,40}") {
            let mut out = String::new();
            push_json_string(&mut out, text.as_bytes());
            let back: String = serde_json::from_str(&out).unwrap();
            proptest::prop_assert_eq!(back, text);
        }
    }

    #[test]
    fn headers_json_merges_and_escapes() {
        let msg = HttpMessage {
            headers: Headers::from_pairs(&[
                ("Accept", &b"a/b"[..]),
                ("X-Q", &b"say \"hi\"\\ \x01"[..]),
                ("accept", &b"c/d"[..]),
                ("X-Bin", &b"\xff"[..]),
            ]),
            ..HttpMessage::default()
        };
        assert_eq!(
            headers_json(&msg),
            "{\"Accept\":\"a/b, c/d\",\"X-Q\":\"say \\\"hi\\\"\\\\ \\u0001\",\"X-Bin\":\"\u{fffd}\"}"
        );
        assert_eq!(headers_json(&HttpMessage::default()), "{}");
    }

    #[test]
    fn credentials_are_recorded_as_present_and_redacted_unless_kept() {
        let msg = HttpMessage {
            headers: Headers::from_pairs(&[
                ("Authorization", &b"Bearer s3cr3t-token"[..]),
                ("Cookie", &b"session=abc123; theme=dark"[..]),
                ("set-cookie", &b"id=xyz; Path=/; HttpOnly"[..]),
                ("Proxy-Authorization", &b"Basic dXNlcjpwYXNz"[..]),
                ("X-Api-Key", &b"k-42"[..]),
                ("Accept", &b"*/*"[..]),
            ]),
            ..HttpMessage::default()
        };
        let mut redacted = String::new();
        write_headers_json(&mut redacted, &msg, true);
        let headers: serde_json::Value = serde_json::from_str(&redacted).unwrap();
        assert_eq!(headers["Authorization"], "Bearer [REDACTED]");
        assert_eq!(headers["Cookie"], "session=[REDACTED]; theme=[REDACTED]");
        assert_eq!(headers["set-cookie"], "id=[REDACTED]; Path=/; HttpOnly");
        assert_eq!(headers["Proxy-Authorization"], "Basic [REDACTED]");
        assert_eq!(headers["X-Api-Key"], "[REDACTED]");
        assert_eq!(headers["Accept"], "*/*");
        for secret in ["s3cr3t", "abc123", "xyz", "dXNlcjpwYXNz", "k-42", "dark"] {
            assert!(!redacted.contains(secret), "{secret} in {redacted}");
        }
        // Kept when the user opts out.
        let mut kept = String::new();
        write_headers_json(&mut kept, &msg, false);
        assert!(kept.contains("Bearer s3cr3t-token"), "{kept}");
        // The default a PEM starts with is to redact.
        assert!(ParserLimits::default().redact_credentials);
    }

    #[test]
    fn content_type_classification() {
        let with = |ct: &str| HttpMessage {
            headers: Headers::from_pairs(&[("Content-Type", ct.as_bytes())]),
            ..HttpMessage::default()
        };
        let none = HttpMessage::default();
        assert_eq!(
            content_type(&none, &with("application/json")),
            CONTENT_TYPE_JSON
        );
        assert_eq!(
            content_type(&none, &with("Application/JSON; q=1")),
            CONTENT_TYPE_JSON
        );
        assert_eq!(
            content_type(&none, &with("application/grpc+proto")),
            CONTENT_TYPE_GRPC
        );
        assert_eq!(
            content_type(&none, &with("text/html")),
            CONTENT_TYPE_UNKNOWN
        );
        assert_eq!(
            content_type(&with("application/json"), &none),
            CONTENT_TYPE_JSON
        );
        assert_eq!(
            content_type(&with("application/json"), &with("text/plain")),
            0
        );
        assert_eq!(content_type(&none, &none), CONTENT_TYPE_UNKNOWN);
    }

    #[test]
    fn body_text_is_truncated_and_lossy() {
        let mut c = HttpConnection::new(Role::Client, limits());
        c.on_data(REQ, b"POST / HTTP/1.1\r\nContent-Length: 100\r\n\r\n", 1);
        c.on_data(REQ, &[0xff; 100], 2);
        c.on_data(RESP, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 3);
        let rows = c.take_rows(0);
        assert_eq!(rows[0].req_body, "\u{fffd}".repeat(32));
        assert_eq!(rows[0].req_body_size, 100);
    }

    #[test]
    fn timestamps_saturate() {
        let record = HttpRecord {
            req: HttpMessage {
                ts_ns: u64::MAX,
                ..HttpMessage::default()
            },
            resp: HttpMessage {
                ts_ns: 5,
                ..HttpMessage::default()
            },
        };
        let conn = blank_conn(Role::Server, i64::MAX);
        let mut rows = RowBuilder::new(&http_events_schema());
        append_record(
            &record,
            &conn,
            Role::Server,
            &mut rows,
            &mut String::new(),
            true,
        );
        let row = &HttpRow::from_batch(&rows.finish())[0];
        assert_eq!(row.latency_ns, 0);
        assert_eq!(row.time_ns, i64::MAX);
    }

    #[test]
    fn fuzz_entry_point_runs() {
        fuzz_one_input(b"");
        fuzz_one_input(b"\x00");
        let mut input = vec![0x80u8];
        let req = b"GET / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc";
        let resp = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
        // Data ops of 7 * 7 = 49 bytes: egress then ingress, then a gap and a drain.
        input.push(7 << 3);
        input.extend_from_slice(&req[..]);
        input.extend(std::iter::repeat_n(b'x', 49 - req.len()));
        input.push((7 << 3) | 1);
        input.extend_from_slice(&resp[..49]);
        input.push((3 << 3) | 4);
        input.push(6);
        fuzz_one_input(&input);
        for config in [0x00u8, 0x13, 0x7f, 0xff] {
            input[0] = config;
            fuzz_one_input(&input);
        }
    }
}
