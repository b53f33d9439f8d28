//! A new log that follows one whose entries were lost: its first entry names the old log's
//! last checkpoint, so the chain of custody has a recorded break instead of a silent one.

use std::path::Path;

use serde_json::json;
use tlog::{Checkpoint, Note};

use super::{Draft, Kind, OpenError};

/// The old log's last checkpoint in `path` (a signed note, a checkpoints file, a head file), as
/// the new log's first entry. The note's signature is kept verbatim for whoever holds the old
/// log's key; it cannot be checked here.
///
/// # Errors
/// [`OpenError::Predecessor`]: the file cannot be read, holds no checkpoint, or names this
/// log's own origin (a log cannot follow itself: a new log needs a new key and origin).
pub fn read(path: &Path, origin: &str) -> Result<Draft, OpenError> {
    let err = |why: String| OpenError::Predecessor(format!("{}: {why}", path.display()));
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let note = if text.trim_start().starts_with('{') {
        let line = text
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .ok_or_else(|| err("empty".into()))?;
        let v: serde_json::Value =
            serde_json::from_str(line).map_err(|e| err(format!("not JSON ({e})")))?;
        v.get("note")
            .and_then(serde_json::Value::as_str)
            .ok_or_else(|| err("no \"note\"".into()))?
            .to_string()
    } else {
        text
    };
    let parsed =
        Note::parse(note.as_bytes()).map_err(|e| err(format!("not a signed note ({e})")))?;
    let checkpoint =
        Checkpoint::from_text(&parsed.text).map_err(|e| err(format!("not a checkpoint ({e})")))?;
    if checkpoint.origin == origin {
        return Err(err(format!(
            "it is a checkpoint of this very log ({origin}); a log that lost entries is followed by a new log with a new key and origin (`custody keygen --origin NEW`)"
        )));
    }
    let detail = json!({
        "origin": checkpoint.origin,
        "size": checkpoint.size,
        "root": checkpoint.root.to_hex(),
        "note": note,
    });
    Ok(Draft::gateway(Kind::Predecessor, "", detail.to_string()))
}
