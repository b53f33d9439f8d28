//! `custody keygen` and `custody receipt verify`.

use std::path::Path;

use anyhow::Context;
use tlog::{Hash, InclusionReceipt, Verifier};

use crate::audit::keys;

pub fn keygen(origin: &str, out: &Path, predecessor: Option<&Path>) -> anyhow::Result<()> {
    tlog::note::check_key_name(origin).context("--origin")?;
    let follows = predecessor
        .map(|p| {
            crate::audit::predecessor::read(p, origin)
                .map(|draft| (p, draft))
                .context("--predecessor")
        })
        .transpose()?;
    let signer = keys::create(out, origin)?;
    out!(
        "wrote the log key {} (mode 0600) and {}",
        out.display(),
        keys::public_path(out).display()
    );
    out!("verifier key: {}", signer.verifier().to_key_string());
    out!("use it with: [audit] key_file = \"{}\"", out.display());
    if let Some((path, draft)) = follows {
        let old: serde_json::Value = serde_json::from_str(&draft.detail).unwrap_or_default();
        out!(
            "and, so that the new log's first entry names the lost one ({} at size {}): [audit] predecessor = \"{}\"",
            old["origin"].as_str().unwrap_or("?"),
            old["size"],
            path.display()
        );
        out!("with a [server] data_dir that holds no log yet (move the old one aside; keep it)");
    }
    Ok(())
}

/// Verifies a tlog-proof offline, and with `policy` its checkpoint's cosignatures. `Ok(false)`
/// when it does not verify (already reported).
pub fn receipt_verify(
    key: &str,
    proof: &Path,
    leaf: Option<&str>,
    policy: Option<&Path>,
) -> anyhow::Result<bool> {
    let verifier = Verifier::from_key_string(key).context("the --key verifier key")?;
    let bytes = std::fs::read(proof).with_context(|| format!("reading {}", proof.display()))?;
    let expected = leaf
        .map(|h| Hash::from_hex(h).context("--leaf must be 64 hex digits"))
        .transpose()?;
    let receipt = match InclusionReceipt::parse(&bytes) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("custody receipt verify: FAILED: {}: {e}", proof.display());
            return Ok(false);
        }
    };
    match receipt.verify(&verifier, expected) {
        Ok(v) => {
            let witnessed = match policy {
                None => String::new(),
                Some(p) => match super::witness::check_policy(p, &receipt.checkpoint)? {
                    Ok(detail) => format!("; witnessed: {detail}"),
                    Err(problem) => {
                        eprintln!(
                            "custody receipt verify: FAILED: the log signed the proof's checkpoint, but {problem}"
                        );
                        return Ok(false);
                    }
                },
            };
            out!(
                "custody receipt verify: OK: entry {} (leaf {}) is in log {} at tree size {}{witnessed}",
                v.index,
                v.leaf,
                v.checkpoint.origin,
                v.checkpoint.size
            );
            Ok(true)
        }
        Err(e) => {
            eprintln!("custody receipt verify: FAILED: {e}");
            Ok(false)
        }
    }
}
