//! Why the log refused: an entry or a proof ([`AuditError`]), or opening it ([`OpenError`]).

use super::{files, keys};
use crate::store::StoreError;

/// Why the log could not take an entry or produce a proof.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AuditError {
    #[error("the audit log is unavailable: {0}")]
    Unavailable(String),
    #[error("the audit log is shut down")]
    Closed,
    #[error("{0}")]
    Proof(String),
    #[error(
        "entry {index} is not covered by a checkpoint yet (latest covers {size}); retry after the next checkpoint"
    )]
    NotYetCheckpointed { index: u64, size: u64 },
    /// The entry would be larger than `custody verify` accepts: it is never written.
    #[error(
        "the entry would be {0} bytes, over the {max} bytes a log entry may hold; it was not written",
        max = tlog::entry::MAX_ENTRY_BYTES
    )]
    TooLarge(usize),
    /// A version-2 entry's header (everything but its payloads) over its cap: refused where
    /// it is made, never truncated.
    #[error(
        "the entry's header would be {0} bytes, over the {max} bytes a version-2 entry's header may hold (its payloads are not counted); it was not written",
        max = tlog::entry::MAX_HEADER_BYTES
    )]
    HeaderTooLarge(usize),
    #[error(
        "the log's newest entries have waited {} for a checkpoint its witnesses cosign ({quorum}), longer than witness.max_lag ({}); calls are refused until the witnesses answer (GET /api/v1/log/witnesses says which do not)",
        humantime::format_duration(std::time::Duration::from_millis(u64::try_from(lag.as_millis()).unwrap_or(u64::MAX))),
        humantime::format_duration(*max_lag)
    )]
    Unwitnessed {
        lag: std::time::Duration,
        max_lag: std::time::Duration,
        quorum: String,
    },
    /// A checkpoint was signed but not published: its witnesses did not meet the quorum.
    #[error("{0}")]
    Withheld(String),
}

/// What a refusal to open the log says to do when entries are gone for good.
const AFTER_LOSS: &str = "restore the database from a backup that holds them; if they are gone for good, start a new log with a new key and origin whose first entry names this one (`custody keygen --origin NEW --predecessor FILE`, docs/audit.md \"After data loss\")";

/// Why the log could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Key(#[from] keys::KeyError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Files(#[from] files::FileError),
    #[error(
        "the stored log no longer matches the checkpoint it signed at size {size}: {why}; refusing to extend it (run `custody verify` to find what changed)"
    )]
    Diverged { size: u64, why: String },
    #[error("{place} is not a checkpoint this log signed: {why}; refusing to start")]
    Unverified { place: String, why: String },
    #[error(
        "the log was forked: {first} and {second} both sign size {size}; refusing to start (run `custody verify`)"
    )]
    Forked {
        size: u64,
        first: String,
        second: String,
    },
    #[error(
        "{db} holds {entries} entries but {place} is a checkpoint the log signed at size {size} (root {root}): entries were lost or removed; {AFTER_LOSS}"
    )]
    Truncated {
        db: String,
        entries: u64,
        size: u64,
        root: String,
        place: String,
    },
    #[error(
        "{db} holds {entries} entries but no checkpoint this log signed survives ({head}, {checkpoints} and the database's checkpoints table are missing or empty): its state cannot be checked, so it is not extended; {AFTER_LOSS}"
    )]
    Unanchored {
        db: String,
        entries: u64,
        head: String,
        checkpoints: String,
    },
    #[error(
        "the shared log is signed by the key {stored}, but this replica's key file holds {ours}: every replica of one log signs with its one key (give each replica the same audit.key_file)"
    )]
    OtherKey { stored: String, ours: String },
    #[error("audit.predecessor: {0}")]
    Predecessor(String),
    #[error("couldn't sign the new log's first checkpoint: {0}")]
    Genesis(AuditError),
}
