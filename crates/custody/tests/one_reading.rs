//! One meaning per message (issue 13, §2): JSON that readers could disagree on (a repeated
//! member name, invalid UTF-8, a lone surrogate, a number serde cannot hold exactly) is refused
//! in either direction, on every transport, with the JSON path in the error; what policy,
//! approvers, the log and the upstream see can never differ.

mod common;

use common::*;
use serde_json::{Value, json};
use tlog::entry::Kind;

const POLICY: &str = r#"
@id("connect")
permit(principal, action in [Action::"other", Action::"list"], resource);

@id("staging-deploys")
permit(principal, action == Action::"tools/call", resource)
when { resource.name == "deploy" && context.arguments.hasTag("environment") &&
       context.arguments.getTag("environment") == "staging" };
"#;

/// A key the audit copy's detectors mask (AWS access key id).
const SECRET: &str = "AKIAIOSFODNN7EXAMPLE";

fn raw_post(gw: &Gateway, endpoint: &str, session: Option<&str>) -> reqwest::RequestBuilder {
    let mut b = reqwest::Client::new()
        .post(gw.url(endpoint))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", SESSION_VERSION);
    if let Some(s) = session {
        b = b.header("mcp-session-id", s);
    }
    b
}

/// Every entry's message and detail, as text.
fn log_text(dir: &std::path::Path) -> String {
    entries(dir)
        .iter()
        .map(|e| format!("{} {}\n", String::from_utf8_lossy(&e.message), e.detail))
        .collect()
}

#[tokio::test]
async fn a_repeated_argument_is_refused_before_policy_sees_it() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("p.cedar");
    std::fs::write(&policy, POLICY).unwrap();
    let gw = Gateway::start(
        "",
        &format!(
            "[policy]\nfiles = [\"{}\"]\n[endpoints.demo.upstream]\ntransport = \"stdio\"\ncommand = \"{}\"\nargs = [\"demo-server\"]\n",
            policy.display(),
            custody_bin()
        ),
    )
    .await;
    let mut c = gw.client("demo");
    c.initialize().await;
    // Policy reads the last copy (staging) and permits; an upstream reading the first would
    // deploy to production.
    let attack = r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"deploy","arguments":{"service":"api","version":"1.2.3","environment":"production","environment":"staging"}}}"#;
    let a = Client::send(raw_post(&gw, "demo", c.session.as_deref()).body(attack)).await;
    assert_eq!(a.status, 400, "{a:#?}");
    assert_eq!(a.error_code(), -32600, "{a:#?}");
    assert!(
        a.error_message().contains("params.arguments.environment"),
        "{a:#?}"
    );
    let data = &a.response()["error"]["data"];
    assert_eq!(data["path"], "params.arguments.environment", "{a:#?}");
    assert_eq!(data["reason"], "repeated_member", "{a:#?}");

    // The same call with one environment is decided as usual.
    let ok = c
        .call(
            "tools/call",
            json!({"name": "deploy", "arguments": {"service": "api", "version": "1.2.3", "environment": "staging"}}),
        )
        .await;
    assert!(ok.response()["result"].is_object(), "{ok:#?}");
    let data = gw.shutdown().await;

    let log = entries(data.path());
    let refused = log
        .iter()
        .find(|e| e.kind == Kind::Rejected)
        .expect("the refusal is recorded");
    assert_eq!(refused.id, "", "the id of an ambiguous message is not read");
    let detail: Value = serde_json::from_str(&refused.detail).unwrap();
    assert_eq!(
        detail["error"]["data"]["path"],
        "params.arguments.environment"
    );
    assert_eq!(detail["input"]["bytes"], attack.len());
    assert!(detail.get("policy").is_none(), "policy never saw it");
    // The refused bytes are kept as text: both copies are there for an auditor.
    let stored = String::from_utf8_lossy(&refused.message);
    assert!(
        stored.contains("production") && stored.contains("staging"),
        "{stored}"
    );
    assert_eq!(
        log.iter()
            .filter(|e| e.kind == Kind::Request && e.method == "tools/call")
            .count(),
        1,
        "only the unambiguous call was forwarded"
    );
    assert_log_verifies(data.path());
}

#[tokio::test]
async fn client_json_without_one_reading_is_refused_with_its_path() {
    let url = fixture_http().await;
    let gw = Gateway::start("", &http_upstream("ok", &url, "")).await;
    let call = |args: &str| {
        format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"test_simple_text","arguments":{args},"_meta":{{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{{}}}}}}}}"#
        )
        .into_bytes()
    };
    let mut invalid_utf8 = call(r#"{"s":"@"}"#);
    if let Some(at) = invalid_utf8.iter().position(|&b| b == b'@') {
        invalid_utf8[at] = 0xff;
    }
    let cases: Vec<(Vec<u8>, &str, &str)> = vec![
        (
            call(r#"{"a":1,"\u0061":2}"#),
            "repeated_member",
            "params.arguments.a",
        ),
        (invalid_utf8, "invalid_utf8", "params.arguments.s"),
        (
            call(r#"{"s":"\ud800"}"#),
            "lone_surrogate",
            "params.arguments.s",
        ),
        (
            call(r#"{"amount":18446744073709551616}"#),
            "integer_out_of_range",
            "params.arguments.amount",
        ),
        (
            call(r#"{"x":[1e400]}"#),
            "number_out_of_range",
            "params.arguments.x[0]",
        ),
    ];
    for (body, reason, path) in cases {
        let a = Client::send(
            reqwest::Client::new()
                .post(gw.url("ok"))
                .header("content-type", "application/json")
                .header("accept", "application/json, text/event-stream")
                .header("mcp-protocol-version", STATELESS_VERSION)
                .header("mcp-method", "tools/call")
                .header("mcp-name", "test_simple_text")
                .body(body),
        )
        .await;
        assert_eq!(a.status, 400, "{reason}: {a:#?}");
        assert_eq!(a.error_code(), -32600, "{reason}: {a:#?}");
        assert_eq!(a.response()["error"]["data"]["reason"], reason, "{a:#?}");
        assert_eq!(a.response()["error"]["data"]["path"], path, "{a:#?}");
    }
    let data = gw.shutdown().await;
    let rejected = entries(data.path())
        .iter()
        .filter(|e| e.kind == Kind::Rejected)
        .count();
    assert_eq!(rejected, 5, "every refusal is recorded");
    assert_log_verifies(data.path());
}

/// An HTTP upstream that answers each POST by method: `initialize` normally (with a session),
/// `tools/call` with `answer` (JSON, or one SSE event when `sse`), other requests `{}`, and
/// notifications 202.
async fn upstream_answering(answer: &'static str, sse: bool) -> String {
    use axum::response::IntoResponse;
    let app = axum::Router::new().route(
        "/mcp",
        axum::routing::post(move |body: String| async move {
            let req: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
            let id = req["id"].clone();
            if id.is_null() {
                return axum::http::StatusCode::ACCEPTED.into_response();
            }
            let text = match req["method"].as_str() {
                Some("initialize") => json!({"jsonrpc": "2.0", "id": id, "result": {
                    "protocolVersion": SESSION_VERSION, "capabilities": {"tools": {}},
                    "serverInfo": {"name": "evil", "version": "0"}}})
                .to_string(),
                Some("tools/call") => answer.replace("$ID", &id.to_string()),
                _ => json!({"jsonrpc": "2.0", "id": id, "result": {}}).to_string(),
            };
            let (ct, text) = if sse && req["method"] == "tools/call" {
                ("text/event-stream", format!("data: {text}\n\n"))
            } else {
                ("application/json", text)
            };
            ([("content-type", ct), ("mcp-session-id", "up-1")], text).into_response()
        }),
    );
    serve_router(app).await
}

#[tokio::test]
async fn an_upstream_answer_with_a_repeated_member_never_reaches_the_client_or_the_log() {
    // The first copy carries a secret the audit copy would mask; serde reads the second.
    const DUP: &str = r#"{"jsonrpc":"2.0","id":$ID,"result":{"content":[{"type":"text","text":"key AKIAIOSFODNN7EXAMPLE"}],"content":[{"type":"text","text":"ok"}]}}"#;
    let json_up = upstream_answering(DUP, false).await;
    let sse_up = upstream_answering(DUP, true).await;
    let gw = Gateway::start(
        "",
        &format!(
            "{}{}",
            http_upstream("json", &json_up, ""),
            http_upstream("sse", &sse_up, "")
        ),
    )
    .await;
    for ep in ["json", "sse"] {
        let mut c = gw.client(ep);
        c.initialize().await;
        let a = c
            .call("tools/call", json!({"name": "lookup", "arguments": {}}))
            .await;
        assert!(
            !a.raw.contains(SECRET),
            "{ep}: the client got the bytes: {a:#?}"
        );
        assert_eq!(a.status, 200, "{ep}: {a:#?}");
        assert_eq!(a.error_code(), -32012, "{ep}: {a:#?}");
        assert!(
            a.error_message().contains("result.content"),
            "{ep}: names the path: {a:#?}"
        );
        // The session goes on.
        let ping = c.call("ping", json!({})).await;
        assert!(ping.response()["result"].is_object(), "{ep}: {ping:#?}");
    }
    let data = gw.shutdown().await;
    let log = log_text(data.path());
    assert!(
        !log.contains(SECRET),
        "the log holds the unmasked secret:\n{log}"
    );
    assert!(
        entries(data.path())
            .iter()
            .filter(|e| e.kind == Kind::Error
                && String::from_utf8_lossy(&e.message).contains("result.content"))
            .count()
            >= 2,
        "each failure is recorded:\n{log}"
    );
    assert_log_verifies(data.path());
}

#[tokio::test]
async fn a_stdio_answer_with_a_repeated_member_fails_only_its_call() {
    let init = r#"{"jsonrpc":"2.0","id":1,"result":{"protocolVersion":"2025-11-25","capabilities":{},"serverInfo":{"name":"sh","version":"0"}}}"#;
    let script = format!(
        "read l; echo '{init}'; read l; read l; echo '{{\"jsonrpc\":\"2.0\",\"id\":2,\"result\":{{\"a\":\"{SECRET}\",\"a\":2}}}}'; read l; echo '{{\"jsonrpc\":\"2.0\",\"id\":3,\"result\":{{}}}}'; sleep 30"
    );
    let gw = Gateway::start(
        "",
        &format!(
            "[endpoints.dup.upstream]\ntransport = \"stdio\"\ncommand = \"sh\"\nargs = [\"-c\", '''{script}''']\n"
        ),
    )
    .await;
    let mut c = gw.client("dup");
    c.initialize().await;
    let a = c.call("tools/list", json!({})).await;
    assert!(!a.raw.contains(SECRET), "{a:#?}");
    assert_eq!(a.error_code(), -32012, "{a:#?}");
    assert!(a.error_message().contains("result.a"), "{a:#?}");
    let b = c.call("ping", json!({})).await;
    assert!(
        b.response()["result"].is_object(),
        "the process and session go on: {b:#?}"
    );
    let data = gw.shutdown().await;
    assert!(!log_text(data.path()).contains(SECRET));
    assert_log_verifies(data.path());
}
