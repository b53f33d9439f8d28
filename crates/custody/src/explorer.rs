//! The audit explorer: a search index beside the log (`index.sqlite`, or in the database of a
//! log replicas share), who may look at what,
//! and the views the API and the CLI give of entries, runs and timelines. The index only finds
//! entries; every entry shown is read from the log, with its index and leaf hash, so what is
//! shown can be verified against the signed tree.

pub mod cli;
pub mod index;
mod print;
pub mod query;
pub mod runs;
pub mod view;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde_json::Value;

pub use index::{Index, IndexError};
pub use query::{Filter, Order, Page, QueryError, Scope};

use crate::identity::Principal;
use crate::store::{Location, Reader};

/// What a principal may see through the explorer: every entry with its masked payloads
/// (auditors), every entry of the endpoints a Cedar `Action::"audit"` permit grants it, or
/// only the entries of its own CI run (or, for other principals, its own entries), headers
/// only. `endpoints`: the gateway's endpoint names.
pub fn scope_of(
    p: &Principal,
    auditors: &[String],
    policy: Option<&crate::policy::Engine>,
    endpoints: &[String],
) -> Scope {
    if auditors.contains(&p.name) {
        return Scope::All;
    }
    if let Some(engine) = policy {
        let granted: Vec<String> = endpoints
            .iter()
            .filter(|e| engine.may_audit(p, e))
            .cloned()
            .collect();
        if !granted.is_empty() {
            return Scope::Endpoints(granted);
        }
    }
    let claim = |c: &str| match p.claims.get(c) {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    if let (Some(repository), Some(run_id)) = (claim("repository"), claim("run_id")) {
        return Scope::Run {
            issuer: p.issuer.clone(),
            repository,
            run_id,
        };
    }
    if let (Some(project), Some(pipeline)) = (claim("project_path"), claim("pipeline_id")) {
        return Scope::Pipeline {
            issuer: p.issuer.clone(),
            project,
            pipeline,
        };
    }
    Scope::Subject {
        issuer: p.issuer.clone(),
        subject: p.subject.clone(),
    }
}

/// The index and a reader of the log, used by one caller at a time.
pub struct Open {
    pub index: Index,
    pub log: Reader,
}

impl Open {
    /// Opens the index in `data_dir` (creating it) and the log at `log`.
    ///
    /// # Errors
    /// Either cannot be opened.
    pub fn new(data_dir: &Path, log: &Location) -> Result<Self, IndexError> {
        Ok(Self {
            log: Reader::open(log)?,
            index: Index::open_at(data_dir, log)?,
        })
    }

    /// Indexes what the log holds below `size`, at most `steps` transactions of
    /// [`index::STEP`] entries. Returns whether the index reached `size`.
    ///
    /// # Errors
    /// As [`Index::step`].
    pub fn follow(&mut self, size: u64, steps: u32) -> Result<bool, IndexError> {
        for _ in 0..steps {
            if self.index.step(&self.log, size, index::STEP)? == 0 {
                return Ok(true);
            }
        }
        Ok(self.index.cursor()? >= size)
    }
}

/// The explorer of a running gateway: its index, kept up to date by a background task.
pub struct Explorer {
    data_dir: PathBuf,
    log: Location,
    open: Mutex<Option<Open>>,
    pub auditors: Vec<String>,
    /// The gateway's endpoint names, for `Action::"audit"`.
    pub endpoints: Vec<String>,
}

impl Scope {
    /// Whether this reader sees payloads (auditors) or headers only.
    pub fn sees_payloads(&self) -> bool {
        matches!(self, Scope::All | Scope::Endpoints(_))
    }
}

/// At most this many entries in one timeline.
pub const TIMELINE_CAP: u32 = 10_000;

/// Index transactions a request may run to catch up before it answers.
const CATCH_UP_STEPS: u32 = 5;

/// Turns of [`CATCH_UP_STEPS`] the follower may take per tick to catch up (the index lock is
/// let go between turns, so requests are answered meanwhile): at most 200,000 entries a
/// tick, 800,000 a second, above what the log commits on any machine measured.
const FOLLOWER_TURNS: u32 = 20;

impl Explorer {
    pub fn new(
        data_dir: &Path,
        log: Location,
        auditors: Vec<String>,
        endpoints: Vec<String>,
    ) -> Arc<Self> {
        Arc::new(Self {
            data_dir: data_dir.to_path_buf(),
            log,
            open: Mutex::new(None),
            auditors,
            endpoints,
        })
    }

    /// What `p` may see ([`scope_of`]).
    pub fn scope_of(&self, p: &Principal, policy: Option<&crate::policy::Engine>) -> Scope {
        scope_of(p, &self.auditors, policy, &self.endpoints)
    }

    /// Runs `f` with the index caught up to `size` (as far as a few steps go), opening it
    /// the first time. Blocking: call from a blocking thread.
    ///
    /// # Errors
    /// The index cannot be opened or updated, or `f`'s error.
    pub fn with<T>(
        &self,
        size: u64,
        f: impl FnOnce(&mut Open) -> Result<T, QueryError>,
    ) -> Result<T, QueryError> {
        let mut guard = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if guard.is_none() {
            *guard = Some(Open::new(&self.data_dir, &self.log)?);
        }
        let Some(open) = guard.as_mut() else {
            unreachable!("opened above")
        };
        if let Err(e) = open.follow(size, CATCH_UP_STEPS) {
            // A broken connection is dropped and opened again next time.
            *guard = None;
            return Err(e.into());
        }
        f(open)
    }

    /// Indexes up to `size` in at most `turns` turns of [`CATCH_UP_STEPS`] transactions,
    /// letting the index's lock go between turns and stopping early once `stop` is cancelled
    /// (a shutdown waits for at most one turn). Whether it reached `size`. Blocking.
    ///
    /// # Errors
    /// As [`Explorer::with`].
    pub fn catch_up(
        &self,
        size: u64,
        turns: u32,
        stop: &tokio_util::sync::CancellationToken,
    ) -> Result<bool, QueryError> {
        for _ in 0..turns {
            if self.with(size, |open| Ok(open.index.cursor()? >= size))? {
                return Ok(true);
            }
            if stop.is_cancelled() {
                break;
            }
        }
        Ok(false)
    }

    /// Follows the committed head of `audit`, indexing new entries in bounded steps, until
    /// `stop`. A log that grows faster than one turn a tick indexes is caught up with more
    /// turns in that tick, so the index does not fall ever further behind under load.
    pub fn spawn_follower(
        self: &Arc<Self>,
        audit: Arc<crate::audit::Audit>,
        stop: tokio_util::sync::CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            // The same failure is reported once, not four times a second.
            let mut last: Option<String> = None;
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    () = stop.cancelled() => break,
                }
                // One index for every replica of a shared log: the steward keeps it up; the
                // others catch up on demand before they answer.
                if matches!(me.log, Location::Postgres(_)) && !audit.steward_here() {
                    continue;
                }
                let size = audit.head().size;
                let (me, stop) = (me.clone(), stop.clone());
                let done =
                    tokio::task::spawn_blocking(move || me.catch_up(size, FOLLOWER_TURNS, &stop))
                        .await;
                let failed = match done {
                    Ok(Ok(_)) => None,
                    Ok(Err(e)) => Some(e.to_string()),
                    Err(e) => Some(e.to_string()),
                };
                if let Some(e) = &failed
                    && last.as_ref() != Some(e)
                {
                    tracing::warn!("the explorer's search index cannot follow the log: {e}");
                }
                last = failed;
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{Audit, Draft};
    use crate::config::{AuditConfig, Durability};
    use tlog::entry::Kind;

    /// More entries than one request's catch-up indexes: a single turn stops short, a
    /// cancelled follower stops after one more, the follower's turns reach the head.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_follower_catches_up_a_log_that_grew_faster_than_one_turn() {
        let dir = tempfile::tempdir().unwrap();
        let config = AuditConfig {
            durability: Durability::None,
            ..crate::audit::tests::config(dir.path())
        };
        let audit = Audit::open(dir.path(), &config).unwrap().audit;
        // Two turns and a little: one turn, then a cancelled one, stop short of it.
        let total = 2 * u64::from(CATCH_UP_STEPS) * index::STEP + 500;
        let tasks: Vec<_> = (0..16)
            .map(|w| {
                let audit = audit.clone();
                tokio::spawn(async move {
                    for _ in (w..total).step_by(16) {
                        audit
                            .append(Draft::gateway(Kind::Notification, "ep", "{}".into()))
                            .await
                            .unwrap();
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let size = audit.head().size;
        assert!(size >= total, "{size}");
        let explorer = Explorer::new(dir.path(), audit.location().clone(), vec![], vec![]);
        let stop = tokio_util::sync::CancellationToken::new();
        let (e, st) = (explorer.clone(), stop.clone());
        let one = tokio::task::spawn_blocking(move || e.catch_up(size, 1, &st))
            .await
            .unwrap()
            .unwrap();
        assert!(
            !one,
            "one turn indexes at most {} entries",
            u64::from(CATCH_UP_STEPS) * index::STEP
        );
        // A shutdown stops it after the turn under way.
        stop.cancel();
        let (e, st) = (explorer.clone(), stop.clone());
        let stopped = tokio::task::spawn_blocking(move || e.catch_up(size, FOLLOWER_TURNS, &st))
            .await
            .unwrap()
            .unwrap();
        assert!(
            !stopped,
            "a cancelled follower takes one turn, not all of them"
        );
        let (e, st) = (explorer.clone(), tokio_util::sync::CancellationToken::new());
        let all = tokio::task::spawn_blocking(move || e.catch_up(size, FOLLOWER_TURNS, &st))
            .await
            .unwrap()
            .unwrap();
        assert!(all);
        audit.close().await;
    }
}
