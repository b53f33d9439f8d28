//! How the sequencer reports a failing store: one error when commits start failing, a reminder
//! at most every [`REMIND`] while they keep failing, and one line when they succeed again, with
//! how many batches and entries failed in between. Not a line per failed batch: a full disk
//! under load fails a thousand batches a second, and a log line per batch would bury the one
//! that says why (and fill the disk the log itself may be on).

use std::time::{Duration, Instant};

/// Least time between two reminders that the store is still failing.
pub const REMIND: Duration = Duration::from_secs(60);

/// The store's commits as the log last reported them (not the log's integrity: that is
/// `audit::health`).
#[derive(Debug, Default)]
pub struct StoreFailures {
    failing: Option<Failing>,
}

#[derive(Debug)]
struct Failing {
    since: Instant,
    said: Instant,
    batches: u64,
    entries: u64,
}

/// What to log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    /// Commits started failing.
    Failing { entries: u64, error: String },
    /// They still are.
    StillFailing {
        since: Duration,
        batches: u64,
        entries: u64,
        error: String,
    },
    /// A commit succeeded after failures.
    Recovered {
        after: Duration,
        batches: u64,
        entries: u64,
    },
}

impl StoreFailures {
    /// A commit of `entries` entries failed.
    pub fn failed(&mut self, now: Instant, entries: usize, error: &str) -> Option<Report> {
        let entries = entries as u64;
        match &mut self.failing {
            None => {
                self.failing = Some(Failing {
                    since: now,
                    said: now,
                    batches: 1,
                    entries,
                });
                Some(Report::Failing {
                    entries,
                    error: error.to_string(),
                })
            }
            Some(f) => {
                f.batches += 1;
                f.entries += entries;
                if now.saturating_duration_since(f.said) < REMIND {
                    return None;
                }
                f.said = now;
                Some(Report::StillFailing {
                    since: now.saturating_duration_since(f.since),
                    batches: f.batches,
                    entries: f.entries,
                    error: error.to_string(),
                })
            }
        }
    }

    /// A commit succeeded.
    pub fn succeeded(&mut self, now: Instant) -> Option<Report> {
        let f = self.failing.take()?;
        Some(Report::Recovered {
            after: now.saturating_duration_since(f.since),
            batches: f.batches,
            entries: f.entries,
        })
    }
}

impl Report {
    pub fn log(&self) {
        match self {
            Report::Failing { entries, error } => tracing::error!(
                entries,
                "couldn't make audit entries durable: {error}; calls are refused (fail closed) until the store works again. Further failures are counted, not logged one by one"
            ),
            Report::StillFailing {
                since,
                batches,
                entries,
                error,
            } => tracing::error!(
                batches,
                entries,
                "the audit store has been failing for {}: {batches} commits ({entries} entries) refused so far; latest error: {error}",
                humantime::format_duration(Duration::from_secs(since.as_secs()))
            ),
            Report::Recovered {
                after,
                batches,
                entries,
            } => tracing::warn!(
                batches,
                entries,
                "the audit store works again after {}: {batches} commits ({entries} entries) were refused while it failed",
                humantime::format_duration(Duration::from_millis(
                    u64::try_from(after.as_millis()).unwrap_or(u64::MAX)
                ))
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thousand_failures_a_second_make_one_line_then_a_reminder_a_minute_then_one_recovery() {
        let mut h = StoreFailures::default();
        let t0 = Instant::now();
        let mut reports = Vec::new();
        // 1,000 failed batches a second for 150 seconds.
        for ms in 0..150_000u64 {
            let now = t0 + Duration::from_millis(ms);
            reports.extend(h.failed(now, 3, "disk full"));
        }
        reports.extend(h.succeeded(t0 + Duration::from_secs(151)));
        reports.extend(h.succeeded(t0 + Duration::from_secs(152)));
        assert_eq!(reports.len(), 4, "{reports:#?}");
        assert_eq!(
            reports[0],
            Report::Failing {
                entries: 3,
                error: "disk full".into()
            }
        );
        assert!(matches!(
            reports[1],
            Report::StillFailing {
                batches: 60_001,
                ..
            }
        ));
        assert!(matches!(
            reports[2],
            Report::StillFailing {
                batches: 120_001,
                ..
            }
        ));
        assert_eq!(
            reports[3],
            Report::Recovered {
                after: Duration::from_secs(151),
                batches: 150_000,
                entries: 450_000
            }
        );
    }
}
