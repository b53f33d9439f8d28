//! Reloading the policy set: on SIGHUP, and when a policy file changes (checked every second).
//! A good set takes effect at once and is recorded in the audit log with its hash; a bad one
//! is refused, the set in force stays, and the refusal is logged and recorded.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::Engine;
use crate::audit::{Audit, Draft, Kind};

/// What made the gateway reload.
#[derive(Debug, Clone, Copy)]
pub enum Trigger {
    Signal,
    FileChanged,
}

impl Trigger {
    fn as_str(self) -> &'static str {
        match self {
            Trigger::Signal => "SIGHUP",
            Trigger::FileChanged => "file changed",
        }
    }
}

/// Reloads now and records the outcome. Returns whether the new set was taken.
pub async fn reload(engine: &Engine, audit: &Audit, trigger: Trigger) -> bool {
    let (old_hash, _) = engine.summary();
    let (detail, ok) = match engine.reload() {
        Ok((hash, count)) => {
            tracing::info!(
                policies = count,
                hash = %hash,
                "policy set reloaded ({})",
                trigger.as_str()
            );
            (
                json!({ "policy": { "reloaded": true, "trigger": trigger.as_str(), "hash": hash,
                    "previous_hash": old_hash, "policies": count, "files": files(engine) } }),
                true,
            )
        }
        Err(errors) => {
            tracing::error!(
                "policy reload ({}) refused; the policy set in force stays ({old_hash}):\n{errors}",
                trigger.as_str()
            );
            let list: Vec<String> = errors.0.iter().map(ToString::to_string).collect();
            (
                json!({ "policy": { "reloaded": false, "trigger": trigger.as_str(),
                    "hash": old_hash, "errors": list, "files": files(engine) } }),
                false,
            )
        }
    };
    if let Err(e) = audit
        .append(Draft::gateway(Kind::ConfigChanged, "", detail.to_string()))
        .await
    {
        tracing::error!("couldn't record the policy reload: {e}");
    }
    ok
}

fn files(engine: &Engine) -> Vec<String> {
    engine
        .files()
        .iter()
        .map(|f| f.display().to_string())
        .collect()
}

/// Size and modification time of each file: what "changed" means.
fn fingerprint(files: &[PathBuf]) -> Vec<Option<(u64, SystemTime)>> {
    files
        .iter()
        .map(|f| {
            std::fs::metadata(f)
                .ok()
                .and_then(|m| Some((m.len(), m.modified().ok()?)))
        })
        .collect()
}

/// Watches for SIGHUP and (when `watch`) for changed files until `stop`.
pub fn spawn(
    engine: Arc<Engine>,
    audit: Arc<Audit>,
    watch: bool,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    // The handler is installed before this returns, so a SIGHUP right after start-up reloads
    // instead of ending the process.
    let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!("cannot listen for SIGHUP, policy reload by signal is off: {e}");
            None
        }
    };
    tokio::spawn(async move {
        let mut seen = fingerprint(engine.files());
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let trigger = tokio::select! {
                () = stop.cancelled() => return,
                Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => Trigger::Signal,
                _ = tick.tick(), if watch => {
                    let now = fingerprint(engine.files());
                    if now == seen {
                        continue;
                    }
                    // Let a writer finish: wait until the files stop changing.
                    let mut settled = now;
                    loop {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        let again = fingerprint(engine.files());
                        if again == settled {
                            break;
                        }
                        settled = again;
                    }
                    Trigger::FileChanged
                }
            };
            reload(&engine, &audit, trigger).await;
            seen = fingerprint(engine.files());
        }
    })
}

/// Without policies there is nothing to reload: SIGHUP is logged instead of ending the process
/// (its default action).
pub fn ignore_hangups(stop: CancellationToken) -> tokio::task::JoinHandle<()> {
    crate::signals::on_hangup(stop, || async {
        tracing::info!("SIGHUP: no [policy] is configured, so there is no policy to reload");
    })
}
