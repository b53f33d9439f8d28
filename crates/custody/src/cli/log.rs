//! `custody log`: prints audit entries as JSON lines, for people and tools reviewing the log.
//! It reads; checking integrity is `custody verify`'s job.

use std::io::Write as _;
use std::path::Path;

use anyhow::Context;
use serde_json::json;

use crate::export::entries::{to_json, with_payloads};
use tlog::Entry;

use crate::store::{Location, LogReader, Reader};

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
    let reader = Reader::open(&Location::dir(data))
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

/// `custody log export`: entries from `from` on as JSON lines in `format`.
pub fn export(data: &Path, format: &str, from: u64) -> anyhow::Result<()> {
    let format = match format {
        "ocsf" => crate::config::ExportFormat::Ocsf,
        "entries" => crate::config::ExportFormat::Entries,
        other => anyhow::bail!("--format {other:?}: use ocsf or entries"),
    };
    let reader = Reader::open(&Location::dir(data))
        .with_context(|| format!("opening the log in {}", data.display()))?;
    let latest = reader.latest_checkpoint()?;
    let origin = latest
        .as_ref()
        .and_then(|cp| cp.note.lines().next().map(str::to_string))
        .unwrap_or_default();
    let size = latest.map_or(0, |cp| cp.size).max(reader.entry_count()?);
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut at = from;
    while at < size {
        let to = size.min(at + 1000);
        for line in crate::export::render(&reader, at, to, format, &origin)? {
            if writeln!(out, "{line}").is_err() {
                return Ok(());
            }
        }
        at = to;
    }
    out.flush().ok();
    Ok(())
}
