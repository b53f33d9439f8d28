//! Verifying a whole log from its entries alone: every leaf hash recomputed, the tree rebuilt,
//! every signed checkpoint matched against it, every entry decoded and every answer paired with
//! its request. The first problem stops the check and names the index where it was found.

use std::collections::{HashMap, HashSet};

use crate::checkpoint::Checkpoint;
use crate::compact::CompactRange;
use crate::entry::{Direction, Entry, Kind};
use crate::hash::{Hash, leaf_hash};
use crate::note::Verifier;

/// What is wrong, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{message}", index.map(|i| format!("entry {i}: ")).unwrap_or_default())]
pub struct Problem {
    /// The first entry found bad, when the problem is about an entry.
    pub index: Option<u64>,
    pub message: String,
}

fn problem(index: impl Into<Option<u64>>, message: impl Into<String>) -> Problem {
    Problem {
        index: index.into(),
        message: message.into(),
    }
}

/// A checkpoint to match, and where it came from.
#[derive(Debug, Clone)]
struct Expected {
    checkpoint: Checkpoint,
    source: String,
}

/// What a successful check found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub entries: u64,
    pub root: Hash,
    pub checkpoints: u64,
    pub latest_checkpoint: Option<u64>,
    pub trusted: Vec<u64>,
    pub kinds: Vec<(&'static str, u64)>,
    pub first_time_ns: Option<u64>,
    pub last_time_ns: Option<u64>,
    pub unanswered_requests: u64,
    /// Version-2 entries whose payloads were checked against their commitments.
    pub payloads_checked: u64,
    /// Entries whose payloads were erased, each erasure recorded by a `payload_erased` entry.
    pub erased: Vec<u64>,
}

/// A payload as the store keeps it beside its entry.
#[derive(Debug, Clone, Copy)]
pub struct StoredPayload<'a> {
    pub slot: u8,
    pub opening: &'a [u8; 32],
    pub data: &'a [u8],
}

/// The request an answer must match.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Open {
    direction: Direction,
    endpoint: String,
    session: String,
    id: String,
}

/// A log check in progress: feed checkpoints, then entries in index order, then finish.
pub struct LogCheck {
    verifier: Verifier,
    range: CompactRange,
    expected: Vec<Expected>,
    next_expected: usize,
    last_good: u64,
    open: HashMap<u64, Open>,
    answered: HashSet<u64>,
    kinds: HashMap<Kind, u64>,
    /// Leaf hashes that entries must have (from receipts the caller holds), by index.
    leaves: HashMap<u64, (Hash, String)>,
    /// Whether payloads are fed with their entries (a check from tiles has none).
    payloads: bool,
    /// Entries whose payloads are missing, not (yet) explained by a `payload_erased` entry:
    /// the slot, and the entry's own (signed) time.
    missing: std::collections::BTreeMap<u64, (u8, u64)>,
    /// Missing payloads explained so far, with the `payload_erased` entry that explains each:
    /// that entry must be covered by a signed checkpoint (the gateway deletes a payload only
    /// once its erasure is signed), or anyone who can append to the stored log could explain
    /// away a deletion.
    explained: Vec<(u64, u64)>,
    /// The entry version seen so far (a log never goes back to an older one).
    version: u8,
    /// Erasures recorded so far: listed indices, and index ranges (retention).
    erasures: (HashSet<u64>, Vec<(u64, u64)>),
    summary: Summary,
}

impl LogCheck {
    pub fn new(verifier: Verifier) -> Self {
        Self {
            verifier,
            range: CompactRange::new(),
            expected: Vec::new(),
            next_expected: 0,
            last_good: 0,
            open: HashMap::new(),
            answered: HashSet::new(),
            kinds: HashMap::new(),
            leaves: HashMap::new(),
            payloads: true,
            missing: std::collections::BTreeMap::new(),
            explained: Vec::new(),
            version: 0,
            erasures: (HashSet::new(), Vec::new()),
            summary: Summary::default(),
        }
    }

    /// A check that is not given payloads (from tiles, which hold only the entries' headers):
    /// version-2 entries are checked without them.
    pub fn without_payloads(mut self) -> Self {
        self.payloads = false;
        self
    }

    /// Adds a signed checkpoint the log must match; `source` names it in problems (e.g.
    /// `"checkpoint 12"` or `"trusted checkpoint trusted.txt"`). Call before the first entry.
    ///
    /// # Errors
    /// A checkpoint that does not parse or whose signature does not verify.
    pub fn add_checkpoint(
        &mut self,
        note: &[u8],
        source: &str,
        trusted: bool,
    ) -> Result<Checkpoint, Problem> {
        let (checkpoint, _) = Checkpoint::open(note, &self.verifier).map_err(|e| {
            problem(
                None,
                format!("{source} is not a valid checkpoint of this log: {e}"),
            )
        })?;
        if let Some(other) = self
            .expected
            .iter()
            .find(|e| e.checkpoint.size == checkpoint.size && e.checkpoint.root != checkpoint.root)
        {
            return Err(problem(
                None,
                format!(
                    "{source} and {} both sign size {} with different roots: the log was forked",
                    other.source, checkpoint.size
                ),
            ));
        }
        if trusted {
            self.summary.trusted.push(checkpoint.size);
        } else {
            self.summary.checkpoints += 1;
            self.summary.latest_checkpoint =
                self.summary.latest_checkpoint.max(Some(checkpoint.size));
        }
        self.expected.push(Expected {
            checkpoint: checkpoint.clone(),
            source: source.to_string(),
        });
        self.expected.sort_by_key(|e| e.checkpoint.size);
        Ok(checkpoint)
    }

    /// Adds a leaf hash the entry at `index` must have (from a receipt or proof the caller
    /// holds, verified by them against a checkpoint); `source` names it in problems. Call
    /// before the entry is fed.
    pub fn expect_leaf(&mut self, index: u64, leaf: Hash, source: &str) {
        self.leaves.insert(index, (leaf, source.to_string()));
    }

    /// Feeds the entry stored at `stored_index`, with the leaf hash stored beside it, if the
    /// store keeps one.
    ///
    /// # Errors
    /// The first [`Problem`] with this entry or with a checkpoint it completes.
    pub fn push(
        &mut self,
        stored_index: u64,
        bytes: &[u8],
        stored_leaf: Option<Hash>,
    ) -> Result<(), Problem> {
        self.push_with(stored_index, bytes, stored_leaf, &[])
    }

    /// [`LogCheck::push`], with the payloads the store keeps beside the entry: each must open
    /// its commitment; a missing one must be explained by a later `payload_erased` entry.
    ///
    /// # Errors
    /// The first [`Problem`] with this entry, its payloads, or a checkpoint it completes.
    pub fn push_with(
        &mut self,
        stored_index: u64,
        bytes: &[u8],
        stored_leaf: Option<Hash>,
        payloads: &[StoredPayload<'_>],
    ) -> Result<(), Problem> {
        let i = self.range.size();
        if i == 0 {
            // Checkpoints of the empty tree (a new log signs one at once).
            self.match_checkpoints()?;
        }
        if stored_index != i {
            return Err(problem(
                i,
                format!("missing: the next stored entry is {stored_index} (entries were deleted)"),
            ));
        }
        let leaf = leaf_hash(bytes);
        if stored_leaf.is_some_and(|s| s != leaf) {
            return Err(problem(
                i,
                "its bytes do not hash to the leaf hash stored with it: the entry was changed after it was written",
            ));
        }
        if let Some((want, source)) = self.leaves.remove(&i)
            && want != leaf
        {
            return Err(problem(
                i,
                format!("its leaf hash is {leaf} but {source} holds {want}: the entry was changed"),
            ));
        }
        let entry = Entry::decode(bytes)
            .map_err(|e| problem(i, format!("cannot be decoded ({e}): the entry was changed")))?;
        if entry.version < self.version {
            return Err(problem(
                i,
                format!(
                    "it is a version-{} entry after version-{} entries: a log keeps its entry version, so the log's version was changed",
                    entry.version, self.version
                ),
            ));
        }
        self.version = entry.version;
        if entry.kind == Kind::Predecessor && i != 0 {
            return Err(problem(
                i,
                "a predecessor entry may only be the first entry of a log",
            ));
        }
        if entry.index != i {
            return Err(problem(
                i,
                format!(
                    "it is entry {} of the log, stored at position {i}: entries were deleted, inserted or reordered",
                    entry.index
                ),
            ));
        }
        self.payloads(i, &entry, payloads)?;
        self.pair(i, &entry)?;
        *self.kinds.entry(entry.kind).or_default() += 1;
        self.summary.first_time_ns.get_or_insert(entry.time_ns);
        self.summary.last_time_ns = Some(entry.time_ns);
        self.range.append(leaf, |_| {});
        self.match_checkpoints()
    }

    fn payloads(
        &mut self,
        i: u64,
        e: &Entry<'_>,
        payloads: &[StoredPayload<'_>],
    ) -> Result<(), Problem> {
        if e.kind == Kind::PayloadErased {
            self.erased(i, e)?;
        }
        if !self.payloads {
            return Ok(());
        }
        for p in payloads {
            if !e.commitments.iter().any(|c| c.slot == p.slot) {
                return Err(problem(
                    i,
                    format!(
                        "a payload (slot {}) is stored for it, but it commits to none there: one was added",
                        p.slot
                    ),
                ));
            }
        }
        if e.commitments.is_empty() {
            return Ok(());
        }
        self.summary.payloads_checked += 1;
        for c in &e.commitments {
            match payloads.iter().find(|p| p.slot == c.slot) {
                Some(p) if crate::payload::opens(c, p.opening, p.data) => {}
                Some(_) => {
                    return Err(problem(
                        i,
                        format!(
                            "its payload (slot {}) does not open its commitment: the payload was changed after it was written",
                            c.slot
                        ),
                    ));
                }
                None => {
                    self.missing.insert(i, (c.slot, e.time_ns));
                }
            }
        }
        Ok(())
    }

    /// A `payload_erased` entry: the erasures it records, which must name earlier entries.
    fn erased(&mut self, i: u64, e: &Entry<'_>) -> Result<(), Problem> {
        let detail: serde_json::Value = serde_json::from_str(&e.detail).unwrap_or_default();
        let earlier = |x: u64| -> Result<u64, Problem> {
            if x >= i {
                return Err(problem(
                    i,
                    format!("it records the erasure of entry {x}, which is not earlier in the log"),
                ));
            }
            Ok(x)
        };
        if let Some(list) = detail.get("indices").and_then(serde_json::Value::as_array) {
            for x in list.iter().filter_map(serde_json::Value::as_u64) {
                let x = earlier(x)?;
                self.erasures.0.insert(x);
                if self.missing.remove(&x).is_some() {
                    self.explained.push((x, i));
                }
            }
        }
        if let (Some(from), Some(to)) = (
            detail.get("from").and_then(serde_json::Value::as_u64),
            detail.get("to").and_then(serde_json::Value::as_u64),
        ) {
            if from >= to {
                return Err(problem(
                    i,
                    format!("it records the erasure of entries {from}..{to}, an empty range"),
                ));
            }
            earlier(to - 1)?;
            // Retention erases what was made before a time: a payload of a later entry in
            // the range was not erased by it, whatever the range says.
            let Some(before) = detail.get("before_ns").and_then(serde_json::Value::as_u64) else {
                return Err(problem(
                    i,
                    "it records a range erasure without the time (before_ns) it erased up to",
                ));
            };
            self.erasures.1.push((from, to));
            let gone: Vec<(u64, u64)> = self
                .missing
                .range(from..to)
                .map(|(k, (_, t))| (*k, *t))
                .collect();
            for (x, time) in gone {
                if time >= before {
                    return Err(problem(
                        x,
                        format!(
                            "its payload is missing; entry {i} erased the payloads of entries {from}..{to} made before {before}, and this one was made at {time}: it was deleted"
                        ),
                    ));
                }
                self.missing.remove(&x);
                self.erasures.0.insert(x);
                self.explained.push((x, i));
            }
        }
        Ok(())
    }

    fn pair(&mut self, i: u64, e: &Entry<'_>) -> Result<(), Problem> {
        match e.kind {
            Kind::Request => {
                self.open.insert(
                    i,
                    Open {
                        direction: e.direction,
                        endpoint: e.endpoint.to_string(),
                        session: e.session.to_string(),
                        id: e.id.to_string(),
                    },
                );
            }
            kind if kind.answers() => {
                let Some(r) = e.request else {
                    return Ok(());
                };
                if r >= i {
                    return Err(problem(
                        i,
                        format!("it answers request {r}, which is not earlier in the log"),
                    ));
                }
                let Some(open) = self.open.remove(&r) else {
                    let why = if self.answered.contains(&r) {
                        "was already answered"
                    } else {
                        "is not a request"
                    };
                    return Err(problem(i, format!("it answers entry {r}, which {why}")));
                };
                let opposite =
                    open.direction != e.direction || open.direction == Direction::Gateway;
                if open.endpoint != e.endpoint
                    || open.session != e.session
                    || open.id != e.id
                    || !opposite
                {
                    return Err(problem(
                        i,
                        format!(
                            "it answers request {r} but does not match it (endpoint {:?}/{:?}, session {:?}/{:?}, id {}/{})",
                            e.endpoint, open.endpoint, e.session, open.session, e.id, open.id
                        ),
                    ));
                }
                self.answered.insert(r);
            }
            kind if kind.is_approval() => {
                if let Some(r) = e.request
                    && r >= i
                {
                    return Err(problem(
                        i,
                        format!("it is about request {r}, which is not earlier in the log"),
                    ));
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn match_checkpoints(&mut self) -> Result<(), Problem> {
        let size = self.range.size();
        while let Some(exp) = self.expected.get(self.next_expected) {
            if exp.checkpoint.size != size {
                break;
            }
            if exp.checkpoint.root != self.range.root() {
                let from = self.last_good;
                return Err(problem(
                    from,
                    format!(
                        "the entries from {from} to {} do not hash to the root signed by {}: one of them was changed, removed, added or reordered",
                        size - 1,
                        exp.source
                    ),
                ));
            }
            self.last_good = size;
            self.next_expected += 1;
        }
        Ok(())
    }

    /// Ends the check.
    ///
    /// # Errors
    /// A checkpoint covers more entries than the log holds (the log was truncated), or an
    /// empty log does not match a checkpoint of size 0.
    pub fn finish(mut self) -> Result<Summary, Problem> {
        self.match_checkpoints()?;
        let size = self.range.size();
        if let Some((index, (_, source))) = self.leaves.iter().min_by_key(|(i, _)| **i) {
            return Err(problem(
                size,
                format!(
                    "missing: the log ends after {size} entries but {source} holds entry {index}"
                ),
            ));
        }
        if let Some(exp) = self.expected.get(self.next_expected) {
            return Err(problem(
                size,
                format!(
                    "missing: the log ends after {size} entries but {} covers {}: the tail was removed",
                    exp.source, exp.checkpoint.size
                ),
            ));
        }
        if let Some((index, by)) = self
            .explained
            .iter()
            .filter(|(_, by)| *by >= self.last_good)
            .min()
        {
            return Err(problem(
                *index,
                format!(
                    "its payload is missing, and the payload_erased entry {by} that records its erasure is not covered by a signed checkpoint (the latest matched covers {}): the gateway erases only once the record is signed, so it was deleted (if the gateway is running, check again after its next checkpoint)",
                    self.last_good
                ),
            ));
        }
        if let Some((index, (slot, _))) = self.missing.iter().next() {
            return Err(problem(
                *index,
                format!(
                    "its payload (slot {slot}) is missing, and no payload_erased entry records its erasure: it was deleted"
                ),
            ));
        }
        let mut erased: Vec<u64> = self.erasures.0.iter().copied().collect();
        erased.sort_unstable();
        self.summary.erased = erased;
        let mut kinds: Vec<(&'static str, u64)> =
            self.kinds.iter().map(|(k, n)| (k.name(), *n)).collect();
        kinds.sort();
        Ok(Summary {
            entries: size,
            root: self.range.root(),
            kinds,
            unanswered_requests: self.open.len() as u64,
            ..self.summary
        })
    }
}
