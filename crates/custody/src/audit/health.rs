//! Whether the log can be trusted to take entries now, and why not.
//!
//! Two kinds of trouble, kept apart because they end differently:
//!
//! * a *failure* (a checkpoint that could not be made durable in every place it must be) is
//!   transient: entries are refused (fail closed, as for a failed commit) until a later
//!   checkpoint is persisted;
//! * an *alarm* (the stored log no longer matches what the log signed, or the store diverged
//!   from the tree in memory) lasts until a person looks: `/readyz` stays not ready until the
//!   gateway restarts, and a *halting* alarm also stops entries and signing.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

/// What `/readyz` reports about the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub ready: bool,
    /// Every reason the log is not ready, most serious first.
    pub reasons: Vec<String>,
    /// Whether an integrity alarm stands.
    pub alarm: bool,
}

#[derive(Debug, Default)]
pub struct Health {
    /// Set while a reason below is set: one atomic load on the append path.
    troubled: AtomicBool,
    failure: Mutex<Option<String>>,
    alarm: Mutex<Option<Alarm>>,
    /// Set while the store's latest commit failed: one atomic load per successful commit.
    commit_failing: AtomicBool,
    /// Why it failed. Not a reason to refuse entries (the next commit may succeed; a failed
    /// one refuses its own batch), but the log is not writable while it lasts.
    commit: Mutex<Option<String>>,
}

#[derive(Debug, Clone)]
struct Alarm {
    why: String,
    halts: bool,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Health {
    fn update(&self) {
        let troubled = lock(&self.failure).is_some() || lock(&self.alarm).is_some();
        self.troubled.store(troubled, Ordering::Release);
    }

    /// Records a failure to persist a checkpoint; returns whether it is new (to log once).
    pub fn fail(&self, why: String) -> bool {
        let new = lock(&self.failure).replace(why).is_none();
        self.update();
        new
    }

    /// Clears a failure after a checkpoint was persisted; returns whether there was one.
    pub fn recover(&self) -> bool {
        let had = lock(&self.failure).take().is_some();
        self.update();
        had
    }

    /// Raises an alarm (the first one wins: it names the original problem). `halts` stops
    /// entries and signing until a restart.
    pub fn alarm(&self, why: String, halts: bool) {
        {
            let mut a = lock(&self.alarm);
            match a.as_mut() {
                None => *a = Some(Alarm { why, halts }),
                Some(existing) => existing.halts |= halts,
            }
        }
        self.update();
    }

    /// The store's commit failed with `why`.
    pub fn commit_failed(&self, why: &str) {
        *lock(&self.commit) = Some(why.to_string());
        self.commit_failing.store(true, Ordering::Release);
    }

    /// The store committed: it is writable (again).
    pub fn commit_succeeded(&self) {
        if self.commit_failing.swap(false, Ordering::AcqRel) {
            lock(&self.commit).take();
        }
    }

    /// Why an entry must be refused now, if it must.
    pub fn refusal(&self) -> Option<String> {
        if !self.troubled.load(Ordering::Acquire) {
            return None;
        }
        if let Some(a) = lock(&self.alarm).as_ref().filter(|a| a.halts) {
            return Some(format!(
                "the log is halted by an integrity alarm: {}; restart after investigating (run `custody verify`)",
                a.why
            ));
        }
        lock(&self.failure)
            .as_ref()
            .map(|f| format!("the latest checkpoint could not be made durable: {f}"))
    }

    /// Whether signing must stop (a halting alarm).
    pub fn halted(&self) -> bool {
        self.troubled.load(Ordering::Acquire) && lock(&self.alarm).as_ref().is_some_and(|a| a.halts)
    }

    pub fn report(&self) -> Report {
        let mut reasons = Vec::new();
        if let Some(a) = lock(&self.alarm).as_ref() {
            reasons.push(format!("integrity alarm: {}", a.why));
        }
        let alarm = !reasons.is_empty();
        if let Some(f) = lock(&self.failure).as_ref() {
            reasons.push(format!("checkpoint not durable: {f}"));
        }
        if self.commit_failing.load(Ordering::Acquire)
            && let Some(c) = lock(&self.commit).as_ref()
        {
            reasons.push(format!(
                "the log is not writable: its latest commit failed ({c})"
            ));
        }
        Report {
            ready: reasons.is_empty(),
            reasons,
            alarm,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_recover_and_alarms_stay() {
        let h = Health::default();
        assert!(h.refusal().is_none() && h.report().ready);
        assert!(h.fail("disk full".into()));
        assert!(!h.fail("disk full".into()), "logged once");
        assert!(h.refusal().unwrap().contains("disk full"));
        assert!(h.recover());
        assert!(h.refusal().is_none() && h.report().ready);
        h.alarm("entry 4 changed".into(), false);
        assert!(h.refusal().is_none(), "a non-halting alarm lets entries in");
        assert!(!h.report().ready && !h.halted());
        h.alarm("store diverged".into(), true);
        assert!(h.halted());
        let r = h.refusal().unwrap();
        assert!(
            r.contains("entry 4 changed"),
            "the first alarm is named: {r}"
        );
        assert!(h.report().alarm);
    }

    #[test]
    fn a_failed_commit_makes_the_log_not_writable_until_one_succeeds() {
        let h = Health::default();
        h.commit_failed("disk I/O error");
        let r = h.report();
        assert!(!r.ready && !r.alarm);
        assert!(r.reasons[0].contains("not writable") && r.reasons[0].contains("disk I/O error"));
        assert!(
            h.refusal().is_none(),
            "the next batch may succeed: not refused"
        );
        h.commit_succeeded();
        assert!(h.report().ready);
    }
}
