//! Relaying an upstream's SSE stream event by event: each message recorded before the client
//! gets it, the stream ending once every request it carries is answered, and error events for
//! the requests left open when the upstream or the log fails.

use std::collections::{HashMap, HashSet};

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use serde_json::Value;

use super::{Ctx, is_final};
use crate::mcp::message::{Message, id_key};
use crate::mcp::sse;
use crate::mcp::upstream::{Event, EventStream, UpstreamError};
use crate::relay::Outcome;
use crate::relay::error::RelayError;

struct State {
    upstream: EventStream,
    ctx: Ctx,
    ahead: std::vec::IntoIter<Event>,
    pending: HashSet<String>,
    ids: HashMap<String, Value>,
    resumable: bool,
    done: bool,
}

pub(super) fn stream(upstream: EventStream, ctx: Ctx, ahead: Vec<Event>) -> Outcome {
    let session = ctx.session_id();
    let ids: HashMap<String, Value> = ctx
        .requests
        .iter()
        .map(|(id, _)| (id_key(id), id.clone()))
        .collect();
    let state = State {
        pending: ids.keys().cloned().collect(),
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
        Some(Ok(mut event)) => {
            // The client never sees the upstream's event ids: on a session the gateway issues
            // its own and remembers the upstream's for resumption; without a session nothing
            // can be resumed through the gateway, so events go without ids.
            event.id = match (event.id.take(), &st.ctx.session) {
                (Some(upstream), Some(session)) => session.events.issue(upstream),
                _ => None,
            };
            if event.id.is_some() {
                st.resumable = true;
            }
            if let Some(m) = event.message.take() {
                st.ctx.observe(&m);
                let answered = if is_final(&m) {
                    m.id().map(id_key)
                } else {
                    None
                };
                match st.ctx.record(m).await {
                    Ok(m) => event.message = Some(m),
                    Err(e) => {
                        // Not recorded, so not relayed: the requests still open fail instead.
                        let bytes = unanswered(&st.ids, &st.pending, &e);
                        st.done = true;
                        return Some((bytes, st));
                    }
                }
                if let Some(key) = answered {
                    st.pending.remove(&key);
                }
            }
            let bytes = sse::encode(&event);
            if !st.ids.is_empty() && st.pending.is_empty() {
                st.done = true;
            }
            Some((bytes, st))
        }
        Some(Err(UpstreamError::TooLarge(o))) => {
            // Withheld, not fatal: the log records its size and hash, the call it answers
            // fails, and the stream goes on.
            let answers = o.id.as_ref().map(id_key).filter(|k| st.pending.contains(k));
            let id = answers.as_ref().and_then(|k| st.ids.get(k)).cloned();
            let error = st.ctx.upstream_error(UpstreamError::TooLarge(o));
            let request = id.as_ref().and_then(|i| {
                st.ctx
                    .requests
                    .iter()
                    .find(|(r, _)| r == i)
                    .map(|(_, a)| a.index)
            });
            if let Err(e) = st.ctx.scope.failure(&error, id.as_ref(), request).await {
                let bytes = unanswered(&st.ids, &st.pending, &e);
                st.done = true;
                return Some((bytes, st));
            }
            let bytes = match (answers, id) {
                (Some(key), Some(id)) => {
                    st.pending.remove(&key);
                    if st.pending.is_empty() {
                        st.done = true;
                    }
                    encode_error(&error, &id)
                }
                _ => Bytes::from_static(WITHHELD),
            };
            Some((bytes, st))
        }
        Some(Err(e)) => {
            let error = st.ctx.upstream_error(e);
            if st.pending.is_empty() {
                tracing::debug!(endpoint = %st.ctx.endpoint.name, "upstream stream ended: {error}");
                return None;
            }
            let bytes = failures(&st.ctx, &st.ids, &st.pending, error).await;
            st.done = true;
            Some((bytes, st))
        }
        None => {
            // A stream that closes after an event with an id is being resumed by the client
            // (SSE polling); otherwise requests still open here will never be answered.
            if st.pending.is_empty() || st.resumable {
                return None;
            }
            let error = st.ctx.upstream_error(UpstreamError::Closed(
                "the upstream closed the stream before answering".into(),
            ));
            let bytes = failures(&st.ctx, &st.ids, &st.pending, error).await;
            st.done = true;
            Some((bytes, st))
        }
    }
}

/// Records and encodes the error answering every request of the stream still open.
async fn failures(
    ctx: &Ctx,
    ids: &HashMap<String, Value>,
    pending: &HashSet<String>,
    error: RelayError,
) -> Bytes {
    let mut out = BytesMut::new();
    for (key, id) in ids {
        if !pending.contains(key) {
            continue;
        }
        let request = ctx
            .requests
            .iter()
            .find(|(r, _)| r == id)
            .map(|(_, a)| a.index);
        if ctx.scope.failure(&error, Some(id), request).await.is_err() {
            let unrecorded = RelayError::AuditUnavailable {
                why: format!("the failure could not be recorded: {error}"),
                stage: crate::relay::error::Unrecorded::GatewayAnswer,
            };
            return unanswered(ids, pending, &unrecorded);
        }
        out.extend_from_slice(&encode_error(&error, id));
    }
    out.freeze()
}

/// Error events for every request still open, when even recording failed.
fn unanswered(
    ids: &HashMap<String, Value>,
    pending: &HashSet<String>,
    error: &RelayError,
) -> Bytes {
    let mut out = BytesMut::new();
    for (key, id) in ids {
        if pending.contains(key) {
            out.extend_from_slice(&encode_error(error, id));
        }
    }
    out.freeze()
}

/// What a client's stream carries in place of an upstream message that belongs to no open
/// request and was withheld for its size (recorded in the log by size and hash).
const WITHHELD: &[u8] =
    b": custody withheld an upstream message over this endpoint's max_message_bytes\n\n";

fn encode_error(error: &RelayError, id: &Value) -> Bytes {
    let msg = Message::from_value(error.to_json(Some(id)))
        .unwrap_or_else(|_| unreachable!("error responses are JSON-RPC"));
    sse::encode(&Event::message(msg))
}
