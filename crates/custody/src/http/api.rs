//! `/api/v1/log/…`: what anyone checking the log needs from a running gateway.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use http::{StatusCode, header};
use serde::Deserialize;

use super::App;
use crate::audit::AuditError;

fn text(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

/// `GET /api/v1/log/checkpoint`: the latest signed checkpoint (a C2SP signed note).
pub async fn checkpoint(State(app): State<Arc<App>>) -> Response {
    match app.relay.audit.latest_checkpoint() {
        Some(cp) => text(StatusCode::OK, cp.note),
        None => text(
            StatusCode::NOT_FOUND,
            "no checkpoint has been signed yet\n".into(),
        ),
    }
}

/// `GET /api/v1/log/key`: the log's verifier key (`name+keyid+base64`).
pub async fn key(State(app): State<Arc<App>>) -> Response {
    text(
        StatusCode::OK,
        format!("{}\n", app.relay.audit.verifier().to_key_string()),
    )
}

#[derive(Deserialize)]
pub struct ProofQuery {
    index: Option<String>,
}

/// `GET /api/v1/log/proof?index=N`: a C2SP tlog-proof of entry N in the latest checkpoint.
pub async fn proof(State(app): State<Arc<App>>, Query(q): Query<ProofQuery>) -> Response {
    let Some(index) = q.index.as_deref().and_then(|i| i.parse::<u64>().ok()) else {
        return text(
            StatusCode::BAD_REQUEST,
            "give the entry as ?index=N (a non-negative integer)\n".into(),
        );
    };
    match app.relay.audit.proof(index).await {
        Ok(p) => text(StatusCode::OK, p),
        Err(e @ AuditError::NotYetCheckpointed { size, .. })
            if index < app.relay.audit.head().size || size == 0 =>
        {
            text(StatusCode::CONFLICT, format!("{e}\n"))
        }
        Err(AuditError::NotYetCheckpointed { .. }) => text(
            StatusCode::NOT_FOUND,
            format!("there is no entry {index} in the log\n"),
        ),
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
    }
}
