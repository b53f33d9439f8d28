//! Signs checkpoints while the log grows, keeps an idle log provably alive, and publishes each
//! checkpoint only once it is durable everywhere it must be.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::{Audit, AuditError, Draft, Job, Kind, Signed};
use crate::store::StoredCheckpoint;

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
        let published = self.latest_checkpoint().map(|c| c.size);
        let (reply, rx) = oneshot::channel();
        self.jobs
            .send(Job::Sign { published, reply })
            .await
            .map_err(|_| AuditError::Closed)?;
        let Some(signed) = rx.await.map_err(|_| AuditError::Closed)?? else {
            return Ok(None);
        };
        if let Err(e) = self.persist(&signed).await {
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
        let mut latest = self
            .latest
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if latest.as_ref().is_none_or(|l| l.size < cp.size) {
            *latest = Some(cp.clone());
        }
        Ok(Some(cp))
    }

    /// Steps 2–4.
    async fn persist(&self, signed: &Signed) -> Result<(), AuditError> {
        let unavailable = |e: &dyn std::fmt::Display| AuditError::Unavailable(e.to_string());
        let files = self.files.clone();
        let (cp, range) = (signed.checkpoint.clone(), signed.range.clone());
        tokio::task::spawn_blocking(move || files.write_head(&cp, &range))
            .await
            .map_err(|e| unavailable(&e))?
            .map_err(|e| unavailable(&e))?;
        let (reply, rx) = oneshot::channel();
        self.jobs
            .send(Job::Store(signed.checkpoint.clone(), reply))
            .await
            .map_err(|_| AuditError::Closed)?;
        rx.await.map_err(|_| AuditError::Closed)??;
        let files = self.files.clone();
        let cp = signed.checkpoint.clone();
        tokio::task::spawn_blocking(move || files.append_checkpoint(&cp))
            .await
            .map_err(|e| unavailable(&e))?
            .map_err(|e| unavailable(&e))
    }
}
