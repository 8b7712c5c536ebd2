//! Incremental HTTP/1.x message parser for one direction of a connection.
//!
//! Bytes arrive in arbitrary pieces; the parser keeps only what it cannot decide on yet
//! (an incomplete header block or chunk-size line) and streams bodies straight through,
//! keeping at most `max_body_bytes` of each. httparse parses start lines and headers;
//! body framing (Content-Length, chunked, until close) is done here. When the stream
//! stops making sense (garbage, a gap outside a body) the parser drops the partial
//! message and scans forward for something that looks like the start of a message.

use std::collections::VecDeque;
use std::mem;

use httparse::Status;

use crate::protocols::ParserLimits;

/// Longest chunk-size line (size, extensions, CRLF) accepted; longer ones are garbage.
pub(crate) const CHUNK_LINE_MAX: usize = 1024;

/// Most headers per message (httparse parses into a fixed array); more make it garbage.
pub(crate) const MAX_HEADERS: usize = 128;

/// Request methods that inference and resynchronisation recognise.
pub(crate) const KNOWN_METHODS: [&[u8]; 9] = [
    b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"CONNECT", b"OPTIONS", b"TRACE", b"PATCH",
];

/// Which kind of message a parser expects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum MessageKind {
    /// Requests: request line, headers, body framed by Content-Length or chunked.
    Request,
    /// Responses: status line, headers, body framing that may depend on the request.
    Response,
}

/// What the response parser must know about the request a response answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum MethodClass {
    /// `HEAD`: the response has no body whatever its headers say.
    Head,
    /// `CONNECT`: a 2xx response turns the connection into a tunnel.
    Connect,
    /// Anything else.
    Other,
}

/// One parsed HTTP/1.x message.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct HttpMessage {
    /// Timestamp of the `on_data` call that delivered the message's first byte.
    pub(crate) ts_ns: u64,
    /// `x` in `HTTP/1.x`.
    pub(crate) minor_version: u8,
    /// Request method; empty for responses.
    pub(crate) method: String,
    /// Request target; empty for responses.
    pub(crate) path: String,
    /// Response status code; 0 for requests.
    pub(crate) status: u16,
    /// Response reason phrase; empty for requests.
    pub(crate) reason: String,
    /// Headers in arrival order, names as sent, values as raw bytes.
    pub(crate) headers: Headers,
    /// The first `max_body_bytes` bytes of the decoded body.
    pub(crate) body: Vec<u8>,
    /// The real decoded body size, including bytes that were not captured.
    pub(crate) body_size: u64,
}

/// A message's headers: the stretch of the header block their names and values lie in,
/// copied once however many headers there are, and where each name and value is in it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Headers {
    /// The header block as received, from the first name to the end of the last value.
    bytes: Box<[u8]>,
    /// Per header, in arrival order, where its name and its value are in `bytes`.
    spans: Box<[HeaderSpan]>,
}

/// Where one header's name and value are in [`Headers::bytes`] (start, end).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct HeaderSpan {
    name: (u32, u32),
    value: (u32, u32),
}

impl Headers {
    /// Keeps httparse's headers, which borrow from `head`, the block they were parsed from.
    fn from_httparse(head: &[u8], headers: &[httparse::Header<'_>]) -> Self {
        Self::spans_of(head, headers).unwrap_or_else(|| Self::copied(headers))
    }

    /// One copy of the part of `head` that the headers lie in, and where each lies; None
    /// when there are no headers or one does not lie in `head`.
    fn spans_of(head: &[u8], headers: &[httparse::Header<'_>]) -> Option<Self> {
        let base = head.as_ptr().addr();
        let from = headers.first()?.name.as_ptr().addr().checked_sub(base)?;
        let place = |part: &[u8]| -> Option<(u32, u32)> {
            let start = part.as_ptr().addr().checked_sub(base)?.checked_sub(from)?;
            Some((offset(start), offset(start + part.len())))
        };
        // Sized up front: collecting through `Option` would grow the vector step by step.
        let mut spans = Vec::with_capacity(headers.len());
        for h in headers {
            spans.push(HeaderSpan {
                name: place(h.name.as_bytes())?,
                value: place(h.value)?,
            });
        }
        let to = from.checked_add(spans.last()?.value.1 as usize)?;
        Some(Self {
            bytes: head.get(from..to)?.into(),
            spans: spans.into_boxed_slice(),
        })
    }

    /// Names and values copied back to back (headers that are not all in one block).
    fn copied(headers: &[httparse::Header<'_>]) -> Self {
        let total = headers.iter().map(|h| h.name.len() + h.value.len()).sum();
        let mut bytes = Vec::with_capacity(total);
        let mut spans = Vec::with_capacity(headers.len());
        for h in headers {
            let start = offset(bytes.len());
            bytes.extend_from_slice(h.name.as_bytes());
            let name_end = offset(bytes.len());
            bytes.extend_from_slice(h.value);
            spans.push(HeaderSpan {
                name: (start, name_end),
                value: (name_end, offset(bytes.len())),
            });
        }
        Self {
            bytes: bytes.into_boxed_slice(),
            spans: spans.into_boxed_slice(),
        }
    }

    /// Headers from (name, value) pairs, for tests.
    #[cfg(test)]
    pub(crate) fn from_pairs(pairs: &[(&str, &[u8])]) -> Self {
        let headers: Vec<httparse::Header<'_>> = pairs
            .iter()
            .map(|(name, value)| httparse::Header { name, value })
            .collect();
        Self::copied(&headers)
    }

    /// (name, value) of each header, in arrival order; names as bytes (httparse checked
    /// they are tokens), so that nothing is validated again on the per-row path.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        (0..self.len()).map(|i| self.get(i))
    }

    /// Header `i` (name, value); empty past the end.
    pub(crate) fn get(&self, i: usize) -> (&[u8], &[u8]) {
        let Some(span) = self.spans.get(i) else {
            return (&[], &[]);
        };
        let part = |(start, end): (u32, u32)| {
            self.bytes
                .get(start as usize..end as usize)
                .unwrap_or_default()
        };
        (part(span.name), part(span.value))
    }

    /// How many headers there are.
    pub(crate) fn len(&self) -> usize {
        self.spans.len()
    }

    /// Bytes kept for names and values (with the separators between them when they are
    /// kept as received).
    #[cfg(test)]
    fn text_len(&self) -> usize {
        self.bytes.len()
    }

    /// Heap bytes held.
    fn heap_bytes(&self) -> usize {
        self.bytes.len() + self.spans.len() * mem::size_of::<HeaderSpan>()
    }
}

/// An offset into a header block (at most `max_header_bytes`, far below 4 GiB).
fn offset(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

impl HttpMessage {
    /// Values of every header called `name` (case-insensitive), in arrival order.
    pub(crate) fn header_values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| v)
    }

    /// A 1xx response other than 101: the final response is still to come.
    pub(crate) fn is_interim(&self) -> bool {
        (100..200).contains(&self.status) && self.status != 101
    }

    /// How a response to this request is framed.
    pub(crate) fn method_class(&self) -> MethodClass {
        match self.method.as_str() {
            "HEAD" => MethodClass::Head,
            "CONNECT" => MethodClass::Connect,
            _ => MethodClass::Other,
        }
    }

    /// Heap bytes this message holds.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.method.capacity()
            + self.path.capacity()
            + self.reason.capacity()
            + self.headers.heap_bytes()
            + self.body.capacity()
    }

    /// Upper bound of [`HttpMessage::heap_bytes`] for a message parsed under `limits`.
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn heap_bound(limits: &ParserLimits) -> usize {
        // Start line and header strings are substrings of the header block.
        limits.max_header_bytes + MAX_HEADERS * mem::size_of::<HeaderSpan>() + limits.max_body_bytes
    }
}

/// Receives what a [`MessageParser`] produces.
pub(crate) trait MessageSink {
    /// A complete message.
    fn message(&mut self, msg: HttpMessage);
    /// The parser lost track of the stream: messages may have been lost here.
    fn desync(&mut self) {}
}

impl MessageSink for Vec<HttpMessage> {
    fn message(&mut self, msg: HttpMessage) {
        self.push(msg);
    }
}

/// Where a chunked body is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Chunk {
    /// Reading a chunk-size line (buffered).
    Size,
    /// Inside chunk data, with this many bytes left.
    Data(u64),
    /// Expecting the CRLF that ends chunk data.
    DataEnd,
    /// After the last chunk: trailer lines until an empty line (streamed, discarded).
    Trailers {
        /// Bytes in the current line, CR excluded.
        line_len: usize,
        /// Trailer bytes seen so far.
        total: usize,
    },
}

/// How the body of the message being parsed ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Framing {
    /// This many bytes are left.
    Length(u64),
    /// Transfer-Encoding: chunked.
    Chunked(Chunk),
    /// Everything until the connection closes.
    UntilClose,
}

/// The parser's position in the stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Waiting for a header block; `buf[0]` is its first byte.
    Head {
        /// Resynchronising: only known methods start a request, and leading newlines are garbage.
        strict: bool,
        /// The start line has been checked.
        line_ok: bool,
        /// `buf` offset from which the end of the header block is still to be searched.
        scanned: usize,
    },
    /// Inside the body of `msg`.
    Body(Framing),
    /// The connection switched protocols (101, CONNECT tunnel): nothing more is HTTP.
    Upgraded,
}

impl State {
    /// Start of a message, in sync or resynchronising.
    fn head(strict: bool) -> Self {
        State::Head {
            strict,
            line_ok: false,
            scanned: 0,
        }
    }
}

/// How a message's start line looks so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LineCheck {
    /// It cannot be a start line.
    Invalid,
    /// Consistent with a start line so far.
    Partial,
    /// It is one (as far as this check goes: httparse has the last word).
    Valid,
}

/// How the body of a just-parsed head is framed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BodyKind {
    None,
    Length(u64),
    Chunked,
    UntilClose,
}

/// A parsed header block.
struct ParsedHead {
    msg: HttpMessage,
    len: usize,
    body: BodyKind,
    /// The connection stops being HTTP after this message.
    upgrade: bool,
}

/// Incremental parser for one direction's stream of requests or responses.
#[derive(Debug)]
pub(crate) struct MessageParser {
    kind: MessageKind,
    limits: ParserLimits,
    state: State,
    /// Bytes not yet consumed: an incomplete header block or chunk-size line.
    buf: Vec<u8>,
    /// How many bytes at the front of `buf` arrived before the current call.
    carried: usize,
    /// Timestamp of the call that delivered `buf[0]`.
    start_ts: u64,
    /// Timestamp of the current call.
    now: u64,
    /// The message whose body is being read.
    msg: Option<HttpMessage>,
    /// Methods of requests whose final responses have not been parsed yet (responses only).
    methods: VecDeque<MethodClass>,
    bytes_skipped: u64,
}

impl MessageParser {
    /// A parser at the start of a stream.
    pub(crate) fn new(kind: MessageKind, limits: ParserLimits) -> Self {
        Self {
            kind,
            limits,
            state: State::head(false),
            buf: Vec::new(),
            carried: 0,
            start_ts: 0,
            now: 0,
            msg: None,
            methods: VecDeque::new(),
            bytes_skipped: 0,
        }
    }

    /// Upper bound of [`MessageParser::buffered_bytes`] under `limits`, whatever the input.
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn memory_bound(limits: &ParserLimits) -> usize {
        // Between calls a partial header block (up to max_header_bytes + 1) is buffered only
        // while no message is in progress, and a message in progress leaves at most a
        // chunk-size line in the buffer.
        let buf_or_message =
            (limits.max_header_bytes + 1).max(CHUNK_LINE_MAX + 1 + HttpMessage::heap_bound(limits));
        // VecDeque may round its capacity up to twice what it holds.
        let methods = 2 * limits.max_pending_messages.max(1) + 8;
        buf_or_message + methods * mem::size_of::<MethodClass>()
    }

    /// Records the method of a request whose response this (response) parser will see.
    pub(crate) fn push_request_method(&mut self, method: MethodClass) {
        if self.kind != MessageKind::Response || self.state == State::Upgraded {
            return;
        }
        // Bounded like the stitcher's queue: older entries are the least likely to matter.
        if self.methods.len() >= self.limits.max_pending_messages.max(1) {
            self.methods.pop_front();
        }
        self.methods.push_back(method);
    }

    /// The connection switched protocols: ignore everything from now on.
    pub(crate) fn upgrade(&mut self) {
        self.state = State::Upgraded;
        self.msg = None;
        self.buf = Vec::new();
        self.carried = 0;
        self.methods = VecDeque::new();
    }

    /// Whether the connection switched protocols.
    pub(crate) fn is_upgraded(&self) -> bool {
        self.state == State::Upgraded
    }

    /// Bytes dropped because they did not parse.
    pub(crate) fn bytes_skipped(&self) -> u64 {
        self.bytes_skipped
    }

    /// Heap bytes currently held.
    pub(crate) fn buffered_bytes(&self) -> usize {
        self.buf.capacity()
            + self.msg.as_ref().map_or(0, HttpMessage::heap_bytes)
            + self.methods.capacity() * mem::size_of::<MethodClass>()
    }

    /// Whether the buffers are within what the current state allows (checked between calls).
    #[cfg(test)]
    pub(crate) fn invariants_hold(&self) -> bool {
        let limits = &self.limits;
        let buf_ok = match self.state {
            State::Head { .. } => {
                self.msg.is_none() && self.buf.capacity() <= limits.max_header_bytes + 1
            }
            State::Body(Framing::Chunked(Chunk::Size)) => self.buf.capacity() <= CHUNK_LINE_MAX + 1,
            State::Body(_) | State::Upgraded => self.buf.capacity() == 0,
        };
        let msg_ok = self.msg.as_ref().is_none_or(|m| {
            let text = m.headers.text_len();
            m.body.capacity() <= limits.max_body_bytes
                && m.headers.len() <= MAX_HEADERS
                && text + m.method.len() + m.path.len() + m.reason.len() <= limits.max_header_bytes
        });
        let state_ok = match self.state {
            State::Body(_) => self.msg.is_some(),
            _ => self.msg.is_none(),
        };
        buf_ok && msg_ok && state_ok && self.methods.len() <= limits.max_pending_messages.max(1)
    }

    /// The next bytes of the stream, delivered by a call at `ts_ns`.
    pub(crate) fn on_data<S: MessageSink>(&mut self, data: &[u8], ts_ns: u64, sink: &mut S) {
        self.now = ts_ns;
        self.carried = self.buf.len();
        let mut input = data;
        loop {
            self.process_buffered(sink);
            if input.is_empty() || self.state == State::Upgraded {
                break;
            }
            if self.buf.is_empty() && self.streams() {
                let used = self.stream(input, sink);
                input = input.get(used..).unwrap_or_default();
                continue;
            }
            if self.buf.is_empty()
                && let Some(used) = self.head_in_place(input, sink)
            {
                input = input.get(used..).unwrap_or_default();
                continue;
            }
            let room = self.buf_limit().saturating_sub(self.buf.len());
            if room == 0 {
                // Unreachable when processing keeps its bounds; never loop forever if not.
                self.desync_clear(sink);
                continue;
            }
            let (piece, rest) = input.split_at(room.min(input.len()));
            self.push_buf(piece);
            input = rest;
        }
        self.trim();
    }

    /// `len` bytes of the stream were not captured.
    pub(crate) fn on_gap<S: MessageSink>(&mut self, len: u64, sink: &mut S) {
        if len == 0 {
            return;
        }
        match self.state {
            State::Upgraded => {}
            State::Body(Framing::UntilClose) => self.add_body_size(len),
            State::Body(Framing::Length(left)) if self.buf.is_empty() => {
                let covered = len.min(left);
                if covered == left {
                    self.finish_message(sink);
                } else {
                    self.state = State::Body(Framing::Length(left - covered));
                }
                if len > covered {
                    self.desync_clear(sink);
                }
            }
            State::Body(Framing::Chunked(Chunk::Data(left))) if self.buf.is_empty() => {
                let covered = len.min(left);
                self.state = if covered == left {
                    State::Body(Framing::Chunked(Chunk::DataEnd))
                } else {
                    State::Body(Framing::Chunked(Chunk::Data(left - covered)))
                };
                if len > covered {
                    self.desync_clear(sink);
                }
            }
            _ => self.desync_clear(sink),
        }
        self.trim();
    }

    /// The connection closed: a body delimited by the close is complete; the rest is dropped.
    pub(crate) fn on_close<S: MessageSink>(&mut self, sink: &mut S) {
        match self.state {
            State::Upgraded => {}
            State::Body(Framing::UntilClose) => self.finish_message(sink),
            _ => self.bytes_skipped += self.buf.len() as u64,
        }
        if self.state != State::Upgraded {
            self.state = State::head(false);
        }
        self.msg = None;
        self.buf = Vec::new();
        self.carried = 0;
        self.methods = VecDeque::new();
    }

    /// Consumes buffered bytes until more input is needed.
    fn process_buffered<S: MessageSink>(&mut self, sink: &mut S) {
        loop {
            let progressed = match self.state {
                State::Head { .. } => self.head_step(sink),
                State::Body(Framing::Chunked(Chunk::Size)) => self.chunk_size_step(sink),
                State::Body(_) => self.stream_buffered(sink),
                State::Upgraded => {
                    self.clear_buf();
                    false
                }
            };
            if !progressed {
                break;
            }
        }
    }

    /// Whether the current state consumes input without buffering it.
    fn streams(&self) -> bool {
        matches!(self.state, State::Body(f) if f != Framing::Chunked(Chunk::Size))
    }

    /// How many bytes `buf` may hold in the current state.
    fn buf_limit(&self) -> usize {
        match self.state {
            State::Body(Framing::Chunked(Chunk::Size)) => CHUNK_LINE_MAX + 1,
            // One byte over the limit shows that a header block is too large.
            _ => self.limits.max_header_bytes + 1,
        }
    }

    /// Appends input to `buf`, growing it geometrically but never past the state's limit.
    fn push_buf(&mut self, bytes: &[u8]) {
        if self.buf.is_empty() {
            self.start_ts = self.now;
        }
        let need = self.buf.len() + bytes.len();
        if need > self.buf.capacity() {
            let target = (self.buf.capacity() * 2)
                .max(256)
                .min(self.buf_limit())
                .max(need);
            self.buf.reserve_exact(target - self.buf.len());
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Removes `n` bytes from the front of `buf`, keeping `start_ts` about the new front.
    fn drain_front(&mut self, n: usize) {
        let n = n.min(self.buf.len());
        self.buf.drain(..n);
        if n >= self.carried {
            // Eager processing means whatever follows arrived in the current call.
            self.start_ts = self.now;
            self.carried = 0;
        } else {
            self.carried -= n;
        }
    }

    fn clear_buf(&mut self) {
        self.buf.clear();
        self.carried = 0;
    }

    /// Gives back memory the current state does not need.
    fn trim(&mut self) {
        if self.buf.is_empty() {
            // Idle connections should cost nothing; one allocation per message is cheap.
            self.buf = Vec::new();
            return;
        }
        let limit = self.buf_limit().max(self.buf.len());
        if self.buf.capacity() > limit {
            self.buf.shrink_to(limit);
        }
    }

    /// Looks for a complete header block at the front of `buf`; true if anything changed.
    fn head_step<S: MessageSink>(&mut self, sink: &mut S) -> bool {
        let State::Head {
            strict,
            mut line_ok,
            scanned,
        } = self.state
        else {
            return false;
        };
        if !line_ok {
            // RFC 9112 §2.2: ignore empty lines where a message should start.
            let newlines = self
                .buf
                .iter()
                .take_while(|b| matches!(b, b'\r' | b'\n'))
                .count();
            if !strict && newlines > 0 {
                self.drain_front(newlines);
                return true;
            }
            if self.buf.is_empty() {
                return false;
            }
            match check_start_line(self.kind, strict, &self.buf) {
                LineCheck::Invalid => return self.skip_garbage(sink),
                LineCheck::Partial if self.buf.len() > self.limits.max_header_bytes => {
                    return self.skip_garbage(sink);
                }
                LineCheck::Partial => return false,
                LineCheck::Valid => line_ok = true,
            }
        }
        match find_head_end(&self.buf, scanned) {
            Ok(end) if end <= self.limits.max_header_bytes => self.parse_head(end, sink),
            Ok(_) => self.skip_garbage(sink),
            Err(_) if self.buf.len() > self.limits.max_header_bytes => self.skip_garbage(sink),
            Err(scanned) => {
                self.state = State::Head {
                    strict,
                    line_ok,
                    scanned,
                };
                false
            }
        }
    }

    /// A header block that arrives whole, at the start of a message, is parsed where it
    /// lies instead of being copied into `buf` first (the common case: a request or a
    /// response head in one read). Returns the bytes used, or `None` to take the
    /// buffered path, which handles everything else (leading newlines, garbage, a head
    /// split across reads).
    fn head_in_place<S: MessageSink>(&mut self, input: &[u8], sink: &mut S) -> Option<usize> {
        let State::Head { strict, .. } = self.state else {
            return None;
        };
        if check_start_line(self.kind, strict, input) != LineCheck::Valid {
            return None;
        }
        let end = find_head_end(input, 0).ok()?;
        if end > self.limits.max_header_bytes {
            return None;
        }
        let parsed = self.parse_head_bytes(input.get(..end)?)?;
        let len = parsed.len;
        self.start_message(parsed, self.now, sink);
        Some(len)
    }

    /// Parses `buf[..end]`, a complete header block, and starts its body.
    fn parse_head<S: MessageSink>(&mut self, end: usize, sink: &mut S) -> bool {
        let Some(parsed) = self.parse_head_bytes(&self.buf[..end]) else {
            return self.skip_garbage(sink);
        };
        let ts = self.start_ts;
        self.drain_front(parsed.len);
        self.start_message(parsed, ts, sink);
        true
    }

    /// Parses a complete header block of the kind this parser reads.
    fn parse_head_bytes(&self, head: &[u8]) -> Option<ParsedHead> {
        match self.kind {
            MessageKind::Request => parse_request(head),
            MessageKind::Response => parse_response(
                head,
                self.methods.front().copied().unwrap_or(MethodClass::Other),
            ),
        }
    }

    /// Starts the message of a parsed head whose first byte arrived at `ts`.
    fn start_message<S: MessageSink>(&mut self, parsed: ParsedHead, ts: u64, sink: &mut S) {
        let ParsedHead {
            mut msg,
            body,
            upgrade,
            ..
        } = parsed;
        if self.kind == MessageKind::Response && !msg.is_interim() {
            self.methods.pop_front();
            if self.methods.is_empty() {
                self.methods = VecDeque::new();
            }
        }
        msg.ts_ns = ts;
        self.msg = Some(msg);
        match body {
            BodyKind::None => self.finish_message(sink),
            BodyKind::Length(n) => {
                self.add_body_size(n);
                self.state = State::Body(Framing::Length(n));
            }
            BodyKind::Chunked => self.state = State::Body(Framing::Chunked(Chunk::Size)),
            BodyKind::UntilClose => self.state = State::Body(Framing::UntilClose),
        }
        if upgrade {
            self.upgrade();
        }
    }

    /// Drops at least one byte and everything before the next plausible message start.
    fn skip_garbage<S: MessageSink>(&mut self, sink: &mut S) -> bool {
        let next = (1..self.buf.len())
            .find(|&i| check_start_line(self.kind, true, &self.buf[i..]) != LineCheck::Invalid)
            .unwrap_or(self.buf.len());
        self.bytes_skipped += next as u64;
        self.drain_front(next);
        self.state = State::head(true);
        sink.desync();
        true
    }

    /// Parses a buffered chunk-size line; true if anything changed.
    fn chunk_size_step<S: MessageSink>(&mut self, sink: &mut S) -> bool {
        let Some(lf) = self.buf.iter().position(|&b| b == b'\n') else {
            if self.buf.len() > CHUNK_LINE_MAX {
                self.lose_message(sink);
                return true;
            }
            return false;
        };
        match httparse::parse_chunk_size(&self.buf[..=lf]) {
            Ok(Status::Complete((used, size))) if lf < CHUNK_LINE_MAX => {
                self.drain_front(used);
                self.add_body_size(size);
                let chunk = if size == 0 {
                    Chunk::Trailers {
                        line_len: 0,
                        total: 0,
                    }
                } else {
                    Chunk::Data(size)
                };
                self.state = State::Body(Framing::Chunked(chunk));
            }
            _ => self.lose_message(sink),
        }
        true
    }

    /// Streams buffered bytes through a body state; true if anything changed.
    fn stream_buffered<S: MessageSink>(&mut self, sink: &mut S) -> bool {
        if self.buf.is_empty() {
            return false;
        }
        let before = self.state;
        // `stream` never touches `buf`, so it can read it while it is taken out.
        let buf = mem::take(&mut self.buf);
        let used = self.stream(&buf, sink);
        self.buf = buf;
        self.drain_front(used);
        used > 0 || self.state != before
    }

    /// Consumes body bytes from `src` in a streaming state; returns how many.
    fn stream<S: MessageSink>(&mut self, src: &[u8], sink: &mut S) -> usize {
        let State::Body(framing) = self.state else {
            return 0;
        };
        match framing {
            Framing::Length(left) => {
                let n = take_len(left, src.len());
                self.keep_body(&src[..n]);
                let left = left - n as u64;
                if left == 0 {
                    self.finish_message(sink);
                } else {
                    self.state = State::Body(Framing::Length(left));
                }
                n
            }
            Framing::UntilClose => {
                self.keep_body(src);
                self.add_body_size(src.len() as u64);
                src.len()
            }
            Framing::Chunked(Chunk::Data(left)) => {
                let n = take_len(left, src.len());
                self.keep_body(&src[..n]);
                let left = left - n as u64;
                let chunk = if left == 0 {
                    Chunk::DataEnd
                } else {
                    Chunk::Data(left)
                };
                self.state = State::Body(Framing::Chunked(chunk));
                n
            }
            Framing::Chunked(Chunk::DataEnd) => self.chunk_data_end(src, sink),
            Framing::Chunked(Chunk::Trailers { line_len, total }) => {
                self.trailers(src, line_len, total, sink)
            }
            Framing::Chunked(Chunk::Size) => 0,
        }
    }

    /// Consumes the CRLF after chunk data.
    fn chunk_data_end<S: MessageSink>(&mut self, src: &[u8], sink: &mut S) -> usize {
        for (i, &b) in src.iter().enumerate() {
            match b {
                b'\r' => {}
                b'\n' => {
                    self.state = State::Body(Framing::Chunked(Chunk::Size));
                    return i + 1;
                }
                _ => {
                    // Leave the offending byte for resynchronisation.
                    self.lose_message(sink);
                    return i;
                }
            }
        }
        src.len()
    }

    /// Consumes trailer lines up to and including the empty line that ends the message.
    fn trailers<S: MessageSink>(
        &mut self,
        src: &[u8],
        mut line_len: usize,
        mut total: usize,
        sink: &mut S,
    ) -> usize {
        for (i, &b) in src.iter().enumerate() {
            total += 1;
            if total > self.limits.max_header_bytes {
                self.lose_message(sink);
                return i;
            }
            match b {
                b'\n' if line_len == 0 => {
                    self.finish_message(sink);
                    return i + 1;
                }
                b'\n' => line_len = 0,
                b'\r' => {}
                _ => line_len += 1,
            }
        }
        self.state = State::Body(Framing::Chunked(Chunk::Trailers { line_len, total }));
        src.len()
    }

    /// Keeps body bytes up to the limit, growing the body geometrically up to it.
    fn keep_body(&mut self, bytes: &[u8]) {
        let max = self.limits.max_body_bytes;
        let Some(msg) = self.msg.as_mut() else {
            return;
        };
        let n = max.saturating_sub(msg.body.len()).min(bytes.len());
        if n == 0 {
            return;
        }
        let need = msg.body.len() + n;
        if need > msg.body.capacity() {
            let target = (msg.body.capacity() * 2).max(64).min(max).max(need);
            msg.body.reserve_exact(target - msg.body.len());
        }
        msg.body.extend_from_slice(&bytes[..n]);
    }

    fn add_body_size(&mut self, n: u64) {
        if let Some(msg) = self.msg.as_mut() {
            msg.body_size = msg.body_size.saturating_add(n);
        }
    }

    /// The current message is complete: hand it over and wait for the next one.
    fn finish_message<S: MessageSink>(&mut self, sink: &mut S) {
        if let Some(msg) = self.msg.take() {
            sink.message(msg);
        }
        self.state = State::head(false);
    }

    /// The current message's body does not parse: drop it and resynchronise.
    fn lose_message<S: MessageSink>(&mut self, sink: &mut S) {
        self.msg = None;
        self.state = State::head(true);
        sink.desync();
    }

    /// Lost track (a gap): drop the partial message and anything buffered, then resynchronise.
    fn desync_clear<S: MessageSink>(&mut self, sink: &mut S) {
        self.bytes_skipped += self.buf.len() as u64;
        self.clear_buf();
        self.lose_message(sink);
    }
}

/// Converts a remaining count to how much of `avail` it covers.
fn take_len(left: u64, avail: usize) -> usize {
    usize::try_from(left).map_or(avail, |left| left.min(avail))
}

/// Finds the end of a header block (just past its empty line), searching from `from`.
///
/// Returns `Err(offset)` with where to resume searching once more bytes arrived.
fn find_head_end(buf: &[u8], from: usize) -> Result<usize, usize> {
    let mut i = from.min(buf.len());
    while let Some(off) = memchr::memchr(b'\n', &buf[i..]) {
        let lf = i + off;
        match (buf.get(lf + 1), buf.get(lf + 2)) {
            (Some(b'\n'), _) => return Ok(lf + 2),
            (Some(b'\r'), Some(b'\n')) => return Ok(lf + 3),
            (None, _) | (Some(b'\r'), None) => return Err(lf),
            _ => i = lf + 1,
        }
    }
    Err(buf.len())
}

/// httparse settings: lenient where being lenient cannot misframe a body.
fn parser_config() -> httparse::ParserConfig {
    let mut config = httparse::ParserConfig::default();
    config
        .allow_spaces_after_header_name_in_responses(true)
        .allow_obsolete_multiline_headers_in_responses(true)
        .ignore_invalid_headers_in_responses(true)
        .ignore_invalid_headers_in_requests(true);
    config
}

/// Parses a complete request header block.
fn parse_request(head: &[u8]) -> Option<ParsedHead> {
    // Uninitialised: zeroing 128 headers (4 KiB) was a fifth of the cost of a parse.
    let mut headers = [const { mem::MaybeUninit::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let Ok(Status::Complete(len)) =
        parser_config().parse_request_with_uninit_headers(&mut req, head, &mut headers)
    else {
        return None;
    };
    let msg = HttpMessage {
        minor_version: req.version?,
        method: req.method?.to_owned(),
        path: req.path?.to_owned(),
        headers: Headers::from_httparse(head, req.headers),
        ..HttpMessage::default()
    };
    let body = request_body(&msg)?;
    Some(ParsedHead {
        msg,
        len,
        body,
        upgrade: false,
    })
}

/// Parses a complete response header block; `method` is the request it answers.
fn parse_response(head: &[u8], method: MethodClass) -> Option<ParsedHead> {
    let mut headers = [const { mem::MaybeUninit::uninit() }; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut []);
    let Ok(Status::Complete(len)) =
        parser_config().parse_response_with_uninit_headers(&mut resp, head, &mut headers)
    else {
        return None;
    };
    let msg = HttpMessage {
        minor_version: resp.version?,
        status: resp.code?,
        reason: resp.reason.unwrap_or_default().to_owned(),
        headers: Headers::from_httparse(head, resp.headers),
        ..HttpMessage::default()
    };
    let (body, upgrade) = response_body(&msg, method)?;
    Some(ParsedHead {
        msg,
        len,
        body,
        upgrade,
    })
}

/// RFC 9112 §6.3 for requests: chunked, Content-Length, or no body. None: unframeable.
fn request_body(msg: &HttpMessage) -> Option<BodyKind> {
    match transfer_chunked(msg) {
        Some(true) => Some(BodyKind::Chunked),
        // A request cannot be delimited by the close, so its length is unknowable.
        Some(false) => None,
        None => match content_length(msg)? {
            None | Some(0) => Some(BodyKind::None),
            Some(n) => Some(BodyKind::Length(n)),
        },
    }
}

/// RFC 9112 §6.3 for responses; also says whether the connection stops being HTTP.
fn response_body(msg: &HttpMessage, method: MethodClass) -> Option<(BodyKind, bool)> {
    let status = msg.status;
    if status == 101 {
        return Some((BodyKind::None, true));
    }
    if (100..200).contains(&status) || status == 204 || status == 304 {
        return Some((BodyKind::None, false));
    }
    match method {
        MethodClass::Head => return Some((BodyKind::None, false)),
        MethodClass::Connect if (200..300).contains(&status) => {
            return Some((BodyKind::None, true));
        }
        _ => {}
    }
    let body = match transfer_chunked(msg) {
        Some(true) => BodyKind::Chunked,
        Some(false) => BodyKind::UntilClose,
        None => match content_length(msg)? {
            None => BodyKind::UntilClose,
            Some(0) => BodyKind::None,
            Some(n) => BodyKind::Length(n),
        },
    };
    Some((body, false))
}

/// Whether Transfer-Encoding ends in `chunked`; None without the header.
fn transfer_chunked(msg: &HttpMessage) -> Option<bool> {
    let mut present = false;
    let mut last: &[u8] = b"";
    for value in msg.header_values("transfer-encoding") {
        present = true;
        for coding in value.split(|&b| b == b',').map(trim) {
            if !coding.is_empty() {
                last = coding;
            }
        }
    }
    present.then(|| last.eq_ignore_ascii_case(b"chunked"))
}

/// The Content-Length value: Ok(None) without one; None when malformed or contradictory.
fn content_length(msg: &HttpMessage) -> Option<Option<u64>> {
    let mut found = None;
    for value in msg.header_values("content-length") {
        // Repeated or comma-listed values are fine as long as they agree (RFC 9110 §8.6).
        for part in value.split(|&b| b == b',').map(trim) {
            let n = parse_decimal(part)?;
            if found.is_some_and(|f| f != n) {
                return None;
            }
            found = Some(n);
        }
    }
    Some(found)
}

/// A non-empty run of ASCII digits that fits in u64.
fn parse_decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |acc, &d| {
        d.is_ascii_digit()
            .then_some(())
            .and_then(|()| acc.checked_mul(10))
            .and_then(|acc| acc.checked_add(u64::from(d - b'0')))
    })
}

/// Strips spaces and tabs from both ends.
fn trim(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|b| !matches!(b, b' ' | b'\t'))
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !matches!(b, b' ' | b'\t'))
        .map_or(start, |e| e + 1);
    &bytes[start..end]
}

/// Checks whether `buf` starts (or could start) with a start line of `kind`.
///
/// `strict` only accepts [`KNOWN_METHODS`], which keeps resynchronisation from locking
/// onto body text.
pub(crate) fn check_start_line(kind: MessageKind, strict: bool, buf: &[u8]) -> LineCheck {
    match kind {
        MessageKind::Request => check_request_line(buf, strict),
        MessageKind::Response => check_status_line(buf),
    }
}

/// `METHOD SP target SP HTTP/1.x CRLF`.
fn check_request_line(buf: &[u8], strict: bool) -> LineCheck {
    let method_len = buf.iter().position(|&b| !is_tchar(b)).unwrap_or(buf.len());
    let method = &buf[..method_len];
    if strict && !KNOWN_METHODS.iter().any(|m| m.starts_with(method)) {
        return LineCheck::Invalid;
    }
    let Some(&sep) = buf.get(method_len) else {
        return LineCheck::Partial;
    };
    if method_len == 0 || sep != b' ' || (strict && !KNOWN_METHODS.contains(&method)) {
        return LineCheck::Invalid;
    }
    let rest = &buf[method_len + 1..];
    let target_len = rest
        .iter()
        .position(|&b| !is_target_byte(b))
        .unwrap_or(rest.len());
    let Some(&sep) = rest.get(target_len) else {
        return LineCheck::Partial;
    };
    if target_len == 0 || sep != b' ' {
        return LineCheck::Invalid;
    }
    check_version_eol(&rest[target_len + 1..])
}

/// `HTTP/1.x` then CRLF or LF, ending a request line.
fn check_version_eol(buf: &[u8]) -> LineCheck {
    for (i, &b) in buf.iter().enumerate() {
        let ok = match i {
            0..=6 => b == b"HTTP/1."[i],
            7 => matches!(b, b'0' | b'1'),
            8 => matches!(b, b'\r' | b'\n'),
            _ => buf[8] == b'\r' && b == b'\n',
        };
        if !ok {
            return LineCheck::Invalid;
        }
        if i == 9 || (i == 8 && b == b'\n') {
            return LineCheck::Valid;
        }
    }
    LineCheck::Partial
}

/// `HTTP/1.x SP digit digit digit` then SP or end of line.
fn check_status_line(buf: &[u8]) -> LineCheck {
    for (i, &b) in buf.iter().enumerate() {
        let ok = match i {
            0..=6 => b == b"HTTP/1."[i],
            7 => matches!(b, b'0' | b'1'),
            8 => b == b' ',
            9..=11 => b.is_ascii_digit(),
            _ => matches!(b, b' ' | b'\r' | b'\n'),
        };
        if !ok {
            return LineCheck::Invalid;
        }
        if i == 12 {
            return LineCheck::Valid;
        }
    }
    LineCheck::Partial
}

/// RFC 9110 token character.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A byte httparse accepts in a request target.
fn is_target_byte(b: u8) -> bool {
    b > b' ' && b != 0x7f
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Collects messages and counts desyncs.
    #[derive(Default)]
    struct Collect {
        msgs: Vec<HttpMessage>,
        desyncs: usize,
    }

    impl MessageSink for Collect {
        fn message(&mut self, msg: HttpMessage) {
            self.msgs.push(msg);
        }
        fn desync(&mut self) {
            self.desyncs += 1;
        }
    }

    fn limits() -> ParserLimits {
        ParserLimits {
            max_body_bytes: 64,
            max_header_bytes: 1024,
            max_pending_messages: 16,
            redact_credentials: true,
        }
    }

    fn parser(kind: MessageKind) -> MessageParser {
        MessageParser::new(kind, limits())
    }

    /// Feeds `input` in one call and returns what came out.
    fn one_shot(kind: MessageKind, input: &[u8]) -> (Vec<HttpMessage>, MessageParser) {
        let mut p = parser(kind);
        let mut out = Collect::default();
        p.on_data(input, 1, &mut out);
        (out.msgs, p)
    }

    fn header<'a>(m: &'a HttpMessage, name: &'a str) -> Option<&'a [u8]> {
        m.header_values(name).next()
    }

    #[test]
    fn headers_are_kept_as_one_stretch_of_the_block() {
        let (msgs, _) = one_shot(
            MessageKind::Request,
            b"GET / HTTP/1.1\r\nHost: a\r\nX-Empty:\r\nAccept: */*\r\n\r\n",
        );
        let headers = &msgs[0].headers;
        let pairs: Vec<(&[u8], &[u8])> = headers.iter().collect();
        assert_eq!(
            pairs,
            [
                (&b"Host"[..], &b"a"[..]),
                (&b"X-Empty"[..], &b""[..]),
                (&b"Accept"[..], &b"*/*"[..])
            ]
        );
        assert_eq!(
            headers.text_len(),
            "Host: a\r\nX-Empty:\r\nAccept: */*".len()
        );
    }

    #[test]
    fn parses_request_line_and_headers() {
        let (msgs, p) = one_shot(
            MessageKind::Request,
            b"GET /index.html?q=1 HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\n\r\n",
        );
        assert_eq!(msgs.len(), 1);
        let m = &msgs[0];
        assert_eq!(m.method, "GET");
        assert_eq!(m.path, "/index.html?q=1");
        assert_eq!(m.minor_version, 1);
        assert_eq!(m.headers.len(), 2);
        assert_eq!(m.headers.iter().next().unwrap().0, b"Host");
        assert_eq!(header(m, "host"), Some(&b"example.com"[..]));
        assert_eq!(header(m, "ACCEPT"), Some(&b"*/*"[..]));
        assert!(m.body.is_empty());
        assert_eq!(m.body_size, 0);
        assert_eq!(m.ts_ns, 1);
        assert_eq!(p.bytes_skipped(), 0);
        assert_eq!(p.buffered_bytes(), 0);
    }

    #[test]
    fn parses_status_line_and_content_length_body() {
        let (msgs, _) = one_shot(
            MessageKind::Response,
            b"HTTP/1.0 404 Not Found\r\nContent-Length: 3\r\n\r\nabc",
        );
        assert_eq!(msgs.len(), 1);
        assert_eq!(msgs[0].status, 404);
        assert_eq!(msgs[0].reason, "Not Found");
        assert_eq!(msgs[0].minor_version, 0);
        assert_eq!(msgs[0].body, b"abc");
        assert_eq!(msgs[0].body_size, 3);
    }

    #[test]
    fn request_body_by_content_length() {
        let (msgs, _) = one_shot(
            MessageKind::Request,
            b"POST /api HTTP/1.1\r\nContent-Length: 11\r\n\r\n{\"a\": true}GET / HTTP/1.1\r\n\r\n",
        );
        assert_eq!(msgs.len(), 2);
        assert_eq!(msgs[0].body, b"{\"a\": true}");
        assert_eq!(msgs[0].body_size, 11);
        assert_eq!(msgs[1].method, "GET");
    }

    #[test]
    fn request_without_length_has_no_body() {
        let (msgs, p) = one_shot(MessageKind::Request, b"DELETE /x HTTP/1.1\r\n\r\n");
        assert_eq!(msgs.len(), 1);
        assert_eq!(p.buffered_bytes(), 0);
    }

    const CHUNKED: &[u8] = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n\
        5;name=value;x=\"q\"\r\nhello\r\n6\r\n world\r\n0\r\nExpires: never\r\nX-Trailer: 1\r\n\r\n\
        HTTP/1.1 204 No Content\r\n\r\n";

    #[test]
    fn chunked_with_extensions_and_trailers() {
        let (msgs, p) = one_shot(MessageKind::Response, CHUNKED);
        assert_eq!(msgs.len(), 2);
        assert_eq!(msgs[0].body, b"hello world");
        assert_eq!(msgs[0].body_size, 11);
        assert_eq!(msgs[1].status, 204);
        assert_eq!(p.bytes_skipped(), 0);
    }

    #[test]
    fn chunked_split_across_feeds() {
        for split in 1..CHUNKED.len() {
            let mut p = parser(MessageKind::Response);
            let mut out = Collect::default();
            p.on_data(&CHUNKED[..split], 1, &mut out);
            p.on_data(&CHUNKED[split..], 2, &mut out);
            assert_eq!(out.msgs.len(), 2, "split at {split}");
            assert_eq!(out.msgs[0].body, b"hello world", "split at {split}");
            assert_eq!(out.msgs[0].body_size, 11);
            assert_eq!(out.desyncs, 0);
        }
    }

    #[test]
    fn chunked_request_without_trailers() {
        let (msgs, _) = one_shot(
            MessageKind::Request,
            b"PUT /f HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        );
        assert_eq!(msgs.len(), 1);
        assert_eq!(msgs[0].body, b"abc");
    }

    #[test]
    fn chunked_truncated_body_keeps_real_size() {
        let mut input = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        for _ in 0..4 {
            input.extend_from_slice(b"40\r\n");
            input.extend_from_slice(&[b'z'; 0x40]);
            input.extend_from_slice(b"\r\n");
        }
        input.extend_from_slice(b"0\r\n\r\n");
        let (msgs, _) = one_shot(MessageKind::Response, &input);
        assert_eq!(msgs.len(), 1);
        assert_eq!(msgs[0].body.len(), 64);
        assert_eq!(msgs[0].body_size, 256);
    }

    #[test]
    fn keep_alive_hundred_messages() {
        let mut input = Vec::new();
        for i in 0..100 {
            let body = format!("body{i}");
            input.extend_from_slice(
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                )
                .as_bytes(),
            );
        }
        let (msgs, p) = one_shot(MessageKind::Response, &input);
        assert_eq!(msgs.len(), 100);
        for (i, m) in msgs.iter().enumerate() {
            assert_eq!(m.body, format!("body{i}").as_bytes());
        }
        assert_eq!(p.bytes_skipped(), 0);
    }

    #[test]
    fn pipelined_requests_in_one_feed() {
        let (msgs, _) = one_shot(
            MessageKind::Request,
            b"GET /1 HTTP/1.1\r\n\r\nPOST /2 HTTP/1.1\r\nContent-Length: 2\r\n\r\nhiHEAD /3 HTTP/1.1\r\n\r\n",
        );
        let paths: Vec<_> = msgs.iter().map(|m| m.path.as_str()).collect();
        assert_eq!(paths, ["/1", "/2", "/3"]);
        assert_eq!(msgs[2].method_class(), MethodClass::Head);
    }

    #[test]
    fn head_response_has_no_body() {
        let mut p = parser(MessageKind::Response);
        p.push_request_method(MethodClass::Head);
        p.push_request_method(MethodClass::Other);
        let mut out = Collect::default();
        p.on_data(
            b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
            1,
            &mut out,
        );
        assert_eq!(out.msgs.len(), 2);
        assert!(out.msgs[0].body.is_empty());
        assert_eq!(out.msgs[0].body_size, 0);
        assert_eq!(out.msgs[1].body, b"ok");
    }

    #[test]
    fn no_body_statuses_ignore_length() {
        let (msgs, p) = one_shot(
            MessageKind::Response,
            b"HTTP/1.1 204 No Content\r\nContent-Length: 10\r\n\r\n\
              HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n\
              HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n\
              HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx",
        );
        let statuses: Vec<_> = msgs.iter().map(|m| m.status).collect();
        assert_eq!(statuses, [204, 304, 103, 200]);
        assert!(msgs[..3].iter().all(|m| m.body_size == 0));
        assert_eq!(p.bytes_skipped(), 0);
    }

    #[test]
    fn interim_response_does_not_consume_request_method() {
        let mut p = parser(MessageKind::Response);
        p.push_request_method(MethodClass::Head);
        let mut out = Collect::default();
        p.on_data(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx",
            1,
            &mut out,
        );
        let sizes: Vec<_> = out.msgs.iter().map(|m| (m.status, m.body_size)).collect();
        assert_eq!(sizes, [(100, 0), (200, 0), (200, 1)]);
        assert!(out.msgs[0].is_interim());
    }

    #[test]
    fn switching_protocols_stops_parsing() {
        let (msgs, mut p) = one_shot(
            MessageKind::Response,
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n\x81\x05hello",
        );
        assert_eq!(msgs.len(), 1);
        assert!(p.is_upgraded());
        let mut out = Collect::default();
        p.on_data(b"HTTP/1.1 200 OK\r\n\r\n", 2, &mut out);
        assert!(out.msgs.is_empty());
        assert_eq!(p.bytes_skipped(), 0);
        assert_eq!(p.buffered_bytes(), 0);
    }

    #[test]
    fn connect_tunnel_stops_parsing() {
        let mut p = parser(MessageKind::Response);
        p.push_request_method(MethodClass::Connect);
        let mut out = Collect::default();
        p.on_data(
            b"HTTP/1.1 200 Connection established\r\n\r\n\x16\x03\x01",
            1,
            &mut out,
        );
        assert_eq!(out.msgs.len(), 1);
        assert!(p.is_upgraded());
    }

    #[test]
    fn body_until_close() {
        let mut p = parser(MessageKind::Response);
        let mut out = Collect::default();
        p.on_data(b"HTTP/1.0 200 OK\r\nServer: old\r\n\r\nsome ", 1, &mut out);
        p.on_data(b"body", 2, &mut out);
        assert!(out.msgs.is_empty());
        p.on_close(&mut out);
        assert_eq!(out.msgs.len(), 1);
        assert_eq!(out.msgs[0].body, b"some body");
        assert_eq!(out.msgs[0].body_size, 9);
        assert_eq!(p.buffered_bytes(), 0);
    }

    #[test]
    fn non_chunked_transfer_encoding_response_reads_until_close() {
        let mut p = parser(MessageKind::Response);
        let mut out = Collect::default();
        p.on_data(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nabc",
            1,
            &mut out,
        );
        p.on_close(&mut out);
        assert_eq!(out.msgs.len(), 1);
        assert_eq!(out.msgs[0].body, b"abc");
    }

    #[test]
    fn close_drops_partial_message() {
        let mut p = parser(MessageKind::Request);
        let mut out = Collect::default();
        p.on_data(
            b"POST / HTTP/1.1\r\nContent-Length: 100\r\n\r\nabc",
            1,
            &mut out,
        );
        p.on_data(b"GET /x HTTP/1.1\r\n", 2, &mut out);
        p.on_close(&mut out);
        assert!(out.msgs.is_empty());
        assert_eq!(p.buffered_bytes(), 0);
    }

    #[test]
    fn truncates_body_but_keeps_real_size() {
        let mut input = b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n".to_vec();
        input.extend(std::iter::repeat_n(b'a', 1000));
        let (msgs, p) = one_shot(MessageKind::Response, &input);
        assert_eq!(msgs.len(), 1);
        assert_eq!(msgs[0].body.len(), 64);
        assert_eq!(msgs[0].body_size, 1000);
        assert!(p.buffered_bytes() <= MessageParser::memory_bound(&limits()));
    }

    #[test]
    fn gap_inside_content_length_body() {
        let mut p = parser(MessageKind::Response);
        let mut out = Collect::default();
        p.on_data(
            b"HTTP/1.1 200 OK\r\nContent-Length: 10485760\r\n\r\n",
            1,
            &mut out,
        );
        p.on_data(&[b'b'; 16], 2, &mut out);
        p.on_gap(10_485_760 - 16 - 4, &mut out);
        p.on_data(b"tail", 3, &mut out);
        p.on_data(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 4, &mut out);
        assert_eq!(out.msgs.len(), 2);
        assert_eq!(out.msgs[0].body_size, 10_485_760);
        assert_eq!(out.msgs[0].body, b"bbbbbbbbbbbbbbbbtail");
        assert_eq!(out.msgs[1].ts_ns, 4);
        assert_eq!(out.desyncs, 0);
        assert_eq!(p.bytes_skipped(), 0);
    }

    #[test]
    fn gap_inside_chunk_data() {
        let mut p = parser(MessageKind::Response);
        let mut out = Collect::default();
        p.on_data(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n100\r\nab",
            1,
            &mut out,
        );
        p.on_gap(0x100 - 2, &mut out);
        p.on_data(b"\r\n0\r\n\r\n", 2, &mut out);
        assert_eq!(out.msgs.len(), 1);
        assert_eq!(out.msgs[0].body_size, 0x100);
        assert_eq!(out.msgs[0].body, b"ab");
    }

    #[test]
    fn gap_inside_until_close_body_counts_toward_size() {
        let mut p = parser(MessageKind::Response);
        let mut out = Collect::default();
        p.on_data(b"HTTP/1.1 200 OK\r\n\r\nab", 1, &mut out);
        p.on_gap(100, &mut out);
        p.on_data(b"cd", 2, &mut out);
        p.on_close(&mut out);
        assert_eq!(out.msgs.len(), 1);
        assert_eq!(out.msgs[0].body_size, 104);
        assert_eq!(out.msgs[0].body, b"abcd");
    }

    #[test]
    fn gap_in_headers_drops_message_and_resyncs() {
        let mut p = parser(MessageKind::Request);
        let mut out = Collect::default();
        p.on_data(b"GET /lost HTTP/1.1\r\nHo", 1, &mut out);
        p.on_gap(50, &mut out);
        p.on_data(b"st: x\r\n\r\nGET /found HTTP/1.1\r\n\r\n", 2, &mut out);
        assert_eq!(out.msgs.len(), 1);
        assert_eq!(out.msgs[0].path, "/found");
        assert_eq!(out.msgs[0].ts_ns, 2);
        // 22 buffered bytes dropped at the gap, 9 skipped while resynchronising.
        assert_eq!(p.bytes_skipped(), 22 + 9);
        assert!(out.desyncs > 0);
    }

    #[test]
    fn gap_past_end_of_body_resyncs() {
        let mut p = parser(MessageKind::Response);
        let mut out = Collect::default();
        p.on_data(
            b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nab",
            1,
            &mut out,
        );
        p.on_gap(30, &mut out);
        p.on_data(b"t: 3\r\n\r\nxyzHTTP/1.1 201 Created\r\n\r\n", 2, &mut out);
        p.on_close(&mut out);
        let statuses: Vec<_> = out.msgs.iter().map(|m| (m.status, m.body_size)).collect();
        // The 201 reads until close: nothing after it delimits it.
        assert_eq!(statuses, [(200, 4), (201, 0)]);
        assert_eq!(p.bytes_skipped(), 11);
    }

    #[test]
    fn gap_between_messages_then_clean_start() {
        let mut p = parser(MessageKind::Request);
        let mut out = Collect::default();
        p.on_data(b"GET /a HTTP/1.1\r\n\r\n", 1, &mut out);
        p.on_gap(100, &mut out);
        p.on_data(b"GET /b HTTP/1.1\r\n\r\n", 2, &mut out);
        assert_eq!(out.msgs.len(), 2);
        assert_eq!(p.bytes_skipped(), 0);
    }

    #[test]
    fn garbage_then_resync() {
        let (msgs, p) = one_shot(
            MessageKind::Request,
            b"\x00\x01binary junk\r\nGET /ok HTTP/1.1\r\nHost: a\r\n\r\n",
        );
        assert_eq!(msgs.len(), 1);
        assert_eq!(msgs[0].path, "/ok");
        assert_eq!(p.bytes_skipped(), 15);
    }

    #[test]
    fn resync_only_locks_onto_known_methods() {
        let mut p = parser(MessageKind::Request);
        let mut out = Collect::default();
        p.on_gap(1, &mut out);
        p.on_data(
            b"FOO / HTTP/1.1\r\n\r\nGET /ok HTTP/1.1\r\n\r\n",
            1,
            &mut out,
        );
        assert_eq!(out.msgs.len(), 1);
        assert_eq!(out.msgs[0].path, "/ok");
    }

    #[test]
    fn unknown_method_accepted_in_sync() {
        let (msgs, _) = one_shot(MessageKind::Request, b"PROPFIND /dav HTTP/1.1\r\n\r\n");
        assert_eq!(msgs.len(), 1);
        assert_eq!(msgs[0].method, "PROPFIND");
    }

    #[test]
    fn response_garbage_then_resync() {
        let (msgs, p) = one_shot(
            MessageKind::Response,
            b"HTTP/2 200\r\n\r\nHTTP/1.1 xyz\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        );
        assert_eq!(msgs.len(), 1);
        assert_eq!(p.bytes_skipped(), 30);
    }

    #[test]
    fn bad_chunk_size_drops_message() {
        let (msgs, p) = one_shot(
            MessageKind::Response,
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        );
        assert_eq!(msgs.len(), 1);
        assert_eq!(msgs[0].body_size, 0);
        assert_eq!(p.bytes_skipped(), 4);
    }

    #[test]
    fn conflicting_content_lengths_are_garbage() {
        let (msgs, _) = one_shot(
            MessageKind::Request,
            b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nGET /next HTTP/1.1\r\nContent-Length: 3, 3\r\n\r\nabc",
        );
        assert_eq!(msgs.len(), 1);
        assert_eq!(msgs[0].path, "/next");
        assert_eq!(msgs[0].body, b"abc");
    }

    #[test]
    fn oversize_header_block_is_skipped() {
        let limits = ParserLimits {
            max_header_bytes: 64,
            ..limits()
        };
        let mut p = MessageParser::new(MessageKind::Request, limits);
        let mut out = Collect::default();
        let mut input = b"GET /big HTTP/1.1\r\nX-Long: ".to_vec();
        input.extend(std::iter::repeat_n(b'v', 500));
        input.extend_from_slice(b"\r\n\r\nGET /small HTTP/1.1\r\n\r\n");
        for piece in input.chunks(7) {
            p.on_data(piece, 1, &mut out);
            assert!(p.buffered_bytes() <= MessageParser::memory_bound(&limits));
            assert!(p.buf.len() <= 65);
        }
        assert_eq!(out.msgs.len(), 1);
        assert_eq!(out.msgs[0].path, "/small");
        assert_eq!(p.bytes_skipped(), input.len() as u64 - 23);
    }

    #[test]
    fn leading_empty_lines_are_tolerated() {
        let (msgs, p) = one_shot(
            MessageKind::Request,
            b"\r\n\r\nGET / HTTP/1.1\r\n\r\n\r\nGET /2 HTTP/1.1\r\n\r\n",
        );
        assert_eq!(msgs.len(), 2);
        assert_eq!(p.bytes_skipped(), 0);
    }

    #[test]
    fn bare_lf_line_endings() {
        let (msgs, _) = one_shot(
            MessageKind::Response,
            b"HTTP/1.1 200 OK\nContent-Length: 2\n\nhi",
        );
        assert_eq!(msgs.len(), 1);
        assert_eq!(msgs[0].body, b"hi");
    }

    #[test]
    fn records_timestamp_of_first_byte() {
        let mut p = parser(MessageKind::Request);
        let mut out = Collect::default();
        p.on_data(b"GET / HT", 5, &mut out);
        p.on_data(b"TP/1.1\r\n\r\nGET /b", 7, &mut out);
        p.on_data(b" HTTP/1.1\r\n\r\n", 9, &mut out);
        p.on_data(
            b"POST /c HTTP/1.1\r\nContent-Length: 2\r\n\r\n",
            11,
            &mut out,
        );
        p.on_data(b"hi", 13, &mut out);
        let ts: Vec<_> = out.msgs.iter().map(|m| m.ts_ns).collect();
        assert_eq!(ts, [5, 7, 11]);
    }

    #[test]
    fn byte_at_a_time_equals_one_shot() {
        let mut input = Vec::new();
        input.extend_from_slice(CHUNKED);
        input.extend_from_slice(b"junk");
        input.extend_from_slice(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello");
        input.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
        input.extend_from_slice(b"HTTP/1.1 500 Oops\r\nA: 1\r\nA: 2\r\nContent-Length: 0\r\n\r\n");
        input.extend_from_slice(b"HTTP/1.0 200 OK\r\n\r\nto the end");
        let run = |step: usize| {
            let mut p = parser(MessageKind::Response);
            let mut out = Collect::default();
            for piece in input.chunks(step) {
                p.on_data(piece, 1, &mut out);
            }
            p.on_close(&mut out);
            (out.msgs, p.bytes_skipped())
        };
        let (whole, skipped) = run(input.len());
        assert_eq!(whole.len(), 6);
        assert_eq!(skipped, 4);
        for step in [1, 2, 3, 5, 13] {
            assert_eq!(run(step), (whole.clone(), skipped), "step {step}");
        }
    }

    #[test]
    fn start_line_checks() {
        use LineCheck::*;
        let req = |s: &[u8], strict| check_start_line(MessageKind::Request, strict, s);
        assert_eq!(req(b"GET / HTTP/1.1\r\n", true), Valid);
        assert_eq!(req(b"GET / HTTP/1.0\n", true), Valid);
        assert_eq!(req(b"GE", true), Partial);
        assert_eq!(req(b"GET /a HTTP/1.", true), Partial);
        assert_eq!(req(b"GET /a HTTP/2", true), Invalid);
        assert_eq!(req(b"GET  / HTTP/1.1", true), Invalid);
        assert_eq!(req(b"FOO / HTTP/1.1\r\n", true), Invalid);
        assert_eq!(req(b"FOO / HTTP/1.1\r\n", false), Valid);
        assert_eq!(req(b"get / HTTP/1.1\r\n", true), Invalid);
        assert_eq!(req(b"GET / HTTP/1.1\rX", true), Invalid);
        let resp = |s: &[u8]| check_start_line(MessageKind::Response, true, s);
        assert_eq!(resp(b"HTTP/1.1 200 OK"), Valid);
        assert_eq!(resp(b"HTTP/1.1 200\r\n"), Valid);
        assert_eq!(resp(b"HTTP/1.1 2"), Partial);
        assert_eq!(resp(b"HTTP/1.1 2000"), Invalid);
        assert_eq!(resp(b"HTTP/1.2 200 OK"), Invalid);
        assert_eq!(resp(b""), Partial);
    }

    #[test]
    fn method_queue_is_bounded() {
        let limits = ParserLimits {
            max_pending_messages: 3,
            redact_credentials: true,
            ..limits()
        };
        let mut p = MessageParser::new(MessageKind::Response, limits);
        for _ in 0..100 {
            p.push_request_method(MethodClass::Other);
        }
        assert_eq!(p.methods.len(), 3);
        assert!(p.buffered_bytes() <= MessageParser::memory_bound(&limits));
    }

    #[test]
    fn too_many_headers_is_garbage() {
        let mut input = b"GET /many HTTP/1.1\r\n".to_vec();
        for i in 0..=MAX_HEADERS {
            input.extend_from_slice(format!("h{i}: v\r\n").as_bytes());
        }
        input.extend_from_slice(b"\r\nGET /ok HTTP/1.1\r\n\r\n");
        let limits = ParserLimits {
            max_header_bytes: 8192,
            ..limits()
        };
        let mut p = MessageParser::new(MessageKind::Request, limits);
        let mut out = Collect::default();
        p.on_data(&input, 1, &mut out);
        assert_eq!(out.msgs.len(), 1);
        assert_eq!(out.msgs[0].path, "/ok");
    }
}
