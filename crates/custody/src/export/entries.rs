//! Entries as JSON, as `custody log` prints them and the `entries` export format streams them:
//! text fields that hold JSON embedded as JSON, a version-2 entry's payloads put back where a
//! version-1 entry holds them, and its commitments listed.

use serde_json::{Value, json};
use tlog::Entry;

/// One entry as JSON: text fields that hold JSON are embedded as JSON; a message that is not
/// JSON is given as a string.
pub fn to_json(e: &Entry<'_>, leaf: &str) -> Value {
    let embed = |s: &str| serde_json::from_str::<Value>(s).unwrap_or_else(|_| json!(s));
    let message = if e.message.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice::<Value>(&e.message)
            .unwrap_or_else(|_| json!(String::from_utf8_lossy(&e.message)))
    };
    let opt = |s: &str| if s.is_empty() { Value::Null } else { json!(s) };
    json!({
        "index": e.index,
        "leaf": leaf,
        "kind": e.kind.name(),
        "direction": e.direction.name(),
        "time_ns": e.time_ns,
        "endpoint": opt(&e.endpoint),
        "session": opt(&e.session),
        "id": if e.id.is_empty() { Value::Null } else { embed(&e.id) },
        "method": opt(&e.method),
        "target": opt(&e.target),
        "caller": embed(&e.caller),
        "request": e.request,
        "detail": embed(&e.detail),
        "message": message,
    })
}

/// A version-2 entry's payloads put where a version-1 entry holds them (the message, the
/// upstream's headers in the detail), and its commitments listed; an erased payload is shown
/// as erased.
pub fn with_payloads(json: &mut Value, e: &Entry<'_>, payloads: &[crate::store::StoredPayload]) {
    if e.version == tlog::entry::V1 {
        return;
    }
    let as_json = |b: &[u8]| {
        serde_json::from_slice::<Value>(b).unwrap_or_else(|_| json!(String::from_utf8_lossy(b)))
    };
    let mut commitments = Vec::new();
    for c in &e.commitments {
        let stored = payloads.iter().find(|(slot, ..)| *slot == c.slot);
        commitments.push(json!({
            "slot": c.slot,
            "length": c.length,
            "hash": c.hash.to_hex(),
            "erased": stored.is_none(),
        }));
        let Some((_, _, data)) = stored else { continue };
        match c.slot {
            tlog::payload::MESSAGE => json["message"] = as_json(data),
            tlog::payload::HEADERS => {
                if let Some(d) = json["detail"].as_object_mut() {
                    d.insert("upstream_headers".into(), as_json(data));
                }
            }
            _ => {}
        }
    }
    json["version"] = json!(e.version);
    json["commitments"] = Value::Array(commitments);
}
