//! The masker's copies: what each rule set masks, in which copy, and what it never touches.

use super::*;

fn rule(path: &str, action: Action) -> PathRule {
    PathRule {
        source: path.into(),
        path: JsonPath::parse(path).unwrap(),
        action,
    }
}

fn masker() -> Masker {
    Masker {
        client: RuleSet {
            paths: vec![
                rule("$..password", Action::Redact),
                rule(
                    "$.result.structuredContent.rows[*].email",
                    Action::Partial(4),
                ),
            ],
            headers: vec![("x-debug-token".into(), Action::Redact)],
            detectors: [false; 8],
        },
        audit: RuleSet {
            paths: vec![rule("$..customer_id", Action::Hmac)],
            headers: Vec::new(),
            detectors: [true; 8],
        },
        credentials: vec!["upstream-api-key-123".to_string()].into(),
        key: Some(std::sync::Arc::new(MaskKey::from_secret([7; 32]))),
        metrics: None,
    }
}

#[test]
fn client_and_audit_copies_mask_what_their_sets_say() {
    let m = masker();
    let msg = json!({"jsonrpc": "2.0", "id": 1, "result": {
        "structuredContent": {"rows": [{"email": "ada@example.com", "customer_id": "c-42"}]},
        "content": [{"type": "text", "text": "{\"password\":\"pw1\",\"note\":\"AKIAIOSFODNN7EXAMPLE\"}"}],
        "debug": "called with upstream-api-key-123",
    }});
    let c = m.copies(&msg);
    let client = c.client.unwrap();
    let audit = c.audit.unwrap();
    let rows = &client["result"]["structuredContent"]["rows"][0];
    assert_eq!(rows["email"], "****.com");
    assert_eq!(
        rows["customer_id"], "c-42",
        "the audit set does not touch the client copy"
    );
    let text: Value =
        serde_json::from_str(client["result"]["content"][0]["text"].as_str().unwrap()).unwrap();
    assert_eq!(text["password"], REDACTED);
    assert_eq!(
        text["note"], "AKIAIOSFODNN7EXAMPLE",
        "detectors are off for the client here"
    );
    assert_eq!(
        client["result"]["debug"],
        "called with [custody:credential]"
    );

    let arow = &audit["result"]["structuredContent"]["rows"][0];
    assert_eq!(
        arow["email"], "****.com",
        "the audit copy includes the client set"
    );
    assert_eq!(arow["customer_id"], m.key.as_ref().unwrap().tag("c-42"));
    let atext: Value =
        serde_json::from_str(audit["result"]["content"][0]["text"].as_str().unwrap()).unwrap();
    assert_eq!(atext["note"], "[custody:aws_access_key]");
    let paths: Vec<(&str, &str)> = c
        .marks
        .iter()
        .map(|m| (m.path.as_str(), m.by.as_str()))
        .collect();
    assert!(
        paths.contains(&("/result/content/0/text/(json)/password", "rule $..password")),
        "{paths:?}"
    );
    assert!(
        paths.contains(&("/result/debug", "credential")),
        "{paths:?}"
    );
    assert!(
        paths.contains(&(
            "/result/content/0/text/(json)/note",
            "detector aws_access_key"
        )),
        "{paths:?}"
    );
    assert!(
        !report(&c.marks).to_string().contains("c-42"),
        "reports hold no values"
    );
}

#[test]
fn nothing_to_mask_leaves_no_copies() {
    let c = masker().copies(&json!({"jsonrpc": "2.0", "id": 1, "result": {"ok": true}}));
    assert!(c.client.is_none() && c.audit.is_none() && c.marks.is_empty());
    let a = masker().audit_copy(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": "login", "arguments": {"password": "pw"}}}));
    let (v, marks) = a.unwrap();
    assert_eq!(v["params"]["arguments"]["password"], REDACTED);
    assert_eq!(marks.len(), 1);
}

#[test]
fn upstream_headers_get_header_rules_credentials_and_detectors() {
    let m = masker();
    let mut h = serde_json::Map::new();
    h.insert("x-debug-token".into(), json!("internal-123"));
    h.insert("x-request-id".into(), json!("req-9"));
    h.insert("x-echo".into(), json!("key=upstream-api-key-123"));
    h.insert("x-leak".into(), json!("AKIAIOSFODNN7EXAMPLE"));
    let marks = m.headers(&mut h);
    assert_eq!(h["x-debug-token"], REDACTED);
    assert_eq!(h["x-request-id"], "req-9");
    assert_eq!(h["x-echo"], "key=[custody:credential]");
    assert_eq!(h["x-leak"], "[custody:aws_access_key]");
    let by: Vec<&str> = marks.iter().map(|m| m.by.as_str()).collect();
    assert!(
        by.contains(&"header rule x-debug-token") && by.contains(&"credential"),
        "{by:?}"
    );
    assert!(
        marks
            .iter()
            .all(|m| m.path.starts_with("/upstream_headers/"))
    );
}

#[test]
fn the_json_rpc_envelope_is_never_masked() {
    let mut m = masker();
    m.client.paths.push(rule("$..id", Action::Hmac));
    m.client.paths.push(rule("$..method", Action::Redact));
    let msg = json!({"jsonrpc": "2.0", "id": 7, "result": {"id": "c-1", "method": "card"}});
    let c = m.copies(&msg);
    let client = c.client.unwrap();
    assert_eq!(client["id"], 7);
    assert_eq!(client["jsonrpc"], "2.0");
    assert_eq!(client["result"]["method"], REDACTED);
    assert!(
        client["result"]["id"]
            .as_str()
            .unwrap()
            .starts_with("hmac-sha256:")
    );
    let text = json!({"jsonrpc": "2.0", "id": 8, "result": {"content": [{"type": "text",
        "text": "{\"id\":\"c-2\"}"}]}});
    let inner = m.copies(&text).client.unwrap();
    assert!(
        inner["result"]["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("hmac-sha256:"),
        "inside JSON text, `id` is data"
    );
}

#[test]
fn partial_and_hmac_handle_short_and_non_string_values() {
    let m = masker();
    assert_eq!(m.act(Action::Partial(4), &json!("abc")), REDACTED);
    assert_eq!(m.act(Action::Partial(2), &json!(12345)), "****45");
    assert_eq!(
        m.act(Action::Hmac, &json!(7)),
        m.key.as_ref().unwrap().tag("7")
    );
    let keyless = Masker::default();
    assert_eq!(keyless.act(Action::Hmac, &json!("x")), REDACTED);
}
