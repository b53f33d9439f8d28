//! The label vocabularies: every label value the gateway exposes comes from a fixed list, the
//! configuration (endpoint and witness names, masking rules), or a bounded set learned from
//! upstreams (tool names): never from what a client sends.

use std::sync::Arc;

use prometheus_client::encoding::{EncodeLabel, EncodeLabelSet, LabelSetEncoder};

use crate::relay::{Outcome, RelayError};

/// The `method` label of a request: JSON-RPC methods of MCP, then what is not one method.
pub const METHODS: &[&str] = &[
    "initialize",
    "ping",
    "tools/list",
    "tools/call",
    "resources/list",
    "resources/templates/list",
    "resources/read",
    "resources/subscribe",
    "resources/unsubscribe",
    "prompts/list",
    "prompts/get",
    "completion/complete",
    "logging/setLevel",
    "server/discover",
    "subscriptions/listen",
    "tasks/get",
    "tasks/list",
    "tasks/result",
    "tasks/cancel",
    "notifications/initialized",
    "notifications/cancelled",
    "notifications/progress",
    "notifications/roots/list_changed",
    // A client's answer to a request of the server.
    "response",
    // A JSON-RPC batch (2025-03-26).
    "batch",
    // The HTTP methods that carry no JSON-RPC message.
    "GET",
    "DELETE",
    // Refused before a message was read (unauthenticated, over a limit, not JSON-RPC).
    "unknown",
    // A method not in this list.
    "other",
];

/// Indexes into [`METHODS`].
pub mod method {
    pub const TOOLS_CALL: usize = 3;
    pub const RESPONSE: usize = 23;
    pub const BATCH: usize = 24;
    pub const GET: usize = 25;
    pub const DELETE: usize = 26;
    pub const UNKNOWN: usize = 27;
    pub const OTHER: usize = 28;
}

/// The index of a JSON-RPC method's label.
pub fn method_index(name: &str) -> usize {
    METHODS[..method::RESPONSE]
        .iter()
        .position(|m| *m == name)
        .unwrap_or(method::OTHER)
}

/// The `outcome` label of a request.
pub const OUTCOMES: &[&str] = &[
    "ok",
    "unauthorized",
    "forbidden",
    "limited",
    "denied",
    "approval_refused",
    "invalid",
    "not_found",
    "upstream_error",
    "upstream_timeout",
    "audit_unavailable",
];

/// Indexes into [`OUTCOMES`].
pub mod outcome {
    pub const OK: usize = 0;
    pub const UNAUTHORIZED: usize = 1;
    pub const FORBIDDEN: usize = 2;
    pub const LIMITED: usize = 3;
    pub const DENIED: usize = 4;
    pub const APPROVAL_REFUSED: usize = 5;
    pub const INVALID: usize = 6;
    pub const NOT_FOUND: usize = 7;
    pub const UPSTREAM_ERROR: usize = 8;
    pub const UPSTREAM_TIMEOUT: usize = 9;
    pub const AUDIT_UNAVAILABLE: usize = 10;
}

/// The outcome label of a refusal or failure.
pub fn error_outcome(e: &RelayError) -> usize {
    use crate::mcp::upstream::UpstreamError;
    match e {
        RelayError::Unauthorized(_) => outcome::UNAUTHORIZED,
        RelayError::HostNotAllowed(_) | RelayError::OriginNotAllowed(_) => outcome::FORBIDDEN,
        RelayError::Limit(_) => outcome::LIMITED,
        RelayError::Denied { .. } => outcome::DENIED,
        RelayError::ApprovalRequired { .. }
        | RelayError::ApprovalDenied { .. }
        | RelayError::ApprovalExpired { .. }
        | RelayError::ApprovalAbandoned(_)
        | RelayError::ApprovalMismatch(_) => outcome::APPROVAL_REFUSED,
        RelayError::UnknownEndpoint { .. }
        | RelayError::SessionNotFound(_)
        | RelayError::RemovedMethod(_) => outcome::NOT_FOUND,
        RelayError::Upstream { error, .. } => match error.kind() {
            UpstreamError::Timeout(_) => outcome::UPSTREAM_TIMEOUT,
            UpstreamError::SessionGone => outcome::NOT_FOUND,
            _ => outcome::UPSTREAM_ERROR,
        },
        RelayError::AuditUnavailable { .. }
        | RelayError::Unwitnessed(_)
        | RelayError::SessionsUnavailable(_) => outcome::AUDIT_UNAVAILABLE,
        RelayError::UnsupportedMediaType(_)
        | RelayError::NotAcceptable(_)
        | RelayError::TooLarge(_)
        | RelayError::BodyRead(_)
        | RelayError::Parse(_)
        | RelayError::SessionRequired
        | RelayError::UnsupportedVersion { .. }
        | RelayError::HeaderMismatch(_)
        | RelayError::InvalidMeta(_)
        | RelayError::BatchNotAllowed(_)
        | RelayError::MethodNotAllowed(_)
        | RelayError::UnknownEventId(_)
        | RelayError::RequestState(_) => outcome::INVALID,
    }
}

/// The outcome label of what the client gets. An upstream's own JSON-RPC error inside a relayed
/// answer is `ok` (the gateway relayed it); an upstream's HTTP error relayed as it is, is not.
pub fn outcome_index(o: &Outcome) -> usize {
    match o {
        Outcome::Accepted { .. } | Outcome::Json { .. } | Outcome::Stream { .. } => outcome::OK,
        Outcome::Passthrough { status, .. } | Outcome::Status(status) => status_outcome(*status),
        Outcome::Error { error, .. } => error_outcome(error),
    }
}

fn status_outcome(status: http::StatusCode) -> usize {
    match status.as_u16() {
        0..400 => outcome::OK,
        404 => outcome::NOT_FOUND,
        504 => outcome::UPSTREAM_TIMEOUT,
        _ => outcome::UPSTREAM_ERROR,
    }
}

/// A label value: a constant, or a name shared with the configuration (no copy per use).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Value {
    Static(&'static str),
    Shared(Arc<str>),
}

impl Value {
    pub fn as_str(&self) -> &str {
        match self {
            Value::Static(s) => s,
            Value::Shared(s) => s,
        }
    }
}

impl From<&'static str> for Value {
    fn from(s: &'static str) -> Self {
        Value::Static(s)
    }
}

impl From<&Arc<str>> for Value {
    fn from(s: &Arc<str>) -> Self {
        Value::Shared(s.clone())
    }
}

/// `N` labels, names fixed at the call site.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Labels<const N: usize>(pub [(&'static str, Value); N]);

impl<const N: usize> EncodeLabelSet for Labels<N> {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> std::fmt::Result {
        for (name, value) in &self.0 {
            EncodeLabel::encode(&(*name, value.as_str()), encoder.encode_label())?;
        }
        Ok(())
    }
}

/// Labels of borrowed strings, for series encoded once (at a scrape).
pub struct Borrowed<'a, const N: usize>(pub [(&'static str, &'a str); N]);

impl<const N: usize> EncodeLabelSet for Borrowed<'_, N> {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> std::fmt::Result {
        for (name, value) in &self.0 {
            EncodeLabel::encode(&(*name, *value), encoder.encode_label())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_index_constants_name_the_right_labels() {
        assert_eq!(METHODS[method::TOOLS_CALL], "tools/call");
        assert_eq!(METHODS[method::RESPONSE], "response");
        assert_eq!(METHODS[method::BATCH], "batch");
        assert_eq!(METHODS[method::GET], "GET");
        assert_eq!(METHODS[method::DELETE], "DELETE");
        assert_eq!(METHODS[method::UNKNOWN], "unknown");
        assert_eq!(METHODS[method::OTHER], "other");
        assert_eq!(METHODS.len(), method::OTHER + 1);
        assert_eq!(OUTCOMES[outcome::AUDIT_UNAVAILABLE], "audit_unavailable");
        assert_eq!(OUTCOMES.len(), outcome::AUDIT_UNAVAILABLE + 1);
    }

    #[test]
    fn methods_outside_the_list_are_other_and_labels_are_not_methods() {
        assert_eq!(method_index("tools/call"), method::TOOLS_CALL);
        assert_eq!(method_index("tools/call2"), method::OTHER);
        assert_eq!(
            method_index("batch"),
            method::OTHER,
            "only the gateway says batch"
        );
        assert_eq!(method_index("GET"), method::OTHER);
        assert_eq!(
            METHODS[method_index("notifications/cancelled")],
            "notifications/cancelled"
        );
    }
}
