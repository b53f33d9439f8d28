//! JSON-RPC helpers: building responses and errors, reading ids and methods.

use serde_json::{Value, json};

/// JSON-RPC and MCP error codes used by this server.
pub mod code {
    pub const PARSE_ERROR: i64 = -32700;
    pub const INVALID_REQUEST: i64 = -32600;
    pub const METHOD_NOT_FOUND: i64 = -32601;
    pub const INVALID_PARAMS: i64 = -32602;
    pub const INTERNAL_ERROR: i64 = -32603;
    pub const HEADER_MISMATCH: i64 = -32020;
    pub const MISSING_CLIENT_CAPABILITY: i64 = -32021;
    pub const UNSUPPORTED_PROTOCOL_VERSION: i64 = -32022;
}

/// An error answer to a request, with the HTTP status a Streamable HTTP server gives it.
#[derive(Debug, Clone)]
pub struct RpcError {
    pub code: i64,
    pub message: String,
    pub data: Option<Value>,
    pub http_status: u16,
}

impl RpcError {
    pub fn new(code: i64, message: impl Into<String>) -> Self {
        let http_status = if code == code::METHOD_NOT_FOUND {
            404
        } else {
            200
        };
        Self {
            code,
            message: message.into(),
            data: None,
            http_status,
        }
    }

    /// A protocol-level rejection (HTTP 400).
    pub fn bad_request(code: i64, message: impl Into<String>) -> Self {
        Self {
            http_status: 400,
            ..Self::new(code, message)
        }
    }

    pub fn with_data(mut self, data: Value) -> Self {
        self.data = Some(data);
        self
    }

    pub fn to_response(&self, id: &Value) -> Value {
        let mut error = json!({ "code": self.code, "message": self.message });
        if let Some(data) = &self.data {
            error["data"] = data.clone();
        }
        json!({ "jsonrpc": "2.0", "id": id, "error": error })
    }
}

pub fn result(id: &Value, result: Value) -> Value {
    json!({ "jsonrpc": "2.0", "id": id, "result": result })
}

pub fn notification(method: &str, params: Value) -> Value {
    json!({ "jsonrpc": "2.0", "method": method, "params": params })
}

pub fn request(id: &Value, method: &str, params: Value) -> Value {
    json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params })
}

/// The shape of one JSON-RPC message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    Request,
    Notification,
    Response,
    Invalid,
}

pub fn shape(msg: &Value) -> Shape {
    let Some(obj) = msg.as_object() else {
        return Shape::Invalid;
    };
    let has_method = obj.get("method").is_some_and(Value::is_string);
    let has_id = obj
        .get("id")
        .is_some_and(|id| id.is_string() || id.is_number());
    if has_method && has_id {
        Shape::Request
    } else if has_method {
        Shape::Notification
    } else if has_id && (obj.contains_key("result") || obj.contains_key("error")) {
        Shape::Response
    } else {
        Shape::Invalid
    }
}

pub fn method(msg: &Value) -> &str {
    msg.get("method").and_then(Value::as_str).unwrap_or("")
}

/// A map key for a JSON-RPC id (string and number ids never collide).
pub fn id_key(id: &Value) -> String {
    match id {
        Value::String(s) => format!("s:{s}"),
        other => format!("n:{other}"),
    }
}
