//! Clients for the MCP servers behind the gateway: Streamable HTTP and stdio processes.
//!
//! Both speak in the same terms to the relay: a [`Reply`] to a POSTed message, made of whole
//! [`Message`]s (single, batch or a stream of [`Event`]s), or an [`UpstreamError`] that says
//! what went wrong in words an operator can act on.

pub mod http;
mod ndjson;
pub mod oversized;
pub mod stdio;

use std::pin::Pin;
use std::time::Duration;

use ::http::{HeaderValue, StatusCode};
use bytes::Bytes;
use futures_util::Stream;

use super::message::Message;
pub use oversized::Oversized;

/// One server-sent event. `message` is `None` for events without data (SSE priming events).
#[derive(Debug, Clone)]
pub struct Event {
    pub id: Option<String>,
    pub retry: Option<u64>,
    pub message: Option<Message>,
}

impl Event {
    pub fn message(message: Message) -> Self {
        Self {
            id: None,
            retry: None,
            message: Some(message),
        }
    }
}

/// Messages as they come from an upstream, ending when the upstream is done or fails.
pub type EventStream = Pin<Box<dyn Stream<Item = Result<Event, UpstreamError>> + Send>>;

/// What an upstream answered to one POST.
#[expect(
    clippy::large_enum_variant,
    reason = "a reply is moved once; boxing would add an allocation to every call"
)]
pub enum Reply {
    /// The message was a notification or response and was accepted (HTTP 202).
    Accepted,
    /// One JSON message.
    Message(Message),
    /// A JSON array answering a batch (2025-03-26).
    Batch(Vec<Message>),
    /// A stream of events.
    Stream(EventStream),
    /// The upstream refused with an HTTP error and a JSON body, passed on as it is.
    Rejected {
        status: StatusCode,
        content_type: Option<HeaderValue>,
        body: Bytes,
    },
}

/// Why an upstream could not answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum UpstreamError {
    #[error("could not reach the upstream: {0}")]
    Unreachable(String),
    #[error("the upstream did not answer within {}", humantime::format_duration(*.0))]
    Timeout(Duration),
    #[error("the upstream sent something that is not MCP: {0}")]
    Protocol(String),
    #[error("{0}")]
    Closed(String),
    #[error("the upstream answered HTTP {0}: {1}")]
    Status(u16, String),
    #[error("the upstream no longer knows this session")]
    SessionGone,
    #[error("could not start the upstream process: {0}")]
    Spawn(String),
    /// A bound on what the upstream may be made to run (its processes) was reached.
    #[error("{0}")]
    Limit(crate::limits::Exceeded),
    /// A message over the endpoint's `max_message_bytes`. Not fatal to the stream or process
    /// it came from: it fails the call it answers, and what follows is relayed.
    #[error("{0}")]
    TooLarge(Box<Oversized>),
}

impl UpstreamError {
    /// The same error with `f` applied to every text it carries (to scrub secrets from it).
    #[must_use]
    pub fn map_text(self, mut f: impl FnMut(&mut String)) -> Self {
        let text = |mut s: String, f: &mut dyn FnMut(&mut String)| {
            f(&mut s);
            s
        };
        match self {
            UpstreamError::Unreachable(s) => UpstreamError::Unreachable(text(s, &mut f)),
            UpstreamError::Protocol(s) => UpstreamError::Protocol(text(s, &mut f)),
            UpstreamError::Closed(s) => UpstreamError::Closed(text(s, &mut f)),
            UpstreamError::Status(code, s) => UpstreamError::Status(code, text(s, &mut f)),
            UpstreamError::Spawn(s) => UpstreamError::Spawn(text(s, &mut f)),
            e @ (UpstreamError::Timeout(_)
            | UpstreamError::SessionGone
            | UpstreamError::Limit(_)
            | UpstreamError::TooLarge(_)) => e,
        }
    }

    /// Is this a timeout (HTTP 504 where there is no id to answer) rather than a failure (502)?
    pub fn is_timeout(&self) -> bool {
        matches!(self, UpstreamError::Timeout(_))
    }
}
