//! Routing what the process writes: each message to the request it belongs to, the GET
//! stream or the relay; a line that breaks the protocol or the size limit to the request it
//! names, or to the end of the process.

use serde_json::Value;
use tokio::sync::mpsc;

use super::routes::{
    Routes, asking_target, deliver, progress_key, send_or_standalone, to_standalone,
    unsolicited_target,
};
use super::{Child, ServerRequest, lock};
use crate::mcp::message::{Kind, Message, id_key};
use crate::mcp::upstream::{Event, Oversized, UpstreamError};
use crate::mcp::version::META_SUBSCRIPTION_ID;

impl Child {
    /// Routes one message from the process.
    pub(super) fn route(&self, mut msg: Message) {
        let mut r = lock(&self.routes);
        match msg.kind() {
            Kind::Response | Kind::Error => {
                let internal = msg.id().and_then(Value::as_u64);
                let Some(p) = internal.and_then(|i| r.pending.remove(&i)) else {
                    tracing::warn!(endpoint = %self.endpoint, id = ?msg.id(), "upstream answered a request it was not sent; dropped");
                    return;
                };
                if let Some(t) = &p.token {
                    r.progress.remove(t);
                }
                if !p.shared {
                    r.client_ids.remove(&id_key(&p.client_id));
                }
                msg.edit(|v| v["id"] = p.client_id.clone());
                deliver(&mut r, &p, msg);
            }
            Kind::Notification if msg.method() == Some("notifications/progress") => {
                let token = msg
                    .params()
                    .and_then(|p| p.get("progressToken"))
                    .and_then(|t| r.progress.get(&progress_key(t)).copied());
                match token.and_then(|i| r.pending.get(&i)) {
                    Some(p) => {
                        if let Some(orig) = &p.client_token {
                            msg.edit(|v| v["params"]["progressToken"] = orig.clone());
                        }
                        let (tx, detached) = (p.tx.clone(), p.detached);
                        send_or_standalone(&mut r, &tx, detached, msg);
                    }
                    None => self.unsolicited(&mut r, msg),
                }
            }
            Kind::Notification if msg.meta(META_SUBSCRIPTION_ID).is_some() => {
                let target = msg.meta(META_SUBSCRIPTION_ID).and_then(Value::as_u64);
                match target.and_then(|i| r.pending.get(&i)) {
                    Some(p) => {
                        let client_id = p.client_id.clone();
                        msg.edit(|v| v["params"]["_meta"][META_SUBSCRIPTION_ID] = client_id);
                        let (tx, detached) = (p.tx.clone(), p.detached);
                        send_or_standalone(&mut r, &tx, detached, msg);
                    }
                    None => self.unsolicited(&mut r, msg),
                }
            }
            Kind::Request if self.server_requests.is_some() => match asking_target(&r) {
                // The one call in flight takes it: the relay asks that call's client.
                Some(tx) => {
                    if let Err(mpsc::error::SendError(Ok(ev))) = tx.send(Ok(Event::message(msg)))
                        && let Some(m) = ev.message
                    {
                        drop(r);
                        self.to_relay(m);
                    }
                }
                None => {
                    drop(r);
                    self.to_relay(msg);
                }
            },
            _ => self.unsolicited(&mut r, msg),
        }
    }

    /// A pooled process's request to the client, for the relay to answer at once.
    fn to_relay(&self, message: Message) {
        let request = ServerRequest {
            message,
            reply: self.stdin.clone(),
        };
        if let Some(tx) = &self.server_requests
            && tx.try_send(request).is_err()
        {
            tracing::warn!(endpoint = %self.endpoint, "too many requests from a pooled process waiting to be answered; one dropped (its call times out)");
        }
    }

    /// A server-to-client request or a notification tied to no request by id or token: it
    /// goes with the newest request still streaming (that is what a server emitting it while
    /// handling a call means), else to the GET stream. On a shared process it is delivered only
    /// when exactly one request is in flight, since anything else could hand one client's data
    /// to another.
    fn unsolicited(&self, r: &mut Routes, msg: Message) {
        let (target, shared) = unsolicited_target(r);
        let msg = match target {
            Some(tx) => match tx.send(Ok(Event::message(msg))) {
                Ok(()) => return,
                Err(mpsc::error::SendError(Ok(Event {
                    message: Some(m), ..
                }))) => m,
                Err(_) => return,
            },
            None => msg,
        };
        if shared {
            tracing::warn!(endpoint = %self.endpoint, method = ?msg.method(), "a shared upstream process sent a message that belongs to no single request; dropped");
            return;
        }
        to_standalone(r, msg);
    }

    /// A line that is not one message with one reading, or one over the size limit: when it
    /// names a request in flight, that request fails with `error` and the process goes on.
    /// Returns whether it did.
    pub(super) fn fail_request(
        &self,
        id: Option<&Value>,
        error: impl FnOnce(Value) -> UpstreamError,
    ) -> bool {
        let mut r = lock(&self.routes);
        let Some(p) = id
            .and_then(Value::as_u64)
            .and_then(|i| r.pending.remove(&i))
        else {
            return false;
        };
        if let Some(t) = &p.token {
            r.progress.remove(t);
        }
        if !p.shared {
            r.client_ids.remove(&id_key(&p.client_id));
        }
        let _ = p.tx.send(Err(error(p.client_id.clone())));
        true
    }

    /// A line over `max_message_bytes`: the request it answers fails; one that names no request
    /// goes where an unsolicited message would (to be recorded there), else is dropped with a
    /// warning. The process goes on either way.
    pub(super) fn oversized(&self, mut o: Oversized) {
        tracing::warn!(endpoint = %self.endpoint, pid = ?self.pid, bytes = o.bytes, sha256 = %o.sha256_hex(), "upstream process wrote a message over max_message_bytes; it is not relayed");
        let id = o.id.take();
        if self.fail_request(id.as_ref(), |client| {
            o.id = Some(client);
            UpstreamError::TooLarge(Box::new(o.clone()))
        }) {
            return;
        }
        let r = lock(&self.routes);
        let error = UpstreamError::TooLarge(Box::new(o));
        let target = unsolicited_target(&r).0.or_else(|| r.standalone.clone());
        if target.is_none_or(|tx| tx.send(Err(error)).is_err()) {
            tracing::warn!(endpoint = %self.endpoint, "the oversized message belongs to no request or stream; dropped");
        }
        drop(r);
    }

    /// The process broke the protocol: fail everything in flight and stop it.
    pub(super) fn fatal(&self, reason: String) {
        // The reason may quote the process's output, which may hold its environment.
        let reason = self.scrub.redacted(&reason);
        tracing::error!(endpoint = %self.endpoint, pid = ?self.pid, "{reason}; stopping the process");
        self.fail_all(&UpstreamError::Protocol(reason));
        self.stopping.cancel();
    }
}
