//! Verifying a stored log: what `custody verify` runs.

use std::path::{Path, PathBuf};

use anyhow::Context;
use tlog::Verifier;
use tlog::check::{LogCheck, Problem, Summary};

use crate::store::{LogReader, StoreError};

/// Trusted checkpoints from a file: one signed note, or a checkpoints.jsonl as the gateway writes.
fn trusted_notes(path: &Path) -> anyhow::Result<Vec<String>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    if text.trim_start().starts_with('{') {
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .enumerate()
            .map(|(i, l)| {
                let v: serde_json::Value = serde_json::from_str(l)
                    .with_context(|| format!("{}:{}: not JSON", path.display(), i + 1))?;
                v.get("note")
                    .and_then(|n| n.as_str())
                    .map(str::to_string)
                    .with_context(|| format!("{}:{}: no \"note\"", path.display(), i + 1))
            })
            .collect()
    } else {
        Ok(vec![text])
    }
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

/// Checks every entry and checkpoint of the log `reader` reads, and the `trusted` checkpoint
/// files, with `verifier`.
///
/// # Errors
/// The first [`Problem`] found.
pub fn check<R: LogReader>(
    reader: &R,
    verifier: Verifier,
    trusted: &[PathBuf],
) -> Result<Summary, Problem> {
    let mut c = LogCheck::new(verifier);
    let stored = reader.checkpoints().map_err(|e| Problem {
        index: None,
        message: format!("reading checkpoints: {e}"),
    })?;
    for cp in &stored {
        c.add_checkpoint(
            cp.note.as_bytes(),
            &format!("the stored checkpoint at size {}", cp.size),
            false,
        )?;
    }
    for path in trusted {
        let notes = trusted_notes(path).map_err(|e| Problem {
            index: None,
            message: format!("{e:#}"),
        })?;
        for (i, note) in notes.iter().enumerate() {
            c.add_checkpoint(
                note.as_bytes(),
                &format!("trusted checkpoint {} #{}", path.display(), i + 1),
                true,
            )?;
        }
    }
    let scanned = reader
        .for_each_entry(|idx, leaf, data| c.push(idx, data, Some(leaf)).map_err(Stop::Problem));
    match scanned {
        Ok(()) => c.finish(),
        Err(Stop::Problem(p)) => Err(p),
        Err(Stop::Store(e)) => Err(Problem {
            index: None,
            message: format!("reading entries: {e}"),
        }),
    }
}
