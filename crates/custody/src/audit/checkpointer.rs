//! Signs checkpoints while the log grows, and keeps an idle log provably alive.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::{Audit, Draft, Kind};

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
                tracing::error!("couldn't write a heartbeat entry: {e}");
            }
        }
        match audit.checkpoint().await {
            Ok(Some(_)) => last_signed = Instant::now(),
            Ok(None) => {}
            Err(e) => tracing::error!("couldn't sign a checkpoint: {e}"),
        }
    }
}
