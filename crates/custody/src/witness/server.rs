//! `custody witness serve`: a C2SP tlog-witness (<https://c2sp.org/tlog-witness>, current
//! main) for the logs it is told to accept.
//!
//! * `POST /add-checkpoint` (§add-checkpoint): 200 with the cosignature line; 400 malformed
//!   or old size above the checkpoint's; 403 no trusted log signature (or a trusted key's line
//!   that fails); 404 unknown origin; 409 `text/x.tlog.size` with the size last cosigned;
//!   413 body too large; 422 a proof that does not verify, or the same size with another root
//!   (witnesses of tlog-witness v1.0.0 answered 409 for that); 503 clock behind or disk failing.
//! * `GET /<hex SHA-256 of the origin>/checkpoint` (§Monitor Retrieval Mechanism): the latest
//!   cosigned checkpoint, with the log signatures verified and this witness's cosignature.
//!
//! Bounds an outsider can push against: [`MAX_CONNECTIONS`] connections (more are closed at
//! once), request headers within [`HEADER_TIMEOUT`], a body of at most
//! [`tlog::witness::MAX_ADD_CHECKPOINT_BYTES`] within [`BODY_TIMEOUT`]. Work per request before
//! any state is touched is one Ed25519 verification per trusted key; state is written only for
//! a checkpoint a trusted log key signed.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{Path as UrlPath, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http_body_util::{BodyExt as _, Limited};
use tlog::cosignature::{CosignatureSigner, CosignatureVerifier};
use tlog::note::NoteError;
use tlog::witness::{AddCheckpoint, MAX_ADD_CHECKPOINT_BYTES, SIZE_CONTENT_TYPE, encode_size};
use tlog::{Checkpoint, Note, Verifier};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::keys;
use super::state::{Refusal, Store, StoreError, check};

pub const MAX_CONNECTIONS: usize = 256;
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// A running witness's state: its key, the logs it accepts, what it cosigned.
pub struct Witness {
    signer: CosignatureSigner,
    /// Trusted keys by origin (a log key's name is its origin).
    logs: HashMap<String, Vec<Verifier>>,
    /// Origin by the hex SHA-256 of the origin, for the monitoring path.
    by_hash: HashMap<String, String>,
    store: Store,
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Key(#[from] keys::KeyError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "accept at least one log: --accept LOG_VKEY (the log's verifier key, name+keyid+base64)"
    )]
    NoLogs,
}

impl Witness {
    /// Loads the witness of a data directory (its key and its state for every accepted log).
    ///
    /// # Errors
    /// [`OpenError`]: no key, a damaged state file, no accepted log.
    pub fn open(data: &Path, accept: Vec<Verifier>) -> Result<Self, OpenError> {
        if accept.is_empty() {
            return Err(OpenError::NoLogs);
        }
        let signer = keys::load(data)?;
        let mut logs: HashMap<String, Vec<Verifier>> = HashMap::new();
        for v in accept {
            let keys = logs.entry(v.name().to_string()).or_default();
            if !keys.contains(&v) {
                keys.push(v);
            }
        }
        let store = Store::open(data, logs.keys().map(String::as_str), &signer.verifier())?;
        let by_hash = logs
            .keys()
            .map(|o| (tlog::witness::origin_hash(o), o.clone()))
            .collect();
        Ok(Self {
            signer,
            logs,
            by_hash,
            store,
        })
    }

    pub fn verifier(&self) -> CosignatureVerifier {
        self.signer.verifier()
    }

    /// The origins accepted, sorted.
    pub fn origins(&self) -> Vec<&str> {
        let mut o: Vec<&str> = self.logs.keys().map(String::as_str).collect();
        o.sort_unstable();
        o
    }

    /// The routes.
    pub fn router(self: Arc<Self>) -> axum::Router {
        axum::Router::new()
            .route("/add-checkpoint", post(add_checkpoint))
            .route("/{origin_hash}/checkpoint", get(monitor))
            .with_state(self)
    }

    /// Handles one `add-checkpoint` body as of `now` (POSIX seconds): the cosignature line,
    /// or the refusal.
    ///
    /// # Errors
    /// The [`Refusal`] tlog-witness names for the first failed check.
    pub async fn add(&self, body: &[u8], now: u64) -> Result<String, Refusal> {
        let bad = |e: &dyn std::fmt::Display| Refusal::BadRequest(e.to_string());
        let req = AddCheckpoint::parse(body).map_err(|e| bad(&e))?;
        let note = Note::parse(req.checkpoint.as_bytes())
            .map_err(|e| bad(&format!("the checkpoint: {e}")))?;
        let cp =
            Checkpoint::from_text(&note.text).map_err(|e| bad(&format!("the checkpoint: {e}")))?;
        let trusted = self.logs.get(&cp.origin).ok_or_else(|| {
            Refusal::UnknownOrigin(format!(
                "this witness does not accept the log {:?}",
                cp.origin
            ))
        })?;
        let note = self.trusted_signatures(trusted, note)?;
        let slot = self
            .store
            .slot(&cp.origin)
            .ok_or_else(|| Refusal::UnknownOrigin(cp.origin.clone()))?;
        // Held until the new state is on disk: the old-size check and the write are atomic.
        let mut slot = slot.lock().await;
        if let Some(reason) = &slot.poisoned {
            return Err(Refusal::Unavailable(reason.clone()));
        }
        if let Err(refusal) = check(
            slot.latest.as_ref().map(|l| &l.checkpoint),
            req.old,
            &req.proof,
            &cp,
        ) {
            if matches!(refusal, Refusal::Inconsistent(_)) {
                tracing::warn!(origin = %cp.origin, size = cp.size, "refused a log-signed checkpoint: {refusal}");
                self.store
                    .keep_evidence(&mut slot, &cp.origin, body.to_vec(), now)
                    .await;
            }
            return Err(refusal);
        }
        let (origin, size) = (cp.origin.clone(), cp.size);
        let line = self
            .store
            .cosign(&mut slot, &self.signer, cp, note, now)
            .await?;
        tracing::info!(%origin, size, "cosigned");
        Ok(line.to_line())
    }

    /// Checks the log's signatures and keeps only the trusted keys' lines (tlog-witness
    /// §add-checkpoint: unknown keys are ignored; 403 when none verifies or a trusted key's
    /// line fails).
    fn trusted_signatures(&self, trusted: &[Verifier], mut note: Note) -> Result<Note, Refusal> {
        let mut verified = false;
        for v in trusted {
            match v.verify(&note) {
                Ok(()) => verified = true,
                Err(NoteError::NoTrustedSignature) => {}
                Err(e) => {
                    return Err(Refusal::Forbidden(format!(
                        "a signature line of the trusted key {} does not verify: {e}",
                        v.to_key_string()
                    )));
                }
            }
        }
        if !verified {
            return Err(Refusal::Forbidden(
                "no signature of a key this witness trusts for the origin".into(),
            ));
        }
        note.signatures.retain(|s| {
            trusted
                .iter()
                .any(|v| v.name() == s.name && v.key_id() == s.key_id)
        });
        Ok(note)
    }

    /// The latest cosigned note of the log whose origin hashes to `hash`.
    pub async fn latest(&self, hash: &str) -> Option<String> {
        let origin = self.by_hash.get(hash)?;
        let slot = self.store.slot(origin)?;
        let slot = slot.lock().await;
        slot.latest.as_ref().map(|l| l.note.clone())
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn text(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

/// Turns a refusal into the status and body tlog-witness prescribes.
pub fn refusal_response(r: &Refusal) -> Response {
    match r {
        Refusal::Conflict { size, .. } => (
            StatusCode::CONFLICT,
            [(header::CONTENT_TYPE, SIZE_CONTENT_TYPE)],
            encode_size(*size),
        )
            .into_response(),
        Refusal::BadRequest(m) => text(StatusCode::BAD_REQUEST, format!("{m}\n")),
        Refusal::Forbidden(m) => text(StatusCode::FORBIDDEN, format!("{m}\n")),
        Refusal::UnknownOrigin(m) => text(StatusCode::NOT_FOUND, format!("{m}\n")),
        Refusal::Inconsistent(m) => text(StatusCode::UNPROCESSABLE_ENTITY, format!("{m}\n")),
        Refusal::Unavailable(m) => text(StatusCode::SERVICE_UNAVAILABLE, format!("{m}\n")),
    }
}

async fn add_checkpoint(State(w): State<Arc<Witness>>, body: Body) -> Response {
    let read = tokio::time::timeout(
        BODY_TIMEOUT,
        Limited::new(body, MAX_ADD_CHECKPOINT_BYTES).collect(),
    )
    .await;
    let bytes = match read {
        Ok(Ok(b)) => b.to_bytes(),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            return text(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "the body is larger than {MAX_ADD_CHECKPOINT_BYTES} bytes (an old size line, 63 proof lines and a checkpoint)\n"
                ),
            );
        }
        Ok(Err(e)) => {
            return text(
                StatusCode::BAD_REQUEST,
                format!("couldn't read the body: {e}\n"),
            );
        }
        Err(_) => {
            return text(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the body did not arrive within {}s\n",
                    BODY_TIMEOUT.as_secs()
                ),
            );
        }
    };
    match w.add(&bytes, now()).await {
        Ok(line) => text(StatusCode::OK, line),
        Err(r) => refusal_response(&r),
    }
}

async fn monitor(State(w): State<Arc<Witness>>, UrlPath(hash): UrlPath<String>) -> Response {
    match w.latest(&hash).await {
        Some(note) => text(StatusCode::OK, note),
        None => text(
            StatusCode::NOT_FOUND,
            "this witness has cosigned no checkpoint of a log with that origin hash\n".into(),
        ),
    }
}

/// Serves the witness on `listener` until `stop`, then lets requests in flight finish for up
/// to two seconds.
pub async fn serve(listener: TcpListener, witness: Arc<Witness>, stop: CancellationToken) {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use hyper_util::server::conn::auto::Builder;
    use hyper_util::service::TowerToHyperService;

    let service = TowerToHyperService::new(witness.router());
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        let (stream, _peer): (_, SocketAddr) = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::warn!("couldn't accept a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        // Past the bound a connection is closed at once (dropping the stream).
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            continue;
        };
        let service = service.clone();
        let stop = stop.clone();
        tasks.spawn(async move {
            let _permit = permit;
            let mut builder = Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .keep_alive(true);
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                () = stop.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(Duration::from_secs(2), conn).await;
                }
            }
        });
        // Reap finished connections so the set does not grow.
        while tasks.try_join_next().is_some() {}
    }
    let _ = tokio::time::timeout(Duration::from_secs(3), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
}
