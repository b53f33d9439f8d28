//! What the log tells `/readyz` and `/metrics` beyond its health: whether the store answers,
//! how fresh its checkpoints should be, its counters.

use std::sync::Arc;

use tokio::sync::oneshot;

use super::{Audit, Job};

impl Audit {
    /// What `/metrics` shows of the log.
    pub fn metrics(&self) -> &Arc<crate::metrics::AuditMetrics> {
        &self.metrics
    }

    /// Reads something cheap from the store through the log's writer, within `within`.
    ///
    /// # Errors
    /// What the store said, or that it did not answer in time (the writer is stuck behind a
    /// commit that does not end), or that the log is closed.
    pub async fn probe_store(&self, within: std::time::Duration) -> Result<(), String> {
        let asked = async {
            let (reply, rx) = oneshot::channel();
            self.jobs
                .send(Job::Probe(reply))
                .await
                .map_err(|_| "the log is closed".to_string())?;
            rx.await.map_err(|_| "the log is closed".to_string())?
        };
        match tokio::time::timeout(within, asked).await {
            Ok(answered) => answered,
            Err(_) => Err(format!(
                "no answer within {}",
                humantime::format_duration(within)
            )),
        }
    }
}
