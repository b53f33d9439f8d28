//! The SQLite store: WAL journal, `synchronous = FULL` (every commit is fsynced) or `OFF`
//! for `durability = "none"`.

mod erasures;
mod ranges;

use std::path::Path;

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use tlog::compact::Node;
use tlog::proof::HashStore;
use tlog::{CompactRange, Hash};

use super::{
    Erase, LogReader, Mark, NODE_LEVEL, Row, ScanFn, Store, StoreError, StoredCheckpoint,
    StoredPayload, fold,
};
use crate::config::Durability;

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

/// A read-only connection.
pub struct SqliteReader {
    conn: Connection,
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

fn leaves(conn: &Connection, from: u64, to: u64) -> Result<Vec<Hash>, StoreError> {
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
fn node(conn: &Connection, level: u32, index: u64) -> Result<Hash, StoreError> {
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

fn checkpoint_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoredCheckpoint> {
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
