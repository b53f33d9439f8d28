//! The relay's housekeeping: reaping idle sessions and processes, reloading upstream
//! credentials, and shutting down.

use super::*;

impl Relay {
    /// Closes sessions idle longer than the configured timeout and idle pooled processes.
    /// Between replicas, first tells the others which shared sessions were used here and drops
    /// the copies of those another replica closed; a shared session idle here is closed only
    /// if no replica used it within the timeout.
    pub async fn reap(&self) {
        self.sync_shared_sessions().await;
        for ep in self.endpoints.values() {
            let idle = match ep.upstream {
                Upstream::Stdio(_) => self.stdio_session_idle.min(self.session_idle),
                Upstream::Http(_) => self.session_idle,
            };
            self.close_idle(ep, idle).await;
            if let Upstream::Stdio(up) = &ep.upstream {
                up.reap_idle().await;
            }
        }
    }

    async fn sync_shared_sessions(&self) {
        let Some(shared) = &self.shared else {
            return;
        };
        let mut used: Vec<(String, String, u64)> = Vec::new();
        let mut marks = Vec::new();
        for ep in self.endpoints.values() {
            let (these, now) = ep.sessions.unreported();
            marks.push((ep.clone(), now));
            used.extend(
                these
                    .into_iter()
                    .map(|(id, ago)| (ep.name.to_string(), id.to_string(), ago)),
            );
        }
        // Closings are looked for since the last look that worked (and over two reaps at
        // least), so none is missed while the database was out of reach.
        let since_ok = self
            .last_sync
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .map_or(Duration::ZERO, |t| t.elapsed());
        let window = (self.reap_interval() * 2).max(since_ok) + Duration::from_secs(10);
        let started = std::time::Instant::now();
        let forget = self.session_idle + Duration::from_secs(3600);
        let shared = shared.clone();
        let closed = tokio::task::spawn_blocking(move || shared.sync(&used, window, forget))
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r);
        match closed {
            Ok(closed) => {
                *self
                    .last_sync
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(started);
                for (ep, now) in marks {
                    ep.sessions.reported(now);
                }
                for (endpoint, id) in closed {
                    if let Some(ep) = self.endpoints.get(&endpoint) {
                        ep.sessions.remove(&id);
                    }
                }
            }
            Err(e) => tracing::warn!("couldn't share session use with the other replicas: {e}"),
        }
    }

    /// How often `reap` should run: often enough that a session outlives its idle timeout by at
    /// most a quarter of it (between 1 s and 15 s).
    pub fn reap_interval(&self) -> Duration {
        (self.session_idle.min(self.stdio_session_idle) / 4)
            .clamp(Duration::from_secs(1), Duration::from_secs(15))
    }

    /// Resolves every endpoint's credential references again (SIGHUP), recording each outcome
    /// as a `config_changed` entry (endpoint and reference on failure, never a value). A failed
    /// endpoint keeps the values in force.
    pub async fn reload_credentials(&self) {
        let mut names: Vec<&String> = self.endpoints.keys().collect();
        names.sort();
        for name in names {
            let ep = &self.endpoints[name];
            if !ep.credentials.has_references() {
                continue;
            }
            let detail = match ep.credentials.reload() {
                Ok(()) => {
                    tracing::info!(endpoint = %name, "upstream credentials re-read (SIGHUP)");
                    json!({ "credentials": { "endpoint": name, "reloaded": true, "trigger": "SIGHUP" } })
                }
                Err(e) => {
                    tracing::error!(
                        "upstream credentials not reloaded, the values in force stay: {e}"
                    );
                    json!({ "credentials": { "endpoint": name, "reloaded": false, "trigger": "SIGHUP", "error": e } })
                }
            };
            if let Err(e) = self
                .audit
                .append(crate::audit::Draft::gateway(
                    EntryKind::ConfigChanged,
                    name,
                    detail.to_string(),
                ))
                .await
            {
                tracing::error!("couldn't record the credential reload: {e}");
            }
        }
    }

    /// Begins shutdown: long-lived streams end now; other calls may finish.
    pub fn begin_shutdown(&self) {
        self.closing.cancel();
    }

    /// Ends every call still running and stops every upstream session and process.
    pub async fn finish_shutdown(&self) {
        self.closing.cancel();
        self.force.cancel();
        let mut closing = Vec::new();
        for ep in self.endpoints.values() {
            for session in ep.sessions.drain() {
                // Another replica carries a shared session on: it stays open upstream.
                if session.is_shared() {
                    continue;
                }
                let ep = ep.clone();
                closing.push(async move { self.close(&ep, &session, "the gateway stopped").await });
            }
        }
        futures_util::future::join_all(closing).await;
        for ep in self.endpoints.values() {
            if let Upstream::Stdio(up) = &ep.upstream {
                up.shutdown().await;
            }
        }
    }
}
