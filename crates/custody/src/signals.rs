//! SIGHUP, for the parts that reload on it (policy, upstream credentials).

use std::future::Future;

use tokio_util::sync::CancellationToken;

/// Runs `on_hup` for every SIGHUP until `stop`. The handler is installed before this returns,
/// so a SIGHUP right after start-up is handled instead of ending the process (its default).
pub fn on_hangup<F, Fut>(stop: CancellationToken, mut on_hup: F) -> tokio::task::JoinHandle<()>
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup());
    tokio::spawn(async move {
        let mut hup = match hup {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!("cannot listen for SIGHUP, reload by signal is off: {e}");
                return;
            }
        };
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                Some(()) = hup.recv() => on_hup().await,
            }
        }
    })
}
