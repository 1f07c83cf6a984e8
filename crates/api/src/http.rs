//! HTTP plumbing: bodies in (capped) and out (JSON, errors, streams), query strings.

use std::collections::HashMap;
use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response, StatusCode};

use crate::ApiError;

/// Every response body: whole, or streamed.
pub type Body = UnsyncBoxBody<Bytes, std::io::Error>;

/// The largest JSON request body taken (Docker's create bodies are a few KiB).
pub const MAX_BODY: usize = 1 << 20;

/// A response of `status` with a whole body of `content_type`.
pub fn whole(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(
        Full::new(body.into())
            .map_err(|e: Infallible| match e {})
            .boxed_unsync(),
    );
    *r.status_mut() = status;
    if let Ok(v) = content_type.parse() {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

/// A JSON response.
pub fn json(status: StatusCode, v: &impl serde::Serialize) -> Response<Body> {
    match serde_json::to_vec(v) {
        Ok(b) => whole(status, "application/json", b),
        Err(e) => error(&ApiError::Internal(format!("encode the response: {e}"))),
    }
}

/// Docker's error response: the status and `{"message": ...}`.
pub fn error(e: &ApiError) -> Response<Body> {
    let body = serde_json::json!({ "message": e.to_string() });
    whole(
        e.status(),
        "application/json",
        serde_json::to_vec(&body).unwrap_or_default(),
    )
}

/// An empty response (204, 304, ...).
pub fn empty(status: StatusCode) -> Response<Body> {
    whole(status, "text/plain; charset=utf-8", Bytes::new())
}

/// A response streamed from `rx` until its senders are gone.
pub fn streamed(
    status: StatusCode,
    content_type: &str,
    rx: tokio::sync::mpsc::Receiver<Bytes>,
) -> Response<Body> {
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, std::io::Error>(Frame::data(b)), rx))
    });
    let mut r = Response::new(StreamBody::new(stream).boxed_unsync());
    *r.status_mut() = status;
    if let Ok(v) = content_type.parse() {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

/// Reads the whole body, at most [`MAX_BODY`] bytes.
pub async fn body(req: Request<Incoming>) -> Result<Bytes, ApiError> {
    match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(ApiError::TooLarge(MAX_BODY))
        }
        Err(e) => Err(ApiError::BadRequest(format!("read the request body: {e}"))),
    }
}

/// The body as a JSON object (at most [`MAX_BODY`] bytes); anything else is a 400.
pub async fn object_body(req: Request<Incoming>) -> Result<serde_json::Value, ApiError> {
    let body = body(req).await?;
    let v: serde_json::Value = parse_json(&body)?;
    if !v.is_object() {
        return Err(ApiError::BadRequest(
            "invalid JSON body: expected an object".into(),
        ));
    }
    Ok(v)
}

/// A JSON body as `T` (an empty body is `null`).
pub fn parse_json<T: serde::de::DeserializeOwned>(b: &[u8]) -> Result<T, ApiError> {
    let b = if b.iter().all(u8::is_ascii_whitespace) {
        &b"null"[..]
    } else {
        b
    };
    serde_json::from_slice(b).map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))
}

/// The query string's parameters (percent-decoded; the last of a repeated one wins).
pub fn query(req: &Request<Incoming>) -> Query {
    let mut m = HashMap::new();
    if let Some(q) = req.uri().query() {
        for pair in q.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            m.insert(decode(k), decode(v));
        }
    }
    Query(m)
}

/// Every value of a repeated query parameter (`names=a&names=b`), in order.
pub fn query_all(req: &Request<Incoming>, key: &str) -> Vec<String> {
    req.uri()
        .query()
        .unwrap_or_default()
        .split('&')
        .filter_map(|p| p.split_once('='))
        .filter(|(k, _)| decode(k) == key)
        .map(|(_, v)| decode(v))
        .collect()
}

/// Percent-decoding (and `+` as a space), lossy on invalid UTF-8.
pub fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A request's query parameters.
pub struct Query(HashMap<String, String>);

impl Query {
    /// A parameter's value.
    pub fn get(&self, k: &str) -> Option<&str> {
        self.0.get(k).map(String::as_str)
    }

    /// A boolean parameter as Docker reads one: `1`/`true`/`True` (any value but `0`,
    /// `false`, `no` and empty counts as true).
    pub fn flag(&self, k: &str) -> bool {
        self.get(k).is_some_and(|v| {
            !matches!(
                v.to_ascii_lowercase().as_str(),
                "" | "0" | "false" | "no" | "off"
            )
        })
    }

    /// An integer parameter; a value that is not one is a 400 naming it.
    pub fn int(&self, k: &str) -> Result<Option<i64>, ApiError> {
        match self.get(k) {
            None | Some("") => Ok(None),
            Some(v) => v.parse().map(Some).map_err(|_| {
                ApiError::BadRequest(format!(
                    "invalid value {v:?} for query parameter {k}: not an integer"
                ))
            }),
        }
    }
}

/// A `Write` into a response stream: each write is one chunk; a client that went away
/// is a write error (the save stops).
pub struct ChunkWriter(pub tokio::sync::mpsc::Sender<Bytes>);

impl std::io::Write for ChunkWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .blocking_send(Bytes::copy_from_slice(buf))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the client left"))?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A `Read` over a request body's chunks, fed by an async task.
pub struct ChunkReader {
    rx: tokio::sync::mpsc::Receiver<Result<Bytes, String>>,
    cur: Bytes,
}

impl std::io::Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.cur.is_empty() {
            // Called on a blocking thread: waiting here holds no runtime worker.
            match self.rx.blocking_recv() {
                Some(Ok(b)) => self.cur = b,
                Some(Err(e)) => return Err(std::io::Error::other(e)),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur.split_to(n));
        Ok(n)
    }
}

impl ChunkReader {
    /// A reader of `req`'s body, fed by a task as the chunks arrive.
    pub fn of_body(req: Request<Incoming>) -> ChunkReader {
        let (chunks, rx) = tokio::sync::mpsc::channel::<Result<Bytes, String>>(16);
        let mut body = req.into_body();
        tokio::spawn(async move {
            while let Some(frame) = body.frame().await {
                let sent = match frame {
                    Ok(f) => match f.into_data() {
                        Ok(data) => chunks.send(Ok(data)).await,
                        Err(_) => continue, // trailers
                    },
                    Err(e) => {
                        chunks
                            .send(Err(format!("reading the request body: {e}")))
                            .await
                    }
                };
                if sent.is_err() {
                    break; // the reader stopped
                }
            }
        });
        ChunkReader {
            rx,
            cur: Bytes::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_percent_escapes_and_keeps_bad_ones() {
        assert_eq!(decode("a%20b+c"), "a b c");
        assert_eq!(
            decode("%7B%22name%22%3A%5B%22x%22%5D%7D"),
            r#"{"name":["x"]}"#
        );
        assert_eq!(decode("100%"), "100%");
        assert_eq!(decode("%zz"), "%zz");
    }
}
