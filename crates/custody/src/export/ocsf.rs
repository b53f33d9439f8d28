//! Calls as OCSF API Activity events (class 6003, schema 1.5.0), for a SIEM.
//!
//! One event per call: an answer (`response` or `error`, client-bound) paired with the request
//! it answers, a refusal (`rejected`) or a failed authentication (`auth_failure`). The event's
//! evidence link is the entry's index, leaf hash and the log's origin: whoever receives the
//! event can ask for the entry's inclusion proof and check it against a checkpoint.

use serde_json::{Map, Value, json};
use tlog::entry::{Direction, Entry, Kind};

/// The OCSF schema version the events follow.
pub const SCHEMA_VERSION: &str = "1.5.0";
/// API Activity.
pub const CLASS_UID: u64 = 6003;
/// Application Activity.
pub const CATEGORY_UID: u64 = 6;

/// Whether entry `e` becomes an event (an answer to a client, a refusal, an auth failure).
pub fn is_event(e: &Entry<'_>) -> bool {
    match e.kind {
        Kind::Response | Kind::Error => {
            e.direction != Direction::ClientToUpstream && e.request.is_some()
        }
        Kind::Rejected | Kind::AuthFailure => true,
        _ => false,
    }
}

/// API Activity's `activity_id` for an MCP method: reads are Read (2), everything else Other.
fn activity(method: &str) -> (u64, &'static str) {
    let read = method.ends_with("/list")
        || matches!(method, "resources/read" | "prompts/get" | "server/discover");
    if read { (2, "Read") } else { (99, "Other") }
}

fn parse(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or(Value::Null)
}

/// The event for entry `e` (leaf hash `leaf`) of the log `origin`; `request` is the entry it
/// answers, when it is an answer.
pub fn event(
    e: &Entry<'_>,
    leaf: &str,
    origin: &str,
    request: Option<&Entry<'_>>,
    product_version: &str,
) -> Value {
    let caller = parse(&e.caller);
    let detail = parse(&e.detail);
    let first = request.unwrap_or(e);
    let method = if first.method.is_empty() {
        e.method.to_string()
    } else {
        first.method.to_string()
    };
    let (activity_id, activity_name) = if method.is_empty() {
        (99, "Other")
    } else {
        activity(&method)
    };
    let failed = matches!(e.kind, Kind::Error | Kind::Rejected | Kind::AuthFailure);
    let time_ms = e.time_ns / 1_000_000;
    let start_ms = first.time_ns / 1_000_000;

    let mut user = Map::new();
    if let Some(name) = caller.get("name").and_then(Value::as_str) {
        user.insert("name".into(), json!(name));
    }
    if let Some(sub) = caller.get("subject").and_then(Value::as_str) {
        user.insert("uid".into(), json!(sub));
    }
    if let Some(iss) = caller.get("issuer").and_then(Value::as_str) {
        user.insert("domain".into(), json!(iss));
    }
    let kind = caller.get("kind").and_then(Value::as_str).unwrap_or("");
    user.insert(
        "type_id".into(),
        json!(match kind {
            "gateway" => 3,
            "anonymous" => 0,
            _ => 99,
        }),
    );
    if user.get("name").is_none() {
        user.insert(
            "name".into(),
            json!(if kind.is_empty() { "unknown" } else { kind }),
        );
    }
    let mut actor = json!({ "user": user, "app_name": "custody" });
    // The decision is recorded with the request; a refusal carries its own.
    let request_detail = request.map(|r| parse(&r.detail)).unwrap_or(Value::Null);
    if let Some(policy) = detail
        .get("policy")
        .or_else(|| request_detail.get("policy"))
    {
        let decision = policy
            .get("decision")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let ids = policy.get("policies").cloned().unwrap_or(Value::Null);
        actor["authorizations"] = json!([{ "decision": decision, "policy": { "uid": ids.to_string(), "name": "cedar" } }]);
    }

    let mut api = json!({
        "operation": if method.is_empty() { e.kind.name().to_string() } else { method.clone() },
        "service": { "name": e.endpoint.to_string() },
        "version": "mcp",
    });
    let id = if first.id.is_empty() {
        &e.id
    } else {
        &first.id
    };
    if !id.is_empty() {
        api["request"] = json!({ "uid": id.to_string() });
    }
    if failed {
        let error = detail.get("error").cloned().unwrap_or(Value::Null);
        let mut response = Map::new();
        if let Some(code) = error.get("code").and_then(Value::as_i64) {
            response.insert("code".into(), json!(code));
        }
        if let Some(m) = error.get("message").and_then(Value::as_str) {
            response.insert("error_message".into(), json!(m));
        } else if let Some(r) = detail.get("reason").and_then(Value::as_str) {
            response.insert("error_message".into(), json!(r));
        }
        if !response.is_empty() {
            api["response"] = Value::Object(response);
        }
    }

    let mut src = Map::new();
    if !e.session.is_empty() {
        src.insert("uid".into(), json!(e.session.to_string()));
    }
    if let Some(addr) = detail.get("address").and_then(Value::as_str) {
        src.insert("name".into(), json!(addr));
    }
    src.insert("svc_name".into(), json!("mcp-client"));

    let mut unmapped = Map::new();
    if let Some(claims) = caller.get("claims") {
        unmapped.insert("ci_claims".into(), claims.clone());
    }
    unmapped.insert("entry_kind".into(), json!(e.kind.name()));
    if let Some(r) = e.request {
        unmapped.insert("request_index".into(), json!(r));
    }
    if let Some(mask) = detail.get("mask") {
        unmapped.insert("mask".into(), mask.clone());
    }
    if let Some(count) = detail.get("count") {
        unmapped.insert("count".into(), count.clone());
    }

    let mut ev = json!({
        "class_uid": CLASS_UID,
        "class_name": "API Activity",
        "category_uid": CATEGORY_UID,
        "category_name": "Application Activity",
        "activity_id": activity_id,
        "activity_name": activity_name,
        "type_uid": CLASS_UID * 100 + activity_id,
        "time": time_ms,
        "severity_id": if failed { 3 } else { 1 },
        "status_id": if failed { 2 } else { 1 },
        "status": if failed { "Failure" } else { "Success" },
        "actor": actor,
        "api": api,
        "src_endpoint": src,
        "dst_endpoint": { "svc_name": e.endpoint.to_string() },
        "metadata": {
            "version": SCHEMA_VERSION,
            "product": { "name": "custody", "vendor_name": "custody", "version": product_version },
            "log_name": origin,
            "sequence": e.index,
            "uid": leaf,
            "correlation_uid": format!("{origin}/{}", e.index),
        },
        "unmapped": unmapped,
    });
    if !first.target.is_empty() {
        ev["resources"] = json!([{ "name": first.target.to_string(), "type": "mcp-target" }]);
    }
    if request.is_some() {
        ev["start_time"] = json!(start_ms);
        ev["end_time"] = json!(time_ms);
        ev["duration"] = json!(time_ms.saturating_sub(start_ms));
    }
    ev
}
