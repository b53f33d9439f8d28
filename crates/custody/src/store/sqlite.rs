//! The SQLite store: WAL journal, `synchronous = FULL` (every commit is fsynced) or `OFF`
//! for `durability = "none"`.

mod erasures;
mod ranges;
mod reader;

use std::path::Path;

use rusqlite::{Connection, OptionalExtension, params};
use tlog::compact::Node;
use tlog::{CompactRange, Hash};

use super::{Erase, Mark, Row, ScanFn, Store, StoreError, StoredCheckpoint, StoredPayload};
use crate::config::Durability;
pub use reader::SqliteReader;
use reader::{checkpoint_row, node};

/// The database file in a data directory.
pub const FILE: &str = "log.sqlite";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS entries (
    idx  INTEGER PRIMARY KEY,
    leaf BLOB NOT NULL,
    data BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS nodes (
    level INTEGER NOT NULL,
    idx   INTEGER NOT NULL,
    hash  BLOB NOT NULL,
    PRIMARY KEY (level, idx)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS checkpoints (
    size      INTEGER PRIMARY KEY,
    note      TEXT NOT NULL,
    signed_ns INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS pending_approvals (
    id    TEXT PRIMARY KEY,
    entry INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS payloads (
    id      INTEGER PRIMARY KEY, -- entry index * 4 + slot: appended in key order
    time_ns INTEGER NOT NULL,
    opening BLOB NOT NULL,
    data    BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS pending_erasures (
    entry INTEGER NOT NULL, -- the payload_erased entry
    first INTEGER NOT NULL, -- erase the payloads of entries first..last
    last  INTEGER NOT NULL,
    PRIMARY KEY (entry, first)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
";

fn i64_of(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn hash_of(b: &[u8]) -> Result<Hash, StoreError> {
    Hash::from_slice(b)
        .ok_or_else(|| StoreError::Inconsistent("a stored hash is not 32 bytes".into()))
}

/// The writer.
pub struct SqliteStore {
    conn: Connection,
}

impl SqliteStore {
    /// Opens (creating if needed) the log in `dir`.
    ///
    /// # Errors
    /// [`StoreError::Open`] or a schema error.
    pub fn open(dir: &Path, durability: Durability) -> Result<Self, StoreError> {
        let path = dir.join(FILE);
        let conn = Connection::open(&path).map_err(|source| StoreError::Open {
            path: path.display().to_string(),
            source,
        })?;
        let sync = match durability {
            Durability::Fsync => "FULL",
            Durability::None => "OFF",
        };
        // Larger pages for a new database: a 4 KiB payload and its row fit one page instead
        // of spilling into an overflow chain (an existing database keeps its page size).
        conn.pragma_update(None, "page_size", 16384)
            .map_err(StoreError::sql("set the page size"))?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(StoreError::sql("set the WAL journal mode"))?;
        conn.pragma_update(None, "synchronous", sync)
            .map_err(StoreError::sql("set synchronous"))?;
        conn.execute_batch(SCHEMA)
            .map_err(StoreError::sql("create the log tables"))?;
        restrict_permissions(&path);
        Ok(Self { conn })
    }
}

/// The database holds everything the log recorded: readable by the gateway's user only.
fn restrict_permissions(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    for p in [
        path.to_path_buf(),
        path.with_extension("sqlite-wal"),
        path.with_extension("sqlite-shm"),
    ] {
        let _ = std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600));
    }
}

impl Store for SqliteStore {
    fn append(
        &mut self,
        first: u64,
        rows: &[Row],
        nodes: &[Node],
        state: &CompactRange,
    ) -> Result<(), StoreError> {
        let tx = self
            .conn
            .transaction()
            .map_err(StoreError::sql("begin a transaction"))?;
        {
            let mut insert = tx
                .prepare_cached("INSERT INTO entries (idx, leaf, data) VALUES (?1, ?2, ?3)")
                .map_err(StoreError::sql("prepare the entry insert"))?;
            for (k, row) in rows.iter().enumerate() {
                insert
                    .execute(params![
                        i64_of(first + k as u64),
                        &row.leaf.0[..],
                        &row.data
                    ])
                    .map_err(StoreError::sql("insert an entry"))?;
            }
            let mut node = tx
                .prepare_cached("INSERT INTO nodes (level, idx, hash) VALUES (?1, ?2, ?3)")
                .map_err(StoreError::sql("prepare the node insert"))?;
            for n in nodes {
                node.execute(params![n.level, i64_of(n.index), &n.hash.0[..]])
                    .map_err(StoreError::sql("insert a tree node"))?;
            }
            let mut payload = tx
                .prepare_cached(
                    "INSERT INTO payloads (id, time_ns, opening, data) VALUES (?1 * 4 + ?2, ?3, ?4, ?5)",
                )
                .map_err(StoreError::sql("prepare the payload insert"))?;
            for (k, row) in rows.iter().enumerate() {
                for p in &row.payloads {
                    payload
                        .execute(params![
                            i64_of(first + k as u64),
                            p.slot,
                            i64_of(row.time_ns),
                            &p.opening[..],
                            &p.data[..]
                        ])
                        .map_err(StoreError::sql("insert a payload"))?;
                }
                // An erasure is carried out once a signed checkpoint covers its record
                // (`complete_erasures`): until then the payloads stay, so no unsigned entry
                // can ever be what explains a missing payload.
                let spans: Vec<(u64, u64)> = match &row.erase {
                    None => Vec::new(),
                    Some(Erase::Indices(list)) => list.iter().map(|i| (*i, i + 1)).collect(),
                    Some(Erase::Range { from, to, .. }) => vec![(*from, *to)],
                };
                for (first_idx, last_idx) in spans {
                    tx.prepare_cached(
                        "INSERT OR IGNORE INTO pending_erasures (entry, first, last) VALUES (?1, ?2, ?3)",
                    )
                    .and_then(|mut st| {
                        st.execute(params![
                            i64_of(first + k as u64),
                            i64_of(first_idx),
                            i64_of(last_idx)
                        ])
                    })
                    .map_err(StoreError::sql("record a pending erasure"))?;
                }
            }
            for (k, row) in rows.iter().enumerate() {
                match &row.mark {
                    None => {}
                    Some(Mark::Open(id)) => {
                        tx.prepare_cached(
                            "INSERT INTO pending_approvals (id, entry) VALUES (?1, ?2)",
                        )
                        .and_then(|mut s| s.execute(params![id, i64_of(first + k as u64)]))
                        .map_err(StoreError::sql("record a pending approval"))?;
                    }
                    Some(Mark::Close(id)) => {
                        tx.prepare_cached("DELETE FROM pending_approvals WHERE id = ?1")
                            .and_then(|mut s| s.execute(params![id]))
                            .map_err(StoreError::sql("close a pending approval"))?;
                    }
                }
            }
        }
        // The tree state needs no row of its own: the perfect subtrees it consists of are the
        // stored nodes (levels ≥ NODE_LEVEL) and at most 255 leaves (see `state`). Not writing
        // it spares every commit a page.
        let _ = state;
        // The point of no return: once this commit returns, the batch is durable and the
        // sequencer may acknowledge every entry in it.
        tx.commit().map_err(StoreError::sql("commit the batch"))
    }

    fn state(&mut self) -> Result<CompactRange, StoreError> {
        let last: Option<i64> = self
            .conn
            .query_row("SELECT max(idx) FROM entries", [], |r| r.get(0))
            .map_err(StoreError::sql("read the last entry index"))?;
        let size = last.map_or(0, |l| u64::try_from(l).unwrap_or(0) + 1);
        let count: i64 = self
            .conn
            .query_row(
                "SELECT count(*) FROM entries WHERE idx >= ?1",
                params![i64_of(size.saturating_sub(256))],
                |r| r.get(0),
            )
            .map_err(StoreError::sql("count the last entries"))?;
        if u64::try_from(count).unwrap_or(0) != size.min(256) {
            return Err(StoreError::Inconsistent(format!(
                "entries are missing below index {size}"
            )));
        }
        // The tree of `size` leaves is the perfect subtrees of its set bits: stored nodes for
        // the large ones, a few leaves hashed for the small ones. O(log n) reads.
        let nodes = CompactRange::subtrees(size)
            .map(|(level, index)| node(&self.conn, level, index))
            .collect::<Result<Vec<Hash>, StoreError>>()?;
        CompactRange::from_parts(size, nodes).map_err(|e| StoreError::Inconsistent(e.to_string()))
    }

    fn put_checkpoint(&mut self, cp: &StoredCheckpoint) -> Result<(), StoreError> {
        self.conn
            .prepare_cached("INSERT INTO checkpoints (size, note, signed_ns) VALUES (?1, ?2, ?3) ON CONFLICT (size) DO UPDATE SET note = ?2, signed_ns = ?3")
            .map_err(StoreError::sql("prepare the checkpoint insert"))?
            .execute(params![i64_of(cp.size), cp.note, i64_of(cp.signed_ns)])
            .map_err(StoreError::sql("store a checkpoint"))?;
        Ok(())
    }

    fn complete_erasures(&mut self, covered: u64) -> Result<u64, StoreError> {
        self.complete(covered)
    }

    fn latest_checkpoint(&mut self) -> Result<Option<StoredCheckpoint>, StoreError> {
        latest_checkpoint(&self.conn)
    }

    fn entry_version(&mut self) -> Result<Option<u8>, StoreError> {
        entry_version(&self.conn)
    }

    fn set_entry_version(&mut self, version: u8) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT INTO meta (key, value) VALUES ('entry_version', ?1) ON CONFLICT (key) DO UPDATE SET value = ?1",
                params![version.to_string()],
            )
            .map_err(StoreError::sql("record the entry version"))?;
        Ok(())
    }

    fn scan(
        &mut self,
        from: u64,
        to: u64,
        data: bool,
        f: &mut ScanFn<'_>,
    ) -> Result<(), StoreError> {
        scan(&self.conn, from, to, data, f)
    }
}

fn entry_version(conn: &Connection) -> Result<Option<u8>, StoreError> {
    let v: Option<String> = conn
        .query_row(
            "SELECT value FROM meta WHERE key = 'entry_version'",
            [],
            |r| r.get(0),
        )
        .optional()
        .map_err(StoreError::sql("read the entry version"))?;
    v.map(|v| {
        v.parse().map_err(|_| {
            StoreError::Inconsistent(format!("the entry version {v:?} is not a number"))
        })
    })
    .transpose()
}

type StoredPayloads = Vec<StoredPayload>;

fn opening_of(index: u64, opening: Vec<u8>) -> Result<[u8; 32], StoreError> {
    opening.try_into().map_err(|_| {
        StoreError::Inconsistent(format!("entry {index}'s payload opening is not 32 bytes"))
    })
}

fn payloads_of(conn: &Connection, index: u64) -> Result<StoredPayloads, StoreError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT id & 3, opening, data FROM payloads WHERE id >= ?1 * 4 AND id < ?1 * 4 + 4 ORDER BY id",
        )
        .map_err(StoreError::sql("prepare the payload query"))?;
    let rows = stmt
        .query_map(params![i64_of(index)], |r| {
            Ok((
                r.get::<_, u8>(0)?,
                r.get::<_, Vec<u8>>(1)?,
                r.get::<_, Vec<u8>>(2)?,
            ))
        })
        .map_err(StoreError::sql("read payloads"))?;
    rows.map(|r| {
        let (slot, opening, data) = r.map_err(StoreError::sql("read a payload"))?;
        Ok((slot, opening_of(index, opening)?, data))
    })
    .collect()
}

fn latest_checkpoint(conn: &Connection) -> Result<Option<StoredCheckpoint>, StoreError> {
    conn.query_row(
        "SELECT size, note, signed_ns FROM checkpoints ORDER BY size DESC LIMIT 1",
        [],
        checkpoint_row,
    )
    .optional()
    .map_err(StoreError::sql("read the latest checkpoint"))
}

fn scan(
    conn: &Connection,
    from: u64,
    to: u64,
    data: bool,
    f: &mut ScanFn<'_>,
) -> Result<(), StoreError> {
    let sql = if data {
        "SELECT idx, leaf, data FROM entries WHERE idx >= ?1 AND idx < ?2 ORDER BY idx"
    } else {
        "SELECT idx, leaf FROM entries WHERE idx >= ?1 AND idx < ?2 ORDER BY idx"
    };
    let mut stmt = conn
        .prepare(sql)
        .map_err(StoreError::sql("prepare the entry scan"))?;
    let mut rows = stmt
        .query(params![i64_of(from), i64_of(to)])
        .map_err(StoreError::sql("scan entries"))?;
    let mut next = from;
    while let Some(row) = rows.next().map_err(StoreError::sql("read an entry"))? {
        let idx: i64 = row.get(0).map_err(StoreError::sql("read an entry index"))?;
        if u64::try_from(idx).ok() != Some(next) {
            return Err(StoreError::NotFound(next));
        }
        let leaf = row
            .get_ref(1)
            .and_then(|v| v.as_blob().map_err(Into::into))
            .map_err(StoreError::sql("read a leaf hash"))?;
        let leaf = hash_of(leaf)?;
        let bytes = if data {
            Some(
                row.get_ref(2)
                    .and_then(|v| v.as_blob().map_err(Into::into))
                    .map_err(StoreError::sql("read entry data"))?,
            )
        } else {
            None
        };
        f(next, leaf, bytes)?;
        next += 1;
    }
    if next < to {
        return Err(StoreError::NotFound(next));
    }
    Ok(())
}
