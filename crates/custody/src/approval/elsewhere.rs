//! The approvals other replicas of a shared log hold, as this replica lists them: read from the
//! shared log (the `approval_requested` entry of each approval still pending there, and its
//! held request's masked message), never from the holder's memory. So a list shows the log's
//! masked arguments and no votes yet cast; a decision taken on it goes to the holder
//! ([`super::Remote`]), which checks everything again.

use serde_json::{Map, Value, json};
use tlog::Entry;

use crate::identity::{Principal, PrincipalKind};
use crate::store::{Location, LogReader, Reader};

/// The most approvals held elsewhere that one list reads.
pub const MAX: i64 = 500;

/// One approval another replica holds.
pub struct Held {
    pub id: String,
    pub holder: String,
    pub requester: Principal,
    pub endpoint: String,
    pub method: String,
    pub target: Option<String>,
    /// The held request's arguments as the log stores them (masked).
    pub arguments: Value,
    detail: Value,
    requested_ns: u64,
    request_entry: Option<u64>,
    /// How many masking rules changed the held request's message.
    masked: usize,
}

impl Held {
    /// The approval as the approvals API shows one (the log's masked copy of the arguments).
    pub fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "state": "pending",
            "requester": serde_json::from_str::<Value>(&self.requester.audit).unwrap_or(Value::Null),
            "endpoint": self.endpoint,
            "method": self.method,
            "target": self.target,
            "arguments": self.arguments,
            "arguments_view": "masked",
            "hidden_values": self.masked,
            "arguments_sha256": self.detail.get("arguments_sha256"),
            "requested_at": super::rfc3339(self.requested_ns),
            "expires_at": self.detail.get("expires_at"),
            "min_approvals": self.detail.get("min_approvals"),
            "policies": self.detail.get("policies"),
            "request_entry": self.request_entry,
            "votes": [],
            "reason": null,
            "held_by": self.holder,
        })
    }
}

/// The principal an entry's `caller` names (its audit form: what visibility and policy read).
fn principal_of(caller: &str) -> Option<Principal> {
    let v: Value = serde_json::from_str(caller).ok()?;
    let kind = match v.get("kind")?.as_str()? {
        "oidc" => PrincipalKind::Oidc,
        "static" => PrincipalKind::Static,
        _ => return None,
    };
    let text = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
    Some(Principal {
        kind,
        issuer: text("issuer"),
        subject: text("subject")?,
        name: text("name")?,
        claims: v
            .get("claims")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_else(Map::new),
        audit: caller.into(),
        // Nothing here is bound to it: a list only reads who asked.
        binding: "".into(),
    })
}

/// Reads approvals `found` (id, `approval_requested` entry, holder) from the log at
/// `location`. Blocking. An entry that is not what the table says is skipped.
///
/// # Errors
/// The log cannot be read.
pub fn read(location: &Location, found: Vec<(String, u64, String)>) -> Result<Vec<Held>, String> {
    let log = Reader::open(location).map_err(|e| e.to_string())?;
    let mut out = Vec::with_capacity(found.len());
    for (id, idx, holder) in found {
        let (_, bytes) = log.entry(idx).map_err(|e| e.to_string())?;
        let Ok(e) = Entry::decode(&bytes) else {
            continue;
        };
        let detail: Value = serde_json::from_str(&e.detail).unwrap_or(Value::Null);
        if e.kind.name() != "approval_requested"
            || detail.get("approval").and_then(Value::as_str) != Some(id.as_str())
        {
            continue;
        }
        let Some(requester) = principal_of(&e.caller) else {
            continue;
        };
        let (arguments, masked) = match e.request {
            Some(r) => request_arguments(&log, r)?,
            None => (json!({}), 0),
        };
        out.push(Held {
            id,
            holder,
            requester,
            endpoint: e.endpoint.to_string(),
            method: e.method.to_string(),
            target: (!e.target.is_empty()).then(|| e.target.to_string()),
            arguments,
            detail,
            requested_ns: e.time_ns,
            request_entry: e.request,
            masked,
        });
    }
    Ok(out)
}

/// The arguments of request entry `idx` as stored (masked), and how many masking rules it
/// names.
fn request_arguments(log: &Reader, idx: u64) -> Result<(Value, usize), String> {
    let (_, bytes) = log.entry(idx).map_err(|e| e.to_string())?;
    let Ok(e) = Entry::decode(&bytes) else {
        return Ok((json!({}), 0));
    };
    let message: Option<Vec<u8>> = if e.version == tlog::entry::V1 {
        Some(e.message.to_vec())
    } else {
        log.payloads(idx)
            .map_err(|e| e.to_string())?
            .into_iter()
            .find(|(slot, _, _)| *slot == tlog::payload::MESSAGE)
            .map(|(_, _, data)| data)
    };
    let arguments = message
        .and_then(|m| serde_json::from_slice::<Value>(&m).ok())
        .and_then(|m| m.pointer("/params/arguments").cloned())
        .unwrap_or_else(|| json!({}));
    let detail: Value = serde_json::from_str(&e.detail).unwrap_or(Value::Null);
    let masked = detail
        .get("mask")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    Ok((arguments, masked))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_requester_is_read_back_from_its_audit_form() {
        let alice = Principal::static_token("alice");
        let read = principal_of(&alice.audit).unwrap();
        assert_eq!(read.kind, PrincipalKind::Static);
        assert_eq!(
            (read.subject.as_str(), read.name.as_str()),
            ("alice", "alice")
        );
        assert!(principal_of(crate::audit::ANONYMOUS).is_none());
        assert!(principal_of("not json").is_none());
        assert!(principal_of(r#"{"kind":"static"}"#).is_none());
    }
}
