//! Small HTTP helpers: bodies, JSON responses, query strings.

use std::collections::HashMap;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame};
use hyper::{Response, StatusCode};
use serde_json::Value;
use tokio::sync::mpsc;

use crate::status::ApiError;

/// The response body type: a full body or a stream of watch events.
pub(crate) type ResponseBody = BoxBody<Bytes, Infallible>;

/// A body fed by a channel: one chunk per watch event, ends when the sender is dropped.
pub(crate) struct ChannelBody(pub(crate) mpsc::Receiver<Bytes>);

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|b| Ok(Frame::data(b))))
    }
}

fn response(code: u16, content_type: &str, body: ResponseBody) -> Response<ResponseBody> {
    let mut r = Response::new(body);
    *r.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if let Ok(v) = content_type.parse() {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

/// A JSON response with the given status code.
pub(crate) fn json_response(code: u16, body: &Value) -> Response<ResponseBody> {
    response(
        code,
        "application/json",
        Full::new(Bytes::from(body.to_string())).boxed(),
    )
}

/// The Status body of an error, with its code.
pub(crate) fn error_response(e: &ApiError) -> Response<ResponseBody> {
    json_response(e.code, &e.to_status())
}

/// A streaming JSON response (watch).
pub(crate) fn stream_response(rx: mpsc::Receiver<Bytes>) -> Response<ResponseBody> {
    let mut r = response(200, "application/json", ChannelBody(rx).boxed());
    r.headers_mut().insert(
        hyper::header::CACHE_CONTROL,
        hyper::header::HeaderValue::from_static("no-cache, private"),
    );
    r
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// Percent-decoding as `application/x-www-form-urlencoded` does (`+` is a space).
pub(crate) fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h * 16 + l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The query string as a map (last value wins).
pub(crate) fn parse_query(q: Option<&str>) -> HashMap<String, String> {
    q.unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_selectors() {
        let q = parse_query(Some(
            "labelSelector=app%3Dpem%2Ctier+in+%28a%29&watch=1&x=%zz",
        ));
        assert_eq!(
            q.get("labelSelector").map(String::as_str),
            Some("app=pem,tier in (a)")
        );
        assert_eq!(q.get("watch").map(String::as_str), Some("1"));
        assert_eq!(q.get("x").map(String::as_str), Some("%zz"));
    }
}
