//! The first half of the translation: a process's request to the client, arriving on the
//! stream of the call it belongs to, becomes that call's `input_required` answer (or, when the
//! client cannot be asked for it, gets the gateway's immediate answer and the call goes on).

use std::sync::Arc;

use futures_util::StreamExt;
use serde_json::{Value, json};

use super::{Parked, input_required};
use crate::audit::Direction;
use crate::mcp::message::{Kind, Message};
use crate::mcp::upstream::stdio::Child;
use crate::mcp::upstream::{Event, EventStream, UpstreamError};
use crate::mcp::version::META_CLIENT_CAPABILITIES;
use crate::relay::endpoint::Endpoint;
use crate::relay::record::{Scope, json_text};
use crate::relay::server_requests::answer_now;

/// The requests a server may answer with `input_required` (2026-07-28, basic/patterns/mrtr,
/// "Supported Requests"); on any other it MUST NOT.
const ASKING_METHODS: [&str; 3] = ["tools/call", "prompts/get", "resources/read"];

/// May this request's process ask its client for input: a request that can be answered with
/// `input_required`, from a client that declared at least one capability such input needs?
pub fn takes_input(msg: &Message) -> bool {
    let method = msg.method().unwrap_or("");
    ASKING_METHODS.contains(&method)
        && ["elicitation", "sampling", "roots"]
            .iter()
            .any(|c| capabilities(msg).get(c).is_some_and(Value::is_object))
}

/// The client capabilities a stateless request declares.
pub fn capabilities(msg: &Message) -> Value {
    msg.meta(META_CLIENT_CAPABILITIES)
        .cloned()
        .unwrap_or(Value::Null)
}

/// What progress notifications of the call become on the way to the client.
pub enum Progress {
    /// The first request: the client's own token (the process answers under it).
    AsIs,
    /// A retry with a progress token of its own: progress goes under it.
    To(Value),
    /// A retry without one: the client asked for no progress.
    Drop,
}

/// The call a stream belongs to, for translating what its process asks.
pub struct Asking {
    pub ep: Arc<Endpoint>,
    pub child: Arc<Child>,
    /// The caller's scope.
    pub scope: Scope,
    /// The caller and the request, as `requestState` binds them.
    pub who: String,
    pub req: String,
    /// The id of the request the stream answers now (the first, or the latest retry).
    pub client_id: Value,
    /// The id the process's answer to the call carries (the first request's).
    pub original_id: Value,
    /// What the client answering now declared it can do.
    pub capabilities: Value,
    pub progress: Progress,
}

/// The call's stream with its process's requests to the client translated: the first one the
/// client can be asked parks the call and ends the stream with an `input_required` answer.
pub fn intercept(events: EventStream, asking: Asking) -> EventStream {
    Box::pin(futures_util::stream::unfold(
        Some((events, asking)),
        |state| async move {
            let (mut events, asking) = state?;
            loop {
                match events.next().await? {
                    Ok(Event {
                        message: Some(m), ..
                    }) if m.kind() == Kind::Request => match asking.ask(events, m).await {
                        Ok(answer) => return Some((Ok(Event::message(answer)), None)),
                        Err(back) => events = back,
                    },
                    Ok(mut event) => {
                        if asking.rewrite(&mut event) {
                            return Some((Ok(event), Some((events, asking))));
                        }
                    }
                    Err(UpstreamError::TooLarge(mut o)) => {
                        if o.id.as_ref() == Some(&asking.original_id) {
                            o.id = Some(asking.client_id.clone());
                        }
                        return Some((Err(UpstreamError::TooLarge(o)), Some((events, asking))));
                    }
                    Err(e) => return Some((Err(e), Some((events, asking)))),
                }
            }
        },
    ))
}

impl Asking {
    /// Gives the call's messages the ids and progress token of the request answering now;
    /// `false` for one the client does not get.
    fn rewrite(&self, event: &mut Event) -> bool {
        let Some(m) = event.message.as_mut() else {
            return true;
        };
        if matches!(m.kind(), Kind::Response | Kind::Error)
            && m.id() == Some(&self.original_id)
            && self.client_id != self.original_id
        {
            let id = self.client_id.clone();
            m.edit(|v| v["id"] = id);
        }
        if m.method() == Some("notifications/progress") {
            match &self.progress {
                Progress::AsIs => {}
                Progress::Drop => return false,
                Progress::To(t) => {
                    let t = t.clone();
                    m.edit(|v| v["params"]["progressToken"] = t);
                }
            }
        }
        true
    }

    /// A request of the process: parked as the call's `input_required` answer (returned), or
    /// answered at once, the stream given back to go on.
    async fn ask(&self, events: EventStream, msg: Message) -> Result<Message, EventStream> {
        let key = match declared(&self.capabilities, &msg) {
            Ok(key) => key,
            Err(why) => {
                self.answer_now(&msg, &why).await;
                return Err(events);
            }
        };
        if self.ep.parking.is_full() {
            let why =
                "as many calls as the pool serves at once already wait for their clients' input";
            tracing::warn!(endpoint = %self.ep.name, "{why}; a process's request answered at once");
            self.answer_now(&msg, why).await;
            return Err(events);
        }
        let request = match msg.params() {
            Some(p) => json!({ "method": msg.method(), "params": p }),
            None => json!({ "method": msg.method() }),
        };
        let copies = self.scope.mask.copies(msg.value());
        let mut detail = serde_json::Map::new();
        detail.insert(
            "mrtr".into(),
            json!({ "asked_with": "input_required", "input_key": key, "call": self.client_id }),
        );
        if !copies.marks.is_empty() {
            detail.insert("mask".into(), crate::mask::report(&copies.marks));
        }
        let recorded = match &copies.audit {
            Some(copy) => {
                self.scope
                    .masked_copy(
                        &msg,
                        copy,
                        Direction::UpstreamToClient,
                        None,
                        json_text(detail),
                        None,
                    )
                    .await
            }
            None => {
                self.scope
                    .message_with(
                        &msg,
                        Direction::UpstreamToClient,
                        None,
                        json_text(detail),
                        None,
                    )
                    .await
            }
        };
        let asked_index = match recorded {
            Ok(a) => a.index,
            Err(e) => {
                // Unrecorded, so neither asked nor answered: the process's own timeout ends it.
                tracing::error!(endpoint = %self.ep.name, "couldn't record a pooled process's request: {e}");
                return Err(events);
            }
        };
        let parked = Parked {
            stream: events,
            child: self.child.clone(),
            scope: self.scope.clone(),
            asked_id: msg.id().cloned().unwrap_or(Value::Null),
            asked_method: msg.method().unwrap_or("").to_string(),
            asked_index,
            original_id: self.original_id.clone(),
            key: key.to_string(),
            input_request: request.clone(),
            state: String::new(),
            deadline: tokio::time::Instant::now(),
        };
        match self
            .ep
            .parking
            .park(parked, &self.ep.name, &self.who, &self.req)
        {
            Ok(state) => {
                tracing::info!(endpoint = %self.ep.name, method = ?msg.method(), "a pooled process asked the client; asked the stateless client with input_required");
                Ok(input_required(&self.client_id, key, &request, &state))
            }
            Err(parked) => {
                // Filled up meanwhile.
                let events = parked.stream;
                self.answer_now(&msg, "too many calls wait for their clients' input")
                    .await;
                Err(events)
            }
        }
    }

    async fn answer_now(&self, msg: &Message, why: &str) {
        if let Some(answer) = answer_now(&self.scope, msg, why).await {
            let _ = self.child.send(answer).await;
        }
    }
}

/// The `inputRequests` key for a process's request, if the client declared what it needs
/// (a server MUST NOT send an `inputRequests` entry the client has not declared support for);
/// otherwise why it cannot be asked.
fn declared(caps: &Value, msg: &Message) -> Result<&'static str, String> {
    let method = msg.method().unwrap_or("");
    let params = msg.params().unwrap_or(&Value::Null);
    let cap = |name: &str| caps.get(name).filter(|c| c.is_object());
    let missing = |what: &str| Err(format!("the client did not declare the {what} capability"));
    match method {
        "elicitation/create" => {
            let Some(e) = cap("elicitation") else {
                return missing("elicitation");
            };
            // An empty object means form mode only.
            let url = params.get("mode").and_then(Value::as_str) == Some("url");
            let ok = if url {
                e.get("url").is_some()
            } else {
                e.get("form").is_some() || e.get("url").is_none()
            };
            if !ok {
                return missing(if url {
                    "elicitation.url"
                } else {
                    "elicitation.form"
                });
            }
            Ok("elicitation")
        }
        "sampling/createMessage" => {
            let Some(s) = cap("sampling") else {
                return missing("sampling");
            };
            if params.get("tools").is_some_and(|t| !t.is_null()) && s.get("tools").is_none() {
                return missing("sampling.tools");
            }
            Ok("sampling")
        }
        "roots/list" => match cap("roots") {
            Some(_) => Ok("roots"),
            None => missing("roots"),
        },
        other => Err(format!(
            "the 2026-07-28 protocol has no multi round-trip form of {other:?}, and a stateless client takes no requests from a server"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: &str, params: Value) -> Message {
        Message::from_value(json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}))
            .unwrap()
    }

    #[test]
    fn only_what_the_client_declared_is_asked() {
        let form = json!({"mode": "form", "message": "m", "requestedSchema": {}});
        let url = json!({"mode": "url", "message": "m", "url": "https://x"});
        let e = |caps: Value, p: &Value| declared(&caps, &req("elicitation/create", p.clone()));
        assert_eq!(e(json!({"elicitation": {}}), &form), Ok("elicitation"));
        assert!(
            e(json!({"elicitation": {}}), &url)
                .unwrap_err()
                .contains("elicitation.url")
        );
        assert_eq!(
            e(json!({"elicitation": {"url": {}}}), &url),
            Ok("elicitation")
        );
        assert!(
            e(json!({"elicitation": {"url": {}}}), &form)
                .unwrap_err()
                .contains("elicitation.form")
        );
        assert!(
            e(json!({"sampling": {}}), &form)
                .unwrap_err()
                .contains("elicitation capability")
        );
        let s = |caps: Value, p: Value| declared(&caps, &req("sampling/createMessage", p));
        assert_eq!(
            s(json!({"sampling": {}}), json!({"messages": []})),
            Ok("sampling")
        );
        assert!(
            s(json!({"sampling": {}}), json!({"tools": []}))
                .unwrap_err()
                .contains("sampling.tools")
        );
        assert_eq!(
            declared(&json!({"roots": {}}), &req("roots/list", json!({}))),
            Ok("roots")
        );
        assert!(
            declared(&json!({"roots": {}}), &req("ping", json!({})))
                .unwrap_err()
                .contains("\"ping\"")
        );
    }

    #[test]
    fn only_calls_that_may_answer_input_required_ask() {
        let with = |method: &str, caps: Value| {
            takes_input(&req(
                method,
                json!({"_meta": {META_CLIENT_CAPABILITIES: caps}}),
            ))
        };
        assert!(with("tools/call", json!({"elicitation": {}})));
        assert!(with("prompts/get", json!({"roots": {}})));
        assert!(with("resources/read", json!({"sampling": {}})));
        assert!(!with("tools/list", json!({"elicitation": {}})));
        assert!(!with("tools/call", json!({})));
        assert!(!with("tools/call", json!({"experimental": {}})));
    }
}
