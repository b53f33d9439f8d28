//! Verifying a stored log: what `custody verify` and the scrub run.
//!
//! A log is checked against checkpoints from several places: the database's own table, the
//! files beside it (`checkpoints.jsonl`, `log.head`), and whatever the caller kept elsewhere
//! (`--trusted`: a signed note, a checkpoints file, a head file, or a tlog-proof, whose entry
//! must also still be in the log with the leaf hash the proof names).

use std::path::Path;

use anyhow::Context;
use tlog::check::{LogCheck, Problem, StoredPayload, Summary};
use tlog::{Hash, InclusionReceipt, Verifier};

use super::files::{CHECKPOINTS_FILE, HEAD_FILE};
use crate::store::{LogReader, StoreError};

/// A checkpoint the log must match, and where it came from.
#[derive(Debug, Clone)]
pub struct Source {
    pub note: String,
    /// Named in problems, e.g. `checkpoints.jsonl:12`.
    pub label: String,
    /// Kept outside the log's own directory by whoever runs the check.
    pub trusted: bool,
}

/// A leaf hash an entry must have, from a proof the caller holds.
#[derive(Debug, Clone)]
pub struct Leaf {
    pub index: u64,
    pub leaf: Hash,
    pub label: String,
}

/// What a file of trusted material holds.
#[derive(Debug, Default)]
pub struct Trusted {
    pub sources: Vec<Source>,
    pub leaves: Vec<Leaf>,
}

/// Reads the checkpoints (and proofs) in a file: a signed checkpoint note, a checkpoints file
/// as the gateway writes it (one JSON object per line), a head file, or a tlog-proof (which is
/// verified here with `verifier`, and then contributes its checkpoint and its entry's leaf).
///
/// # Errors
/// The file cannot be read, does not parse, or (a proof) does not verify.
pub fn read_trusted(path: &Path, verifier: &Verifier, trusted: bool) -> anyhow::Result<Trusted> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let text = String::from_utf8_lossy(&bytes);
    let shown = path.display();
    let mut out = Trusted::default();
    if text.starts_with("c2sp.org/tlog-proof@") {
        let receipt = InclusionReceipt::parse(&bytes)
            .with_context(|| format!("{shown} is not a tlog-proof"))?;
        let verified = receipt
            .verify(verifier, None)
            .with_context(|| format!("the proof {shown} does not verify"))?;
        out.sources.push(Source {
            note: receipt.checkpoint,
            label: format!("the checkpoint of proof {shown}"),
            trusted,
        });
        out.leaves.push(Leaf {
            index: verified.index,
            leaf: verified.leaf,
            label: format!("proof {shown}"),
        });
        return Ok(out);
    }
    if text.trim_start().starts_with('{') {
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let v: serde_json::Value = match serde_json::from_str(line) {
                Ok(v) => v,
                // What a crash during an append leaves: a last line without its line break.
                Err(_) if i + 1 == text.lines().count() && !text.ends_with('\n') => continue,
                Err(e) => anyhow::bail!("{shown}:{}: not JSON ({e})", i + 1),
            };
            let note = v
                .get("note")
                .and_then(|n| n.as_str())
                .with_context(|| format!("{shown}:{}: no \"note\"", i + 1))?;
            out.sources.push(Source {
                note: note.to_string(),
                label: format!("{shown}:{}", i + 1),
                trusted,
            });
        }
        return Ok(out);
    }
    out.sources.push(Source {
        note: text.into_owned(),
        label: shown.to_string(),
        trusted,
    });
    Ok(out)
}

/// The checkpoints kept beside the database in `dir` (`checkpoints.jsonl`, `log.head`), the
/// ones a check of a data directory uses by default. Files that do not exist are skipped.
///
/// # Errors
/// A file exists but cannot be read or parsed.
pub fn beside(dir: &Path, verifier: &Verifier) -> anyhow::Result<Vec<Source>> {
    let mut out = Vec::new();
    for name in [CHECKPOINTS_FILE, HEAD_FILE] {
        let path = dir.join(name);
        if path.exists() {
            out.extend(read_trusted(&path, verifier, false)?.sources);
        }
    }
    Ok(out)
}

/// The database's own checkpoints, as sources.
///
/// # Errors
/// They cannot be read.
pub fn stored<R: LogReader>(reader: &R) -> Result<Vec<Source>, StoreError> {
    Ok(reader
        .checkpoints()?
        .into_iter()
        .map(|cp| Source {
            label: format!("the stored checkpoint at size {}", cp.size),
            note: cp.note,
            trusted: false,
        })
        .collect())
}

enum Stop {
    Problem(Problem),
    Store(StoreError),
}

impl From<StoreError> for Stop {
    fn from(e: StoreError) -> Self {
        Stop::Store(e)
    }
}

/// Checks every entry of the log `reader` reads against `sources` and `leaves`, with
/// `verifier`.
///
/// # Errors
/// The first [`Problem`] found.
pub fn check<R: LogReader>(
    reader: &R,
    verifier: Verifier,
    sources: &[Source],
    leaves: &[Leaf],
) -> Result<Summary, Problem> {
    let mut c = LogCheck::new(verifier);
    for s in sources {
        c.add_checkpoint(s.note.as_bytes(), &s.label, s.trusted)?;
    }
    for l in leaves {
        c.expect_leaf(l.index, l.leaf, &l.label);
    }
    let scanned = reader.for_each_entry_with_payloads(|idx, leaf, data, payloads| {
        let payloads: Vec<StoredPayload<'_>> = payloads
            .iter()
            .map(|(slot, opening, data)| StoredPayload {
                slot: *slot,
                opening,
                data,
            })
            .collect();
        c.push_with(idx, data, Some(leaf), &payloads)
            .map_err(Stop::Problem)
    });
    match scanned {
        Ok(()) => c.finish(),
        Err(Stop::Problem(p)) => Err(p),
        Err(Stop::Store(e)) => Err(Problem {
            index: None,
            message: format!("reading entries: {e}"),
        }),
    }
}
