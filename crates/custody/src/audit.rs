//! The audit log: every message that crosses the gateway becomes an entry, durable before the
//! message moves on, in an append-only Merkle tree whose signed checkpoints let anyone holding
//! one prove that nothing before it changed.
//!
//! * [`Audit::append`] hands an entry to the sequencer (`sequencer.rs`), a single thread that
//!   owns the store and commits every waiting entry in one transaction and one fsync, then
//!   acknowledges each with its index and leaf hash.
//! * The checkpointer (`checkpointer.rs`) signs a checkpoint at most every
//!   `checkpoint_interval` while the log grows, and writes a heartbeat entry when it is idle.
//! * Keys (`keys.rs`): the Ed25519 log key, created on first start.

mod checkpointer;
pub mod keys;
mod sequencer;
#[cfg(test)]
mod tests;
pub mod verify;

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

pub use tlog::entry::{Direction, Kind};
use tlog::{Hash, Signer, Verifier};

use crate::config::{AuditConfig, Durability};
pub use crate::store::Mark;
use crate::store::{LogReader, SqliteReader, SqliteStore, Store, StoreError, StoredCheckpoint};

/// The caller of entries made for a call without a token (where `auth.anonymous` allows it).
pub const ANONYMOUS: &str = r#"{"kind":"anonymous"}"#;

/// The caller of the gateway's own entries (start, stop, heartbeats).
pub const GATEWAY: &str = r#"{"kind":"gateway"}"#;

/// Nanoseconds since the Unix epoch.
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Why the log could not take an entry or produce a proof.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AuditError {
    #[error("the audit log is unavailable: {0}")]
    Unavailable(String),
    #[error("the audit log is shut down")]
    Closed,
    #[error("{0}")]
    Proof(String),
    #[error(
        "entry {index} is not covered by a checkpoint yet (latest covers {size}); retry after the next checkpoint"
    )]
    NotYetCheckpointed { index: u64, size: u64 },
}

/// An entry before the sequencer gives it its index.
#[derive(Debug, Clone)]
pub struct Draft {
    pub kind: Kind,
    pub direction: Direction,
    pub time_ns: u64,
    pub endpoint: Arc<str>,
    pub session: Option<Arc<str>>,
    /// The JSON-RPC id as JSON text.
    pub id: Option<String>,
    pub method: Option<String>,
    pub target: Option<String>,
    pub caller: Arc<str>,
    pub request: Option<u64>,
    /// A JSON object, kind-specific.
    pub detail: String,
    pub message: Bytes,
    /// Whether this entry opens or closes a pending approval (committed with it).
    pub mark: Option<Mark>,
}

impl Draft {
    /// An event of the gateway itself.
    pub fn gateway(kind: Kind, endpoint: &str, detail: String) -> Self {
        Self {
            kind,
            direction: Direction::Gateway,
            time_ns: now_ns(),
            endpoint: endpoint.into(),
            session: None,
            id: None,
            method: None,
            target: None,
            caller: GATEWAY.into(),
            request: None,
            detail,
            message: Bytes::new(),
            mark: None,
        }
    }

    fn encode(&self, index: u64) -> Vec<u8> {
        use std::borrow::Cow::Borrowed;
        tlog::Entry {
            index,
            kind: self.kind,
            direction: self.direction,
            time_ns: self.time_ns,
            endpoint: Borrowed(&self.endpoint),
            session: Borrowed(self.session.as_deref().unwrap_or("")),
            id: Borrowed(self.id.as_deref().unwrap_or("")),
            method: Borrowed(self.method.as_deref().unwrap_or("")),
            target: Borrowed(self.target.as_deref().unwrap_or("")),
            caller: Borrowed(&self.caller),
            request: self.request,
            detail: Borrowed(if self.detail.is_empty() {
                "{}"
            } else {
                &self.detail
            }),
            message: Borrowed(&self.message),
        }
        .encode()
    }
}

/// Where an entry landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    pub index: u64,
    pub leaf: Hash,
}

/// The tree as last committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    pub size: u64,
    pub root: Hash,
}

enum Job {
    Append(Draft, oneshot::Sender<Result<Appended, AuditError>>),
    Checkpoint(StoredCheckpoint, oneshot::Sender<Result<(), AuditError>>),
    /// Finish what is queued before this, then exit.
    Stop(oneshot::Sender<()>),
}

/// The audit log of a running gateway.
pub struct Audit {
    jobs: mpsc::Sender<Job>,
    signer: Arc<Signer>,
    verifier: Verifier,
    head: watch::Receiver<Head>,
    latest: Arc<RwLock<Option<StoredCheckpoint>>>,
    durability: Durability,
    data_dir: PathBuf,
    config: AuditConfig,
    sequencer: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// What opening the log found.
pub struct Opened {
    pub audit: Arc<Audit>,
    pub key_created: bool,
    pub entries: u64,
    /// Approvals a previous run left pending (it stopped while calls waited).
    pub pending_approvals: Vec<Unfinished>,
}

/// An approval whose `approval_requested` entry is in the log and whose end is not.
#[derive(Debug, Clone)]
pub struct Unfinished {
    pub id: String,
    /// The `approval_requested` entry.
    pub entry: u64,
    pub endpoint: String,
    pub session: Option<String>,
    /// The held request's entry.
    pub request: Option<u64>,
}

/// Why the log could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Key(#[from] keys::KeyError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "the stored log no longer matches the checkpoint it signed at size {size}: {why}; refusing to extend it (run `custody verify` to find what changed)"
    )]
    Diverged { size: u64, why: String },
}

/// A log must never sign a checkpoint inconsistent with one it signed before: before
/// appending, check that the stored tree extends the latest stored checkpoint.
fn check_continues(
    reader: &SqliteReader,
    cp: &StoredCheckpoint,
    verifier: &Verifier,
    size: u64,
    root: Hash,
) -> Result<(), OpenError> {
    let diverged = |why: String| OpenError::Diverged { size: cp.size, why };
    let (checkpoint, _) = tlog::Checkpoint::open(cp.note.as_bytes(), verifier).map_err(|e| {
        diverged(format!(
            "the checkpoint does not verify with the log's key ({e})"
        ))
    })?;
    if checkpoint.size > size {
        return Err(diverged(format!("the log holds only {size} entries")));
    }
    let proof = tlog::proof::consistency_proof(reader, checkpoint.size, size)
        .map_err(|e| diverged(format!("couldn't read the tree ({e})")))?;
    tlog::proof::verify_consistency(checkpoint.size, size, &proof, &checkpoint.root, &root)
        .map_err(|e| diverged(format!("the entries it covers changed ({e})")))
}

/// The approvals left pending in the log `reader` reads.
fn unfinished(reader: &impl LogReader) -> Result<Vec<Unfinished>, StoreError> {
    let mut out = Vec::new();
    for (id, entry) in reader.pending_approvals()? {
        let (_, data) = reader.entry(entry)?;
        let e = tlog::Entry::decode(&data).map_err(|e| {
            StoreError::Inconsistent(format!("entry {entry} cannot be decoded: {e}"))
        })?;
        out.push(Unfinished {
            id,
            entry,
            endpoint: e.endpoint.to_string(),
            session: Some(e.session.to_string()).filter(|s| !s.is_empty()),
            request: e.request,
        });
    }
    Ok(out)
}

impl Audit {
    /// Opens (or creates) the log in `data_dir` and starts its sequencer thread.
    ///
    /// # Errors
    /// The key or the store cannot be opened, or the stored tree is inconsistent.
    pub fn open(data_dir: &std::path::Path, config: &AuditConfig) -> Result<Opened, OpenError> {
        let (signer, key_created) =
            keys::load_or_create(&config.key_file, config.origin.as_deref())?;
        let store = SqliteStore::open(data_dir, config.durability)?;
        Self::with_store(store, signer, key_created, data_dir, config)
    }

    /// Starts the log over any [`Store`] (tests inject failing ones).
    ///
    /// # Errors
    /// The stored tree is inconsistent.
    pub fn with_store<S: Store>(
        mut store: S,
        signer: Signer,
        key_created: bool,
        data_dir: &std::path::Path,
        config: &AuditConfig,
    ) -> Result<Opened, OpenError> {
        let range = store.state()?;
        let (latest, pending_approvals) = match SqliteReader::open(data_dir) {
            Ok(reader) => {
                let latest = reader.latest_checkpoint()?;
                if let Some(cp) = &latest {
                    check_continues(&reader, cp, &signer.verifier(), range.size(), range.root())?;
                }
                (latest, unfinished(&reader)?)
            }
            Err(_) => (None, Vec::new()),
        };
        let entries = range.size();
        let (head_tx, head) = watch::channel(Head {
            size: range.size(),
            root: range.root(),
        });
        let (jobs, rx) = mpsc::channel(65_536);
        let latest = Arc::new(RwLock::new(latest));
        let files = sequencer::Files::new(data_dir, config.durability);
        let handle = sequencer::spawn(store, range, rx, head_tx, files);
        let audit = Arc::new(Self {
            jobs,
            verifier: signer.verifier(),
            signer: Arc::new(signer),
            head,
            latest,
            durability: config.durability,
            data_dir: data_dir.to_path_buf(),
            config: config.clone(),
            sequencer: std::sync::Mutex::new(Some(handle)),
        });

        Ok(Opened {
            audit,
            key_created,
            entries,
            pending_approvals,
        })
    }

    /// Records an entry. Returns once it is durable (with fsync durability) and has its index.
    ///
    /// # Errors
    /// [`AuditError::Unavailable`] when it could not be made durable: the caller must not let
    /// the message it records move on.
    pub async fn append(&self, draft: Draft) -> Result<Appended, AuditError> {
        let (tx, rx) = oneshot::channel();
        self.jobs
            .send(Job::Append(draft, tx))
            .await
            .map_err(|_| AuditError::Closed)?;
        rx.await.map_err(|_| AuditError::Closed)?
    }

    pub fn origin(&self) -> &str {
        self.signer.name()
    }

    pub fn verifier(&self) -> &Verifier {
        &self.verifier
    }

    pub fn durability(&self) -> Durability {
        self.durability
    }

    pub fn head(&self) -> Head {
        *self.head.borrow()
    }

    pub fn latest_checkpoint(&self) -> Option<StoredCheckpoint> {
        self.latest
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Signs and stores a checkpoint of the current head, unless the latest already covers it.
    ///
    /// # Errors
    /// The checkpoint could not be stored.
    pub async fn checkpoint(&self) -> Result<Option<StoredCheckpoint>, AuditError> {
        let head = self.head();
        if self
            .latest_checkpoint()
            .is_some_and(|c| c.size == head.size)
        {
            return Ok(None);
        }
        let note = tlog::Checkpoint {
            origin: self.origin().to_string(),
            size: head.size,
            root: head.root,
            extensions: Vec::new(),
        }
        .sign(&self.signer)
        .encode();
        let cp = StoredCheckpoint {
            size: head.size,
            note,
            signed_ns: now_ns(),
        };
        let (tx, rx) = oneshot::channel();
        self.jobs
            .send(Job::Checkpoint(cp.clone(), tx))
            .await
            .map_err(|_| AuditError::Closed)?;
        rx.await.map_err(|_| AuditError::Closed)??;
        let mut latest = self
            .latest
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if latest.as_ref().is_none_or(|l| l.size < cp.size) {
            *latest = Some(cp.clone());
        }
        Ok(Some(cp))
    }

    /// A tlog-proof for entry `index` in the latest checkpoint, with the entry's leaf hash in
    /// its `extra` line.
    ///
    /// # Errors
    /// The entry is not checkpointed yet, is not in the log, or cannot be read.
    pub async fn proof(&self, index: u64) -> Result<String, AuditError> {
        let Some(cp) = self.latest_checkpoint() else {
            return Err(AuditError::NotYetCheckpointed { index, size: 0 });
        };
        if index >= cp.size {
            return Err(AuditError::NotYetCheckpointed {
                index,
                size: cp.size,
            });
        }
        let dir = self.data_dir.clone();
        tokio::task::spawn_blocking(move || {
            let reader = SqliteReader::open(&dir).map_err(|e| AuditError::Proof(e.to_string()))?;
            let (leaf, _) = reader
                .entry(index)
                .map_err(|e| AuditError::Proof(e.to_string()))?;
            let path = tlog::proof::inclusion_proof(&reader, index, cp.size)
                .map_err(|e| AuditError::Proof(e.to_string()))?;
            Ok(tlog::InclusionReceipt {
                extra: Some(leaf.0.to_vec()),
                index,
                path,
                checkpoint: cp.note,
            }
            .encode())
        })
        .await
        .map_err(|e| AuditError::Proof(e.to_string()))?
    }

    /// Starts the checkpointer: a checkpoint at most every `checkpoint_interval` while the log
    /// grows, a heartbeat entry when it has been idle for `heartbeat_interval`.
    pub fn start_checkpointer(
        self: &Arc<Self>,
        stop: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(checkpointer::run(
            self.clone(),
            self.config.checkpoint_interval,
            self.config.heartbeat_interval,
            stop,
        ))
    }

    /// Stops taking entries and waits for the sequencer to finish what it holds.
    pub async fn close(&self) {
        let (tx, rx) = oneshot::channel();
        if self.jobs.send(Job::Stop(tx)).await.is_ok() {
            let _ = rx.await;
        }
        let handle = self
            .sequencer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(h) = handle {
            let _ = tokio::task::spawn_blocking(move || h.join()).await;
        }
    }
}
