//! What a witness remembers of each log it accepts: the latest checkpoint it cosigned, kept as
//! the cosigned note itself (the log's verified signatures and the witness's cosignature), one
//! file per log under `DIR/logs/<hex SHA-256 of the origin>`, and the checks of tlog-witness
//! §add-checkpoint against it.
//!
//! Atomicity (§add-checkpoint: "checking the old size against the latest checkpoint and
//! persisting the new checkpoint must be performed atomically"): each log has one async mutex,
//! held from the old-size check until the new state is on disk. Writes go to a temporary file
//! that is fsynced, renamed over the old one, and the directory fsynced; only then does the
//! in-memory state move and the witness answer. A failed write poisons the log until restart,
//! so memory and disk never disagree about what was cosigned.

use std::collections::HashMap;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tlog::cosignature::{CosignatureSigner, CosignatureVerifier};
use tlog::proof::verify_consistency;
use tlog::{Checkpoint, Hash, Note};

/// Requests kept as evidence per log (log-signed checkpoints that failed a consistency check).
pub const MAX_EVIDENCE: usize = 100;

/// The latest checkpoint a witness cosigned for one log.
#[derive(Debug, Clone)]
pub struct Cosigned {
    pub checkpoint: Checkpoint,
    /// The note as served by the monitoring endpoint: checkpoint text, the log signatures the
    /// witness verified, its own cosignature.
    pub note: String,
    /// The cosignature's timestamp.
    pub timestamp: u64,
}

/// Why a checkpoint is not cosigned: each maps to one status of §add-checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// 400: malformed, or an old size larger than the checkpoint's.
    #[error("{0}")]
    BadRequest(String),
    /// 403: no signature of a trusted key verifies, or one fails.
    #[error("{0}")]
    Forbidden(String),
    /// 404: the origin is not a log this witness accepts.
    #[error("{0}")]
    UnknownOrigin(String),
    /// 409: the old size is not the size last cosigned (the body names that size).
    #[error("the old size {old} is not the size this witness last cosigned for the log ({size})")]
    Conflict { old: u64, size: u64 },
    /// 422: the checkpoint is not consistent with what was cosigned (a fork, or a bad proof).
    #[error("{0}")]
    Inconsistent(String),
    /// 503: the witness cannot cosign now (its clock, or its disk).
    #[error("{0}")]
    Unavailable(String),
}

/// The checks of §add-checkpoint after the signature: old size, empty tree, proof, roots.
///
/// # Errors
/// The [`Refusal`] the spec names for the first failed check.
pub fn check(
    latest: Option<&Checkpoint>,
    old: u64,
    proof: &[Hash],
    cp: &Checkpoint,
) -> Result<(), Refusal> {
    if old > cp.size {
        return Err(Refusal::BadRequest(format!(
            "the old size {old} is larger than the checkpoint's size {}",
            cp.size
        )));
    }
    let stored = latest.map_or(0, |l| l.size);
    if old != stored {
        return Err(Refusal::Conflict { old, size: stored });
    }
    if cp.size == 0 && cp.root != Hash::empty() {
        return Err(Refusal::Inconsistent(
            "a checkpoint of size 0 must have the root of the empty tree".into(),
        ));
    }
    match latest {
        // Never cosigned (or only the empty tree): every tree extends the empty one.
        None => {
            if !proof.is_empty() {
                return Err(Refusal::Inconsistent(
                    "the old size is 0, so the consistency proof must be empty".into(),
                ));
            }
            Ok(())
        }
        Some(l) if l.size == 0 && !proof.is_empty() => Err(Refusal::Inconsistent(
            "the old size is 0, so the consistency proof must be empty".into(),
        )),
        Some(l) if l.size == cp.size && l.root != cp.root => Err(Refusal::Inconsistent(format!(
            "this witness cosigned a different root at size {} ({}); this checkpoint ({}) is a fork of the log",
            l.size, l.root, cp.root
        ))),
        Some(l) => verify_consistency(l.size, cp.size, proof, &l.root, &cp.root).map_err(|e| {
            Refusal::Inconsistent(format!(
                "the consistency proof from size {} (root {}) to size {} does not verify: {e}; the log's history differs from what this witness cosigned",
                l.size, l.root, cp.size
            ))
        }),
    }
}

/// One log's slot: its state, and whether a failed write took it out of service.
#[derive(Debug, Default)]
pub struct Slot {
    pub latest: Option<Cosigned>,
    pub poisoned: Option<String>,
    evidence: usize,
}

/// Every accepted log's slot, and where they live on disk.
pub struct Store {
    dir: PathBuf,
    slots: HashMap<String, Arc<tokio::sync::Mutex<Slot>>>,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("couldn't use the witness data directory {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the state of log {origin:?} in {path} is damaged: {reason}. A witness that forgets what it cosigned can be led to cosign a fork: do not delete the file; if it cannot be recovered, retire this witness (a new --data directory and key)"
    )]
    Damaged {
        origin: String,
        path: PathBuf,
        reason: String,
    },
}

impl Store {
    /// Opens `dir/logs` (mode 0700) and loads the state of each origin, checking every stored
    /// note against the witness's own key.
    ///
    /// # Errors
    /// [`StoreError`]: the directory cannot be used, or a state file is damaged.
    pub fn open<'a>(
        dir: &Path,
        origins: impl IntoIterator<Item = &'a str>,
        own: &CosignatureVerifier,
    ) -> Result<Self, StoreError> {
        let dir = dir.join("logs");
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| StoreError::Io { path, source }
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(io(&dir))?;
        let mut slots = HashMap::new();
        for origin in origins {
            let path = dir.join(tlog::witness::origin_hash(origin));
            let latest = match std::fs::read(&path) {
                Ok(bytes) => {
                    Some(
                        load(origin, &bytes, own).map_err(|reason| StoreError::Damaged {
                            origin: origin.to_string(),
                            path: path.clone(),
                            reason,
                        })?,
                    )
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => return Err(io(&path)(e)),
            };
            let evidence = std::fs::read_dir(evidence_dir(&dir, origin))
                .map(Iterator::count)
                .unwrap_or(0);
            slots.insert(
                origin.to_string(),
                Arc::new(tokio::sync::Mutex::new(Slot {
                    latest,
                    poisoned: None,
                    evidence,
                })),
            );
        }
        Ok(Self { dir, slots })
    }

    /// The slot of an accepted origin.
    pub fn slot(&self, origin: &str) -> Option<Arc<tokio::sync::Mutex<Slot>>> {
        self.slots.get(origin).cloned()
    }

    /// Cosigns `cp` (whose verified note is `note`, holding only trusted log signatures) as of
    /// `now` and persists it as the slot's new state; the caller holds the slot's lock and has
    /// run [`check`]. Returns the cosignature line.
    ///
    /// # Errors
    /// [`Refusal::Unavailable`]: the clock reads earlier than the previous cosignature, or the
    /// write failed (which poisons the slot).
    pub async fn cosign(
        &self,
        slot: &mut Slot,
        signer: &CosignatureSigner,
        cp: Checkpoint,
        mut note: Note,
        now: u64,
    ) -> Result<tlog::note::NoteSignature, Refusal> {
        if let Some(l) = &slot.latest
            && now < l.timestamp
        {
            return Err(Refusal::Unavailable(format!(
                "this witness's clock reads {now}, earlier than its previous cosignature for the log ({}); it will not date a cosignature back. Fix the clock",
                l.timestamp
            )));
        }
        let line = signer
            .sign(&note.text, now)
            .map_err(|e| Refusal::Unavailable(format!("couldn't cosign: {e}")))?;
        note.signatures.push(line.clone());
        let text = note.encode();
        let path = self.dir.join(tlog::witness::origin_hash(&cp.origin));
        let bytes = text.clone().into_bytes();
        let written = tokio::task::spawn_blocking(move || write_atomic(&path, &bytes))
            .await
            .map_err(std::io::Error::other)
            .and_then(|r| r);
        if let Err(e) = written {
            let reason = format!(
                "couldn't persist the new state of log {:?}: {e}; this log is refused until the witness restarts",
                cp.origin
            );
            slot.poisoned = Some(reason.clone());
            return Err(Refusal::Unavailable(reason));
        }
        slot.latest = Some(Cosigned {
            checkpoint: cp,
            note: text,
            timestamp: now,
        });
        Ok(line)
    }

    /// Keeps a log-signed request that failed a consistency check (§add-checkpoint: "MAY log
    /// the request ... as it might be proof of log misbehavior"), at most [`MAX_EVIDENCE`] per
    /// log. Only the holder of a log key can make the witness write here.
    pub async fn keep_evidence(&self, slot: &mut Slot, origin: &str, body: Vec<u8>, now: u64) {
        if slot.evidence >= MAX_EVIDENCE {
            return;
        }
        slot.evidence += 1;
        let dir = evidence_dir(&self.dir, origin);
        let name = format!("{now}-{}.txt", slot.evidence);
        let result = tokio::task::spawn_blocking(move || {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)?;
            write_atomic(&dir.join(name), &body)
        })
        .await;
        match result {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(
                origin,
                "couldn't keep the refused checkpoint as evidence: {e}"
            ),
            Err(e) => tracing::error!(
                origin,
                "couldn't keep the refused checkpoint as evidence: {e}"
            ),
        }
    }
}

fn evidence_dir(logs: &Path, origin: &str) -> PathBuf {
    logs.with_file_name("evidence")
        .join(tlog::witness::origin_hash(origin))
}

/// Reads a stored note: its checkpoint must be for `origin` and carry this witness's valid
/// cosignature.
fn load(origin: &str, bytes: &[u8], own: &CosignatureVerifier) -> Result<Cosigned, String> {
    let note = Note::parse(bytes).map_err(|e| e.to_string())?;
    let checkpoint = Checkpoint::from_text(&note.text).map_err(|e| e.to_string())?;
    if checkpoint.origin != origin {
        return Err(format!("it holds a checkpoint of {:?}", checkpoint.origin));
    }
    let timestamp = own
        .verify(&note)
        .map_err(|e| format!("its cosignature by this witness's key: {e}"))?;
    Ok(Cosigned {
        checkpoint,
        note: String::from_utf8_lossy(bytes).into_owned(),
        timestamp,
    })
}

/// Writes `bytes` to `path` so that a crash leaves either the old or the new content: a
/// temporary file (0600) fsynced, renamed over `path`, and the directory fsynced.
///
/// # Errors
/// The first failed step.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| std::io::Error::other("no parent directory"))?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    sync_dir(dir)
}

/// fsyncs a directory, so that a rename or a new file in it is durable.
///
/// # Errors
/// The open or the fsync.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests;
