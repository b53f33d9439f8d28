//! `custody verify`: checks a log from its entries alone.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde_json::json;
use tlog::Verifier;
use tlog::check::Summary;

use crate::audit::keys;
use crate::store::SqliteReader;

pub struct Options {
    pub data: PathBuf,
    pub key: Option<String>,
    pub trusted: Vec<PathBuf>,
    pub json: bool,
}

/// How the check went: `Ok(true)` verified, `Ok(false)` a problem was found and reported.
pub fn run(opts: &Options) -> anyhow::Result<bool> {
    let (verifier, key_source) = verifier(opts)?;
    let reader = SqliteReader::open(&opts.data)
        .with_context(|| format!("opening the log in {}", opts.data.display()))?;
    let result = crate::audit::verify::check(&reader, verifier.clone(), &opts.trusted);
    match (&result, opts.json) {
        (Ok(s), true) => out!("{}", summary_json(s, &verifier, &key_source)),
        (Ok(s), false) => print_summary(s, &verifier, &key_source, &opts.data),
        (Err(p), true) => out!(
            "{}",
            json!({ "ok": false, "index": p.index, "problem": p.message, "log": verifier.name() })
        ),
        (Err(p), false) => {
            eprintln!("custody verify: FAILED");
            eprintln!("  {p}");
        }
    }
    Ok(result.is_ok())
}

fn verifier(opts: &Options) -> anyhow::Result<(Verifier, String)> {
    if let Some(k) = &opts.key {
        return Ok((
            Verifier::from_key_string(k).context("the --key verifier key")?,
            "--key".into(),
        ));
    }
    let path = keys::public_path(&opts.data.join("log.key"));
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "reading the verifier key {} (or give one with --key)",
            path.display()
        )
    })?;
    let v = Verifier::from_key_string(&text)
        .with_context(|| format!("the verifier key in {}", path.display()))?;
    Ok((v, path.display().to_string()))
}

fn summary_json(s: &Summary, v: &Verifier, key: &str) -> serde_json::Value {
    json!({
        "ok": true,
        "log": v.name(),
        "verifier_key": v.to_key_string(),
        "verifier_key_source": key,
        "entries": s.entries,
        "root": s.root.to_hex(),
        "checkpoints": s.checkpoints,
        "latest_checkpoint": s.latest_checkpoint,
        "trusted_checkpoints": s.trusted,
        "kinds": s.kinds.iter().map(|(k, n)| (k.to_string(), json!(n))).collect::<serde_json::Map<_, _>>(),
        "first_time_ns": s.first_time_ns,
        "last_time_ns": s.last_time_ns,
        "unanswered_requests": s.unanswered_requests,
    })
}

fn print_summary(s: &Summary, v: &Verifier, key: &str, data: &Path) {
    out!("custody verify: OK");
    out!("  log            {} ({})", v.name(), data.display());
    out!("  verifier key   {} (from {key})", v.to_key_string());
    let kinds: Vec<String> = s.kinds.iter().map(|(k, n)| format!("{k} {n}")).collect();
    out!("  entries        {} ({})", s.entries, kinds.join(", "));
    out!("  root           {}", s.root);
    match s.latest_checkpoint {
        Some(l) => out!(
            "  checkpoints    {} signed, all match; the latest covers {l} entries",
            s.checkpoints
        ),
        None => out!("  checkpoints    none"),
    }
    if !s.trusted.is_empty() {
        let sizes: Vec<String> = s.trusted.iter().map(u64::to_string).collect();
        out!(
            "  trusted        {} checkpoint(s) match (sizes {})",
            s.trusted.len(),
            sizes.join(", ")
        );
    }
    if let (Some(a), Some(b)) = (s.first_time_ns, s.last_time_ns) {
        out!(
            "  time           {} to {}",
            humantime::format_rfc3339_seconds(
                std::time::UNIX_EPOCH + std::time::Duration::from_nanos(a)
            ),
            humantime::format_rfc3339_seconds(
                std::time::UNIX_EPOCH + std::time::Duration::from_nanos(b)
            )
        );
    }
    if s.unanswered_requests > 0 {
        out!(
            "  note           {} request(s) have no recorded answer (the client left, or the gateway stopped first)",
            s.unanswered_requests
        );
    }
    if key != "--key" {
        out!(
            "  note           the verifier key came from the log's own directory; pass --key with a copy kept elsewhere to rule out a replaced key"
        );
    }
}
