//! Every recorded thing is bounded (issue 13, §3): one `max_message_bytes` per endpoint for
//! every message in either direction on every transport, and a bound on batch length. An
//! oversized upstream message fails its call with its size and SHA-256, is recorded without its
//! bytes, and leaves the session and process alive; the log always verifies.

mod common;

use common::*;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tlog::entry::Kind;

/// An HTTP upstream: `initialize` gets a session, `tools/call` gets what `answer` makes of the
/// request id (content type and body), other requests `{}`, notifications 202.
async fn evil_upstream(answer: fn(&Value) -> (&'static str, String)) -> String {
    use axum::response::IntoResponse;
    let app = axum::Router::new().route(
        "/mcp",
        axum::routing::post(move |body: String| async move {
            let req: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
            let id = req["id"].clone();
            if id.is_null() {
                return axum::http::StatusCode::ACCEPTED.into_response();
            }
            let (ct, text) = match req["method"].as_str() {
                Some("initialize") => (
                    "application/json",
                    json!({"jsonrpc": "2.0", "id": id, "result": {
                        "protocolVersion": SESSION_VERSION, "capabilities": {"tools": {}},
                        "serverInfo": {"name": "evil", "version": "0"}}})
                    .to_string(),
                ),
                Some("tools/call") => answer(&id),
                _ => (
                    "application/json",
                    json!({"jsonrpc": "2.0", "id": id, "result": {}}).to_string(),
                ),
            };
            ([("content-type", ct), ("mcp-session-id", "up-1")], text).into_response()
        }),
    );
    serve_router(app).await
}

fn big_result(id: &Value, size: usize) -> String {
    format!(
        r#"{{"jsonrpc":"2.0","id":{id},"result":{{"content":[{{"type":"text","text":"{}"}}]}}}}"#,
        "x".repeat(size)
    )
}

/// Checks the client's error for an oversized message of `data`, and returns its SHA-256.
fn assert_too_large(a: &Answer, data: &str, limit: usize) -> String {
    assert!(
        !a.raw.contains("xxxxxxxxxxxxxxxx"),
        "relayed: {}",
        &a.raw[..a.raw.len().min(500)]
    );
    assert_eq!(a.error_code(), -32012, "{a:#?}");
    let sha = hex::encode(Sha256::digest(data.as_bytes()));
    let e = &a.response()["error"];
    assert_eq!(e["data"]["reason"], "too_large", "{a:#?}");
    assert_eq!(e["data"]["bytes"], data.len(), "{a:#?}");
    assert_eq!(e["data"]["sha256"], sha, "{a:#?}");
    assert_eq!(e["data"]["limit"], limit, "{a:#?}");
    assert!(
        e["message"]
            .as_str()
            .unwrap_or("")
            .contains(&data.len().to_string()),
        "{a:#?}"
    );
    sha
}

/// The log holds no entry with the payload, and one error entry naming `sha`.
fn assert_recorded_by_hash(dir: &std::path::Path, sha: &str) {
    let log = entries(dir);
    assert!(
        log.iter().all(|e| e.message.len() < 64 * 1024),
        "an entry holds the payload"
    );
    assert!(
        log.iter()
            .any(|e| e.kind == Kind::Error && String::from_utf8_lossy(&e.message).contains(sha)),
        "no failure entry names {sha}"
    );
    assert_log_verifies(dir);
}

#[tokio::test]
async fn a_70_mb_sse_event_fails_its_call_and_the_log_still_verifies() {
    // Over the 64 MiB a log entry may hold: relayed whole, it would make the log unverifiable.
    let up = evil_upstream(|id| {
        (
            "text/event-stream",
            format!("data: {}\n\n", big_result(id, 70_000_000)),
        )
    })
    .await;
    let gw = Gateway::start("", &http_upstream("sse", &up, "")).await;
    let mut c = gw.client("sse");
    c.initialize().await;
    let id = c.id() + 1;
    let a = c
        .call("tools/call", json!({"name": "big", "arguments": {}}))
        .await;
    let data = big_result(&json!(id), 70_000_000);
    let sha = assert_too_large(&a, &data, 4 * 1024 * 1024);
    let ping = c.call("ping", json!({})).await;
    assert!(
        ping.response()["result"].is_object(),
        "the session goes on: {ping:#?}"
    );
    let dir = gw.shutdown().await;
    assert_recorded_by_hash(dir.path(), &sha);
}

#[tokio::test]
async fn an_oversized_json_answer_is_not_buffered_and_fails_its_call() {
    let up = evil_upstream(|id| ("application/json", big_result(id, 200_000))).await;
    let gw = Gateway::start(
        "",
        &format!(
            "[endpoints.json]\nmax_message_bytes = 65536\n[endpoints.json.upstream]\ntransport = \"http\"\nurl = \"{up}\"\n"
        ),
    )
    .await;
    let mut c = gw.client("json");
    c.initialize().await;
    let id = c.id() + 1;
    let a = c
        .call("tools/call", json!({"name": "big", "arguments": {}}))
        .await;
    let sha = assert_too_large(&a, &big_result(&json!(id), 200_000), 65536);
    let ping = c.call("ping", json!({})).await;
    assert!(ping.response()["result"].is_object(), "{ping:#?}");
    let dir = gw.shutdown().await;
    assert_recorded_by_hash(dir.path(), &sha);
}

#[tokio::test]
async fn an_oversized_stdio_line_fails_its_call_and_the_process_goes_on() {
    let init = r#"{"jsonrpc":"2.0","id":1,"result":{"protocolVersion":"2025-11-25","capabilities":{},"serverInfo":{"name":"sh","version":"0"}}}"#;
    // Request 2 gets a 200 kB line; request 3 an ordinary answer from the same process.
    let script = format!(
        "read l; echo '{init}'; read l; read l; printf '%s' '{{\"jsonrpc\":\"2.0\",\"id\":2,\"result\":{{\"content\":[{{\"type\":\"text\",\"text\":\"'; head -c 200000 /dev/zero | tr '\\0' x; echo '\"}}]}}}}'; read l; echo '{{\"jsonrpc\":\"2.0\",\"id\":3,\"result\":{{}}}}'; sleep 30"
    );
    let gw = Gateway::start(
        "",
        &format!(
            "[endpoints.big]\nmax_message_bytes = 65536\n[endpoints.big.upstream]\ntransport = \"stdio\"\ncommand = \"sh\"\nargs = [\"-c\", '''{script}''']\n"
        ),
    )
    .await;
    let mut c = gw.client("big");
    c.initialize().await;
    let a = c.call("tools/list", json!({})).await;
    // The process wrote id 2 (its own id for this call).
    let line = big_result(&json!(2), 200_000);
    let sha = assert_too_large(&a, &line, 65536);
    let b = c.call("ping", json!({})).await;
    assert!(
        b.response()["result"].is_object(),
        "the process goes on: {b:#?}"
    );
    let dir = gw.shutdown().await;
    assert_recorded_by_hash(dir.path(), &sha);
}

#[tokio::test]
async fn client_messages_and_batches_are_bounded_per_endpoint() {
    let url = fixture_http().await;
    let gw = Gateway::start(
        "max_batch = 8",
        &format!(
            "{}[endpoints.small]\nmax_message_bytes = 2048\n[endpoints.small.upstream]\ntransport = \"http\"\nurl = \"{url}\"\n",
            stdio_fixture("ok", "")
        ),
    )
    .await;
    let big =
        json!({"jsonrpc": "2.0", "id": 1, "method": "ping", "params": {"pad": "x".repeat(4000)}});
    let a = Client::send(gw.client("small").post_builder().body(big.to_string())).await;
    assert_eq!(a.status, 413, "{a:#?}");
    assert!(
        a.error_message().contains("2048") && a.error_message().contains("max_message_bytes"),
        "{a:#?}"
    );
    // The same message is fine on an endpoint with the default limit.
    let mut c = gw.client("ok");
    c.version = "2025-03-26".into();
    c.initialize().await;
    let pings = |n: u64| {
        Value::Array(
            (0..n)
                .map(|i| json!({"jsonrpc": "2.0", "id": 100 + i, "method": "ping"}))
                .collect(),
        )
    };
    let a = c.post(&pings(9)).await;
    assert_eq!(a.status, 400, "{a:#?}");
    assert_eq!(a.error_code(), -32600, "{a:#?}");
    assert!(a.error_message().contains("more than 8 messages"), "{a:#?}");
    assert_eq!(a.response()["error"]["data"]["reason"], "batch_too_long");
    // A large refused body is recorded by size and hash, with only its start kept.
    let many = pings(3000).to_string();
    let a = Client::send(c.post_builder().body(many.clone())).await;
    assert_eq!(a.status, 400, "{a:#?}");
    let a = c.post(&pings(8)).await;
    assert_eq!(a.status, 200, "{a:#?}");
    let answered = a
        .messages
        .iter()
        .filter(|m| m["result"].is_object())
        .count();
    assert_eq!(answered, 8, "{a:#?}");
    let dir = gw.shutdown().await;
    let log = entries(dir.path());
    assert!(
        log.iter()
            .any(|e| e.kind == Kind::Rejected && e.detail.contains("batch_too_long"))
    );
    let big = log
        .iter()
        .find(|e| e.kind == Kind::Rejected && e.detail.contains("\"kept\""))
        .expect("the large refusal");
    let detail: Value = serde_json::from_str(&big.detail).unwrap();
    assert_eq!(detail["input"]["bytes"], many.len());
    assert_eq!(
        detail["input"]["sha256"],
        hex::encode(Sha256::digest(many.as_bytes()))
    );
    assert_eq!(big.message.len(), 64 * 1024);
    assert_log_verifies(dir.path());
}

#[tokio::test]
async fn an_oversized_event_that_answers_nothing_is_withheld_and_the_stream_goes_on() {
    // A 200 kB progress notification, then the answer.
    let up = evil_upstream(|id| {
        let note = format!(
            r#"{{"jsonrpc":"2.0","method":"notifications/message","params":{{"level":"info","data":"{}"}}}}"#,
            "x".repeat(200_000)
        );
        let answer = json!({"jsonrpc": "2.0", "id": id, "result": {"content": []}});
        ("text/event-stream", format!("data: {note}\n\ndata: {answer}\n\n"))
    })
    .await;
    let gw = Gateway::start(
        "",
        &format!(
            "[endpoints.sse]\nmax_message_bytes = 65536\n[endpoints.sse.upstream]\ntransport = \"http\"\nurl = \"{up}\"\n"
        ),
    )
    .await;
    let mut c = gw.client("sse");
    c.initialize().await;
    let a = c
        .call("tools/call", json!({"name": "chatty", "arguments": {}}))
        .await;
    assert!(a.is_sse(), "{a:#?}");
    assert!(!a.raw.contains("xxxxxxxxxxxxxxxx"), "relayed");
    assert!(a.raw.contains("withheld"), "{a:#?}");
    assert!(
        a.response()["result"].is_object(),
        "the answer still arrives: {a:#?}"
    );
    let dir = gw.shutdown().await;
    let note = format!(
        r#"{{"jsonrpc":"2.0","method":"notifications/message","params":{{"level":"info","data":"{}"}}}}"#,
        "x".repeat(200_000)
    );
    assert_recorded_by_hash(dir.path(), &hex::encode(Sha256::digest(note.as_bytes())));
}
