//! The log as C2SP `tlog-tiles` at `[audit] tiles_prefix` (default `/log`): `checkpoint` and
//! `tile/…`, readable without a token unless `[audit] tiles_public = false`.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Path, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use tlog::tiles::Tile;

use super::App;
use crate::tiles::TileError;

/// Full tiles never change.
const IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// A partial tile does not change either, but a mirror may drop it once the full one exists.
const PARTIAL: &str = "public, max-age=3600";
/// The checkpoint changes every second while the log grows.
const CHECKPOINT: &str = "no-cache";

fn text(status: StatusCode, body: String) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}

/// Tile reads at once: each takes one of the log's kept readers and reads up to 4 MiB; more
/// wait their turn.
static READS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(8);

/// `None` when the caller may read tiles; the refusal otherwise. Public tiles still go through
/// the per-address rate limit every request does.
async fn refused(app: &App, headers: &HeaderMap, peer: SocketAddr) -> Option<Response> {
    if app.tiles_public {
        return match super::gate_address(app, headers, peer) {
            Ok(_) => None,
            Err(limited) => {
                let mut resp = text(limited.status(), format!("{limited}\n"));
                if let Some(secs) = limited.retry_after() {
                    resp.headers_mut()
                        .insert(header::RETRY_AFTER, HeaderValue::from(secs));
                }
                Some(resp)
            }
        };
    }
    super::approvals::who(app, headers, &Method::GET, peer, "tiles")
        .await
        .err()
}

/// `GET {prefix}/checkpoint`: the latest published checkpoint with its cosignatures.
pub async fn checkpoint(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = refused(&app, &headers, peer).await {
        return r;
    }
    let audit = &app.relay.audit;
    if let Some(why) = audit.halted() {
        return text(StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n"));
    }
    match audit.latest_checkpoint() {
        Some(cp) => (
            [
                (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
                (header::CACHE_CONTROL, CHECKPOINT),
            ],
            cp.note,
        )
            .into_response(),
        None => text(
            StatusCode::NOT_FOUND,
            "no checkpoint has been signed yet\n".into(),
        ),
    }
}

/// `GET {prefix}/tile/{path}`: a hash tile or an entry bundle of the published tree.
pub async fn tile(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(path): Path<String>,
) -> Response {
    if let Some(r) = refused(&app, &headers, peer).await {
        return r;
    }
    let tile = match Tile::parse(&format!("tile/{path}")) {
        Ok(t) => t,
        Err(e) => return text(StatusCode::NOT_FOUND, format!("{e}\n")),
    };
    let audit = &app.relay.audit;
    if let Some(why) = audit.halted() {
        return text(StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n"));
    }
    if audit.entry_version() != tlog::entry::V2 {
        return text(StatusCode::NOT_FOUND, format!("{}\n", TileError::Version1));
    }
    let size = audit.latest_checkpoint().map_or(0, |c| c.size);
    let readers = audit.readers().clone();
    let Ok(_turn) = READS.acquire().await else {
        return text(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n".into());
    };
    let read = tokio::task::spawn_blocking(move || {
        let reader = readers.take()?;
        let read = crate::tiles::read(&reader, tile, size);
        if matches!(read, Err(TileError::Store(_))) {
            reader.discard();
        }
        drop(reader);
        read
    })
    .await;
    match read {
        Ok(Ok(bytes)) => (
            [
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/octet-stream"),
                ),
                (
                    header::CACHE_CONTROL,
                    HeaderValue::from_static(if tile.is_full() { IMMUTABLE } else { PARTIAL }),
                ),
            ],
            bytes,
        )
            .into_response(),
        Ok(Err(e @ TileError::NotInTree { .. })) => text(StatusCode::NOT_FOUND, format!("{e}\n")),
        Ok(Err(e)) => {
            tracing::error!(tile = %tile, "couldn't read a tile: {e}");
            text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n"))
        }
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
    }
}
