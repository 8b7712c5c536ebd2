//! Pairs HTTP/1.x responses with the requests they answer.
//!
//! HTTP/1.x answers requests in the order they were sent, so pairing is FIFO, which also
//! covers pipelining. Timestamps guard against pairing a response with a request sent
//! after it (the response's own request was lost), and after the response stream lost
//! track the next response goes to the latest request sent before it, so one lost
//! response does not shift every later pair.

use std::collections::VecDeque;
use std::mem;

use super::parser::HttpMessage;
use crate::protocols::ParserLimits;

/// A request and its final response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct HttpRecord {
    /// The request.
    pub(crate) req: HttpMessage,
    /// Its final (non-1xx, or 101) response.
    pub(crate) resp: HttpMessage,
}

/// Request/response pairing for one connection.
#[derive(Debug)]
pub(crate) struct Stitcher {
    max_pending: usize,
    /// Requests waiting for their responses, oldest first.
    requests: VecDeque<HttpMessage>,
    /// Completed pairs waiting to be drained.
    records: VecDeque<HttpRecord>,
    /// Responses may have been lost since the last pairing.
    responses_lost: bool,
    unpaired: u64,
}

impl Stitcher {
    /// An empty stitcher.
    pub(crate) fn new(limits: &ParserLimits) -> Self {
        Self {
            // Zero would pair nothing at all; one keeps the connection useful.
            max_pending: limits.max_pending_messages.max(1),
            requests: VecDeque::new(),
            records: VecDeque::new(),
            responses_lost: false,
            unpaired: 0,
        }
    }

    /// Upper bound of [`Stitcher::buffered_bytes`] under `limits`.
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn memory_bound(limits: &ParserLimits) -> usize {
        let n = limits.max_pending_messages.max(1);
        // VecDeque may round its capacity up to twice what it holds.
        let slots = 2 * n + 8;
        let message = HttpMessage::heap_bound(limits);
        slots * (mem::size_of::<HttpMessage>() + mem::size_of::<HttpRecord>()) + 3 * n * message
    }

    /// A complete request.
    pub(crate) fn push_request(&mut self, req: HttpMessage) {
        if self.requests.len() >= self.max_pending {
            self.requests.pop_front();
            self.unpaired += 1;
        }
        self.requests.push_back(req);
    }

    /// A complete response: pairs it, ignores it (interim), or drops it (no request).
    pub(crate) fn push_response(&mut self, resp: HttpMessage) {
        if resp.is_interim() {
            // 100 Continue and friends: the request keeps waiting for its final response.
            return;
        }
        let candidate = if self.responses_lost {
            self.requests.iter().rposition(|r| r.ts_ns <= resp.ts_ns)
        } else {
            self.requests
                .front()
                .filter(|r| r.ts_ns <= resp.ts_ns)
                .map(|_| 0)
        };
        let Some(index) = candidate else {
            self.unpaired += 1;
            return;
        };
        // Requests before the match had their responses lost.
        self.unpaired += index as u64;
        self.requests.drain(..index);
        let Some(req) = self.requests.pop_front() else {
            return;
        };
        if self.requests.is_empty() {
            // Idle connections should hold nothing.
            self.requests = VecDeque::new();
        }
        self.responses_lost = false;
        if self.records.len() >= self.max_pending {
            // Nobody drained: the oldest pair's two messages are lost.
            self.records.pop_front();
            self.unpaired += 2;
        }
        self.records.push_back(HttpRecord { req, resp });
    }

    /// The response stream lost track: responses may be missing before the next one.
    pub(crate) fn note_response_loss(&mut self) {
        self.responses_lost = true;
    }

    /// The connection closed: requests still waiting will never be answered.
    pub(crate) fn on_close(&mut self) {
        self.unpaired += self.requests.len() as u64;
        self.requests = VecDeque::new();
        self.responses_lost = false;
    }

    /// Takes every completed pair.
    pub(crate) fn take_records(&mut self) -> VecDeque<HttpRecord> {
        mem::take(&mut self.records)
    }

    /// Requests waiting for responses.
    #[cfg(test)]
    pub(crate) fn pending_requests(&self) -> usize {
        self.requests.len()
    }

    /// Messages dropped without a peer so far.
    pub(crate) fn messages_unpaired(&self) -> u64 {
        self.unpaired
    }

    /// Heap bytes currently held.
    pub(crate) fn buffered_bytes(&self) -> usize {
        let requests: usize = self.requests.iter().map(HttpMessage::heap_bytes).sum();
        let records: usize = self
            .records
            .iter()
            .map(|r| r.req.heap_bytes() + r.resp.heap_bytes())
            .sum();
        self.requests.capacity() * mem::size_of::<HttpMessage>()
            + self.records.capacity() * mem::size_of::<HttpRecord>()
            + requests
            + records
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_pending: usize) -> ParserLimits {
        ParserLimits {
            max_pending_messages: max_pending,
            redact_credentials: true,
            ..ParserLimits::default()
        }
    }

    fn req(path: &str, ts: u64) -> HttpMessage {
        HttpMessage {
            ts_ns: ts,
            method: "GET".into(),
            path: path.into(),
            ..HttpMessage::default()
        }
    }

    fn resp(status: u16, ts: u64) -> HttpMessage {
        HttpMessage {
            ts_ns: ts,
            status,
            ..HttpMessage::default()
        }
    }

    fn paths(s: &mut Stitcher) -> Vec<(String, u16)> {
        s.take_records()
            .into_iter()
            .map(|r| (r.req.path, r.resp.status))
            .collect()
    }

    #[test]
    fn pairs_in_fifo_order() {
        let mut s = Stitcher::new(&limits(16));
        s.push_request(req("/a", 1));
        s.push_request(req("/b", 2));
        s.push_request(req("/c", 3));
        s.push_response(resp(200, 4));
        s.push_response(resp(201, 5));
        s.push_response(resp(202, 6));
        assert_eq!(
            paths(&mut s),
            vec![("/a".into(), 200), ("/b".into(), 201), ("/c".into(), 202)]
        );
        assert_eq!(s.messages_unpaired(), 0);
    }

    #[test]
    fn interim_response_keeps_request_waiting() {
        let mut s = Stitcher::new(&limits(16));
        s.push_request(req("/upload", 1));
        s.push_response(resp(100, 2));
        assert_eq!(s.pending_requests(), 1);
        s.push_response(resp(201, 3));
        assert_eq!(paths(&mut s), vec![("/upload".into(), 201)]);
        assert_eq!(s.messages_unpaired(), 0);
    }

    #[test]
    fn interim_without_request_is_not_counted() {
        let mut s = Stitcher::new(&limits(16));
        s.push_response(resp(100, 2));
        assert_eq!(s.messages_unpaired(), 0);
    }

    #[test]
    fn response_without_request_is_dropped() {
        let mut s = Stitcher::new(&limits(16));
        s.push_response(resp(200, 1));
        assert!(paths(&mut s).is_empty());
        assert_eq!(s.messages_unpaired(), 1);
    }

    #[test]
    fn response_older_than_request_is_dropped() {
        let mut s = Stitcher::new(&limits(16));
        s.push_request(req("/later", 10));
        s.push_response(resp(200, 5));
        assert_eq!(s.messages_unpaired(), 1);
        s.push_response(resp(204, 11));
        assert_eq!(paths(&mut s), vec![("/later".into(), 204)]);
    }

    #[test]
    fn pending_requests_are_bounded() {
        let mut s = Stitcher::new(&limits(2));
        s.push_request(req("/1", 1));
        s.push_request(req("/2", 2));
        s.push_request(req("/3", 3));
        assert_eq!(s.pending_requests(), 2);
        assert_eq!(s.messages_unpaired(), 1);
        s.push_response(resp(200, 4));
        assert_eq!(paths(&mut s), vec![("/2".into(), 200)]);
    }

    #[test]
    fn undrained_records_are_bounded() {
        let mut s = Stitcher::new(&limits(2));
        for i in 0..3 {
            s.push_request(req(&format!("/{i}"), 2 * i));
            s.push_response(resp(200, 2 * i + 1));
        }
        assert_eq!(paths(&mut s), vec![("/1".into(), 200), ("/2".into(), 200)]);
        assert_eq!(s.messages_unpaired(), 2);
    }

    #[test]
    fn close_counts_unanswered_requests() {
        let mut s = Stitcher::new(&limits(16));
        s.push_request(req("/a", 1));
        s.push_request(req("/b", 2));
        s.on_close();
        assert_eq!(s.pending_requests(), 0);
        assert_eq!(s.messages_unpaired(), 2);
    }

    #[test]
    fn after_response_loss_pairs_with_latest_earlier_request() {
        let mut s = Stitcher::new(&limits(16));
        s.push_request(req("/a", 1));
        s.push_request(req("/b", 3));
        s.note_response_loss();
        s.push_response(resp(200, 4));
        assert_eq!(paths(&mut s), vec![("/b".into(), 200)]);
        assert_eq!(s.messages_unpaired(), 1);
        // Back to plain FIFO after a pairing.
        s.push_request(req("/c", 5));
        s.push_request(req("/d", 6));
        s.push_response(resp(201, 7));
        assert_eq!(paths(&mut s), vec![("/c".into(), 201)]);
    }

    #[test]
    fn buffered_bytes_track_messages() {
        let mut s = Stitcher::new(&limits(4));
        assert_eq!(s.buffered_bytes(), 0);
        s.push_request(req("/abc", 1));
        assert!(s.buffered_bytes() >= 4);
        assert!(s.buffered_bytes() <= Stitcher::memory_bound(&limits(4)));
        s.on_close();
        assert_eq!(s.buffered_bytes(), 0);
    }
}
