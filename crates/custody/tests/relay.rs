//! Client → gateway → fixture, over both upstream transports and both protocol generations.

mod common;

use common::*;
use serde_json::{Value, json};

/// A gateway with the conformance fixture behind `http` (Streamable HTTP) and `stdio`.
async fn gateway() -> Gateway {
    let url = fixture_http().await;
    Gateway::start(
        "",
        &format!(
            "{}{}",
            http_upstream("http", &url, ""),
            stdio_fixture("stdio", "")
        ),
    )
    .await
}

const TRANSPORTS: [&str; 2] = ["http", "stdio"];

fn tool_text(answer: &Answer) -> String {
    answer.response()["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("no text in {answer:#?}"))
        .to_string()
}

#[tokio::test]
async fn session_generation_relays_calls_over_both_transports() {
    let gw = gateway().await;
    for t in TRANSPORTS {
        let mut c = gw.client(t);
        let init = c.initialize().await;
        assert_eq!(
            init.response()["result"]["protocolVersion"],
            SESSION_VERSION,
            "{t}"
        );
        let sid = c.session.clone().unwrap();
        assert_eq!(sid.len(), 32, "{t}: the gateway mints its own ids");

        let list = c.call("tools/list", json!({})).await;
        let tools = list.response()["result"]["tools"]
            .as_array()
            .unwrap()
            .clone();
        assert!(tools.iter().any(|t| t["name"] == "test_simple_text"), "{t}");
        // Unknown schema keywords reach the client untouched.
        let schema_tool = tools
            .iter()
            .find(|t| t["name"] == "json_schema_2020_12_tool")
            .unwrap();
        assert_eq!(
            schema_tool["inputSchema"]["$defs"]["address"]["$anchor"], "address",
            "{t}"
        );

        let call = c
            .call(
                "tools/call",
                json!({"name": "test_simple_text", "arguments": {}}),
            )
            .await;
        assert_eq!(call.status, 200);
        assert_eq!(
            tool_text(&call),
            "This is a simple text response for testing.",
            "{t}"
        );
        assert_eq!(call.header("mcp-session-id"), Some(sid.as_str()), "{t}");

        let res = c
            .call("resources/read", json!({"uri": "test://template/42/data"}))
            .await;
        let text = res.response()["result"]["contents"][0]["text"]
            .as_str()
            .unwrap();
        assert!(text.contains("\"id\":\"42\""), "{t}: {text}");

        assert_eq!(c.delete().await, 200, "{t}");
        let after = c.call("tools/list", json!({})).await;
        assert_eq!(after.status, 404, "{t}: a deleted session is gone");
        assert_eq!(after.error_code(), -32001, "{t}");
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn progress_reaches_the_client_with_its_own_token() {
    let gw = gateway().await;
    for t in TRANSPORTS {
        let mut c = gw.client(t);
        c.initialize().await;
        let token = format!("tok-{t}");
        let a = c
            .call(
                "tools/call",
                json!({"name": "test_tool_with_progress", "arguments": {},
                "_meta": {"progressToken": token}}),
            )
            .await;
        assert!(a.is_sse(), "{t}: progress needs a stream: {a:#?}");
        let progress: Vec<&Value> = a
            .messages
            .iter()
            .filter(|m| m["method"] == "notifications/progress")
            .collect();
        assert_eq!(progress.len(), 3, "{t}: {a:#?}");
        assert!(
            progress
                .iter()
                .all(|p| p["params"]["progressToken"] == token.as_str()),
            "{t}"
        );
        assert_eq!(tool_text(&a), token, "{t}");
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn server_to_client_requests_round_trip() {
    let gw = gateway().await;
    for t in TRANSPORTS {
        let mut c = gw.client(t);
        c.initialize().await;
        let body = c.request_body(
            "tools/call",
            json!({"name": "test_sampling", "arguments": {"prompt": "hi"}}),
        );
        let resp = c
            .post_builder()
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let mut events = EventReader::new(resp);
        let request = events.next().await.expect("a sampling request");
        assert_eq!(
            request["method"], "sampling/createMessage",
            "{t}: {request}"
        );
        let answer = json!({"jsonrpc": "2.0", "id": request["id"], "result": {
            "role": "assistant", "content": {"type": "text", "text": "hello from the client"}, "model": "test"}});
        let ack = c.post(&answer).await;
        assert_eq!(ack.status, 202, "{t}: {ack:#?}");
        let result = events.next().await.expect("the tool result");
        assert_eq!(
            result["result"]["content"][0]["text"], "LLM response: hello from the client",
            "{t}: {result}"
        );
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn stateless_generation_over_both_transports() {
    let gw = gateway().await;
    for t in TRANSPORTS {
        let c = gw.client(t).stateless();
        let d = c.call("server/discover", json!({})).await;
        assert_eq!(d.status, 200, "{t}: {d:#?}");
        assert!(
            d.header("mcp-session-id").is_none(),
            "{t}: stateless has no sessions"
        );
        let versions = d.response()["result"]["supportedVersions"]
            .as_array()
            .unwrap()
            .clone();
        assert!(versions.contains(&json!(STATELESS_VERSION)), "{t}");

        // Multi round-trip: input_required, then the retry with the answers.
        let first = c
            .call(
                "tools/call",
                json!({"name": "test_input_required_result_elicitation", "arguments": {}}),
            )
            .await;
        assert_eq!(
            first.response()["result"]["resultType"],
            "input_required",
            "{t}: {first:#?}"
        );
        let second = c
            .call(
                "tools/call",
                json!({"name": "test_input_required_result_elicitation", "arguments": {},
                "inputResponses": {"user_name": {"action": "accept", "content": {"name": "Ada"}}}}),
            )
            .await;
        assert_eq!(tool_text(&second), "Hello, Ada!", "{t}");

        // An unknown method gets the upstream's answer: 404 and -32601.
        let unknown = c.call("vendor/unknown", json!({})).await;
        assert_eq!(unknown.status, 404, "{t}: {unknown:#?}");
        assert_eq!(unknown.error_code(), -32601, "{t}");
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn stateless_listen_stream_gets_tagged_change_notifications() {
    let gw = gateway().await;
    for t in TRANSPORTS {
        let c = gw.client(t).stateless();
        let body = c.request_body(
            "subscriptions/listen",
            json!({"notifications": {"toolsListChanged": true}}),
        );
        let listen_id = body["id"].clone();
        let resp = c
            .with_mirrored(c.post_builder(), &body)
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        let mut events = EventReader::new(resp);
        let ack = events.next().await.unwrap();
        assert_eq!(
            ack["method"], "notifications/subscriptions/acknowledged",
            "{t}: {ack}"
        );
        assert_eq!(
            ack["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"], listen_id,
            "{t}"
        );
        let trigger = c
            .call(
                "tools/call",
                json!({"name": "test_trigger_tool_change", "arguments": {}}),
            )
            .await;
        assert_eq!(trigger.status, 200);
        let change = events.next().await.unwrap();
        assert_eq!(
            change["method"], "notifications/tools/list_changed",
            "{t}: {change}"
        );
        assert_eq!(
            change["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"], listen_id,
            "{t}"
        );
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn concurrent_stateless_clients_on_a_shared_process_keep_their_own_ids() {
    let gw = gateway().await;
    let c = gw.client("stdio").stateless();
    let calls = (0..24).map(|i| {
        let c = c.clone();
        async move {
            // Every client uses the same id and progress token; the gateway keeps them apart.
            let mut body = c.request_body(
                "tools/call",
                json!({"name": "test_tool_with_progress",
                "arguments": {}, "_meta": {"progressToken": "same"}}),
            );
            body["id"] = json!(7);
            let a = Client::send(
                c.with_mirrored(c.post_builder(), &body)
                    .body(body.to_string()),
            )
            .await;
            (i, a)
        }
    });
    for (i, a) in futures_util::future::join_all(calls).await {
        assert_eq!(a.response()["id"], 7, "call {i}");
        let progress = a
            .messages
            .iter()
            .filter(|m| m["method"] == "notifications/progress")
            .count();
        assert_eq!(progress, 3, "call {i} got someone else's progress: {a:#?}");
        assert!(
            a.messages
                .iter()
                .filter(|m| m["method"] == "notifications/progress")
                .all(|p| p["params"]["progressToken"] == "same"),
            "call {i}: {a:#?}"
        );
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn unknown_methods_and_fields_pass_through() {
    let gw = gateway().await;
    for t in TRANSPORTS {
        let mut c = gw.client(t);
        c.initialize().await;
        // An extension method the gateway knows nothing of is relayed, not refused.
        let a = c
            .call("vendor/extension", json!({"anything": [1, {"deep": true}]}))
            .await;
        assert_eq!(a.status, 200, "{t}");
        assert_eq!(
            a.error_code(),
            -32601,
            "{t}: the upstream answers it: {a:#?}"
        );
        assert!(a.error_message().contains("vendor/extension"), "{t}");
        // Unknown request fields do not upset the relay.
        let body = json!({"jsonrpc": "2.0", "id": 99, "method": "tools/call", "x-extra": {"k": 1},
            "params": {"name": "test_simple_text", "arguments": {}, "x-param": true}});
        let a = c.post(&body).await;
        assert_eq!(a.response()["id"], 99, "{t}");
        assert!(a.response()["result"]["content"].is_array(), "{t}");
    }
    gw.shutdown().await;
}
