//! One JSON-RPC message as a JSON value, with typed views only for what the gateway inspects.
//!
//! A [`Message`] keeps the bytes it arrived as for as long as they still describe it, so a
//! message the gateway does not change is forwarded exactly as received.

use bytes::Bytes;
use serde_json::{Value, json};

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
#[derive(Debug, Clone)]
pub struct Message {
    value: Value,
    kind: Kind,
    raw: Option<Bytes>,
}

/// Why bytes are not a JSON-RPC message.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    #[error("the body is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("the JSON is nested deeper than the limit of {0} levels")]
    TooDeep(usize),
    #[error("not a JSON-RPC 2.0 message: {0}")]
    NotJsonRpc(&'static str),
    #[error("an empty JSON-RPC batch")]
    EmptyBatch,
}

/// A request body: one message or (2025-03-26 only) a batch.
#[derive(Debug)]
pub enum Body {
    Single(Message),
    Batch(Vec<Message>),
}

impl Message {
    /// Classifies a JSON value.
    ///
    /// # Errors
    /// [`ParseError::NotJsonRpc`] when the value is not a JSON-RPC 2.0 message.
    pub fn from_value(value: Value) -> Result<Self, ParseError> {
        let kind = classify(&value)?;
        Ok(Self {
            value,
            kind,
            raw: None,
        })
    }

    /// Parses one message (not a batch) from bytes, keeping them.
    ///
    /// # Errors
    /// Invalid JSON, too deep, or not JSON-RPC.
    pub fn parse(bytes: Bytes, max_depth: usize) -> Result<Self, ParseError> {
        check_depth(&bytes, max_depth)?;
        let value: Value = serde_json::from_slice(&bytes)?;
        let kind = classify(&value)?;
        Ok(Self {
            value,
            kind,
            raw: Some(bytes),
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
        self.value.get("id").filter(|id| !id.is_null())
    }

    pub fn method(&self) -> Option<&str> {
        self.value.get("method").and_then(Value::as_str)
    }

    pub fn params(&self) -> Option<&Value> {
        self.value.get("params")
    }

    /// `params.name` of `tools/call` and `prompts/get`, `params.uri` of `resources/read`.
    pub fn target_name(&self) -> Option<&str> {
        let key = match self.method()? {
            "tools/call" | "prompts/get" => "name",
            "resources/read" | "resources/subscribe" | "resources/unsubscribe" => "uri",
            _ => return None,
        };
        self.params()?.get(key)?.as_str()
    }

    /// A value under `params._meta`.
    pub fn meta(&self, key: &str) -> Option<&Value> {
        self.params()?.get("_meta")?.get(key)
    }

    pub fn value(&self) -> &Value {
        &self.value
    }

    /// Mutable access; the original bytes are dropped since they no longer describe the value.
    pub fn value_mut(&mut self) -> &mut Value {
        self.raw = None;
        &mut self.value
    }

    pub fn into_value(self) -> Value {
        self.value
    }

    /// The wire form: the original bytes if unchanged, else a fresh serialisation.
    pub fn to_bytes(&self) -> Bytes {
        match &self.raw {
            Some(b) => b.clone(),
            None => Bytes::from(self.value.to_string()),
        }
    }
}

impl Body {
    /// Parses a POST body: one message or a batch.
    ///
    /// # Errors
    /// Invalid JSON, too deep, not JSON-RPC, or an empty batch.
    pub fn parse(bytes: Bytes, max_depth: usize) -> Result<Self, ParseError> {
        check_depth(&bytes, max_depth)?;
        let value: Value = serde_json::from_slice(&bytes)?;
        match value {
            Value::Array(items) => {
                if items.is_empty() {
                    return Err(ParseError::EmptyBatch);
                }
                items
                    .into_iter()
                    .map(Message::from_value)
                    .collect::<Result<Vec<_>, _>>()
                    .map(Body::Batch)
            }
            value => {
                let kind = classify(&value)?;
                Ok(Body::Single(Message {
                    value,
                    kind,
                    raw: Some(bytes),
                }))
            }
        }
    }
}

fn classify(value: &Value) -> Result<Kind, ParseError> {
    let obj = value
        .as_object()
        .ok_or(ParseError::NotJsonRpc("a message must be a JSON object"))?;
    if obj.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Err(ParseError::NotJsonRpc("\"jsonrpc\" must be \"2.0\""));
    }
    let id = obj.get("id");
    let valid_id = |id: &Value| id.is_string() || id.is_i64() || id.is_u64();
    match obj.get("method") {
        Some(Value::String(_)) => match id {
            None => Ok(Kind::Notification),
            Some(id) if valid_id(id) => Ok(Kind::Request),
            Some(_) => Err(ParseError::NotJsonRpc(
                "a request id must be a string or an integer",
            )),
        },
        Some(_) => Err(ParseError::NotJsonRpc("\"method\" must be a string")),
        None => {
            let is_error = obj.contains_key("error");
            match (obj.contains_key("result"), is_error) {
                (true, false) => Ok(Kind::Response),
                (false, true) => Ok(Kind::Error),
                _ => Err(ParseError::NotJsonRpc(
                    "a response must have exactly one of \"result\" and \"error\"",
                )),
            }
        }
    }
}

/// Rejects JSON nested deeper than `max` before it is parsed, so that depth cannot be used to
/// exhaust the stack or the CPU. One pass over the bytes, skipping string contents.
///
/// # Errors
/// [`ParseError::TooDeep`].
pub fn check_depth(bytes: &[u8], max: usize) -> Result<(), ParseError> {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in bytes {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return Err(ParseError::TooDeep(max));
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
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
mod tests {
    use super::*;

    #[test]
    fn classifies_shapes() {
        let parse = |s: &str| Message::parse(Bytes::from(s.to_owned()), 64).map(|m| m.kind());
        assert_eq!(
            parse(r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#).unwrap(),
            Kind::Request
        );
        assert_eq!(
            parse(r#"{"jsonrpc":"2.0","method":"n"}"#).unwrap(),
            Kind::Notification
        );
        assert_eq!(
            parse(r#"{"jsonrpc":"2.0","id":"a","result":{}}"#).unwrap(),
            Kind::Response
        );
        assert_eq!(
            parse(r#"{"jsonrpc":"2.0","id":1,"error":{"code":1,"message":"m"}}"#).unwrap(),
            Kind::Error
        );
        assert!(matches!(
            parse(r#"{"id":1,"method":"x"}"#),
            Err(ParseError::NotJsonRpc(_))
        ));
        assert!(matches!(parse(r#"[1]"#), Err(ParseError::NotJsonRpc(_))));
        assert!(matches!(
            parse(r#"{"jsonrpc":"2.0","id":1.5,"method":"x"}"#),
            Err(ParseError::NotJsonRpc(_))
        ));
        assert!(matches!(parse("{"), Err(ParseError::Json(_))));
    }

    #[test]
    fn depth_limit_counts_only_structure() {
        let deep = format!("{}{}", "[".repeat(65), "]".repeat(65));
        assert!(matches!(
            check_depth(deep.as_bytes(), 64),
            Err(ParseError::TooDeep(64))
        ));
        let ok = format!("{}{}", "[".repeat(64), "]".repeat(64));
        assert!(check_depth(ok.as_bytes(), 64).is_ok());
        let in_string = format!("\"{}\\\"{}\"", "[".repeat(100), "{".repeat(100));
        assert!(check_depth(in_string.as_bytes(), 2).is_ok());
    }

    #[test]
    fn unchanged_messages_keep_their_bytes() {
        let text = r#"{"jsonrpc":"2.0",  "id":1, "method":"x", "params":{"b":1,"a":2}}"#;
        let mut m = Message::parse(Bytes::from_static(text.as_bytes()), 64).unwrap();
        assert_eq!(m.to_bytes(), text.as_bytes());
        m.value_mut()["id"] = json!(2);
        assert_eq!(
            m.to_bytes(),
            r#"{"jsonrpc":"2.0","id":2,"method":"x","params":{"b":1,"a":2}}"#.as_bytes()
        );
    }

    #[test]
    fn batches() {
        let b = Body::parse(
            Bytes::from_static(br#"[{"jsonrpc":"2.0","method":"a"}]"#),
            64,
        )
        .unwrap();
        assert!(matches!(b, Body::Batch(v) if v.len() == 1));
        assert!(matches!(
            Body::parse(Bytes::from_static(b"[]"), 64),
            Err(ParseError::EmptyBatch)
        ));
    }

    #[test]
    fn target_names() {
        let m = Message::from_value(
            json!({"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"u://x"}}),
        )
        .unwrap();
        assert_eq!(m.target_name(), Some("u://x"));
        let m = Message::from_value(json!({"jsonrpc":"2.0","id":1,"method":"tools/list"})).unwrap();
        assert_eq!(m.target_name(), None);
    }
}
