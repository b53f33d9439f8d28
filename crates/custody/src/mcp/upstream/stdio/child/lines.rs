//! Reading a process's stdout one line (one message) at a time, never holding more than the
//! endpoint's `max_message_bytes` of a line: past that, the rest of the line is counted and
//! hashed as it is skipped, and the line is reported as [`Line::Oversized`]. The process and
//! the lines after it are unaffected.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

use super::Child;
use crate::config::MessageLimits;
use crate::mcp::message::probe::IdProbe;
use crate::mcp::message::{Body, ParseError};
use crate::mcp::upstream::UpstreamError;
use crate::mcp::upstream::oversized::{Meter, Oversized};

/// One line of output.
#[derive(Debug)]
pub enum Line {
    /// A line within the limit, without its line feed.
    Text(Bytes),
    /// A line over the limit: its size, hash and id, not its bytes.
    Oversized(Oversized),
}

pub struct Lines<R> {
    inner: BufReader<R>,
    limit: usize,
    buf: BytesMut,
}

impl<R: AsyncRead + Unpin> Lines<R> {
    pub fn new(inner: R, limit: usize) -> Self {
        Self {
            inner: BufReader::new(inner),
            limit,
            buf: BytesMut::new(),
        }
    }

    /// The next line; `None` at the end of the output (a last line without a line feed is
    /// still returned).
    ///
    /// # Errors
    /// Reading the pipe failed.
    pub async fn next(&mut self) -> std::io::Result<Option<Line>> {
        let mut meter: Option<Meter> = None;
        loop {
            let available = self.inner.fill_buf().await?;
            if available.is_empty() {
                if let Some(m) = meter {
                    return Ok(Some(Line::Oversized(m.finish(false))));
                }
                if self.buf.is_empty() {
                    return Ok(None);
                }
                return Ok(Some(Line::Text(self.buf.split().freeze())));
            }
            let (part, end, used) = match memchr::memchr(b'\n', available) {
                Some(i) => (&available[..i], true, i + 1),
                None => (available, false, available.len()),
            };
            match &mut meter {
                Some(m) => m.feed(part),
                None if self.buf.len() + part.len() > self.limit => {
                    let mut m = Meter::new(self.limit);
                    m.feed(&self.buf);
                    m.feed(part);
                    self.buf = BytesMut::new();
                    meter = Some(m);
                }
                None => self.buf.extend_from_slice(part),
            }
            self.inner.consume(used);
            if end {
                return Ok(Some(match meter {
                    Some(m) => Line::Oversized(m.finish(true)),
                    None => Line::Text(self.buf.split().freeze()),
                }));
            }
        }
    }
}

/// Reads the process's messages and routes them; returns when its stdout closes or it broke
/// the protocol.
pub(super) async fn read_stdout(
    child: Arc<Child>,
    stdout: tokio::process::ChildStdout,
    messages: MessageLimits,
) {
    let mut lines = Lines::new(stdout, messages.max_message_bytes);
    loop {
        let line = match lines.next().await {
            Ok(Some(Line::Text(line))) => line,
            Ok(Some(Line::Oversized(o))) => {
                child.touch();
                child.oversized(o);
                continue;
            }
            Ok(None) | Err(_) => return,
        };
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        child.touch();
        match Body::parse(line.clone(), messages.json()) {
            Ok(Body::Single(m)) => child.route(m),
            Ok(Body::Batch(ms, _)) => ms.into_iter().for_each(|m| child.route(m)),
            Err(e @ ParseError::Strict(_)) => {
                // JSON without one reading: the call it answers fails; the process goes on.
                let mut probe = IdProbe::default();
                probe.feed(&line);
                let why = format!("its answer has no single reading: {e}");
                if !child.fail_request(probe.id().as_ref(), |_| UpstreamError::Protocol(why)) {
                    child.fatal(format!(
                        "upstream process wrote a line that answers no request in flight and has no single reading ({e})"
                    ));
                    return;
                }
            }
            Err(e) => {
                // Scrubbed whole, then shortened: a secret cut in half is not recognised.
                let shown: String = child
                    .scrub
                    .redacted(&String::from_utf8_lossy(&line))
                    .chars()
                    .take(120)
                    .collect();
                child.fatal(format!(
                    "upstream process wrote a line that is not JSON-RPC ({e}): {shown:?}"
                ));
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lines_over_the_limit_are_skipped_not_kept() {
        let big = format!(
            "{{\"jsonrpc\":\"2.0\",\"id\":4,\"result\":\"{}\"}}",
            "x".repeat(100_000)
        );
        let input = format!("{{\"a\":1}}\n{big}\n\nlast");
        let mut lines = Lines::new(input.as_bytes(), 1000);
        let mut next = async || lines.next().await.unwrap();
        assert!(matches!(next().await, Some(Line::Text(t)) if &t[..] == b"{\"a\":1}"));
        match next().await {
            Some(Line::Oversized(o)) => {
                assert_eq!(o.bytes, big.len() as u64);
                assert!(o.whole);
                assert_eq!(o.id, Some(serde_json::json!(4)));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(next().await, Some(Line::Text(t)) if t.is_empty()));
        assert!(matches!(next().await, Some(Line::Text(t)) if &t[..] == b"last"));
        assert!(next().await.is_none());
    }

    #[tokio::test]
    async fn a_line_cut_off_by_the_end_is_reported_as_partial() {
        let input = "y".repeat(5000);
        let mut lines = Lines::new(input.as_bytes(), 1000);
        assert!(matches!(
            lines.next().await.unwrap(),
            Some(Line::Oversized(Oversized {
                whole: false,
                bytes: 5000,
                ..
            }))
        ));
    }
}
