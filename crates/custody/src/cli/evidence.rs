//! `custody verify --evidence FILE`: proves that every record a CI job kept (see
//! `custody connect --evidence`) is still in the log today, unchanged.
//!
//! 1. The evidence's checkpoint verifies with the log's key (and, with `--witness-policy`, its
//!    cosignatures meet the quorum).
//! 2. Each entry's proof verifies: the entry with that leaf hash is at that index of that tree.
//! 3. Today's checkpoint (from the gateway, or from a data directory) verifies the same way, is
//!    at least as large, and a consistency proof shows the evidence's tree is a prefix of it: so
//!    every entry the job kept is still in today's log with the same bytes.

use std::path::{Path, PathBuf};

use anyhow::Context;
use base64::Engine as _;
use tlog::{Checkpoint, Hash, InclusionReceipt, Verifier};

use crate::connect::evidence::{self, Evidence};
use crate::store::{Location, LogReader, Reader};

pub struct Options {
    pub evidence: PathBuf,
    pub gateway: Option<String>,
    pub data: Option<PathBuf>,
    pub key: Option<String>,
    pub witness_policy: Option<PathBuf>,
    pub json: bool,
}

/// Where today's log is read from.
enum Today {
    Gateway(String),
    Data(PathBuf),
}

/// `Ok(true)`: every record is still there; `Ok(false)`: a problem, reported.
pub fn run(opts: &Options) -> anyhow::Result<bool> {
    let text = std::fs::read_to_string(&opts.evidence)
        .with_context(|| format!("reading {}", opts.evidence.display()))?;
    let ev: Evidence = serde_json::from_str(&text)
        .with_context(|| format!("{} is not an evidence file", opts.evidence.display()))?;
    if ev.format != evidence::FORMAT {
        anyhow::bail!(
            "{} is a {:?} file, not {:?}",
            opts.evidence.display(),
            ev.format,
            evidence::FORMAT
        );
    }
    let (key, key_source) = match &opts.key {
        Some(k) => (k.clone(), "--key".to_string()),
        None => (
            ev.verifier_key.clone(),
            "the evidence file (as the gateway claimed it; pass --key with a copy kept elsewhere)"
                .to_string(),
        ),
    };
    let verifier = Verifier::from_key_string(&key).context("the verifier key")?;
    let today = match (&opts.gateway, &opts.data) {
        (Some(g), None) => Today::Gateway(g.trim_end_matches('/').to_string()),
        (None, Some(d)) => Today::Data(d.clone()),
        _ => anyhow::bail!("give where today's log is: --gateway URL or --data DIR (one of them)"),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let outcome = runtime.block_on(check(
        &ev,
        &verifier,
        &today,
        opts.witness_policy.as_deref(),
    ));
    match (&outcome, opts.json) {
        (Ok(s), true) => out!(
            "{}",
            serde_json::json!({ "ok": true, "log": verifier.name(), "entries": ev.entries.len(),
                "evidence_size": s.0, "today_size": s.1, "verifier_key_source": key_source })
        ),
        (Ok((then, now)), false) => {
            out!("custody verify --evidence: OK");
            out!("  log            {}", verifier.name());
            out!("  verifier key   from {key_source}");
            out!(
                "  records        {} entries of {} (gateway {}), each proven in the checkpoint of size {then}",
                ev.entries.len(),
                opts.evidence.display(),
                ev.gateway
            );
            out!(
                "  today          the log has {now} entries and extends that checkpoint (consistency proof verified): every record is still there, unchanged"
            );
            if let Some(p) = &opts.witness_policy {
                out!(
                    "  witnesses      both checkpoints meet the quorum of {}",
                    p.display()
                );
            }
        }
        (Err(e), true) => out!("{}", serde_json::json!({ "ok": false, "problem": e })),
        (Err(e), false) => {
            eprintln!("custody verify --evidence: FAILED");
            eprintln!("  {e}");
        }
    }
    Ok(outcome.is_ok())
}

fn open(note: &str, verifier: &Verifier, what: &str) -> Result<Checkpoint, String> {
    Checkpoint::open(note.as_bytes(), verifier)
        .map(|(c, _)| c)
        .map_err(|e| format!("{what} does not verify with the log's key: {e}"))
}

fn witnessed(policy: Option<&Path>, note: &str, what: &str) -> Result<(), String> {
    let Some(p) = policy else { return Ok(()) };
    match super::witness::check_policy(p, note) {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(why)) => Err(format!(
            "{what} is not cosigned as {} asks: {why}",
            p.display()
        )),
        Err(e) => Err(format!("{e:#}")),
    }
}

/// Steps 1–3; `(evidence size, today's size)`.
async fn check(
    ev: &Evidence,
    verifier: &Verifier,
    today: &Today,
    policy: Option<&Path>,
) -> Result<(u64, u64), String> {
    let then = open(&ev.checkpoint, verifier, "the evidence's checkpoint")?;
    witnessed(policy, &ev.checkpoint, "the evidence's checkpoint")?;
    for e in &ev.entries {
        let leaf = Hash::from_hex(&e.leaf)
            .ok_or_else(|| format!("entry {}: {:?} is not a leaf hash", e.index, e.leaf))?;
        let receipt = InclusionReceipt::parse(e.proof.as_bytes())
            .map_err(|err| format!("entry {}: its proof does not parse: {err}", e.index))?;
        let v = receipt
            .verify(verifier, Some(leaf))
            .map_err(|err| format!("entry {}: its proof does not verify: {err}", e.index))?;
        if v.index != e.index || v.checkpoint.size != then.size || v.checkpoint.root != then.root {
            return Err(format!(
                "entry {}: its proof is for entry {} in a tree of size {}, not the evidence's checkpoint (size {})",
                e.index, v.index, v.checkpoint.size, then.size
            ));
        }
    }
    let (now_note, proof) = match today {
        Today::Gateway(url) => from_gateway(url, then.size).await?,
        Today::Data(dir) => {
            stored_entries_match(dir, ev)?;
            from_data(dir, then.size)?
        }
    };
    let now = open(&now_note, verifier, "today's checkpoint")?;
    witnessed(policy, &now_note, "today's checkpoint")?;
    if now.size < then.size {
        return Err(format!(
            "today's checkpoint covers {} entries, fewer than the {} the evidence's checkpoint covers: the log went back (restored from an old backup, or rewritten)",
            now.size, then.size
        ));
    }
    tlog::proof::verify_consistency(then.size, now.size, &proof, &then.root, &now.root).map_err(
        |e| {
            format!(
                "today's log (size {}, root {}) does not extend the evidence's checkpoint (size {}, root {}): {e}; the log was rewritten after the job ran",
                now.size, now.root, then.size, then.root
            )
        },
    )?;
    Ok((then.size, now.size))
}

async fn from_gateway(url: &str, from: u64) -> Result<(String, Vec<Hash>), String> {
    let http = crate::net::client(std::time::Duration::from_secs(30));
    let note = evidence::get(&http, &format!("{url}/api/v1/log/checkpoint")).await?;
    let size = evidence::checkpoint_size(&note)?;
    let body = evidence::get(
        &http,
        &format!("{url}/api/v1/log/consistency?from={from}&to={size}"),
    )
    .await?;
    let v: serde_json::Value =
        serde_json::from_str(&body).map_err(|e| format!("the consistency proof: {e}"))?;
    let proof = v
        .get("proof")
        .and_then(serde_json::Value::as_array)
        .ok_or("the consistency proof has no \"proof\"")?
        .iter()
        .map(|h| {
            h.as_str()
                .and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
                .and_then(|b| Hash::from_slice(&b))
                .ok_or_else(|| {
                    "the consistency proof holds something that is not a hash".to_string()
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((note, proof))
}

/// With the database at hand, each kept entry's stored bytes must still hash to the leaf the
/// evidence holds (the tree could be intact while the bytes beside it were changed).
fn stored_entries_match(dir: &Path, ev: &Evidence) -> Result<(), String> {
    let reader = Reader::open(&Location::dir(dir)).map_err(|e| e.to_string())?;
    for e in &ev.entries {
        let (stored_leaf, data) = reader
            .entry(e.index)
            .map_err(|err| format!("entry {}: {err}", e.index))?;
        let leaf = tlog::leaf_hash(&data);
        if leaf.to_hex() != e.leaf || stored_leaf.to_hex() != e.leaf {
            return Err(format!(
                "entry {}: the stored entry hashes to {leaf}, but the evidence holds {}: the entry was changed after the job ran",
                e.index, e.leaf
            ));
        }
    }
    Ok(())
}

fn from_data(dir: &Path, from: u64) -> Result<(String, Vec<Hash>), String> {
    let reader = Reader::open(&Location::dir(dir)).map_err(|e| e.to_string())?;
    let latest = reader
        .latest_checkpoint()
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("{} holds no checkpoint", dir.display()))?;
    if latest.size < from {
        return Ok((latest.note, Vec::new()));
    }
    let proof = tlog::proof::consistency_proof(&reader, from, latest.size)
        .map_err(|e| format!("couldn't compute the consistency proof: {e}"))?;
    Ok((latest.note, proof))
}
