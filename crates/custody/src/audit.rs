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
mod draft;
pub mod erase;
mod errors;
pub mod files;
pub mod health;
pub mod keys;
pub mod predecessor;
mod proofs;
mod ready;
mod resume;
pub mod scrub;
mod sequencer;
mod steward;
#[cfg(test)]
pub(crate) mod tests;
pub mod verify;
pub mod witnessing;

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

pub use tlog::entry::{Direction, Kind};
use tlog::{Hash, Signer, Verifier};

use crate::config::{AuditConfig, Durability};
pub use crate::store::{Erase, Mark};
use crate::store::{Location, LogReader, Reader, SqliteStore, Store, StoreError, StoredCheckpoint};
pub use draft::Draft;
pub use errors::{AuditError, OpenError};
use files::Files;
use health::Health;

/// Payloads up to this size are sealed (encoded, committed to) on the appending task.
const SEAL_INLINE: usize = 256 * 1024;

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
    Append(
        Box<draft::Sealed>,
        oneshot::Sender<Result<Appended, AuditError>>,
    ),
    /// Sign the tree as it stands if it is larger than `published` covers (see
    /// `sequencer::sign`); `None` when there is nothing new to sign.
    Sign {
        published: Option<u64>,
        /// `false`: only bring the tree up to what other replicas of a shared log committed
        /// (a replica that is not the steward signs nothing).
        sign: bool,
        reply: oneshot::Sender<Result<Option<Signed>, AuditError>>,
    },
    /// Store a signed checkpoint in the database's checkpoints table.
    Store(StoredCheckpoint, oneshot::Sender<Result<(), AuditError>>),
    /// The latest checkpoint the store holds (for a shared log: what its steward stored).
    Latest(oneshot::Sender<Result<Option<StoredCheckpoint>, AuditError>>),
    /// Read something cheap from the store (`/readyz`: the store answers).
    Probe(oneshot::Sender<Result<(), String>>),
    /// Carry out the erasures recorded below this size (a persisted checkpoint's).
    CompleteErasures(u64, oneshot::Sender<Result<u64, AuditError>>),
    /// Finish what is queued before this, then exit.
    Stop(oneshot::Sender<()>),
}

/// A checkpoint the sequencer signed, with the tree it signs.
pub(crate) struct Signed {
    pub checkpoint: StoredCheckpoint,
    pub range: tlog::CompactRange,
}

/// The audit log of a running gateway.
pub struct Audit {
    jobs: mpsc::Sender<Job>,
    verifier: Verifier,
    origin: String,
    head: watch::Receiver<Head>,
    latest: Arc<RwLock<Option<StoredCheckpoint>>>,
    /// Held while a checkpoint is signed and persisted, so they persist in signing order.
    publishing: tokio::sync::Mutex<()>,
    health: Arc<Health>,
    files: Arc<Files>,
    durability: Durability,
    data_dir: PathBuf,
    /// Where the log is stored (the data directory, or the database replicas share).
    location: Location,
    /// Readers kept open for proofs and tiles.
    readers: Arc<crate::store::Readers>,
    /// For a log replicas share: this replica's claim on the lease to sign and publish.
    steward: Option<Arc<steward::Steward>>,
    /// Whether this replica held the steward lease when it last asked (always, for a log of
    /// its own).
    stewarding: std::sync::atomic::AtomicBool,
    /// Seals what replicas of a shared log hand each other through the database (decisions
    /// on approvals), derived from the log's key: the database alone cannot forge them.
    replica_seal: [u8; 32],
    config: AuditConfig,
    sequencer: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
    lock: std::sync::Mutex<Option<files::DirLock>>,
    scrubbed: std::sync::Mutex<Option<scrub::Outcome>>,
    /// Held while an erasure is checked and recorded, one at a time.
    erasing: tokio::sync::Mutex<()>,
    /// The witnesses, once attached (`[witness]`).
    witnessing: std::sync::OnceLock<Arc<witnessing::Witnessing>>,
    /// The log's entry version: 2, or 1 for a log created before.
    entry_version: u8,
    /// What `/metrics` shows of the log.
    metrics: Arc<crate::metrics::AuditMetrics>,
}

/// What opening the log found.
pub struct Opened {
    pub audit: Arc<Audit>,
    pub key_created: bool,
    pub entries: u64,
    /// The log was created by this start (no entry, no checkpoint before).
    pub created: bool,
    /// A new log's first entry, naming the log it succeeds (`audit.predecessor`): the caller
    /// appends it before anything else.
    pub predecessor: Option<Draft>,
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

/// The approvals left pending in the log `reader` reads: all of them, or in a log replicas
/// share, those `replica` opened (another replica's are its own, held by it or left for it).
fn unfinished(reader: &Reader, replica: Option<&str>) -> Result<Vec<Unfinished>, StoreError> {
    let mut out = Vec::new();
    let pending = match (reader, replica) {
        (Reader::Postgres(r), Some(replica)) => r.pending_approvals_of(replica)?,
        _ => reader.pending_approvals()?,
    };
    for (id, entry) in pending {
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
    /// The directory is in use, the key or the store cannot be opened, or the stored log does
    /// not extend the latest checkpoint the log signed.
    pub fn open(data_dir: &std::path::Path, config: &AuditConfig) -> Result<Opened, OpenError> {
        let lock = files::DirLock::acquire(data_dir)?;
        let (signer, key_created) =
            keys::load_or_create(&config.key_file, config.origin.as_deref())?;
        if let Some(shared) = &config.store {
            let mut store = crate::store::postgres::PgStore::connect(
                &shared.url,
                &shared.replica,
                signer.derive_secret(crate::store::postgres::ENTRY_SEAL),
            )?;
            let ours = signer.verifier().to_key_string();
            let stored = store.claim_key(&ours)?;
            if stored != ours {
                return Err(OpenError::OtherKey { stored, ours });
            }
            return Self::start(store, signer, key_created, data_dir, config, Some(lock));
        }
        let files = Files::new(data_dir, config.durability);
        // A missing database is not created while a checkpoint says there was a log: the
        // refusal below must not leave an empty database behind for the next start to accept.
        let db = data_dir.join(crate::store::FILE);
        if !db.exists() && (files.read_head()?.is_some() || files.last_checkpoint()?.is_some()) {
            let mut empty = crate::store::Empty;
            resume::resume(&mut empty, &files, &signer.verifier(), &db)?;
        }
        let store = SqliteStore::open(data_dir, config.durability)?;
        Self::start(store, signer, key_created, data_dir, config, Some(lock))
    }

    /// Starts the log over any [`Store`] (tests inject failing ones).
    ///
    /// # Errors
    /// The stored log does not extend the latest checkpoint the log signed.
    pub fn with_store<S: Store>(
        store: S,
        signer: Signer,
        key_created: bool,
        data_dir: &std::path::Path,
        config: &AuditConfig,
    ) -> Result<Opened, OpenError> {
        let lock = files::DirLock::acquire(data_dir)?;
        Self::start(store, signer, key_created, data_dir, config, Some(lock))
    }

    fn start<S: Store>(
        mut store: S,
        signer: Signer,
        key_created: bool,
        data_dir: &std::path::Path,
        config: &AuditConfig,
        lock: Option<files::DirLock>,
    ) -> Result<Opened, OpenError> {
        let files = Arc::new(Files::new(data_dir, config.durability));
        let verifier = signer.verifier();
        let location = config.location(data_dir);
        let db = match &location {
            Location::Dir(_) => data_dir.join(crate::store::FILE),
            Location::Postgres(_) => std::path::PathBuf::from("the shared log database"),
        };
        let resumed = resume::resume(&mut store, &files, &verifier, &db)?;
        let created = resumed.latest.is_none();
        // A log keeps the entry version it was created with; a new one is version 2.
        let entry_version = match store.entry_version()? {
            Some(v) => v,
            None if created && resumed.range.size() == 0 => {
                store.set_entry_version(tlog::entry::V2)?;
                tlog::entry::V2
            }
            None => tlog::entry::V1,
        };
        // The version is a row nothing signs: the newest entry says which one the log has, and
        // a log never goes back (a v1 log would put messages into the tree, beyond erasure).
        let size = resumed.range.size();
        if size > 0 {
            let mut newest = None;
            store.scan(size - 1, size, true, &mut |_, _, data| {
                newest = data
                    .and_then(|d| tlog::Entry::decode(d).ok())
                    .map(|e| e.version);
                Ok(())
            })?;
            if let Some(v) = newest
                && v > entry_version
            {
                return Err(OpenError::Diverged {
                    size,
                    why: format!(
                        "its newest entry is version {v} but the database says the log is version {entry_version}: the version was changed"
                    ),
                });
            }
        }
        // Opened from async code: a PostgreSQL reader blocks on a thread of its own.
        let pending_approvals =
            crate::store::postgres::off_runtime(|| match Reader::open(&location) {
                Ok(reader) => {
                    unfinished(&reader, config.store.as_ref().map(|s| s.replica.as_str()))
                }
                Err(_) => Ok(Vec::new()),
            })?;
        let predecessor = match (&config.predecessor, created) {
            (Some(path), true) => Some(predecessor::read(path, signer.name())?),
            _ => None,
        };
        let signer = Arc::new(signer);
        let replica_seal = signer.derive_secret("custody: between replicas of a shared log");
        let health = Arc::new(Health::default());
        let mut latest = resumed.latest.map(|(cp, _)| cp);
        // What is served until the next checkpoint is published: never one that was signed
        // but withheld (see `Resumed::published`).
        let mut published = resumed.published;
        if created {
            // A new log signs its empty tree at once, so that from its first entry on some
            // place outside the database says the log exists.
            let genesis = sequencer::sign_range(&signer, &resumed.range);
            files.write_head(&genesis.checkpoint, &genesis.range)?;
            store
                .put_checkpoint(&genesis.checkpoint)
                .map_err(|e| OpenError::Genesis(AuditError::Unavailable(e.to_string())))?;
            files.append_checkpoint(&genesis.checkpoint)?;
            published = Some(genesis.checkpoint.clone());
            latest = Some(genesis.checkpoint);
        }
        // Erasures a previous run recorded and published but did not carry out (as while
        // running: only once a published checkpoint covers their record).
        if let Some(l) = &published
            && let Err(e) = store.complete_erasures(l.size)
        {
            tracing::error!("couldn't carry out the erasures the log recorded: {e}");
        }
        let range = resumed.range;
        let entries = range.size();
        let (head_tx, head) = watch::channel(Head {
            size: range.size(),
            root: range.root(),
        });
        let (jobs, rx) = mpsc::channel(65_536);
        let metrics = Arc::new(crate::metrics::AuditMetrics::default());
        let handle = sequencer::spawn(
            sequencer::Sequencer {
                store,
                range,
                signed: latest.as_ref().map(|c| c.size),
                signer: signer.clone(),
                health: health.clone(),
                head: head_tx,
                metrics: metrics.clone(),
            },
            rx,
        );
        let audit = Arc::new(Self {
            jobs,
            verifier,
            origin: signer.name().to_string(),
            head,
            latest: Arc::new(RwLock::new(published)),
            publishing: tokio::sync::Mutex::new(()),
            health,
            files,
            durability: config.durability,
            data_dir: data_dir.to_path_buf(),
            replica_seal,
            stewarding: std::sync::atomic::AtomicBool::new(config.store.is_none()),
            steward: config
                .store
                .as_ref()
                .map(|s| Arc::new(steward::Steward::new(&s.url, &s.replica, steward::IDLE))),
            readers: Arc::new(crate::store::Readers::new(location.clone())),
            location,
            config: config.clone(),
            sequencer: std::sync::Mutex::new(Some(handle)),
            lock: std::sync::Mutex::new(lock),
            scrubbed: std::sync::Mutex::new(None),
            erasing: tokio::sync::Mutex::new(()),
            witnessing: std::sync::OnceLock::new(),
            entry_version,
            metrics,
        });
        Ok(Opened {
            audit,
            key_created,
            entries,
            created,
            predecessor,
            pending_approvals,
        })
    }

    /// Records an entry. Returns once it is durable (with fsync durability) and has its index.
    ///
    /// # Errors
    /// [`AuditError::Unavailable`] when it could not be made durable, or the log is not taking
    /// entries (a checkpoint could not be persisted, or an integrity alarm halted it): the
    /// caller must not let the message it records move on.
    pub async fn append(&self, draft: Draft) -> Result<Appended, AuditError> {
        let refused = self.refuse(&draft);
        if refused.is_err() {
            self.metrics
                .refused
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        refused?;
        let version = self.entry_version;
        // Hashing a payload takes about 1 ms per MiB here: a large one is sealed where
        // blocking is allowed, not on a worker that other calls share.
        let sealed = if draft.message.len() > SEAL_INLINE {
            tokio::task::spawn_blocking(move || draft.seal(version))
                .await
                .map_err(|_| AuditError::Closed)?
        } else {
            draft.seal(version)
        };
        let (tx, rx) = oneshot::channel();
        self.jobs
            .send(Job::Append(Box::new(sealed), tx))
            .await
            .map_err(|_| AuditError::Closed)?;
        rx.await.map_err(|_| AuditError::Closed)?
    }

    /// Why the log must refuse `draft` before it reaches the sequencer, if it must.
    fn refuse(&self, draft: &Draft) -> Result<(), AuditError> {
        if let Some(why) = self.health.refusal() {
            return Err(AuditError::Unavailable(why));
        }
        // Required witnessing refuses what calls send; the gateway's own events (alarms,
        // heartbeats, its stop) are still recorded.
        if draft.direction != Direction::Gateway
            && let Some(refusal) = self.witnessing.get().and_then(|w| w.refusal())
        {
            return Err(refusal);
        }
        // The log never holds an entry its own verifier refuses.
        let size = draft.encoded_len(self.entry_version);
        if self.entry_version == tlog::entry::V2 && size > tlog::entry::MAX_HEADER_BYTES {
            return Err(AuditError::HeaderTooLarge(size));
        }
        let largest = size.max(draft.message.len());
        if largest > tlog::entry::MAX_ENTRY_BYTES {
            return Err(AuditError::TooLarge(largest));
        }
        Ok(())
    }

    /// The data directory: the gateway's files (and the embedded log, unless the log is
    /// shared in PostgreSQL: see [`Audit::location`]).
    pub fn data_dir(&self) -> &std::path::Path {
        &self.data_dir
    }

    /// Where the log is stored.
    pub fn location(&self) -> &Location {
        &self.location
    }

    /// Readers of the log kept open between requests (blocking: use them off the runtime).
    pub fn readers(&self) -> &Arc<crate::store::Readers> {
        &self.readers
    }

    /// Whether this process does what one replica of a shared log does for all (sending the
    /// log to export sinks): the steward does; a log of its own always.
    pub fn steward_here(&self) -> bool {
        self.stewarding.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The key that seals what replicas of a shared log hand each other.
    pub(crate) fn replica_seal(&self) -> &[u8; 32] {
        &self.replica_seal
    }

    /// Principal names that may erase payloads through the API (`[audit] erasers`).
    pub fn erasers(&self) -> &[String] {
        &self.config.erasers
    }

    /// The log's entry version: `tlog::entry::V2`, or `V1` for a log created before it.
    pub fn entry_version(&self) -> u8 {
        self.entry_version
    }

    pub fn origin(&self) -> &str {
        &self.origin
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

    /// Whether the log is fit to take entries, and every reason it is not.
    pub fn health(&self) -> health::Report {
        let mut report = self.health.report();
        if let Some(refusal) = self.witnessing.get().and_then(|w| w.refusal()) {
            report.ready = false;
            report.reasons.push(refusal.to_string());
        }
        report
    }

    /// Whether an integrity alarm stopped signing: checkpoints and proofs are not served then.
    pub fn halted(&self) -> Option<String> {
        self.health
            .halted()
            .then(|| self.health.report().reasons.join("; "))
    }

    /// Asks the witnesses of `config` to cosign every checkpoint from now on. Call once,
    /// before the first checkpoint of this run.
    ///
    /// # Errors
    /// A witness's URL is unusable.
    pub fn attach_witnesses(&self, config: &crate::config::WitnessConfig) -> Result<(), String> {
        let w = witnessing::Witnessing::new(config, self.metrics.clone())?;
        if let Ok(Some(last)) = self.files.last_checkpoint() {
            w.seed(&last.checkpoint.note, last.checkpoint.size);
        }
        let _ = self.witnessing.set(Arc::new(w));
        Ok(())
    }

    /// The witnesses' state, when there are witnesses.
    pub fn witnesses(&self) -> Option<witnessing::Report> {
        self.witnessing.get().map(|w| w.report())
    }

    /// The last scrub's outcome, once one has run.
    pub fn last_scrub(&self) -> Option<scrub::Outcome> {
        self.scrubbed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    pub fn latest_checkpoint(&self) -> Option<StoredCheckpoint> {
        self.latest
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
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

    /// Starts the scrub: every `scrub_interval` the whole stored log is verified again against
    /// the checkpoints it signed (none when the interval is zero).
    pub fn start_scrub(
        self: &Arc<Self>,
        stop: CancellationToken,
    ) -> Option<tokio::task::JoinHandle<()>> {
        let interval = self.config.scrub_interval?;
        Some(tokio::spawn(scrub::run(self.clone(), interval, stop)))
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
        // The directory is free for the next process once the sequencer has let go of it.
        self.lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
    }
}
