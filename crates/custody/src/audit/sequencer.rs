//! The sequencer: the one thread that writes the log.
//!
//! It takes every job waiting, gives each entry its index, and commits them together. The
//! order of each round, and its points of no return:
//!
//! 1. Take the first job (blocking), then every job already queued, up to [`MAX_BATCH`].
//! 2. Write each entry's index into its bytes (encoded, and its payloads committed to, by
//!    the task that appended it: that work is parallel), hash it, and append the hashes to a
//!    *copy* of the tree, collecting the interior nodes it completes.
//! 3. Write entries, nodes and the new tree state in one transaction, and commit (one fsync).
//!    — No return: after a successful commit the entries are durable.
//! 4. Replace the in-memory tree with the copy, publish the new head, acknowledge every entry.
//!
//! A failed commit acknowledges every entry of the round with an error (the relay then refuses
//! the calls they record) and re-reads the tree from the store, since a commit can fail after its
//! data reached the disk. In-memory state only ever changes after a commit succeeds.

mod failures;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;

use tlog::compact::Node;
use tlog::{CompactRange, Hash, Signer, leaf_hash};
use tokio::sync::{mpsc, watch};

use super::health::Health;
use super::{Appended, AuditError, Head, Job, Signed, now_ns};
use crate::store::{NODE_LEVEL, Row, Store, StoredCheckpoint};

/// The most entries committed together.
pub const MAX_BATCH: usize = 4096;

/// What the sequencer thread owns.
pub struct Sequencer<S> {
    pub store: S,
    /// The tree as committed. It only ever grows by leaves this thread hashed itself.
    pub range: CompactRange,
    /// The size of the latest checkpoint signed (by this run or found at start).
    pub signed: Option<u64>,
    pub signer: Arc<Signer>,
    pub health: Arc<Health>,
    pub head: watch::Sender<Head>,
    /// Commits, batches and entries, for `/metrics`.
    pub metrics: Arc<crate::metrics::AuditMetrics>,
}

/// Signs a checkpoint of `range`.
pub fn sign_range(signer: &Signer, range: &CompactRange) -> Signed {
    let note = tlog::Checkpoint {
        origin: signer.name().to_string(),
        size: range.size(),
        root: range.root(),
        extensions: Vec::new(),
    }
    .sign(signer)
    .encode();
    Signed {
        checkpoint: StoredCheckpoint {
            size: range.size(),
            note,
            signed_ns: now_ns(),
        },
        range: range.clone(),
    }
}

/// A round's appends, each with where its answer goes.
type Batch = Vec<(
    super::draft::Sealed,
    tokio::sync::oneshot::Sender<Result<Appended, AuditError>>,
)>;

pub fn spawn<S: Store>(seq: Sequencer<S>, jobs: mpsc::Receiver<Job>) -> JoinHandle<()> {
    std::thread::Builder::new()
        .name("custody-sequencer".into())
        .spawn(move || run(seq, jobs))
        .unwrap_or_else(|e| panic!("cannot start the sequencer thread: {e}"))
}

fn run<S: Store>(mut seq: Sequencer<S>, mut jobs: mpsc::Receiver<Job>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut failures = failures::StoreFailures::default();
    let mut after = Vec::new();
    let mut stop = None;
    loop {
        // 1. Gather the round.
        let Some(first) = jobs.blocking_recv() else {
            return;
        };
        let mut next = Some(first);
        while let Some(job) = next.take() {
            match job {
                Job::Append(sealed, reply) => batch.push((*sealed, reply)),
                Job::Stop(reply) => {
                    stop = Some(reply);
                    break;
                }
                other => after.push(other),
            }
            if batch.len() < MAX_BATCH {
                next = jobs.try_recv().ok();
            }
        }
        if !batch.is_empty() {
            // A shared store's round may wait for its lock: appends that arrive meanwhile join
            // it once the lock is taken (one round, one commit, for all of them).
            let mut more = |batch: &mut Vec<_>| {
                while batch.len() < MAX_BATCH && stop.is_none() {
                    match jobs.try_recv() {
                        Ok(Job::Append(sealed, reply)) => batch.push((*sealed, reply)),
                        Ok(Job::Stop(reply)) => stop = Some(reply),
                        Ok(other) => after.push(other),
                        Err(_) => break,
                    }
                }
            };
            seq.commit(&mut batch, &mut failures, &mut more);
        }
        // Signing comes after the round's commit, so a checkpoint covers every entry
        // acknowledged before it was asked for.
        for job in after.drain(..) {
            match job {
                Job::Sign {
                    published,
                    sign,
                    reply,
                } => {
                    let signed = seq
                        .catch_up()
                        .and_then(|()| if sign { seq.sign(published) } else { Ok(None) });
                    let _ = reply.send(signed);
                }
                Job::CompleteErasures(covered, reply) => {
                    let done = seq
                        .store
                        .complete_erasures(covered)
                        .map_err(|e| AuditError::Unavailable(e.to_string()));
                    let _ = reply.send(done);
                }
                Job::Store(cp, reply) => {
                    let stored = seq
                        .store
                        .put_checkpoint(&cp)
                        .map_err(|e| AuditError::Unavailable(e.to_string()));
                    let _ = reply.send(stored);
                }
                Job::Latest(reply) => {
                    let latest = seq
                        .store
                        .latest_checkpoint()
                        .map_err(|e| AuditError::Unavailable(e.to_string()));
                    let _ = reply.send(latest);
                }
                Job::Probe(reply) => {
                    // A cheap read through the writer's own connection: the store answers.
                    let answered = seq
                        .store
                        .latest_checkpoint()
                        .map(|_| ())
                        .map_err(|e| e.to_string());
                    let _ = reply.send(answered);
                }
                Job::Append(..) | Job::Stop(_) => {
                    unreachable!("appends and stops are not deferred")
                }
            }
        }
        if let Some(reply) = stop.take() {
            let _ = reply.send(());
            return;
        }
    }
}

impl<S: Store> Sequencer<S> {
    /// Signs the tree as committed, unless `published` already covers it. The tree only grows
    /// by this thread's own appends, so a checkpoint signed here extends every one signed
    /// before; the checks below are tripwires for that invariant, and a tripped one halts the
    /// log rather than sign.
    fn sign(&mut self, published: Option<u64>) -> Result<Option<Signed>, AuditError> {
        if self.health.halted() {
            return Err(AuditError::Unavailable(
                "signing is halted by an integrity alarm".into(),
            ));
        }
        let size = self.range.size();
        if let Some(signed) = self.signed.filter(|s| *s > size) {
            let why = format!(
                "the tree in memory (size {size}) is smaller than a checkpoint already signed (size {signed})"
            );
            self.health.alarm(why.clone(), true);
            return Err(AuditError::Unavailable(why));
        }
        if published.is_some_and(|p| p >= size) {
            return Ok(None);
        }
        let signed = sign_range(&self.signer, &self.range);
        self.signed = Some(size);
        Ok(Some(signed))
    }

    /// For a log other replicas append to: integrates what they committed past this tree,
    /// under the store's commit lock, and checks the result against the tree the store holds
    /// (a difference halts the log: the database changed under it).
    fn catch_up(&mut self) -> Result<(), AuditError> {
        if !self.store.shared() {
            return Ok(());
        }
        let unavailable = |e: crate::store::StoreError| AuditError::Unavailable(e.to_string());
        let foreign = self.store.begin_round(&self.range).map_err(unavailable)?;
        let mut next = self.range.clone();
        for leaf in foreign {
            next.append(leaf, |_| {});
        }
        if let Err(e) = self.store.check_round(&next) {
            let why = e.to_string();
            tracing::error!("{why}");
            self.health.alarm(why.clone(), true);
            return Err(AuditError::Unavailable(why));
        }
        let stored = self.store.state();
        self.store.end_round();
        let stored = stored.map_err(unavailable)?;
        if stored.size() > next.size() {
            // Only when the round lost its lock (its connection ended and was made again):
            // others moved on; the next round integrates them.
            return Err(AuditError::Unavailable(
                "the shared log moved on while this replica read it; reading it again at the next round".into(),
            ));
        }
        if stored.size() != next.size() || stored.root() != next.root() {
            let why = format!(
                "the shared log's entries make a tree of size {} (root {}) but its head says size {} (root {})",
                next.size(),
                short(&next.root()),
                stored.size(),
                short(&stored.root())
            );
            tracing::error!("{why}");
            self.health.alarm(why.clone(), true);
            return Err(AuditError::Unavailable(why));
        }
        if next.size() > self.range.size() {
            self.publish(&next);
            self.range = next;
        }
        Ok(())
    }

    /// Steps 2–4 for one round.
    fn commit(
        &mut self,
        batch: &mut Batch,
        failures: &mut failures::StoreFailures,
        more: &mut dyn FnMut(&mut Batch),
    ) {
        // A halted log takes nothing, whatever was queued before the alarm.
        if let Some(why) = self.health.refusal().filter(|_| self.health.halted()) {
            self.metrics
                .refused
                .fetch_add(batch.len() as u64, Ordering::Relaxed);
            for (_, reply) in batch.drain(..) {
                let _ = reply.send(Err(AuditError::Unavailable(why.clone())));
            }
            return;
        }
        // 2. Index, encode, hash, grow a copy of the tree: after the entries other writers of
        //    a shared store committed since this tree (none for a store of its own).
        let mut next = self.range.clone();
        let begun = self.store.begin_round(&self.range).map(|foreign| {
            for leaf in foreign {
                next.append(leaf, |_| {});
            }
        });
        // A shared store: the tree of what others committed must be the tree its head says.
        let begun = begun.and_then(|()| self.store.check_round(&next));
        if begun.is_ok() && self.store.shared() {
            more(batch);
        }
        let first = next.size();
        let mut nodes: Vec<Node> = Vec::new();
        let mut rows = Vec::with_capacity(batch.len());
        for (k, (sealed, _)) in batch.iter_mut().enumerate() {
            // Encoded and committed to by the appender; only the index and the leaf hash
            // depend on the order.
            let mut data = std::mem::take(&mut sealed.data);
            let indexed = tlog::entry::set_index(&mut data, first + k as u64);
            debug_assert!(
                indexed,
                "an encoded entry is longer than its version and index"
            );
            let leaf = leaf_hash(&data);
            next.append(leaf, |n| {
                if n.level >= NODE_LEVEL {
                    nodes.push(n);
                }
            });
            rows.push(Row {
                leaf,
                data,
                mark: sealed.mark.take(),
                payloads: std::mem::take(&mut sealed.payloads),
                time_ns: sealed.time_ns,
                erase: sealed.erase.take(),
            });
        }
        // 3. One transaction, one fsync.
        let started = std::time::Instant::now();
        let committed = begun.and_then(|()| self.store.append(first, &rows, &nodes, &next));
        let took = started.elapsed();
        let m = &self.metrics;
        match committed {
            Ok(()) => {
                if let Some(r) = failures.succeeded(std::time::Instant::now()) {
                    r.log();
                }
                self.health.commit_succeeded();
                let bytes: usize = rows
                    .iter()
                    .map(|r| r.data.len() + r.payloads.iter().map(|p| p.data.len()).sum::<usize>())
                    .sum();
                m.appended.fetch_add(rows.len() as u64, Ordering::Relaxed);
                m.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
                m.batches.observe(0, rows.len() as u64);
                m.commits.observe_duration(0, took);
                // 4. Only now does the in-memory state move.
                self.publish(&next);
                for (k, ((_, reply), row)) in batch.drain(..).zip(&rows).enumerate() {
                    let _ = reply.send(Ok(Appended {
                        index: first + k as u64,
                        leaf: row.leaf,
                    }));
                }
                self.range = next;
            }
            Err(e) => {
                // One line per change of state, not per batch (a full disk fails hundreds a
                // second).
                if let Some(r) =
                    failures.failed(std::time::Instant::now(), batch.len(), &e.to_string())
                {
                    r.log();
                }
                m.failed.fetch_add(rows.len() as u64, Ordering::Relaxed);
                m.commits.observe_duration(0, took);
                let why = e.to_string();
                self.health.commit_failed(&why);
                // What the store holds now is settled before anyone hears of the failure.
                self.recover(next);
                for (_, reply) in batch.drain(..) {
                    let _ = reply.send(Err(AuditError::Unavailable(why.clone())));
                }
            }
        }
    }

    fn publish(&self, range: &CompactRange) {
        let _ = self.head.send(Head {
            size: range.size(),
            root: range.root(),
        });
    }

    /// After a failed commit: the batch may have reached the disk anyway. The store may only be
    /// at the tree before the batch or the tree with it; anything else means the database
    /// changed under the log, which halts it.
    fn recover(&mut self, next: CompactRange) {
        if self.store.shared() {
            // Other replicas move the stored tree too: what this one integrates from the
            // store, checked against the stored head, is the tree now (the failed batch in it
            // or not).
            if let Err(e) = self.catch_up() {
                tracing::debug!("couldn't bring the tree up to the shared log: {e}");
            }
            return;
        }
        let stored = match self.store.state() {
            Ok(stored) => stored,
            Err(e) => {
                // Follows a failed commit, which is reported (once per state change) above.
                tracing::debug!("couldn't re-read the tree state: {e}");
                return;
            }
        };
        let same =
            |a: &CompactRange, b: &CompactRange| a.size() == b.size() && a.root() == b.root();
        if same(&stored, &self.range) {
            return;
        }
        if same(&stored, &next) {
            tracing::warn!(
                "the failed batch was persisted anyway; the log continues after entry {}",
                next.size()
            );
            self.publish(&next);
            self.range = next;
            return;
        }
        let why = format!(
            "after a failed commit the database holds a tree of size {} (root {}) that is neither the tree before the batch (size {}, root {}) nor after it (size {}, root {})",
            stored.size(),
            short(&stored.root()),
            self.range.size(),
            short(&self.range.root()),
            next.size(),
            short(&next.root())
        );
        tracing::error!("{why}");
        self.health.alarm(why, true);
    }
}

fn short(h: &Hash) -> String {
    h.to_hex()[..16].to_string()
}
