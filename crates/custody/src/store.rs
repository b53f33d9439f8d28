//! Durable storage of the audit log: entries with their leaf hashes, interior tree nodes for
//! proofs, the tree state, and signed checkpoints. SQLite is the embedded default.
//!
//! One writer (the audit sequencer's thread) owns a [`Store`]; readers open their own
//! [`LogReader`]s. Both block: call them from a dedicated thread or `spawn_blocking`, never on
//! the relay's tasks.

pub mod postgres;
mod reader;
mod readers;
mod sqlite;

use std::path::Path;

pub use reader::{Location, Reader};
pub use readers::{Lease, Readers};
pub use sqlite::{FILE, SqliteReader, SqliteStore};
use tlog::compact::Node;
use tlog::{CompactRange, Hash, node_hash};

/// Interior nodes at and above this level are stored; lower ones are computed from at most
/// 2^`NODE_LEVEL` leaf hashes (256, as in tlog-tiles).
pub const NODE_LEVEL: u32 = 8;

/// Why storage failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("couldn't open the log database {path}: {source}")]
    Open {
        path: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error("couldn't {what}: {source}")]
    Sql {
        what: &'static str,
        #[source]
        source: rusqlite::Error,
    },
    #[error("the log database is inconsistent: {0}; run `custody verify` on it")]
    Inconsistent(String),
    #[error("entry {0} is not in the log")]
    NotFound(u64),
    /// A database server (PostgreSQL) failed or refused.
    #[error("the log database: {0}")]
    Backend(String),
}

impl StoreError {
    pub(crate) fn sql(what: &'static str) -> impl FnOnce(rusqlite::Error) -> Self {
        move |source| StoreError::Sql { what, source }
    }
}

/// One entry to append: its leaf hash and encoded bytes.
pub struct Row {
    pub leaf: Hash,
    pub data: Vec<u8>,
    /// Whether the entry opens or closes a pending approval.
    pub mark: Option<Mark>,
    /// A version-2 entry's payloads, stored beside it in the same transaction.
    pub payloads: Vec<Payload>,
    /// When the entry was made (for retention), nanoseconds since the Unix epoch.
    pub time_ns: u64,
    /// Payloads the entry erases, deleted in the same transaction.
    pub erase: Option<Erase>,
}

/// A payload of a version-2 entry and the opening of its commitment.
#[derive(Debug, Clone)]
pub struct Payload {
    pub slot: u8,
    pub opening: [u8; 32],
    pub data: bytes::Bytes,
}

/// Which payloads a `payload_erased` entry erases.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Erase {
    /// These entries' payloads.
    Indices(Vec<u64>),
    /// The payloads of entries `from..to` made before `before_ns` (a retention batch).
    Range { from: u64, to: u64, before_ns: u64 },
}

/// What an entry does to the set of pending approvals, committed with the entry itself so that
/// a restart finds exactly the approvals whose `approval_requested` entry is durable and whose
/// end is not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mark {
    /// The approval with this id is pending from this entry on.
    Open(String),
    /// The approval with this id is over.
    Close(String),
}

/// A payload as stored: its slot, the opening of its commitment, its bytes.
pub type StoredPayload = (u8, [u8; 32], Vec<u8>);

/// A signed checkpoint as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCheckpoint {
    pub size: u64,
    pub note: String,
    pub signed_ns: u64,
}

/// The writer's side of the log.
///
/// Contract for [`Store::append`]: on `Ok`, every row, node and the new state are committed
/// together and, with fsync durability, on stable storage; readers see all of them or none.
/// On `Err`, the batch may or may not have been persisted (a commit can fail after its data
/// reached the disk): the caller must re-read [`Store::state`] before appending again, and
/// must treat the batch as not acknowledged.
pub trait Store: Send + 'static {
    /// Begins a round: for a log several writers share, takes the store's commit lock and
    /// returns the leaves other writers committed past `state`, which the caller integrates
    /// into its tree before it numbers its own entries. A store with one writer has none.
    ///
    /// # Errors
    /// [`StoreError`]: the round cannot begin (its entries must not be acknowledged).
    fn begin_round(&mut self, state: &CompactRange) -> Result<Vec<Hash>, StoreError> {
        let _ = state;
        Ok(Vec::new())
    }

    /// Ends a round begun by [`Store::begin_round`] without writing anything (its lock is
    /// released).
    fn end_round(&mut self) {}

    /// Checks the tree the caller made of the leaves [`Store::begin_round`] returned against
    /// the tree the store says it holds; on `Err` the round is over (nothing written).
    ///
    /// # Errors
    /// [`StoreError::Inconsistent`]: the stored rows changed under the log.
    fn check_round(&mut self, integrated: &CompactRange) -> Result<(), StoreError> {
        let _ = integrated;
        Ok(())
    }

    /// Whether other writers append to this store too (its tree grows by their rounds as well
    /// as by this writer's).
    fn shared(&self) -> bool {
        false
    }

    /// Appends `rows` at indexes `first..`, the interior `nodes` they complete (level
    /// ≥ [`NODE_LEVEL`]), and the resulting tree `state`, in one transaction.
    ///
    /// # Errors
    /// [`StoreError`]; a conflict on an existing index is an error, not an overwrite.
    fn append(
        &mut self,
        first: u64,
        rows: &[Row],
        nodes: &[Node],
        state: &CompactRange,
    ) -> Result<(), StoreError>;

    /// The committed tree state (empty for a new log).
    ///
    /// # Errors
    /// [`StoreError`], including [`StoreError::Inconsistent`] when the state and the entries
    /// disagree.
    fn state(&mut self) -> Result<CompactRange, StoreError>;

    /// Stores a signed checkpoint. Durable on `Ok`.
    ///
    /// # Errors
    /// [`StoreError`].
    fn put_checkpoint(&mut self, checkpoint: &StoredCheckpoint) -> Result<(), StoreError>;

    /// The entry version of this log (`tlog::entry::V1` or `V2`); `None` for a store that
    /// never said (a log created before version 2: version 1 if it holds entries).
    ///
    /// # Errors
    /// [`StoreError`].
    fn entry_version(&mut self) -> Result<Option<u8>, StoreError>;

    /// Records the entry version of a new log. Durable on `Ok`.
    ///
    /// # Errors
    /// [`StoreError`].
    fn set_entry_version(&mut self, version: u8) -> Result<(), StoreError>;

    /// The latest stored checkpoint, if any. Nothing in it is trusted until its signature is
    /// checked: the caller verifies.
    ///
    /// # Errors
    /// [`StoreError`].
    fn latest_checkpoint(&mut self) -> Result<Option<StoredCheckpoint>, StoreError>;

    /// Carries out the erasures recorded by entries below `covered`, the size of a signed and
    /// persisted checkpoint. Returns the payloads deleted.
    ///
    /// # Errors
    /// [`StoreError`].
    fn complete_erasures(&mut self, covered: u64) -> Result<u64, StoreError> {
        let _ = covered;
        Ok(0)
    }

    /// Calls `f` with the index, the stored leaf hash and (when `data` is set) the stored bytes
    /// of every entry in `from..to`, in index order, stopping at its first error. Used at start
    /// to recompute the tree from what is stored instead of trusting stored interior nodes.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] for the first index in the range that is not stored; `f`'s
    /// error.
    fn scan(
        &mut self,
        from: u64,
        to: u64,
        data: bool,
        f: &mut ScanFn<'_>,
    ) -> Result<(), StoreError>;
}

/// The callback of [`Store::scan`]: index, stored leaf hash, stored bytes (when asked for).
pub type ScanFn<'a> = dyn FnMut(u64, Hash, Option<&[u8]>) -> Result<(), StoreError> + 'a;

/// The reader's side: checkpoints, entries and proof nodes.
pub trait LogReader {
    /// # Errors
    /// [`StoreError`].
    fn latest_checkpoint(&self) -> Result<Option<StoredCheckpoint>, StoreError>;
    /// # Errors
    /// [`StoreError`].
    fn checkpoints(&self) -> Result<Vec<StoredCheckpoint>, StoreError>;
    /// The stored checkpoint of exactly `size` entries, if one was signed.
    ///
    /// # Errors
    /// [`StoreError`].
    fn checkpoint_at(&self, size: u64) -> Result<Option<StoredCheckpoint>, StoreError>;
    /// # Errors
    /// [`StoreError::NotFound`] for an index not in the log.
    fn entry(&self, index: u64) -> Result<(Hash, Vec<u8>), StoreError>;
    /// The approvals still pending (opened and not closed), with the index of the entry that
    /// opened each, oldest first.
    ///
    /// # Errors
    /// [`StoreError`].
    fn pending_approvals(&self) -> Result<Vec<(String, u64)>, StoreError>;
    /// Calls `f` with every entry in index order, stopping at its first error.
    ///
    /// # Errors
    /// [`StoreError`], or `f`'s error.
    fn for_each_entry<E: From<StoreError>>(
        &self,
        f: impl FnMut(u64, Hash, &[u8]) -> Result<(), E>,
    ) -> Result<(), E>;
    /// [`LogReader::for_each_entry`], with the payloads stored beside each entry (slot,
    /// opening, bytes), in slot order.
    ///
    /// # Errors
    /// [`StoreError`], or `f`'s error.
    fn for_each_entry_with_payloads<E: From<StoreError>>(
        &self,
        f: impl FnMut(u64, Hash, &[u8], &[StoredPayload]) -> Result<(), E>,
    ) -> Result<(), E>;
    /// The payloads stored beside entry `index` (slot, opening, bytes), in slot order; empty
    /// when erased or for a version-1 entry.
    ///
    /// # Errors
    /// [`StoreError`].
    fn payloads(&self, index: u64) -> Result<Vec<StoredPayload>, StoreError>;
}

/// Is there a log database in `dir`?
pub fn exists(dir: &Path) -> bool {
    dir.join(sqlite::FILE).exists()
}

/// A store with nothing in it: what a deleted database amounts to, checked before one is
/// created in its place.
pub struct Empty;

impl Store for Empty {
    fn append(
        &mut self,
        _: u64,
        _: &[Row],
        _: &[Node],
        _: &CompactRange,
    ) -> Result<(), StoreError> {
        Err(StoreError::Inconsistent(
            "the empty store takes no entries".into(),
        ))
    }

    fn state(&mut self) -> Result<CompactRange, StoreError> {
        Ok(CompactRange::new())
    }

    fn put_checkpoint(&mut self, _: &StoredCheckpoint) -> Result<(), StoreError> {
        Err(StoreError::Inconsistent(
            "the empty store takes no checkpoints".into(),
        ))
    }

    fn latest_checkpoint(&mut self) -> Result<Option<StoredCheckpoint>, StoreError> {
        Ok(None)
    }

    fn entry_version(&mut self) -> Result<Option<u8>, StoreError> {
        Ok(None)
    }

    fn set_entry_version(&mut self, _: u8) -> Result<(), StoreError> {
        Err(StoreError::Inconsistent(
            "the empty store keeps nothing".into(),
        ))
    }

    fn scan(&mut self, from: u64, to: u64, _: bool, _: &mut ScanFn<'_>) -> Result<(), StoreError> {
        if from < to {
            return Err(StoreError::NotFound(from));
        }
        Ok(())
    }
}

/// The root of a perfect subtree over `leaves` (a power of two of them).
pub(crate) fn fold(leaves: &[Hash]) -> Hash {
    if leaves.len() == 1 {
        return leaves[0];
    }
    let (l, r) = leaves.split_at(leaves.len() / 2);
    node_hash(&fold(l), &fold(r))
}
