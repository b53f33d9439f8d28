//! Issue 15: what a real client sees through custody is what it sees direct. Each test is one
//! of the differences found, checking the answer a server of the request's generation gives.

mod common;

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::response::Response;
use axum::routing::post;
use bytes::Bytes;
use common::*;
use serde_json::{Value, json};
use tlog::entry::{Direction, Kind};

const META: &str = "io.modelcontextprotocol/protocolVersion";

/// A stateless request body in protocol version `version`.
fn request(id: u64, method: &str, mut params: Value, version: &str) -> Value {
    params["_meta"] = json!({
        META: version,
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": "fidelity", "version": "0"},
    });
    json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params})
}

async fn post_raw(url: &str, body: &Value, version: &str) -> Answer {
    let method = body["method"].as_str().unwrap_or("");
    let mut b = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", version)
        .header("mcp-method", method);
    if let Some(name) = body["params"]["name"].as_str() {
        b = b.header("mcp-name", name);
    }
    Client::send(b.body(body.to_string())).await
}

/// An HTTP upstream that speaks only 2026-07-28 (its discover says so) and answers a tool call
/// with newline-delimited JSON: a progress notification, then, a second later, the result.
async fn only_stateless_upstream() -> String {
    let app = axum::Router::new().route(
        "/mcp",
        post(|body: String| async move {
            let req: Value = serde_json::from_str(&body).unwrap_or_default();
            let id = req["id"].clone();
            match req["method"].as_str().unwrap_or("") {
                "server/discover" => json_response(json!({"jsonrpc": "2.0", "id": id, "result": {
                    "supportedVersions": ["2026-07-28"], "capabilities": {"tools": {}},
                    "serverInfo": {"name": "only-stateless", "version": "1"}, "resultType": "complete"}})),
                "tools/call" => {
                    let token = req["params"]["_meta"]["progressToken"].clone();
                    let first = json!({"jsonrpc": "2.0", "method": "notifications/progress",
                        "params": {"progressToken": token, "progress": 1, "total": 2}});
                    let last = json!({"jsonrpc": "2.0", "id": id, "result": {
                        "content": [{"type": "text", "text": "streamed"}], "resultType": "complete"}});
                    let stream = async_stream(vec![
                        (Duration::ZERO, format!("{first}\n")),
                        (Duration::from_millis(1500), format!("{last}\n")),
                    ]);
                    Response::builder()
                        .header("content-type", "application/json")
                        .body(Body::from_stream(stream))
                        .unwrap()
                }
                _ => json_response(json!({"jsonrpc": "2.0", "id": id,
                    "error": {"code": -32601, "message": "method not found"}})),
            }
        }),
    );
    serve_router(app).await
}

fn json_response(v: Value) -> Response {
    Response::builder()
        .header("content-type", "application/json")
        .body(Body::from(v.to_string()))
        .unwrap()
}

/// Chunks sent after their delays.
fn async_stream(
    chunks: Vec<(Duration, String)>,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> {
    futures_util::stream::unfold(chunks.into_iter(), |mut it| async move {
        let (delay, chunk) = it.next()?;
        tokio::time::sleep(delay).await;
        Some((Ok(Bytes::from(chunk)), it))
    })
}

#[tokio::test]
async fn an_unsupported_version_names_what_the_upstream_supports() {
    let up = only_stateless_upstream().await;
    let gw = Gateway::start("", &http_upstream("only", &up, "")).await;
    let body = request(1, "server/discover", json!({}), "2099-01-01");
    let a = post_raw(&gw.url("only"), &body, "2099-01-01").await;
    assert_eq!(a.status, 400);
    assert_eq!(a.error_code(), -32022);
    let data = &a.response()["error"]["data"];
    assert_eq!(data["requested"], "2099-01-01");
    assert_eq!(
        data["supported"],
        json!(["2026-07-28"]),
        "the upstream's versions, not the gateway's five: {a:#?}"
    );
    // The gateway asked the upstream itself: both the question and the answer are recorded,
    // with the gateway as the caller.
    let dir = gw.shutdown().await;
    let log = entries(dir.path());
    let asked = log
        .iter()
        .find(|e| e.kind == Kind::Request && e.method == "server/discover")
        .expect("the discover the gateway sent is recorded");
    assert!(asked.caller.contains("gateway"), "{}", asked.caller);
    assert_log_verifies(dir.path());
}

#[tokio::test]
async fn a_stateless_initialize_or_ping_to_a_stdio_upstream_is_method_not_found() {
    let gw = Gateway::start("", &stdio_fixture("f", "")).await;
    for method in ["initialize", "ping"] {
        // Twice: the first reaches a fresh pool, the second a warm one; both must answer alike.
        for _ in 0..2 {
            let body = request(7, method, json!({}), STATELESS_VERSION);
            let a = post_raw(&gw.url("f"), &body, STATELESS_VERSION).await;
            assert_eq!(a.status, 404, "{method}: {a:#?}");
            assert_eq!(a.error_code(), -32601, "{method}");
            assert_eq!(a.response()["id"], 7);
            assert_eq!(a.error_message(), format!("method not found: {method}"));
        }
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn newline_delimited_json_is_relayed_message_by_message() {
    let up = only_stateless_upstream().await;
    let gw = Gateway::start("", &http_upstream("only", &up, "")).await;
    let mut body = request(
        3,
        "tools/call",
        json!({"name": "slow", "arguments": {}}),
        STATELESS_VERSION,
    );
    body["params"]["_meta"]["progressToken"] = json!("p-1");
    let started = Instant::now();
    let resp = reqwest::Client::new()
        .post(gw.url("only"))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", STATELESS_VERSION)
        .header("mcp-method", "tools/call")
        .header("mcp-name", "slow")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let mut events = EventReader::new(resp);
    let first = events.next().await.expect("the progress notification");
    let first_after = started.elapsed();
    assert_eq!(first["method"], "notifications/progress", "{first}");
    assert!(
        first_after < Duration::from_millis(1200),
        "relayed before the body ended: after {first_after:?}"
    );
    let last = events.next().await.expect("the result");
    assert_eq!(last["result"]["content"][0]["text"], "streamed");
    let dir = gw.shutdown().await;
    let log = entries(dir.path());
    let from_upstream: Vec<_> = log
        .iter()
        .filter(|e| e.direction == Direction::UpstreamToClient && e.endpoint == "only")
        .filter(|e| e.method == "notifications/progress" || e.kind == Kind::Response)
        .collect();
    assert!(
        from_upstream.len() >= 2,
        "each message recorded: {}",
        log.len()
    );
    assert_log_verifies(dir.path());
}

#[tokio::test]
async fn a_pooled_process_asking_the_client_gets_an_answer_and_the_call_completes() {
    let gw = Gateway::start("", &stdio_fixture("f", "")).await;
    let started = Instant::now();
    // A client that declared no capabilities cannot be asked for input (tests/mrtr.rs asks one
    // that can).
    let body = request(
        1,
        "tools/call",
        json!({"name": "test_sampling", "arguments": {"prompt": "hi"}}),
        "2026-07-28",
    );
    let a = tokio::time::timeout(
        Duration::from_secs(20),
        post_raw(&gw.url("f"), &body, "2026-07-28"),
    )
    .await
    .expect("the call completes instead of hanging");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(
        a.messages
            .iter()
            .all(|m| m["method"] != "sampling/createMessage"),
        "the stateless client is not handed a request it cannot answer: {a:#?}"
    );
    let _ = a.response();
    let dir = gw.shutdown().await;
    let log = entries(dir.path());
    let asked = log
        .iter()
        .find(|e| e.kind == Kind::Request && e.method == "sampling/createMessage")
        .expect("the process's request is recorded");
    assert_eq!(asked.direction, Direction::UpstreamToClient);
    let answered = log
        .iter()
        .find(|e| e.request == Some(asked.index))
        .expect("and the gateway's answer to it");
    assert_eq!(answered.direction, Direction::Gateway);
    let text = String::from_utf8_lossy(&answered.message);
    assert!(
        text.contains("-32601") && text.contains("need a session"),
        "{text}"
    );
    assert_log_verifies(dir.path());
}

#[tokio::test]
async fn a_pooled_tool_sees_the_clients_own_progress_token_unless_two_collide() {
    let gw = Gateway::start("", &stdio_fixture("f", "")).await;
    let c = gw.client("f").stateless();
    let call = |token: &'static str| {
        let c = &c;
        async move {
            c.call(
                "tools/call",
                json!({"name": "test_tool_with_progress", "arguments": {},
                    "_meta": {"progressToken": token}}),
            )
            .await
        }
    };
    let a = call("client-token-7").await;
    assert_eq!(
        a.response()["result"]["content"][0]["text"],
        "client-token-7",
        "the tool saw the client's token: {a:#?}"
    );
    // Two calls in flight on one process with the same token: each still gets its own
    // progress under the token it sent.
    let (x, y) = tokio::join!(call("same"), call("same"));
    for a in [x, y] {
        let progress: Vec<&Value> = a
            .messages
            .iter()
            .filter(|m| m["method"] == "notifications/progress")
            .collect();
        assert_eq!(progress.len(), 3, "{a:#?}");
        assert!(
            progress
                .iter()
                .all(|p| p["params"]["progressToken"] == "same")
        );
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn a_stdio_session_left_without_delete_is_closed_after_its_idle_timeout() {
    let gw = Gateway::start(
        "stdio_session_idle_timeout = \"1s\"",
        &stdio_fixture("f", ""),
    )
    .await;
    let mut c = gw.client("f");
    c.initialize().await;
    let relay = &gw.running.as_ref().unwrap().relay;
    let ep = relay.endpoint("f").unwrap();
    assert_eq!(ep.session_count(), 1);
    let deadline = Instant::now() + Duration::from_secs(10);
    while ep.session_count() > 0 || ep.process_count() > 0 {
        assert!(
            Instant::now() < deadline,
            "the session and its process are still there"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let after = c.call("tools/list", json!({})).await;
    assert_eq!(after.status, 404, "the client is told to initialize again");
    gw.shutdown().await;
}

#[test]
fn connect_to_a_mistyped_endpoint_fails_loudly_and_answers_the_request() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let gw = rt.block_on(Gateway::start("", &stdio_fixture("f", "")));
    let url = format!("http://{}/mcp/no-such-endpoint", gw.addr);
    let mut child = std::process::Command::new(custody_bin())
        .args(["connect", &url])
        .env("CUSTODY_TOKEN", "anything")
        .env_remove("ACTIONS_ID_TOKEN_REQUEST_URL")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let init = json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{
            "protocolVersion": SESSION_VERSION, "capabilities": {}, "clientInfo": {"name":"t","version":"0"}}});
        writeln!(child.stdin.as_mut().unwrap(), "{init}").unwrap();
        // stdin stays open, as a job's client keeps it: connect must end by itself.
    }
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "connect kept running"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let out = child.wait_with_output().unwrap();
    assert!(!status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let answer: Value = serde_json::from_str(stdout.lines().next().unwrap()).unwrap();
    assert_eq!(answer["id"], 1, "the pending request is answered: {stdout}");
    assert!(answer["error"]["message"].as_str().unwrap().contains("404"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains(&url) && stderr.contains("404"), "{stderr}");
    rt.block_on(gw.shutdown());
}

/// A session is not idle while a request uses it: a process slower to start than the idle
/// timeout still gets its session's next call (it was reaped under the initialize before).
#[tokio::test]
async fn a_session_is_not_idle_while_its_process_starts_slowly() {
    let endpoint = format!(
        "[endpoints.slow.upstream]\ntransport = \"stdio\"\ncommand = \"sh\"\nargs = [\"-c\", \"sleep 3; exec '{}' demo-server --conformance\"]\n",
        custody_bin()
    );
    let gw = Gateway::start("stdio_session_idle_timeout = \"1s\"", &endpoint).await;
    let mut c = gw.client("slow");
    let init = c.initialize().await;
    assert_eq!(init.status, 200, "{:?}", init.messages);
    let call = c
        .call(
            "tools/call",
            json!({"name": "test_simple_text", "arguments": {}}),
        )
        .await;
    assert!(
        call.response()["result"].is_object(),
        "the session outlived its slow start: {:?}",
        call.messages
    );
    gw.shutdown().await;
}
