//! The log in PostgreSQL, shared by several gateway replicas (issue: many replicas, one log).
//!
//! **Sequencing without a leader.** Each replica commits its own batches. A batch's indices are
//! taken inside its committing transaction, under the row lock of the one `log_sequence` row,
//! and the entries are encoded (an entry names its own index) and inserted in that same
//! transaction: an index exists only in a committed row, and a replica that dies mid-batch
//! leaves no hole (its transaction, lock and indices vanish together). A commit returns only
//! once durable (`synchronous_commit = on`). Lock waits, statements and idle transactions are
//! bounded, so a stalled replica cannot hold the log.
//!
//! **Every replica integrates the tree** ([`PgStore`]): a round begins under the lock with the
//! leaves others committed past this replica's tree, each checked against the seal its writer
//! made with a key derived from the log's signing key (a row the database alone wrote is
//! refused), and the tree they make checked against the stored head; the round's own entries,
//! the nodes and the new head are written in one statement. **One steward signs**: the lease
//! (a session-level advisory lock, released by PostgreSQL when its holder's connection ends) is
//! held by the replica that signs and stores checkpoints (`audit::steward`); a checkpoint is
//! never stored beside a different one of the same size. [`PgLog`]'s own `append`/`integrate`
//! (a writer and a separate integrating steward, with the head moved by compare-and-swap) are
//! the first design, kept for the store's tests and its benchmark.
//!
//! The schema is versioned ([`SCHEMA_VERSION`]); [`PgLog::migrate`] creates or upgrades it under
//! an advisory lock and refuses a schema newer than this build.

mod link;
mod ranges;
mod reader;
mod schema;
mod steward;
mod writer;

use std::time::Duration;

use tlog::Hash;

pub use link::Link;
pub use reader::PgReader;
pub use schema::SCHEMA_VERSION;
pub use steward::Head;
pub use writer::PgStore;

use super::Payload;

/// How long a replica waits for a lock, a statement, an idle transaction.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    pub lock_timeout: Duration,
    pub statement_timeout: Duration,
    pub idle_in_transaction: Duration,
}

impl Default for Bounds {
    fn default() -> Self {
        Self {
            lock_timeout: Duration::from_secs(2),
            statement_timeout: Duration::from_secs(10),
            idle_in_transaction: Duration::from_secs(10),
        }
    }
}

/// Why the PostgreSQL log failed.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error("couldn't connect to the log database ({url}): {source}")]
    Connect {
        /// The URL without its password.
        url: String,
        #[source]
        source: postgres::Error,
    },
    #[error(
        "the log database's schema is version {found}, newer than this custody knows ({known}); run the newer custody, or restore a matching database"
    )]
    NewerSchema { found: i32, known: i32 },
    #[error(
        "waited longer than lock_timeout for the log's {what}: another replica holds it (a stalled replica is ended by idle_in_transaction_session_timeout)"
    )]
    LockTimeout { what: &'static str },
    #[error("couldn't {what}: {source}")]
    Sql {
        what: &'static str,
        #[source]
        source: postgres::Error,
    },
    #[error("the log database is inconsistent: {0}; run `custody verify --db` on it")]
    Inconsistent(String),
}

impl PgError {
    fn sql(what: &'static str) -> impl FnOnce(postgres::Error) -> Self {
        move |source| {
            if source.code() == Some(&postgres::error::SqlState::LOCK_NOT_AVAILABLE) {
                PgError::LockTimeout { what }
            } else {
                PgError::Sql { what, source }
            }
        }
    }
}

/// One entry of a batch, encoded for its index.
pub struct NewEntry {
    pub leaf: Hash,
    pub data: Vec<u8>,
    pub payloads: Vec<Payload>,
    pub time_ns: u64,
}

fn i64_of(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn u64_of(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// Runs `f` where blocking is allowed: here, or on a scoped thread when this thread drives a
/// tokio runtime (the blocking PostgreSQL client refuses to run inside one).
pub(crate) fn off_runtime<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    if tokio::runtime::Handle::try_current().is_ok() {
        std::thread::scope(|s| {
            s.spawn(f)
                .join()
                .unwrap_or_else(|p| std::panic::resume_unwind(p))
        })
    } else {
        f()
    }
}

/// Drops `t`, which holds blocking PostgreSQL clients (each owns a runtime, which must not be
/// dropped on a thread that drives async tasks): there, on a thread of its own.
pub(crate) fn drop_off_runtime<T: Send + 'static>(t: T) {
    if tokio::runtime::Handle::try_current().is_ok() {
        let _ = std::thread::spawn(move || drop(t)).join();
    } else {
        drop(t);
    }
}

/// What every replica derives its entries' seal key for (from the log's signing key:
/// [`tlog::Signer::derive_secret`]).
pub const ENTRY_SEAL: &str = "custody: entries of a shared log";

/// The HMAC-SHA256 of entry `idx` with leaf hash `leaf` under the replicas' seal key.
fn entry_mac(key: &[u8; 32], idx: u64, leaf: &Hash) -> hmac::Hmac<sha2::Sha256> {
    use hmac::{KeyInit, Mac};
    let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    mac.update(b"custody entry seal v1");
    mac.update(&idx.to_be_bytes());
    mac.update(&leaf.0);
    mac
}

/// The seal of entry `idx` with leaf hash `leaf`.
pub(crate) fn seal(key: &[u8; 32], idx: u64, leaf: &Hash) -> Vec<u8> {
    use hmac::Mac;
    entry_mac(key, idx, leaf).finalize().into_bytes().to_vec()
}

/// Whether `sealed` is the seal of entry `idx` with leaf `leaf` (in constant time).
pub(crate) fn seal_checks(key: &[u8; 32], idx: u64, leaf: &Hash, sealed: &[u8]) -> bool {
    use hmac::Mac;
    entry_mac(key, idx, leaf).verify_slice(sealed).is_ok()
}

/// TCP keepalives and a bound on unacknowledged data, so a dead peer is noticed in seconds.
pub(crate) fn keepalive(config: &mut postgres::Config) {
    config.keepalives(true);
    config.keepalives_idle(Duration::from_secs(5));
    config.keepalives_interval(Duration::from_secs(2));
    config.keepalives_retries(3);
    config.tcp_user_timeout(Duration::from_secs(15));
}

/// A PostgreSQL error as the store reports it.
fn backend(what: &'static str) -> impl FnOnce(postgres::Error) -> super::StoreError {
    move |e| super::StoreError::Backend(format!("couldn't {what}: {e}"))
}

/// A `checkpoints` row (size, note, signed_ns).
fn checkpoint_of(row: &postgres::Row) -> super::StoredCheckpoint {
    super::StoredCheckpoint {
        size: u64_of(row.get(0)),
        note: row.get(1),
        signed_ns: u64_of(row.get(2)),
    }
}

/// The latest stored checkpoint.
fn latest_checkpoint(
    c: &mut impl postgres::GenericClient,
) -> Result<Option<super::StoredCheckpoint>, postgres::Error> {
    Ok(c.query_opt(
        "SELECT size, note, signed_ns FROM checkpoints ORDER BY size DESC LIMIT 1",
        &[],
    )?
    .as_ref()
    .map(checkpoint_of))
}

/// Stores a checkpoint unless one of its size is stored; returns the note stored for that
/// size (this one, or the one already there: never replaced).
fn store_checkpoint(
    c: &mut impl postgres::GenericClient,
    size: u64,
    note: &str,
    signed_ns: u64,
) -> Result<String, postgres::Error> {
    Ok(c.query_one(
        "INSERT INTO checkpoints (size, note, signed_ns) VALUES ($1, $2, $3) \
         ON CONFLICT (size) DO UPDATE SET size = checkpoints.size RETURNING note",
        &[&i64_of(size), &note, &i64_of(signed_ns)],
    )?
    .get(0))
}

/// Whether `new` is the checkpoint `stored` with more signatures: the same body and every
/// signature line of `stored` (the log's, and any cosignature) kept.
fn cosigned_again(stored: &str, new: &str) -> bool {
    let split = |n: &str| {
        n.split_once("\n\n")
            .map(|(b, s)| (b.to_string(), s.to_string()))
    };
    let (Some((b1, s1)), Some((b2, s2))) = (split(stored), split(new)) else {
        return false;
    };
    let kept: std::collections::HashSet<&str> = s2.lines().collect();
    b1 == b2 && s2.lines().count() > s1.lines().count() && s1.lines().all(|l| kept.contains(l))
}

/// A URL as it may be printed: without its password, wherever it is (the user part, or a
/// `password=` among its parameters: every parameter's value is hidden).
pub fn redacted(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("***"));
            }
            let keys: Vec<String> = u.query_pairs().map(|(k, _)| k.into_owned()).collect();
            if keys.is_empty() {
                u.set_query(None);
            } else {
                let hidden: Vec<String> = keys.iter().map(|k| format!("{k}=***")).collect();
                u.set_query(Some(&hidden.join("&")));
            }
            u.to_string()
        }
        Err(_) => "<not a URL>".into(),
    }
}

/// One replica's connection to the log.
pub struct PgLog {
    client: postgres::Client,
    replica: String,
}

impl PgLog {
    /// Connects as replica `replica`, with every wait bounded by `bounds` and commits durable.
    ///
    /// # Errors
    /// [`PgError::Connect`], or the session settings cannot be made.
    pub fn connect(url: &str, replica: &str, bounds: Bounds) -> Result<Self, PgError> {
        let connect = |source| PgError::Connect {
            url: redacted(url),
            source,
        };
        let mut config: postgres::Config = url.parse().map_err(connect)?;
        config.application_name(&format!("custody {replica}"));
        config.connect_timeout(Duration::from_secs(5));
        // A connection whose peer vanished (a half-open TCP connection) fails within seconds,
        // not the kernel's quarter of an hour: statement_timeout is the server's, and cannot.
        keepalive(&mut config);
        let mut client = config.connect(postgres::NoTls).map_err(connect)?;
        client
            .batch_execute(&format!(
                "SET lock_timeout = {}; SET statement_timeout = {}; \
                 SET idle_in_transaction_session_timeout = {}; SET synchronous_commit = on; \
                 SET client_min_messages = warning; SET bytea_output = hex",
                bounds.lock_timeout.as_millis(),
                bounds.statement_timeout.as_millis(),
                bounds.idle_in_transaction.as_millis(),
            ))
            .map_err(PgError::sql("bound this replica's waits"))?;
        Ok(Self {
            client,
            replica: replica.to_string(),
        })
    }

    /// Creates or upgrades the schema; returns its version.
    ///
    /// # Errors
    /// [`PgError::NewerSchema`]; SQL errors.
    pub fn migrate(&mut self) -> Result<i32, PgError> {
        schema::migrate(&mut self.client)
    }

    /// Appends `count` entries in one transaction: takes the next index under the sequencing
    /// row's lock, asks `make` for the entry at each index (`make(index, i)`), inserts them and
    /// their payloads, moves the sequence and commits. Returns the first index.
    ///
    /// # Errors
    /// [`PgError::LockTimeout`] when another replica held the sequence too long; SQL errors.
    /// On any error nothing of the batch is committed (unless the commit itself failed after
    /// reaching the disk: then the caller must not acknowledge the batch, and a later read of
    /// [`PgLog::committed`] says).
    pub fn append(
        &mut self,
        count: usize,
        make: &mut dyn FnMut(u64, usize) -> NewEntry,
    ) -> Result<u64, PgError> {
        let mut tx = self
            .client
            .transaction()
            .map_err(PgError::sql("begin a batch"))?;
        let next: i64 = tx
            .query_one(
                "SELECT next_index FROM log_sequence WHERE id FOR UPDATE",
                &[],
            )
            .map_err(PgError::sql("sequence lock"))?
            .get(0);
        let first = u64_of(next);
        let (mut idx, mut leaf, mut data, mut time) = (
            Vec::with_capacity(count),
            Vec::with_capacity(count),
            Vec::with_capacity(count),
            Vec::with_capacity(count),
        );
        let (mut p_idx, mut p_slot, mut p_open, mut p_data) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for i in 0..count {
            let at = first + i as u64;
            let e = make(at, i);
            for p in e.payloads {
                p_idx.push(i64_of(at));
                p_slot.push(i16::from(p.slot));
                p_open.push(p.opening.to_vec());
                p_data.push(p.data.to_vec());
            }
            idx.push(i64_of(at));
            leaf.push(e.leaf.0.to_vec());
            data.push(e.data);
            time.push(i64_of(e.time_ns));
        }
        tx.execute(
            "INSERT INTO entries (idx, leaf, data, time_ns, replica) \
             SELECT i, l, d, t, $5 FROM unnest($1::bigint[], $2::bytea[], $3::bytea[], $4::bigint[]) AS u(i, l, d, t)",
            &[&idx, &leaf, &data, &time, &self.replica],
        )
        .map_err(PgError::sql("insert the batch's entries"))?;
        if !p_idx.is_empty() {
            tx.execute(
                "INSERT INTO payloads (idx, slot, opening, data) \
                 SELECT * FROM unnest($1::bigint[], $2::smallint[], $3::bytea[], $4::bytea[])",
                &[&p_idx, &p_slot, &p_open, &p_data],
            )
            .map_err(PgError::sql("insert the batch's payloads"))?;
        }
        tx.execute(
            "UPDATE log_sequence SET next_index = $1 WHERE id",
            &[&i64_of(first + count as u64)],
        )
        .map_err(PgError::sql("move the sequence"))?;
        tx.commit().map_err(PgError::sql("commit the batch"))?;
        Ok(first)
    }

    /// The number of committed entries (the next index).
    ///
    /// # Errors
    /// SQL errors.
    pub fn committed(&mut self) -> Result<u64, PgError> {
        let next: i64 = self
            .client
            .query_one("SELECT next_index FROM log_sequence WHERE id", &[])
            .map_err(PgError::sql("read the sequence"))?
            .get(0);
        Ok(u64_of(next))
    }

    /// Entry `index`: its leaf hash and bytes.
    ///
    /// # Errors
    /// [`PgError::Inconsistent`] for a missing entry or a bad hash; SQL errors.
    pub fn entry(&mut self, index: u64) -> Result<(Hash, Vec<u8>), PgError> {
        let row = self
            .client
            .query_opt(
                "SELECT leaf, data FROM entries WHERE idx = $1",
                &[&i64_of(index)],
            )
            .map_err(PgError::sql("read an entry"))?
            .ok_or_else(|| PgError::Inconsistent(format!("entry {index} is missing")))?;
        let leaf: Vec<u8> = row.get(0);
        let leaf = Hash::from_slice(&leaf).ok_or_else(|| {
            PgError::Inconsistent(format!("entry {index}'s leaf is not 32 bytes"))
        })?;
        Ok((leaf, row.get(1)))
    }

    /// The PostgreSQL backend of this connection (for operators and fault tests).
    ///
    /// # Errors
    /// SQL errors.
    pub fn backend_pid(&mut self) -> Result<i32, PgError> {
        Ok(self
            .client
            .query_one("SELECT pg_backend_pid()", &[])
            .map_err(PgError::sql("ask for the backend pid"))?
            .get(0))
    }
}
