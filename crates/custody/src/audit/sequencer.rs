//! The sequencer: the one thread that writes the log.
//!
//! It takes every job waiting, gives each entry its index, and commits them together. The
//! order of each round, and its points of no return:
//!
//! 1. Take the first job (blocking), then every job already queued, up to [`MAX_BATCH`].
//! 2. Encode each entry with its index, hash it, and append the hashes to a *copy* of the
//!    tree, collecting the interior nodes it completes.
//! 3. Write entries, nodes and the new tree state in one transaction, and commit (one fsync).
//!    — No return: after a successful commit the entries are durable.
//! 4. Replace the in-memory tree with the copy, publish the new head, acknowledge every entry.
//!
//! A failed commit acknowledges every entry of the round with an error (the relay then refuses
//! the calls they record) and re-reads the tree from the store, since a commit can fail after its
//! data reached the disk. In-memory state only ever changes after a commit succeeds.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

use tlog::compact::Node;
use tlog::{CompactRange, leaf_hash};
use tokio::sync::{mpsc, watch};

use super::{Appended, AuditError, Head, Job};
use crate::config::Durability;
use crate::store::{NODE_LEVEL, Row, Store, StoredCheckpoint};

/// The most entries committed together.
pub const MAX_BATCH: usize = 4096;

/// The plain checkpoints file (one JSON object per line) operators can ship to write-once
/// storage.
pub struct Files {
    checkpoints: PathBuf,
    durability: Durability,
}

impl Files {
    pub fn new(dir: &Path, durability: Durability) -> Self {
        Self {
            checkpoints: dir.join("checkpoints.jsonl"),
            durability,
        }
    }

    fn append_checkpoint(&self, cp: &StoredCheckpoint) -> std::io::Result<()> {
        let line =
            serde_json::json!({ "size": cp.size, "signed_ns": cp.signed_ns, "note": cp.note });
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&self.checkpoints)?;
        writeln!(f, "{line}")?;
        if self.durability == Durability::Fsync {
            f.sync_data()?;
        }
        Ok(())
    }
}

pub fn spawn<S: Store>(
    store: S,
    range: CompactRange,
    jobs: mpsc::Receiver<Job>,
    head: watch::Sender<Head>,
    files: Files,
) -> JoinHandle<()> {
    std::thread::Builder::new()
        .name("custody-sequencer".into())
        .spawn(move || run(store, range, jobs, head, files))
        .unwrap_or_else(|e| panic!("cannot start the sequencer thread: {e}"))
}

fn run<S: Store>(
    mut store: S,
    mut range: CompactRange,
    mut jobs: mpsc::Receiver<Job>,
    head: watch::Sender<Head>,
    files: Files,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut checkpoints = Vec::new();
    let mut stop = None;
    loop {
        // 1. Gather the round.
        let Some(first) = jobs.blocking_recv() else {
            return;
        };
        let mut next = Some(first);
        while let Some(job) = next.take() {
            match job {
                Job::Append(draft, reply) => batch.push((draft, reply)),
                Job::Checkpoint(cp, reply) => checkpoints.push((cp, reply)),
                Job::Stop(reply) => {
                    stop = Some(reply);
                    break;
                }
            }
            if batch.len() < MAX_BATCH {
                next = jobs.try_recv().ok();
            }
        }
        if !batch.is_empty() {
            range = commit(&mut store, range, &mut batch, &head);
        }
        for (cp, reply) in checkpoints.drain(..) {
            let stored = store
                .put_checkpoint(&cp)
                .map_err(|e| AuditError::Unavailable(e.to_string()))
                .and_then(|()| {
                    files.append_checkpoint(&cp).map_err(|e| {
                        AuditError::Unavailable(format!(
                            "couldn't append to the checkpoints file: {e}"
                        ))
                    })
                });
            if let Err(e) = &stored {
                tracing::error!("couldn't store checkpoint {}: {e}", cp.size);
            }
            let _ = reply.send(stored);
        }
        if let Some(reply) = stop.take() {
            let _ = reply.send(());
            return;
        }
    }
}

/// Steps 2–4 for one round; returns the tree to continue from.
fn commit<S: Store>(
    store: &mut S,
    range: CompactRange,
    batch: &mut Vec<(
        super::Draft,
        tokio::sync::oneshot::Sender<Result<Appended, AuditError>>,
    )>,
    head: &watch::Sender<Head>,
) -> CompactRange {
    // 2. Index, encode, hash, grow a copy of the tree.
    let first = range.size();
    let mut next = range.clone();
    let mut nodes: Vec<Node> = Vec::new();
    let mut rows = Vec::with_capacity(batch.len());
    for (k, (draft, _)) in batch.iter().enumerate() {
        let data = draft.encode(first + k as u64);
        let leaf = leaf_hash(&data);
        next.append(leaf, |n| {
            if n.level >= NODE_LEVEL {
                nodes.push(n);
            }
        });
        rows.push(Row {
            leaf,
            data,
            mark: draft.mark.clone(),
        });
    }
    // 3. One transaction, one fsync.
    match store.append(first, &rows, &nodes, &next) {
        Ok(()) => {
            // 4. Only now does the in-memory state move.
            let _ = head.send(Head {
                size: next.size(),
                root: next.root(),
            });
            for (k, ((_, reply), row)) in batch.drain(..).zip(&rows).enumerate() {
                let _ = reply.send(Ok(Appended {
                    index: first + k as u64,
                    leaf: row.leaf,
                }));
            }
            next
        }
        Err(e) => {
            tracing::error!(
                entries = batch.len(),
                first,
                "couldn't make audit entries durable: {e}"
            );
            let why = e.to_string();
            for (_, reply) in batch.drain(..) {
                let _ = reply.send(Err(AuditError::Unavailable(why.clone())));
            }
            // The commit may have reached the disk: continue from what the store says.
            match store.state() {
                Ok(stored) => {
                    if stored.size() != range.size() {
                        tracing::warn!(
                            "the failed batch was persisted anyway; the log continues after entry {}",
                            stored.size()
                        );
                        let _ = head.send(Head {
                            size: stored.size(),
                            root: stored.root(),
                        });
                    }
                    stored
                }
                Err(e) => {
                    tracing::error!("couldn't re-read the tree state: {e}");
                    range
                }
            }
        }
    }
}
