//! Where the log is, and a reader for either store: everything that reads the log (receipts,
//! tiles, the explorer, exports, the scrub, `custody log`) reads it through [`Reader`], so the
//! same code serves the embedded log and the one replicas share in PostgreSQL.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tlog::Hash;
use tlog::proof::HashStore;

use super::postgres::PgReader;
use super::{LogReader, SqliteReader, StoreError, StoredCheckpoint, StoredPayload};

/// Where a log is stored.
#[derive(Clone)]
pub enum Location {
    /// The embedded SQLite log in this data directory.
    Dir(PathBuf),
    /// The log replicas share, at this PostgreSQL URL (never printed: it may hold a password).
    Postgres(Arc<str>),
}

impl std::fmt::Debug for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Dir(d) => f.debug_tuple("Dir").field(d).finish(),
            Self::Postgres(_) => f.write_str("Postgres(..)"),
        }
    }
}

impl Location {
    /// The embedded log in `dir`.
    pub fn dir(dir: &Path) -> Self {
        Self::Dir(dir.to_path_buf())
    }
}

/// A reading connection to the log, wherever it is. Blocking: use it where blocking is
/// allowed (`spawn_blocking`, a thread of its own, the command line).
pub enum Reader {
    Sqlite(SqliteReader),
    Postgres(Box<PgReader>),
}

macro_rules! each {
    ($self:expr, $r:ident => $e:expr) => {
        match $self {
            Reader::Sqlite($r) => $e,
            Reader::Postgres($r) => $e,
        }
    };
}

impl Reader {
    /// Opens the log at `at` for reading.
    ///
    /// # Errors
    /// [`StoreError`]: no log there, or the database cannot be reached.
    pub fn open(at: &Location) -> Result<Self, StoreError> {
        match at {
            Location::Dir(dir) => SqliteReader::open(dir).map(Self::Sqlite),
            Location::Postgres(url) => super::postgres::off_runtime(|| PgReader::connect(url))
                .map(|r| Self::Postgres(Box::new(r))),
        }
    }

    /// Whether the reader's connection has ended (a PostgreSQL server closed it); a SQLite
    /// reader's never does.
    pub fn is_closed(&self) -> bool {
        match self {
            Reader::Sqlite(_) => false,
            Reader::Postgres(r) => r.is_closed(),
        }
    }

    /// How many entries are stored (one past the largest index).
    ///
    /// # Errors
    /// [`StoreError`].
    pub fn entry_count(&self) -> Result<u64, StoreError> {
        each!(self, r => r.entry_count())
    }

    /// The largest index the log holds, `None` when it is empty.
    ///
    /// # Errors
    /// [`StoreError`].
    pub fn max_index(&self) -> Result<Option<u64>, StoreError> {
        each!(self, r => r.max_index())
    }

    /// The log's entry version (1 for a log created before version 2).
    ///
    /// # Errors
    /// [`StoreError`].
    pub fn entry_version(&self) -> Result<u8, StoreError> {
        each!(self, r => r.entry_version())
    }

    /// The leaf hashes of entries `from..to`.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] for the first that is not stored.
    pub fn leaves(&self, from: u64, to: u64) -> Result<Vec<Hash>, StoreError> {
        each!(self, r => r.leaves(from, to))
    }

    /// The stored tree nodes of `level` (at least [`super::NODE_LEVEL`]), `from..to`.
    ///
    /// # Errors
    /// [`StoreError::Inconsistent`] when one is missing.
    pub fn nodes(&self, level: u32, from: u64, to: u64) -> Result<Vec<Hash>, StoreError> {
        each!(self, r => r.nodes(level, from, to))
    }

    /// Calls `f` with the bytes of entries `from..to`, in order.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] for the first that is not stored; `f`'s error.
    pub fn entries_in<E: From<StoreError>>(
        &self,
        from: u64,
        to: u64,
        f: impl FnMut(u64, &[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        each!(self, r => r.entries_in(from, to, f))
    }

    /// Whether entry `index`'s payloads are recorded as erased, waiting for a checkpoint (the
    /// shared log does not erase).
    ///
    /// # Errors
    /// [`StoreError`].
    pub fn erasure_pending(&self, index: u64) -> Result<bool, StoreError> {
        match self {
            Self::Sqlite(r) => r.erasure_pending(index),
            Self::Postgres(_) => Ok(false),
        }
    }

    /// See [`SqliteReader::expired_range`]; the shared log keeps its payloads.
    ///
    /// # Errors
    /// [`StoreError`].
    pub fn expired_range(
        &self,
        cutoff_ns: u64,
        limit: u64,
    ) -> Result<Option<(u64, u64)>, StoreError> {
        match self {
            Self::Sqlite(r) => r.expired_range(cutoff_ns, limit),
            Self::Postgres(_) => Ok(None),
        }
    }
}

impl LogReader for Reader {
    fn latest_checkpoint(&self) -> Result<Option<StoredCheckpoint>, StoreError> {
        each!(self, r => r.latest_checkpoint())
    }
    fn checkpoints(&self) -> Result<Vec<StoredCheckpoint>, StoreError> {
        each!(self, r => r.checkpoints())
    }
    fn checkpoint_at(&self, size: u64) -> Result<Option<StoredCheckpoint>, StoreError> {
        each!(self, r => r.checkpoint_at(size))
    }
    fn entry(&self, index: u64) -> Result<(Hash, Vec<u8>), StoreError> {
        each!(self, r => r.entry(index))
    }
    fn pending_approvals(&self) -> Result<Vec<(String, u64)>, StoreError> {
        each!(self, r => r.pending_approvals())
    }
    fn for_each_entry<E: From<StoreError>>(
        &self,
        f: impl FnMut(u64, Hash, &[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        each!(self, r => r.for_each_entry(f))
    }
    fn for_each_entry_with_payloads<E: From<StoreError>>(
        &self,
        f: impl FnMut(u64, Hash, &[u8], &[StoredPayload]) -> Result<(), E>,
    ) -> Result<(), E> {
        each!(self, r => r.for_each_entry_with_payloads(f))
    }
    fn payloads(&self, index: u64) -> Result<Vec<StoredPayload>, StoreError> {
        each!(self, r => r.payloads(index))
    }
}

impl HashStore for Reader {
    type Error = StoreError;

    fn node(&self, level: u32, index: u64) -> Result<Hash, StoreError> {
        each!(self, r => r.node(level, index))
    }
}
