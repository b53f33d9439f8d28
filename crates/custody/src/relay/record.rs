//! Turning what crosses the relay into audit entries, and receipts into answers.

use std::sync::Arc;

use serde_json::{Value, json};

use super::error::{RelayError, Unrecorded};
use crate::audit::{Appended, Audit, Direction, Draft, Kind, now_ns};
use crate::identity::Principal;
use crate::mask::{self, Masker};
use crate::mcp::message::{Kind as MessageKind, Limits, Message, parse_value};
use sha2::Digest;

/// How much of a refused body that did not parse is kept in its `rejected` entry.
const REFUSED_KEPT: usize = 64 * 1024;

/// The `_meta` key of the receipt custody adds to every result it relays.
pub const RECEIPT_KEY: &str = "dev.custody/receipt";

/// Who and where, for the entries of one call.
#[derive(Clone)]
pub struct Scope {
    pub audit: Arc<Audit>,
    pub endpoint: Arc<str>,
    pub session: Option<Arc<str>>,
    pub caller: Arc<str>,
    /// The endpoint's masking, for what this scope records.
    pub mask: Arc<Masker>,
    /// The endpoint's bounds on JSON, for refused input read again to be recorded.
    pub limits: Limits,
}

impl Scope {
    pub fn new(
        audit: &Arc<Audit>,
        endpoint: &Arc<str>,
        session: Option<Arc<str>>,
        caller: &Principal,
        mask: &Arc<Masker>,
        limits: Limits,
    ) -> Self {
        Self {
            audit: audit.clone(),
            endpoint: endpoint.clone(),
            session,
            caller: caller.audit.clone(),
            mask: mask.clone(),
            limits,
        }
    }

    /// Records a message from the client before it is forwarded (unmasked) to the upstream:
    /// the log stores its audit copy. `detail` is a JSON object, to which the masking report
    /// is added.
    ///
    /// # Errors
    /// [`RelayError::AuditUnavailable`]: the message must not move on.
    pub async fn client_message(
        &self,
        msg: &Message,
        mut detail: serde_json::Map<String, Value>,
    ) -> Result<Appended, RelayError> {
        match self.mask.audit_copy(msg.value()) {
            Some((copy, marks)) => {
                detail.insert("mask".into(), mask::report(&marks));
                self.masked_copy(
                    msg,
                    &copy,
                    Direction::ClientToUpstream,
                    None,
                    json_text(detail),
                    None,
                )
                .await
            }
            None => {
                self.message_with(
                    msg,
                    Direction::ClientToUpstream,
                    None,
                    json_text(detail),
                    None,
                )
                .await
            }
        }
    }

    fn draft(&self, kind: Kind, direction: Direction) -> Draft {
        Draft {
            kind,
            direction,
            time_ns: now_ns(),
            endpoint: self.endpoint.clone(),
            session: self.session.clone(),
            id: None,
            method: None,
            target: None,
            caller: self.caller.clone(),
            request: None,
            detail: String::new(),
            message: bytes::Bytes::new(),
            mark: None,
            headers: None,
            erase: None,
        }
    }

    /// Records a message crossing the gateway; `request` is the index of the request it answers,
    /// `detail` a JSON object (the policy decision, what was filtered) or empty.
    ///
    /// # Errors
    /// [`RelayError::AuditUnavailable`]: the message must not move on.
    pub async fn message_with(
        &self,
        msg: &Message,
        direction: Direction,
        request: Option<u64>,
        detail: String,
        headers: Option<bytes::Bytes>,
    ) -> Result<Appended, RelayError> {
        let kind = entry_kind(msg);
        let mut d = self.draft(kind, direction);
        d.headers = headers;
        d.id = msg.id().map(Value::to_string);
        d.method = msg.method().map(str::to_string);
        d.target = msg.target_name().map(str::to_string);
        d.request = request.filter(|_| kind.answers());
        d.message = msg.to_bytes();
        d.detail = detail;
        self.append(d).await
    }

    /// Records the masked copy of `original`: its kind from the original, everything else
    /// (id, method, target, bytes) from the copy, so nothing a rule masked reaches the entry,
    /// even where the copy is no longer valid JSON-RPC (a rule masked `jsonrpc` or `id`).
    pub async fn masked_copy(
        &self,
        original: &Message,
        copy: &Value,
        direction: Direction,
        request: Option<u64>,
        detail: String,
        headers: Option<bytes::Bytes>,
    ) -> Result<Appended, RelayError> {
        let kind = entry_kind(original);
        let mut d = self.draft(kind, direction);
        d.headers = headers;
        d.id = copy.get("id").map(Value::to_string);
        d.method = copy
            .get("method")
            .and_then(Value::as_str)
            .map(str::to_string);
        d.target = original.target_name().and_then(|_| copy_target(copy));
        d.request = request.filter(|_| kind.answers());
        d.message = bytes::Bytes::from(copy.to_string());
        d.detail = detail;
        self.append(d).await
    }

    /// Records a refusal of the gateway: the input it refused (if it parsed) and the error the
    /// client gets.
    pub async fn refusal(
        &self,
        incoming: Option<&Message>,
        raw: Option<bytes::Bytes>,
        error: &RelayError,
        id: Option<&Value>,
    ) -> Result<Appended, RelayError> {
        self.refusal_with(incoming, raw, error, id, None).await
    }

    /// As [`Scope::refusal`], with the policy decision that refused it.
    pub async fn refusal_with(
        &self,
        incoming: Option<&Message>,
        raw: Option<bytes::Bytes>,
        error: &RelayError,
        id: Option<&Value>,
        policy: Option<Value>,
    ) -> Result<Appended, RelayError> {
        let mut d = self.draft(Kind::Rejected, Direction::ClientToUpstream);
        d.id = id.map(Value::to_string);
        d.method = incoming.and_then(Message::method).map(str::to_string);
        d.target = incoming.and_then(Message::target_name).map(str::to_string);
        let mut detail =
            json!({ "status": error.status().as_u16(), "error": error.to_json(id)["error"] });
        if let Some(p) = policy {
            detail["policy"] = p;
        }
        // What was refused is stored as its audit copy; bytes that are not JSON with one
        // reading (invalid, or ambiguous: repeated member names, bad UTF-8) are masked as one
        // string, so the log neither picks a reading nor drops a copy. Their size and hash
        // identify the exact bytes; of a large body only the first `REFUSED_KEPT` bytes are
        // kept, so a refusal costs the gateway a small multiple of that, not of the body.
        let raw = raw.map(|bytes| {
            detail["input"] = json!({
                "bytes": bytes.len(),
                "sha256": hex::encode(sha2::Sha256::digest(&bytes)),
            });
            if bytes.len() > REFUSED_KEPT {
                detail["input"]["kept"] = json!(REFUSED_KEPT);
                bytes.slice(..REFUSED_KEPT)
            } else {
                bytes
            }
        });
        let original = match (incoming, &raw) {
            (Some(m), _) => Some(m.value().clone()),
            (None, Some(bytes)) => Some(
                parse_value(bytes, self.limits)
                    .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned())),
            ),
            (None, None) => None,
        };
        d.message = match original.as_ref().and_then(|v| self.mask.audit_copy(v)) {
            Some((copy, marks)) => {
                detail["mask"] = mask::report(&marks);
                // The indexed fields come from the masked copy too.
                if d.target.is_some() {
                    d.target = copy_target(&copy);
                }
                match copy {
                    Value::String(s) => bytes::Bytes::from(s),
                    v => bytes::Bytes::from(v.to_string()),
                }
            }
            None => incoming.map(Message::to_bytes).or(raw).unwrap_or_default(),
        };
        d.detail = detail.to_string();
        self.append(d).await
    }

    /// Records an error the gateway answers a recorded request with (the upstream failed).
    pub async fn failure(
        &self,
        error: &RelayError,
        id: Option<&Value>,
        request: Option<u64>,
    ) -> Result<Appended, RelayError> {
        let mut d = self.draft(Kind::Error, Direction::Gateway);
        d.id = id.map(Value::to_string);
        d.request = request;
        // The error may quote what the upstream said: the log stores its audit copy.
        let answer = error.to_json(id);
        d.message = match self.mask.audit_copy(&answer) {
            Some((copy, marks)) => {
                d.detail = json!({ "mask": mask::report(&marks) }).to_string();
                bytes::Bytes::from(copy.to_string())
            }
            None => bytes::Bytes::from(answer.to_string()),
        };
        self.append(d).await
    }

    /// Records a gateway event of this scope (a session opened or closed).
    pub async fn event(&self, kind: Kind, detail: Value) -> Result<Appended, RelayError> {
        let mut d = self.draft(kind, Direction::Gateway);
        d.detail = detail.to_string();
        self.append(d).await
    }

    async fn append(&self, d: Draft) -> Result<Appended, RelayError> {
        let stage = match d.direction {
            Direction::ClientToUpstream => Unrecorded::Request,
            Direction::UpstreamToClient => Unrecorded::Answer,
            Direction::Gateway => Unrecorded::GatewayAnswer,
        };
        let Some(mut span) = crate::telemetry::child("audit append") else {
            return self
                .audit
                .append(d)
                .await
                .map_err(|e| RelayError::audit(e, stage));
        };
        let traced = crate::telemetry::Recorded::of(&d);
        let appended = self.audit.append(d).await;
        match &appended {
            Ok(a) => traced.annotate(&mut span, a.index),
            Err(e) => span.fail(e.to_string()),
        }
        appended.map_err(|e| RelayError::audit(e, stage))
    }
}

/// The entry kind of a message.
fn entry_kind(msg: &Message) -> Kind {
    match msg.kind() {
        MessageKind::Request => Kind::Request,
        MessageKind::Notification => Kind::Notification,
        MessageKind::Response => Kind::Response,
        MessageKind::Error => Kind::Error,
    }
}

/// A masked copy's target (tool or prompt name, or resource URI), where the original has one.
fn copy_target(copy: &Value) -> Option<String> {
    copy.pointer("/params/name")
        .or_else(|| copy.pointer("/params/uri"))
        .and_then(Value::as_str)
        .map(str::to_string)
}

/// A detail object as text; empty for an empty object.
pub fn json_text(detail: serde_json::Map<String, Value>) -> String {
    if detail.is_empty() {
        String::new()
    } else {
        Value::Object(detail).to_string()
    }
}

/// Adds the receipt to a result: the log, and where the request and this response are in it.
pub fn add_receipt(msg: &mut Message, origin: &str, request: Option<Appended>, response: Appended) {
    let entry = |a: Appended| json!({ "index": a.index, "leaf": a.leaf.to_hex() });
    // The checkpoint that will cover it: the first published with more entries than its
    // index, fetched (with the witnesses' cosignatures) through the proof URL.
    let receipt = json!({
        "log": origin,
        "request": request.map(entry),
        "response": entry(response),
        "covered_by": {
            "min_size": response.index + 1,
            "proof": format!("/api/v1/log/proof?index={}", response.index),
        },
    });
    msg.add_result_meta(RECEIPT_KEY, &receipt);
}
