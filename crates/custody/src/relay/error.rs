//! Every way the gateway refuses or fails a call, and the one place each becomes an HTTP status
//! and a JSON-RPC error. Messages say what went wrong, where, and what to do.

use http::StatusCode;
use serde_json::{Value, json};

use crate::identity::AuthError;
use crate::limits::{Exceeded, Limit};
use crate::mask::Masker;
use crate::mcp::headers::HeaderError;
use crate::mcp::message::{ParseError, error_response};
use crate::mcp::upstream::UpstreamError;

/// JSON-RPC error codes. `-32000..=-32019` is implementation-defined; custody's own live there.
pub mod code {
    pub const PARSE_ERROR: i64 = -32700;
    pub const INVALID_REQUEST: i64 = -32600;
    pub const METHOD_NOT_FOUND: i64 = -32601;
    pub const INVALID_PARAMS: i64 = -32602;
    pub const INTERNAL_ERROR: i64 = -32603;
    /// A request the gateway rejects at the HTTP layer (content type, Accept, size, session).
    pub const BAD_REQUEST: i64 = -32000;
    pub const SESSION_NOT_FOUND: i64 = -32001;
    /// No acceptable credential: the HTTP answer is 401 (or 503 while keys cannot be had).
    pub const UNAUTHORIZED: i64 = -32004;
    pub const ENDPOINT_NOT_FOUND: i64 = -32003;
    pub const UPSTREAM_UNREACHABLE: i64 = -32010;
    pub const UPSTREAM_TIMEOUT: i64 = -32011;
    pub const UPSTREAM_PROTOCOL: i64 = -32012;
    pub const UPSTREAM_CLOSED: i64 = -32013;
    pub const AUDIT_UNAVAILABLE: i64 = -32015;
    /// `[witness] mode = "required"` and no checkpoint reached the witnesses' quorum for longer
    /// than `max_lag`.
    pub const UNWITNESSED: i64 = -32016;
    pub const HEADER_MISMATCH: i64 = -32020;
    /// Policy denies the call.
    pub const POLICY_DENIED: i64 = -32030;
    /// Policy allows the call only once a person approves it.
    pub const APPROVAL_REQUIRED: i64 = -32031;
    /// An approver denied the held call.
    pub const APPROVAL_DENIED: i64 = -32032;
    /// Nobody decided before the approval expired.
    pub const APPROVAL_EXPIRED: i64 = -32033;
    /// The gateway stopped while the call waited.
    pub const APPROVAL_ABANDONED: i64 = -32034;
    /// The approval does not match the call it would release (checked again at release).
    pub const APPROVAL_MISMATCH: i64 = -32035;
    /// A bound of `limits` was reached (`error.data.limit` names it).
    pub const LIMIT: i64 = -32040;
    pub const MISSING_CLIENT_CAPABILITY: i64 = -32021;
    pub const UNSUPPORTED_PROTOCOL_VERSION: i64 = -32022;
}

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("no endpoint named {name:?} (configured: {known})")]
    UnknownEndpoint { name: String, known: String },
    #[error(
        "Host header {0:?} is not allowed (DNS-rebinding protection); add it to server.allowed_hosts if clients reach the gateway by that name"
    )]
    HostNotAllowed(String),
    #[error(
        "Origin {0:?} is not allowed; add it to server.allowed_origins to accept browser clients from it"
    )]
    OriginNotAllowed(String),
    #[error("unauthorized: {0}")]
    Unauthorized(AuthError),
    #[error("denied by policy: {}", denial(.action, .target, .endpoint, .policies))]
    Denied {
        action: &'static str,
        target: Option<String>,
        endpoint: String,
        policies: Vec<String>,
    },
    #[error(
        "approval required: {action}{} on endpoint {endpoint:?} is permitted by {} only once a person approves it, and {why}; the call was not forwarded",
        target.as_ref().map(|t| format!(" of {t:?}")).unwrap_or_default(),
        policies.join(", ")
    )]
    ApprovalRequired {
        action: &'static str,
        target: Option<String>,
        endpoint: String,
        policies: Vec<String>,
        /// Why it could not wait for one.
        why: &'static str,
    },
    #[error("denied by approver {approver}: {reason} (approval {id}); the call was not forwarded")]
    ApprovalDenied {
        id: String,
        approver: String,
        reason: String,
    },
    #[error(
        "approval {id} expired: nobody approved the call within {}; it was not forwarded (ask an approver, then retry)",
        humantime::format_duration(*.after)
    )]
    ApprovalExpired {
        id: String,
        after: std::time::Duration,
    },
    #[error(
        "the gateway stopped while the call waited for approval {0}; it was not forwarded: retry it"
    )]
    ApprovalAbandoned(String),
    #[error(
        "approval {0} does not match the call it would release (principal, endpoint, target, arguments or expiry); it was not forwarded"
    )]
    ApprovalMismatch(String),
    #[error("Content-Type must be application/json (got {0:?})")]
    UnsupportedMediaType(String),
    #[error("Accept must list {0}")]
    NotAcceptable(&'static str),
    #[error(
        "the body is larger than this endpoint's limit of {0} bytes (max_message_bytes); send smaller messages or raise the limit"
    )]
    TooLarge(usize),
    #[error("could not read the request body: {0}")]
    BodyRead(String),
    #[error("{0}")]
    Parse(#[from] ParseError),
    #[error(
        "this request needs an Mcp-Session-Id header (send initialize first to open a session)"
    )]
    SessionRequired,
    #[error("session not found{0}; it ended or expired: initialize a new session")]
    SessionNotFound(String),
    #[error(
        "the session could not be looked up in the replicas' shared session table ({0}); retry shortly"
    )]
    SessionsUnavailable(String),
    // The words an MCP server uses; which versions work is in `error.data.supported`.
    #[error("unsupported protocol version {requested:?}")]
    UnsupportedVersion {
        requested: String,
        /// The versions that work through this endpoint: those its upstream announced and the
        /// gateway relays, or, while the upstream's are unknown, every version it relays.
        supported: Vec<String>,
    },
    /// A method the request's generation removed, answered as a server of that generation
    /// answers it.
    #[error("method not found: {0}")]
    RemovedMethod(String),
    #[error("header mismatch: {0}")]
    HeaderMismatch(#[from] HeaderError),
    #[error("invalid params: {0}")]
    InvalidMeta(&'static str),
    #[error("JSON-RPC batches are not part of protocol version {0} (only 2025-03-26)")]
    BatchNotAllowed(String),
    #[error(
        "{0} is not served here: the 2026-07-28 generation has no sessions, and older ones need an Mcp-Session-Id"
    )]
    MethodNotAllowed(&'static str),
    #[error(
        "Last-Event-ID {0:?} is not an event id this gateway issued on this session (it remembers the last {keep}); open the stream again without it",
        keep = super::event_ids::KEEP
    )]
    UnknownEventId(String),
    #[error("{0}")]
    Limit(Exceeded),
    #[error("the audit log is unavailable ({why}); {}", stage.says())]
    AuditUnavailable { why: String, stage: Unrecorded },
    #[error("{0}; the call was not forwarded")]
    Unwitnessed(String),
    #[error("upstream of endpoint {endpoint:?} failed: {error}")]
    Upstream { endpoint: String, error: Scrubbed },
    /// A retry's `requestState` (or `inputResponses`) the gateway cannot accept: the call it
    /// would resume is not resumed.
    #[error("{0}")]
    RequestState(super::mrtr::StateError),
}

/// An upstream failure whose words have been through the endpoint's client-copy scrubbing
/// (the credentials the gateway holds, the client set's detectors). It is the only way an
/// [`UpstreamError`] goes into a [`RelayError`], so text an upstream (or a token endpoint, or a
/// process's output) put in an error reaches the client, the log and the gateway's own log
/// scrubbed, whichever of them renders it.
#[derive(Debug)]
pub struct Scrubbed(UpstreamError);

/// The most characters of upstream text an error quotes.
const QUOTED: usize = 300;

impl Scrubbed {
    /// Scrubs, then shortens to [`QUOTED`] characters (in that order: a secret cut in half
    /// would no longer be recognised).
    pub fn new(error: UpstreamError, mask: &Masker) -> Self {
        Scrubbed(error.map_text(|t| {
            mask.scrub_text(t);
            if let Some((cut, _)) = t.char_indices().nth(QUOTED) {
                t.truncate(cut);
                t.push('…');
            }
        }))
    }

    /// The error, scrubbed.
    pub fn kind(&self) -> &UpstreamError {
        &self.0
    }
}

impl std::fmt::Display for Scrubbed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl RelayError {
    /// A refused audit entry: the message it records does not move.
    pub fn audit(e: crate::audit::AuditError, stage: Unrecorded) -> Self {
        match e {
            crate::audit::AuditError::Unwitnessed { .. } => RelayError::Unwitnessed(e.to_string()),
            other => RelayError::AuditUnavailable {
                why: other.to_string(),
                stage,
            },
        }
    }

    /// An upstream failure of `endpoint`, scrubbed with its masker.
    pub fn upstream(endpoint: &str, mask: &Masker, error: UpstreamError) -> Self {
        match error {
            UpstreamError::Limit(e) => RelayError::Limit(e),
            error => RelayError::Upstream {
                endpoint: endpoint.to_string(),
                error: Scrubbed::new(error, mask),
            },
        }
    }

    /// `Retry-After` for this refusal, in seconds, where it has one.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            RelayError::Limit(e) if !matches!(e.limit, Limit::HeaderBytes | Limit::HeaderCount) => {
                Some(e.retry_after_secs())
            }
            _ => None,
        }
    }

    /// The HTTP status for this error when it is the whole answer.
    pub fn status(&self) -> StatusCode {
        match self {
            RelayError::UnknownEndpoint { .. } | RelayError::SessionNotFound(_) => {
                StatusCode::NOT_FOUND
            }
            RelayError::HostNotAllowed(_) | RelayError::OriginNotAllowed(_) => {
                StatusCode::FORBIDDEN
            }
            RelayError::Unauthorized(e) if e.is_temporary() => StatusCode::SERVICE_UNAVAILABLE,
            RelayError::Unauthorized(e) if e.is_bad_request() => StatusCode::BAD_REQUEST,
            RelayError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            RelayError::Denied { .. }
            | RelayError::ApprovalRequired { .. }
            | RelayError::ApprovalDenied { .. }
            | RelayError::ApprovalMismatch(_) => StatusCode::FORBIDDEN,
            RelayError::ApprovalExpired { .. } => StatusCode::GATEWAY_TIMEOUT,
            RelayError::ApprovalAbandoned(_) => StatusCode::SERVICE_UNAVAILABLE,
            RelayError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            RelayError::NotAcceptable(_) => StatusCode::NOT_ACCEPTABLE,
            RelayError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            RelayError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            RelayError::RemovedMethod(_) => StatusCode::NOT_FOUND,
            RelayError::AuditUnavailable { .. }
            | RelayError::Unwitnessed(_)
            | RelayError::SessionsUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            RelayError::Limit(e) => match e.limit {
                Limit::AddressRefusals
                | Limit::PrincipalRate
                | Limit::PrincipalConcurrent
                | Limit::PrincipalSessions => StatusCode::TOO_MANY_REQUESTS,
                Limit::EndpointSessions | Limit::EndpointProcesses | Limit::Connections => {
                    StatusCode::SERVICE_UNAVAILABLE
                }
                Limit::HeaderBytes | Limit::HeaderCount => {
                    StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
                }
                Limit::HeaderTime => StatusCode::REQUEST_TIMEOUT,
            },
            RelayError::Upstream { error, .. } => match error.kind() {
                UpstreamError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
                UpstreamError::SessionGone => StatusCode::NOT_FOUND,
                _ => StatusCode::BAD_GATEWAY,
            },
            RelayError::BodyRead(_)
            | RelayError::Parse(_)
            | RelayError::SessionRequired
            | RelayError::UnsupportedVersion { .. }
            | RelayError::HeaderMismatch(_)
            | RelayError::InvalidMeta(_)
            | RelayError::RequestState(_)
            | RelayError::UnknownEventId(_)
            | RelayError::BatchNotAllowed(_) => StatusCode::BAD_REQUEST,
        }
    }

    pub fn code(&self) -> i64 {
        match self {
            RelayError::Parse(ParseError::Json(_)) => code::PARSE_ERROR,
            RelayError::Parse(_) | RelayError::BatchNotAllowed(_) => code::INVALID_REQUEST,
            RelayError::UnknownEndpoint { .. } => code::ENDPOINT_NOT_FOUND,
            RelayError::SessionNotFound(_) => code::SESSION_NOT_FOUND,
            RelayError::Unauthorized(_) => code::UNAUTHORIZED,
            RelayError::Denied { .. } => code::POLICY_DENIED,
            RelayError::ApprovalRequired { .. } => code::APPROVAL_REQUIRED,
            RelayError::ApprovalDenied { .. } => code::APPROVAL_DENIED,
            RelayError::ApprovalExpired { .. } => code::APPROVAL_EXPIRED,
            RelayError::ApprovalAbandoned(_) => code::APPROVAL_ABANDONED,
            RelayError::ApprovalMismatch(_) => code::APPROVAL_MISMATCH,
            RelayError::UnsupportedVersion { .. } => code::UNSUPPORTED_PROTOCOL_VERSION,
            RelayError::RemovedMethod(_) => code::METHOD_NOT_FOUND,
            // As MCP servers answer a request from a host or origin they do not accept.
            RelayError::HostNotAllowed(_) | RelayError::OriginNotAllowed(_) => {
                code::INVALID_REQUEST
            }
            RelayError::HeaderMismatch(_) => code::HEADER_MISMATCH,
            RelayError::InvalidMeta(_) | RelayError::RequestState(_) => code::INVALID_PARAMS,
            // The shared session table lives in the log's database.
            RelayError::AuditUnavailable { .. } | RelayError::SessionsUnavailable(_) => {
                code::AUDIT_UNAVAILABLE
            }
            RelayError::Unwitnessed(_) => code::UNWITNESSED,
            RelayError::Limit(_) => code::LIMIT,
            RelayError::Upstream { error, .. } => match error.kind() {
                UpstreamError::Timeout(_) => code::UPSTREAM_TIMEOUT,
                UpstreamError::Protocol(_) | UpstreamError::TooLarge(_) => code::UPSTREAM_PROTOCOL,
                UpstreamError::Closed(_) => code::UPSTREAM_CLOSED,
                UpstreamError::SessionGone => code::SESSION_NOT_FOUND,
                UpstreamError::Unreachable(_)
                | UpstreamError::Status(..)
                | UpstreamError::Spawn(_) => code::UPSTREAM_UNREACHABLE,
                UpstreamError::Limit(_) => code::LIMIT,
            },
            _ => code::BAD_REQUEST,
        }
    }

    fn data(&self) -> Option<Value> {
        match self {
            RelayError::UnsupportedVersion {
                requested,
                supported,
                ..
            } => Some(json!({
                "requested": requested, "supported": supported
            })),
            RelayError::Unauthorized(e) => Some(json!({ "reason": e.reason() })),
            RelayError::Limit(e) => Some(json!({
                "limit": e.limit.name(),
                "max": e.max,
                "config": e.limit.key(),
                "retry_after": self.retry_after(),
            })),
            RelayError::Denied {
                action,
                target,
                endpoint,
                policies,
            }
            | RelayError::ApprovalRequired {
                action,
                target,
                endpoint,
                policies,
                ..
            } => Some(json!({
                "decision": if matches!(self, RelayError::Denied { .. }) { "deny" } else { "needs_approval" },
                "action": action, "target": target, "endpoint": endpoint, "policies": policies,
            })),
            RelayError::ApprovalDenied {
                id,
                approver,
                reason,
            } => Some(json!({ "approval": id, "approver": approver, "reason": reason })),
            RelayError::ApprovalExpired { id, .. }
            | RelayError::ApprovalAbandoned(id)
            | RelayError::ApprovalMismatch(id) => Some(json!({ "approval": id })),
            RelayError::Upstream { endpoint, error }
                if matches!(error.kind(), UpstreamError::TooLarge(_)) =>
            {
                let UpstreamError::TooLarge(o) = error.kind() else {
                    unreachable!("matched by the guard")
                };
                let mut data = o.to_json();
                data["endpoint"] = json!(endpoint);
                data["reason"] = json!("too_large");
                Some(data)
            }
            RelayError::Upstream { endpoint, error } => Some(json!({
                "endpoint": endpoint,
                "reason": match error.kind() {
                    UpstreamError::Unreachable(_) => "unreachable",
                    UpstreamError::Timeout(_) => "timeout",
                    UpstreamError::Protocol(_) => "protocol",
                    UpstreamError::Closed(_) => "closed",
                    UpstreamError::Status(..) => "status",
                    UpstreamError::SessionGone => "session_gone",
                    UpstreamError::Spawn(_) => "spawn",
                    UpstreamError::Limit(_) => "limit",
                    UpstreamError::TooLarge(_) => "too_large",
                },
            })),
            RelayError::RequestState(e) => {
                Some(json!({ "reason": e.reason(), "param": e.param() }))
            }
            RelayError::Parse(ParseError::Strict(v)) => Some(json!({
                "reason": v.problem.reason(), "path": v.path,
            })),
            _ => None,
        }
    }

    /// The JSON-RPC error response answering request `id` (or `null`).
    pub fn to_json(&self, id: Option<&Value>) -> Value {
        error_response(id, self.code(), &self.to_string(), self.data())
    }

    /// Does this error still deserve HTTP 200 when it answers a request with an id? Upstream
    /// failures do: the JSON-RPC error is the answer to that call. Everything the gateway
    /// refuses before relaying keeps its own status.
    pub fn answers_request(&self) -> bool {
        match self {
            RelayError::Upstream { error, .. } => {
                !matches!(error.kind(), UpstreamError::SessionGone)
            }
            RelayError::AuditUnavailable { .. }
            | RelayError::Unwitnessed(_)
            | RelayError::Denied { .. }
            | RelayError::ApprovalRequired { .. }
            | RelayError::ApprovalDenied { .. }
            | RelayError::ApprovalExpired { .. }
            | RelayError::ApprovalAbandoned(_)
            | RelayError::ApprovalMismatch(_) => true,
            _ => false,
        }
    }
}

fn denial(action: &str, target: &Option<String>, endpoint: &str, policies: &[String]) -> String {
    let what = match target {
        Some(t) => format!("{action} of {t:?} on endpoint {endpoint:?}"),
        None => format!("{action} on endpoint {endpoint:?}"),
    };
    if policies.is_empty() {
        format!("no policy permits {what}")
    } else {
        format!("{what} is forbidden by {}", policies.join(", "))
    }
}

/// The HTTP status a stateless (2026-07-28) Streamable HTTP server gives a JSON-RPC error,
/// for upstreams (stdio) that have no HTTP status of their own.
pub fn stateless_status(error_code: i64) -> StatusCode {
    match error_code {
        code::METHOD_NOT_FOUND => StatusCode::NOT_FOUND,
        code::HEADER_MISMATCH
        | code::MISSING_CLIENT_CAPABILITY
        | code::UNSUPPORTED_PROTOCOL_VERSION => StatusCode::BAD_REQUEST,
        _ => StatusCode::OK,
    }
}

/// What had happened to a call when the entry recording it could not be made: so that the
/// error says truthfully whether it reached the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unrecorded {
    /// The client's message itself: it was not forwarded.
    Request,
    /// The upstream's answer: the call reached the upstream, and its answer is withheld.
    Answer,
    /// The gateway's own answer (an upstream failure, a refusal, an event): the client gets the
    /// error the gateway meant to record, with this note.
    GatewayAnswer,
}

impl Unrecorded {
    fn says(self) -> &'static str {
        match self {
            Unrecorded::Request => "the call was not forwarded",
            Unrecorded::Answer => {
                "the call reached the upstream, but its answer could not be recorded and is withheld"
            }
            Unrecorded::GatewayAnswer => "the gateway's answer could not be recorded",
        }
    }
}
