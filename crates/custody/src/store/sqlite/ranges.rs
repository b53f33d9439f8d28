//! Runs of leaves, nodes and entries, read in one query each: what serving and exporting the
//! log as tiles needs.

use rusqlite::params;
use tlog::Hash;

use super::{SqliteReader, StoreError, hash_of, i64_of};

impl SqliteReader {
    /// How many entries are stored (one past the largest index).
    ///
    /// # Errors
    /// [`StoreError`].
    pub fn entry_count(&self) -> Result<u64, StoreError> {
        let max: Option<i64> = self
            .conn
            .query_row("SELECT max(idx) FROM entries", [], |r| r.get(0))
            .map_err(StoreError::sql("count entries"))?;
        Ok(max.map_or(0, |m| u64::try_from(m).unwrap_or(0) + 1))
    }

    /// The leaf hashes of entries `from..to`.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] for the first that is not stored.
    pub fn leaves(&self, from: u64, to: u64) -> Result<Vec<Hash>, StoreError> {
        super::reader::leaves(&self.conn, from, to)
    }

    /// The stored tree nodes of `level` (at least [`super::NODE_LEVEL`]), `from..to`.
    ///
    /// # Errors
    /// [`StoreError::Inconsistent`] when one is missing.
    pub fn nodes(&self, level: u32, from: u64, to: u64) -> Result<Vec<Hash>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT hash FROM nodes WHERE level = ?1 AND idx >= ?2 AND idx < ?3 ORDER BY idx",
            )
            .map_err(StoreError::sql("prepare the node range query"))?;
        let rows = stmt
            .query_map(params![level, i64_of(from), i64_of(to)], |r| {
                r.get::<_, Vec<u8>>(0)
            })
            .map_err(StoreError::sql("read tree nodes"))?;
        let mut out = Vec::with_capacity(usize::try_from(to - from).unwrap_or(0));
        for r in rows {
            out.push(hash_of(&r.map_err(StoreError::sql("read a tree node"))?)?);
        }
        if out.len() as u64 != to - from {
            return Err(StoreError::Inconsistent(format!(
                "tree nodes {level}/{from}..{to} are not all stored ({} are)",
                out.len()
            )));
        }
        Ok(out)
    }

    /// Calls `f` with the bytes of entries `from..to`, in order.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] for the first that is not stored; `f`'s error.
    pub fn entries_in<E: From<StoreError>>(
        &self,
        from: u64,
        to: u64,
        mut f: impl FnMut(u64, &[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT idx, data FROM entries WHERE idx >= ?1 AND idx < ?2 ORDER BY idx",
            )
            .map_err(StoreError::sql("prepare the entry range query"))?;
        let mut rows = stmt
            .query(params![i64_of(from), i64_of(to)])
            .map_err(StoreError::sql("read entries"))?;
        let mut next = from;
        while let Some(r) = rows.next().map_err(StoreError::sql("read an entry"))? {
            let idx: i64 = r.get(0).map_err(StoreError::sql("read an entry index"))?;
            if u64::try_from(idx).ok() != Some(next) {
                return Err(StoreError::NotFound(next).into());
            }
            let data = r
                .get_ref(1)
                .and_then(|v| v.as_blob().map_err(Into::into))
                .map_err(StoreError::sql("read an entry"))?;
            f(next, data)?;
            next += 1;
        }
        if next < to {
            return Err(StoreError::NotFound(next).into());
        }
        Ok(())
    }
}
