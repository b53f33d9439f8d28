//! `[[export]]`: committed entries streamed to a SIEM as they land, at least once.
//!
//! Each sink follows the log's committed head from a durable cursor
//! (`<data_dir>/export-NAME.cursor`, the next index to send, replaced atomically after each
//! delivered batch), so a restart resumes where it stopped and a batch delivered just before a
//! crash may be delivered again, never lost. Sinks only read the log: a slow or failing sink
//! falls behind (its lag and last error are reported), it never holds a call.

pub mod entries;
pub mod ocsf;
mod sink;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::audit::Audit;
use crate::config::{ExportConfig, ExportFormat};
use crate::store::{Location, LogReader, Reader, StoreError};

/// A sink's state, for health and metrics.
#[derive(Debug, Clone, Default)]
pub struct Status {
    pub name: String,
    /// The next index to send.
    pub cursor: u64,
    /// Entries the log holds.
    pub head: u64,
    /// Why the last delivery failed, until one succeeds.
    pub last_error: Option<String>,
}

/// The sinks of a running gateway.
#[derive(Default)]
pub struct Exports {
    status: Vec<Arc<Mutex<Status>>>,
}

impl Exports {
    /// Every sink's state.
    pub fn status(&self) -> Vec<Status> {
        self.status
            .iter()
            .map(|s| {
                s.lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .clone()
            })
            .collect()
    }
}

/// Starts a task per sink.
pub fn start(
    audit: &Arc<Audit>,
    configs: &[ExportConfig],
    stop: &CancellationToken,
) -> (Exports, Vec<tokio::task::JoinHandle<()>>) {
    let mut exports = Exports::default();
    let mut tasks = Vec::new();
    for c in configs {
        let status = Arc::new(Mutex::new(Status {
            name: c.name.clone(),
            ..Status::default()
        }));
        exports.status.push(status.clone());
        tasks.push(tokio::spawn(run(
            audit.clone(),
            c.clone(),
            status,
            stop.clone(),
        )));
    }
    (exports, tasks)
}

fn cursor_path(audit: &Audit, name: &str) -> PathBuf {
    audit.data_dir().join(format!("export-{name}.cursor"))
}

/// The cursor: the log's origin and the next index. A cursor of another log (the log was
/// replaced by a successor) starts the new one from its beginning.
fn read_cursor(path: &std::path::Path, origin: &str, name: &str) -> u64 {
    let Ok(text) = std::fs::read_to_string(path) else {
        return 0;
    };
    match text.trim().split_once(' ') {
        Some((o, next)) if o == origin => next.parse().unwrap_or(0),
        Some((o, _)) => {
            tracing::warn!(
                export = name,
                "the cursor {} belongs to the log {o}, not {origin}: exporting this log from its start",
                path.display()
            );
            0
        }
        None => 0,
    }
}

fn write_cursor(path: &std::path::Path, origin: &str, next: u64) -> std::io::Result<()> {
    let tmp = path.with_extension("cursor.tmp");
    std::fs::write(&tmp, format!("{origin} {next}\n"))?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, path)
}

async fn run(
    audit: Arc<Audit>,
    config: ExportConfig,
    status: Arc<Mutex<Status>>,
    stop: CancellationToken,
) {
    let path = cursor_path(&audit, &config.name);
    let origin = audit.origin().to_string();
    let mut cursor = read_cursor(&path, &origin, &config.name);
    let mut sink = sink::Sink::new(&config);
    let head = audit.head().size;
    if cursor > head {
        let why = format!(
            "the cursor {} says {cursor} entries were exported but the log holds {head}: it was changed, and following it would skip entries; this sink stops until it is fixed (delete it to export from the start) and the gateway restarts",
            path.display()
        );
        tracing::error!(export = %config.name, "{why}");
        set(&status, |s| s.last_error = Some(why));
        return;
    }
    let mut backoff = Duration::from_millis(200);
    loop {
        let head = audit.head().size;
        set(&status, |s| {
            s.cursor = cursor;
            s.head = head;
        });
        // Replicas of a shared log: the steward sends it (each replica sending all of it would
        // repeat every entry once per replica).
        if cursor >= head || !audit.steward_here() {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(Duration::from_millis(100)) => continue,
            }
        }
        let to = head.min(cursor + config.batch);
        let log = audit.location().clone();
        let (format, o) = (config.format, origin.clone());
        let lines =
            tokio::task::spawn_blocking(move || render_batch(&log, cursor, to, format, &o)).await;
        let (lines, to) = match lines {
            Ok(Ok(l)) => l,
            Ok(Err(e)) => {
                fail(
                    &status,
                    &config.name,
                    format!("reading entries {cursor}..{to}: {e}"),
                );
                if sleep_or_stop(&stop, backoff).await {
                    return;
                }
                continue;
            }
            Err(e) => {
                fail(&status, &config.name, e.to_string());
                return;
            }
        };
        match sink.deliver(&lines).await {
            Ok(()) => {
                cursor = to;
                if let Err(e) = write_cursor(&path, &origin, cursor) {
                    fail(
                        &status,
                        &config.name,
                        format!("writing the cursor {}: {e}", path.display()),
                    );
                } else {
                    set(&status, |s| s.last_error = None);
                }
                backoff = Duration::from_millis(200);
            }
            Err(e) => {
                fail(&status, &config.name, e);
                if sleep_or_stop(&stop, backoff).await {
                    return;
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
}

fn set(status: &Mutex<Status>, f: impl FnOnce(&mut Status)) {
    f(&mut status
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner));
}

fn fail(status: &Mutex<Status>, name: &str, why: String) {
    let first = {
        let mut s = status
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let first = s.last_error.is_none();
        s.last_error = Some(why.clone());
        first
    };
    if first {
        tracing::warn!(export = name, "export sink failed, retrying: {why}");
    }
}

/// Sleeps `d`; `true` when stopped meanwhile.
async fn sleep_or_stop(stop: &CancellationToken, d: Duration) -> bool {
    tokio::select! {
        () = stop.cancelled() => true,
        () = tokio::time::sleep(d) => false,
    }
}

/// The most bytes of entries one batch reads: a batch stops early past it (after at least one
/// entry), so large payloads cannot make a batch, and the gateway, grow without bound.
pub const MAX_BATCH_BYTES: usize = 8 * 1024 * 1024;

/// The lines of entries `from..` (up to `to`, and up to [`MAX_BATCH_BYTES`] of entries and
/// payloads read) in `format`, and the index after the last one rendered.
///
/// # Errors
/// The log cannot be read.
pub fn render_batch(
    log: &Location,
    from: u64,
    to: u64,
    format: ExportFormat,
    origin: &str,
) -> Result<(Vec<Value>, u64), StoreError> {
    let reader = Reader::open(log)?;
    let mut end = from;
    let mut bytes = 0usize;
    reader.entries_in(from, to, |i, data| -> Result<(), StoreError> {
        if bytes >= MAX_BATCH_BYTES {
            return Ok(());
        }
        bytes += data.len();
        if format == ExportFormat::Entries {
            bytes += reader
                .payloads(i)?
                .iter()
                .map(|(_, _, d)| d.len())
                .sum::<usize>();
        }
        end = i + 1;
        Ok(())
    })?;
    Ok((render(&reader, from, end, format, origin)?, end))
}

/// The lines of entries `from..to` in `format`.
///
/// # Errors
/// The log cannot be read.
pub fn render(
    reader: &Reader,
    from: u64,
    to: u64,
    format: ExportFormat,
    origin: &str,
) -> Result<Vec<Value>, StoreError> {
    let version = env!("CARGO_PKG_VERSION");
    let mut out = Vec::new();
    let mut raw: Vec<(u64, Vec<u8>)> = Vec::new();
    reader.entries_in(from, to, |i, data| -> Result<(), StoreError> {
        raw.push((i, data.to_vec()));
        Ok(())
    })?;
    for (i, data) in raw {
        let leaf = tlog::leaf_hash(&data).to_hex();
        let Ok(e) = tlog::Entry::decode(&data) else {
            return Err(StoreError::Inconsistent(format!(
                "entry {i} cannot be decoded"
            )));
        };
        match format {
            ExportFormat::Entries => {
                let mut v = entries::to_json(&e, &leaf);
                entries::with_payloads(&mut v, &e, &reader.payloads(i)?);
                out.push(v);
            }
            ExportFormat::Ocsf => {
                if !ocsf::is_event(&e) {
                    continue;
                }
                let request = match e.request {
                    Some(r) => Some(reader.entry(r)?.1),
                    None => None,
                };
                let request = request.as_deref().and_then(|b| tlog::Entry::decode(b).ok());
                out.push(ocsf::event(&e, &leaf, origin, request.as_ref(), version));
            }
        }
    }
    Ok(out)
}
