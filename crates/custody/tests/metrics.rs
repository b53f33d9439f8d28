//! `/metrics` end to end (issue 19): real calls through a gateway, then what a scrape says
//! about them (requests, refusals, policy, tools, masks, limits, the log, export sinks); the
//! token `[metrics] token` names; tool labels bounded to what an upstream announced; the
//! listener of its own. Readiness is in `health.rs`.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};

fn simple_text() -> Value {
    json!({"name": "test_simple_text", "arguments": {}})
}

#[tokio::test]
async fn a_call_is_counted_by_endpoint_method_and_outcome_and_the_log_by_its_appends() {
    let gw = Gateway::start("", &stdio_fixture("f", "")).await;
    let before = scrape(gw.addr).await;
    let requests = |text: &str| {
        sample(
            text,
            "custody_requests_total",
            &[
                ("endpoint", "f"),
                ("method", "tools/call"),
                ("outcome", "ok"),
            ],
        )
    };
    assert_eq!(requests(&before), None, "no series before the first call");
    let committed = |text: &str| {
        sample(
            text,
            "custody_audit_appends_total",
            &[("outcome", "committed")],
        )
        .unwrap()
    };
    let c = gw.client("f").stateless();
    let a = c.call("tools/call", simple_text()).await;
    assert!(a.response()["result"].is_object(), "{:?}", a.response());
    let after = scrape(gw.addr).await;
    if let Ok(dump) = std::env::var("CUSTODY_DUMP_SCRAPE") {
        std::fs::write(dump, &after).unwrap();
    }
    assert_eq!(requests(&after), Some(1.0), "{after}");
    let count = sample(
        &after,
        "custody_request_duration_seconds_count",
        &[
            ("endpoint", "f"),
            ("method", "tools/call"),
            ("outcome", "ok"),
        ],
    );
    assert_eq!(count, Some(1.0));
    // The request and its answer, at least, are in the log now.
    assert!(committed(&after) >= committed(&before) + 2.0, "{after}");
    let entries = sample(&after, "custody_audit_log_entries", &[]).unwrap();
    assert!(
        entries >= 3.0,
        "started, the request, its answer: {entries}"
    );
    assert!(sample(&after, "custody_audit_log_bytes", &[]).unwrap() > 0.0);
    assert!(sample(&after, "custody_audit_checkpoint_age_seconds", &[]).unwrap() < 60.0);
    let answered = sample(
        &after,
        "custody_upstream_duration_seconds_count",
        &[("endpoint", "f"), ("outcome", "answered")],
    );
    assert_eq!(answered, Some(1.0), "{after}");
    assert_eq!(
        sample(&after, "custody_sessions", &[("endpoint", "f")]),
        Some(0.0)
    );
    assert!(sample(&after, "custody_upstream_processes", &[("endpoint", "f")]).unwrap() >= 1.0);
    assert_eq!(sample(&after, "custody_approvals_pending", &[]), Some(0.0));
    // A scraper reaches the gateway by its pod's address: /metrics does not check Host.
    let r = reqwest::Client::new()
        .get(format!("http://{}/metrics", gw.addr))
        .header("host", "10.1.2.3:8080")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Whereas an MCP request with that Host is refused, and counted as such.
    let refused = c
        .post_builder()
        .header("host", "10.1.2.3:8080")
        .json(&c.request_body("tools/call", simple_text()))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    let text = scrape(gw.addr).await;
    let forbidden = sample(
        &text,
        "custody_requests_total",
        &[
            ("endpoint", "f"),
            ("method", "unknown"),
            ("outcome", "forbidden"),
        ],
    );
    assert_eq!(forbidden, Some(1.0), "{text}");
    gw.shutdown().await;
}

#[tokio::test]
async fn refused_credentials_are_counted_by_reason() {
    let token = "metrics-test-static-token-0001";
    let auth = format!(
        "[auth]\n[[auth.static]]\nname = \"ci\"\nsha256 = \"{}\"\n",
        hex::encode(custody::identity::token_hash(token))
    );
    let gw = Gateway::start("", &format!("{auth}{}", stdio_fixture("f", ""))).await;
    let none = gw.client("f").stateless();
    assert_eq!(none.call("tools/call", simple_text()).await.status, 401);
    let wrong = gw.client("f").stateless().with_token("not-the-token");
    assert_eq!(wrong.call("tools/call", simple_text()).await.status, 401);
    assert_eq!(wrong.call("tools/call", simple_text()).await.status, 401);
    let right = gw.client("f").stateless().with_token(token);
    assert_eq!(right.call("tools/call", simple_text()).await.status, 200);
    let text = scrape(gw.addr).await;
    let failures = |reason| {
        sample(
            &text,
            "custody_auth_failures_total",
            &[("endpoint", "f"), ("reason", reason)],
        )
    };
    assert_eq!(failures("no_token"), Some(1.0), "{text}");
    assert_eq!(failures("malformed"), Some(2.0), "{text}");
    let unauthorized = sample(
        &text,
        "custody_requests_total",
        &[
            ("endpoint", "f"),
            ("method", "unknown"),
            ("outcome", "unauthorized"),
        ],
    );
    assert_eq!(unauthorized, Some(3.0), "{text}");
    gw.shutdown().await;
}

#[tokio::test]
async fn policy_decisions_and_denials_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("p.cedar");
    std::fs::write(
        &policy,
        r#"@id("list") permit(principal, action in [Action::"other", Action::"list"], resource);
@id("simple") permit(principal, action == Action::"tools/call", resource)
when { resource.name == "test_simple_text" };
"#,
    )
    .unwrap();
    let endpoints = format!(
        "[policy]\nfiles = [\"{}\"]\n{}",
        policy.display(),
        stdio_fixture("f", "")
    );
    let gw = Gateway::start("", &endpoints).await;
    let c = gw.client("f").stateless();
    assert!(c.call("tools/call", simple_text()).await.response()["result"].is_object());
    let denied = c
        .call(
            "tools/call",
            json!({"name": "test_image_content", "arguments": {}}),
        )
        .await;
    assert_eq!(
        denied.response()["error"]["code"],
        -32030,
        "{:?}",
        denied.response()
    );
    let text = scrape(gw.addr).await;
    let decisions = |d| {
        sample(
            &text,
            "custody_policy_decisions_total",
            &[("endpoint", "f"), ("decision", d)],
        )
    };
    assert_eq!(decisions("allow"), Some(1.0), "{text}");
    assert_eq!(decisions("deny"), Some(1.0), "{text}");
    let outcome = |o| {
        sample(
            &text,
            "custody_requests_total",
            &[("endpoint", "f"), ("method", "tools/call"), ("outcome", o)],
        )
    };
    assert_eq!(outcome("ok"), Some(1.0));
    assert_eq!(outcome("denied"), Some(1.0), "{text}");
    gw.shutdown().await;
}

#[tokio::test]
async fn tool_labels_name_only_tools_the_upstream_announced() {
    let gw = Gateway::start("", &stdio_fixture("f", "")).await;
    let c = gw.client("f").stateless();
    // Before tools/list, no tool name is known: even a real tool counts as other.
    c.call("tools/call", simple_text()).await;
    c.call("tools/list", json!({})).await;
    c.call("tools/call", simple_text()).await;
    // A name the client made up stays "other", whatever it calls.
    let made_up = c
        .call(
            "tools/call",
            json!({"name": "made_up_tool_4711", "arguments": {}}),
        )
        .await;
    assert!(
        made_up.response().get("error").is_some()
            || made_up.response()["result"]["isError"] == true
    );
    let text = scrape(gw.addr).await;
    let tool = |name, outcome| {
        sample(
            &text,
            "custody_tool_calls_total",
            &[("endpoint", "f"), ("tool", name), ("outcome", outcome)],
        )
    };
    assert_eq!(tool("test_simple_text", "ok"), Some(1.0), "{text}");
    assert_eq!(tool("other", "ok"), Some(2.0), "{text}");
    assert!(!text.contains("made_up_tool_4711"), "{text}");
    gw.shutdown().await;
}

#[tokio::test]
async fn the_metrics_token_is_required_when_configured() {
    let dir = tempfile::tempdir().unwrap();
    let token = "0123456789abcdef0123456789abcdef";
    let file = dir.path().join("metrics-token");
    std::fs::write(&file, format!("{token}\n")).unwrap();
    let gw = Gateway::start(
        "",
        &format!(
            "[metrics]\ntoken = \"${{file:{}}}\"\n{}",
            file.display(),
            stdio_fixture("f", "")
        ),
    )
    .await;
    let url = format!("http://{}/metrics", gw.addr);
    let http = reqwest::Client::new();
    let r = http.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers().contains_key("www-authenticate"));
    let r = http
        .get(&url)
        .bearer_auth("0123456789abcdef0123456789abcdeX")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("not the one"),
        "{body}"
    );
    let r = http.get(&url).bearer_auth(token).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("custody_build_info"));
    // Probes need no token.
    let r = http
        .get(format!("http://{}/readyz", gw.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    gw.shutdown().await;
}

#[test]
fn a_metrics_token_must_be_a_long_enough_reference() {
    let dir = tempfile::tempdir().unwrap();
    let parse = |metrics: &str| {
        let text = format!(
            "[server]\ndata_dir = \"{}\"\n[auth]\nanonymous = true\n{metrics}\n[endpoints.f.upstream]\ntransport = \"http\"\nurl = \"http://127.0.0.1:1/mcp\"\n",
            dir.path().display()
        );
        custody::config::Config::parse(&text, "t.toml")
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    let literal = parse("[metrics]\ntoken = \"0123456789abcdef0123\"").unwrap_err();
    assert!(
        literal.contains("metrics.token") && literal.contains("by reference"),
        "{literal}"
    );
    let short = dir.path().join("short");
    std::fs::write(&short, "abc").unwrap();
    let e = parse(&format!(
        "[metrics]\ntoken = \"${{file:{}}}\"",
        short.display()
    ))
    .unwrap_err();
    assert!(e.contains("shorter than 16"), "{e}");
    assert!(!e.contains("abc"), "the token is never quoted: {e}");
    let e = parse("[metrics]\nlisten = \"nine\"").unwrap_err();
    assert!(
        e.contains("metrics.listen") && e.contains("not an address"),
        "{e}"
    );
    let e = parse("[metrics]\nport = 9464").unwrap_err();
    assert!(e.contains("unknown field") && e.contains("port"), "{e}");
}

#[tokio::test]
async fn metrics_on_a_listener_of_their_own_and_off_the_main_one() {
    let gw = Gateway::start(
        "",
        &format!(
            "[metrics]\nlisten = \"127.0.0.1:0\"\n{}",
            stdio_fixture("f", "")
        ),
    )
    .await;
    let ops = gw
        .running
        .as_ref()
        .unwrap()
        .metrics_addr
        .expect("its own listener");
    assert_ne!(ops, gw.addr);
    let main = reqwest::get(format!("http://{}/metrics", gw.addr))
        .await
        .unwrap();
    assert_eq!(main.status(), 404, "not on the main listener");
    assert!(
        scrape(ops)
            .await
            .contains("# TYPE custody_requests_total counter")
    );
    for at in [ops, gw.addr] {
        assert_eq!(
            reqwest::get(format!("http://{at}/readyz"))
                .await
                .unwrap()
                .status(),
            200
        );
        assert_eq!(
            reqwest::get(format!("http://{at}/healthz"))
                .await
                .unwrap()
                .status(),
            200
        );
    }
    gw.shutdown().await;
    assert!(
        reqwest::get(format!("http://{ops}/healthz")).await.is_err(),
        "closed once the gateway stopped"
    );
}

#[tokio::test]
async fn metrics_can_be_turned_off() {
    let gw = Gateway::start(
        "",
        &format!("[metrics]\nenabled = false\n{}", stdio_fixture("f", "")),
    )
    .await;
    let r = reqwest::get(format!("http://{}/metrics", gw.addr))
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(
        reqwest::get(format!("http://{}/readyz", gw.addr))
            .await
            .unwrap()
            .status(),
        200
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn export_sinks_report_their_lag_and_failures() {
    let dir = tempfile::tempdir().unwrap();
    // One sink that delivers (a file), one that cannot (nothing listens at its URL).
    let down = closed_port().await;
    let gw = Gateway::start(
        "",
        &format!(
            "[[export]]\nname = \"file\"\nfile = \"{}\"\n[[export]]\nname = \"down\"\nurl = \"{down}\"\n{}",
            dir.path().join("events.jsonl").display(),
            stdio_fixture("f", "")
        ),
    )
    .await;
    let c = gw.client("f").stateless();
    c.call("tools/call", simple_text()).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let text = loop {
        let text = scrape(gw.addr).await;
        let lag = |sink| sample(&text, "custody_export_lag_entries", &[("sink", sink)]).unwrap();
        let failing = sample(&text, "custody_export_failing", &[("sink", "down")]).unwrap();
        if lag("file") == 0.0 && failing == 1.0 && lag("down") >= 1.0 {
            break text;
        }
        assert!(std::time::Instant::now() < deadline, "{text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        sample(&text, "custody_export_failing", &[("sink", "file")]),
        Some(0.0)
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn masks_are_counted_by_endpoint_kind_and_rule() {
    // The fixture's simple text answer, redacted in the log by a path rule; arguments that
    // carry a GitHub token, redacted by a detector.
    let gw = Gateway::start(
        "",
        &format!(
            "{}[[endpoints.f.mask_audit]]\npath = \"$.result.content[0].text\"\naction = \"redact\"\n[endpoints.f]\ndetectors_audit = [\"github_token\"]\n",
            stdio_fixture("f", "")
        ),
    )
    .await;
    let c = gw.client("f").stateless();
    c.call("tools/call", simple_text()).await;
    c.call(
        "tools/call",
        json!({"name": "test_simple_text", "arguments": {"token": "ghp_0123456789abcdefghijklmnopqrstuvwxyzAB"}}),
    )
    .await;
    let text = scrape(gw.addr).await;
    let rule = sample(
        &text,
        "custody_masks_total",
        &[
            ("endpoint", "f"),
            ("kind", "rule"),
            ("rule", "$.result.content[0].text"),
        ],
    );
    assert_eq!(rule, Some(2.0), "{text}");
    let detector = sample(
        &text,
        "custody_masks_total",
        &[
            ("endpoint", "f"),
            ("kind", "detector"),
            ("rule", "github_token"),
        ],
    );
    assert_eq!(detector, Some(1.0), "{text}");
    gw.shutdown().await;
}

#[tokio::test]
async fn rate_limit_refusals_are_counted_by_limit() {
    let gw = Gateway::start(
        "",
        &format!(
            "[limits]\nprincipal_requests_per_second = 1\nprincipal_request_burst = 1\n{}",
            stdio_fixture("f", "")
        ),
    )
    .await;
    let c = gw.client("f").stateless();
    let mut limited = 0;
    for _ in 0..4 {
        if c.call("tools/call", simple_text()).await.status == 429 {
            limited += 1;
        }
    }
    assert!(limited >= 2, "{limited}");
    let text = scrape(gw.addr).await;
    let refusals = sample(
        &text,
        "custody_limit_refusals_total",
        &[
            ("endpoint", "f"),
            ("limit", "principal.requests_per_second"),
        ],
    );
    assert_eq!(refusals, Some(f64::from(limited)), "{text}");
    let answered = sample(
        &text,
        "custody_requests_total",
        &[
            ("endpoint", "f"),
            ("method", "unknown"),
            ("outcome", "limited"),
        ],
    );
    assert_eq!(answered, Some(f64::from(limited)), "{text}");
    gw.shutdown().await;
}
