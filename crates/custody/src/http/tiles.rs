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
            "no checkpoint has been published yet\n".into(),
        ),
    }
}

/// `GET {prefix}/tile/{path}`: a hash tile or an entry bundle of the published tree.
pub async fn tile(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    uri: http::Uri,
    Path(path): Path<String>,
) -> Response {
    if let Some(r) = refused(&app, &headers, peer).await {
        return r;
    }
    // The path as sent: a tile has one spelling, and `%30%30%30` (decoded before `path`) is
    // not it, or caches would hold one tile under many names.
    if uri.path().contains('%') {
        return text(
            StatusCode::NOT_FOUND,
            format!(
                "{} is not a tile path: tile paths are written without percent-encoding\n",
                uri.path()
            ),
        );
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
    let gzip = matches!(tile, Tile::Entries { .. }) && accepts_gzip(&headers);
    if let Some(zipped) = gzip.then(|| app.zipped.get(tile)).flatten() {
        return served(tile, zipped, true);
    }
    let Ok(_turn) = READS.acquire().await else {
        return text(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n".into());
    };
    let app_for_read = app.clone();
    let read = tokio::task::spawn_blocking(move || {
        let reader = readers.take()?;
        let read = crate::tiles::read(&reader, tile, size);
        if matches!(read, Err(TileError::Store(_))) {
            reader.discard();
        }
        drop(reader);
        // Entry bundles are text and shrink several times (tlog-tiles: SHOULD be compressed).
        read.map(|bytes| match gzip.then(|| gzipped(&bytes)).flatten() {
            Some(zipped) => {
                let zipped = bytes::Bytes::from(zipped);
                app_for_read.zipped.put(tile, &zipped);
                (zipped, true)
            }
            None => (bytes::Bytes::from(bytes), false),
        })
    })
    .await;
    match read {
        Ok(Ok((bytes, gzip))) => served(tile, bytes, gzip),
        Ok(Err(e @ TileError::NotInTree { .. })) => text(StatusCode::NOT_FOUND, format!("{e}\n")),
        Ok(Err(e)) => {
            tracing::error!(tile = %tile, "couldn't read a tile: {e}");
            text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n"))
        }
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
    }
}

/// A tile's answer: its type, its cache headers, and for an entry bundle `Vary` and (when
/// `gzip`) `Content-Encoding`.
fn served(tile: Tile, bytes: bytes::Bytes, gzip: bool) -> Response {
    let mut resp = (
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
        .into_response();
    if matches!(tile, Tile::Entries { .. }) {
        let h = resp.headers_mut();
        h.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
        if gzip {
            h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        }
    }
    resp
}

/// Full entry bundles gzipped, the most recent few: what a reader can make the gateway
/// compress again and again is read from here instead.
#[derive(Default)]
pub(super) struct Zipped(std::sync::Mutex<std::collections::VecDeque<(u64, bytes::Bytes)>>);

impl Zipped {
    /// Bundles kept (a full bundle of 1 KiB headers gzips to about 60 KB).
    const KEPT: usize = 32;

    fn get(&self, tile: Tile) -> Option<bytes::Bytes> {
        let Tile::Entries { index, .. } = tile else {
            return None;
        };
        if !tile.is_full() {
            return None;
        }
        let kept = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        kept.iter()
            .find(|(i, _)| *i == index)
            .map(|(_, b)| b.clone())
    }

    fn put(&self, tile: Tile, zipped: &bytes::Bytes) {
        if !tile.is_full() {
            return;
        }
        let Tile::Entries { index, .. } = tile else {
            return;
        };
        let mut kept = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if kept.iter().any(|(i, _)| *i == index) {
            return;
        }
        if kept.len() >= Self::KEPT {
            kept.pop_front();
        }
        kept.push_back((index, zipped.clone()));
    }
}

/// Whether the request's `Accept-Encoding` takes gzip: named with a q-value above 0, or
/// covered by `*` when gzip is not named (RFC 9110 §12.5.3).
fn accepts_gzip(headers: &HeaderMap) -> bool {
    let items = headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|item| {
            let mut parts = item.split(';');
            let coding = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            let refused = parts.any(|p| {
                let p = p.trim();
                p.get(..2).is_some_and(|k| k.eq_ignore_ascii_case("q="))
                    && p[2..].trim().parse::<f32>().is_ok_and(|q| q <= 0.0)
            });
            (coding, !refused)
        })
        .collect::<Vec<_>>();
    match items.iter().find(|(c, _)| c == "gzip" || c == "x-gzip") {
        Some((_, taken)) => *taken,
        None => items.iter().any(|(c, taken)| c == "*" && *taken),
    }
}

/// `bytes` gzipped at the fastest level (a bundle is read once per cache, and CPU is what a
/// reader can make the gateway spend).
/// `None` if it could not be (then the bundle goes out as it is).
fn gzipped(bytes: &[u8]) -> Option<Vec<u8>> {
    use std::io::Write as _;
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(bytes.len() / 4),
        flate2::Compression::fast(),
    );
    enc.write_all(bytes).ok()?;
    enc.finish().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_str(value).unwrap(),
        );
        h
    }

    #[test]
    fn only_full_bundles_are_kept_zipped_and_only_the_latest_few() {
        let z = Zipped::default();
        let full = |index| Tile::Entries { index, width: 256 };
        let partial = Tile::Entries { index: 0, width: 7 };
        let bytes = bytes::Bytes::from_static(b"zipped");
        z.put(partial, &bytes);
        assert_eq!(z.get(partial), None, "a partial bundle changes: never kept");
        z.put(
            Tile::Hashes {
                level: 0,
                index: 0,
                width: 256,
            },
            &bytes,
        );
        assert_eq!(z.get(full(0)), None);
        for i in 0..=Zipped::KEPT as u64 {
            z.put(full(i), &bytes::Bytes::from(i.to_string()));
        }
        assert_eq!(z.get(full(0)), None, "the oldest went first");
        assert_eq!(z.get(full(5)), Some(bytes::Bytes::from("5")));
        assert_eq!(z.get(partial), None);
    }

    #[test]
    fn gzip_is_sent_only_to_whoever_takes_it() {
        assert!(accepts_gzip(&with("gzip, identity")));
        assert!(accepts_gzip(&with("br;q=1.0, GZIP;q=0.5")));
        assert!(accepts_gzip(&with("*")));
        assert!(!accepts_gzip(&with("identity")));
        assert!(!accepts_gzip(&with("gzip;q=0")));
        assert!(!accepts_gzip(&with("gzip; q=0.0, identity")));
        assert!(!accepts_gzip(&HeaderMap::new()));
        // `*` never covers a coding refused by name; q is case-insensitive.
        assert!(!accepts_gzip(&with("gzip;q=0, *")));
        assert!(!accepts_gzip(&with("gzip;Q=0")));
        assert!(!accepts_gzip(&with("*;q=0")));
    }
}
