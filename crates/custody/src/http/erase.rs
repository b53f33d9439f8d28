//! `POST /api/v1/log/entries/{index}/erase`: an eraser (`[audit] erasers`) deletes an entry's
//! payloads, recorded in a `payload_erased` entry with the reason and who asked. Anyone else
//! is refused, and the refusal is recorded.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::extract::{ConnectInfo, Path, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, Method, StatusCode};
use serde::Deserialize;
use serde_json::json;

use super::App;
use crate::audit::erase::EraseError;
use crate::audit::{AuditError, Direction, Draft, Kind};

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EraseBody {
    reason: String,
}

pub async fn erase(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(index): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let principal =
        match super::approvals::who(&app, &headers, &Method::POST, peer, "erasure").await {
            Ok(p) => p,
            Err(resp) => return resp,
        };
    let audit = &app.relay.audit;
    if !audit.erasers().iter().any(|e| *e == principal.name) {
        let why = format!(
            "{} may not erase payloads: only the principals [audit] erasers names may",
            principal.name
        );
        let mut draft = Draft::gateway(
            Kind::Rejected,
            "",
            json!({"refused": "payload erasure", "index": index.chars().take(40).collect::<String>(), "reason": why}).to_string(),
        );
        draft.direction = Direction::ClientToUpstream;
        draft.caller = principal.audit.clone();
        if let Err(e) = audit.append(draft).await {
            tracing::error!("couldn't record a refused erasure: {e}");
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("{why}; and the refusal could not be recorded: {e}"),
            );
        }
        tracing::warn!(who = %principal.name, "payload erasure refused");
        return error(StatusCode::FORBIDDEN, why);
    }
    let Ok(index) = index.parse::<u64>() else {
        return error(
            StatusCode::BAD_REQUEST,
            format!("{index:?} is not an entry index (a non-negative integer)"),
        );
    };

    let body: EraseBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("the body must be JSON {{\"reason\": \"...\"}}: {e}"),
            );
        }
    };
    match audit
        .erase(index, &body.reason, principal.audit.clone())
        .await
    {
        Ok(entry) => {
            tracing::info!(who = %principal.name, index, entry = entry.index, "payload erased");
            Json(json!({
                "erased": index,
                "entry": entry.index,
                "leaf": entry.leaf.to_hex(),
            }))
            .into_response()
        }
        Err(e) => {
            let status = match &e {
                EraseError::NoReason | EraseError::ReasonTooLong(_) => StatusCode::BAD_REQUEST,
                EraseError::NotInLog { .. } => StatusCode::NOT_FOUND,
                EraseError::Version1(_)
                | EraseError::NoPayload(..)
                | EraseError::AlreadyErased(_) => StatusCode::CONFLICT,
                EraseError::Audit(AuditError::Unavailable(_) | AuditError::Closed) => {
                    StatusCode::SERVICE_UNAVAILABLE
                }
                EraseError::Read(_) | EraseError::Audit(_) => StatusCode::INTERNAL_SERVER_ERROR,
            };
            error(status, e.to_string())
        }
    }
}
