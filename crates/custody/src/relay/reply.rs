//! Turning what an upstream answered into what the client receives: JSON, or an SSE stream
//! relayed event by event, ending once every request it carries is answered. Every message is
//! recorded before the client gets it; one that cannot be recorded is withheld and the request
//! it answers gets an "audit log unavailable" error instead.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;
use http::StatusCode;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

mod stream;

use stream::stream;

use super::error::RelayError;
use super::record::{Scope, add_receipt, json_text};
use super::session::Session;
use super::{Endpoint, Outcome};
use crate::audit::{Appended, Direction};
use crate::identity::Principal;
use crate::mask;
use crate::mcp::message::{Kind, Message, ParseError};
use crate::mcp::upstream::http::ResponseHeaders;
use crate::mcp::upstream::{Event, EventStream, Reply, UpstreamError};
use crate::policy::{Call, Engine};

/// What to learn from answers passing through.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Watch {
    Nothing,
    /// The answer to `initialize`: record the negotiated protocol version on the session.
    Initialize,
    /// The answer to `server/discover`: the versions the upstream supports.
    Discover,
    /// The answer to `tools/list`: learn the tools' `x-mcp-header` parameters.
    ToolsList,
}

/// Filters the answers to list requests down to what the caller may use.
pub(super) struct ListFilter {
    pub engine: Arc<Engine>,
    pub principal: Arc<Principal>,
    pub address: String,
    pub version: String,
    /// The list requests of this call: id and method.
    pub requests: Vec<(Value, &'static str)>,
}

impl ListFilter {
    /// Filters `msg` if it answers one of the list requests; returns what was removed.
    fn apply(&self, endpoint: &str, msg: &mut Message) -> Option<Value> {
        let method = msg
            .id()
            .and_then(|id| self.requests.iter().find(|(r, _)| r == id))
            .map(|(_, m)| *m)?;
        let call = Call {
            principal: &self.principal,
            endpoint,
            method,
            target: None,
            arguments: None,
            protocol_version: &self.version,
            client_address: &self.address,
        };
        let mut removed = Vec::new();
        msg.edit(|v| removed = self.engine.filter_list(&call, v));
        (!removed.is_empty()).then(|| serde_json::json!(removed))
    }
}

pub(super) struct Ctx {
    pub endpoint: Arc<Endpoint>,
    /// Requests this answer must settle, with where each is in the log.
    pub requests: Vec<(Value, Appended)>,
    pub session: Option<Arc<Session>>,
    pub scope: Scope,
    pub watch: Watch,
    /// A stream that does not end by itself (GET, `subscriptions/listen`): it closes as soon
    /// as shutdown begins instead of being waited for.
    pub long_lived: bool,
    pub closing: CancellationToken,
    pub force: CancellationToken,
    /// The upstream has no HTTP status of its own (stdio) and the client is stateless: give
    /// JSON-RPC errors the status the 2026-07-28 transport assigns them.
    pub stateless_status: bool,
    /// List answers to filter by policy.
    pub filter: Option<ListFilter>,
    /// The HTTP upstream's response headers, recorded (masked) with the first message of the
    /// answer.
    pub upstream_headers: std::sync::Mutex<Option<ResponseHeaders>>,
    /// When the call was forwarded upstream, and whether its answer's time was counted.
    pub forwarded: std::time::Instant,
    pub timed: std::sync::atomic::AtomicBool,
}

impl Ctx {
    /// The call was forwarded at `t` (before the upstream's answer began to arrive).
    pub fn since(mut self, t: std::time::Instant) -> Self {
        self.forwarded = t;
        self
    }

    /// Counts the upstream's time to its first answer (or failure), once per call.
    pub fn answered(&self, failed: bool) {
        if !self.timed.swap(true, std::sync::atomic::Ordering::Relaxed) {
            self.endpoint
                .metrics
                .upstream(failed, self.forwarded.elapsed());
        }
    }

    /// The `Mcp-Session-Id` the answer carries: the token the session's client holds.
    fn session_id(&self) -> Option<Arc<str>> {
        self.session.as_ref().map(|s| s.token.clone())
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
                    self.endpoint.learn_version(v);
                }
            }
            Watch::Discover => {
                if let Some(v) = msg.value().pointer("/result/supportedVersions") {
                    self.endpoint.learn_versions(v);
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
        RelayError::upstream(&self.endpoint.name, &self.endpoint.mask, e)
    }

    fn request_of(&self, msg: &Message) -> Option<Appended> {
        let id = msg.id()?;
        self.requests
            .iter()
            .find(|(rid, _)| rid == id)
            .map(|(_, a)| *a)
    }

    /// Records a message from the upstream and adds the receipt to a result.
    async fn record(&self, mut msg: Message) -> Result<Message, RelayError> {
        let request = if matches!(msg.kind(), Kind::Response | Kind::Error) {
            self.request_of(&msg)
        } else {
            None
        };
        if request.is_some() {
            self.answered(false);
        }
        let mut detail = serde_json::Map::new();
        if let (Some(f), Kind::Response) = (&self.filter, msg.kind())
            && let Some(removed) = f.apply(&self.endpoint.name, &mut msg)
        {
            detail.insert("policy_filtered".into(), removed);
        }
        // The client gets its copy; the log stores the audit copy (the client copy with the
        // audit rules on top); the receipt names the entry the log holds.
        let copies = self.scope.mask.copies(msg.value());
        let mut marks = copies.marks;
        let headers = self
            .upstream_headers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        // The recorded response headers: a payload of their own in a version-2 log.
        let headers = headers.filter(|h| !h.is_empty()).map(|mut h| {
            marks.extend(self.scope.mask.headers(&mut h));
            Bytes::from(Value::Object(h).to_string())
        });
        if !marks.is_empty() {
            detail.insert("mask".into(), mask::report(&marks));
        }
        let request_index = request.map(|r| r.index);
        let appended = match &copies.audit {
            Some(copy) => {
                self.scope
                    .masked_copy(
                        &msg,
                        copy,
                        Direction::UpstreamToClient,
                        request_index,
                        json_text(detail),
                        headers,
                    )
                    .await?
            }
            None => {
                self.scope
                    .message_with(
                        &msg,
                        Direction::UpstreamToClient,
                        request_index,
                        json_text(detail),
                        headers,
                    )
                    .await?
            }
        };
        if let Some(client) = copies.client {
            // Masking leaves the envelope alone, so the copy is JSON-RPC; should it not be,
            // the client gets an error, never the unmasked original.
            msg = match Message::from_value(client) {
                Ok(m) => m,
                Err(_) => {
                    return Err(self.upstream_error(UpstreamError::Protocol(
                        "the masked answer is not JSON-RPC".into(),
                    )));
                }
            };
        }
        if request.is_some() {
            add_receipt(&mut msg, self.scope.audit.origin(), request, appended);
        }
        Ok(msg)
    }

    /// The answer when the upstream (or the log) failed a request of this call.
    async fn failed(&self, error: RelayError, id: Value) -> Outcome {
        let request = self
            .requests
            .iter()
            .find(|(r, _)| *r == id)
            .map(|(_, a)| a.index);
        let error = match self.scope.failure(&error, Some(&id), request).await {
            Ok(_) => error,
            Err(audit) => audit,
        };
        Outcome::Error {
            error,
            id: Some(id),
            session: self.session_id(),
        }
    }
}

pub(super) fn is_final(msg: &Message) -> bool {
    matches!(msg.kind(), Kind::Response | Kind::Error)
}

fn single_id(ctx: &Ctx) -> Option<Value> {
    match ctx.requests.as_slice() {
        [(id, _)] => Some(id.clone()),
        _ => None,
    }
}

/// One JSON answer: recorded, then relayed.
async fn json(ctx: &Ctx, m: Message, status: StatusCode) -> Outcome {
    ctx.observe(&m);
    match ctx.record(m).await {
        Ok(m) => Outcome::Json {
            status,
            body: m.to_bytes(),
            session: ctx.session_id(),
        },
        Err(e) => match single_id(ctx) {
            Some(id) => Outcome::Error {
                error: e,
                id: Some(id),
                session: ctx.session_id(),
            },
            None => Outcome::Error {
                error: e,
                id: None,
                session: ctx.session_id(),
            },
        },
    }
}

/// Renders an upstream's reply.
pub(super) async fn render(reply: Reply, ctx: Ctx) -> Outcome {
    match reply {
        Reply::Accepted => Outcome::Accepted {
            session: ctx.session_id(),
        },
        Reply::Message(m) => json(&ctx, m, StatusCode::OK).await,
        Reply::Batch(ms) => {
            let mut out = Vec::with_capacity(ms.len());
            for m in ms {
                match ctx.record(m).await {
                    Ok(m) => out.push(m.into_value()),
                    Err(e) => {
                        return Outcome::Error {
                            error: e,
                            id: None,
                            session: ctx.session_id(),
                        };
                    }
                }
            }
            Outcome::Json {
                status: StatusCode::OK,
                body: Bytes::from(serde_json::to_vec(&out).unwrap_or_default()),
                session: ctx.session_id(),
            }
        }
        Reply::Rejected {
            status,
            content_type,
            body,
        } => {
            // The upstream refused with its own HTTP status and a JSON body: recorded (its audit
            // copy) and relayed as its client copy, like any answer: an error body may echo
            // the credentials the gateway sent. A body without one reading is not relayed.
            let limits = ctx.endpoint.messages.json();
            let body = match Message::parse(body.clone(), limits) {
                Ok(m) => match ctx.record(m).await {
                    Ok(m) => m.to_bytes(),
                    Err(e) => {
                        return Outcome::Error {
                            error: e,
                            id: single_id(&ctx),
                            session: ctx.session_id(),
                        };
                    }
                },
                Err(e @ ParseError::Strict(_)) => {
                    let error = ctx.upstream_error(UpstreamError::Protocol(format!(
                        "its HTTP {} answer: {e}",
                        status.as_u16()
                    )));
                    return match single_id(&ctx) {
                        Some(id) => ctx.failed(error, id).await,
                        None => {
                            let error = match ctx.scope.failure(&error, None, None).await {
                                Ok(_) => error,
                                Err(audit) => audit,
                            };
                            Outcome::Error {
                                error,
                                id: None,
                                session: ctx.session_id(),
                            }
                        }
                    };
                }
                Err(_) => {
                    let error = ctx.upstream_error(UpstreamError::Status(
                        status.as_u16(),
                        String::from_utf8_lossy(&body).into_owned(),
                    ));
                    if let Err(e) = ctx
                        .scope
                        .failure(&error, single_id(&ctx).as_ref(), None)
                        .await
                    {
                        return Outcome::Error {
                            error: e,
                            id: single_id(&ctx),
                            session: ctx.session_id(),
                        };
                    }
                    // JSON that is not JSON-RPC (the upstream checked it): its client copy.
                    match serde_json::from_slice::<Value>(&body) {
                        Ok(v) => match ctx.scope.mask.copies(&v).client {
                            Some(copy) => Bytes::from(copy.to_string()),
                            None => body,
                        },
                        Err(_) => Bytes::new(),
                    }
                }
            };
            Outcome::Passthrough {
                status,
                content_type,
                body,
                session: ctx.session_id(),
            }
        }
        Reply::Stream(s) => stream(s, ctx, Vec::new()),
    }
}

/// Renders a stream from a process, which has no JSON-or-SSE choice of its own: a request
/// answered before anything else is said gets JSON; otherwise the client gets a stream.
pub(super) async fn render_first(mut events: EventStream, ctx: Ctx) -> Outcome {
    let single = single_id(&ctx);
    let first = tokio::select! {
        first = events.next() => first,
        () = ctx.force.cancelled() => Some(Err(UpstreamError::Closed("the gateway is shutting down".into()))),
    };
    match (first, single) {
        (
            Some(Ok(Event {
                message: Some(m),
                id: None,
                ..
            })),
            Some(_),
        ) if is_final(&m) => {
            let status = match m.value().pointer("/error/code").and_then(Value::as_i64) {
                Some(code) if ctx.stateless_status => super::error::stateless_status(code),
                _ => StatusCode::OK,
            };
            json(&ctx, m, status).await
        }
        (Some(Ok(first)), _) => stream(events, ctx, vec![first]),
        (Some(Err(e)), Some(id)) => {
            let error = ctx.upstream_error(e);
            ctx.failed(error, id).await
        }
        (Some(Err(e)), None) => stream(
            futures_util::stream::iter([Err(e)]).boxed(),
            ctx,
            Vec::new(),
        ),
        (None, Some(id)) => {
            let error = ctx.upstream_error(UpstreamError::Closed(
                "the upstream closed the stream before answering".into(),
            ));
            ctx.failed(error, id).await
        }
        (None, None) => stream(futures_util::stream::empty().boxed(), ctx, Vec::new()),
    }
}
