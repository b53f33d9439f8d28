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

/// `GET /api/v1/log/checkpoint`: the latest published checkpoint (a C2SP signed note, with
/// its witnesses' cosignatures). Not served while an integrity alarm stops the log: a gateway
/// whose witnesses saw a larger or another tree must not hand out an older one.
pub async fn checkpoint(State(app): State<Arc<App>>) -> Response {
    if let Some(why) = app.relay.audit.halted() {
        return text(StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n"));
    }
    match app.relay.audit.latest_checkpoint() {
        Some(cp) => text(StatusCode::OK, cp.note),
        None => text(
            StatusCode::NOT_FOUND,
            "no checkpoint has been published yet\n".into(),
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
    size: Option<String>,
}

/// A query parameter as a number; `Err` is the 400 to answer.
fn number(v: Option<&str>, name: &str) -> Result<Option<u64>, Box<Response>> {
    v.map(|v| {
        v.parse::<u64>().map_err(|_| {
            Box::new(text(
                StatusCode::BAD_REQUEST,
                format!("?{name}= must be a non-negative integer, not {v:?}\n"),
            ))
        })
    })
    .transpose()
}

/// `GET /api/v1/log/proof?index=N[&size=M]`: a C2SP tlog-proof of entry N in the latest
/// published checkpoint, or in the published checkpoint of M entries.
pub async fn proof(State(app): State<Arc<App>>, Query(q): Query<ProofQuery>) -> Response {
    let Some(index) = q.index.as_deref().and_then(|i| i.parse::<u64>().ok()) else {
        return text(
            StatusCode::BAD_REQUEST,
            "give the entry as ?index=N (a non-negative integer)\n".into(),
        );
    };
    let size = match number(q.size.as_deref(), "size") {
        Ok(s) => s,
        Err(r) => return *r,
    };
    match app.relay.audit.proof(index, size).await {
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
        Err(e @ AuditError::Unavailable(_)) => {
            text(StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n"))
        }
        Err(e @ AuditError::Proof(_)) if size.is_some() => {
            text(StatusCode::NOT_FOUND, format!("{e}\n"))
        }
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
    }
}

#[derive(Deserialize)]
pub struct ConsistencyQuery {
    from: Option<String>,
    to: Option<String>,
}

/// `GET /api/v1/log/consistency?from=M&to=N`: the RFC 9162 consistency proof between the trees
/// of M and N entries (N at most the latest published checkpoint's size; default that size),
/// as JSON `{"from","to","proof":[base64…]}`.
pub async fn consistency(
    State(app): State<Arc<App>>,
    Query(q): Query<ConsistencyQuery>,
) -> Response {
    let (from, to) = match (
        number(q.from.as_deref(), "from"),
        number(q.to.as_deref(), "to"),
    ) {
        (Ok(Some(f)), Ok(t)) => (f, t),
        (Ok(None), _) => {
            return text(
                StatusCode::BAD_REQUEST,
                "give the older tree size as ?from=M\n".into(),
            );
        }
        (Err(r), _) | (_, Err(r)) => return *r,
    };
    let audit = &app.relay.audit;
    let to = to.unwrap_or_else(|| audit.latest_checkpoint().map_or(0, |c| c.size));
    match audit.consistency(from, to).await {
        Ok(proof) => {
            use base64::Engine as _;
            let proof: Vec<String> = proof
                .iter()
                .map(|h| base64::engine::general_purpose::STANDARD.encode(h.0))
                .collect();
            axum::Json(serde_json::json!({ "from": from, "to": to, "proof": proof }))
                .into_response()
        }
        Err(e @ AuditError::Unavailable(_)) => {
            text(StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n"))
        }
        Err(e) => text(StatusCode::BAD_REQUEST, format!("{e}\n")),
    }
}

/// `GET /api/v1/log/witnesses`: the witnesses' state (mode, quorum, lag, each witness's last
/// outcome and alarm), and any integrity alarm. 404 when the gateway has no witnesses.
pub async fn witnesses(State(app): State<Arc<App>>) -> Response {
    let audit = &app.relay.audit;
    match audit.witnesses() {
        Some(report) => axum::Json(serde_json::json!({
            "witnesses": report,
            "alarm": audit.halted(),
        }))
        .into_response(),
        None => text(
            StatusCode::NOT_FOUND,
            "this gateway has no witnesses ([witness] is not configured)\n".into(),
        ),
    }
}
