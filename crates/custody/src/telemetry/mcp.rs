//! The OpenTelemetry semantic conventions for MCP: a request's span name and attributes, and
//! `params._meta` as a trace-context carrier.

use opentelemetry::KeyValue;
use serde_json::{Map, Value};

use crate::mcp::message::Message;

/// `params._meta` read as a W3C trace-context carrier (`traceparent`, `tracestate`).
pub struct MetaCarrier<'a>(pub &'a Map<String, Value>);

impl opentelemetry::propagation::Extractor for MetaCarrier<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(Value::as_str)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }
}

/// The longest value a span takes from a client's message: a 4 MiB tool name must not
/// become a 4 MiB span in the export queue.
const MAX_VALUE: usize = 256;

/// `s`, cut to [`MAX_VALUE`] bytes on a character boundary.
pub fn clip(s: &str) -> String {
    if s.len() <= MAX_VALUE {
        return s.to_string();
    }
    let mut end = MAX_VALUE;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// The span name of a request: `{mcp.method.name} {target}`, or the method alone.
pub fn span_name(msg: &Message) -> String {
    let method = clip(msg.method().unwrap_or(""));
    match msg.target_name() {
        Some(t) => format!("{method} {}", clip(t)),
        None => method,
    }
}

/// The attributes of a request's span: method, JSON-RPC id, protocol version, session (for
/// session-based clients), tool, operation, resource or prompt. Never its arguments.
pub fn attributes(
    msg: &Message,
    protocol_version: Option<&str>,
    session: Option<&str>,
    endpoint: &str,
) -> Vec<KeyValue> {
    let method = clip(msg.method().unwrap_or(""));
    let mut a = vec![
        KeyValue::new("mcp.method.name", method.clone()),
        KeyValue::new("network.transport", "tcp"),
        KeyValue::new("network.protocol.name", "http"),
        KeyValue::new("custody.endpoint", endpoint.to_string()),
    ];
    if let Some(id) = msg.id() {
        let id = match id {
            Value::String(s) => clip(s),
            other => clip(&other.to_string()),
        };
        a.push(KeyValue::new("jsonrpc.request.id", id));
    }
    if let Some(v) = protocol_version.or_else(|| msg.meta_protocol_version()) {
        a.push(KeyValue::new("mcp.protocol.version", clip(v)));
    }
    if let Some(s) = session {
        a.push(KeyValue::new("mcp.session.id", clip(s)));
    }
    match (method.as_str(), msg.target_name()) {
        ("tools/call", Some(tool)) => {
            a.push(KeyValue::new("gen_ai.tool.name", clip(tool)));
            a.push(KeyValue::new("gen_ai.operation.name", "execute_tool"));
        }
        ("prompts/get", Some(prompt)) => {
            a.push(KeyValue::new("gen_ai.prompt.name", clip(prompt)));
        }
        ("resources/read" | "resources/subscribe" | "resources/unsubscribe", Some(uri)) => {
            a.push(KeyValue::new("mcp.resource.uri", clip(uri)));
        }
        _ => {}
    }
    a
}

/// `error.type` and `rpc.response.status_code` of an answer, if it is an error: a JSON-RPC
/// error's code, or `tool_error` for a tool result with `isError`.
pub fn answer_error(message: &[u8]) -> Option<(String, Option<String>)> {
    let v: Value = serde_json::from_slice(message).ok()?;
    if let Some(code) = v.pointer("/error/code").and_then(Value::as_i64) {
        return Some((code.to_string(), Some(code.to_string())));
    }
    (v.pointer("/result/isError") == Some(&Value::Bool(true)))
        .then(|| ("tool_error".to_string(), None))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_values_are_clipped() {
        let long = "é".repeat(1000);
        let c = clip(&long);
        assert!(c.len() <= MAX_VALUE + "…".len(), "{}", c.len());
        assert!(c.ends_with('…'));
        assert_eq!(clip("deploy"), "deploy");
    }

    #[test]
    fn errors_are_named_by_their_code_or_as_tool_errors() {
        assert_eq!(
            answer_error(br#"{"jsonrpc":"2.0","id":1,"error":{"code":-32602,"message":"x"}}"#),
            Some(("-32602".into(), Some("-32602".into())))
        );
        assert_eq!(
            answer_error(br#"{"jsonrpc":"2.0","id":1,"result":{"isError":true,"content":[]}}"#),
            Some(("tool_error".into(), None))
        );
        assert_eq!(
            answer_error(br#"{"jsonrpc":"2.0","id":1,"result":{}}"#),
            None
        );
    }
}
