//! What operators' tools call: `/metrics` for Prometheus, `/healthz` and `/readyz` for probes.
//! None of them checks `Host` (a scraper or the kubelet sends the pod's address), and none
//! needs a caller's token; `/metrics` asks for its own when `[metrics] token` is set.
//!
//! With `[metrics] listen`, they are also served on a listener of their own that stays up
//! until the gateway has stopped, so `/readyz` says "shutting down" while calls drain (the main
//! listener stops accepting at once).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use sha2::Digest;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::relay::Relay;

/// How long `/readyz` waits for the store to answer.
const STORE_PROBE: Duration = Duration::from_secs(2);

/// What the operator routes need.
pub struct Ops {
    pub relay: Arc<Relay>,
    /// The `[[export]]` sinks, for their lag.
    pub exports: Arc<crate::export::Exports>,
    /// SHA-256 of the token `/metrics` asks for.
    pub token_sha256: Option<[u8; 32]>,
    /// Cancelled when shutdown begins.
    pub shutting_down: CancellationToken,
    /// Whether `/metrics` is served.
    pub metrics: bool,
    /// How old the latest checkpoint may be while the log is live ([`freshness`]).
    pub fresh_within: Duration,
}

/// The operator routes, to merge into a router or serve alone.
pub fn routes(ops: Arc<Ops>) -> Router {
    let router = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz));
    let router = if ops.metrics {
        router.route("/metrics", get(metrics))
    } else {
        router
    };
    router.with_state(ops)
}

/// Binds `addr` for the operator routes alone.
///
/// # Errors
/// The address cannot be bound.
pub async fn bind(addr: SocketAddr) -> std::io::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    Ok((listener, bound))
}

/// Serves the operator routes on `listener` until `done` is cancelled.
pub fn serve(
    listener: TcpListener,
    ops: Arc<Ops>,
    done: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let app = routes(ops).fallback(|| async { StatusCode::NOT_FOUND });
    tokio::spawn(async move {
        let served = axum::serve(listener, app).with_graceful_shutdown(async move {
            done.cancelled().await;
        });
        if let Err(e) = served.await {
            tracing::error!("the metrics listener failed: {e}");
        }
    })
}

async fn metrics(State(ops): State<Arc<Ops>>, headers: HeaderMap) -> Response {
    if let Some(want) = &ops.token_sha256 {
        let sent = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.split_once(' ')
                    .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
                    .map(|(_, t)| t.trim())
            });
        // Hashes are compared, so the comparison's time says nothing about the token.
        let ok =
            sent.is_some_and(|t| <[u8; 32]>::from(sha2::Sha256::digest(t.as_bytes())) == *want);
        if !ok {
            let why = if sent.is_some() {
                "the bearer token is not the one [metrics] token names"
            } else {
                "send the token [metrics] token names: Authorization: Bearer TOKEN"
            };
            let mut resp = (
                StatusCode::UNAUTHORIZED,
                axum::Json(serde_json::json!({ "error": why })),
            )
                .into_response();
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"custody metrics\""),
            );
            return resp;
        }
    }
    let body = crate::metrics::render(&ops.relay, &ops.exports);
    ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], body).into_response()
}

/// Ready when the gateway takes calls and its log can be trusted to record them: 503 with
/// every reason as JSON otherwise, most serious first.
async fn readyz(State(ops): State<Arc<Ops>>) -> Response {
    let reasons = not_ready(&ops).await;
    if reasons.is_empty() {
        return axum::Json(serde_json::json!({ "ready": true })).into_response();
    }
    (
        StatusCode::SERVICE_UNAVAILABLE,
        axum::Json(serde_json::json!({ "ready": false, "reasons": reasons })),
    )
        .into_response()
}

/// Every reason the gateway is not ready.
async fn not_ready(ops: &Ops) -> Vec<String> {
    let audit = &ops.relay.audit;
    let mut reasons = Vec::new();
    if ops.shutting_down.is_cancelled() {
        reasons.push(
            "shutting down: calls in progress are finishing, no new ones are taken".to_string(),
        );
    }
    // Alarms, a checkpoint not durable, a failed commit, required witnesses behind.
    reasons.extend(audit.health().reasons);
    if let Err(e) = audit.probe_store(STORE_PROBE).await {
        reasons.push(format!("the log's store does not answer: {e}"));
    }
    let bound = ops.fresh_within;
    match audit.latest_checkpoint() {
        None => reasons.push("no checkpoint is published yet".to_string()),
        Some(cp) => {
            let age = Duration::from_nanos(crate::audit::now_ns().saturating_sub(cp.signed_ns));
            if age > bound {
                reasons.push(format!(
                    "the latest checkpoint (size {}) is {} old, more than the {} a live log's may be: checkpoints are not being published",
                    cp.size,
                    humantime::format_duration(Duration::from_secs(age.as_secs())),
                    humantime::format_duration(bound),
                ));
            }
        }
    }
    reasons
}

/// How old the latest checkpoint may be while the log is live: an idle log signs one after each
/// heartbeat, a busy one every checkpoint interval; one missed heartbeat is tolerated, and the
/// witnesses' timeout when they must cosign it first.
pub fn freshness(config: &crate::config::Config) -> Duration {
    let a = &config.audit;
    let witnesses = config
        .witness
        .as_ref()
        .map_or(Duration::ZERO, |w| w.timeout);
    a.heartbeat_interval * 2 + a.checkpoint_interval * 3 + witnesses
}
