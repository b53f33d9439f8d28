//! The log's witnesses, as checkpoint publication uses them ([`crate::witness`] is the client).
//!
//! Every checkpoint the log signs is sent to the policy's witnesses beside the relay (on the
//! checkpointer's task, never on a call's path). A checkpoint is published with the
//! cosignatures that met the quorum. What happens while the quorum is not met depends on the
//! mode: `required` refuses calls once the newest entries have waited longer than `max_lag`
//! for a cosigned checkpoint; `best_effort` publishes without them and reports the lag. A
//! witness that saw another tree (a fork) or a larger one (a rollback) raises an alarm that
//! stops signing for good.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::AuditError;
use crate::config::{WitnessConfig, WitnessMode};
use crate::witness::client::{ConsistencyProofs, Outcome, Submission, WitnessStatus, Witnesses};

/// How long publication waits, after the quorum is met, for the other witnesses'
/// cosignatures to be stored with the checkpoint too.
const STRAGGLERS: Duration = Duration::from_millis(250);

pub struct Witnessing {
    pub client: Witnesses,
    mode: WitnessMode,
    max_lag: Duration,
    epoch: Instant,
    /// Milliseconds since `epoch`, plus one, since when committed entries have been waiting
    /// for a cosigned checkpoint; 0 when none wait. Read on every append: an atomic.
    waiting_since: AtomicU64,
    /// The size of the newest checkpoint that met the quorum.
    quorum_size: AtomicU64,
    last: Mutex<Option<Quorum>>,
    /// Whether the last checkpoint was withheld (logged once per change).
    withholding: std::sync::atomic::AtomicBool,
    /// Where each witness's outcomes are counted.
    metrics: Arc<crate::metrics::AuditMetrics>,
}

/// The newest checkpoint that met the quorum.
#[derive(Debug, Clone, Serialize)]
pub struct Quorum {
    pub size: u64,
    /// When the quorum was met (nanoseconds since the Unix epoch).
    pub at_ns: u64,
    pub cosigners: Vec<String>,
}

/// What the API and `/readyz` say about the witnesses.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub mode: &'static str,
    pub quorum: String,
    pub max_lag_ms: u64,
    /// How long the newest entries have waited for a cosigned checkpoint.
    pub lag_ms: u64,
    pub last_quorum: Option<Quorum>,
    pub witnesses: Vec<WitnessStatus>,
}

/// What became of one checkpoint at the witnesses.
pub enum Witnessed {
    /// Publish this note (the checkpoint with the cosignatures gathered).
    Publish(String),
    /// The quorum was not met and the mode forbids publishing without it.
    Withhold(String),
    /// A witness raised an alarm: `(witness, what)`.
    Alarm(String, String),
}

impl Witnessing {
    pub fn new(
        config: &WitnessConfig,
        metrics: Arc<crate::metrics::AuditMetrics>,
    ) -> Result<Self, String> {
        Ok(Self {
            client: Witnesses::from_config(config).map_err(|e| e.to_string())?,
            mode: config.mode,
            max_lag: config.max_lag,
            epoch: Instant::now(),
            waiting_since: AtomicU64::new(0),
            quorum_size: AtomicU64::new(0),
            last: Mutex::new(None),
            withholding: std::sync::atomic::AtomicBool::new(false),
            metrics,
        })
    }

    /// Seeds what each witness last cosigned from a published checkpoint (the last line of
    /// `checkpoints.jsonl`), so the first request after a start carries the right proof and a
    /// witness that later claims less is caught.
    pub fn seed(&self, published_note: &str, size: u64) {
        let Ok(note) = tlog::Note::parse(published_note.as_bytes()) else {
            return;
        };
        let check = self.client.policy().check(&note);
        for c in &check.cosigners {
            let name = &self.client.policy().witnesses()[c.witness].name;
            self.client.set_cosigned(name, size);
        }
        if check.met {
            self.quorum_size.store(size, Ordering::Release);
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX - 1) + 1
    }

    /// How long the newest entries have waited for a cosigned checkpoint.
    pub fn lag(&self) -> Duration {
        match self.waiting_since.load(Ordering::Acquire) {
            0 => Duration::ZERO,
            since => Duration::from_millis(self.now_ms().saturating_sub(since)),
        }
    }

    /// Whether a checkpoint is published only once its cosignatures meet the quorum.
    pub fn required(&self) -> bool {
        matches!(self.mode, WitnessMode::Required)
    }

    /// Why an entry must be refused now (required mode, lag past `max_lag`), if it must.
    pub fn refusal(&self) -> Option<AuditError> {
        if self.mode != WitnessMode::Required {
            return None;
        }
        let lag = self.lag();
        (lag > self.max_lag).then(|| AuditError::Unwitnessed {
            lag,
            max_lag: self.max_lag,
            quorum: self.client.policy().describe_quorum(),
        })
    }

    /// The log has grown to `size`: entries past the last cosigned checkpoint start waiting.
    pub fn grew(&self, size: u64) {
        if size > self.quorum_size.load(Ordering::Acquire) {
            let _ = self.waiting_since.compare_exchange(
                0,
                self.now_ms(),
                Ordering::AcqRel,
                Ordering::Acquire,
            );
        }
    }

    /// Sends `note` (size `size`, signed at `signed`) to the witnesses and gathers what they
    /// answer. `head` is the log's size now.
    pub async fn witness(
        &self,
        note: &str,
        size: u64,
        signed: Instant,
        head: impl Fn() -> u64,
        proofs: Arc<dyn ConsistencyProofs>,
    ) -> Witnessed {
        let mut sub: Submission = match self.client.submit(note, proofs).await {
            Ok(s) => s,
            Err(e) => return Witnessed::Withhold(e.to_string()),
        };
        for (name, outcome) in &sub.outcomes {
            self.metrics.witness_outcome(name, outcome.kind());
        }
        if let Some((w, o)) = sub.alarms().next() {
            return Witnessed::Alarm(w.to_string(), o.to_string());
        }
        if let Some((w, what)) = self.client.alarm() {
            return Witnessed::Alarm(w, what);
        }
        if sub.quorum {
            // Stragglers still answering get a moment to be stored with the checkpoint.
            let deadline = tokio::time::Instant::now() + STRAGGLERS;
            while !sub.pending.is_empty() {
                match tokio::time::timeout_at(deadline, sub.late.recv()).await {
                    Ok(Some((name, outcome))) => {
                        self.metrics.witness_outcome(&name, outcome.kind());
                        sub.pending.retain(|p| *p != name);
                        if let Outcome::Cosigned {
                            signature,
                            timestamp,
                        } = &outcome
                        {
                            sub.cosignatures
                                .push(crate::witness::client::WitnessCosignature {
                                    witness: name.clone(),
                                    signature: signature.clone(),
                                    timestamp: *timestamp,
                                });
                        }
                        sub.outcomes.push((name, outcome));
                    }
                    _ => break,
                }
            }
            self.quorum_size.fetch_max(size, Ordering::AcqRel);
            // Entries committed after this checkpoint was signed have waited since then at
            // most; none wait when it covers the whole log.
            if head() > size {
                let since = u64::try_from(signed.duration_since(self.epoch).as_millis())
                    .unwrap_or(u64::MAX - 1)
                    + 1;
                self.waiting_since.store(since, Ordering::Release);
            } else {
                self.waiting_since.store(0, Ordering::Release);
            }
            if self.withholding.swap(false, Ordering::AcqRel) {
                tracing::warn!(
                    size,
                    "the witnesses cosign again: checkpoints are published"
                );
            }
            *self.last.lock().unwrap_or_else(PoisonError::into_inner) = Some(Quorum {
                size,
                at_ns: super::now_ns(),
                cosigners: sub.cosignatures.iter().map(|c| c.witness.clone()).collect(),
            });
            return Witnessed::Publish(sub.cosigned_note(note));
        }
        let why = format!(
            "the checkpoint at size {size} did not reach the quorum ({}): {}",
            self.client.policy().describe_quorum(),
            sub.outcomes
                .iter()
                .map(|(w, o)| format!("{w}: {o}"))
                .chain(sub.pending.iter().map(|w| format!("{w}: no answer yet")))
                .collect::<Vec<_>>()
                .join("; ")
        );
        match self.mode {
            WitnessMode::Required => {
                if !self.withholding.swap(true, Ordering::AcqRel) {
                    tracing::error!(
                        "{why}; checkpoints are withheld, and calls are refused once the lag passes witness.max_lag ({})",
                        humantime::format_duration(self.max_lag)
                    );
                }
                Witnessed::Withhold(why)
            }
            WitnessMode::BestEffort => {
                tracing::warn!(
                    lag_ms = self.lag().as_millis(),
                    "{why}; published without it (best_effort)"
                );
                Witnessed::Publish(sub.cosigned_note(note))
            }
        }
    }

    pub fn report(&self) -> Report {
        Report {
            mode: match self.mode {
                WitnessMode::Required => "required",
                WitnessMode::BestEffort => "best_effort",
            },
            quorum: self.client.policy().describe_quorum(),
            max_lag_ms: u64::try_from(self.max_lag.as_millis()).unwrap_or(u64::MAX),
            lag_ms: u64::try_from(self.lag().as_millis()).unwrap_or(u64::MAX),
            last_quorum: self
                .last
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
            witnesses: self.client.status(),
        }
    }
}
