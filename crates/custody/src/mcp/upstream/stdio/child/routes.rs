//! The routing table of one process: which request each message it writes belongs to.

use std::collections::{HashMap, VecDeque};

use serde_json::Value;
use tokio::sync::mpsc;

use super::{BACKLOG, Tx};
use crate::mcp::message::Message;
use crate::mcp::upstream::Event;

#[derive(Default)]
pub(super) struct Routes {
    pub(super) pending: HashMap<u64, Pending>,
    /// Gateway progress token → request.
    pub(super) progress: HashMap<String, u64>,
    /// Client id key → request (for `notifications/cancelled` from the client).
    pub(super) client_ids: HashMap<String, u64>,
    pub(super) standalone: Option<Tx>,
    pub(super) backlog: VecDeque<Message>,
    pub(super) order: u64,
    pub(super) dead: Option<String>,
}

pub(super) struct Pending {
    pub(super) client_id: Value,
    pub(super) client_token: Option<Value>,
    pub(super) token: Option<String>,
    pub(super) tx: Tx,
    pub(super) order: u64,
    /// The client's stream went away (session-based: later messages go to the GET stream).
    pub(super) detached: bool,
    /// Shared processes must not guess where unattributed messages belong.
    pub(super) shared: bool,
    /// A `subscriptions/listen` stream: open until the client leaves, carries only tagged
    /// notifications, and does not count as work in flight.
    pub(super) long_lived: bool,
    /// The process's requests to the client may come on this request's stream (the relay
    /// translates them into multi round-trip requests), when they can only belong to it.
    pub(super) asks: bool,
}

/// Where a message that names no request goes: the newest request still streaming on a
/// session's own process; on a shared process only the single request in flight, if there is
/// exactly one. Also says whether the process is shared.
pub(super) fn unsolicited_target(r: &Routes) -> (Option<Tx>, bool) {
    let streaming: Vec<&Pending> = r
        .pending
        .values()
        .filter(|p| !p.detached && !p.long_lived && !p.tx.is_closed())
        .collect();
    let shared = r.pending.values().any(|p| p.shared);
    let target = if shared {
        if streaming.len() == 1 {
            Some(streaming[0].tx.clone())
        } else {
            None
        }
    } else {
        streaming
            .iter()
            .max_by_key(|p| p.order)
            .map(|p| p.tx.clone())
    };
    (target, shared)
}

/// Where a request from a shared process to the client goes: the stream of the one request in
/// flight, if there is exactly one and it takes such requests ([`Pending::asks`]). With several
/// in flight the request could belong to any of them (stdio carries no link from a server's
/// request to the call it serves), so it goes to the relay, which answers it at once.
pub(super) fn asking_target(r: &Routes) -> Option<Tx> {
    let mut streaming = r
        .pending
        .values()
        .filter(|p| !p.detached && !p.long_lived && !p.tx.is_closed());
    match (streaming.next(), streaming.next()) {
        (Some(p), None) if p.asks => Some(p.tx.clone()),
        _ => None,
    }
}

/// A map key for a progress token (string or number).
pub(super) fn progress_key(token: &Value) -> String {
    match token {
        Value::String(s) => s.clone(),
        other => format!("#{other}"),
    }
}

pub(super) fn deliver(r: &mut Routes, p: &Pending, msg: Message) {
    send_or_standalone(r, &p.tx, p.detached, msg);
}

pub(super) fn send_or_standalone(r: &mut Routes, tx: &Tx, detached: bool, msg: Message) {
    if detached || tx.is_closed() {
        to_standalone(r, msg);
    } else if let Err(mpsc::error::SendError(Ok(ev))) = tx.send(Ok(Event::message(msg)))
        && let Some(m) = ev.message
    {
        to_standalone(r, m);
    }
}

pub(super) fn to_standalone(r: &mut Routes, msg: Message) {
    if let Some(tx) = &r.standalone {
        match tx.send(Ok(Event::message(msg))) {
            Ok(()) => return,
            Err(mpsc::error::SendError(Ok(ev))) => {
                r.standalone = None;
                if let Some(m) = ev.message {
                    push_backlog(r, m);
                }
                return;
            }
            Err(_) => return,
        }
    }
    push_backlog(r, msg);
}

pub(super) fn push_backlog(r: &mut Routes, msg: Message) {
    if r.backlog.len() >= BACKLOG {
        r.backlog.pop_front();
    }
    r.backlog.push_back(msg);
}
