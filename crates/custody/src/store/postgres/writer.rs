//! The shared log as a replica's audit sequencer writes it ([`Store`]).
//!
//! Each round runs in one transaction holding the sequencing row's lock:
//! [`Store::begin_round`] takes the lock and returns the leaves other replicas committed since
//! this replica's tree, which the sequencer integrates before it numbers its own entries; then
//! [`Store::append`] inserts the round's entries, payloads and interior nodes, moves the
//! sequence and the head (the tree state) and commits. Every replica's tree is the one tree, and
//! the head moves only under the lock.

use tlog::compact::Node;
use tlog::{CompactRange, Hash};

use super::{Bounds, PgLog, backend, i64_of, off_runtime, u64_of};
use crate::store::{Mark, Row, ScanFn, Store, StoreError, StoredCheckpoint};

/// A replica's writer. Its calls may come from a thread that drives async tasks (opening the
/// log at start): the blocking client then runs on a thread of its own for the call.
pub struct PgStore(Option<Direct>);

/// The writer, called on a thread that may block.
struct Direct {
    log: PgLog,
    /// The next index, when a round's transaction is open.
    open: Option<u64>,
    /// Where to connect again when the connection is lost (PostgreSQL restarted, the backend
    /// was terminated): never printed.
    url: String,
    /// Seals each entry this replica writes, and checks those others wrote.
    seal_key: [u8; 32],
    /// The head (size, root) read when the open round began.
    head: Option<(u64, Hash)>,
}

impl Store for PgStore {
    fn begin_round(&mut self, state: &CompactRange) -> Result<Vec<Hash>, StoreError> {
        let d = self.direct();
        off_runtime(move || d.begin_round(state))
    }
    fn end_round(&mut self) {
        let d = self.direct();
        off_runtime(move || d.rollback());
    }
    fn check_round(&mut self, integrated: &CompactRange) -> Result<(), StoreError> {
        self.direct().check_round(integrated)
    }
    fn shared(&self) -> bool {
        true
    }
    fn append(
        &mut self,
        first: u64,
        rows: &[Row],
        nodes: &[Node],
        state: &CompactRange,
    ) -> Result<(), StoreError> {
        let d = self.direct();
        off_runtime(move || d.append(first, rows, nodes, state))
    }
    fn state(&mut self) -> Result<CompactRange, StoreError> {
        let d = self.direct();
        off_runtime(move || d.state())
    }
    fn put_checkpoint(&mut self, cp: &StoredCheckpoint) -> Result<(), StoreError> {
        let d = self.direct();
        off_runtime(move || d.put_checkpoint(cp))
    }
    fn entry_version(&mut self) -> Result<Option<u8>, StoreError> {
        let d = self.direct();
        off_runtime(move || d.entry_version())
    }
    fn set_entry_version(&mut self, version: u8) -> Result<(), StoreError> {
        let d = self.direct();
        off_runtime(move || d.set_entry_version(version))
    }
    fn latest_checkpoint(&mut self) -> Result<Option<StoredCheckpoint>, StoreError> {
        let d = self.direct();
        off_runtime(move || d.latest_checkpoint())
    }
    fn scan(
        &mut self,
        from: u64,
        to: u64,
        data: bool,
        f: &mut ScanFn<'_>,
    ) -> Result<(), StoreError> {
        // The callback may not be sent to another thread: collect first, then call it here.
        let d = self.direct();
        let mut rows: Vec<(u64, Hash, Option<Vec<u8>>)> = Vec::new();
        let collected = off_runtime(|| {
            d.scan(from, to, data, &mut |i, leaf, bytes| {
                rows.push((i, leaf, bytes.map(<[u8]>::to_vec)));
                Ok(())
            })
        });
        for (i, leaf, bytes) in rows {
            f(i, leaf, bytes.as_deref())?;
        }
        collected
    }
}

impl PgStore {
    /// Connects as `replica` and creates or migrates the schema.
    ///
    /// # Errors
    /// The connection, or a schema newer than this build.
    /// `seal_key` seals the entries this replica writes and checks those others wrote: every
    /// replica derives it from the log's signing key, so a row only the database wrote is
    /// refused.
    pub fn connect(url: &str, replica: &str, seal_key: [u8; 32]) -> Result<Self, StoreError> {
        off_runtime(|| {
            let mut log = PgLog::connect(url, replica, Bounds::default())
                .map_err(|e| StoreError::Backend(e.to_string()))?;
            log.migrate()
                .map_err(|e| StoreError::Backend(e.to_string()))?;
            // A replica that was just killed may still hold its name for a moment.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
            while let Err(e) = claim_name(&mut log) {
                if std::time::Instant::now() > deadline {
                    return Err(e);
                }
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            Ok(Self(Some(Direct {
                log,
                open: None,
                url: url.to_string(),
                seal_key,
                head: None,
            })))
        })
    }
}

impl PgStore {
    /// Records `key` (a verifier key string) as the key the shared log is signed with, when
    /// none is recorded; returns the recorded one (every replica must sign with it).
    ///
    /// # Errors
    /// [`StoreError::Backend`].
    pub fn claim_key(&mut self, key: &str) -> Result<String, StoreError> {
        let d = self.direct();
        off_runtime(move || {
            let c = d.client();
            c.execute(
                "INSERT INTO meta (key, value) VALUES ('log_key', $1) ON CONFLICT (key) DO NOTHING",
                &[&key],
            )
            .map_err(backend("record the log's key"))?;
            Ok(
                c.query_one("SELECT value FROM meta WHERE key = 'log_key'", &[])
                    .map_err(backend("read the log's key"))?
                    .get(0),
            )
        })
    }

    fn direct(&mut self) -> &mut Direct {
        self.0
            .as_mut()
            .unwrap_or_else(|| unreachable!("taken only when dropped"))
    }
}

/// The blocking client owns a runtime of its own, which must not be dropped on a thread that
/// drives async tasks: there, it is dropped on a thread of its own.
impl Drop for PgStore {
    fn drop(&mut self) {
        if let Some(d) = self.0.take() {
            super::drop_off_runtime(d);
        }
    }
}

impl Direct {
    fn rollback(&mut self) {
        if self.open.take().is_some() {
            let _ = self.log.client.batch_execute("ROLLBACK");
        }
    }

    /// A lost connection (PostgreSQL restarted, this backend terminated) is replaced before the
    /// next round; a round in flight on it failed and was not acknowledged.
    fn reconnect_if_lost(&mut self) -> Result<(), StoreError> {
        if !self.log.client.is_closed() {
            return Ok(());
        }
        self.open = None;
        let replica = self.log.replica.clone();
        let mut log = PgLog::connect(&self.url, &replica, Bounds::default())
            .map_err(|e| StoreError::Backend(format!("the connection was lost, and {e}")))?;
        claim_name(&mut log)?;
        tracing::warn!(replica = %replica, "the log database connection was lost; connected again");
        self.log = log;
        Ok(())
    }

    fn client(&mut self) -> &mut postgres::Client {
        &mut self.log.client
    }

    /// The tree this replica made of the entries below the sequence must be the tree the head
    /// (written in the same statement as them) says: else the rows changed under the log.
    fn check_round(&mut self, integrated: &CompactRange) -> Result<(), StoreError> {
        let ok = match self.head {
            None => integrated.size() == 0,
            Some((size, root)) => size == integrated.size() && root == integrated.root(),
        };
        if ok {
            return Ok(());
        }
        let head = self.head;
        self.rollback();
        Err(StoreError::Inconsistent(format!(
            "the shared log's entries make a tree of size {} but its head says {}: rows were changed under the log",
            integrated.size(),
            head.map_or("none".into(), |(s, r)| format!(
                "size {s}, root {}",
                &r.to_hex()[..16]
            ))
        )))
    }
}

/// Holds this replica's name for as long as its connection lives (a session advisory lock):
/// two replicas with one name would take each other's approvals for their own.
fn claim_name(log: &mut PgLog) -> Result<(), StoreError> {
    let replica = log.replica.clone();
    let held: bool = log
        .client
        .query_one(
            "SELECT pg_try_advisory_lock(hashtextextended('custody replica ' || $1, 0))",
            &[&replica],
        )
        .map_err(backend("hold this replica's name"))?
        .get(0);
    if held {
        Ok(())
    } else {
        Err(StoreError::Backend(format!(
            "another replica named {replica:?} is running on this log: each replica needs a name of its own (audit.replica, default the host's name)"
        )))
    }
}

/// A bytea column as `simple_query` returns it (hex output, set for every connection).
fn bytea(text: &str) -> Option<Vec<u8>> {
    text.strip_prefix("\\x").and_then(|h| hex::decode(h).ok())
}

impl Store for Direct {
    fn begin_round(&mut self, state: &CompactRange) -> Result<Vec<Hash>, StoreError> {
        self.reconnect_if_lost()?;
        self.rollback();
        let c = self.client();
        // The transaction, the lock and the leaves committed past this tree, in one round trip.
        let rows = c
            .simple_query(&format!(
                "BEGIN; SELECT next_index, leaf, seal, head_size, head_root FROM custody_begin_round({})",
                i64_of(state.size())
            ))
            .map_err(backend(
                "take the sequence's lock and read what other replicas committed",
            ));
        let rows: Vec<postgres::SimpleQueryRow> = match rows {
            Ok(msgs) => msgs
                .into_iter()
                .filter_map(|m| match m {
                    postgres::SimpleQueryMessage::Row(r) => Some(r),
                    _ => None,
                })
                .collect(),
            Err(e) => {
                let _ = c.batch_execute("ROLLBACK");
                return Err(e);
            }
        };
        let first = rows.first();
        let next = first
            .and_then(|r| r.try_get(0).ok().flatten())
            .and_then(|v| v.parse::<u64>().ok());
        let Some(next) = next else {
            let _ = c.batch_execute("ROLLBACK");
            return Err(StoreError::Inconsistent(
                "the log's sequence row is missing".into(),
            ));
        };
        let head_size = first
            .and_then(|r| r.try_get(3).ok().flatten())
            .and_then(|v| v.parse::<u64>().ok());
        let head_root = first
            .and_then(|r| r.try_get(4).ok().flatten())
            .and_then(bytea);
        self.open = Some(next);
        self.head = match (head_size, head_root.and_then(|b| Hash::from_slice(&b))) {
            (Some(size), Some(root)) => Some((size, root)),
            _ => None,
        };
        if next < state.size() {
            self.rollback();
            return Err(StoreError::Inconsistent(format!(
                "the shared log holds {next} entries, fewer than the {} this replica integrated",
                state.size()
            )));
        }
        let mut leaves = Vec::with_capacity(rows.len());
        for (k, r) in rows.iter().enumerate() {
            let Some(leaf) = r.try_get(1).ok().flatten() else {
                continue;
            };
            let idx = state.size() + k as u64;
            let leaf = bytea(leaf).and_then(|b| Hash::from_slice(&b));
            let sealed = r.try_get(2).ok().flatten().and_then(bytea);
            let problem = match (&leaf, &sealed) {
                (None, _) => Some(format!("entry {idx}'s leaf is not 32 bytes")),
                (Some(l), Some(s)) if super::seal_checks(&self.seal_key, idx, l, s) => None,
                (Some(_), _) => Some(format!(
                    "entry {idx} is not sealed by a replica holding the log's key: it was written into the database by something else"
                )),
            };
            if let Some(p) = problem {
                self.rollback();
                return Err(StoreError::Inconsistent(p));
            }
            leaves.extend(leaf);
        }
        if leaves.len() as u64 != next - state.size() {
            self.rollback();
            return Err(StoreError::Inconsistent(format!(
                "entries {}..{next} are not all stored below the sequence",
                state.size()
            )));
        }
        Ok(leaves)
    }

    fn append(
        &mut self,
        first: u64,
        rows: &[Row],
        nodes: &[Node],
        state: &CompactRange,
    ) -> Result<(), StoreError> {
        if self.open.is_none() {
            // A caller that did not begin the round: begin it; nobody may have moved.
            let foreign =
                self.begin_round(&CompactRange::from_parts(first, Vec::new()).unwrap_or_default());
            if !foreign.as_ref().is_ok_and(Vec::is_empty) {
                self.rollback();
                return Err(StoreError::Inconsistent(format!(
                    "another replica appended at {first}: begin the round first"
                )));
            }
        }
        if self.open != Some(first) {
            let next = self.open;
            self.rollback();
            return Err(StoreError::Inconsistent(format!(
                "the round begins at {next:?}, not at {first}"
            )));
        }
        let result = write_round(self, first, rows, nodes, state);
        match result {
            Ok(()) => {
                self.open = None;
                self.client()
                    .batch_execute("COMMIT")
                    .map_err(backend("commit the round"))
            }
            Err(e) => {
                self.rollback();
                Err(e)
            }
        }
    }

    fn state(&mut self) -> Result<CompactRange, StoreError> {
        self.reconnect_if_lost()?;
        let row = self
            .client()
            .query_opt("SELECT state FROM log_head WHERE id", &[])
            .map_err(backend("read the head"))?;
        match row {
            None => Ok(CompactRange::new()),
            Some(r) => {
                let b: Vec<u8> = r.get(0);
                CompactRange::from_bytes(&b)
                    .map_err(|e| StoreError::Inconsistent(format!("the head's tree state: {e}")))
            }
        }
    }

    fn put_checkpoint(&mut self, cp: &StoredCheckpoint) -> Result<(), StoreError> {
        self.reconnect_if_lost()?;
        let stored = super::store_checkpoint(self.client(), cp.size, &cp.note, cp.signed_ns)
            .map_err(backend("store a checkpoint"))?;
        if stored != cp.note && super::cosigned_again(&cp.note, &stored) {
            // The same checkpoint, stored already with more cosignatures (by this steward's
            // earlier run, or a steward that took over): nothing to store.
            return Ok(());
        }
        if stored != cp.note && super::cosigned_again(&stored, &cp.note) {
            // The same checkpoint with witnesses' cosignatures: it takes the place of the one
            // stored (which it contains), unless another replica replaced it meanwhile.
            self.client()
                .execute(
                    "UPDATE checkpoints SET note = $2 WHERE size = $1 AND note = $3",
                    &[&i64_of(cp.size), &cp.note, &stored],
                )
                .map_err(backend("store a cosigned checkpoint"))?;
            return Ok(());
        }
        if stored != cp.note {
            return Err(StoreError::Inconsistent(format!(
                "another checkpoint of size {} is stored: two different trees were signed",
                cp.size
            )));
        }
        Ok(())
    }

    fn entry_version(&mut self) -> Result<Option<u8>, StoreError> {
        let v: Option<String> = self
            .client()
            .query_opt("SELECT value FROM meta WHERE key = 'entry_version'", &[])
            .map_err(backend("read the entry version"))?
            .map(|r| r.get(0));
        v.map(|v| {
            v.parse().map_err(|_| {
                StoreError::Inconsistent(format!("the entry version {v:?} is not a number"))
            })
        })
        .transpose()
    }

    fn set_entry_version(&mut self, version: u8) -> Result<(), StoreError> {
        self.client()
            .execute(
                "INSERT INTO meta (key, value) VALUES ('entry_version', $1) ON CONFLICT (key) DO NOTHING",
                &[&version.to_string()],
            )
            .map_err(backend("record the entry version"))?;
        Ok(())
    }

    fn latest_checkpoint(&mut self) -> Result<Option<StoredCheckpoint>, StoreError> {
        self.reconnect_if_lost()?;
        super::latest_checkpoint(self.client()).map_err(backend("read the latest checkpoint"))
    }

    fn scan(
        &mut self,
        from: u64,
        to: u64,
        data: bool,
        f: &mut ScanFn<'_>,
    ) -> Result<(), StoreError> {
        let rows = self
            .client()
            .query(
                "SELECT idx, leaf, CASE WHEN $3 THEN data END FROM entries \
                 WHERE idx >= $1 AND idx < $2 ORDER BY idx",
                &[&i64_of(from), &i64_of(to), &data],
            )
            .map_err(backend("scan entries"))?;
        let mut expect = from;
        for r in rows {
            let idx = u64_of(r.get(0));
            if idx != expect {
                return Err(StoreError::NotFound(expect));
            }
            let leaf: Vec<u8> = r.get(1);
            let leaf = Hash::from_slice(&leaf).ok_or_else(|| {
                StoreError::Inconsistent(format!("entry {idx}'s leaf is not 32 bytes"))
            })?;
            let bytes: Option<Vec<u8>> = r.get(2);
            f(idx, leaf, bytes.as_deref())?;
            expect += 1;
        }
        if expect < to {
            return Err(StoreError::NotFound(expect));
        }
        Ok(())
    }
}

/// The round's writes, inside the open transaction.
fn write_round(
    s: &mut Direct,
    first: u64,
    rows: &[Row],
    nodes: &[Node],
    state: &CompactRange,
) -> Result<(), StoreError> {
    if rows.iter().any(|r| r.erase.is_some()) {
        return Err(StoreError::Backend(
            "erasing payloads is not available on PostgreSQL yet".into(),
        ));
    }
    let replica = s.log.replica.clone();
    let seal_key = s.seal_key;
    let c = s.client();
    let (mut idx, mut leaf, mut data, mut time) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut seals = Vec::with_capacity(rows.len());
    let (mut p_idx, mut p_slot, mut p_open, mut p_data) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (k, r) in rows.iter().enumerate() {
        let at = i64_of(first + k as u64);
        idx.push(at);
        seals.push(super::seal(&seal_key, first + k as u64, &r.leaf));
        leaf.push(r.leaf.0.to_vec());
        data.push(r.data.clone());
        time.push(i64_of(r.time_ns));
        for p in &r.payloads {
            p_idx.push(at);
            p_slot.push(i16::from(p.slot));
            p_open.push(p.opening.to_vec());
            p_data.push(p.data.to_vec());
        }
    }
    let size = first + rows.len() as u64;
    if state.size() != size {
        return Err(StoreError::Inconsistent(format!(
            "the round ends at {size} but its tree has {} leaves",
            state.size()
        )));
    }
    let levels: Vec<i32> = nodes
        .iter()
        .map(|n| i32::try_from(n.level).unwrap_or(i32::MAX))
        .collect();
    let at: Vec<i64> = nodes.iter().map(|n| i64_of(n.index)).collect();
    let hashes: Vec<Vec<u8>> = nodes.iter().map(|n| n.hash.0.to_vec()).collect();
    // Entries, payloads, nodes, the sequence and the head in one statement (one round trip
    // under the lock).
    c.execute(
        "WITH ins AS (INSERT INTO entries (idx, leaf, data, time_ns, replica, seal) \
             SELECT i, l, d, t, $5, s FROM unnest($1::bigint[], $2::bytea[], $3::bytea[], $4::bigint[], $16::bytea[]) AS u(i, l, d, t, s) \
             RETURNING 1), \
         pay AS (INSERT INTO payloads (idx, slot, opening, data) \
             SELECT * FROM unnest($9::bigint[], $10::smallint[], $11::bytea[], $12::bytea[]) RETURNING 1), \
         nod AS (INSERT INTO nodes SELECT * FROM unnest($13::integer[], $14::bigint[], $15::bytea[]) \
             ON CONFLICT DO NOTHING RETURNING 1), \
         seq AS (UPDATE log_sequence SET next_index = $6 WHERE id RETURNING 1), \
         head AS (INSERT INTO log_head (size, root, state, updated_by) VALUES ($6, $7, $8, $5) \
             ON CONFLICT (id) DO UPDATE SET size = $6, root = $7, state = $8, updated_by = $5 RETURNING 1) \
         SELECT (SELECT count(*) FROM ins), (SELECT count(*) FROM pay), (SELECT count(*) FROM nod), \
             (SELECT count(*) FROM seq), (SELECT count(*) FROM head)",
        &[
            &idx,
            &leaf,
            &data,
            &time,
            &replica,
            &i64_of(size),
            &state.root().0.to_vec(),
            &state.to_bytes(),
            &p_idx,
            &p_slot,
            &p_open,
            &p_data,
            &levels,
            &at,
            &hashes,
            &seals,
        ],
    )
    .map_err(backend("insert the round's entries, payloads and nodes and move the sequence and head"))?;
    for (k, r) in rows.iter().enumerate() {
        match &r.mark {
            Some(Mark::Open(id)) => {
                c.execute(
                    "INSERT INTO pending_approvals (id, entry) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING",
                    &[id, &i64_of(first + k as u64)],
                )
                .map_err(backend("record a pending approval"))?;
            }
            Some(Mark::Close(id)) => {
                c.execute("DELETE FROM pending_approvals WHERE id = $1", &[id])
                    .map_err(backend("close a pending approval"))?;
            }
            None => {}
        }
    }
    Ok(())
}
