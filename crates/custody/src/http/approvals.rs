//! `/api/v1/approvals`: approvers list, inspect and decide held calls. Every route needs a
//! bearer token that identifies a person or service (never the anonymous principal); what each
//! caller sees and may decide is the approval module's call.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use serde::Deserialize;
use serde_json::json;

use super::App;
use crate::approval::Verb;
use crate::identity::{Principal, PrincipalKind};
use crate::relay::At;

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

/// The caller, or the 401 to answer with. Refused tokens are charged to the address and
/// counted like any other; an address past its refusal budget gets 429 unread.
pub(super) async fn who(
    app: &App,
    headers: &HeaderMap,
    method: &Method,
    peer: SocketAddr,
    api: &str,
) -> Result<Arc<Principal>, Response> {
    let address = peer.to_string();
    let at = At {
        endpoint: &API,
        address: &address,
        http_method: method.as_str(),
        session: None,
    };
    let found = match super::gate_address(app, headers, peer) {
        Ok(Some(p)) => Ok(p),
        Ok(None) => app.identity.authenticate(headers).await,
        Err(limited) => {
            app.relay.refusals.unauthenticated(&at, &limited);
            let mut resp = error(limited.status(), limited.to_string());
            if let Some(secs) = limited.retry_after() {
                resp.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(secs));
            }
            return Err(resp);
        }
    };
    let refused = match found {
        Ok(p) if p.kind != PrincipalKind::Anonymous => return Ok(p),
        Ok(_) => {
            let mut resp = error(
                StatusCode::UNAUTHORIZED,
                format!(
                    "the {api} API needs a bearer token that names who you are; anonymous callers are refused"
                ),
            );
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return Err(resp);
        }
        Err(refused) => refused,
    };
    let refusal = super::refused_credential(app, &at, peer, &refused);
    let status = refusal.status();
    let mut resp = error(status, format!("unauthorized: {}", refused.error));
    if status == StatusCode::UNAUTHORIZED {
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer error=\"invalid_token\""),
        );
    }
    Err(resp)
}

/// The endpoint name of the API's entries.
static API: std::sync::LazyLock<Arc<str>> = std::sync::LazyLock::new(|| Arc::from(""));

#[derive(Deserialize)]
pub struct ListQuery {
    /// `all=true`: recently finished approvals too.
    all: Option<bool>,
}

/// `GET /api/v1/approvals[?all=true]`
pub async fn list(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Query(q): Query<ListQuery>,
) -> Response {
    let principal = match who(&app, &headers, &Method::GET, peer, "approvals").await {
        Ok(p) => p,
        Err(resp) => return resp,
    };
    let approvals = app
        .relay
        .approvals
        .list_json(&principal, q.all.unwrap_or(false))
        .await;
    Json(json!({ "approvals": approvals })).into_response()
}

/// `GET /api/v1/approvals/{id}`
pub async fn show(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let principal = match who(&app, &headers, &Method::GET, peer, "approvals").await {
        Ok(p) => p,
        Err(resp) => return resp,
    };
    match app.relay.approvals.show_json(&principal, &id).await {
        Some(p) => Json(p).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            crate::approval::DecideError::NotFound(id).to_string(),
        ),
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct DecisionBody {
    reason: Option<String>,
    /// When given, the decision applies only if the held call's arguments have this digest.
    arguments_sha256: Option<String>,
}

/// `POST /api/v1/approvals/{id}/approve` and `/deny`, body `{"reason": ..., "arguments_sha256": ...}`.
pub async fn decide(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path((id, verb)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Response {
    let verb = match verb.as_str() {
        "approve" => Verb::Approve,
        "deny" => Verb::Deny,
        other => {
            return error(
                StatusCode::NOT_FOUND,
                format!("no action {other:?}: POST .../approve or .../deny"),
            );
        }
    };
    let principal = match who(&app, &headers, &Method::POST, peer, "approvals").await {
        Ok(p) => p,
        Err(resp) => return resp,
    };
    let body: DecisionBody = if body.is_empty() {
        DecisionBody::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(b) => b,
            Err(e) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "the body must be JSON {{\"reason\": \"...\", \"arguments_sha256\": \"...\"}} (both optional for approve): {e}"
                    ),
                );
            }
        }
    };
    let (reason, digest) = (body.reason, body.arguments_sha256);
    match app
        .relay
        .approvals
        .decide(&id, &principal, verb, reason.clone(), digest.as_deref())
        .await
    {
        Ok(p) => Json(p.to_json()).into_response(),
        Err(crate::approval::DecideError::NotFound(_))
            if let Some(remote) = app.relay.approvals.remote() =>
        {
            // Another replica of the shared log may hold the call.
            match remote
                .forward(&id, &principal, verb, reason, digest.as_deref())
                .await
            {
                Ok(Some(a)) => (
                    StatusCode::from_u16(a.status).unwrap_or(StatusCode::BAD_GATEWAY),
                    Json(a.body),
                )
                    .into_response(),
                Ok(None) => error(
                    StatusCode::NOT_FOUND,
                    crate::approval::DecideError::NotFound(id).to_string(),
                ),
                Err(e) => {
                    tracing::warn!(approval = %id, who = %principal.name, "couldn't hand the decision to the replica holding the call: {e}");
                    error(StatusCode::SERVICE_UNAVAILABLE, e)
                }
            }
        }
        Err(e) => {
            tracing::info!(approval = %id, who = %principal.name, "approval decision refused: {e}");
            error(e.status(), e.to_string())
        }
    }
}
