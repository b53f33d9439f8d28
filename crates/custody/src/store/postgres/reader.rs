//! The log in PostgreSQL read as any log is read ([`LogReader`]): what `custody verify --db`
//! checks, entry by entry, payloads with them.

use std::cell::RefCell;

use tlog::Hash;

use super::{Bounds, PgLog, backend, checkpoint_of, i64_of, u64_of};
use crate::store::{LogReader, StoreError, StoredCheckpoint, StoredPayload};

/// Entries read per query while scanning.
const PAGE: i64 = 10_000;
/// [`PAGE`], as a count.
pub(super) const PAGE_ENTRIES: u64 = 10_000;

/// A reading connection to the shared log.
pub struct PgReader {
    /// Taken only when dropped.
    client: Option<RefCell<postgres::Client>>,
}

/// The blocking client owns a runtime of its own, which must not be dropped on a thread that
/// drives async tasks: there, it is dropped on a thread of its own.
impl Drop for PgReader {
    fn drop(&mut self) {
        if let Some(c) = self.client.take() {
            super::drop_off_runtime(c);
        }
    }
}

pub(super) fn hash(b: &[u8], what: &str) -> Result<Hash, StoreError> {
    Hash::from_slice(b).ok_or_else(|| StoreError::Inconsistent(format!("{what} is not 32 bytes")))
}

impl PgReader {
    /// Connects to read the log at `url` (its schema must be one this build knows).
    ///
    /// # Errors
    /// The connection, or a schema this build cannot read.
    pub fn connect(url: &str) -> Result<Self, StoreError> {
        let log = PgLog::connect(url, "reader", Bounds::default())
            .map_err(|e| StoreError::Backend(e.to_string()))?;
        let mut client = log.client;
        let version: Option<i32> = client
            .query_opt("SELECT version FROM custody_schema", &[])
            .map_err(backend(
                "read the schema version (is this a custody log database?)",
            ))?
            .map(|r| r.get(0));
        match version {
            Some(v) if v <= super::SCHEMA_VERSION => {}
            Some(v) => {
                return Err(StoreError::Backend(format!(
                    "the log database's schema is version {v}, newer than this custody knows ({})",
                    super::SCHEMA_VERSION
                )));
            }
            None => {
                return Err(StoreError::Backend(
                    "the database holds no custody log".into(),
                ));
            }
        }
        Ok(Self {
            client: Some(RefCell::new(client)),
        })
    }

    /// Whether its connection has ended (the server closed it, or it failed).
    pub fn is_closed(&self) -> bool {
        self.client
            .as_ref()
            .is_none_or(|c| c.try_borrow().is_ok_and(|c| c.is_closed()))
    }

    pub(super) fn client(&self) -> std::cell::RefMut<'_, postgres::Client> {
        self.client
            .as_ref()
            .unwrap_or_else(|| unreachable!("taken only when dropped"))
            .borrow_mut()
    }

    /// The approvals still pending whose `approval_requested` entry replica `replica` wrote,
    /// oldest first.
    ///
    /// # Errors
    /// [`StoreError`].
    pub fn pending_approvals_of(&self, replica: &str) -> Result<Vec<(String, u64)>, StoreError> {
        Ok(self
            .client()
            .query(
                "SELECT p.id, p.entry FROM pending_approvals p JOIN entries e ON e.idx = p.entry \
                 WHERE e.replica = $1 ORDER BY p.entry",
                &[&replica],
            )
            .map_err(backend("read the pending approvals"))?
            .iter()
            .map(|r| (r.get(0), u64_of(r.get(1))))
            .collect())
    }

    /// The payloads of entries `from..to`, by entry.
    fn payloads_in(
        &self,
        from: i64,
        to: i64,
    ) -> Result<std::collections::HashMap<u64, Vec<StoredPayload>>, StoreError> {
        let rows = self
            .client()
            .query(
                "SELECT idx, slot, opening, data FROM payloads WHERE idx >= $1 AND idx < $2 ORDER BY idx, slot",
                &[&from, &to],
            )
            .map_err(backend("read payloads"))?;
        let mut out: std::collections::HashMap<u64, Vec<StoredPayload>> =
            std::collections::HashMap::new();
        for r in rows {
            let opening: Vec<u8> = r.get(2);
            let opening: [u8; 32] = opening.try_into().map_err(|_| {
                StoreError::Inconsistent("a payload's opening is not 32 bytes".into())
            })?;
            let slot: i16 = r.get(1);
            out.entry(u64_of(r.get(0))).or_default().push((
                u8::try_from(slot)
                    .map_err(|_| StoreError::Inconsistent(format!("payload slot {slot}")))?,
                opening,
                r.get(3),
            ));
        }
        Ok(out)
    }
}

impl LogReader for PgReader {
    fn latest_checkpoint(&self) -> Result<Option<StoredCheckpoint>, StoreError> {
        super::latest_checkpoint(&mut *self.client()).map_err(backend("read the latest checkpoint"))
    }

    fn checkpoints(&self) -> Result<Vec<StoredCheckpoint>, StoreError> {
        Ok(self
            .client()
            .query(
                "SELECT size, note, signed_ns FROM checkpoints ORDER BY size",
                &[],
            )
            .map_err(backend("read the checkpoints"))?
            .iter()
            .map(checkpoint_of)
            .collect())
    }

    fn checkpoint_at(&self, size: u64) -> Result<Option<StoredCheckpoint>, StoreError> {
        Ok(self
            .client()
            .query_opt(
                "SELECT size, note, signed_ns FROM checkpoints WHERE size = $1",
                &[&i64_of(size)],
            )
            .map_err(backend("read a checkpoint"))?
            .as_ref()
            .map(checkpoint_of))
    }

    fn entry(&self, index: u64) -> Result<(Hash, Vec<u8>), StoreError> {
        let row = self
            .client()
            .query_opt(
                "SELECT leaf, data FROM entries WHERE idx = $1",
                &[&i64_of(index)],
            )
            .map_err(backend("read an entry"))?
            .ok_or(StoreError::NotFound(index))?;
        let leaf: Vec<u8> = row.get(0);
        Ok((hash(&leaf, &format!("entry {index}'s leaf"))?, row.get(1)))
    }

    fn pending_approvals(&self) -> Result<Vec<(String, u64)>, StoreError> {
        Ok(self
            .client()
            .query(
                "SELECT id, entry FROM pending_approvals ORDER BY entry",
                &[],
            )
            .map_err(backend("read the pending approvals"))?
            .iter()
            .map(|r| (r.get(0), u64_of(r.get(1))))
            .collect())
    }

    fn for_each_entry<E: From<StoreError>>(
        &self,
        mut f: impl FnMut(u64, Hash, &[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        self.for_each_entry_with_payloads(|i, leaf, data, _| f(i, leaf, data))
    }

    fn for_each_entry_with_payloads<E: From<StoreError>>(
        &self,
        mut f: impl FnMut(u64, Hash, &[u8], &[StoredPayload]) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut from = 0i64;
        loop {
            let rows = self
                .client()
                .query(
                    "SELECT idx, leaf, data FROM entries WHERE idx >= $1 ORDER BY idx LIMIT $2",
                    &[&from, &PAGE],
                )
                .map_err(|e| E::from(backend("read entries")(e)))?;
            let Some(last) = rows.last().map(|r| r.get::<_, i64>(0)) else {
                return Ok(());
            };
            let mut payloads = self.payloads_in(from, last + 1)?;
            for r in &rows {
                let idx = u64_of(r.get(0));
                let leaf: Vec<u8> = r.get(1);
                let leaf = hash(&leaf, &format!("entry {idx}'s leaf"))?;
                let data: Vec<u8> = r.get(2);
                let p = payloads.remove(&idx).unwrap_or_default();
                f(idx, leaf, &data, &p)?;
            }
            from = last + 1;
        }
    }

    fn payloads(&self, index: u64) -> Result<Vec<StoredPayload>, StoreError> {
        let i = i64_of(index);
        Ok(self
            .payloads_in(i, i + 1)?
            .remove(&index)
            .unwrap_or_default())
    }
}
