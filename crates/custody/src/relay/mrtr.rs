//! Multi round-trip requests (2026-07-28) for the calls of pooled stdio processes.
//!
//! A stateless client takes no requests from a server; the spec replaces them with an
//! `input_required` result carrying `inputRequests` and a `requestState`, after which the client
//! retries the same request with `inputResponses` and that `requestState`
//! (basic/patterns/mrtr). A process of the pool still asks the old way, mid-call. Translated:
//!
//! ```text
//! client ── tools/call (id 1) ──────────► gateway ── tools/call ──────────► process
//!                                          gateway ◄── elicitation/create ── process
//!        ◄── input_required (id 1) ───────  (the call is parked: its stream, the process's
//!            inputRequests + requestState    request id; sealed into requestState)
//! client ── tools/call (id 2) + inputResponses + requestState ─► gateway (checks the state)
//!                                          gateway ── result for elicitation ► process
//!        ◄── the call's result (id 2) ───── gateway ◄── the call's result ── process
//! ```
//!
//! A process's request is translated only when it can belong to no other call (it is the one
//! call in flight on the process: stdio carries no link from a server's request to the call it
//! serves), the call is one the spec lets a server answer with `input_required` (`tools/call`,
//! `prompts/get`, `resources/read`), and the client declared the capability the request needs.
//! Otherwise it is answered at once as before (`server_requests.rs`). Every step is recorded: the
//! process's request, the `input_required` answer, the retry, the client's result as written to
//! the process, and the error the process gets when no retry comes within `input_timeout`.

mod ask;
mod state;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::*;
use crate::audit::Direction;
use crate::mcp::upstream::stdio::Child;
use crate::mcp::upstream::{Event, EventStream};
pub(super) use ask::{Asking, Progress, capabilities, intercept, takes_input};
pub(super) use state::{StateError, StateKey, request_digest, who};

/// Calls of one endpoint's pool waiting for their clients' input.
pub(super) struct Parking {
    inner: Arc<Inner>,
}

struct Inner {
    key: Arc<StateKey>,
    /// How long a parked call waits (`input_timeout`).
    ttl: Duration,
    /// The most calls parked at once.
    cap: usize,
    /// Lock ownership: held for a map operation, never across an `.await`.
    calls: Mutex<HashMap<String, Parked>>,
    closing: CancellationToken,
}

/// A call waiting for its client to retry with the input its process asked for.
pub(super) struct Parked {
    /// The rest of the call on the process.
    stream: EventStream,
    child: Arc<Child>,
    /// The caller's scope, for what is recorded when the wait ends.
    scope: Scope,
    /// The process's request: its id (the answer must carry it), its method, where it is in
    /// the log.
    asked_id: Value,
    asked_method: String,
    asked_index: u64,
    /// The id the process's answer to the call will carry (the first request's).
    original_id: Value,
    /// The `inputRequests` key, the request under it and the sealed state: to ask again.
    key: String,
    input_request: Value,
    state: String,
    /// When the wait ends.
    deadline: tokio::time::Instant,
}

impl Inner {
    /// Why a parked call ended without its input.
    fn gave_up(&self) -> String {
        if self.closing.is_cancelled() {
            "the gateway is shutting down".into()
        } else {
            format!(
                "the client did not come back with the input within {} (input_timeout)",
                humantime::format_duration(self.ttl)
            )
        }
    }
}

impl Parking {
    pub(super) fn new(
        key: Arc<StateKey>,
        ttl: Duration,
        cap: usize,
        closing: CancellationToken,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                key,
                ttl,
                cap,
                calls: Mutex::new(HashMap::new()),
                closing,
            }),
        }
    }

    fn calls(&self) -> std::sync::MutexGuard<'_, HashMap<String, Parked>> {
        self.inner
            .calls
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn is_full(&self) -> bool {
        self.calls().len() >= self.inner.cap
    }

    fn contains(&self, park: &str) -> bool {
        self.calls().contains_key(park)
    }

    fn take(&self, park: &str) -> Option<Parked> {
        self.calls().remove(park)
    }

    /// Puts a call taken for a retry back (the retry did not answer): it keeps its deadline,
    /// and one whose deadline passed meanwhile (its timer found nothing to end) ends now.
    fn put_back(&self, park: String, parked: Parked) {
        if tokio::time::Instant::now() < parked.deadline && !self.inner.closing.is_cancelled() {
            self.calls().insert(park, parked);
            return;
        }
        let why = self.inner.gave_up();
        tokio::spawn(async move { parked.give_up(&why).await });
    }

    /// Parks a call until `input_timeout` (or shutdown); returns its sealed `requestState`.
    /// Gives the call back when the endpoint's parking is full.
    fn park(
        &self,
        mut parked: Parked,
        endpoint: &str,
        who: &str,
        req: &str,
    ) -> Result<String, Box<Parked>> {
        let park = hex::encode(rand::random::<[u8; 16]>());
        let ttl_ms = u64::try_from(self.inner.ttl.as_millis()).unwrap_or(u64::MAX);
        let claims = state::Claims {
            ep: endpoint.to_string(),
            who: who.to_string(),
            req: req.to_string(),
            exp: unix_ms().saturating_add(ttl_ms),
            park: park.clone(),
            key: parked.key.clone(),
        };
        let sealed = state::seal(&self.inner.key, &claims);
        parked.state = sealed.clone();
        parked.deadline = tokio::time::Instant::now() + self.inner.ttl;
        {
            let mut calls = self.calls();
            if calls.len() >= self.inner.cap {
                return Err(Box::new(parked));
            }
            calls.insert(park.clone(), parked);
        }
        let inner = self.inner.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = tokio::time::sleep(inner.ttl) => {}
                () = inner.closing.cancelled() => {}
            }
            let why = inner.gave_up();
            let parked = inner
                .calls
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .remove(&park);
            if let Some(p) = parked {
                p.give_up(&why).await;
            }
        });
        Ok(sealed)
    }
}

impl Parked {
    /// No retry came: the process's request gets an error (recorded) and the call is dropped,
    /// which cancels it on the process.
    async fn give_up(self, why: &str) {
        let answer = json!({
            "jsonrpc": "2.0",
            "id": self.asked_id,
            "error": {
                "code": code::INTERNAL_ERROR,
                "message": why,
                "data": { "method": self.asked_method, "answered_by": "custody: the stateless client was asked with an input_required result and did not retry in time" },
            },
        });
        let detail = json!({ "mrtr": { "gave_up": why, "dropped_call": self.original_id } });
        match Message::from_value(answer) {
            Ok(answer) => match self
                .scope
                .message_with(
                    &answer,
                    Direction::Gateway,
                    Some(self.asked_index),
                    detail.to_string(),
                    None,
                )
                .await
            {
                Ok(_) => {
                    let _ = self.child.send(answer).await;
                }
                // Unrecorded, so not written: the process still sees its call cancelled.
                Err(e) => {
                    tracing::error!(endpoint = %self.scope.endpoint, "couldn't record the end of a call waiting for input: {e}");
                }
            },
            Err(_) => unreachable!("an error response is JSON-RPC"),
        }
        tracing::info!(endpoint = %self.scope.endpoint, method = %self.asked_method, "{why}; the call waiting for it was dropped");
        // Dropping the stream cancels the call on the process.
        drop(self.stream);
    }

    /// The `input_required` result asking (again) for this call's input, answering `id`.
    fn input_required(&self, id: &Value) -> Message {
        input_required(id, &self.key, &self.input_request, &self.state)
    }
}

fn input_required(id: &Value, key: &str, request: &Value, state: &str) -> Message {
    Message::from_value(json!({
        "jsonrpc": "2.0",
        "id": id,
        "result": {
            "resultType": "input_required",
            "inputRequests": { key: request },
            "requestState": state,
        },
    }))
    .unwrap_or_else(|_| unreachable!("a result is JSON-RPC"))
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Does this request retry a call the gateway parked (its `requestState` is the gateway's)?
pub(super) fn is_retry(msg: &Message) -> bool {
    msg.params()
        .and_then(|p| p.get("requestState"))
        .is_some_and(state::is_ours)
}

impl Relay {
    /// Checks a retry's `requestState` and `inputResponses` (on a stdio endpoint; elsewhere
    /// `requestState` is the upstream's own, and so is one that is not the gateway's).
    ///
    /// # Errors
    /// [`RelayError::RequestState`] naming what is wrong.
    pub(super) fn check_retry(
        &self,
        ep: &Endpoint,
        principal: &Principal,
        msg: &Message,
    ) -> Result<(), RelayError> {
        if !matches!(ep.upstream, Upstream::Stdio(_)) || !is_retry(msg) {
            return Ok(());
        }
        let claims = open_state(ep, principal, msg)?;
        if !ep.parking.contains(&claims.park) {
            return Err(RelayError::RequestState(StateError::Unknown));
        }
        Ok(())
    }

    /// Resumes a parked call with the input its client retried with: the client's result is
    /// recorded and written to the process as the answer to its request, and the call's own
    /// answer (or its next request for input) answers the retry.
    pub(super) async fn resume(
        &self,
        ep: &Arc<Endpoint>,
        principal: &Principal,
        msg: Message,
        recorded: Appended,
        scope: Scope,
    ) -> Outcome {
        let id = msg.id().cloned().unwrap_or(Value::Null);
        let mut ctx = self.ctx(ep, vec![(id.clone(), recorded)], None, scope.clone());
        ctx.stateless_status = true;
        // Checked again: time passed since (approval), and another retry may have taken it.
        let claims = match open_state(ep, principal, &msg) {
            Ok(c) => c,
            Err(e) => return fail(&ctx, e, Some(id)).await,
        };
        let Some(parked) = ep.parking.take(&claims.park) else {
            let e = RelayError::RequestState(StateError::Unknown);
            return fail(&ctx, e, Some(id)).await;
        };
        let given = msg
            .params()
            .and_then(|p| p.get("inputResponses"))
            .and_then(|r| r.get(&parked.key))
            .cloned();
        let Some(given) = given else {
            // The spec: ask again for what is missing rather than fail.
            let again = parked.input_required(&id);
            ep.parking.put_back(claims.park, parked);
            let events: EventStream =
                Box::pin(futures_util::stream::iter([Ok(Event::message(again))]));
            return render_first(events, ctx).await;
        };
        let answer = Message::from_value(
            json!({ "jsonrpc": "2.0", "id": parked.asked_id, "result": given }),
        )
        .unwrap_or_else(|_| unreachable!("a result is JSON-RPC"));
        let detail = json!({ "mrtr": { "input_key": parked.key, "from_request": recorded.index } });
        if let Err(e) = record_input(&scope, &answer, parked.asked_index, detail).await {
            // Not recorded, so not written: the call stays parked for a retry that can be.
            ep.parking.put_back(claims.park, parked);
            return Outcome::Error {
                error: e,
                id: Some(id),
                session: None,
            };
        }
        if let Err(e) = parked.child.send(answer).await {
            let e = RelayError::upstream(&ep.name, &ep.mask, e);
            return fail(&ctx, e, Some(id)).await;
        }
        let asking = Asking {
            ep: ep.clone(),
            child: parked.child.clone(),
            scope,
            who: claims.who,
            req: claims.req,
            client_id: id,
            original_id: parked.original_id.clone(),
            capabilities: capabilities(&msg),
            progress: match msg.meta("progressToken") {
                Some(t) => Progress::To(t.clone()),
                None => Progress::Drop,
            },
        };
        tracing::info!(endpoint = %ep.name, method = %parked.asked_method, "a stateless client answered its process's request; the call goes on");
        render_first(intercept(parked.stream, asking), ctx).await
    }
}

/// Opens a retry's `requestState` for this endpoint and caller and checks its
/// `inputResponses`.
fn open_state(
    ep: &Endpoint,
    principal: &Principal,
    msg: &Message,
) -> Result<state::Claims, RelayError> {
    let params = msg.params();
    let raw = params
        .and_then(|p| p.get("requestState"))
        .unwrap_or(&Value::Null);
    let who = state::who(&principal.binding);
    let req = state::request_digest(msg.method().unwrap_or(""), params);
    let expect = state::Expect {
        endpoint: &ep.name,
        who: &who,
        req: &req,
        now: unix_ms(),
    };
    let claims =
        state::open(&ep.parking.inner.key, raw, &expect).map_err(RelayError::RequestState)?;
    let bad = |why: String| RelayError::RequestState(StateError::InputResponses(why));
    match params.and_then(|p| p.get("inputResponses")) {
        Some(Value::Object(map)) if map.get(&claims.key).is_some_and(|v| !v.is_object()) => {
            Err(bad(format!(
                "inputResponses.{} must be an object (the client's result for the request asked under that key)",
                claims.key
            )))
        }
        None | Some(Value::Object(_)) => Ok(claims),
        Some(_) => Err(bad(
            "inputResponses must be an object mapping each inputRequests key to the client's result"
                .into(),
        )),
    }
}

/// Records the client's result as the answer the process gets to its request.
async fn record_input(
    scope: &Scope,
    answer: &Message,
    asked: u64,
    detail: Value,
) -> Result<Appended, RelayError> {
    let Value::Object(mut detail) = detail else {
        unreachable!("the detail is an object")
    };
    let copies = scope.mask.copies(answer.value());
    if !copies.marks.is_empty() {
        detail.insert("mask".into(), crate::mask::report(&copies.marks));
    }
    let detail = record::json_text(detail);
    match &copies.audit {
        Some(copy) => {
            scope
                .masked_copy(
                    answer,
                    copy,
                    Direction::ClientToUpstream,
                    Some(asked),
                    detail,
                    None,
                )
                .await
        }
        None => {
            scope
                .message_with(
                    answer,
                    Direction::ClientToUpstream,
                    Some(asked),
                    detail,
                    None,
                )
                .await
        }
    }
}
