//! Runs of leaves, nodes and entries of the shared log, and the proof nodes: what receipts,
//! tiles, the explorer and exports read, as they read the embedded log.

use tlog::Hash;
use tlog::proof::HashStore;

use super::reader::{PgReader, hash};
use super::{backend, i64_of, u64_of};
use crate::store::{NODE_LEVEL, StoreError};

impl PgReader {
    /// How many entries are stored (one past the largest index).
    ///
    /// # Errors
    /// [`StoreError`].
    pub fn entry_count(&self) -> Result<u64, StoreError> {
        Ok(self.max_index()?.map_or(0, |m| m + 1))
    }

    /// The largest index the log holds, `None` when it is empty.
    ///
    /// # Errors
    /// [`StoreError`].
    pub fn max_index(&self) -> Result<Option<u64>, StoreError> {
        let v: Option<i64> = self
            .client()
            .query_one("SELECT max(idx) FROM entries", &[])
            .map_err(backend("read the log's size"))?
            .get(0);
        Ok(v.map(u64_of))
    }

    /// The log's entry version (1 when it never said).
    ///
    /// # Errors
    /// [`StoreError`].
    pub fn entry_version(&self) -> Result<u8, StoreError> {
        let v: Option<String> = self
            .client()
            .query_opt("SELECT value FROM meta WHERE key = 'entry_version'", &[])
            .map_err(backend("read the entry version"))?
            .map(|r| r.get(0));
        match v {
            None => Ok(tlog::entry::V1),
            Some(v) => v.parse().map_err(|_| {
                StoreError::Inconsistent(format!("the entry version {v:?} is not a number"))
            }),
        }
    }

    /// The leaf hashes of entries `from..to`.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] for the first that is not stored.
    pub fn leaves(&self, from: u64, to: u64) -> Result<Vec<Hash>, StoreError> {
        let rows = self
            .client()
            .query(
                "SELECT leaf FROM entries WHERE idx >= $1 AND idx < $2 ORDER BY idx",
                &[&i64_of(from), &i64_of(to)],
            )
            .map_err(backend("read leaf hashes"))?;
        if rows.len() as u64 != to.saturating_sub(from) {
            return Err(StoreError::NotFound(from + rows.len() as u64));
        }
        rows.iter()
            .map(|r| hash(r.get(0), "a stored leaf"))
            .collect()
    }

    /// The stored tree nodes of `level` (at least [`NODE_LEVEL`]), `from..to`.
    ///
    /// # Errors
    /// [`StoreError::Inconsistent`] when one is missing.
    pub fn nodes(&self, level: u32, from: u64, to: u64) -> Result<Vec<Hash>, StoreError> {
        let rows = self
            .client()
            .query(
                "SELECT hash FROM nodes WHERE level = $1 AND idx >= $2 AND idx < $3 ORDER BY idx",
                &[
                    &i32::try_from(level).unwrap_or(i32::MAX),
                    &i64_of(from),
                    &i64_of(to),
                ],
            )
            .map_err(backend("read tree nodes"))?;
        if rows.len() as u64 != to.saturating_sub(from) {
            return Err(StoreError::Inconsistent(format!(
                "tree nodes {level}/{from}..{to} are not all stored ({} are)",
                rows.len()
            )));
        }
        rows.iter().map(|r| hash(r.get(0), "a tree node")).collect()
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
        let mut next = from;
        while next < to {
            let page = (to - next).min(super::reader::PAGE_ENTRIES);
            let rows = self
                .client()
                .query(
                    "SELECT idx, data FROM entries WHERE idx >= $1 AND idx < $2 ORDER BY idx",
                    &[&i64_of(next), &i64_of(next + page)],
                )
                .map_err(|e| E::from(backend("read entries")(e)))?;
            for r in &rows {
                if u64_of(r.get(0)) != next {
                    return Err(StoreError::NotFound(next).into());
                }
                f(next, r.get::<_, &[u8]>(1))?;
                next += 1;
            }
            if rows.len() as u64 != page {
                return Err(StoreError::NotFound(next).into());
            }
        }
        Ok(())
    }
}

impl HashStore for PgReader {
    type Error = StoreError;

    /// The root of the perfect subtree `level`/`index`: stored at level ≥ [`NODE_LEVEL`],
    /// hashed from at most 255 leaves below it.
    fn node(&self, level: u32, index: u64) -> Result<Hash, StoreError> {
        if level >= NODE_LEVEL {
            return self
                .nodes(level, index, index + 1)
                .map(|mut v| v.remove(0))
                .map_err(|_| {
                    StoreError::Inconsistent(format!("tree node {level}/{index} is missing"))
                });
        }
        let start = index << level;
        Ok(crate::store::fold(
            &self.leaves(start, start + (1u64 << level))?,
        ))
    }
}
