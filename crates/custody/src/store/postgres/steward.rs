//! The steward: the one replica (by lease) that integrates committed entries into the tree and
//! stores checkpoints, moving the head only by compare-and-swap.

use tlog::{CompactRange, Hash};

use super::{PgError, PgLog, i64_of, u64_of};
use crate::store::NODE_LEVEL;

/// The advisory-lock key of the steward lease.
const STEWARD_LEASE: i64 = 0x6375_7374_6f64_7902;
/// The most entries one integration reads.
const MAX_INTEGRATE: u64 = 100_000;

/// The tree the head describes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub size: u64,
    pub root: Hash,
    pub state: CompactRange,
}

impl PgLog {
    /// Connects to hold the steward lease for `replica`: a session PostgreSQL ends once it is
    /// idle longer than `idle` (a paused or partitioned steward loses the lease with it, and
    /// another replica takes it over).
    ///
    /// # Errors
    /// [`PgError::Connect`]; SQL errors.
    pub fn for_lease(url: &str, replica: &str, idle: std::time::Duration) -> Result<Self, PgError> {
        let mut log = Self::connect(url, &format!("{replica} steward"), super::Bounds::default())?;
        log.client
            .batch_execute(&format!("SET idle_session_timeout = {}", idle.as_millis()))
            .map_err(PgError::sql("bound the steward's idle session"))?;
        Ok(log)
    }

    /// Whether the connection is gone (PostgreSQL ended it, or restarted).
    pub fn is_closed(&self) -> bool {
        self.client.is_closed()
    }

    /// Takes the steward lease if nobody holds it (or keeps it); `false` when another replica
    /// holds it. Held until this connection ends.
    ///
    /// # Errors
    /// SQL errors.
    pub fn lease(&mut self) -> Result<bool, PgError> {
        Ok(self
            .client
            // Held already: asked again, it would only count one more hold.
            .query_one(
                "SELECT CASE WHEN EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' \
                 AND pid = pg_backend_pid() AND granted AND objsubid = 1 \
                 AND classid::bigint = ($1::bigint >> 32) AND objid::bigint = ($1::bigint & 4294967295)) \
                 THEN true ELSE pg_try_advisory_lock($1::bigint) END",
                &[&STEWARD_LEASE],
            )
            .map_err(PgError::sql("ask for the steward lease"))?
            .get(0))
    }

    /// The head: the integrated tree (empty before the first integration).
    ///
    /// # Errors
    /// [`PgError::Inconsistent`] for a head that does not decode; SQL errors.
    pub fn head(&mut self) -> Result<Head, PgError> {
        let row = self
            .client
            .query_opt("SELECT size, root, state FROM log_head WHERE id", &[])
            .map_err(PgError::sql("read the head"))?;
        let Some(row) = row else {
            let state = CompactRange::new();
            return Ok(Head {
                size: 0,
                root: state.root(),
                state,
            });
        };
        let (size, root, state): (i64, Vec<u8>, Vec<u8>) = (row.get(0), row.get(1), row.get(2));
        let state = CompactRange::from_bytes(&state)
            .map_err(|e| PgError::Inconsistent(format!("the head's tree state: {e}")))?;
        let root = Hash::from_slice(&root)
            .ok_or_else(|| PgError::Inconsistent("the head's root is not 32 bytes".into()))?;
        if state.size() != u64_of(size) || state.root() != root {
            return Err(PgError::Inconsistent(format!(
                "the head says size {size} but its tree state is of size {} with another root",
                state.size()
            )));
        }
        Ok(Head {
            size: u64_of(size),
            root,
            state,
        })
    }

    /// Integrates the entries committed past `from` (the head this steward read): their leaves
    /// into the tree, its interior nodes stored, and the head moved from `from` to the new
    /// tree by compare-and-swap. `Ok(None)` when nothing new was committed, or when the head is
    /// no longer `from` (another steward moved it: read it again).
    ///
    /// # Errors
    /// [`PgError::Inconsistent`] when a stored node differs from the one computed; SQL errors.
    pub fn integrate(&mut self, from: &Head) -> Result<Option<Head>, PgError> {
        let committed = self.committed()?;
        let to = committed.min(from.size + MAX_INTEGRATE);
        if to <= from.size {
            return Ok(None);
        }
        let rows = self
            .client
            .query(
                "SELECT idx, leaf FROM entries WHERE idx >= $1 AND idx < $2 ORDER BY idx",
                &[&i64_of(from.size), &i64_of(to)],
            )
            .map_err(PgError::sql("read the entries to integrate"))?;
        let mut state = from.state.clone();
        let (mut n_level, mut n_idx, mut n_hash) = (Vec::new(), Vec::new(), Vec::new());
        for row in &rows {
            let idx = u64_of(row.get(0));
            if idx != state.size() {
                return Err(PgError::Inconsistent(format!(
                    "entry {} is missing below the committed size {committed}",
                    state.size()
                )));
            }
            let leaf: Vec<u8> = row.get(1);
            let leaf = Hash::from_slice(&leaf).ok_or_else(|| {
                PgError::Inconsistent(format!("entry {idx}'s leaf is not 32 bytes"))
            })?;
            state.append(leaf, |n| {
                if n.level >= NODE_LEVEL {
                    n_level.push(i32::try_from(n.level).unwrap_or(i32::MAX));
                    n_idx.push(i64_of(n.index));
                    n_hash.push(n.hash.0.to_vec());
                }
            });
        }
        if state.size() != to {
            return Err(PgError::Inconsistent(format!(
                "entries {}..{to} are missing below the committed size {committed}",
                state.size()
            )));
        }
        let root = state.root();
        let mut tx = self
            .client
            .transaction()
            .map_err(PgError::sql("begin an integration"))?;
        if !n_level.is_empty() {
            // A node another steward stored for the same tree is the same hash; a different
            // one means the entries changed under the tree.
            let differ: i64 = tx
                .query_one(
                    "WITH new AS (SELECT * FROM unnest($1::integer[], $2::bigint[], $3::bytea[]) AS u(level, idx, hash)),
                          ins AS (INSERT INTO nodes SELECT * FROM new ON CONFLICT DO NOTHING RETURNING 1)
                     SELECT count(*) FROM new JOIN nodes USING (level, idx) WHERE nodes.hash <> new.hash",
                    &[&n_level, &n_idx, &n_hash],
                )
                .map_err(PgError::sql("store the tree's nodes"))?
                .get(0);
            if differ > 0 {
                return Err(PgError::Inconsistent(format!(
                    "{differ} stored tree nodes differ from those computed from the entries"
                )));
            }
        }
        let moved = if from.size == 0 {
            tx.execute(
                "INSERT INTO log_head (size, root, state, updated_by) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (id) DO NOTHING",
                &[
                    &i64_of(to),
                    &root.0.to_vec(),
                    &state.to_bytes(),
                    &self.replica,
                ],
            )
        } else {
            tx.execute(
                "UPDATE log_head SET size = $1, root = $2, state = $3, updated_by = $4 \
                 WHERE id AND size = $5 AND root = $6",
                &[
                    &i64_of(to),
                    &root.0.to_vec(),
                    &state.to_bytes(),
                    &self.replica,
                    &i64_of(from.size),
                    &from.root.0.to_vec(),
                ],
            )
        }
        .map_err(PgError::sql("move the head"))?;
        if moved != 1 {
            // Another steward moved the head first.
            return Ok(None);
        }
        tx.commit().map_err(PgError::sql("commit the head"))?;
        Ok(Some(Head {
            size: to,
            root,
            state,
        }))
    }

    /// Stores the signed checkpoint `note` of the tree `head`, if the head is still that tree:
    /// `Ok(false)` when the head moved on or another note of that size is stored (nothing
    /// conflicting is ever stored beside a checkpoint).
    ///
    /// # Errors
    /// SQL errors.
    pub fn put_checkpoint(
        &mut self,
        head: &Head,
        note: &str,
        signed_ns: u64,
    ) -> Result<bool, PgError> {
        let mut tx = self
            .client
            .transaction()
            .map_err(PgError::sql("begin storing a checkpoint"))?;
        let current = tx
            .query_opt("SELECT size, root FROM log_head WHERE id FOR SHARE", &[])
            .map_err(PgError::sql("read the head"))?;
        let is_head = current.is_some_and(|r| {
            u64_of(r.get(0)) == head.size && r.get::<_, Vec<u8>>(1) == head.root.0.to_vec()
        });
        if !is_head {
            return Ok(false);
        }
        let stored = super::store_checkpoint(&mut tx, head.size, note, signed_ns)
            .map_err(PgError::sql("store a checkpoint"))?;
        tx.commit().map_err(PgError::sql("commit a checkpoint"))?;
        Ok(stored == note)
    }
}
