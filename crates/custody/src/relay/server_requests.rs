//! Requests a pooled stdio process sends to "the client" in the middle of a call (sampling,
//! elicitation, roots) that cannot be put to the client. The process serves stateless
//! (2026-07-28) clients, who cannot take requests from a server: relayed, such a request would
//! hang the call. Where the request can only belong to one call and that call's client can be
//! asked through a multi round-trip request, `mrtr.rs` asks it; otherwise the gateway answers it
//! at once, as a 2026-07-28 client would (method not found), after recording both the request
//! and its answer, and the call completes.

use std::sync::Arc;

use serde_json::json;
use tokio::sync::mpsc;

use super::code;
use super::endpoint::Endpoint;
use super::record::{Scope, json_text};
use crate::audit::{Audit, Direction};
use crate::identity::Principal;
use crate::mask;
use crate::mcp::message::Message;
use crate::mcp::upstream::stdio::ServerRequest;

/// Answers what the endpoint's pooled processes ask of the client, until they stop asking.
pub(super) fn spawn(audit: Arc<Audit>, ep: Arc<Endpoint>, mut rx: mpsc::Receiver<ServerRequest>) {
    tokio::spawn(async move {
        while let Some(request) = rx.recv().await {
            answer(&audit, &ep, request).await;
        }
    });
}

async fn answer(audit: &Arc<Audit>, ep: &Arc<Endpoint>, request: ServerRequest) {
    let gateway = Principal::gateway();
    let scope = Scope::new(
        audit,
        &ep.name,
        None,
        &gateway,
        &ep.mask,
        ep.messages.json(),
    );
    // The gateway as caller: the request may belong to any call the process is working on.
    let why = "a pooled process serves stateless clients, which take no requests from a server";
    if let Some(answer) = answer_now(&scope, &request.message, why).await {
        tracing::info!(endpoint = %ep.name, method = ?request.message.method(), "a pooled process asked the client; answered for the stateless client");
        request.answer(&answer).await;
    }
}

/// Records a process's request to the client and the gateway's answer to it, -32601 as a
/// 2026-07-28 client would give (`why` says why the client was not asked); returns the answer
/// for the caller to write to the process. `None` when either could not be recorded: then the
/// request goes unanswered (the call it belongs to times out rather than run on an answer the
/// log does not hold).
pub(super) async fn answer_now(scope: &Scope, msg: &Message, why: &str) -> Option<Message> {
    let method = msg.method().unwrap_or("").to_string();
    let copies = scope.mask.copies(msg.value());
    let mut detail = serde_json::Map::new();
    detail.insert("answered_by_gateway".into(), json!(why));
    if !copies.marks.is_empty() {
        detail.insert("mask".into(), mask::report(&copies.marks));
    }
    let recorded = match &copies.audit {
        Some(copy) => {
            scope
                .masked_copy(
                    msg,
                    copy,
                    Direction::UpstreamToClient,
                    None,
                    json_text(detail),
                    None,
                )
                .await
        }
        None => {
            scope
                .message_with(
                    msg,
                    Direction::UpstreamToClient,
                    None,
                    json_text(detail),
                    None,
                )
                .await
        }
    };
    let recorded = match recorded {
        Ok(a) => a,
        Err(e) => {
            tracing::error!(endpoint = %scope.endpoint, method, "couldn't record a pooled process's request: {e}");
            return None;
        }
    };
    let answer = json!({
        "jsonrpc": "2.0",
        "id": msg.id(),
        // What a 2026-07-28 server says when a tool needs to ask the client: the same words,
        // so the tool answers its client as it would direct.
        "error": {
            "code": code::METHOD_NOT_FOUND,
            "message": "server-to-client requests need a session",
            "data": { "method": method, "answered_by": format!("custody: {why}") },
        },
    });
    let answer = Message::from_value(answer).ok()?;
    if let Err(e) = scope
        .message_with(
            &answer,
            Direction::Gateway,
            Some(recorded.index),
            String::new(),
            None,
        )
        .await
    {
        tracing::error!(endpoint = %scope.endpoint, method, "couldn't record the gateway's answer to a pooled process's request: {e}");
        return None;
    }
    Some(answer)
}
