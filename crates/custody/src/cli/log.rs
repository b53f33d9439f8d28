//! `custody log`: prints audit entries as JSON lines, for people and tools reviewing the log.
//! It reads; checking integrity is `custody verify`'s job.

use std::io::Write as _;
use std::path::Path;

use anyhow::Context;
use serde_json::{Value, json};
use tlog::Entry;

use crate::store::{LogReader, SqliteReader};

pub struct Filter {
    pub kind: Option<String>,
    pub from: u64,
    pub limit: Option<u64>,
}

/// Prints the entries of the log in `data` that pass `filter`.
pub fn run(data: &Path, filter: &Filter) -> anyhow::Result<()> {
    if let Some(k) = &filter.kind
        && !(0..=u8::MAX)
            .filter_map(tlog::entry::Kind::from_u8)
            .any(|x| x.name() == k)
    {
        anyhow::bail!(
            "--kind {k:?} is not an entry kind (request, response, error, notification, rejected, auth_failure, session_opened, session_closed, gateway_started, gateway_stopped, heartbeat, ...)"
        );
    }
    let reader = SqliteReader::open(data)
        .with_context(|| format!("opening the log in {}", data.display()))?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut printed = 0u64;
    let result = reader.for_each_entry(|index, leaf, bytes| {
        if index < filter.from || filter.limit.is_some_and(|l| printed >= l) {
            return Ok(());
        }
        let entry = Entry::decode(bytes)
            .map_err(|e| anyhow::anyhow!("entry {index} cannot be decoded: {e}"))?;
        if filter
            .kind
            .as_deref()
            .is_some_and(|k| k != entry.kind.name())
        {
            return Ok(());
        }
        printed += 1;
        writeln!(out, "{}", to_json(&entry, &leaf.to_hex()))
            .map_err(|e| anyhow::anyhow!("writing: {e}"))
    });
    result.or_else(|e: anyhow::Error| {
        // A closed pipe (`| head`) is the reader being done, not a failure.
        if e.to_string().contains("Broken pipe") {
            Ok(())
        } else {
            Err(e)
        }
    })?;
    out.flush().ok();
    Ok(())
}

/// One entry as JSON: text fields that hold JSON are embedded as JSON; a message that is not
/// JSON is given as a string.
pub fn to_json(e: &Entry<'_>, leaf: &str) -> Value {
    let embed = |s: &str| serde_json::from_str::<Value>(s).unwrap_or_else(|_| json!(s));
    let message = if e.message.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice::<Value>(&e.message)
            .unwrap_or_else(|_| json!(String::from_utf8_lossy(&e.message)))
    };
    let opt = |s: &str| if s.is_empty() { Value::Null } else { json!(s) };
    json!({
        "index": e.index,
        "leaf": leaf,
        "kind": e.kind.name(),
        "direction": e.direction.name(),
        "time_ns": e.time_ns,
        "endpoint": opt(&e.endpoint),
        "session": opt(&e.session),
        "id": if e.id.is_empty() { Value::Null } else { embed(&e.id) },
        "method": opt(&e.method),
        "target": opt(&e.target),
        "caller": embed(&e.caller),
        "request": e.request,
        "detail": embed(&e.detail),
        "message": message,
    })
}
