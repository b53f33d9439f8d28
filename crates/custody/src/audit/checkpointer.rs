//! Signs checkpoints while the log grows, keeps an idle log provably alive, and publishes each
//! checkpoint only once it is durable everywhere it must be.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::witnessing::{Witnessed, Witnessing};
use super::{Audit, AuditError, Draft, Job, Kind, Signed};
use crate::store::{Reader, StoredCheckpoint};
use crate::witness::client::ConsistencyProofs;

pub async fn run(
    audit: Arc<Audit>,
    interval: Duration,
    heartbeat: Duration,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_signed = Instant::now();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.cancelled() => return,
        }
        if last_signed.elapsed() >= heartbeat {
            // An idle log still signs, over an entry that says when: a checkpoint then proves
            // the log was alive and unchanged up to that time.
            let detail =
                serde_json::json!({ "checkpoint_interval_ms": interval.as_millis() }).to_string();
            if let Err(e) = audit
                .append(Draft::gateway(Kind::Heartbeat, "", detail))
                .await
            {
                tracing::debug!("couldn't write a heartbeat entry: {e}");
            }
        }
        // Failures are logged once per change of state by `checkpoint` itself.
        if let Ok(Some(_)) = audit.checkpoint().await {
            last_signed = Instant::now();
        }
    }
}

impl Audit {
    /// Signs, persists and publishes a checkpoint of the tree as committed, unless the latest
    /// published one covers it already. The order, each step durable before the next:
    ///
    /// 1. The sequencer signs the tree it holds (never a tree that does not extend every
    ///    checkpoint signed before: see `sequencer::Sequencer::sign`).
    /// 2. `log.head` is replaced (atomically) with the checkpoint and its tree.
    /// 3. The database's checkpoints table gets it.
    /// 4. `checkpoints.jsonl` gets it.
    ///    — Publication: only now is it served, and put in receipts.
    ///
    /// A failure at 2–4 is an audit failure like a failed commit: entries are refused (fail
    /// closed) and `/readyz` is not ready until a later checkpoint makes it through.
    ///
    /// # Errors
    /// The checkpoint could not be signed or made durable.
    pub async fn checkpoint(&self) -> Result<Option<StoredCheckpoint>, AuditError> {
        let _in_order = self.publishing.lock().await;
        let steward = match &self.steward {
            None => true,
            Some(s) => {
                let s = s.clone();
                let holds = tokio::task::spawn_blocking(move || s.holds())
                    .await
                    .unwrap_or(false);
                self.stewarding
                    .store(holds, std::sync::atomic::Ordering::Relaxed);
                holds
            }
        };
        let witnessing = self.witnessing.get().cloned().filter(|_| steward);
        if let Some(w) = &witnessing {
            w.grew(self.head().size);
        }
        if !steward {
            return self.follow_steward().await;
        }
        let signed_at = std::time::Instant::now();
        let published = self.latest_checkpoint().map(|c| c.size);
        let (reply, rx) = oneshot::channel();
        self.jobs
            .send(Job::Sign {
                published,
                sign: true,
                reply,
            })
            .await
            .map_err(|_| AuditError::Closed)?;
        let Some(signed) = rx.await.map_err(|_| AuditError::Closed)?? else {
            return Ok(None);
        };
        // A shared log: the lease may have passed while this replica signed; then the new
        // steward publishes (the same checkpoint, for this size).
        if let Some(s) = &self.steward {
            let s = s.clone();
            if !tokio::task::spawn_blocking(move || s.holds())
                .await
                .unwrap_or(false)
            {
                self.stewarding
                    .store(false, std::sync::atomic::Ordering::Relaxed);
                return Ok(None);
            }
        }
        let mut signed = signed;
        if let Err(e) = self
            .persist(&mut signed, witnessing.as_deref(), signed_at)
            .await
        {
            if matches!(e, AuditError::Withheld(_)) {
                // Not a durability failure: required witnessing refuses calls by its lag.
                return Err(e);
            }
            if self.health.fail(e.to_string()) {
                tracing::error!(
                    size = signed.checkpoint.size,
                    "couldn't make a checkpoint durable; refusing entries until one is: {e}"
                );
            }
            return Err(e);
        }
        if self.health.recover() {
            tracing::warn!(
                size = signed.checkpoint.size,
                "checkpoints are durable again; taking entries"
            );
        }
        let cp = signed.checkpoint;
        {
            let mut latest = self
                .latest
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if latest.as_ref().is_none_or(|l| l.size < cp.size) {
                *latest = Some(cp.clone());
            }
        }
        // Erasures recorded below this size are now signed: carry them out.
        let (reply, rx) = oneshot::channel();
        if self
            .jobs
            .send(Job::CompleteErasures(cp.size, reply))
            .await
            .is_ok()
            && let Ok(Err(e)) = rx.await
        {
            tracing::error!(
                size = cp.size,
                "couldn't carry out erasures the checkpoint covers (retried at the next one): {e}"
            );
        }
        Ok(Some(cp))
    }

    /// Steps 2–4, with the witnesses between 3 and 4: the checkpoint published (and stored
    /// again, in its place in the database) is the one carrying their cosignatures.
    async fn persist(
        &self,
        signed: &mut Signed,
        witnessing: Option<&Witnessing>,
        signed_at: std::time::Instant,
    ) -> Result<(), AuditError> {
        let unavailable = |e: &dyn std::fmt::Display| AuditError::Unavailable(e.to_string());
        let files = self.files.clone();
        let (cp, range) = (signed.checkpoint.clone(), signed.range.clone());
        tokio::task::spawn_blocking(move || files.write_head(&cp, &range))
            .await
            .map_err(|e| unavailable(&e))?
            .map_err(|e| unavailable(&e))?;
        self.store_checkpoint(signed.checkpoint.clone()).await?;
        if let Some(w) = witnessing {
            let size = signed.checkpoint.size;
            match w
                .witness(
                    &signed.checkpoint.note,
                    size,
                    signed_at,
                    || self.head().size,
                    self.consistency_proofs(),
                )
                .await
            {
                Witnessed::Publish(note) => {
                    if note != signed.checkpoint.note {
                        signed.checkpoint.note = note;
                        self.store_checkpoint(signed.checkpoint.clone()).await?;
                    }
                }
                Witnessed::Withhold(why) => return Err(AuditError::Withheld(why)),
                Witnessed::Alarm(witness, what) => {
                    self.witness_alarm(&witness, &what, size).await;
                    return Err(AuditError::Unavailable(format!(
                        "witness {witness} raised an alarm: {what}"
                    )));
                }
            }
        }
        let files = self.files.clone();
        let cp = signed.checkpoint.clone();
        tokio::task::spawn_blocking(move || files.append_checkpoint(&cp))
            .await
            .map_err(|e| unavailable(&e))?
            .map_err(|e| unavailable(&e))
    }

    /// A replica that is not the steward publishes the checkpoint the steward stored, once its
    /// signature checks and it covers no more than the shared log this replica integrated.
    async fn follow_steward(&self) -> Result<Option<StoredCheckpoint>, AuditError> {
        // The stored checkpoint is read first, then the tree brought up to the shared log (in
        // that order, by the sequencer): the tree then covers what the checkpoint signs.
        let (latest, read) = oneshot::channel();
        let (reply, caught_up) = oneshot::channel();
        for job in [
            Job::Latest(latest),
            Job::Sign {
                published: None,
                sign: false,
                reply,
            },
        ] {
            self.jobs.send(job).await.map_err(|_| AuditError::Closed)?;
        }
        let stored = read.await.map_err(|_| AuditError::Closed)?;
        caught_up.await.map_err(|_| AuditError::Closed)??;
        let Some(cp) = stored? else {
            return Ok(None);
        };
        if self.latest_checkpoint().is_some_and(|l| l.size >= cp.size) {
            return Ok(None);
        }
        let opened = tlog::Checkpoint::open(cp.note.as_bytes(), &self.verifier);
        let head = self.head();
        let why = match opened {
            Err(e) => Some(format!("its signature does not check: {e}")),
            Ok((c, _)) if c.size != cp.size => Some(format!(
                "it is filed under size {} but signs size {}",
                cp.size, c.size
            )),
            Ok((c, _)) if c.size > head.size => Some(format!(
                "it signs size {} but the shared log holds {} entries",
                c.size, head.size
            )),
            Ok((c, _)) if c.size == head.size && c.root != head.root => Some(format!(
                "it signs a root at size {} other than the tree of the shared log's entries",
                c.size
            )),
            Ok((c, _)) if c.size > 0 && c.size < head.size => {
                // Its tree must be a prefix of the one this replica made of the entries: a
                // consistency proof from the stored nodes, checked against both roots.
                let log = self.location.clone();
                let (old, new, old_root, new_root) = (c.size, head.size, c.root, head.root);
                let proved = tokio::task::spawn_blocking(move || {
                    let reader = Reader::open(&log).map_err(|e| e.to_string())?;
                    tlog::proof::consistency_proof(&reader, old, new).map_err(|e| e.to_string())
                })
                .await
                .map_err(|e| AuditError::Unavailable(e.to_string()))?
                .map_err(AuditError::Unavailable)?;
                tlog::proof::verify_consistency(old, new, &proved, &old_root, &new_root)
                    .err()
                    .map(|e| {
                        format!(
                            "it is not consistent with the tree of the shared log's {new} entries: {e}"
                        )
                    })
            }
            Ok(_) => None,
        };
        if let Some(why) = why {
            let why = format!(
                "the checkpoint stored in the shared log at size {}: {why}",
                cp.size
            );
            self.health.alarm(why.clone(), true);
            return Err(AuditError::Unavailable(why));
        }
        let cp = StoredCheckpoint {
            note: self.checked_cosignatures(&cp.note),
            ..cp
        };
        // The steward stores a checkpoint before its witnesses answer, and again with their
        // cosignatures once it is published: in required mode a replica publishes only one
        // whose cosignatures meet this replica's quorum.
        if let Some(w) = self.witnessing.get()
            && w.required()
            && !tlog::Note::parse(cp.note.as_bytes()).is_ok_and(|n| w.client.policy().check(&n).met)
        {
            return Ok(None);
        }
        let mut latest = self
            .latest
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if latest.as_ref().is_none_or(|l| l.size < cp.size) {
            *latest = Some(cp.clone());
        }
        Ok(Some(cp))
    }

    /// Of a shared log: the checkpoint read from the database at start keeps only the
    /// signature lines this replica can vouch for (call once its witnesses are attached).
    pub fn vouch_for_latest(&self) {
        if self.config.store.is_none() {
            return;
        }
        let mut latest = self
            .latest
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(cp) = latest.as_mut() {
            cp.note = self.checked_cosignatures(&cp.note);
        }
    }

    /// `note` (its log signature checked) with only the signature lines this replica can vouch
    /// for: the log's own, and cosignatures that verify against a witness of its policy. A line
    /// the database alone added (or a witness this replica does not know) is not published as
    /// a cosignature.
    fn checked_cosignatures(&self, note: &str) -> String {
        let Ok(mut parsed) = tlog::Note::parse(note.as_bytes()) else {
            return note.to_string();
        };
        let witnesses = self.witnessing.get();
        let before = parsed.signatures.len();
        parsed.signatures.retain(|sig| {
            (sig.name == self.verifier.name() && sig.key_id == self.verifier.key_id())
                || witnesses.is_some_and(|w| {
                    w.client
                        .policy()
                        .witnesses()
                        .iter()
                        .any(|pw| pw.verifier.verify_line(&parsed.text, sig).is_ok())
                })
        });
        if parsed.signatures.len() < before {
            tracing::warn!(
                dropped = before - parsed.signatures.len(),
                "signature lines of the checkpoint stored in the shared log did not verify against the log's key or a witness of this replica's policy; published without them"
            );
        }
        parsed.encode()
    }

    async fn store_checkpoint(&self, cp: StoredCheckpoint) -> Result<(), AuditError> {
        let (reply, rx) = oneshot::channel();
        self.jobs
            .send(Job::Store(cp, reply))
            .await
            .map_err(|_| AuditError::Closed)?;
        rx.await.map_err(|_| AuditError::Closed)?
    }

    /// Consistency proofs for the witnesses, read from the stored tree (a proof from a changed
    /// database does not verify, and the witness refuses it: that is an alarm, as it should be).
    fn consistency_proofs(&self) -> Arc<dyn ConsistencyProofs> {
        let log = self.location.clone();
        Arc::new(move |old: u64, new: u64| {
            let log = log.clone();
            async move {
                tokio::task::spawn_blocking(move || {
                    let reader = Reader::open(&log).map_err(|e| e.to_string())?;
                    tlog::proof::consistency_proof(&reader, old, new).map_err(|e| e.to_string())
                })
                .await
                .map_err(|e| e.to_string())?
            }
        })
    }

    /// A witness saw another tree, or a larger one: record it, then stop signing and taking
    /// entries until a person looks.
    async fn witness_alarm(&self, witness: &str, what: &str, size: u64) {
        let why = format!("witness {witness}: {what}");
        tracing::error!(size, "{why}; signing stops");
        let detail = serde_json::json!({ "alarm": "witness", "witness": witness, "size": size, "what": what });
        if let Err(e) = self
            .append(Draft::gateway(Kind::Alarm, "", detail.to_string()))
            .await
        {
            tracing::error!("couldn't record the witness alarm: {e}");
        }
        self.health.alarm(why, true);
    }
}
