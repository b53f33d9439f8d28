//! What a start trusts: the latest checkpoint the log signed, wherever it survives, and a tree
//! recomputed from what is stored rather than read from stored interior nodes.
//!
//! The order, and why each step:
//!
//! 1. Gather the latest checkpoint of each place one is kept: `log.head`, the last line of
//!    `checkpoints.jsonl`, the database's `checkpoints` table. Each must verify with the log's
//!    key (an attacker who can write the directory can delete or replace them, not forge them);
//!    two that sign the same size with different roots are a fork. The largest is the one the
//!    store must extend.
//! 2. The tree at that size: the head file's compact range when the head file holds that very
//!    checkpoint (checked to fold to its signed root), else recomputed from the stored leaf
//!    hashes, which must fold to the signed root.
//! 3. Every entry after it: each stored entry hashed again and checked against its stored leaf
//!    hash, then appended. A database with fewer entries than a signed checkpoint covers is
//!    refused: entries were lost or removed.
//! 4. The tree the store would continue from (its stored nodes) must equal the recomputed one;
//!    the recomputed one is what the sequencer continues from.
//!
//! Entries below the latest checkpoint whose bytes no longer match their stored leaf hashes are
//! not found here (that needs the whole log read): the background scrub finds them.

use std::path::Path;

use tlog::{Checkpoint, CompactRange, Hash, Verifier, leaf_hash};

use super::OpenError;
use super::files::Files;
use crate::store::{Store, StoreError, StoredCheckpoint};

/// Where the start left the log.
pub(super) struct Resumed {
    pub range: CompactRange,
    /// The latest checkpoint the log signed, verified, and where it was found.
    pub latest: Option<(StoredCheckpoint, String)>,
    /// The latest checkpoint the log published: the last line of the checkpoints file, which
    /// a checkpoint reaches only once its witnesses cosigned it (or none are asked). The head
    /// file and the database hold each checkpoint from the moment it is signed, so their
    /// latest may be one the witnesses withheld: it anchors the tree, it is not served. With
    /// the file gone, nothing is served until the next checkpoint is published.
    pub published: Option<StoredCheckpoint>,
}

struct Candidate {
    checkpoint: Checkpoint,
    stored: StoredCheckpoint,
    source: String,
    range: Option<CompactRange>,
}

fn open_checkpoint(
    stored: StoredCheckpoint,
    source: String,
    range: Option<CompactRange>,
    verifier: &Verifier,
) -> Result<Candidate, OpenError> {
    let (checkpoint, _) =
        Checkpoint::open(stored.note.as_bytes(), verifier).map_err(|e| OpenError::Unverified {
            place: source.clone(),
            why: e.to_string(),
        })?;
    if checkpoint.size != stored.size {
        return Err(OpenError::Unverified {
            place: source,
            why: format!(
                "it is filed under size {} but signs size {}",
                stored.size, checkpoint.size
            ),
        });
    }
    Ok(Candidate {
        checkpoint,
        stored,
        source,
        range,
    })
}

fn short(h: &Hash) -> String {
    h.to_hex()[..16].to_string()
}

/// Steps 1–4 for the store `store` in `files`'s directory.
///
/// # Errors
/// [`OpenError`] naming the sizes, roots and files involved.
pub(super) fn resume<S: Store>(
    store: &mut S,
    files: &Files,
    verifier: &Verifier,
    db: &Path,
) -> Result<Resumed, OpenError> {
    // 1. Every place a signed checkpoint survives.
    let mut found = Vec::new();
    if let Some(head) = files.read_head()? {
        let source = files.head_path().display().to_string();
        found.push(open_checkpoint(
            head.checkpoint,
            source,
            head.range,
            verifier,
        )?);
    }
    let mut published = None;
    if let Some(last) = files.last_checkpoint()? {
        let source = format!("the last line of {}", files.checkpoints_path().display());
        let candidate = open_checkpoint(last.checkpoint, source, None, verifier)?;
        published = Some(candidate.stored.clone());
        found.push(candidate);
    }
    if let Some(cp) = store.latest_checkpoint()? {
        let source = format!("the checkpoints table of {}", db.display());
        found.push(open_checkpoint(cp, source, None, verifier)?);
    }
    for (i, a) in found.iter().enumerate() {
        for b in &found[i + 1..] {
            if a.checkpoint.size == b.checkpoint.size && a.checkpoint.root != b.checkpoint.root {
                return Err(OpenError::Forked {
                    size: a.checkpoint.size,
                    first: format!("{} (root {})", a.source, a.checkpoint.root),
                    second: format!("{} (root {})", b.source, b.checkpoint.root),
                });
            }
        }
    }
    let stored = store.state().map_err(|e| OpenError::Diverged {
        size: found.iter().map(|c| c.checkpoint.size).max().unwrap_or(0),
        why: format!("the stored tree cannot be read ({e})"),
    })?;
    let entries = stored.size();
    // Prefer the head file among equals: it carries the tree's compact range.
    let latest = found
        .iter()
        .max_by_key(|c| (c.checkpoint.size, c.range.is_some()));
    let Some(latest) = latest else {
        if entries > 0 {
            return Err(OpenError::Unanchored {
                db: db.display().to_string(),
                entries,
                head: files.head_path().display().to_string(),
                checkpoints: files.checkpoints_path().display().to_string(),
            });
        }
        return Ok(Resumed {
            range: CompactRange::new(),
            latest: None,
            published: None,
        });
    };
    let size = latest.checkpoint.size;
    if entries < size {
        return Err(OpenError::Truncated {
            db: db.display().to_string(),
            entries,
            size,
            root: latest.checkpoint.root.to_hex(),
            place: latest.source.clone(),
        });
    }

    // 2. The tree at the latest checkpoint.
    let mut range = match &latest.range {
        Some(r) if r.size() == size && r.root() == latest.checkpoint.root => r.clone(),
        Some(r) => {
            return Err(OpenError::Unverified {
                place: latest.source.clone(),
                why: format!(
                    "its tree (size {}, root {}) is not the tree its checkpoint signs (size {size}, root {})",
                    r.size(),
                    short(&r.root()),
                    short(&latest.checkpoint.root)
                ),
            });
        }
        None => {
            let mut range = CompactRange::new();
            let mut checks: Vec<&Candidate> =
                found.iter().filter(|c| c.checkpoint.size > 0).collect();
            checks.sort_by_key(|c| c.checkpoint.size);
            let mut next = checks.into_iter().peekable();
            store
                .scan(0, size, false, &mut |_, leaf, _| {
                    range.append(leaf, |_| {});
                    while let Some(c) = next.next_if(|c| c.checkpoint.size == range.size()) {
                        if c.checkpoint.root != range.root() {
                            return Err(StoreError::Inconsistent(format!(
                                "the stored leaf hashes of entries 0 to {} fold to root {}, but {} signs root {}",
                                range.size() - 1,
                                range.root(),
                                c.source,
                                c.checkpoint.root
                            )));
                        }
                    }
                    Ok(())
                })
                .map_err(|e| diverged(size, e))?;
            range
        }
    };
    if size == 0 && latest.checkpoint.root != range.root() {
        return Err(OpenError::Unverified {
            place: latest.source.clone(),
            why: "it signs an empty tree with a root that is not the empty tree's".into(),
        });
    }

    // 3. Every entry after it, hashed again.
    store
        .scan(size, entries, true, &mut |index, leaf, data| {
            let computed = leaf_hash(data.unwrap_or_default());
            if computed != leaf {
                return Err(StoreError::Inconsistent(format!(
                    "entry {index}'s bytes hash to {computed} but its stored leaf hash is {leaf}: it was changed after it was written"
                )));
            }
            range.append(leaf, |_| {});
            Ok(())
        })
        .map_err(|e| diverged(size, e))?;

    // 4. The store's own view must be the same tree.
    if stored.root() != range.root() {
        return Err(OpenError::Diverged {
            size,
            why: format!(
                "the stored tree gives root {} at size {entries}, but {} and the entries after it give {}: entries, leaf hashes or tree nodes before entry {size} were changed",
                stored.root(),
                latest.source,
                range.root()
            ),
        });
    }
    Ok(Resumed {
        range,
        latest: Some((latest.stored.clone(), latest.source.clone())),
        published,
    })
}

fn diverged(size: u64, e: StoreError) -> OpenError {
    let why = match e {
        StoreError::NotFound(i) => format!("entry {i} is missing from the database"),
        StoreError::Inconsistent(why) => why,
        other => other.to_string(),
    };
    OpenError::Diverged { size, why }
}
