//! One JSON-RPC message as a JSON value, with typed views only for what the gateway inspects.
//!
//! A [`Message`] keeps the bytes it arrived as for as long as they still describe it, so a
//! message the gateway does not change is forwarded exactly as received.

mod head;

use std::sync::OnceLock;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Value, json};

use head::Head;
pub use head::Meta;

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
    #[error("the JSON is nested deeper than the limit of {0} levels")]
    TooDeep(usize),
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
    Batch(Vec<Message>),
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
    /// Invalid JSON, too deep, or not JSON-RPC.
    pub fn parse(bytes: Bytes, max_depth: usize) -> Result<Self, ParseError> {
        check_depth(&bytes, max_depth)?;
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
    /// Parses a POST body: one message or a batch.
    ///
    /// # Errors
    /// Invalid JSON, too deep, not JSON-RPC, or an empty batch.
    pub fn parse(bytes: Bytes, max_depth: usize) -> Result<Self, ParseError> {
        check_depth(&bytes, max_depth)?;
        let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
        if first != Some(&b'[') {
            return Message::parse_checked(bytes).map(Body::Single);
        }
        let items: Vec<Value> = serde_json::from_slice(&bytes)?;
        if items.is_empty() {
            return Err(ParseError::EmptyBatch);
        }
        items
            .into_iter()
            .map(Message::from_value)
            .collect::<Result<Vec<_>, _>>()
            .map(Body::Batch)
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
        assert!(matches!(parse(r#"[1]"#), Err(ParseError::Shape(_))));
        assert!(matches!(
            parse(r#"{"jsonrpc":"2.0","method":"x","params":{"_meta":7}}"#),
            Err(ParseError::Shape(_))
        ));
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
        m.edit(|v| v["id"] = json!(2));
        assert_eq!(
            m.to_bytes(),
            r#"{"jsonrpc":"2.0","id":2,"method":"x","params":{"b":1,"a":2}}"#.as_bytes()
        );
    }

    #[test]
    fn result_meta_is_spliced_or_merged() {
        let add = |text: &'static str| {
            let mut m = Message::parse(Bytes::from_static(text.as_bytes()), 64).unwrap();
            m.add_result_meta("k", &json!({"i": 1}));
            let v: Value = serde_json::from_slice(&m.to_bytes()).unwrap();
            assert_eq!(v["result"]["_meta"]["k"]["i"], 1, "{text}");
            v
        };
        let v = add(r#"{"jsonrpc":"2.0","id":1,"result":{"content":[]}}"#);
        assert_eq!(v["result"]["content"], json!([]));
        let mut empty = Message::parse(
            Bytes::from_static(br#"{"jsonrpc":"2.0","id":1,"result":{ }}"#),
            64,
        )
        .unwrap();
        empty.add_result_meta("k", &json!(1));
        assert_eq!(
            &empty.to_bytes()[..],
            br#"{"jsonrpc":"2.0","id":1,"result":{ }}"#,
            "an empty result stays empty"
        );
        let v = add(r#"{"jsonrpc":"2.0","id":1,"result":{"_meta":{"other":true},"x":1}}"#);
        assert_eq!(
            v["result"]["_meta"]["other"], true,
            "an existing _meta is kept"
        );
        assert_eq!(v["result"]["x"], 1);
        add(r#"{"result":{"a":"}{\"_meta\""},"id":"s","jsonrpc":"2.0"}"#);
        let mut err = Message::parse(
            Bytes::from_static(br#"{"jsonrpc":"2.0","id":1,"error":{"code":1,"message":"m"}}"#),
            64,
        )
        .unwrap();
        err.add_result_meta("k", &json!(1));
        assert!(
            !String::from_utf8_lossy(&err.to_bytes()).contains("_meta"),
            "errors carry no receipt"
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

#[cfg(test)]
mod never_panics {
    use proptest::prelude::*;

    use super::*;

    fn jsonish() -> impl Strategy<Value = String> {
        // Fragments of JSON-RPC in random order: more likely than random bytes to get deep.
        let parts = prop::sample::select(vec![
            "{",
            "}",
            "[",
            "]",
            ",",
            ":",
            "\"jsonrpc\"",
            "\"2.0\"",
            "\"id\"",
            "\"method\"",
            "\"params\"",
            "\"result\"",
            "\"error\"",
            "\"_meta\"",
            "\"name\"",
            "\"uri\"",
            "1",
            "-1",
            "1.5",
            "null",
            "true",
            "\"x\"",
            "\"\\u00e9\"",
            "\"\\\"\"",
            " ",
            "\"io.modelcontextprotocol/protocolVersion\"",
        ]);
        prop::collection::vec(parts, 0..60).prop_map(|v| v.concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn parsing_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            let _ = check_depth(&bytes, 8);
            if let Ok(Body::Single(m)) = Body::parse(Bytes::from(bytes), 64) {
                let _ = (m.id(), m.method(), m.target_name(), m.meta_protocol_version(), m.value());
            }
        }

        #[test]
        fn parsing_jsonish_text(text in jsonish()) {
            match Body::parse(Bytes::from(text.clone()), 16) {
                Ok(Body::Single(mut m)) => {
                    let _ = (m.id(), m.method(), m.target_name(), m.meta_protocol_version());
                    m.add_result_meta("k", &serde_json::json!(1));
                    let again: Result<Value, _> = serde_json::from_slice(&m.to_bytes());
                    prop_assert!(again.is_ok(), "a receipt keeps the message valid JSON: {text}");
                }
                Ok(Body::Batch(_)) | Err(_) => {}
            }
        }
    }
}
