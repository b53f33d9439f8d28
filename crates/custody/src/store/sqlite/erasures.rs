//! Erasures: recorded with their `payload_erased` entry, carried out once a signed checkpoint
//! covers that entry; and what retention may erase, chosen by the entries' signed times.

use rusqlite::params;

use super::{SqliteReader, SqliteStore, StoreError, i64_of};

impl SqliteStore {
    /// Deletes the payloads of every pending erasure whose entry is below `covered` (the size
    /// of a signed, persisted checkpoint), in one transaction. Returns the payloads deleted.
    ///
    /// # Errors
    /// [`StoreError`]; nothing is deleted then.
    pub(super) fn complete(&mut self, covered: u64) -> Result<u64, StoreError> {
        let tx = self
            .conn
            .transaction()
            .map_err(StoreError::sql("begin a transaction"))?;
        let spans: Vec<(i64, i64)> = {
            let mut st = tx
                .prepare_cached("SELECT first, last FROM pending_erasures WHERE entry < ?1")
                .map_err(StoreError::sql("read pending erasures"))?;
            st.query_map(params![i64_of(covered)], |r| Ok((r.get(0)?, r.get(1)?)))
                .map_err(StoreError::sql("read pending erasures"))?
                .collect::<Result<_, _>>()
                .map_err(StoreError::sql("read a pending erasure"))?
        };
        let mut deleted = 0u64;
        for (first, last) in spans {
            deleted += tx
                .prepare_cached("DELETE FROM payloads WHERE id >= ?1 * 4 AND id < ?2 * 4")
                .and_then(|mut st| st.execute(params![first, last]))
                .map_err(StoreError::sql("erase payloads"))? as u64;
        }
        tx.execute(
            "DELETE FROM pending_erasures WHERE entry < ?1",
            params![i64_of(covered)],
        )
        .map_err(StoreError::sql("clear pending erasures"))?;
        tx.commit()
            .map_err(StoreError::sql("commit the erasures"))?;
        Ok(deleted)
    }
}

impl SqliteReader {
    /// Whether entry `index`'s payloads are recorded as erased, waiting for a checkpoint.
    ///
    /// # Errors
    /// [`StoreError`].
    pub fn erasure_pending(&self, index: u64) -> Result<bool, StoreError> {
        self.conn
            .prepare_cached(
                "SELECT 1 FROM pending_erasures WHERE first <= ?1 AND ?1 < last LIMIT 1",
            )
            .and_then(|mut st| st.exists(params![i64_of(index)]))
            .map_err(StoreError::sql("read pending erasures"))
    }

    /// The oldest run of at most `limit` entries, past any pending erasure, whose payloads
    /// are stored and that were made before `cutoff_ns` by their own signed time (not the
    /// payload rows' time column, which nothing signs), as `from..to`. Entries are in time
    /// order, give or take the moment between their time and their commit: the run stops at
    /// the first entry that is not expired.
    ///
    /// # Errors
    /// [`StoreError`].
    pub fn expired_range(
        &self,
        cutoff_ns: u64,
        limit: u64,
    ) -> Result<Option<(u64, u64)>, StoreError> {
        let floor: Option<i64> = self
            .conn
            .query_row("SELECT max(last) FROM pending_erasures", [], |r| r.get(0))
            .map_err(StoreError::sql("read pending erasures"))?;
        let floor = floor.map_or(0, |f| u64::try_from(f).unwrap_or(0));
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT DISTINCT id >> 2 FROM payloads WHERE id >= ?1 * 4 ORDER BY id LIMIT ?2",
            )
            .map_err(StoreError::sql("prepare the expired payload query"))?;
        let candidates: Vec<i64> = stmt
            .query_map(params![i64_of(floor), i64_of(limit)], |r| r.get(0))
            .map_err(StoreError::sql("find expired payloads"))?
            .collect::<Result<_, _>>()
            .map_err(StoreError::sql("read a payload index"))?;
        let mut range: Option<(u64, u64)> = None;
        for idx in candidates {
            let idx = u64::try_from(idx).unwrap_or(0);
            let (_, data) = crate::store::LogReader::entry(self, idx)?;
            let entry = tlog::Entry::decode(&data).map_err(|e| {
                StoreError::Inconsistent(format!("entry {idx} cannot be decoded: {e}"))
            })?;
            if entry.time_ns >= cutoff_ns {
                break;
            }
            match &mut range {
                None => range = Some((idx, idx + 1)),
                Some((_, to)) => *to = idx + 1,
            }
        }
        Ok(range)
    }
}
