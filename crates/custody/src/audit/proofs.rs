//! Proofs the running log hands out: inclusion receipts and consistency proofs, each read
//! from a reader of its own off the runtime and checked before it leaves.

use tlog::Hash;

use super::{Audit, AuditError};
use crate::store::{Lease, LogReader};

impl Audit {
    /// A tlog-proof for entry `index` in the latest published checkpoint, or (`size`) in the
    /// published checkpoint of that size, with the entry's leaf hash in its `extra` line.
    ///
    /// # Errors
    /// The entry is not checkpointed yet, is not in the log, no checkpoint has that size, or
    /// an integrity alarm stopped the log.
    pub async fn proof(&self, index: u64, size: Option<u64>) -> Result<String, AuditError> {
        if let Some(why) = self.halted() {
            return Err(AuditError::Unavailable(why));
        }
        let Some(latest) = self.latest_checkpoint() else {
            return Err(AuditError::NotYetCheckpointed { index, size: 0 });
        };
        let readers = self.readers.clone();
        let health = self.health.clone();
        let verifier = self.verifier.clone();
        tokio::task::spawn_blocking(move || {
            let reader = readers
                .take()
                .map_err(|e| AuditError::Proof(e.to_string()))?;
            let cp = match size {
                None => latest,
                Some(s) if s == latest.size => latest,
                Some(s) if s > latest.size => {
                    return Err(AuditError::Proof(format!(
                        "no checkpoint of size {s} is published yet (the latest covers {})",
                        latest.size
                    )));
                }
                Some(s) => reader
                    .checkpoint_at(s)
                    .map_err(|e| failed(&reader, e))?
                    .ok_or_else(|| {
                        AuditError::Proof(format!("the log signed no checkpoint of size {s}"))
                    })?,
            };
            if index >= cp.size {
                return Err(AuditError::NotYetCheckpointed {
                    index,
                    size: cp.size,
                });
            }
            let (leaf, _) = reader.entry(index).map_err(|e| failed(&reader, e))?;
            let path = tlog::proof::inclusion_proof(&*reader, index, cp.size)
                .map_err(|e| failed(&reader, e))?;
            // A proof read from a changed database would not verify: check it before handing
            // it out, and treat a failure as what it is.
            let (checkpoint, _) = tlog::Checkpoint::open(cp.note.as_bytes(), &verifier)
                .map_err(|e| AuditError::Proof(e.to_string()))?;
            if let Err(e) =
                tlog::proof::verify_inclusion(&leaf, index, cp.size, &path, &checkpoint.root)
            {
                let why = format!(
                    "the stored proof of entry {index} does not verify against checkpoint {} ({e}): the database was changed",
                    cp.size
                );
                tracing::error!("{why}");
                health.alarm(why.clone(), false);
                return Err(AuditError::Proof(why));
            }
            Ok(tlog::InclusionReceipt {
                extra: Some(leaf.0.to_vec()),
                index,
                path,
                checkpoint: cp.note,
            }
            .encode())
        })
        .await
        .map_err(|e| AuditError::Proof(e.to_string()))?
    }

    /// A consistency proof (RFC 9162 §2.1.4) from the tree of `from` entries to the tree of
    /// `to`, where `to` is at most the latest published checkpoint's size.
    ///
    /// # Errors
    /// Sizes out of order or past the latest checkpoint, a stopped log, or the store.
    pub async fn consistency(&self, from: u64, to: u64) -> Result<Vec<Hash>, AuditError> {
        if let Some(why) = self.halted() {
            return Err(AuditError::Unavailable(why));
        }
        let latest = self.latest_checkpoint().map_or(0, |c| c.size);
        if from > to || to > latest {
            return Err(AuditError::Proof(format!(
                "a consistency proof needs from <= to <= {latest} (the latest published checkpoint's size); got from={from}, to={to}"
            )));
        }
        let readers = self.readers.clone();
        tokio::task::spawn_blocking(move || {
            let reader = readers
                .take()
                .map_err(|e| AuditError::Proof(e.to_string()))?;
            tlog::proof::consistency_proof(&*reader, from, to).map_err(|e| failed(&reader, e))
        })
        .await
        .map_err(|e| AuditError::Proof(e.to_string()))?
    }
}

/// A read that failed: the reader is not kept (a connection the database ended is not used
/// again), and the failure becomes the proof's error.
fn failed(reader: &Lease<'_>, e: impl std::fmt::Display) -> AuditError {
    reader.discard();
    AuditError::Proof(e.to_string())
}
