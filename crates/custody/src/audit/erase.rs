//! Erasure and retention of payloads (entry version 2).
//!
//! An entry commits to its payloads (the masked message, the recorded upstream headers); the
//! payloads and the openings of their commitments live beside the tree. Erasing deletes both
//! and appends a `payload_erased` entry naming what was erased, why and by whom. The entry is
//! committed first; the payloads are deleted once a signed checkpoint covers it (at once: the
//! erasure signs one), so a missing payload is only ever explained by a signed record, never by
//! an entry someone with the database appended. The leaf, the header, every proof and every
//! checkpoint stay valid, and
//! `custody verify` lists the erased entries instead of failing on them. A payload missing
//! without such an entry is still a deletion the verifier reports.
//!
//! Retention (`[audit] retention`) erases payloads older than the configured age in batches,
//! each batch one `payload_erased` entry naming its range.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tlog::entry::Kind;
use tokio_util::sync::CancellationToken;

use super::{Appended, Audit, AuditError, Draft, Erase, now_ns};
use crate::store::{LogReader, Reader};

/// The longest reason an erasure may carry.
pub const MAX_REASON_BYTES: usize = 1024;

/// Entries a retention batch erases at most.
pub const RETENTION_BATCH: u64 = 10_000;

/// Why an erasure was refused.
#[derive(Debug, thiserror::Error)]
pub enum EraseError {
    #[error("an erasure needs a reason (who asked, which order or incident), recorded with it")]
    NoReason,
    #[error("the reason is {0} bytes; at most {MAX_REASON_BYTES} are recorded")]
    ReasonTooLong(usize),
    #[error("entry {index} is not in the log (it holds {size} entries)")]
    NotInLog { index: u64, size: u64 },
    #[error(
        "entry {0} is a version-1 entry: its message is part of the hashed entry, so erasing it would break the tree; only version-2 logs commit to payloads beside the tree (docs/audit.md \"Entry versions\")"
    )]
    Version1(u64),
    #[error("entry {0} ({1}) has no payload to erase")]
    NoPayload(u64, String),
    #[error("entry {0}'s payloads are already erased")]
    AlreadyErased(u64),
    #[error("reading the log: {0}")]
    Read(String),
    #[error(transparent)]
    Audit(#[from] AuditError),
}

impl EraseError {
    /// Whether the erasure was refused for what was asked (not for the log's state).
    pub fn is_request_error(&self) -> bool {
        !matches!(self, EraseError::Read(_) | EraseError::Audit(_))
    }
}

impl Audit {
    /// Erases entry `index`'s payloads for `reason`, recording who (`caller`, an entry's caller
    /// JSON) asked, in a `payload_erased` entry appended in the same transaction. Returns the
    /// `payload_erased` entry.
    ///
    /// # Errors
    /// [`EraseError`]: no or an overlong reason, an index not in the log, a version-1 entry,
    /// an entry without payloads or already erased, or the log not taking entries.
    pub async fn erase(
        &self,
        index: u64,
        reason: &str,
        caller: Arc<str>,
    ) -> Result<Appended, EraseError> {
        let reason = reason.trim();
        if reason.is_empty() {
            return Err(EraseError::NoReason);
        }
        if reason.len() > MAX_REASON_BYTES {
            return Err(EraseError::ReasonTooLong(reason.len()));
        }
        // One erasure at a time: two erasing the same entry must not both pass the checks.
        let _one = self.erasing.lock().await;
        let size = self.head().size;
        if index >= size {
            return Err(EraseError::NotInLog { index, size });
        }
        let log = self.location.clone();
        let (endpoint, commitments) = tokio::task::spawn_blocking(move || {
            let reader = Reader::open(&log).map_err(|e| EraseError::Read(e.to_string()))?;
            let (_, bytes) = reader
                .entry(index)
                .map_err(|e| EraseError::Read(e.to_string()))?;
            let entry = tlog::Entry::decode(&bytes)
                .map_err(|e| EraseError::Read(format!("entry {index} cannot be decoded: {e}")))?;
            if entry.version == tlog::entry::V1 {
                return Err(EraseError::Version1(index));
            }
            if entry.commitments.is_empty() {
                return Err(EraseError::NoPayload(index, entry.kind.name().into()));
            }
            let stored = reader
                .payloads(index)
                .map_err(|e| EraseError::Read(e.to_string()))?;
            let pending = reader
                .erasure_pending(index)
                .map_err(|e| EraseError::Read(e.to_string()))?;
            if stored.is_empty() || pending {
                return Err(EraseError::AlreadyErased(index));
            }
            let commitments: Vec<_> = entry
                .commitments
                .iter()
                .map(|c| json!({"slot": c.slot, "length": c.length, "hash": c.hash.to_hex()}))
                .collect();
            Ok((entry.endpoint.to_string(), commitments))
        })
        .await
        .map_err(|e| EraseError::Read(e.to_string()))??;
        let detail = json!({
            "indices": [index],
            "commitments": commitments,
            "reason": reason,
        });
        let mut draft = Draft::gateway(Kind::PayloadErased, &endpoint, detail.to_string());
        draft.caller = caller;
        draft.erase = Some(Erase::Indices(vec![index]));
        let recorded = self.append(draft).await?;
        self.carry_out().await;
        Ok(recorded)
    }

    /// Signs a checkpoint now, so that the erasures just recorded are carried out (payloads are
    /// deleted only once their record is signed) without waiting for the next interval.
    async fn carry_out(&self) {
        if let Err(e) = self.checkpoint().await {
            tracing::warn!(
                "the erasure is recorded; its payloads are deleted once a checkpoint covers it ({e})"
            );
        }
    }

    /// Erases, in one recorded batch of at most `batch` entries, the payloads of entries made
    /// before `before_ns`. `None` when none is left.
    ///
    /// # Errors
    /// The log could not be read or is not taking entries.
    pub async fn erase_expired(
        &self,
        before_ns: u64,
        batch: u64,
        retention: Duration,
    ) -> Result<Option<(Appended, u64, u64)>, EraseError> {
        let _one = self.erasing.lock().await;
        let log = self.location.clone();
        let range = tokio::task::spawn_blocking(move || {
            Reader::open(&log)
                .and_then(|r| r.expired_range(before_ns, batch))
                .map_err(|e| EraseError::Read(e.to_string()))
        })
        .await
        .map_err(|e| EraseError::Read(e.to_string()))??;
        let Some((from, to)) = range else {
            return Ok(None);
        };
        let detail = json!({
            "from": from,
            "to": to,
            "before_ns": before_ns,
            "reason": format!(
                "retention: payloads older than {} ([audit] retention)",
                humantime::format_duration(retention)
            ),
        });
        let mut draft = Draft::gateway(Kind::PayloadErased, "", detail.to_string());
        draft.erase = Some(Erase::Range {
            from,
            to,
            before_ns,
        });
        let appended = self.append(draft).await?;
        self.carry_out().await;
        Ok(Some((appended, from, to)))
    }

    /// Starts retention: every `every`, the payloads older than `retention` are erased in
    /// batches (none when `[audit] retention` is not set).
    pub fn start_retention(
        self: &Arc<Self>,
        every: Duration,
        stop: CancellationToken,
    ) -> Option<tokio::task::JoinHandle<()>> {
        let retention = self.config.retention?;
        let audit = self.clone();
        Some(tokio::spawn(async move {
            loop {
                let before = now_ns()
                    .saturating_sub(u64::try_from(retention.as_nanos()).unwrap_or(u64::MAX));
                loop {
                    match audit
                        .erase_expired(before, RETENTION_BATCH, retention)
                        .await
                    {
                        Ok(Some((e, from, to))) => tracing::info!(
                            entry = e.index,
                            from,
                            to,
                            "retention erased the payloads of expired entries"
                        ),
                        Ok(None) => break,
                        Err(e) => {
                            tracing::error!("retention could not erase expired payloads: {e}");
                            break;
                        }
                    }
                    if stop.is_cancelled() {
                        return;
                    }
                }
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(every) => {}
                }
            }
        }))
    }
}
