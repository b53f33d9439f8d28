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
    let result = reader.for_each_entry_with_payloads(|index, leaf, bytes, payloads| {
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
        let mut json = to_json(&entry, &leaf.to_hex());
        with_payloads(&mut json, &entry, payloads);
        writeln!(out, "{json}").map_err(|e| anyhow::anyhow!("writing: {e}"))
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

/// A version-2 entry's payloads put where a version-1 entry holds them (the message, the
/// upstream's headers in the detail), and its commitments listed; an erased payload is shown
/// as erased.
pub fn with_payloads(json: &mut Value, e: &Entry<'_>, payloads: &[(u8, [u8; 32], Vec<u8>)]) {
    if e.version == tlog::entry::V1 {
        return;
    }
    let as_json = |b: &[u8]| {
        serde_json::from_slice::<Value>(b).unwrap_or_else(|_| json!(String::from_utf8_lossy(b)))
    };
    let mut commitments = Vec::new();
    for c in &e.commitments {
        let stored = payloads.iter().find(|(slot, ..)| *slot == c.slot);
        commitments.push(json!({
            "slot": c.slot,
            "length": c.length,
            "hash": c.hash.to_hex(),
            "erased": stored.is_none(),
        }));
        let Some((_, _, data)) = stored else { continue };
        match c.slot {
            tlog::payload::MESSAGE => json["message"] = as_json(data),
            tlog::payload::HEADERS => {
                if let Some(d) = json["detail"].as_object_mut() {
                    d.insert("upstream_headers".into(), as_json(data));
                }
            }
            _ => {}
        }
    }
    json["version"] = json!(e.version);
    json["commitments"] = Value::Array(commitments);
}

/// `custody log erase`: erases entry `index`'s payloads in the stopped gateway's log, records
/// who and why, and signs a checkpoint that covers the record.
pub async fn erase(config: &crate::config::Config, index: u64, reason: &str) -> anyhow::Result<()> {
    let dir = &config.server.data_dir;
    let opened = crate::audit::Audit::open(dir, &config.audit).map_err(|e| {
        let text = e.to_string();
        if text.contains("in use") || text.contains("lock") {
            anyhow::anyhow!(
                "{text}\nwhile the gateway runs, erase through its API: POST /api/v1/log/entries/{index}/erase with {{\"reason\": ...}} and an eraser's token ([audit] erasers)"
            )
        } else {
            anyhow::anyhow!("opening the log in {}: {text}", dir.display())
        }
    })?;
    let audit = opened.audit;
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
    let caller: std::sync::Arc<str> = json!({
        "kind": "operator",
        "name": format!("{user} (custody log erase on the stopped gateway's data directory)"),
    })
    .to_string()
    .into();
    let result = audit.erase(index, reason, caller).await;
    let signed = match &result {
        Ok(_) => audit.checkpoint().await.map(|_| ()),
        Err(_) => Ok(()),
    };
    audit.close().await;
    let entry = result?;
    signed.context("signing a checkpoint that covers the erasure")?;
    println!(
        "erased the payloads of entry {index}; recorded as entry {} (leaf {})",
        entry.index,
        entry.leaf.to_hex()
    );
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
