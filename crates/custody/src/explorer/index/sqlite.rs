//! The index beside the embedded log: `<data_dir>/index.sqlite`.

use std::path::Path;

use rusqlite::{Connection, OptionalExtension, params};

use super::{Cell, Db, INHERIT, Index, IndexError, Row, Sink};
use crate::store::Reader;

/// The index file's name in the data directory.
pub const FILE: &str = "index.sqlite";

/// The index's schema version: an index written by another version is rebuilt.
/// 3: the indexes of columns an entry may leave empty (its run, CI claims, tool, session) hold
/// only the entries that have a value there: a filter is always `column = value`, which no
/// empty one matches, and each entry without them costs fewer b-tree inserts.
const SCHEMA_VERSION: i64 = 3;

/// The columns an entry may leave empty whose indexes are partial (schema 3).
const OPTIONAL: [&str; 9] = [
    "run",
    "run_id",
    "pipeline",
    "actor",
    "principal",
    "repository",
    "project",
    "target",
    "session",
];

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rows (
    idx INTEGER PRIMARY KEY,
    time_ns INTEGER NOT NULL,
    kind TEXT NOT NULL,
    direction TEXT NOT NULL,
    endpoint TEXT,
    session TEXT,
    method TEXT,
    target TEXT,
    principal TEXT,
    issuer TEXT,
    subject TEXT,
    repository TEXT,
    workflow TEXT,
    run_id TEXT,
    run_attempt TEXT,
    actor TEXT,
    git_ref TEXT,
    environment TEXT,
    project TEXT,
    pipeline TEXT,
    run TEXT,
    decision TEXT,
    approval TEXT,
    masked INTEGER NOT NULL,
    error INTEGER NOT NULL,
    request INTEGER
);
CREATE TABLE IF NOT EXISTS runs (
    run TEXT PRIMARY KEY,
    issuer TEXT,
    repository TEXT,
    workflow TEXT,
    run_id TEXT,
    attempt TEXT,
    principal TEXT,
    entries INTEGER NOT NULL,
    calls INTEGER NOT NULL,
    first_ns INTEGER NOT NULL,
    last_ns INTEGER NOT NULL,
    denials INTEGER NOT NULL,
    approvals INTEGER NOT NULL,
    errors INTEGER NOT NULL,
    last_idx INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS runs_latest ON runs(last_idx);
CREATE INDEX IF NOT EXISTS runs_repository ON runs(repository, last_idx);
CREATE INDEX IF NOT EXISTS rows_time ON rows(time_ns);
CREATE INDEX IF NOT EXISTS rows_run ON rows(run, idx) WHERE run IS NOT NULL;
CREATE INDEX IF NOT EXISTS rows_run_id ON rows(run_id, idx) WHERE run_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS rows_pipeline ON rows(pipeline, idx) WHERE pipeline IS NOT NULL;
CREATE INDEX IF NOT EXISTS rows_actor ON rows(actor, idx) WHERE actor IS NOT NULL;
CREATE INDEX IF NOT EXISTS rows_principal ON rows(principal, idx) WHERE principal IS NOT NULL;
CREATE INDEX IF NOT EXISTS rows_repository ON rows(repository, idx) WHERE repository IS NOT NULL;
CREATE INDEX IF NOT EXISTS rows_project ON rows(project, idx) WHERE project IS NOT NULL;
CREATE INDEX IF NOT EXISTS rows_target ON rows(target, idx) WHERE target IS NOT NULL;
CREATE INDEX IF NOT EXISTS rows_kind ON rows(kind, idx);
CREATE INDEX IF NOT EXISTS rows_session ON rows(session, idx) WHERE session IS NOT NULL;
CREATE INDEX IF NOT EXISTS rows_decision ON rows(decision, idx) WHERE decision IS NOT NULL;
CREATE INDEX IF NOT EXISTS rows_approval ON rows(approval) WHERE approval IS NOT NULL;
CREATE INDEX IF NOT EXISTS rows_request ON rows(request) WHERE request IS NOT NULL;
CREATE INDEX IF NOT EXISTS rows_masked ON rows(idx) WHERE masked = 1;
CREATE INDEX IF NOT EXISTS rows_error ON rows(idx) WHERE error = 1;
";

pub(super) fn open(data_dir: &Path) -> Result<Index, IndexError> {
    let path = data_dir.join(FILE);
    let place = path.display().to_string();
    let at = |what| Index::sql_at(&place, what);
    let conn = Connection::open(&path).map_err(at("open"))?;
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = 5000; PRAGMA cache_size = -4096; PRAGMA temp_store = MEMORY;",
    )
    .map_err(at("set its journal mode"))?;
    let version: Option<i64> = conn
        .query_row("SELECT value FROM meta WHERE key = 'schema'", [], |r| {
            r.get(0)
        })
        .optional()
        .unwrap_or(None);
    if version == Some(2) {
        // Schema 3 changed indexes only: rebuild those in place, keeping what is indexed
        // (a rebuild from the log would leave the explorer's results short until it is done).
        let tx = conn
            .unchecked_transaction()
            .map_err(at("begin its upgrade"))?;
        for column in OPTIONAL {
            tx.execute_batch(&format!(
                "DROP INDEX IF EXISTS rows_{column}; \
                 CREATE INDEX rows_{column} ON rows({column}, idx) WHERE {column} IS NOT NULL;"
            ))
            .map_err(at("make an index of an optional column partial"))?;
        }
        tx.execute(
            "UPDATE meta SET value = ?1 WHERE key = 'schema'",
            params![SCHEMA_VERSION],
        )
        .map_err(at("write its version"))?;
        tx.commit().map_err(at("commit its upgrade"))?;
    } else if version.is_some_and(|v| v != SCHEMA_VERSION) {
        conn.execute_batch(
            "DROP TABLE IF EXISTS rows; DROP TABLE IF EXISTS runs; DROP TABLE IF EXISTS meta;",
        )
        .map_err(at("drop an index of another version"))?;
    }
    conn.execute_batch(SCHEMA)
        .map_err(at("create its tables"))?;
    conn.execute(
        "INSERT OR IGNORE INTO meta(key, value) VALUES ('schema', ?1), ('cursor', 0)",
        params![SCHEMA_VERSION],
    )
    .map_err(at("write its version"))?;
    Ok(Index {
        db: Db::Sqlite(conn),
        place,
    })
}

pub(super) fn rows(
    conn: &Connection,
    place: &str,
    sql: &str,
    params: &[Cell],
    what: &'static str,
) -> Result<Vec<Vec<Cell>>, IndexError> {
    let mut stmt = conn
        .prepare_cached(sql)
        .map_err(Index::sql_at(place, what))?;
    let n = stmt.column_count();
    stmt.query_map(rusqlite::params_from_iter(params.iter()), |r| {
        (0..n)
            .map(|i| r.get::<_, rusqlite::types::Value>(i).map(Cell::from))
            .collect::<Result<Vec<_>, _>>()
    })
    .map_err(Index::sql_at(place, what))?
    .collect::<Result<_, _>>()
    .map_err(Index::sql_at(place, what))
}

pub(super) fn clear(conn: &Connection, place: &str) -> Result<(), IndexError> {
    conn.execute_batch(
        "DELETE FROM rows; DELETE FROM runs; UPDATE meta SET value = 0 WHERE key = 'cursor';",
    )
    .map_err(Index::sql_at(place, "empty it"))
}

struct Tx<'a> {
    tx: &'a rusqlite::Transaction<'a>,
    place: &'a str,
}

impl Sink for Tx<'_> {
    fn request_row(&mut self, idx: u64) -> Result<Option<Vec<Cell>>, IndexError> {
        Ok(rows(
            self.tx,
            self.place,
            INHERIT,
            &[Cell::int(idx)],
            "read a request's row",
        )?
        .into_iter()
        .next())
    }

    fn insert(&mut self, row: &Row) -> Result<(), IndexError> {
        self.tx
            .prepare_cached(
                // Plain INSERT: rows past the cursor never exist (the cursor moves in their
                // transaction), and OR REPLACE would make SQLite journal every statement.
                "INSERT INTO rows VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, \
                 ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26)",
            )
            .and_then(|mut s| s.execute(rusqlite::params_from_iter(row.cells())))
            .map(drop)
            .map_err(Index::sql_at(self.place, "insert a row"))
    }

    fn summarise(&mut self, run: &str, row: &Row) -> Result<(), IndexError> {
        self.tx
            .prepare_cached(
                "INSERT INTO runs VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 1, ?8, ?9, ?9, ?10, ?11, ?12, ?13) \
                 ON CONFLICT(run) DO UPDATE SET entries = entries + 1, calls = calls + ?8, \
                 first_ns = min(first_ns, ?9), last_ns = max(last_ns, ?9), \
                 denials = denials + ?10, approvals = approvals + ?11, errors = errors + ?12, \
                 last_idx = max(last_idx, ?13)",
            )
            .and_then(|mut s| s.execute(rusqlite::params_from_iter(row.summary(run))))
            .map(drop)
            .map_err(Index::sql_at(self.place, "update a run's summary"))
    }
}

pub(super) fn step(
    conn: &mut Connection,
    place: &str,
    log: &Reader,
    size: u64,
    max: u64,
) -> Result<u64, IndexError> {
    let cursor: i64 = conn
        .query_row("SELECT value FROM meta WHERE key = 'cursor'", [], |r| {
            r.get(0)
        })
        .map_err(Index::sql_at(place, "read its cursor"))?;
    let mut from = u64::try_from(cursor).unwrap_or(0);
    if from > size {
        // An index of a longer log than this one (a log restored or replaced): start over.
        tracing::warn!(
            "the search index {place} covers {from} entries but the log holds {size}: rebuilding it"
        );
        clear(conn, place)?;
        from = 0;
    }
    let to = size.min(from.saturating_add(max));
    if to <= from {
        return Ok(0);
    }
    let tx = conn
        .transaction()
        .map_err(Index::sql_at(place, "begin a transaction"))?;
    super::fill(log, from, to, &mut Tx { tx: &tx, place })?;
    tx.execute(
        "UPDATE meta SET value = ?1 WHERE key = 'cursor'",
        params![i64::try_from(to).unwrap_or(i64::MAX)],
    )
    .map_err(Index::sql_at(place, "move its cursor"))?;
    tx.commit().map_err(Index::sql_at(place, "commit"))?;
    Ok(to - from)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(index: &Index) -> &Connection {
        match &index.db {
            Db::Sqlite(c) => c,
            Db::Shared(_) => unreachable!("an embedded index"),
        }
    }

    /// SQLite's plan for `sql` (one parameter, bound to a value), its steps joined.
    fn plan(c: &Connection, sql: &str) -> String {
        let steps: Vec<String> = c
            .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
            .unwrap()
            .query_map(["x"], |r| r.get::<_, String>(3))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        steps.join("; ")
    }

    /// The statement that made index `name`.
    fn index_sql(c: &Connection, name: &str) -> String {
        c.query_row(
            "SELECT sql FROM sqlite_master WHERE name = ?1",
            [name],
            |r| r.get(0),
        )
        .unwrap()
    }

    /// Every optional column's index holds no entry without a value there.
    fn assert_partial(c: &Connection) {
        for column in OPTIONAL {
            let sql = index_sql(c, &format!("rows_{column}"));
            assert!(
                sql.ends_with(&format!("WHERE {column} IS NOT NULL")),
                "{sql}"
            );
        }
    }

    /// Each filter on a column an entry may leave empty is answered from that column's
    /// partial index (schema 3), newest first, as the explorer's pages ask.
    #[test]
    fn filters_on_optional_columns_use_their_partial_indexes() {
        let dir = tempfile::tempdir().unwrap();
        let index = open(dir.path()).unwrap();
        let c = conn(&index);
        for column in OPTIONAL {
            let plan = plan(
                c,
                &format!("SELECT idx FROM rows WHERE {column} = ?1 ORDER BY idx DESC LIMIT 101"),
            );
            assert!(
                plan.contains(&format!("INDEX rows_{column} ")),
                "{column}: {plan}"
            );
        }
        assert_partial(c);
    }

    /// The filters that combine optional columns keep their plans: a run's id is looked up
    /// in three partial indexes at once.
    #[test]
    fn a_run_filter_reads_three_partial_indexes() {
        let dir = tempfile::tempdir().unwrap();
        let index = open(dir.path()).unwrap();
        let plan = plan(
            conn(&index),
            "SELECT idx FROM rows WHERE (run = ?1 OR run_id = ?1 OR pipeline = ?1) \
             AND kind != 'log_read' ORDER BY idx LIMIT 10000",
        );
        for index in ["rows_run ", "rows_run_id ", "rows_pipeline "] {
            assert!(plan.contains(index), "{index}: {plan}");
        }
    }

    /// An index of schema 2 (full indexes) is upgraded where it stands: what it holds stays.
    #[test]
    fn a_schema_2_index_is_upgraded_in_place() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut old = SCHEMA.to_string();
            for column in OPTIONAL {
                old = old.replace(&format!(" WHERE {column} IS NOT NULL"), "");
            }
            let c = Connection::open(dir.path().join(FILE)).unwrap();
            c.execute_batch(&old).unwrap();
            c.execute_batch(
                "INSERT INTO meta VALUES ('schema', 2), ('cursor', 1);
                 INSERT INTO rows (idx, time_ns, kind, direction, masked, error, repository)
                     VALUES (0, 1, 'request', 'client', 0, 0, 'acme/api');",
            )
            .unwrap();
        }
        let index = open(dir.path()).unwrap();
        let c = conn(&index);
        let (schema, cursor, rows): (i64, i64, i64) = c
            .query_row(
                "SELECT (SELECT value FROM meta WHERE key = 'schema'), \
                 (SELECT value FROM meta WHERE key = 'cursor'), (SELECT count(*) FROM rows)",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap();
        assert_eq!((schema, cursor, rows), (SCHEMA_VERSION, 1, 1));
        assert_partial(c);
        let found: i64 = c
            .query_row(
                "SELECT count(*) FROM rows WHERE repository = 'acme/api'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(found, 1);
    }

    /// An index written under another schema is dropped and built again from the log, not
    /// read with columns or indexes it does not have.
    #[test]
    fn an_index_of_another_schema_version_is_rebuilt() {
        let dir = tempfile::tempdir().unwrap();
        {
            let c = Connection::open(dir.path().join(FILE)).unwrap();
            c.execute_batch(
                "CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
                 INSERT INTO meta VALUES ('schema', 1), ('cursor', 7);
                 CREATE TABLE rows (idx INTEGER PRIMARY KEY, time_ns INTEGER NOT NULL);
                 INSERT INTO rows VALUES (0, 1);
                 CREATE INDEX rows_run ON rows(time_ns);",
            )
            .unwrap();
        }
        let index = open(dir.path()).unwrap();
        let c = conn(&index);
        let (schema, cursor): (i64, i64) = c
            .query_row(
                "SELECT (SELECT value FROM meta WHERE key = 'schema'), (SELECT value FROM meta WHERE key = 'cursor')",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!((schema, cursor), (SCHEMA_VERSION, 0));
        let rows: i64 = c
            .query_row("SELECT count(*) FROM rows", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 0);
        let sql = index_sql(c, "rows_run");
        assert!(
            sql.contains("rows(run, idx) WHERE run IS NOT NULL"),
            "{sql}"
        );
    }
}
