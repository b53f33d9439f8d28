//! The search index: one row per log entry with the columns the explorer filters on, and a
//! summary per CI run. Derived from the log and rebuildable at any time; never trusted for
//! integrity (every answer is read back from the log as the entry with its leaf hash).
//!
//! Beside the embedded log it is `<data_dir>/index.sqlite` ([`sqlite`]); beside a log replicas
//! share it lives in the same PostgreSQL database ([`shared`]), one index for every replica.
//! Both hold the same tables and answer the same SQL (`?N` parameters).

mod cell;
mod shared;
mod sqlite;

use std::path::Path;

use serde_json::Value;
use tlog::Entry;

pub use cell::Cell;
pub use sqlite::FILE;

use crate::store::{Location, Reader};

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

/// Why the index could not be used.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("the search index {path}: {what}: {source}")]
    Sql {
        path: String,
        what: &'static str,
        source: rusqlite::Error,
    },
    #[error("the search index in the shared log's database: {what}: {error}")]
    Shared { what: &'static str, error: String },
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

impl Row {
    /// The values of an index row, in the `rows` table's column order.
    fn cells(&self) -> Vec<Cell> {
        let t = |v: &Option<String>| Cell::from(v.clone());
        let mut out = vec![
            Cell::int(self.idx),
            Cell::int(self.time_ns),
            Cell::Text(self.kind.clone()),
            Cell::Text(self.direction.clone()),
            t(&self.endpoint),
            t(&self.session),
            t(&self.method),
            t(&self.target),
            t(&self.principal),
            t(&self.issuer),
            t(&self.subject),
        ];
        out.extend(self.claims.iter().map(t));
        out.extend([
            t(&self.run),
            t(&self.decision),
            t(&self.approval),
            Cell::Int(i64::from(self.masked)),
            Cell::Int(i64::from(self.error)),
            self.request.map_or(Cell::Null, Cell::int),
        ]);
        out
    }

    /// The values a run's summary takes from this row: run, issuer, repository, workflow,
    /// run id, attempt, principal, calls, time, denials, approvals, errors, index.
    fn summary(&self, run: &str) -> Vec<Cell> {
        let c = &self.claims;
        let t = |v: Option<&String>| Cell::from(v.cloned());
        vec![
            Cell::Text(run.to_string()),
            t(self.issuer.as_ref()),
            t(c[0].as_ref().or(c[7].as_ref())),
            t(c[1].as_ref()),
            t(c[2].as_ref().or(c[8].as_ref())),
            t(c[3].as_ref()),
            t(self.principal.as_ref()),
            Cell::Int(i64::from(self.kind == "request")),
            Cell::int(self.time_ns),
            Cell::Int(i64::from(self.decision.as_deref() == Some("deny"))),
            Cell::Int(i64::from(self.kind == "approval_requested")),
            Cell::Int(i64::from(self.error)),
            Cell::int(self.idx),
        ]
    }
}

/// What an answer or approval event takes from its request's row when its own caller says
/// less: principal, issuer, subject, claims, run.
type Inherited = (
    Option<String>,
    Option<String>,
    Option<String>,
    [Option<String>; 9],
    Option<String>,
);

/// The request-row lookup both backends run.
const INHERIT: &str = "SELECT principal, issuer, subject, repository, workflow, run_id, run_attempt, \
     actor, git_ref, environment, project, pipeline, run FROM rows WHERE idx = ?1";

/// Reads [`INHERIT`]'s row.
fn inherited(r: &[Cell]) -> Inherited {
    let mut claims: [Option<String>; 9] = Default::default();
    for (i, c) in claims.iter_mut().enumerate() {
        *c = r.get(3 + i).and_then(Cell::text);
    }
    let at = |i: usize| r.get(i).and_then(Cell::text);
    (at(0), at(1), at(2), claims, at(12))
}

/// Where one step's rows go: a transaction of either backend.
trait Sink {
    /// The row of request `idx`, as [`INHERIT`] reads it.
    fn request_row(&mut self, idx: u64) -> Result<Option<Vec<Cell>>, IndexError>;
    fn insert(&mut self, row: &Row) -> Result<(), IndexError>;
    fn summarise(&mut self, run: &str, row: &Row) -> Result<(), IndexError>;
}

/// Indexes the log's entries `from..to` into `sink`.
fn fill(log: &Reader, from: u64, to: u64, sink: &mut impl Sink) -> Result<(), IndexError> {
    log.entries_in(from, to, |idx, bytes| -> Result<(), IndexError> {
        let e = Entry::decode(bytes).map_err(|err| IndexError::Decode(idx, err))?;
        let mut row = Row::of(&e);
        // An answer or approval event names the request it belongs to; where its own
        // caller says less (the upstream's answer), it is the request's caller's.
        if row.run.is_none()
            && row.principal.is_none()
            && let Some(req) = row.request
            && let Some(r) = sink.request_row(req)?
        {
            (row.principal, row.issuer, row.subject, row.claims, row.run) = inherited(&r);
        }
        sink.insert(&row)?;
        if let Some(run) = row.run.as_ref().filter(|_| row.kind != "log_read") {
            sink.summarise(run, &row)?;
        }
        Ok(())
    })
}

enum Db {
    Sqlite(rusqlite::Connection),
    Shared(shared::Conn),
}

/// The index, open for reading and writing.
pub struct Index {
    db: Db,
    /// Where it is, for messages: its file, or the shared database.
    place: String,
}

impl Index {
    /// Opens (creating if need be) the index of the log in `data_dir`. An index of another
    /// schema version is emptied, to be rebuilt.
    ///
    /// # Errors
    /// The file cannot be opened or written.
    pub fn open(data_dir: &Path) -> Result<Self, IndexError> {
        sqlite::open(data_dir)
    }

    /// The index of the log at `location`: beside the embedded log in `data_dir`, or in the
    /// shared log's database.
    ///
    /// # Errors
    /// It cannot be opened.
    pub fn open_at(data_dir: &Path, location: &Location) -> Result<Self, IndexError> {
        match location {
            Location::Dir(_) => Self::open(data_dir),
            Location::Postgres(url) => shared::open(url),
        }
    }

    fn sql_at(path: &str, what: &'static str) -> impl FnOnce(rusqlite::Error) -> IndexError {
        let path = path.to_string();
        move |source| IndexError::Sql { path, what, source }
    }

    /// The rows `sql` (with `?N` parameters) selects, each as its cells.
    ///
    /// # Errors
    /// The index cannot be read.
    pub fn rows(
        &self,
        sql: &str,
        params: &[Cell],
        what: &'static str,
    ) -> Result<Vec<Vec<Cell>>, IndexError> {
        match &self.db {
            Db::Sqlite(conn) => sqlite::rows(conn, &self.place, sql, params, what),
            Db::Shared(conn) => shared::rows(&mut *conn.get(), sql, params, what),
        }
    }

    /// How many entries of the log are indexed (the next index to read).
    ///
    /// # Errors
    /// The index cannot be read.
    pub fn cursor(&self) -> Result<u64, IndexError> {
        let sql = match &self.db {
            Db::Sqlite(_) => "SELECT value FROM meta WHERE key = 'cursor'",
            Db::Shared(_) => "SELECT next FROM cursor",
        };
        let rows = self.rows(sql, &[], "read its cursor")?;
        Ok(rows
            .first()
            .and_then(|r| r.first())
            .and_then(Cell::uint)
            .unwrap_or(0))
    }

    /// Indexes at most `max` entries of the log after the cursor, below `size`, in one
    /// transaction that moves the cursor with them. Returns how many it indexed.
    ///
    /// # Errors
    /// The log or the index cannot be read or written.
    pub fn step(&mut self, log: &Reader, size: u64, max: u64) -> Result<u64, IndexError> {
        match &mut self.db {
            Db::Sqlite(conn) => sqlite::step(conn, &self.place, log, size, max),
            Db::Shared(conn) => shared::step(&mut conn.get(), log, size, max),
        }
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
        match &mut self.db {
            Db::Sqlite(conn) => sqlite::clear(conn, &self.place)?,
            Db::Shared(conn) => shared::clear(&mut conn.get())?,
        }
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
