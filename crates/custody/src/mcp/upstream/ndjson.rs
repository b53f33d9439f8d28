//! JSON messages one after another in an `application/json` body. One SDK's server streams
//! newline-delimited JSON-RPC messages under that media type (`subscriptions/listen`,
//! progress before a result); a gateway that waited for the body's end would hold them all, or
//! forever. The body is read message by message: when its first message is the answer (a
//! result, an error, a batch) it is the whole reply; otherwise every message is relayed as it
//! completes.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::{Event, EventStream, UpstreamError};
use crate::mcp::message::{Limits, Message};

/// Finds where top-level JSON values end, across chunks: braces and brackets outside strings.
#[derive(Debug, Default)]
pub struct Scanner {
    /// Bytes of the buffer already scanned.
    at: usize,
    depth: usize,
    in_string: bool,
    escaped: bool,
    /// Where the value being scanned starts, once its first byte was seen.
    start: Option<usize>,
}

impl Scanner {
    /// Scans `buf` from where it stopped; the range of the first complete top-level value, if
    /// there is one. A value that is not an object or array is refused (JSON-RPC bodies are
    /// one or the other).
    ///
    /// # Errors
    /// The body does not start with `{` or `[`, or closes more than it opened.
    pub fn next_value(&mut self, buf: &[u8]) -> Result<Option<std::ops::Range<usize>>, String> {
        while self.at < buf.len() {
            let b = buf[self.at];
            self.at += 1;
            if self.start.is_none() {
                match b {
                    b' ' | b'\t' | b'\r' | b'\n' => continue,
                    b'{' | b'[' => {
                        self.start = Some(self.at - 1);
                        self.depth = 1;
                        continue;
                    }
                    _ => {
                        return Err(format!(
                            "a JSON body that is not an object or array (byte {b:#04x})"
                        ));
                    }
                }
            }
            if self.in_string {
                match (self.escaped, b) {
                    (true, _) => self.escaped = false,
                    (false, b'\\') => self.escaped = true,
                    (false, b'"') => self.in_string = false,
                    _ => {}
                }
                continue;
            }
            match b {
                b'"' => self.in_string = true,
                b'{' | b'[' => self.depth += 1,
                b'}' | b']' => {
                    self.depth -= 1;
                    if self.depth == 0 {
                        let start = self.start.take().unwrap_or(0);
                        return Ok(Some(start..self.at));
                    }
                }
                _ => {}
            }
        }
        Ok(None)
    }

    /// Forgets the first `n` bytes of the buffer (they were taken).
    pub fn consumed(&mut self, n: usize) {
        self.at -= n;
        if let Some(s) = &mut self.start {
            *s -= n;
        }
    }
}

/// An `application/json` answer: the whole of it, or a first message that is not the answer
/// and the body still arriving.
pub enum JsonAnswer {
    Whole(Bytes),
    Lines {
        first: Bytes,
        rest: BytesMut,
        scanner: Scanner,
        body: Incoming,
    },
}

/// Splits off the first complete value of `buf`, if there is one.
pub fn take_value(buf: &mut BytesMut, scanner: &mut Scanner) -> Result<Option<Bytes>, String> {
    match scanner.next_value(buf)? {
        Some(range) => {
            let end = range.end;
            let mut taken = buf.split_to(end);
            scanner.consumed(end);
            let _ = taken.split_to(range.start);
            Ok(Some(taken.freeze()))
        }
        None => Ok(None),
    }
}

/// Does this first value answer the request (a result, an error, or a batch's array)?
pub fn is_answer(value: &[u8]) -> bool {
    if value.first() == Some(&b'[') {
        return true;
    }
    #[derive(serde::Deserialize)]
    struct Shape {
        result: Option<serde::de::IgnoredAny>,
        error: Option<serde::de::IgnoredAny>,
    }
    serde_json::from_slice::<Shape>(value)
        .map(|s| s.result.is_some() || s.error.is_some())
        .unwrap_or(true)
}

/// The rest of a newline-delimited body as events: each message as it completes, bounded by
/// `max` bytes, `idle` of silence between messages.
pub fn lines(
    first: Message,
    rest: BytesMut,
    scanner: Scanner,
    body: Incoming,
    limits: Limits,
    max: usize,
    idle: Duration,
) -> EventStream {
    struct St {
        ready: VecDeque<Message>,
        buf: BytesMut,
        scanner: Scanner,
        body: Incoming,
        ended: bool,
        failed: bool,
    }
    let st = St {
        ready: VecDeque::from([first]),
        buf: rest,
        scanner,
        body,
        ended: false,
        failed: false,
    };
    Box::pin(futures_util::stream::unfold(st, move |mut st| async move {
        if st.failed {
            return None;
        }
        let deadline = tokio::time::Instant::now() + idle;
        loop {
            if let Some(m) = st.ready.pop_front() {
                return Some((Ok(Event::message(m)), st));
            }
            match take_value(&mut st.buf, &mut st.scanner) {
                Ok(Some(value)) => match Message::parse(value, limits) {
                    Ok(m) => {
                        st.ready.push_back(m);
                        continue;
                    }
                    Err(e) => {
                        st.failed = true;
                        return Some((
                            Err(UpstreamError::Protocol(format!(
                                "a message of its JSON stream: {e}"
                            ))),
                            st,
                        ));
                    }
                },
                Ok(None) => {}
                Err(e) => {
                    st.failed = true;
                    return Some((
                        Err(UpstreamError::Protocol(format!("its JSON stream: {e}"))),
                        st,
                    ));
                }
            }
            if st.buf.len() > max {
                st.failed = true;
                return Some((
                    Err(UpstreamError::Protocol(format!(
                        "a message of its JSON stream is over max_message_bytes ({max})"
                    ))),
                    st,
                ));
            }
            if st.ended {
                if st.buf.iter().any(|b| !b.is_ascii_whitespace()) {
                    st.failed = true;
                    return Some((
                        Err(UpstreamError::Closed(
                            "the upstream's JSON stream ended inside a message".into(),
                        )),
                        st,
                    ));
                }
                return None;
            }
            match tokio::time::timeout_at(deadline, st.body.frame()).await {
                Err(_) => {
                    st.failed = true;
                    return Some((Err(UpstreamError::Timeout(idle)), st));
                }
                Ok(None) => st.ended = true,
                Ok(Some(Err(e))) => {
                    st.failed = true;
                    return Some((
                        Err(UpstreamError::Closed(format!(
                            "the upstream's JSON stream broke: {e}"
                        ))),
                        st,
                    ));
                }
                Ok(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        st.buf.extend_from_slice(&data);
                    }
                }
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_found_across_chunks_with_strings_and_escapes() {
        let whole = br#"  {"a":"}{\"","b":[1,{"c":"]"}]}
{"x":1}"#;
        for size in 1..whole.len() {
            let mut buf = BytesMut::new();
            let mut s = Scanner::default();
            let mut out = Vec::new();
            for chunk in whole.chunks(size) {
                buf.extend_from_slice(chunk);
                while let Some(v) = take_value(&mut buf, &mut s).unwrap() {
                    out.push(v);
                }
            }
            assert_eq!(
                out,
                [
                    Bytes::from_static(br#"{"a":"}{\"","b":[1,{"c":"]"}]}"#),
                    Bytes::from_static(br#"{"x":1}"#)
                ],
                "chunks of {size}"
            );
        }
    }

    #[test]
    fn a_body_that_is_not_an_object_or_array_is_refused() {
        let mut s = Scanner::default();
        assert!(s.next_value(b" 42").is_err());
    }

    #[test]
    fn answers_and_batches_are_whole_replies_notifications_are_not() {
        assert!(is_answer(br#"{"jsonrpc":"2.0","id":1,"result":{}}"#));
        assert!(is_answer(
            br#"{"jsonrpc":"2.0","id":1,"error":{"code":1,"message":"x"}}"#
        ));
        assert!(is_answer(b"[{}]"));
        assert!(!is_answer(
            br#"{"jsonrpc":"2.0","method":"notifications/progress","params":{}}"#
        ));
    }
}
