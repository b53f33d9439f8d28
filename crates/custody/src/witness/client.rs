//! The gateway's side of C2SP tlog-witness: asking every witness of the policy to cosign a
//! checkpoint, concurrently, and returning as soon as the quorum is met (or can no longer be).
//!
//! Per witness, one request at a time, with the consistency proof from the size it last
//! cosigned (learned from its answers; 0 at first, which it answers with 409 and its size, the
//! re-sync of §add-checkpoint). Every returned line is verified with the witness's key over the
//! exact checkpoint sent; anything else is [`Outcome::Invalid`] and does not count.
//!
//! Wiring: build [`Witnesses`] once from [`crate::config::WitnessConfig`]; for each checkpoint
//! call [`Witnesses::submit`] beside the relay (never on a call's path) with a
//! [`ConsistencyProofs`] that reads the log; publish [`Submission::cosigned_note`] when
//! [`Submission::quorum`]; treat [`Submission::alarms`] as a stop-signing alarm; drain
//! [`Submission::late`] to add stragglers' cosignatures to the stored checkpoint.

mod exchange;
mod outcome;

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Uri;
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use serde::Serialize;
use tlog::cosignature::CosignatureVerifier;
use tlog::note::NoteSignature;
use tlog::policy::Policy;
use tlog::{Checkpoint, Hash, Note};
use tokio::sync::mpsc;

pub use outcome::Outcome;

/// A cosignature timestamp further than this from the gateway's clock is refused.
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(60);
/// The longest wait before asking an unavailable witness again.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// The longest `Retry-After` honoured.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(600);

/// Where consistency proofs come from: the log. `old < new`, both sizes the log has had.
pub trait ConsistencyProofs: Send + Sync + 'static {
    fn consistency(&self, old: u64, new: u64) -> ProofFuture;
}

pub type ProofFuture = Pin<Box<dyn Future<Output = Result<Vec<Hash>, String>> + Send>>;

impl<F, Fut> ConsistencyProofs for F
where
    F: Fn(u64, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Vec<Hash>, String>> + Send + 'static,
{
    fn consistency(&self, old: u64, new: u64) -> ProofFuture {
        Box::pin(self(old, new))
    }
}

/// How the client behaves.
#[derive(Debug, Clone)]
pub struct Options {
    /// One request's limit, connection to last byte.
    pub timeout: Duration,
    /// Per witness of the policy, the least time between two requests.
    pub min_interval: Vec<Duration>,
}

impl From<&crate::config::WitnessConfig> for Options {
    fn from(c: &crate::config::WitnessConfig) -> Self {
        Self {
            timeout: c.timeout,
            min_interval: c.min_interval.clone(),
        }
    }
}

/// A verified cosignature of one witness.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WitnessCosignature {
    pub witness: String,
    pub signature: NoteSignature,
    pub timestamp: u64,
}

/// What became of one checkpoint.
pub struct Submission {
    pub size: u64,
    /// Whether the verified cosignatures meet the policy's quorum.
    pub quorum: bool,
    pub cosignatures: Vec<WitnessCosignature>,
    /// Every witness that answered (or was not asked) before this returned.
    pub outcomes: Vec<(String, Outcome)>,
    /// Witnesses still answering; their outcomes arrive on `late` (each within the timeout).
    pub pending: Vec<String>,
    pub late: mpsc::Receiver<(String, Outcome)>,
}

impl Submission {
    /// Forks and rollbacks among the outcomes so far.
    pub fn alarms(&self) -> impl Iterator<Item = (&str, &Outcome)> {
        self.outcomes
            .iter()
            .filter(|(_, o)| o.is_alarm())
            .map(|(w, o)| (w.as_str(), o))
    }

    /// The checkpoint note with the verified cosignatures appended.
    pub fn cosigned_note(&self, note: &str) -> String {
        let mut out = note.to_string();
        for c in &self.cosignatures {
            c.signature.write_line(&mut out);
        }
        out
    }
}

/// A witness's state as the gateway sees it, for the API and `/readyz`.
#[derive(Debug, Clone, Serialize)]
pub struct WitnessStatus {
    pub name: String,
    pub url: String,
    /// The size it last cosigned, as far as this gateway knows.
    pub cosigned_size: Option<u64>,
    /// The timestamp of its last cosignature this gateway verified.
    pub last_cosignature: Option<u64>,
    pub last_outcome: Option<String>,
    /// A fork or rollback alarm it raised.
    pub alarm: Option<String>,
    pub consecutive_failures: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("witness {name}: {url:?} is not a URL a witness can be reached at")]
    BadUrl { name: String, url: String },
    #[error("the checkpoint to submit: {0}")]
    Checkpoint(String),
}

type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// The witnesses of a policy.
#[derive(Clone)]
pub struct Witnesses {
    inner: Arc<Inner>,
}

struct Inner {
    policy: Arc<Policy>,
    http: HttpClient,
    members: Vec<Member>,
    timeout: Duration,
}

/// A witness with a URL.
struct Member {
    /// Its index in the policy.
    index: usize,
    name: String,
    url: String,
    endpoint: Uri,
    verifier: CosignatureVerifier,
    min_interval: Duration,
    /// Held while a request is in flight: one at a time, in order.
    busy: tokio::sync::Mutex<()>,
    state: Mutex<MemberState>,
}

#[derive(Default)]
struct MemberState {
    /// The size it last cosigned, as far as we know.
    cosigned: Option<u64>,
    /// The largest size we saw it cosign: a 409 naming less means it lost its state.
    max_cosigned: u64,
    last_timestamp: Option<u64>,
    last_sent: Option<Instant>,
    failures: u32,
    retry_at: Option<Instant>,
    alarm: Option<String>,
    last: Option<String>,
}

struct Job {
    note: String,
    text: String,
    origin: String,
    size: u64,
}

impl Witnesses {
    /// The witnesses of `policy` that have a URL (the others can only be checked offline).
    ///
    /// # Errors
    /// [`ClientError::BadUrl`].
    pub fn new(policy: Arc<Policy>, options: &Options) -> Result<Self, ClientError> {
        let mut members = Vec::new();
        for (index, w) in policy.witnesses().iter().enumerate() {
            let Some(url) = &w.url else { continue };
            let endpoint: Uri = format!("{}/add-checkpoint", url.trim_end_matches('/'))
                .parse()
                .map_err(|_| ClientError::BadUrl {
                    name: w.name.clone(),
                    url: url.clone(),
                })?;
            members.push(Member {
                index,
                name: w.name.clone(),
                url: url.clone(),
                endpoint,
                verifier: w.verifier.clone(),
                min_interval: options.min_interval.get(index).copied().unwrap_or_default(),
                busy: tokio::sync::Mutex::new(()),
                state: Mutex::new(MemberState::default()),
            });
        }
        Ok(Self {
            inner: Arc::new(Inner {
                policy,
                http: crate::net::client(options.timeout),
                members,
                timeout: options.timeout,
            }),
        })
    }

    /// From the gateway's validated `[witness]` table.
    ///
    /// # Errors
    /// See [`Witnesses::new`].
    pub fn from_config(c: &crate::config::WitnessConfig) -> Result<Self, ClientError> {
        Self::new(c.policy.clone(), &Options::from(c))
    }

    pub fn policy(&self) -> &Policy {
        &self.inner.policy
    }

    /// Tells the client the size a witness last cosigned (from cosignatures the gateway
    /// stored), so the first request after a start carries the right proof and a witness that
    /// later claims less is caught forgetting.
    pub fn set_cosigned(&self, witness: &str, size: u64) {
        if let Some(m) = self.inner.members.iter().find(|m| m.name == witness) {
            let mut s = m.lock();
            s.cosigned = Some(size);
            s.max_cosigned = s.max_cosigned.max(size);
        }
    }

    /// The first alarm (fork or rollback) any witness raised: `(witness, what)`.
    pub fn alarm(&self) -> Option<(String, String)> {
        self.inner
            .members
            .iter()
            .find_map(|m| m.lock().alarm.clone().map(|a| (m.name.clone(), a)))
    }

    /// Each witness's state.
    pub fn status(&self) -> Vec<WitnessStatus> {
        self.inner
            .members
            .iter()
            .map(|m| {
                let s = m.lock();
                WitnessStatus {
                    name: m.name.clone(),
                    url: m.url.clone(),
                    cosigned_size: s.cosigned,
                    last_cosignature: s.last_timestamp,
                    last_outcome: s.last.clone(),
                    alarm: s.alarm.clone(),
                    consecutive_failures: s.failures,
                }
            })
            .collect()
    }

    /// Asks every witness to cosign `note` (a checkpoint signed by the log) and returns when
    /// the quorum is met, can no longer be met, or every witness has answered.
    ///
    /// # Errors
    /// [`ClientError::Checkpoint`] when `note` is not a signed checkpoint.
    pub async fn submit(
        &self,
        note: &str,
        proofs: Arc<dyn ConsistencyProofs>,
    ) -> Result<Submission, ClientError> {
        let parsed =
            Note::parse(note.as_bytes()).map_err(|e| ClientError::Checkpoint(e.to_string()))?;
        let cp = Checkpoint::from_text(&parsed.text)
            .map_err(|e| ClientError::Checkpoint(e.to_string()))?;
        let job = Arc::new(Job {
            note: note.to_string(),
            text: parsed.text,
            origin: cp.origin,
            size: cp.size,
        });
        let members = &self.inner.members;
        let (tx, mut rx) = mpsc::channel(members.len().max(1));
        for i in 0..members.len() {
            let inner = self.inner.clone();
            let job = job.clone();
            let proofs = proofs.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                let m = &inner.members[i];
                let outcome = inner.attempt(m, &job, &*proofs).await;
                m.lock().last = Some(outcome.to_string());
                log_outcome(&m.name, job.size, &outcome);
                let _ = tx.send((i, outcome)).await;
            });
        }
        drop(tx);
        let n = self.inner.policy.witnesses().len();
        let mut cosigned = vec![false; n];
        let mut waiting = vec![false; n];
        for m in members {
            waiting[m.index] = true;
        }
        let mut outcomes = Vec::new();
        let mut cosignatures = Vec::new();
        let policy = &self.inner.policy;
        let mut quorum = policy.quorum_met(|i| cosigned[i]);
        while !quorum {
            // Stop waiting once the quorum cannot be met even if every pending witness cosigns.
            if !policy.quorum_met(|i| cosigned[i] || waiting[i]) {
                break;
            }
            let Some((i, outcome)) = rx.recv().await else {
                break;
            };
            let m = &members[i];
            waiting[m.index] = false;
            if let Outcome::Cosigned {
                signature,
                timestamp,
            } = &outcome
            {
                cosigned[m.index] = true;
                cosignatures.push(WitnessCosignature {
                    witness: m.name.clone(),
                    signature: signature.clone(),
                    timestamp: *timestamp,
                });
            }
            outcomes.push((m.name.clone(), outcome));
            quorum = policy.quorum_met(|i| cosigned[i]);
        }
        let pending = members
            .iter()
            .filter(|m| waiting[m.index])
            .map(|m| m.name.clone())
            .collect();
        // The receiver maps member indexes; hand the caller names.
        let (late_tx, late) = mpsc::channel(members.len().max(1));
        let names: Vec<String> = members.iter().map(|m| m.name.clone()).collect();
        tokio::spawn(async move {
            while let Some((i, o)) = rx.recv().await {
                if late_tx.send((names[i].clone(), o)).await.is_err() {
                    break;
                }
            }
        });
        Ok(Submission {
            size: job.size,
            quorum,
            cosignatures,
            outcomes,
            pending,
            late,
        })
    }
}

fn log_outcome(witness: &str, size: u64, o: &Outcome) {
    match o {
        Outcome::Cosigned { .. } => tracing::debug!(witness, size, "{o}"),
        Outcome::Fork { .. } | Outcome::Rollback { .. } => {
            tracing::error!(witness, size, "witness alarm: {o}");
        }
        Outcome::Skipped { .. } => tracing::debug!(witness, size, "{o}"),
        _ => tracing::warn!(witness, size, "{o}"),
    }
}

impl Member {
    fn lock(&self) -> std::sync::MutexGuard<'_, MemberState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests;
