//! Turning what an upstream answered into what the client receives: JSON, or an SSE stream
//! relayed event by event, ending once every request it carries is answered.

use std::collections::HashSet;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use http::StatusCode;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::error::RelayError;
use super::session::Session;
use super::{Endpoint, Outcome};
use crate::mcp::message::{Kind, Message, id_key};
use crate::mcp::sse;
use crate::mcp::upstream::{Event, EventStream, Reply, UpstreamError};

/// What to learn from answers passing through.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Watch {
    Nothing,
    /// The answer to `initialize`: record the negotiated protocol version on the session.
    Initialize,
    /// The answer to `tools/list`: learn the tools' `x-mcp-header` parameters.
    ToolsList,
}

pub(super) struct Ctx {
    pub endpoint: Arc<Endpoint>,
    /// Requests this answer must settle; empty for a GET stream.
    pub ids: Vec<Value>,
    pub session: Option<Arc<Session>>,
    pub watch: Watch,
    /// A stream that does not end by itself (GET, `subscriptions/listen`): it closes as soon
    /// as shutdown begins instead of being waited for.
    pub long_lived: bool,
    pub closing: CancellationToken,
    pub force: CancellationToken,
    /// The upstream has no HTTP status of its own (stdio) and the client is stateless: give
    /// JSON-RPC errors the status the 2026-07-28 transport assigns them.
    pub stateless_status: bool,
}

impl Ctx {
    fn session_id(&self) -> Option<Arc<str>> {
        self.session.as_ref().map(|s| s.id.clone())
    }

    fn observe(&self, msg: &Message) {
        if msg.kind() != Kind::Response {
            return;
        }
        match self.watch {
            Watch::Nothing => {}
            Watch::Initialize => {
                if let (Some(s), Some(v)) = (
                    &self.session,
                    msg.value()
                        .pointer("/result/protocolVersion")
                        .and_then(Value::as_str),
                ) {
                    s.set_version(v);
                }
            }
            Watch::ToolsList => {
                if let Some(tools) = msg.value().pointer("/result/tools") {
                    self.endpoint.learn_tools(tools);
                }
            }
        }
    }

    fn upstream_error(&self, e: UpstreamError) -> RelayError {
        RelayError::upstream(&self.endpoint.name, e)
    }
}

pub(super) fn is_final(msg: &Message) -> bool {
    matches!(msg.kind(), Kind::Response | Kind::Error)
}

/// Renders an upstream's reply.
pub(super) fn render(reply: Reply, ctx: Ctx) -> Outcome {
    match reply {
        Reply::Accepted => Outcome::Accepted {
            session: ctx.session_id(),
        },
        Reply::Message(m) => {
            ctx.observe(&m);
            Outcome::Json {
                status: StatusCode::OK,
                body: m.to_bytes(),
                session: ctx.session_id(),
            }
        }
        Reply::Batch(ms) => {
            let values: Vec<&Value> = ms.iter().map(Message::value).collect();
            Outcome::Json {
                status: StatusCode::OK,
                body: Bytes::from(serde_json::to_vec(&values).unwrap_or_default()),
                session: ctx.session_id(),
            }
        }
        Reply::Rejected {
            status,
            content_type,
            body,
        } => Outcome::Passthrough {
            status,
            content_type,
            body,
            session: ctx.session_id(),
        },
        Reply::Stream(s) => stream(s, ctx, Vec::new()),
    }
}

/// Renders a stream from a process, which has no JSON-or-SSE choice of its own: a request
/// answered before anything else is said gets JSON; otherwise the client gets a stream.
pub(super) async fn render_first(mut events: EventStream, ctx: Ctx) -> Outcome {
    let single = ctx.ids.len() == 1;
    let first = tokio::select! {
        first = events.next() => first,
        () = ctx.force.cancelled() => Some(Err(UpstreamError::Closed("the gateway is shutting down".into()))),
    };
    match first {
        Some(Ok(Event {
            message: Some(m),
            id: None,
            ..
        })) if single && is_final(&m) => {
            ctx.observe(&m);
            let status = match m.value().pointer("/error/code").and_then(Value::as_i64) {
                Some(code) if ctx.stateless_status => super::error::stateless_status(code),
                _ => StatusCode::OK,
            };
            Outcome::Json {
                status,
                body: m.to_bytes(),
                session: ctx.session_id(),
            }
        }
        Some(Ok(first)) => stream(events, ctx, vec![first]),
        Some(Err(e)) if single => {
            let session = ctx.session_id();
            let id = ctx.ids[0].clone();
            Outcome::Error {
                error: ctx.upstream_error(e),
                id: Some(id),
                session,
            }
        }
        Some(Err(e)) => stream(
            futures_util::stream::iter([Err(e)]).boxed(),
            ctx,
            Vec::new(),
        ),
        None if single => {
            let id = ctx.ids[0].clone();
            let session = ctx.session_id();
            Outcome::Error {
                error: ctx.upstream_error(UpstreamError::Closed(
                    "the upstream closed the stream before answering".into(),
                )),
                id: Some(id),
                session,
            }
        }
        None => stream(futures_util::stream::empty().boxed(), ctx, Vec::new()),
    }
}

struct State {
    upstream: EventStream,
    ctx: Ctx,
    ahead: std::vec::IntoIter<Event>,
    pending: HashSet<String>,
    ids: Vec<Value>,
    resumable: bool,
    done: bool,
}

fn stream(upstream: EventStream, ctx: Ctx, ahead: Vec<Event>) -> Outcome {
    let session = ctx.session_id();
    let ids = ctx.ids.clone();
    let state = State {
        pending: ids.iter().map(id_key).collect(),
        ids,
        upstream,
        ctx,
        ahead: ahead.into_iter(),
        resumable: false,
        done: false,
    };
    let events: BoxStream<'static, Bytes> = futures_util::stream::unfold(state, step).boxed();
    Outcome::Stream { events, session }
}

async fn step(mut st: State) -> Option<(Bytes, State)> {
    if st.done {
        return None;
    }
    let next = match st.ahead.next() {
        Some(ev) => Some(Ok(ev)),
        None => {
            let closing = st.ctx.closing.clone();
            let force = st.ctx.force.clone();
            let long_lived = st.ctx.long_lived;
            tokio::select! {
                next = st.upstream.next() => next,
                () = closing.cancelled(), if long_lived => return None,
                () = force.cancelled() => Some(Err(UpstreamError::Closed("the gateway is shutting down".into()))),
            }
        }
    };
    match next {
        Some(Ok(event)) => {
            if event.id.is_some() {
                st.resumable = true;
            }
            if let Some(m) = &event.message {
                st.ctx.observe(m);
                if is_final(m)
                    && let Some(id) = m.id()
                {
                    st.pending.remove(&id_key(id));
                }
            }
            let bytes = sse::encode(&event);
            if !st.ids.is_empty() && st.pending.is_empty() {
                st.done = true;
            }
            Some((bytes, st))
        }
        Some(Err(e)) => {
            if st.pending.is_empty() {
                tracing::debug!(endpoint = %st.ctx.endpoint.name, "upstream stream ended: {e}");
                return None;
            }
            let bytes = unanswered(&st, &e);
            st.done = true;
            Some((bytes, st))
        }
        None => {
            // A stream that closes after an event with an id is being resumed by the client
            // (SSE polling); otherwise requests still open here will never be answered.
            if st.pending.is_empty() || st.resumable {
                return None;
            }
            let e = UpstreamError::Closed("the upstream closed the stream before answering".into());
            let bytes = unanswered(&st, &e);
            st.done = true;
            Some((bytes, st))
        }
    }
}

/// Error events answering every request of the stream that is still open.
fn unanswered(st: &State, e: &UpstreamError) -> Bytes {
    let error = st.ctx.upstream_error(e.clone());
    let mut out = BytesMut::new();
    for id in st.ids.iter().filter(|id| st.pending.contains(&id_key(id))) {
        let msg = Message::from_value(error.to_json(Some(id)))
            .unwrap_or_else(|_| unreachable!("error responses are JSON-RPC"));
        out.extend_from_slice(&sse::encode(&Event::message(msg)));
    }
    out.freeze()
}
