//! Every bad input gets its own clear error, and the gateway keeps serving everyone else.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

async fn gateway(server: &str, extra_endpoints: &str) -> Gateway {
    let url = fixture_http().await;
    Gateway::start(
        server,
        &format!(
            "{}{}{extra_endpoints}",
            http_upstream("ok", &url, ""),
            stdio_fixture("stdio", "")
        ),
    )
    .await
}

/// The gateway still serves a normal call.
async fn still_serving(gw: &Gateway) {
    let c = gw.client("ok").stateless();
    let a = c
        .call(
            "tools/call",
            json!({"name": "test_simple_text", "arguments": {}}),
        )
        .await;
    assert_eq!(a.status, 200, "{a:#?}");
    assert!(a.response()["result"].is_object(), "{a:#?}");
}

/// Sends a hand-written HTTP/1.1 request; returns the status and the whole response text.
async fn raw_http(addr: std::net::SocketAddr, request: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut sock = tokio::net::TcpStream::connect(addr).await.unwrap();
    sock.write_all(request.as_bytes()).await.unwrap();
    let mut out = String::new();
    sock.read_to_string(&mut out).await.unwrap();
    let status = out
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, out)
}

fn raw_post(gw: &Gateway, endpoint: &str) -> reqwest::RequestBuilder {
    reqwest::Client::new()
        .post(gw.url(endpoint))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
}

#[tokio::test]
async fn malformed_json_is_a_parse_error() {
    let gw = gateway("", "").await;
    let a = Client::send(raw_post(&gw, "ok").body("{\"jsonrpc\": \"2.0\", \"id\": 1, ")).await;
    assert_eq!(a.status, 400);
    assert_eq!(a.error_code(), -32700);
    assert!(a.error_message().contains("not valid JSON"), "{a:#?}");
    let a = Client::send(raw_post(&gw, "ok").body("{\"id\": 1, \"method\": \"x\"}")).await;
    assert_eq!(a.status, 400);
    assert_eq!(a.error_code(), -32600, "not JSON-RPC 2.0: {a:#?}");
    still_serving(&gw).await;
    gw.shutdown().await;
}

#[tokio::test]
async fn oversized_bodies_are_refused() {
    let gw = gateway("max_body_bytes = 2048", "").await;
    let big = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"pad": "x".repeat(4000)}});
    let a = Client::send(raw_post(&gw, "ok").body(big.to_string())).await;
    assert_eq!(a.status, 413, "{a:#?}");
    assert!(a.error_message().contains("2048"), "{a:#?}");
    // Without a declared length (chunked), the limit still holds while reading.
    let chunks =
        futures_util::stream::iter(vec![Ok::<_, std::io::Error>(big.to_string().into_bytes())]);
    let a = Client::send(raw_post(&gw, "ok").body(reqwest::Body::wrap_stream(chunks))).await;
    assert_eq!(a.status, 413, "{a:#?}");
    still_serving(&gw).await;
    gw.shutdown().await;
}

#[tokio::test]
async fn json_nested_too_deep_is_refused_before_parsing() {
    let gw = gateway("max_json_depth = 16", "").await;
    let deep = format!(
        "{{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"x\",\"params\":{}1{}}}",
        "[".repeat(40),
        "]".repeat(40)
    );
    let a = Client::send(raw_post(&gw, "ok").body(deep)).await;
    assert_eq!(a.status, 400);
    assert_eq!(a.error_code(), -32600);
    assert!(
        a.error_message()
            .contains("nested deeper than the limit of 16"),
        "{a:#?}"
    );
    still_serving(&gw).await;
    gw.shutdown().await;
}

#[tokio::test]
async fn wrong_content_type_and_accept() {
    let gw = gateway("", "").await;
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}).to_string();
    let a = Client::send(
        reqwest::Client::new()
            .post(gw.url("ok"))
            .header("content-type", "text/plain")
            .header("accept", "application/json, text/event-stream")
            .body(body.clone()),
    )
    .await;
    assert_eq!(a.status, 415, "{a:#?}");
    assert!(a.error_message().contains("text/plain"), "{a:#?}");
    // reqwest always sends an Accept header; write this request by hand.
    let (status, text) = raw_http(
        gw.addr,
        &format!(
            "POST /mcp/ok HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        ),
    )
    .await;
    assert_eq!(status, 406, "{text}");
    assert!(text.contains("Accept must list"), "{text}");
    let json_only = Client::send(
        reqwest::Client::new()
            .post(gw.url("ok"))
            .header("content-type", "application/json")
            .header("accept", "application/json")
            .body(body),
    )
    .await;
    assert_eq!(json_only.status, 406);
    assert!(json_only.error_message().contains("text/event-stream"));
    let get = reqwest::Client::new()
        .get(gw.url("ok"))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(get.status(), 406);
    gw.shutdown().await;
}

#[tokio::test]
async fn unknown_endpoint_lists_the_configured_ones() {
    let gw = gateway("", "").await;
    let a = gw.client("nope").call("tools/list", json!({})).await;
    assert_eq!(a.status, 404);
    assert_eq!(a.error_code(), -32003);
    assert!(
        a.error_message().contains("\"nope\"") && a.error_message().contains("ok, stdio"),
        "{a:#?}"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn unknown_and_expired_sessions_are_404() {
    let gw = gateway("session_idle_timeout = \"1s\"", "").await;
    let mut c = gw.client("stdio");
    c.session = Some("00000000000000000000000000000000".into());
    let a = c.call("tools/list", json!({})).await;
    assert_eq!(a.status, 404);
    assert_eq!(a.error_code(), -32001);

    let mut c = gw.client("stdio");
    c.initialize().await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    gw.running.as_ref().unwrap().relay.reap().await;
    let a = c.call("tools/list", json!({})).await;
    assert_eq!(a.status, 404, "an expired session: {a:#?}");
    assert!(
        a.error_message().contains("initialize a new session"),
        "{a:#?}"
    );

    // A session-based request without a session id at all.
    let c = gw.client("ok");
    let a = c.call("tools/list", json!({})).await;
    assert_eq!(a.status, 400);
    assert!(a.error_message().contains("Mcp-Session-Id"), "{a:#?}");
    gw.shutdown().await;
}

#[tokio::test]
async fn unsupported_protocol_version_is_400() {
    let gw = gateway("", "").await;
    let mut c = gw.client("ok");
    c.version = "1999-01-01".into();
    let a = c.call("tools/list", json!({})).await;
    assert_eq!(a.status, 400);
    assert_eq!(a.error_code(), -32022);
    assert_eq!(a.response()["error"]["data"]["requested"], "1999-01-01");
    assert!(
        a.response()["error"]["data"]["supported"]
            .as_array()
            .unwrap()
            .contains(&json!("2026-07-28"))
    );

    // Inside a session too.
    let mut c = gw.client("ok");
    c.initialize().await;
    c.version = "2099-12-31".into();
    let a = c.call("tools/list", json!({})).await;
    assert_eq!(a.status, 400);
    assert_eq!(a.error_code(), -32022);
    gw.shutdown().await;
}

#[tokio::test]
async fn mirrored_header_mismatch_is_400_header_mismatch() {
    let gw = gateway("", "").await;
    for ep in ["ok", "stdio"] {
        let c = gw.client(ep).stateless();
        let body = c.request_body(
            "tools/call",
            json!({"name": "test_simple_text", "arguments": {}}),
        );
        let a = Client::send(
            c.post_builder()
                .header("mcp-method", "tools/call")
                .header("mcp-name", "something_else")
                .body(body.to_string()),
        )
        .await;
        assert_eq!(a.status, 400, "{ep}: {a:#?}");
        assert_eq!(a.error_code(), -32020, "{ep}");
        assert!(a.error_message().contains("something_else"), "{ep}: {a:#?}");
        let a = Client::send(c.post_builder().body(body.to_string())).await;
        assert_eq!(a.status, 400);
        assert_eq!(a.error_code(), -32020);
        assert!(a.error_message().contains("Mcp-Method"), "{a:#?}");
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn dns_rebinding_protection() {
    let gw = gateway("", "").await;
    let c = gw.client("ok").stateless();
    let body = c.request_body("server/discover", json!({}));
    let a = Client::send(
        c.with_mirrored(c.post_builder(), &body)
            .header("host", "evil.example.com")
            .body(body.to_string()),
    )
    .await;
    assert_eq!(a.status, 403, "{a:#?}");
    assert!(a.error_message().contains("allowed_hosts"));
    let a = Client::send(
        c.with_mirrored(c.post_builder(), &body)
            .header("origin", "http://evil.example.com")
            .body(body.to_string()),
    )
    .await;
    assert_eq!(a.status, 403, "{a:#?}");
    assert!(a.error_message().contains("allowed_origins"));
    let a = Client::send(
        c.with_mirrored(c.post_builder(), &body)
            .header("origin", format!("http://{}", gw.addr))
            .body(body.to_string()),
    )
    .await;
    assert_eq!(a.status, 200, "a loopback origin is fine: {a:#?}");
    gw.shutdown().await;
}

#[tokio::test]
async fn batches_only_in_2025_03_26() {
    let gw = gateway("", "").await;
    let mut c = gw.client("stdio");
    c.initialize().await;
    let batch = json!([{"jsonrpc": "2.0", "id": 50, "method": "ping"}]);
    let a = c.post(&batch).await;
    assert_eq!(a.status, 400);
    assert!(a.error_message().contains("batches"), "{a:#?}");

    let mut old = gw.client("stdio");
    old.version = "2025-03-26".into();
    old.initialize().await;
    let batch = json!([
        {"jsonrpc": "2.0", "id": 51, "method": "ping"},
        {"jsonrpc": "2.0", "id": 52, "method": "tools/call", "params": {"name": "test_simple_text", "arguments": {}}}
    ]);
    let a = old.post(&batch).await;
    assert_eq!(a.status, 200, "{a:#?}");
    let ids: Vec<_> = a.messages.iter().filter_map(|m| m["id"].as_i64()).collect();
    assert!(ids.contains(&51) && ids.contains(&52), "{a:#?}");
    gw.shutdown().await;
}

#[tokio::test]
async fn unreachable_upstream_names_the_endpoint() {
    let down = closed_port().await;
    let gw = gateway(
        "",
        &http_upstream("down", &down, "connect_timeout = \"1s\""),
    )
    .await;
    let c = gw.client("down").stateless();
    let a = c.call("tools/list", json!({})).await;
    assert_eq!(a.status, 200, "a request gets a JSON-RPC answer: {a:#?}");
    assert_eq!(a.error_code(), -32010);
    assert!(a.error_message().contains("\"down\""), "{a:#?}");
    assert_eq!(a.response()["error"]["data"]["endpoint"], "down");
    // A notification has no id to answer: plain 502.
    let a = Client::send(
        c.post_builder()
            .header("mcp-method", "notifications/x")
            .body(json!({"jsonrpc": "2.0", "method": "notifications/x", "params": {}}).to_string()),
    )
    .await;
    assert_eq!(a.status, 502, "{a:#?}");
    still_serving(&gw).await;
    gw.shutdown().await;
}

#[tokio::test]
async fn upstream_timeout() {
    let silent = silent_server().await;
    let gw = gateway(
        "",
        &http_upstream("slow", &silent, "request_timeout = \"300ms\""),
    )
    .await;
    let c = gw.client("slow").stateless();
    let a = c.call("tools/list", json!({})).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.error_code(), -32011);
    assert!(a.error_message().contains("300ms"), "{a:#?}");
    let a = Client::send(
        c.post_builder()
            .header("mcp-method", "notifications/x")
            .body(json!({"jsonrpc": "2.0", "method": "notifications/x", "params": {}}).to_string()),
    )
    .await;
    assert_eq!(a.status, 504, "{a:#?}");
    still_serving(&gw).await;
    gw.shutdown().await;
}

/// An HTTP upstream that answers every POST with `body` and content type `ct`.
async fn canned_upstream(ct: &'static str, body: &'static str) -> String {
    let app = axum::Router::new().route(
        "/mcp",
        axum::routing::post(move || async move { ([("content-type", ct)], body) }),
    );
    serve_router(app).await
}

/// An HTTP upstream that starts an SSE answer and dies mid-stream.
async fn crashing_upstream() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut sock, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                let _ = sock.read(&mut buf).await;
                let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n";
                let event = "data: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{\"progressToken\":1,\"progress\":1}}\n\n";
                let chunk = format!("{:x}\r\n{event}\r\n", event.len());
                let _ = sock.write_all(head.as_bytes()).await;
                let _ = sock.write_all(chunk.as_bytes()).await;
                let _ = sock.flush().await;
                tokio::time::sleep(Duration::from_millis(50)).await;
                // Drop the connection without finishing the chunked body.
            });
        }
    });
    format!("http://{addr}/mcp")
}

#[tokio::test]
async fn upstream_garbage_and_crashes() {
    let garbage_json = canned_upstream("application/json", "this is not json").await;
    let garbage_sse = canned_upstream("text/event-stream", "data: {not json\n\n").await;
    let wrong_type = canned_upstream("text/html", "<html>").await;
    let crash = crashing_upstream().await;
    let gw = gateway(
        "",
        &format!(
            "{}{}{}{}",
            http_upstream("gj", &garbage_json, ""),
            http_upstream("gs", &garbage_sse, ""),
            http_upstream("html", &wrong_type, ""),
            http_upstream("crash", &crash, ""),
        ),
    )
    .await;
    for ep in ["gj", "gs", "html"] {
        let a = gw
            .client(ep)
            .stateless()
            .call("tools/list", json!({}))
            .await;
        assert_eq!(a.status, 200, "{ep}: {a:#?}");
        assert_eq!(a.error_code(), -32012, "{ep}: {a:#?}");
        assert!(
            a.error_message().contains(&format!("\"{ep}\"")),
            "{ep}: {a:#?}"
        );
    }
    let a = gw
        .client("crash")
        .stateless()
        .call("tools/list", json!({}))
        .await;
    assert!(a.is_sse(), "{a:#?}");
    assert_eq!(
        a.messages[0]["method"], "notifications/progress",
        "what arrived is relayed"
    );
    assert_eq!(a.error_code(), -32013, "{a:#?}");
    assert!(a.error_message().contains("\"crash\""), "{a:#?}");
    still_serving(&gw).await;
    gw.shutdown().await;
}

fn stdio_script(name: &str, script: &str, extra: &str) -> String {
    format!(
        "[endpoints.{name}.upstream]\ntransport = \"stdio\"\ncommand = \"sh\"\nargs = [\"-c\", '''{script}''']\n{extra}\n"
    )
}

const INIT_REPLY: &str = r#"{"jsonrpc":"2.0","id":1,"result":{"protocolVersion":"2025-11-25","capabilities":{},"serverInfo":{"name":"sh","version":"0"}}}"#;

#[tokio::test]
async fn stdio_child_that_exits_or_hangs_or_writes_garbage() {
    let gw = gateway(
        "",
        &format!(
            "{}{}{}{}",
            stdio_script("exits", "read l; exit 3", ""),
            stdio_script(
                "dies-later",
                &format!("read l; echo '{INIT_REPLY}'; read l; read l; exit 7"),
                ""
            ),
            stdio_script("hangs", "read l; sleep 30", "request_timeout = \"300ms\""),
            stdio_script(
                "garbage",
                "read l; echo 'hello from a broken server'; sleep 30",
                ""
            ),
        ),
    )
    .await;

    let mut c = gw.client("exits");
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": SESSION_VERSION, "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}});
    let a = c.post(&body).await;
    assert_eq!(a.error_code(), -32013, "{a:#?}");
    assert!(a.error_message().contains("exit status: 3"), "{a:#?}");
    assert!(
        a.header("mcp-session-id").is_none(),
        "a failed handshake opens no session"
    );

    c = gw.client("dies-later");
    c.initialize().await;
    let a = c.call("tools/list", json!({})).await;
    assert_eq!(a.error_code(), -32013, "{a:#?}");
    assert!(a.error_message().contains("exit status: 7"), "{a:#?}");
    let a = c.call("tools/list", json!({})).await;
    assert_eq!(a.status, 404, "the session ended with its process: {a:#?}");
    assert!(a.error_message().contains("process exited"), "{a:#?}");

    let a = gw.client("hangs").post(&body).await;
    assert_eq!(a.error_code(), -32011, "{a:#?}");
    assert!(a.error_message().contains("300ms"), "{a:#?}");

    let a = gw.client("garbage").post(&body).await;
    assert_eq!(a.error_code(), -32012, "{a:#?}");
    assert!(
        a.error_message().contains("hello from a broken server"),
        "{a:#?}"
    );

    let a = gw.client("nonexistent").post(&body).await;
    assert_eq!(a.status, 404);
    still_serving(&gw).await;
    gw.shutdown().await;
}

#[tokio::test]
async fn missing_stdio_program_is_a_clear_error() {
    let gw = gateway(
        "",
        "[endpoints.missing.upstream]\ntransport = \"stdio\"\ncommand = \"/nonexistent/mcp-server\"\n",
    )
    .await;
    let mut c = gw.client("missing");
    c.session = None;
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": SESSION_VERSION, "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}});
    let a = c.post(&body).await;
    assert_eq!(a.error_code(), -32010, "{a:#?}");
    assert!(
        a.error_message().contains("/nonexistent/mcp-server"),
        "{a:#?}"
    );
    gw.shutdown().await;
}
