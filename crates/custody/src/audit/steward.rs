//! The steward of a log replicas share: one replica at a time signs checkpoints, asks the
//! witnesses to cosign them and publishes them; the others sign nothing and publish what the
//! steward stored, once its signature checks.
//!
//! The lease is PostgreSQL's session-level advisory lock on a connection of its own. It passes
//! when its holder's connection ends: the holder died, or was paused (or cut off) for longer
//! than [`IDLE`], after which PostgreSQL ends its idle session. A steward that lost the lease
//! may still sign the checkpoint of a tree: every replica's tree is the one tree, so it is the
//! checkpoint the new steward signs for that size (Ed25519 signatures are deterministic), and
//! the store never keeps two different notes of one size.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use crate::store::postgres::PgLog;

/// How long the steward's connection may sit idle before PostgreSQL ends it, passing the lease.
/// The steward uses it at every checkpoint interval (at most a minute).
pub const IDLE: Duration = Duration::from_secs(75);

/// This replica's claim on the steward lease.
pub struct Steward {
    url: String,
    replica: String,
    idle: Duration,
    conn: Mutex<Option<PgLog>>,
    /// The last failure reported (each change is reported once).
    failed: Mutex<Option<String>>,
}

impl Steward {
    pub fn new(url: &str, replica: &str, idle: Duration) -> Self {
        Self {
            url: url.to_string(),
            replica: replica.to_string(),
            idle,
            conn: Mutex::new(None),
            failed: Mutex::new(None),
        }
    }

    /// Whether this replica holds the lease, taking it when it is free. Blocking.
    pub fn holds(&self) -> bool {
        let mut conn = self.conn.lock().unwrap_or_else(PoisonError::into_inner);
        if conn.as_ref().is_some_and(PgLog::is_closed) {
            tracing::warn!(replica = %self.replica, "the steward's connection ended; the lease is lost");
            *conn = None;
        }
        if conn.is_none() {
            match PgLog::for_lease(&self.url, &self.replica, self.idle) {
                Ok(c) => *conn = Some(c),
                Err(e) => {
                    self.failed(format!("couldn't connect for the steward lease: {e}"));
                    return false;
                }
            }
        }
        let Some(c) = conn.as_mut() else {
            return false;
        };
        match c.lease() {
            Ok(held) => {
                *self.failed.lock().unwrap_or_else(PoisonError::into_inner) = None;
                held
            }
            Err(e) => {
                self.failed(e.to_string());
                *conn = None;
                false
            }
        }
    }

    /// Reports a failure to take or keep the lease, once while it lasts: while no replica
    /// holds the lease, no checkpoint is signed.
    fn failed(&self, why: String) {
        let mut last = self.failed.lock().unwrap_or_else(PoisonError::into_inner);
        if last.as_deref() != Some(why.as_str()) {
            tracing::warn!(replica = %self.replica, "{why}; this replica signs no checkpoint until it can ask again");
            *last = Some(why);
        }
    }
}

/// The blocking client owns a runtime, which must not be dropped where async tasks run.
impl Drop for Steward {
    fn drop(&mut self) {
        let conn = self
            .conn
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(c) = conn {
            crate::store::postgres::drop_off_runtime(c);
        }
    }
}
