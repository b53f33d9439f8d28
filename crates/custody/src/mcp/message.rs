//! One JSON-RPC message as a JSON value, with typed views only for what the gateway inspects.
//!
//! A [`Message`] keeps the bytes it arrived as for as long as they still describe it, so a
//! message the gateway does not change is forwarded exactly as received.

mod head;
pub mod probe;
mod strict;

use std::sync::OnceLock;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Value, json};

use head::Head;
pub use head::Meta;
pub use strict::{Limits, Problem, Violation};

/// The four shapes of a JSON-RPC 2.0 message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Request,
    Notification,
    /// A `result` response.
    Response,
    /// An `error` response.
    Error,
}

/// A JSON-RPC message.
///
/// Parsing reads only the [`Head`] (kind, id, method, the target name and the stateless `_meta`
/// fields); the full JSON value is built on first use of [`Message::value`]. A message the
/// gateway forwards without looking inside is never turned into a document.
#[derive(Debug)]
pub struct Message {
    /// The wire bytes, while they still describe the message.
    raw: Option<Bytes>,
    head: Head,
    kind: Kind,
    value: OnceLock<Value>,
}

impl Clone for Message {
    fn clone(&self) -> Self {
        Self {
            raw: self.raw.clone(),
            head: self.head.clone(),
            kind: self.kind,
            value: self.value.clone(),
        }
    }
}

/// Why bytes are not a JSON-RPC message.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    #[error("the body is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// JSON that readers could disagree on, or that is out of bounds (see [`strict`]).
    #[error("{0}")]
    Strict(Violation),
    #[error("not a JSON-RPC 2.0 message: {0}")]
    NotJsonRpc(&'static str),
    #[error("not a JSON-RPC 2.0 message: {0}")]
    Shape(String),
    #[error("an empty JSON-RPC batch")]
    EmptyBatch,
}

/// A request body: one message or (2025-03-26 only) a batch.
#[derive(Debug)]
#[expect(
    clippy::large_enum_variant,
    reason = "a body is moved once or twice; boxing would add an allocation to every call"
)]
pub enum Body {
    Single(Message),
    /// The messages of a batch, each keeping its slice of the body, and the body itself.
    Batch(Vec<Message>, Bytes),
}

impl Message {
    /// Classifies a JSON value.
    ///
    /// # Errors
    /// [`ParseError::NotJsonRpc`] when the value is not a JSON-RPC 2.0 message.
    pub fn from_value(value: Value) -> Result<Self, ParseError> {
        let head = Head::deserialize(&value)?;
        let kind = classify(&head)?;
        Ok(Self {
            raw: None,
            head,
            kind,
            value: OnceLock::from(value),
        })
    }

    /// Parses one message (not a batch) from bytes, keeping them.
    ///
    /// # Errors
    /// Invalid JSON, JSON without one reading or out of `limits` ([`ParseError::Strict`]), or
    /// not JSON-RPC.
    pub fn parse(bytes: Bytes, limits: Limits) -> Result<Self, ParseError> {
        check(&bytes, limits)?;
        Self::parse_checked(bytes)
    }

    fn parse_checked(bytes: Bytes) -> Result<Self, ParseError> {
        let head: Head = serde_json::from_slice(&bytes).map_err(|e| match e.classify() {
            // Valid JSON of the wrong shape.
            serde_json::error::Category::Data => ParseError::Shape(e.to_string()),
            _ => ParseError::Json(e),
        })?;
        let kind = classify(&head)?;
        Ok(Self {
            raw: Some(bytes),
            head,
            kind,
            value: OnceLock::new(),
        })
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    pub fn is_request(&self) -> bool {
        self.kind == Kind::Request
    }

    /// The id of a request or response.
    pub fn id(&self) -> Option<&Value> {
        self.head.id.as_ref().filter(|id| !id.is_null())
    }

    pub fn method(&self) -> Option<&str> {
        self.head.method.as_ref().and_then(Value::as_str)
    }

    /// `params` (builds the full value).
    pub fn params(&self) -> Option<&Value> {
        self.value().get("params")
    }

    /// `params.name` of `tools/call` and `prompts/get`, `params.uri` of `resources/read`.
    pub fn target_name(&self) -> Option<&str> {
        let params = self.head.params.as_ref()?;
        match self.method()? {
            "tools/call" | "prompts/get" => params.name.as_deref(),
            "resources/read" | "resources/subscribe" | "resources/unsubscribe" => {
                params.uri.as_deref()
            }
            _ => None,
        }
    }

    /// `params._meta["io.modelcontextprotocol/protocolVersion"]` of a stateless request.
    pub fn meta_protocol_version(&self) -> Option<&str> {
        self.meta_head()?.protocol_version.as_deref()
    }

    /// The inspected part of `params._meta`, if the message has one.
    pub fn meta_head(&self) -> Option<&Meta> {
        self.head.params.as_ref()?.meta.as_ref()
    }

    /// A value under `params._meta` (builds the full value).
    pub fn meta(&self, key: &str) -> Option<&Value> {
        self.params()?.get("_meta")?.get(key)
    }

    /// The whole message as a JSON value, parsed on first use.
    pub fn value(&self) -> &Value {
        self.value.get_or_init(|| {
            let raw = self.raw.as_deref().unwrap_or_default();
            // The bytes parsed once already (into the head), so they are valid JSON.
            serde_json::from_slice(raw).unwrap_or(Value::Null)
        })
    }

    /// Changes the message. The original bytes are dropped since they no longer describe it, and
    /// the head is read again from the result.
    pub fn edit(&mut self, f: impl FnOnce(&mut Value)) {
        self.value();
        let mut value = self.value.take().unwrap_or(Value::Null);
        f(&mut value);
        if let Ok(head) = Head::deserialize(&value) {
            if let Ok(kind) = classify(&head) {
                self.kind = kind;
            }
            self.head = head;
        }
        self.raw = None;
        self.value = OnceLock::from(value);
    }

    /// Adds `key: value` to `result._meta` of a result, without building the document when
    /// `result` is an object with no `_meta` yet (the common case): the member is spliced into
    /// the wire bytes. Otherwise the value is edited. An empty result (`{}`, the answer to
    /// `ping` or `logging/setLevel`) stays empty: the protocol defines it so, and a relay must
    /// not change what an answer means.
    pub fn add_result_meta(&mut self, key: &str, value: &Value) {
        if self.kind != Kind::Response {
            return;
        }
        let empty = match &self.raw {
            Some(raw) => result_object_start(raw).is_some_and(|at| {
                raw[at + 1..].iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'}')
            }),
            None => self
                .value()
                .get("result")
                .and_then(Value::as_object)
                .is_some_and(serde_json::Map::is_empty),
        };
        if empty {
            return;
        }
        if let Some(raw) = &self.raw
            && let Some(at) = result_object_start(raw)
        {
            let member = serde_json::json!({ key: value }).to_string();
            // `{…}` → `{"_meta":{"key":value},…}` (the result is not empty here).
            let mut out = Vec::with_capacity(raw.len() + member.len() + 10);
            out.extend_from_slice(&raw[..=at]);
            out.extend_from_slice(b"\"_meta\":");
            out.extend_from_slice(member.as_bytes());
            out.push(b',');
            out.extend_from_slice(&raw[at + 1..]);
            self.raw = Some(Bytes::from(out));
            self.value = OnceLock::new();
            return;
        }
        let key = key.to_string();
        let value = value.clone();
        self.edit(|v| {
            if let Some(result) = v.get_mut("result").and_then(Value::as_object_mut) {
                let meta = result
                    .entry("_meta")
                    .or_insert_with(|| serde_json::json!({}));
                if let Some(meta) = meta.as_object_mut() {
                    meta.insert(key, value);
                }
            }
        });
    }

    pub fn into_value(self) -> Value {
        self.value();
        self.value.into_inner().unwrap_or(Value::Null)
    }

    /// The wire form: the original bytes if unchanged, else a fresh serialisation.
    pub fn to_bytes(&self) -> Bytes {
        match &self.raw {
            Some(b) => b.clone(),
            None => Bytes::from(self.value().to_string()),
        }
    }
}

impl Body {
    /// Parses a POST body: one message or a batch. The messages of a batch share the body's
    /// bytes (each keeps its slice); nothing is copied and no document is built.
    ///
    /// # Errors
    /// As [`Message::parse`]; also an empty batch, or one longer than `limits.max_batch`.
    pub fn parse(bytes: Bytes, limits: Limits) -> Result<Self, ParseError> {
        check(&bytes, limits)?;
        let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
        if first != Some(&b'[') {
            return Message::parse_checked(bytes).map(Body::Single);
        }
        let items: Vec<&serde_json::value::RawValue> = serde_json::from_slice(&bytes)?;
        if items.is_empty() {
            return Err(ParseError::EmptyBatch);
        }
        let messages = items
            .iter()
            .map(|item| Message::parse_checked(bytes.slice_ref(item.get().as_bytes())))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Body::Batch(messages, bytes))
    }
}

/// Parses JSON text into a value, refusing what [`Message::parse`] refuses (for input that is
/// recorded but may not be JSON-RPC).
///
/// # Errors
/// [`ParseError::Json`] or [`ParseError::Strict`].
pub fn parse_value(bytes: &[u8], limits: Limits) -> Result<Value, ParseError> {
    check(bytes, limits)?;
    Ok(serde_json::from_slice(bytes)?)
}

/// The strict scan ([`strict`]) every message passes before it is parsed; for text that is not
/// JSON at all, serde's words.
///
/// # Errors
/// [`ParseError::Strict`], or [`ParseError::Json`] for invalid JSON.
pub fn check(bytes: &[u8], limits: Limits) -> Result<(), ParseError> {
    match strict::scan(bytes, limits) {
        Ok(()) => Ok(()),
        Err(v) if v.problem == Problem::Syntax => {
            match serde_json::from_slice::<serde::de::IgnoredAny>(bytes) {
                Err(e) => Err(ParseError::Json(e)),
                Ok(_) => Err(ParseError::Strict(v)),
            }
        }
        Err(v) => Err(ParseError::Strict(v)),
    }
}

fn classify(head: &Head) -> Result<Kind, ParseError> {
    if !head.jsonrpc_ok {
        return Err(ParseError::NotJsonRpc("\"jsonrpc\" must be \"2.0\""));
    }
    let valid_id = |id: &Value| id.is_string() || id.is_i64() || id.is_u64();
    match &head.method {
        Some(Value::String(_)) => match &head.id {
            None => Ok(Kind::Notification),
            Some(id) if valid_id(id) => Ok(Kind::Request),
            Some(_) => Err(ParseError::NotJsonRpc(
                "a request id must be a string or an integer",
            )),
        },
        Some(_) => Err(ParseError::NotJsonRpc("\"method\" must be a string")),
        None => match (head.has_result, head.has_error) {
            (true, false) => Ok(Kind::Response),
            (false, true) => Ok(Kind::Error),
            _ => Err(ParseError::NotJsonRpc(
                "a response must have exactly one of \"result\" and \"error\"",
            )),
        },
    }
}

/// The byte offset of the `{` opening `result`, when `result` is an object without a
/// top-level `_meta` member; `None` otherwise.
fn result_object_start(raw: &[u8]) -> Option<usize> {
    #[derive(serde::Deserialize)]
    struct View<'a> {
        #[serde(borrow)]
        result: Option<&'a serde_json::value::RawValue>,
    }
    struct HasMeta(bool);
    impl<'de> Deserialize<'de> for HasMeta {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> serde::de::Visitor<'de> for V {
                type Value = HasMeta;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("an object")
                }
                fn visit_map<A: serde::de::MapAccess<'de>>(
                    self,
                    mut map: A,
                ) -> Result<HasMeta, A::Error> {
                    let mut found = false;
                    while let Some(k) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                        found |= k == "_meta";
                        map.next_value::<serde::de::IgnoredAny>()?;
                    }
                    Ok(HasMeta(found))
                }
            }
            d.deserialize_map(V)
        }
    }
    let view: View<'_> = serde_json::from_slice(raw).ok()?;
    let result = view.result?.get();
    if !result.starts_with('{') {
        return None;
    }
    let HasMeta(has) = serde_json::from_str(result).ok()?;
    if has {
        return None;
    }
    // `result` borrows from `raw`: its offset is the distance between the two.
    (result.as_ptr() as usize).checked_sub(raw.as_ptr() as usize)
}

/// A JSON-RPC error response.
pub fn error_response(id: Option<&Value>, code: i64, message: &str, data: Option<Value>) -> Value {
    let mut error = json!({ "code": code, "message": message });
    if let Some(data) = data {
        error["data"] = data;
    }
    json!({ "jsonrpc": "2.0", "id": id.cloned().unwrap_or(Value::Null), "error": error })
}

/// A map key for a JSON-RPC id: string and number ids never collide.
pub fn id_key(id: &Value) -> String {
    match id {
        Value::String(s) => format!("s:{s}"),
        other => format!("n:{other}"),
    }
}

#[cfg(test)]
mod tests;
