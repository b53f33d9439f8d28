//! Masking end to end: the demo server's customer record through a gateway with client and
//! audit rules, detectors and an upstream credential; what the client receives, what the log
//! stores, the masking report, `custody audit-hash` and `custody verify`.

mod common;

use std::process::Command;

use common::*;
use serde_json::{Value, json};
use tlog::entry::{Direction, Kind};

const CREDENTIAL: &str = "sk-live-upstream-credential-0001";

fn endpoint() -> String {
    format!(
        r#"[endpoints.demo.upstream]
transport = "stdio"
command = "{}"
args = ["demo-server"]
env = {{ DEMO_API_KEY = "{CREDENTIAL}" }}

[[endpoints.demo.mask_client]]
path = "$..email"
action = "partial"
keep = 4

# `$..name` would also match the tool name of every tools/call: be precise.
[[endpoints.demo.mask_audit]]
path = "$.result.structuredContent.name"
action = "hmac"

# Inside JSON text, the text's own value is the root.
[[endpoints.demo.mask_audit]]
path = "$.name"
action = "hmac"

[endpoints.demo]
detectors_client = ["github_token"]
"#,
        custody_bin()
    )
}

#[tokio::test]
async fn the_client_and_the_log_get_their_copies_and_the_log_still_verifies() {
    let gw = Gateway::start("", &endpoint()).await;
    let mut c = gw.client("demo");
    c.initialize().await;
    let a = c
        .call(
            "tools/call",
            json!({"name": "lookup_customer", "arguments": {"id": "c-42"}}),
        )
        .await;
    let result = &a.response()["result"];
    let record = &result["structuredContent"];
    assert_eq!(record["email"], "****.com", "{a:#?}");
    assert_eq!(
        record["api_token"], "[custody:github_token]",
        "client detectors: github only"
    );
    assert_eq!(
        record["card_number"], "4111 1111 1111 1111",
        "not a client detector here"
    );
    assert_eq!(
        record["name"], "Ada Lovelace",
        "audit rules leave the client copy alone"
    );
    let text: Value = serde_json::from_str(result["content"][0]["text"].as_str().unwrap()).unwrap();
    assert_eq!(text["email"], "****.com", "rules apply inside JSON text");
    assert_eq!(text["api_token"], "[custody:github_token]");

    // The client sends the credential and a password; the upstream gets them as sent (echo
    // proves it), neither the client's copy of the answer nor the log holds the credential.
    let echo = c
        .call(
            "tools/call",
            json!({"name": "echo", "arguments": {"text": format!("key {CREDENTIAL} password=hunter22")}}),
        )
        .await;
    let echoed = echo.response()["result"]["content"][0]["text"]
        .as_str()
        .unwrap();
    assert_eq!(
        echoed, "key [custody:credential] password=hunter22",
        "{echo:#?}"
    );

    let receipt = a.response()["result"]["_meta"]["dev.custody/receipt"].clone();
    let dir = gw.shutdown().await;
    let log = entries(dir.path());
    let all: String = log
        .iter()
        .map(|e| format!("{} {}", String::from_utf8_lossy(&e.message), e.detail))
        .collect();
    for secret in [
        CREDENTIAL,
        "hunter22",
        "ghp_0123456789abcdefghijABCDEFGHIJ012345",
        "4111 1111 1111 1111",
        "ada@example.com",
        "Ada Lovelace",
    ] {
        assert!(!all.contains(secret), "{secret} is in the log");
    }

    let answer = log
        .iter()
        .find(|e| {
            e.kind == Kind::Response
                && e.direction == Direction::UpstreamToClient
                && String::from_utf8_lossy(&e.message).contains("structuredContent")
        })
        .unwrap();
    assert_eq!(
        answer.index,
        receipt["response"]["index"].as_u64().unwrap(),
        "the receipt names the audit copy"
    );
    let stored: Value = serde_json::from_slice(&answer.message).unwrap();
    let srecord = &stored["result"]["structuredContent"];
    assert_eq!(srecord["email"], "****.com");
    assert_eq!(
        srecord["card_number"], "[custody:card_number]",
        "audit detectors are on by default"
    );
    let name_tag = srecord["name"].as_str().unwrap().to_string();
    assert!(name_tag.starts_with("hmac-sha256:"), "{name_tag}");
    let detail: Value = serde_json::from_str(&answer.detail).unwrap();
    let report: Vec<(String, String)> = detail["mask"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["path"].as_str().unwrap().into(),
                m["by"].as_str().unwrap().into(),
            )
        })
        .collect();
    for want in [
        ("/result/structuredContent/email", "rule $..email"),
        (
            "/result/structuredContent/api_token",
            "detector github_token",
        ),
        (
            "/result/structuredContent/name",
            "rule $.result.structuredContent.name",
        ),
        ("/result/content/0/text/(json)/name", "rule $.name"),
        (
            "/result/structuredContent/card_number",
            "detector card_number",
        ),
        ("/result/content/0/text/(json)/email", "rule $..email"),
    ] {
        assert!(
            report.contains(&(want.0.into(), want.1.into())),
            "{want:?} not in {report:?}"
        );
    }
    let request = log
        .iter()
        .find(|e| e.kind == Kind::Request && e.target == "echo")
        .unwrap_or_else(|| {
            let seen: Vec<_> = log
                .iter()
                .map(|e| (e.kind, e.method.to_string(), e.target.to_string()))
                .collect();
            panic!("no echo request in {seen:?}")
        });
    let stored_request = String::from_utf8_lossy(&request.message);
    assert!(
        stored_request.contains("[custody:credential]")
            && stored_request.contains("[custody:password_pair]"),
        "{stored_request}"
    );

    // An auditor with the masking key can check a value without the log holding it.
    let config = dir.path().join("custody.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\ndata_dir = \"{}\"\n[auth]\nanonymous = true\n{}",
            dir.path().display(),
            endpoint()
        ),
    )
    .unwrap();
    let out = Command::new(custody_bin())
        .args(["audit-hash", "--config"])
        .arg(&config)
        .arg("Ada Lovelace")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), name_tag);

    assert_log_verifies(dir.path());
}

#[tokio::test]
async fn bad_rules_stop_the_gateway_with_their_location() {
    for (rule, key, says) in [
        (
            "[[endpoints.demo.mask_client]]\npath = \"$..[\"\n",
            "endpoints.demo.mask_client.0.path",
            "not an RFC 9535 JSONPath",
        ),
        (
            "[[endpoints.demo.mask_audit]]\npath = \"$..x\"\naction = \"shred\"\n",
            "endpoints.demo.mask_audit.0.action",
            "not a masking action",
        ),
        (
            "[[endpoints.demo.mask_audit]]\npath = \"$..x\"\nkeep = 2\n",
            "endpoints.demo.mask_audit.0.keep",
            "only applies to action = \"partial\"",
        ),
        (
            "[endpoints.demo]\ndetectors_audit = [\"jwt\", \"ssn\"]\n",
            "endpoints.demo.detectors_audit.1",
            "\"ssn\" is not a detector",
        ),
    ] {
        let text = format!(
            "[auth]\nanonymous = true\n[endpoints.demo.upstream]\ntransport = \"stdio\"\ncommand = \"x\"\n{rule}"
        );
        let e = custody::config::Config::parse(&text, "custody.toml").unwrap_err();
        assert_eq!(e.key.as_deref(), Some(key), "{e}");
        assert!(e.to_string().contains(says), "{e}");
        assert!(e.to_string().starts_with("custody.toml:"), "{e}");
    }
}

/// An HTTP upstream whose answers carry headers: a debug token, a request id, and the API key
/// the gateway sent it, echoed back.
async fn chatty_upstream() -> String {
    let app = axum::Router::new().route(
        "/mcp",
        axum::routing::post(|headers: axum::http::HeaderMap, body: String| async move {
            let req: Value = serde_json::from_str(&body).unwrap();
            let reply = json!({"jsonrpc": "2.0", "id": req["id"], "result": {"tools": []}});
            let mut resp = axum::response::Response::new(axum::body::Body::from(reply.to_string()));
            let h = resp.headers_mut();
            h.insert("content-type", "application/json".parse().unwrap());
            h.insert("x-debug-token", "internal-debug-123".parse().unwrap());
            h.insert("x-request-id", "req-1".parse().unwrap());
            if let Some(key) = headers.get("x-api-key") {
                h.insert("x-echo-key", key.clone());
            }
            resp
        }),
    );
    serve_router(app).await
}

#[tokio::test]
async fn upstream_response_headers_are_recorded_masked_and_never_relayed() {
    let url = chatty_upstream().await;
    let gw = Gateway::start(
        "",
        &format!(
            "{}\n[[endpoints.up.mask_client]]\nheader = \"X-Debug-Token\"\n",
            http_upstream(
                "up",
                &url,
                &format!("headers = {{ \"X-Api-Key\" = \"{CREDENTIAL}\" }}")
            )
        ),
    )
    .await;
    let a = gw
        .client("up")
        .stateless()
        .call("tools/list", json!({}))
        .await;
    assert_eq!(a.status, 200, "{a:#?}");
    for relayed in ["x-debug-token", "x-request-id", "x-echo-key"] {
        assert!(a.header(relayed).is_none(), "{relayed} reached the client");
    }
    let dir = gw.shutdown().await;
    let log = entries(dir.path());
    let answer = log
        .iter()
        .find(|e| e.kind == Kind::Response && e.direction == Direction::UpstreamToClient)
        .unwrap();
    let detail: Value = serde_json::from_str(&answer.detail).unwrap();
    let recorded = &detail["upstream_headers"];
    assert_eq!(recorded["x-debug-token"], "[masked]", "{detail}");
    assert_eq!(recorded["x-request-id"], "req-1");
    assert_eq!(recorded["x-echo-key"], "[custody:credential]");
    assert!(recorded.get("content-type").is_none() && recorded.get("content-length").is_none());
    let report = detail["mask"].to_string();
    assert!(
        report.contains("header rule x-debug-token")
            && report.contains("/upstream_headers/x-echo-key"),
        "{report}"
    );
    assert!(!answer.detail.contains("internal-debug-123") && !answer.detail.contains(CREDENTIAL));
}

#[test]
fn a_rule_names_a_path_or_a_header() {
    for (rule, says) in [
        ("path = \"$..x\"\nheader = \"x-y\"\n", "not both or neither"),
        ("action = \"redact\"\n", "not both or neither"),
        ("header = \"bad header\"\n", "is not a header name"),
    ] {
        let text = format!(
            "[auth]\nanonymous = true\n[endpoints.demo.upstream]\ntransport = \"stdio\"\ncommand = \"x\"\n[[endpoints.demo.mask_client]]\n{rule}"
        );
        let e = custody::config::Config::parse(&text, "custody.toml").unwrap_err();
        assert!(e.to_string().contains(says), "{e}");
    }
}
