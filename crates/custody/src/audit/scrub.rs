//! The scrub: the whole stored log verified again, in the background, against the checkpoints
//! the log signed (the one published in memory first of all, which nothing on disk can change).
//! A mismatch raises an integrity alarm: `/readyz` not ready, an error in the gateway's log, and
//! an `alarm` entry in the audit log.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::files::Files;
use super::{Audit, Draft, Kind, now_ns, verify};
use crate::config::Durability;
use crate::store::{LogReader, Reader};

/// How the last scrub went.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Outcome {
    pub finished_ns: u64,
    pub took_ms: u64,
    /// Entries checked.
    pub entries: u64,
    /// What was wrong, if anything.
    pub problem: Option<String>,
}

pub async fn run(audit: Arc<Audit>, interval: Duration, stop: CancellationToken) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = stop.cancelled() => return,
        }
        audit.scrub().await;
    }
}

impl Audit {
    /// Verifies the whole stored log now. A problem raises the integrity alarm and is recorded.
    pub async fn scrub(&self) -> Outcome {
        let started = Instant::now();
        let mut sources = Vec::new();
        // The published checkpoint first: it is held in memory, out of the disk's reach.
        if let Some(cp) = self.latest_checkpoint() {
            sources.push(verify::Source {
                note: cp.note,
                label: format!("the published checkpoint at size {}", cp.size),
                trusted: true,
            });
        }
        let dir = self.data_dir.clone();
        let log = self.location.clone();
        let verifier = self.verifier.clone();
        let checked = tokio::task::spawn_blocking(move || {
            // The latest of each place on disk (reading all of checkpoints.jsonl would grow
            // with the log's age; every checkpoint covers every entry before it anyway).
            let files = Files::new(&dir, Durability::None);
            let head = files.read_head().map_err(|e| e.to_string())?;
            let last = files.last_checkpoint().map_err(|e| e.to_string())?;
            for (saved, label) in [
                (head, files.head_path().display().to_string()),
                (
                    last,
                    format!("the last line of {}", files.checkpoints_path().display()),
                ),
            ] {
                if let Some(saved) = saved {
                    sources.push(verify::Source {
                        note: saved.checkpoint.note,
                        label,
                        trusted: false,
                    });
                }
            }
            let reader = Reader::open(&log).map_err(|e| e.to_string())?;
            if let Some(cp) = reader.latest_checkpoint().map_err(|e| e.to_string())? {
                sources.push(verify::Source {
                    label: format!("the stored checkpoint at size {}", cp.size),
                    note: cp.note,
                    trusted: false,
                });
            }
            verify::check(&reader, verifier, &sources, &[]).map_err(|p| p.to_string())
        })
        .await
        .unwrap_or_else(|e| Err(format!("the scrub stopped: {e}")));
        let outcome = Outcome {
            finished_ns: now_ns(),
            took_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            entries: checked.as_ref().map_or(0, |s| s.entries),
            problem: checked.err(),
        };
        match &outcome.problem {
            None => tracing::info!(
                entries = outcome.entries,
                took_ms = outcome.took_ms,
                "scrub: the stored log matches every checkpoint it signed"
            ),
            Some(problem) => {
                tracing::error!("scrub: the stored log does not match what it signed: {problem}");
                self.health.alarm(format!("scrub: {problem}"), false);
                let detail = serde_json::json!({ "alarm": "scrub", "problem": problem });
                if let Err(e) = self
                    .append(Draft::gateway(Kind::Alarm, "", detail.to_string()))
                    .await
                {
                    tracing::error!("couldn't record the scrub's alarm: {e}");
                }
            }
        }
        *self
            .scrubbed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(outcome.clone());
        outcome
    }
}
