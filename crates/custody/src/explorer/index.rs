//! The search index: `<data_dir>/index.sqlite`, one row per log entry with the columns the
//! explorer filters on. Derived from the log and rebuildable at any time; never trusted for
//! integrity (every answer is read back from the log as the entry with its leaf hash).

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, params};
use serde_json::Value;
use tlog::Entry;

use crate::store::Reader;

/// The index file's name in the data directory.
pub const FILE: &str = "index.sqlite";

/// The index's schema version: an index written by another version is rebuilt.
const SCHEMA_VERSION: i64 = 2;

/// The claims the index keeps, each with its column.
pub const CLAIMS: [(&str, &str); 9] = [
    ("repository", "repository"),
    ("workflow", "workflow"),
    ("run_id", "run_id"),
    ("run_attempt", "run_attempt"),
    ("actor", "actor"),
    ("ref", "git_ref"),
    ("environment", "environment"),
    ("project_path", "project"),
    ("pipeline_id", "pipeline"),
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
CREATE INDEX IF NOT EXISTS rows_run ON rows(run, idx);
CREATE INDEX IF NOT EXISTS rows_run_id ON rows(run_id, idx);
CREATE INDEX IF NOT EXISTS rows_pipeline ON rows(pipeline, idx);
CREATE INDEX IF NOT EXISTS rows_actor ON rows(actor, idx);
CREATE INDEX IF NOT EXISTS rows_principal ON rows(principal, idx);
CREATE INDEX IF NOT EXISTS rows_repository ON rows(repository, idx);
CREATE INDEX IF NOT EXISTS rows_project ON rows(project, idx);
CREATE INDEX IF NOT EXISTS rows_target ON rows(target, idx);
CREATE INDEX IF NOT EXISTS rows_kind ON rows(kind, idx);
CREATE INDEX IF NOT EXISTS rows_session ON rows(session, idx);
CREATE INDEX IF NOT EXISTS rows_decision ON rows(decision, idx) WHERE decision IS NOT NULL;
CREATE INDEX IF NOT EXISTS rows_approval ON rows(approval) WHERE approval IS NOT NULL;
CREATE INDEX IF NOT EXISTS rows_request ON rows(request) WHERE request IS NOT NULL;
CREATE INDEX IF NOT EXISTS rows_masked ON rows(idx) WHERE masked = 1;
CREATE INDEX IF NOT EXISTS rows_error ON rows(idx) WHERE error = 1;
";

/// Why the index could not be used.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("the search index {path}: {what}: {source}")]
    Sql {
        path: String,
        what: &'static str,
        source: rusqlite::Error,
    },
    #[error("reading the log to index it: {0}")]
    Log(#[from] crate::store::StoreError),
    #[error("entry {0} of the log cannot be decoded, so it cannot be indexed: {1}")]
    Decode(u64, tlog::entry::DecodeError),
}

/// One entry's indexed columns.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Row {
    pub idx: u64,
    pub time_ns: u64,
    pub kind: String,
    pub direction: String,
    pub endpoint: Option<String>,
    pub session: Option<String>,
    pub method: Option<String>,
    pub target: Option<String>,
    pub principal: Option<String>,
    pub issuer: Option<String>,
    pub subject: Option<String>,
    /// In [`CLAIMS`] order.
    pub claims: [Option<String>; 9],
    pub run: Option<String>,
    pub decision: Option<String>,
    pub approval: Option<String>,
    pub masked: bool,
    pub error: bool,
    pub request: Option<u64>,
}

fn opt(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

fn text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The run an entry's caller belongs to: issuer, repository and run id and attempt (GitHub
/// style), or issuer, project and pipeline id (GitLab style); `None` for other callers.
pub fn run_key(issuer: Option<&str>, claims: &[Option<String>; 9]) -> Option<String> {
    let [repository, _, run_id, attempt, _, _, _, project, pipeline] = claims;
    let issuer = issuer.unwrap_or("");
    let key = match (repository, run_id, project, pipeline) {
        (Some(r), Some(id), _, _) => {
            format!("{issuer}\n{r}\n{id}\n{}", attempt.as_deref().unwrap_or(""))
        }
        (_, _, Some(p), Some(id)) => format!("{issuer}\n{p}\n{id}\n"),
        _ => return None,
    };
    use sha2::Digest as _;
    Some(hex::encode(&sha2::Sha256::digest(key.as_bytes())[..8]))
}

impl Row {
    /// The columns of `e`.
    pub fn of(e: &Entry<'_>) -> Self {
        let caller: Value = serde_json::from_str(&e.caller).unwrap_or(Value::Null);
        let detail: Value = serde_json::from_str(&e.detail).unwrap_or(Value::Null);
        let claims_of = caller.get("claims");
        let claims = CLAIMS.map(|(c, _)| text(claims_of.and_then(|m| m.get(c))));
        let issuer = text(caller.get("issuer"));
        let decision = text(detail.pointer("/policy/decision"));
        let masked = detail
            .get("mask")
            .and_then(Value::as_array)
            .is_some_and(|m| !m.is_empty());
        let error = matches!(
            e.kind.name(),
            "error" | "rejected" | "auth_failure" | "alarm"
        );
        Self {
            idx: e.index,
            time_ns: e.time_ns,
            kind: e.kind.name().to_string(),
            direction: e.direction.name().to_string(),
            endpoint: opt(&e.endpoint),
            session: opt(&e.session),
            method: opt(&e.method),
            target: opt(&e.target),
            principal: text(caller.get("name")),
            run: run_key(issuer.as_deref(), &claims),
            issuer,
            subject: text(caller.get("subject")),
            claims,
            decision,
            approval: text(detail.get("approval")),
            masked,
            error,
            request: e.request,
        }
    }
}

/// The index, open for reading and writing.
pub struct Index {
    conn: Connection,
    path: PathBuf,
}

impl Index {
    /// Opens (creating if need be) the index of the log in `data_dir`. An index of another
    /// schema version is emptied, to be rebuilt.
    ///
    /// # Errors
    /// The file cannot be opened or written.
    pub fn open(data_dir: &Path) -> Result<Self, IndexError> {
        let path = data_dir.join(FILE);
        let conn = Connection::open(&path).map_err(Self::sql_at(&path, "open"))?;
        let index = Self { conn, path };
        index
            .conn
            .execute_batch(
                "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = 5000; PRAGMA cache_size = -16384; PRAGMA temp_store = MEMORY;",
            )
            .map_err(index.sql("set its journal mode"))?;
        let version: Option<i64> = index
            .conn
            .query_row("SELECT value FROM meta WHERE key = 'schema'", [], |r| {
                r.get(0)
            })
            .optional()
            .unwrap_or(None);
        if version.is_some_and(|v| v != SCHEMA_VERSION) {
            index
                .conn
                .execute_batch(
                    "DROP TABLE IF EXISTS rows; DROP TABLE IF EXISTS runs; DROP TABLE IF EXISTS meta;",
                )
                .map_err(index.sql("drop an index of another version"))?;
        }
        index
            .conn
            .execute_batch(SCHEMA)
            .map_err(index.sql("create its tables"))?;
        index
            .conn
            .execute(
                "INSERT OR IGNORE INTO meta(key, value) VALUES ('schema', ?1), ('cursor', 0)",
                params![SCHEMA_VERSION],
            )
            .map_err(index.sql("write its version"))?;
        Ok(index)
    }

    fn sql_at(path: &Path, what: &'static str) -> impl FnOnce(rusqlite::Error) -> IndexError {
        let path = path.display().to_string();
        move |source| IndexError::Sql { path, what, source }
    }

    pub(crate) fn sql(&self, what: &'static str) -> impl FnOnce(rusqlite::Error) -> IndexError {
        Self::sql_at(&self.path, what)
    }

    pub(crate) fn conn(&self) -> &Connection {
        &self.conn
    }

    /// How many entries of the log are indexed (the next index to read).
    ///
    /// # Errors
    /// The index cannot be read.
    pub fn cursor(&self) -> Result<u64, IndexError> {
        let v: i64 = self
            .conn
            .query_row("SELECT value FROM meta WHERE key = 'cursor'", [], |r| {
                r.get(0)
            })
            .map_err(self.sql("read its cursor"))?;
        Ok(u64::try_from(v).unwrap_or(0))
    }

    /// Indexes at most `max` entries of the log after the cursor, below `size`, in one
    /// transaction that moves the cursor with them. Returns how many it indexed.
    ///
    /// # Errors
    /// The log or the index cannot be read or written.
    pub fn step(&mut self, log: &Reader, size: u64, max: u64) -> Result<u64, IndexError> {
        let mut from = self.cursor()?;
        if from > size {
            // An index of a longer log than this one (a log restored or replaced): start over.
            tracing::warn!(
                "the search index {} covers {from} entries but the log holds {size}: rebuilding it",
                self.path.display()
            );
            self.conn
                .execute_batch("DELETE FROM rows; DELETE FROM runs; UPDATE meta SET value = 0 WHERE key = 'cursor';")
                .map_err(self.sql("empty it"))?;
            from = 0;
        }
        let to = size.min(from.saturating_add(max));
        if to <= from {
            return Ok(0);
        }
        let path = self.path.clone();
        let tx = self
            .conn
            .transaction()
            .map_err(Self::sql_at(&path, "begin a transaction"))?;
        {
            let mut insert = tx
                .prepare_cached(
                    // Plain INSERT: rows past the cursor never exist (the cursor moves in their
                    // transaction), and OR REPLACE would make SQLite journal every statement.
                    "INSERT INTO rows VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, \
                     ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26)",
                )
                .map_err(Self::sql_at(&path, "prepare the insert"))?;
            let mut inherit = tx
                .prepare_cached(
                    "SELECT principal, issuer, subject, repository, workflow, run_id, run_attempt, \
                     actor, git_ref, environment, project, pipeline, run FROM rows WHERE idx = ?1",
                )
                .map_err(Self::sql_at(&path, "prepare the request lookup"))?;
            let mut summary = tx
                .prepare_cached(
                    "INSERT INTO runs VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 1, ?8, ?9, ?9, ?10, ?11, ?12, ?13) \
                     ON CONFLICT(run) DO UPDATE SET entries = entries + 1, calls = calls + ?8, \
                     first_ns = min(first_ns, ?9), last_ns = max(last_ns, ?9), \
                     denials = denials + ?10, approvals = approvals + ?11, errors = errors + ?12, \
                     last_idx = max(last_idx, ?13)",
                )
                .map_err(Self::sql_at(&path, "prepare the run summary"))?;
            log.entries_in(from, to, |idx, bytes| -> Result<(), IndexError> {
                let e = Entry::decode(bytes).map_err(|err| IndexError::Decode(idx, err))?;
                let mut row = Row::of(&e);
                // An answer or approval event names the request it belongs to; where its own
                // caller says less (the upstream's answer), it is the request's caller's.
                if row.run.is_none()
                    && row.principal.is_none()
                    && let Some(req) = row.request
                {
                    let found = inherit
                        .query_row(params![i64::try_from(req).unwrap_or(-1)], |r| {
                            let mut claims: [Option<String>; 9] = Default::default();
                            for (i, c) in claims.iter_mut().enumerate() {
                                *c = r.get(3 + i)?;
                            }
                            Ok((r.get(0)?, r.get(1)?, r.get(2)?, claims, r.get(12)?))
                        })
                        .optional()
                        .map_err(Self::sql_at(&path, "read a request's row"))?;
                    if let Some((p, i, s, c, run)) = found {
                        (row.principal, row.issuer, row.subject, row.claims, row.run) =
                            (p, i, s, c, run);
                    }
                }
                let c = &row.claims;
                insert
                    .execute(params![
                        i64::try_from(row.idx).unwrap_or(i64::MAX),
                        i64::try_from(row.time_ns).unwrap_or(i64::MAX),
                        row.kind,
                        row.direction,
                        row.endpoint,
                        row.session,
                        row.method,
                        row.target,
                        row.principal,
                        row.issuer,
                        row.subject,
                        c[0],
                        c[1],
                        c[2],
                        c[3],
                        c[4],
                        c[5],
                        c[6],
                        c[7],
                        c[8],
                        row.run,
                        row.decision,
                        row.approval,
                        row.masked,
                        row.error,
                        row.request.and_then(|r| i64::try_from(r).ok()),
                    ])
                    .map_err(Self::sql_at(&path, "insert a row"))?;
                if let Some(run) = row.run.as_ref().filter(|_| row.kind != "log_read") {
                    summary
                        .execute(params![
                            run,
                            row.issuer,
                            c[0].as_ref().or(c[7].as_ref()),
                            c[1],
                            c[2].as_ref().or(c[8].as_ref()),
                            c[3],
                            row.principal,
                            i64::from(row.kind == "request"),
                            i64::try_from(row.time_ns).unwrap_or(i64::MAX),
                            i64::from(row.decision.as_deref() == Some("deny")),
                            i64::from(row.kind == "approval_requested"),
                            i64::from(row.error),
                            i64::try_from(row.idx).unwrap_or(i64::MAX),
                        ])
                        .map_err(Self::sql_at(&path, "update a run's summary"))?;
                }
                Ok(())
            })?;
            tx.execute(
                "UPDATE meta SET value = ?1 WHERE key = 'cursor'",
                params![i64::try_from(to).unwrap_or(i64::MAX)],
            )
            .map_err(Self::sql_at(&path, "move its cursor"))?;
        }
        tx.commit().map_err(Self::sql_at(&path, "commit"))?;
        Ok(to - from)
    }

    /// Indexes everything the log in `data_dir` holds after the cursor.
    ///
    /// # Errors
    /// As [`Index::step`].
    pub fn catch_up(&mut self, log: &Reader) -> Result<u64, IndexError> {
        let size = log_size(log)?;
        let mut done = 0;
        loop {
            let n = self.step(log, size, STEP)?;
            if n == 0 {
                return Ok(done);
            }
            done += n;
        }
    }

    /// Empties the index and builds it again from the log.
    ///
    /// # Errors
    /// As [`Index::step`].
    pub fn rebuild(&mut self, log: &Reader) -> Result<u64, IndexError> {
        self.conn
            .execute_batch("DELETE FROM rows; DELETE FROM runs; UPDATE meta SET value = 0 WHERE key = 'cursor';")
            .map_err(self.sql("empty it"))?;
        self.catch_up(log)
    }
}

/// Entries indexed per transaction.
pub const STEP: u64 = 2_000;

/// How many entries the log holds.
///
/// # Errors
/// The log cannot be read.
pub fn log_size(log: &Reader) -> Result<u64, IndexError> {
    let mut size = 0u64;
    // The largest index: entries are dense from 0.
    if let Some(latest) = log.max_index()? {
        size = latest + 1;
    }
    Ok(size)
}
