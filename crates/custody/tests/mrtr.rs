//! Issue 15, item 4: a pooled stdio process that asks "the client" mid-call (elicitation,
//! sampling, roots) while serving a stateless (2026-07-28) client. Where the client declared
//! what the request needs, the gateway asks it the 2026-07-28 way, with an `input_required`
//! result, and turns its retry's `inputResponses` into the process's answer; the
//! `requestState` it hands out is checked on the way back. Otherwise, and when no retry comes,
//! the process gets an answer from the gateway: nothing hangs.

mod common;

use std::time::{Duration, Instant};

use common::*;
use custody::identity::{new_static_token, token_hash};
use serde_json::{Value, json};
use tlog::entry::{Direction, Kind};

const CAPS: &str = "io.modelcontextprotocol/clientCapabilities";

/// A stateless request of `c`, declaring `caps`.
fn body(c: &Client, method: &str, params: Value, caps: Value) -> Value {
    let mut b = c.request_body(method, params);
    b["params"]["_meta"][CAPS] = caps;
    b
}

fn elicit(message: &str) -> Value {
    json!({"name": "test_elicitation", "arguments": {"message": message}})
}

fn all() -> Value {
    json!({"elicitation": {}, "sampling": {}, "roots": {}})
}

async fn send(c: &Client, body: &Value) -> Answer {
    let b = c.with_mirrored(c.post_builder(), body);
    tokio::time::timeout(
        Duration::from_secs(20),
        Client::send(b.body(body.to_string())),
    )
    .await
    .expect("answered instead of hanging")
}

/// The retry of `first`: a new id, the same params, and the input.
fn retry(c: &Client, first: &Value, responses: Value, state: &Value) -> Value {
    let mut r = first.clone();
    r["id"] = json!(c.id());
    r["params"]["inputResponses"] = responses;
    r["params"]["requestState"] = state.clone();
    r
}

/// The one `inputRequests` entry of an `input_required` answer, and the `requestState`.
fn asked(a: &Answer) -> (String, Value, Value) {
    let r = &a.response()["result"];
    assert_eq!(r["resultType"], "input_required", "{a:#?}");
    let requests = r["inputRequests"].as_object().expect("inputRequests");
    assert_eq!(requests.len(), 1, "{a:#?}");
    let (key, request) = requests.iter().next().unwrap();
    assert!(
        r["requestState"]
            .as_str()
            .is_some_and(|s| s.starts_with("custody-mrtr-v1:")),
        "{a:#?}"
    );
    (key.clone(), request.clone(), r["requestState"].clone())
}

fn refused(a: &Answer, reason: &str) {
    assert_eq!(a.status, 400, "{a:#?}");
    assert_eq!(a.error_code(), -32602, "{a:#?}");
    let data = &a.response()["error"]["data"];
    assert_eq!(data["reason"], reason, "{a:#?}");
}

fn text(a: &Answer) -> String {
    a.response()["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("no text result: {a:#?}"))
        .to_string()
}

fn stdio(name: &str, extra: &str) -> String {
    stdio_fixture(name, extra)
}

#[tokio::test]
async fn a_process_asking_a_stateless_client_gets_its_answer_through_input_required() {
    let gw = Gateway::start("", &stdio("f", "")).await;
    let c = gw.client("f").stateless();
    let first = body(&c, "tools/call", elicit("Your name?"), all());
    let a = send(&c, &first).await;
    assert_eq!(a.status, 200, "{a:#?}");
    assert_eq!(a.response()["id"], first["id"]);
    let (key, request, state) = asked(&a);
    // The spec's shape: method and params, no JSON-RPC envelope.
    assert_eq!(request["method"], "elicitation/create", "{request}");
    assert_eq!(request["params"]["message"], "Your name?");
    assert!(request.get("id").is_none() && request.get("jsonrpc").is_none());
    assert!(
        a.messages.iter().all(|m| m.get("method").is_none()),
        "the client is handed no request: {a:#?}"
    );
    let answer = json!({key.as_str(): {"action": "accept", "content": {"response": "octocat"}}});
    let again = retry(&c, &first, answer, &state);
    let b = send(&c, &again).await;
    assert_eq!(b.status, 200, "{b:#?}");
    assert_eq!(b.response()["id"], again["id"], "the retry gets the answer");
    assert_eq!(
        text(&b),
        r#"User response: action=accept, content={"response":"octocat"}"#,
        "the tool saw the client's answer"
    );
    assert!(b.response()["result"]["_meta"]["dev.custody/receipt"].is_object());
    // A state resumes its call once.
    let replay = send(&c, &retry(&c, &first, json!({}), &state)).await;
    refused(&replay, "unknown");

    // Sampling, the same way.
    let first = body(
        &c,
        "tools/call",
        json!({"name": "test_sampling", "arguments": {"prompt": "Capital of France?"}}),
        json!({"sampling": {}}),
    );
    let a = send(&c, &first).await;
    let (key, request, state) = asked(&a);
    assert_eq!(request["method"], "sampling/createMessage");
    let answer = json!({key.as_str(): {"role": "assistant", "content": {"type": "text", "text": "Paris"},
        "model": "m", "stopReason": "endTurn"}});
    let b = send(&c, &retry(&c, &first, answer, &state)).await;
    assert_eq!(text(&b), "LLM response: Paris", "{b:#?}");

    let dir = gw.shutdown().await;
    let log = entries(dir.path());
    let asked = log
        .iter()
        .find(|e| e.kind == Kind::Request && e.method == "elicitation/create")
        .expect("the process's request is recorded");
    assert_eq!(asked.direction, Direction::UpstreamToClient);
    assert!(asked.detail.contains("input_required"), "{}", asked.detail);
    assert_ne!(
        asked.caller,
        json!("gateway").to_string(),
        "recorded as the caller's"
    );
    let given = log
        .iter()
        .find(|e| e.request == Some(asked.index))
        .expect("the answer the process got");
    assert_eq!(given.direction, Direction::ClientToUpstream);
    assert_eq!(given.kind, Kind::Response);
    assert!(String::from_utf8_lossy(&given.message).contains("octocat"));
    let translated = log
        .iter()
        .filter(|e| e.kind == Kind::Response && e.direction == Direction::UpstreamToClient)
        .find(|e| String::from_utf8_lossy(&e.message).contains("input_required"))
        .expect("the input_required answer is recorded");
    assert!(translated.request.is_some());
    assert!(log.iter().any(|e| e.kind == Kind::Rejected
        && e.method == "tools/call"
        && e.detail.contains("\"unknown\"")));
    assert_log_verifies(dir.path());
}

#[tokio::test]
async fn a_bad_request_state_is_refused_with_what_is_wrong_and_the_call_still_resumes() {
    let gw = Gateway::start("", &format!("{}{}", stdio("f", ""), stdio("g", ""))).await;
    let c = gw.client("f").stateless();
    let first = body(&c, "tools/call", elicit("Your name?"), all());
    let (key, _, state) = asked(&send(&c, &first).await);
    let answer = json!({key.as_str(): {"action": "accept", "content": {"response": "x"}}});
    let s = state.as_str().unwrap();

    // One character of the sealed claims changed.
    let mut bytes = s.as_bytes().to_vec();
    let at = "custody-mrtr-v1:".len() + 10;
    bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
    let tampered = json!(String::from_utf8(bytes).unwrap());
    let a = send(&c, &retry(&c, &first, answer.clone(), &tampered)).await;
    refused(&a, "tampered");
    assert!(a.error_message().contains("integrity"), "{a:#?}");

    let a = send(
        &c,
        &retry(&c, &first, answer.clone(), &json!("custody-mrtr-v1:nodot")),
    )
    .await;
    refused(&a, "malformed");

    // The state belongs to another call.
    let other = body(&c, "tools/call", elicit("Something else?"), all());
    let a = send(&c, &retry(&c, &other, answer.clone(), &state)).await;
    refused(&a, "other_request");

    // ... or another endpoint.
    let g = gw.client("g").stateless();
    let a = send(&g, &retry(&g, &first, answer.clone(), &state)).await;
    refused(&a, "other_endpoint");
    assert!(a.error_message().contains("\"f\""), "{a:#?}");

    let a = send(&c, &retry(&c, &first, json!("yes"), &state)).await;
    refused(&a, "input_responses");
    assert_eq!(a.response()["error"]["data"]["param"], "inputResponses");

    // None of that resumed the call; the genuine retry does.
    let b = send(&c, &retry(&c, &first, answer, &state)).await;
    assert_eq!(
        text(&b),
        r#"User response: action=accept, content={"response":"x"}"#
    );
    let dir = gw.shutdown().await;
    let rejected = entries(dir.path())
        .iter()
        .filter(|e| e.kind == Kind::Rejected && e.detail.contains("-32602"))
        .count();
    assert_eq!(rejected, 5, "every refusal is recorded");
    assert_log_verifies(dir.path());
}

#[tokio::test]
async fn a_request_state_is_refused_to_another_caller() {
    let (alice, bob) = (new_static_token(), new_static_token());
    let statics: String = [("alice", &alice), ("bob", &bob)]
        .iter()
        .map(|(name, t)| {
            format!(
                "[[auth.static]]\nname = \"{name}\"\nsha256 = \"{}\"\n",
                hex::encode(token_hash(t))
            )
        })
        .collect();
    let gw = Gateway::start("", &format!("[auth]\n{statics}{}", stdio("f", ""))).await;
    let a_client = gw.client("f").stateless().with_token(&alice);
    let b_client = gw.client("f").stateless().with_token(&bob);
    let first = body(&a_client, "tools/call", elicit("Name?"), all());
    let (key, _, state) = asked(&send(&a_client, &first).await);
    let answer = json!({key.as_str(): {"action": "decline"}});
    let a = send(&b_client, &retry(&b_client, &first, answer.clone(), &state)).await;
    refused(&a, "other_principal");
    let b = send(&a_client, &retry(&a_client, &first, answer, &state)).await;
    assert_eq!(text(&b), "User response: action=decline, content={}");
    gw.shutdown().await;
}

#[tokio::test]
async fn a_request_state_past_input_timeout_is_refused_as_expired() {
    let gw = Gateway::start("", &stdio("f", "input_timeout = \"1s\"")).await;
    let c = gw.client("f").stateless();
    let first = body(&c, "tools/call", elicit("Name?"), all());
    let (key, _, state) = asked(&send(&c, &first).await);
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let answer = json!({key.as_str(): {"action": "accept", "content": {"response": "late"}}});
    let a = send(&c, &retry(&c, &first, answer, &state)).await;
    refused(&a, "expired");
    assert!(a.error_message().contains("input_timeout"), "{a:#?}");
    gw.shutdown().await;
}

#[tokio::test]
async fn a_client_that_never_retries_leaves_the_process_answered_and_nothing_in_flight() {
    let gw = Gateway::start("", &stdio("f", "input_timeout = \"1s\"")).await;
    let c = gw.client("f").stateless();
    let first = body(&c, "tools/call", elicit("Name?"), all());
    asked(&send(&c, &first).await);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // The dropped call no longer occupies the process: a new call's request is again the
    // only one in flight there, so its client is asked (two in flight would be answered at
    // once instead).
    let started = Instant::now();
    let next = body(&c, "tools/call", elicit("Again?"), all());
    asked(&send(&c, &next).await);
    assert!(started.elapsed() < Duration::from_secs(5));
    let dir = gw.shutdown().await;
    let log = entries(dir.path());
    let asked_entry = log
        .iter()
        .find(|e| e.kind == Kind::Request && e.method == "elicitation/create")
        .unwrap();
    let gave_up = log
        .iter()
        .find(|e| e.request == Some(asked_entry.index))
        .expect("the process's request is answered");
    assert_eq!(gave_up.direction, Direction::Gateway);
    assert_eq!(gave_up.kind, Kind::Error);
    let msg = String::from_utf8_lossy(&gave_up.message);
    assert!(
        msg.contains("-32603") && msg.contains("input_timeout"),
        "{msg}"
    );
    assert!(
        gave_up.detail.contains("dropped_call"),
        "{}",
        gave_up.detail
    );
    let waited = Duration::from_nanos(gave_up.time_ns - asked_entry.time_ns);
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(4),
        "{waited:?}"
    );
    assert_log_verifies(dir.path());
}

#[tokio::test]
async fn a_client_that_did_not_declare_the_capability_gets_the_immediate_answer() {
    let gw = Gateway::start("", &stdio("f", "")).await;
    let c = gw.client("f").stateless();
    let a = send(
        &c,
        &body(&c, "tools/call", elicit("Name?"), json!({"sampling": {}})),
    )
    .await;
    assert_eq!(
        text(&a),
        "Elicitation not supported or error: server-to-client requests need a session"
    );
    // Form mode is all an empty elicitation capability declares.
    let url_only = json!({"elicitation": {"url": {}}});
    let a = send(&c, &body(&c, "tools/call", elicit("Name?"), url_only)).await;
    assert!(text(&a).contains("need a session"), "{a:#?}");
    let dir = gw.shutdown().await;
    let log = entries(dir.path());
    let asked: Vec<_> = log
        .iter()
        .filter(|e| e.kind == Kind::Request && e.method == "elicitation/create")
        .collect();
    assert_eq!(asked.len(), 2);
    assert!(
        asked[0]
            .detail
            .contains("did not declare the elicitation capability")
    );
    assert!(asked[1].detail.contains("elicitation.form"));
    for e in asked {
        let answer = log.iter().find(|x| x.request == Some(e.index)).unwrap();
        assert_eq!(answer.direction, Direction::Gateway);
        assert!(String::from_utf8_lossy(&answer.message).contains("-32601"));
    }
    assert_log_verifies(dir.path());
}

#[tokio::test]
async fn with_another_call_in_flight_on_the_process_its_request_is_answered_at_once() {
    let gw = Gateway::start("", &stdio("f", "")).await;
    let c = gw.client("f").stateless();
    let first = body(&c, "tools/call", elicit("First?"), all());
    let (key, _, state) = asked(&send(&c, &first).await);
    // The first call waits on the process; the second's request could belong to either call.
    let a = send(&c, &body(&c, "tools/call", elicit("Second?"), all())).await;
    assert!(text(&a).contains("need a session"), "{a:#?}");
    let answer = json!({key.as_str(): {"action": "accept", "content": {"response": "one"}}});
    let b = send(&c, &retry(&c, &first, answer, &state)).await;
    assert_eq!(
        text(&b),
        r#"User response: action=accept, content={"response":"one"}"#
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn a_retry_without_the_input_is_asked_again() {
    let gw = Gateway::start("", &stdio("f", "")).await;
    let c = gw.client("f").stateless();
    let first = body(&c, "tools/call", elicit("Name?"), all());
    let (key, request, state) = asked(&send(&c, &first).await);
    let again = send(&c, &retry(&c, &first, json!({"other": {}}), &state)).await;
    let (key2, request2, state2) = asked(&again);
    assert_eq!((&key2, &request2, &state2), (&key, &request, &state));
    let answer = json!({key.as_str(): {"action": "accept", "content": {"response": "now"}}});
    let b = send(&c, &retry(&c, &first, answer, &state)).await;
    assert_eq!(
        text(&b),
        r#"User response: action=accept, content={"response":"now"}"#
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn a_process_that_answers_input_required_itself_keeps_its_own_request_state() {
    let gw = Gateway::start("", &stdio("f", "")).await;
    let c = gw.client("f").stateless();
    let first = body(
        &c,
        "tools/call",
        json!({"name": "test_input_required_result_request_state", "arguments": {}}),
        all(),
    );
    let a = send(&c, &first).await;
    let r = &a.response()["result"];
    assert_eq!(r["resultType"], "input_required", "{a:#?}");
    let state = r["requestState"].clone();
    assert!(!state.as_str().unwrap().starts_with("custody-"));
    let answer = json!({"confirm": {"action": "accept", "content": {"ok": true}}});
    let b = send(&c, &retry(&c, &first, answer, &state)).await;
    assert_eq!(text(&b), "state-ok: requestState validated", "{b:#?}");
    gw.shutdown().await;
}
