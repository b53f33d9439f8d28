//! Holding a call policy marks for approval, in the request flow.
//!
//! The request is recorded (write-ahead, as every request), an approval is opened, and the
//! client gets an event stream at once: an SSE comment now and every `approvals.keepalive`, and
//! a `notifications/progress` when the request carried a progress token. A task waits for the
//! end: a grant releases the call, which is forwarded and answered on the same stream as any
//! other call; a denial, the expiry or the gateway stopping answers it with a JSON-RPC error;
//! the client leaving (the stream dropped) or cancelling ends the approval with no answer.

use std::future::Future;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::error::code;
use super::record::Scope;
use super::{Caller, Endpoint, Outcome, Relay, RelayError, Session, fail};
use crate::approval::{Ask, Ending, Pending, Resolution};
use crate::audit::{Appended, Direction};
use crate::mcp::message::{Message, error_response};
use crate::policy::{Decision, Verdict};

/// Events waiting to be written to a held client; a slow client holds up only its own call.
const BUFFER: usize = 16;

/// A call to hold: recorded, with the decision that holds it.
pub(super) struct Held<'a> {
    pub scope: Scope,
    pub session: Option<Arc<Session>>,
    pub msg: Message,
    pub decision: &'a Decision,
    /// The request's entry.
    pub recorded: Appended,
    /// The protocol version the call was decided with.
    pub version: String,
}

impl Relay {
    /// Holds a recorded call until its approval ends; `forward` sends it on once it is granted
    /// and returns the answer, as the unheld path would.
    pub(super) async fn hold<F, Fut>(
        self: &Arc<Self>,
        ep: &Arc<Endpoint>,
        caller: &Caller,
        held: Held<'_>,
        forward: F,
    ) -> Outcome
    where
        F: FnOnce(Arc<Relay>, Message, Scope) -> Fut + Send + 'static,
        Fut: Future<Output = Outcome> + Send + 'static,
    {
        let Held {
            scope,
            session,
            msg,
            decision,
            recorded,
            version,
        } = held;
        let id = msg.id().cloned();
        let requests: Vec<(Value, Appended)> =
            id.clone().map(|i| (i, recorded)).into_iter().collect();
        let arguments = msg.params().and_then(|p| p.get("arguments"));
        // Approvers see the arguments as the upstream will receive them, only the credentials
        // the gateway holds scrubbed (or, with `approvals.show = "masked"`, the log's copy).
        let (scrubbed_arguments, credentials_hidden) = match arguments {
            Some(a) => match ep.mask.credentials_only(a, "/params/arguments") {
                (_, 0) => (None, 0),
                (scrubbed, n) => (Some(scrubbed), n),
            },
            None => (None, 0),
        };
        let masked = ep.mask.audit_copy(msg.value());
        let masked_arguments = masked
            .as_ref()
            .map_or(msg.value(), |(copy, _)| copy)
            .pointer("/params/arguments")
            .cloned()
            .unwrap_or_else(|| json!({}));
        // Values in which something is masked (a value with two secrets counts once).
        let masked_hidden = masked.as_ref().map_or(0, |(_, marks)| {
            let mut paths: Vec<&str> = marks
                .iter()
                .map(|m| m.path.as_str())
                .filter(|p| p.starts_with("/params/arguments"))
                .collect();
            paths.sort_unstable();
            paths.dedup();
            paths.len()
        });
        let opened = self
            .approvals
            .open(Ask {
                requester: caller.principal.clone(),
                endpoint: ep.name.clone(),
                session: scope.session.clone(),
                rpc_id: id.as_ref().map(Value::to_string),
                method: msg.method().unwrap_or(""),
                target: msg.target_name(),
                arguments,
                scrubbed_arguments,
                credentials_hidden,
                masked_arguments,
                masked_hidden,
                min_approvals: decision.min_approvals,
                policies: decision.policies.clone(),
                request: recorded,
            })
            .await;
        let pending = match opened {
            Ok(p) => p,
            Err(e) => {
                let ctx = self.ctx(ep, requests, session, scope);
                return fail(
                    &ctx,
                    RelayError::audit(e, super::error::Unrecorded::Request),
                    id,
                )
                .await;
            }
        };
        let progress = msg
            .params()
            .and_then(|p| p.pointer("/_meta/progressToken"))
            .cloned();
        let (tx, rx) = mpsc::channel::<Bytes>(BUFFER);
        let session_id = session.as_ref().map(|s| s.token.clone());
        let relay = self.clone();
        let ep = ep.clone();
        let caller = Caller {
            principal: caller.principal.clone(),
            address: caller.address.clone(),
        };
        // The wait runs on a task of its own, in the request's trace.
        let trace = opentelemetry::Context::current();
        let waiting = async move {
            let mut span = crate::telemetry::child("approval wait");
            if let Some(s) = &mut span {
                s.set("custody.approval.id", pending.id.to_string());
            }
            let resolution = relay
                .await_decision(&pending, progress.as_ref(), &tx, &scope, || {
                    // A session with a call waiting in it is not idle.
                    if let Some(s) = &session {
                        ep.sessions.get(&s.token, &s.owner.binding);
                    }
                })
                .await;
            if let Some(s) = &mut span {
                s.set("custody.approval.resolution", resolution.name());
            }
            drop(span);
            let ctx = relay.ctx(&ep, requests, session, scope.clone());
            let answer = match resolution {
                Resolution::Granted { .. } => {
                    let arguments = msg.params().and_then(|p| p.get("arguments"));
                    // Policy is asked again: a reload while the call waited may forbid it now.
                    let now = relay.authorize(&ep, &caller, &msg, &version);
                    if !pending.releases(
                        &caller.principal,
                        &ep.name,
                        msg.method().unwrap_or(""),
                        msg.target_name(),
                        arguments,
                    ) {
                        let error = RelayError::ApprovalMismatch(pending.id.clone());
                        fail(&ctx, error, id.clone()).await
                    } else if let Some(d) = now.filter(|d| d.verdict == Verdict::Deny) {
                        let error = RelayError::Denied {
                            action: crate::policy::action_of(msg.method().unwrap_or("")),
                            target: msg.target_name().map(str::to_string),
                            endpoint: ep.name.to_string(),
                            policies: d.policies,
                        };
                        fail(&ctx, error, id.clone()).await
                    } else {
                        forward(relay.clone(), msg, scope).await
                    }
                }
                Resolution::Denied { approver, reason } => {
                    let error = RelayError::ApprovalDenied {
                        id: pending.id.clone(),
                        approver,
                        reason,
                    };
                    fail(&ctx, error, id.clone()).await
                }
                Resolution::Ended {
                    ending: Ending::Expired,
                    ..
                } => {
                    let error = RelayError::ApprovalExpired {
                        id: pending.id.clone(),
                        after: relay.approvals.timeout(),
                    };
                    fail(&ctx, error, id.clone()).await
                }
                Resolution::Ended {
                    ending: Ending::Abandoned,
                    ..
                } => {
                    let error = RelayError::ApprovalAbandoned(pending.id.clone());
                    fail(&ctx, error, id.clone()).await
                }
                // The client left or asked not to be answered.
                Resolution::Ended {
                    ending: Ending::Cancelled,
                    ..
                } => return,
            };
            send_outcome(answer, id.as_ref(), &tx).await;
        };
        {
            use crate::telemetry::FutureExt as _;
            tokio::spawn(waiting.with_context(trace));
        }
        Outcome::Stream {
            events: ReceiverStream::new(rx).boxed(),
            session: session_id,
        }
    }

    /// Keeps the client informed until the approval ends, and ends it on expiry, when the
    /// client goes away, or when the gateway stops.
    async fn await_decision(
        &self,
        pending: &Pending,
        progress: Option<&Value>,
        tx: &mpsc::Sender<Bytes>,
        scope: &Scope,
        touch: impl Fn(),
    ) -> Resolution {
        let approvals = &self.approvals;
        let mut tick = tokio::time::interval(approvals.keepalive());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let deadline = tokio::time::sleep(pending.remaining());
        tokio::pin!(deadline);
        let mut count = 0u64;
        loop {
            tokio::select! {
                resolution = pending.wait() => return resolution,
                () = &mut deadline => {
                    let why = format!(
                        "nobody decided within {}",
                        humantime::format_duration(approvals.timeout())
                    );
                    return approvals.end(pending, Ending::Expired, &why).await;
                }
                () = tx.closed() => {
                    return approvals
                        .end(pending, Ending::Cancelled, "the client disconnected")
                        .await;
                }
                () = self.closing.cancelled() => {
                    return approvals
                        .end(pending, Ending::Abandoned, "the gateway is shutting down")
                        .await;
                }
                _ = tick.tick() => {
                    touch();
                    count += 1;
                    waiting_notice(pending, progress, count, tx, scope).await;
                }
            }
        }
    }
}

/// One keep-alive: an SSE comment, and a progress notification (recorded first) when the
/// client sent a progress token. A full buffer skips the beat rather than wait.
async fn waiting_notice(
    pending: &Pending,
    progress: Option<&Value>,
    count: u64,
    tx: &mpsc::Sender<Bytes>,
    scope: &Scope,
) {
    let remaining = std::time::Duration::from_secs(pending.remaining().as_secs());
    let text = format!(
        "waiting for approval {} ({} left; `custody approvals show {}`)",
        pending.id,
        humantime::format_duration(remaining),
        pending.id
    );
    let _ = tx.try_send(Bytes::from(format!(": {text}\n\n")));
    let Some(token) = progress else {
        return;
    };
    let value = json!({
        "jsonrpc": "2.0",
        "method": "notifications/progress",
        "params": { "progressToken": token, "progress": count, "message": text },
    });
    let Ok(msg) = Message::from_value(value) else {
        return;
    };
    let detail = json!({ "approval": pending.id }).to_string();
    // What the client is told is in the log first, like everything else it receives.
    if scope
        .message_with(&msg, Direction::Gateway, None, detail, None)
        .await
        .is_ok()
    {
        let _ = tx.try_send(data_event(&msg.to_bytes()));
    }
}

/// An SSE event carrying one JSON-RPC message. A body with line breaks (an upstream's pretty
/// JSON) is re-encoded on one line, since each line of an event is a field.
fn data_event(json: &[u8]) -> Bytes {
    let compact;
    let data = if json.contains(&b'\n') || json.contains(&b'\r') {
        compact = serde_json::from_slice::<Value>(json)
            .map(|v| v.to_string().into_bytes())
            .unwrap_or_default();
        &compact[..]
    } else {
        json
    };
    let mut out = BytesMut::with_capacity(data.len() + 8);
    out.put_slice(b"data: ");
    out.put_slice(data);
    out.put_slice(b"\n\n");
    out.freeze()
}

/// Writes the released (or refused) call's answer to the held stream.
async fn send_outcome(outcome: Outcome, id: Option<&Value>, tx: &mpsc::Sender<Bytes>) {
    match outcome {
        Outcome::Json { body, .. } => {
            let _ = tx.send(data_event(&body)).await;
        }
        Outcome::Passthrough { status, body, .. } => {
            // An upstream's HTTP error: its JSON-RPC error if it sent one, else one saying so.
            let event = match serde_json::from_slice::<Value>(&body) {
                Ok(v) if v.get("jsonrpc").is_some() => data_event(v.to_string().as_bytes()),
                _ => {
                    let error = error_response(
                        id,
                        code::UPSTREAM_PROTOCOL,
                        &format!("the upstream answered HTTP {status}"),
                        None,
                    );
                    data_event(error.to_string().as_bytes())
                }
            };
            let _ = tx.send(event).await;
        }
        Outcome::Stream { mut events, .. } => {
            while let Some(event) = events.next().await {
                if tx.send(event).await.is_err() {
                    break;
                }
            }
        }
        Outcome::Error { error, id, .. } => {
            let _ = tx
                .send(data_event(
                    error.to_json(id.as_ref()).to_string().as_bytes(),
                ))
                .await;
        }
        Outcome::Accepted { .. } | Outcome::Status(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_carry_one_line_of_json() {
        assert_eq!(&data_event(b"{\"a\":1}")[..], b"data: {\"a\":1}\n\n");
        assert_eq!(&data_event(b"{\n  \"a\": 1\n}")[..], b"data: {\"a\":1}\n\n");
    }
}
