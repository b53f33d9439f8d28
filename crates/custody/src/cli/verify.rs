//! `custody verify`: checks a log from its entries alone.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde_json::json;
use tlog::Verifier;
use tlog::check::{Problem, Summary};

use crate::audit::{keys, verify};
use crate::store::{Location, Reader};

pub struct Options {
    pub data: PathBuf,
    pub key: Option<String>,
    pub trusted: Vec<PathBuf>,
    pub witness_policy: Option<PathBuf>,
    pub json: bool,
}

pub struct TilesOptions {
    pub source: crate::tiles::Source,
    pub key: String,
    pub trusted: Vec<PathBuf>,
    pub witness_policy: Option<PathBuf>,
    pub json: bool,
}

/// `custody verify --url | --tiles`: the log from its tiles alone. `Ok(true)` verified,
/// `Ok(false)` a problem was found and reported.
pub async fn run_tiles(opts: &TilesOptions) -> anyhow::Result<bool> {
    let verifier = Verifier::from_key_string(&opts.key).context("the --key verifier key")?;
    let mut sources = Vec::new();
    let mut leaves = Vec::new();
    for path in &opts.trusted {
        let t = verify::read_trusted(path, &verifier, true)?;
        sources.extend(t.sources);
        leaves.extend(t.leaves);
    }
    let started = std::time::Instant::now();
    let result = crate::tiles::verify(
        &opts.source,
        verifier.clone(),
        &sources,
        &leaves,
        !opts.json,
    )
    .await;
    let place = match &opts.source {
        crate::tiles::Source::Url(u) => u.clone(),
        crate::tiles::Source::Dir(d) => d.display().to_string(),
    };
    let result = match (result, &opts.witness_policy) {
        (Ok(v), Some(policy)) => {
            let source = verify::Source {
                note: v.checkpoint.clone(),
                label: format!("the checkpoint at {place}"),
                trusted: false,
            };
            witnessed(policy, &[source])
                .map_err(|message| Problem {
                    index: None,
                    message,
                })
                .map(|()| v)
        }
        (r, _) => r,
    };
    let ok = result.is_ok();
    match (result, opts.json) {
        (Ok(v), true) => {
            let mut j = summary_json(&v.summary, &verifier, "--key");
            j["tiles"] = json!(v.tiles);
            j["checked_against"] = json!([format!("the checkpoint at {place}")]);
            out!("{j}");
        }
        (Ok(v), false) => {
            print_summary(
                &v.summary,
                &verifier,
                "--key",
                Path::new(&place),
                &["the checkpoint served with the tiles".to_string()],
            );
            out!(
                "  tiles          {} fetched and checked in {:.1} s (payloads are not in tiles: checked with --data)",
                v.tiles,
                started.elapsed().as_secs_f64()
            );
        }
        (Err(p), true) => out!(
            "{}",
            json!({ "ok": false, "index": p.index, "problem": p.message, "log": verifier.name() })
        ),
        (Err(p), false) => {
            eprintln!("custody verify: FAILED");
            eprintln!("  {p}");
        }
    }
    Ok(ok)
}

/// `custody verify --db URL`: the log in PostgreSQL (the replicas' shared log), checked as a
/// data directory's is, against `--key` (replicas keep no key beside the database).
///
/// # Errors
/// The key, the connection, or a trusted checkpoint cannot be read.
pub fn run_db(url: &str, opts: &Options) -> anyhow::Result<bool> {
    let key = opts.key.as_deref().context(
        "verifying a PostgreSQL log needs --key, the log's verifier key from a copy kept apart from the database",
    )?;
    let verifier = Verifier::from_key_string(key).context("the --key verifier key")?;
    let shown = crate::store::postgres::redacted(url);
    let reader = crate::store::postgres::PgReader::connect(url)
        .with_context(|| format!("opening the log in {shown}"))?;
    let mut sources =
        verify::stored(&reader).with_context(|| format!("reading the checkpoints in {shown}"))?;
    let places = vec![format!("{} in the database", sources.len())];
    let mut leaves = Vec::new();
    for path in &opts.trusted {
        let t = verify::read_trusted(path, &verifier, true)?;
        sources.extend(t.sources);
        leaves.extend(t.leaves);
    }
    let mut result = verify::check(&reader, verifier.clone(), &sources, &leaves);
    if let (Ok(_), Some(policy)) = (&result, &opts.witness_policy) {
        result = witnessed(policy, &sources)
            .map_err(|message| Problem {
                index: None,
                message,
            })
            .and(result);
    }
    let shown_opts = Options {
        data: PathBuf::from(shown),
        key: opts.key.clone(),
        trusted: Vec::new(),
        witness_policy: None,
        json: opts.json,
    };
    Ok(report(&shown_opts, &verifier, result, "--key", &places))
}

/// How the check went: `Ok(true)` verified, `Ok(false)` a problem was found and reported.
pub fn run(opts: &Options) -> anyhow::Result<bool> {
    let (verifier, key_source) = verifier(opts)?;
    let beside = verify::beside(&opts.data, &verifier)?;
    let db = opts.data.join(crate::store::FILE);
    if !db.exists()
        && let Some(size) = beside.iter().filter_map(|s| signed_size(&s.note)).max()
    {
        {
            return Ok(report(
                opts,
                &verifier,
                Err(Problem {
                    index: None,
                    message: format!(
                        "{} is missing, but the checkpoints kept beside it say the log held {size} entries: the database was deleted",
                        db.display()
                    ),
                }),
                &key_source,
                &[],
            ));
        }
    }
    let reader = Reader::open(&Location::dir(&opts.data))
        .with_context(|| format!("opening the log in {}", opts.data.display()))?;
    let mut sources = verify::stored(&reader)
        .with_context(|| format!("reading the checkpoints in {}", db.display()))?;
    let places = places(&sources, &beside);
    sources.extend(beside);
    let mut leaves = Vec::new();
    for path in &opts.trusted {
        match verify::read_trusted(path, &verifier, true) {
            Ok(t) => {
                sources.extend(t.sources);
                leaves.extend(t.leaves);
            }
            Err(e) => {
                let problem = Problem {
                    index: None,
                    message: format!("{e:#}"),
                };
                return Ok(report(opts, &verifier, Err(problem), &key_source, &places));
            }
        }
    }
    let mut result = verify::check(&reader, verifier.clone(), &sources, &leaves);
    if let (Ok(_), Some(policy)) = (&result, &opts.witness_policy) {
        result = witnessed(policy, &sources)
            .map_err(|message| Problem {
                index: None,
                message,
            })
            .and(result);
    }
    Ok(report(opts, &verifier, result, &key_source, &places))
}

/// With a witness policy: the newest checkpoint the log was checked against must carry
/// cosignatures that meet its quorum.
fn witnessed(policy: &Path, sources: &[verify::Source]) -> Result<(), String> {
    let newest = sources
        .iter()
        .filter_map(|s| signed_size(&s.note).map(|n| (n, s)))
        .max_by_key(|(n, s)| (*n, s.note.len()));
    let Some((size, source)) = newest else {
        return Err("no checkpoint to check against the witness policy".into());
    };
    match super::witness::check_policy(policy, &source.note) {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(why)) => Err(format!(
            "the newest checkpoint (size {size}, {}) is not cosigned as {} asks: {why}; a history rewritten after the witnesses cosigned has no cosigned checkpoint of its own",
            source.label,
            policy.display()
        )),
        Err(e) => Err(format!("{e:#}")),
    }
}

/// The size a checkpoint note signs, if it parses.
fn signed_size(note: &str) -> Option<u64> {
    let note = tlog::Note::parse(note.as_bytes()).ok()?;
    tlog::Checkpoint::from_text(&note.text).ok().map(|c| c.size)
}

/// Where the checkpoints the log was checked against came from, for the summary.
fn places(stored: &[verify::Source], beside: &[verify::Source]) -> Vec<String> {
    let mut out = vec![format!("{} in the database", stored.len())];
    let jsonl = beside
        .iter()
        .filter(|s| s.label.contains(crate::audit::files::CHECKPOINTS_FILE))
        .count();
    if jsonl > 0 {
        out.push(format!(
            "{jsonl} in {}",
            crate::audit::files::CHECKPOINTS_FILE
        ));
    } else {
        out.push(format!("no {}", crate::audit::files::CHECKPOINTS_FILE));
    }
    if beside
        .iter()
        .any(|s| s.label.contains(crate::audit::files::HEAD_FILE))
    {
        out.push(format!("the head in {}", crate::audit::files::HEAD_FILE));
    }
    out
}

fn report(
    opts: &Options,
    verifier: &Verifier,
    result: Result<Summary, Problem>,
    key_source: &str,
    places: &[String],
) -> bool {
    match (&result, opts.json) {
        (Ok(s), true) => {
            let mut v = summary_json(s, verifier, key_source);
            v["checked_against"] = json!(places);
            out!("{v}");
        }
        (Ok(s), false) => print_summary(s, verifier, key_source, &opts.data, places),
        (Err(p), true) => out!(
            "{}",
            json!({ "ok": false, "index": p.index, "problem": p.message, "log": verifier.name() })
        ),
        (Err(p), false) => {
            eprintln!("custody verify: FAILED");
            eprintln!("  {p}");
        }
    }
    result.is_ok()
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
        "payloads_checked": s.payloads_checked,
        "erased": s.erased,
    })
}

fn print_summary(s: &Summary, v: &Verifier, key: &str, data: &Path, places: &[String]) {
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
    out!("  checked against {}", places.join(", "));
    if s.payloads_checked > 0 || !s.erased.is_empty() {
        let erased = if s.erased.is_empty() {
            "none erased".to_string()
        } else {
            let shown: Vec<String> = s.erased.iter().take(20).map(u64::to_string).collect();
            format!(
                "{} erased, each recorded by a payload_erased entry (entries {}{})",
                s.erased.len(),
                shown.join(", "),
                if s.erased.len() > 20 { ", …" } else { "" }
            )
        };
        out!(
            "  payloads       {} entries' payloads open their commitments; {erased}",
            s.payloads_checked
        );
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
