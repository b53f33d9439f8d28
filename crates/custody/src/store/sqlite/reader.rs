//! The reader's side of the SQLite store: a read-only connection for proofs, the explorer,
//! verification and tiles.

use std::path::Path;

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use tlog::Hash;
use tlog::proof::HashStore;

use super::{
    FILE, StoredPayloads, entry_version, hash_of, i64_of, latest_checkpoint, opening_of,
    payloads_of,
};
use crate::store::{LogReader, NODE_LEVEL, StoreError, StoredCheckpoint, StoredPayload, fold};

/// A read-only connection.
pub struct SqliteReader {
    pub(super) conn: Connection,
}

impl SqliteReader {
    /// Opens the log in `dir` read-only.
    ///
    /// # Errors
    /// [`StoreError::Open`], e.g. when there is no log there.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let path = dir.join(FILE);
        let conn = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|source| StoreError::Open {
            path: path.display().to_string(),
            source,
        })?;
        Ok(Self { conn })
    }
}

pub(super) fn leaves(conn: &Connection, from: u64, to: u64) -> Result<Vec<Hash>, StoreError> {
    let mut stmt = conn
        .prepare_cached("SELECT leaf FROM entries WHERE idx >= ?1 AND idx < ?2 ORDER BY idx")
        .map_err(StoreError::sql("prepare the leaf query"))?;
    let rows = stmt
        .query_map(params![i64_of(from), i64_of(to)], |r| {
            r.get::<_, Vec<u8>>(0)
        })
        .map_err(StoreError::sql("read leaf hashes"))?;
    let mut out = Vec::with_capacity(usize::try_from(to - from).unwrap_or(0));
    for r in rows {
        out.push(hash_of(&r.map_err(StoreError::sql("read a leaf hash"))?)?);
    }
    if out.len() as u64 != to - from {
        return Err(StoreError::NotFound(from + out.len() as u64));
    }
    Ok(out)
}

/// The root of the perfect subtree `level`/`index`: stored at level ≥ [`NODE_LEVEL`], hashed
/// from at most 255 leaves below it.
pub(super) fn node(conn: &Connection, level: u32, index: u64) -> Result<Hash, StoreError> {
    if level >= NODE_LEVEL {
        let stored: Option<Vec<u8>> = conn
            .prepare_cached("SELECT hash FROM nodes WHERE level = ?1 AND idx = ?2")
            .map_err(StoreError::sql("prepare the node query"))?
            .query_row(params![level, i64_of(index)], |r| r.get(0))
            .optional()
            .map_err(StoreError::sql("read a tree node"))?;
        return match stored {
            Some(h) => hash_of(&h),
            None => Err(StoreError::Inconsistent(format!(
                "tree node {level}/{index} is missing"
            ))),
        };
    }
    let start = index << level;
    Ok(fold(&leaves(conn, start, start + (1u64 << level))?))
}

pub(super) fn checkpoint_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoredCheckpoint> {
    Ok(StoredCheckpoint {
        size: u64::try_from(r.get::<_, i64>(0)?).unwrap_or(0),
        note: r.get(1)?,
        signed_ns: u64::try_from(r.get::<_, i64>(2)?).unwrap_or(0),
    })
}

impl LogReader for SqliteReader {
    fn latest_checkpoint(&self) -> Result<Option<StoredCheckpoint>, StoreError> {
        latest_checkpoint(&self.conn)
    }

    fn checkpoints(&self) -> Result<Vec<StoredCheckpoint>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT size, note, signed_ns FROM checkpoints ORDER BY size")
            .map_err(StoreError::sql("prepare the checkpoint query"))?;
        let rows = stmt
            .query_map([], checkpoint_row)
            .map_err(StoreError::sql("read checkpoints"))?;
        rows.collect::<Result<Vec<_>, _>>()
            .map_err(StoreError::sql("read a checkpoint"))
    }

    fn checkpoint_at(&self, size: u64) -> Result<Option<StoredCheckpoint>, StoreError> {
        self.conn
            .prepare_cached("SELECT size, note, signed_ns FROM checkpoints WHERE size = ?1")
            .map_err(StoreError::sql("prepare the checkpoint query"))?
            .query_row(params![i64_of(size)], checkpoint_row)
            .optional()
            .map_err(StoreError::sql("read a checkpoint"))
    }

    fn entry(&self, index: u64) -> Result<(Hash, Vec<u8>), StoreError> {
        let row: Option<(Vec<u8>, Vec<u8>)> = self
            .conn
            .prepare_cached("SELECT leaf, data FROM entries WHERE idx = ?1")
            .map_err(StoreError::sql("prepare the entry query"))?
            .query_row(params![i64_of(index)], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()
            .map_err(StoreError::sql("read an entry"))?;
        let (leaf, data) = row.ok_or(StoreError::NotFound(index))?;
        Ok((hash_of(&leaf)?, data))
    }

    fn payloads(&self, index: u64) -> Result<StoredPayloads, StoreError> {
        payloads_of(&self.conn, index)
    }

    fn for_each_entry_with_payloads<E: From<StoreError>>(
        &self,
        mut f: impl FnMut(u64, Hash, &[u8], &[StoredPayload]) -> Result<(), E>,
    ) -> Result<(), E> {
        // Two cursors walked together: entries in order, payloads in (index, slot) order.
        let mut stmt = self
            .conn
            .prepare("SELECT id >> 2, id & 3, opening, data FROM payloads ORDER BY id")
            .map_err(StoreError::sql("prepare the payload scan"))?;
        let mut rows = stmt.query([]).map_err(StoreError::sql("scan payloads"))?;
        let next =
            |rows: &mut rusqlite::Rows<'_>| -> Result<Option<(u64, StoredPayload)>, StoreError> {
                let Some(r) = rows.next().map_err(StoreError::sql("read a payload"))? else {
                    return Ok(None);
                };
                let idx: i64 = r.get(0).map_err(StoreError::sql("read a payload index"))?;
                let slot: u8 = r.get(1).map_err(StoreError::sql("read a payload slot"))?;
                let opening: Vec<u8> = r.get(2).map_err(StoreError::sql("read an opening"))?;
                let data: Vec<u8> = r.get(3).map_err(StoreError::sql("read a payload"))?;
                let idx = u64::try_from(idx).unwrap_or(u64::MAX);
                Ok(Some((idx, (slot, opening_of(idx, opening)?, data))))
            };
        let mut ahead = next(&mut rows)?;
        let mut mine: StoredPayloads = Vec::new();
        self.for_each_entry(|idx, leaf, data| {
            mine.clear();
            while let Some(p) = ahead.take() {
                if p.0 <= idx {
                    if p.0 == idx {
                        mine.push(p.1);
                    }
                    ahead = next(&mut rows)?;
                    continue;
                }
                ahead = Some(p);
                break;
            }
            f(idx, leaf, data, &mine)
        })
    }

    fn pending_approvals(&self) -> Result<Vec<(String, u64)>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT id, entry FROM pending_approvals ORDER BY entry")
            .map_err(StoreError::sql("prepare the pending approvals query"))?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
            .map_err(StoreError::sql("read the pending approvals"))?;
        rows.map(|r| {
            r.map(|(id, entry)| (id, u64::try_from(entry).unwrap_or(0)))
                .map_err(StoreError::sql("read a pending approval"))
        })
        .collect()
    }

    fn for_each_entry<E: From<StoreError>>(
        &self,
        mut f: impl FnMut(u64, Hash, &[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut stmt = self
            .conn
            .prepare("SELECT idx, leaf, data FROM entries ORDER BY idx")
            .map_err(StoreError::sql("prepare the entry scan"))?;
        let mut rows = stmt.query([]).map_err(StoreError::sql("scan entries"))?;
        while let Some(row) = rows.next().map_err(StoreError::sql("read an entry"))? {
            let idx: i64 = row.get(0).map_err(StoreError::sql("read an entry index"))?;
            let leaf = row
                .get_ref(1)
                .and_then(|v| v.as_blob().map_err(Into::into))
                .map_err(StoreError::sql("read a leaf hash"))?;
            let leaf = hash_of(leaf)?;
            let data = row
                .get_ref(2)
                .and_then(|v| v.as_blob().map_err(Into::into))
                .map_err(StoreError::sql("read entry data"))?;
            f(u64::try_from(idx).unwrap_or(u64::MAX), leaf, data)?;
        }
        Ok(())
    }
}

impl SqliteReader {
    /// The largest index the log holds, `None` when it is empty.
    ///
    /// # Errors
    /// [`StoreError`].
    pub fn max_index(&self) -> Result<Option<u64>, StoreError> {
        let v: Option<i64> = self
            .conn
            .query_row("SELECT max(idx) FROM entries", [], |r| r.get(0))
            .map_err(StoreError::sql("read the log's size"))?;
        Ok(v.and_then(|v| u64::try_from(v).ok()))
    }

    /// The log's entry version (1 for a log created before version 2).
    ///
    /// # Errors
    /// [`StoreError`].
    pub fn entry_version(&self) -> Result<u8, StoreError> {
        Ok(entry_version(&self.conn)?.unwrap_or(tlog::entry::V1))
    }
}

impl HashStore for SqliteReader {
    type Error = StoreError;

    fn node(&self, level: u32, index: u64) -> Result<Hash, StoreError> {
        node(&self.conn, level, index)
    }
}
