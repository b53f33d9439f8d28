//! `custody witness keygen|serve`, and the offline cosignature check of `custody receipt
//! verify --witness-policy`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use serde::Deserialize;
use tlog::{Note, Verifier};
use tokio_util::sync::CancellationToken;

use crate::witness::{keys, server};

pub const DEFAULT_LISTEN: &str = "127.0.0.1:7380";

/// `custody witness keygen`.
pub fn keygen(data: &Path, name: &str) -> anyhow::Result<()> {
    tlog::note::check_key_name(name).context(
        "--name: a witness's name is non-empty, without spaces or '+', like witness.example.com/w1",
    )?;
    let signer = keys::create(data, name)?;
    let vkey = signer.verifier().to_key_string();
    out!(
        "wrote the witness key {} (mode 0600) and {}",
        data.join(keys::KEY_FILE).display(),
        data.join(keys::VKEY_FILE).display()
    );
    out!("{vkey}");
    out!("a policy lists it as: witness NAME {vkey} https://THIS-WITNESS/");
    Ok(())
}

/// The `--config` file of `custody witness serve` (TOML). Flags override `listen` and `data`;
/// `--accept` adds to `accept`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// `host:port`.
    pub listen: Option<String>,
    /// The data directory, relative to the config file.
    pub data: Option<PathBuf>,
    /// Verifier keys of the logs to accept (`origin+keyid+base64`).
    #[serde(default)]
    pub accept: Vec<String>,
}

pub struct ServeArgs {
    pub listen: Option<SocketAddr>,
    pub data: Option<PathBuf>,
    pub accept: Vec<String>,
    pub config: Option<PathBuf>,
}

/// Resolves the flags and the config file into what `serve` runs with.
fn resolve(args: ServeArgs) -> anyhow::Result<(SocketAddr, PathBuf, Vec<Verifier>)> {
    let file = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            let mut c: FileConfig =
                toml::from_str(&text).with_context(|| format!("{}", path.display()))?;
            let base = path.parent().unwrap_or(Path::new(""));
            c.data = c.data.map(|d| base.join(d));
            c
        }
        None => FileConfig::default(),
    };
    let listen = match (args.listen, file.listen) {
        (Some(l), _) => l,
        (None, Some(l)) => l
            .parse()
            .with_context(|| format!("listen = {l:?} is not host:port"))?,
        (None, None) => DEFAULT_LISTEN.parse()?,
    };
    let data = args
        .data
        .or(file.data)
        .context("--data DIR: the witness's data directory (made by `custody witness keygen`)")?;
    let mut accept = Vec::new();
    for (i, k) in file.accept.iter().chain(&args.accept).enumerate() {
        let v = Verifier::from_key_string(k).with_context(|| {
            format!(
                "accepted log key {} ({k:?}): expected the log's verifier key, origin+keyid+base64",
                i + 1
            )
        })?;
        accept.push(v);
    }
    Ok((listen, data, accept))
}

/// `custody witness serve`.
pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let (listen, data, accept) = resolve(args)?;
    let witness = Arc::new(
        server::Witness::open(&data, accept)
            .with_context(|| format!("starting the witness in {}", data.display()))?,
    );
    let signals = super::serve::wait_for_signal();
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    let addr = listener.local_addr()?;
    out!("custody witness listening on http://{addr}");
    out!("  verifier key   {}", witness.verifier().to_key_string());
    out!("  data           {}", data.display());
    for o in witness.origins() {
        out!("  accepts        {o}");
    }
    let stop = CancellationToken::new();
    {
        let stop = stop.clone();
        tokio::spawn(async move {
            signals.await;
            tracing::info!("stopping: no new connections");
            stop.cancel();
        });
    }
    server::serve(listener, witness, stop).await;
    Ok(())
}

/// Checks a checkpoint note's cosignatures against a tlog-policy file. `Ok` describes the
/// cosigners; `Err` says why the quorum is not met. The log's own signature is the caller's.
pub fn check_policy(
    policy_file: &Path,
    checkpoint: &str,
) -> anyhow::Result<Result<String, String>> {
    let policy = crate::config::load_witness_policy(policy_file).map_err(anyhow::Error::msg)?;
    let note = match Note::parse(checkpoint.as_bytes()) {
        Ok(n) => n,
        Err(e) => return Ok(Err(format!("the checkpoint: {e}"))),
    };
    if !policy.logs().is_empty() {
        let origin = note.text.split('\n').next().unwrap_or("");
        match policy.log(origin) {
            Some(l) if l.verifier.verify(&note).is_ok() => {}
            Some(_) => {
                return Ok(Err(format!(
                    "the checkpoint is not signed by the key {} lists for {origin:?}",
                    policy_file.display()
                )));
            }
            None => {
                return Ok(Err(format!(
                    "{} does not list the log {origin:?}",
                    policy_file.display()
                )));
            }
        }
    }
    let c = policy.check(&note);
    let names = |ws: &mut dyn Iterator<Item = usize>| -> Vec<String> {
        ws.map(|i| policy.witnesses()[i].name.clone()).collect()
    };
    let cosigners: Vec<String> = c
        .cosigners
        .iter()
        .map(|s| {
            format!(
                "{} at {}",
                policy.witnesses()[s.witness].name,
                humantime::format_rfc3339_seconds(
                    std::time::UNIX_EPOCH + std::time::Duration::from_secs(s.timestamp)
                )
            )
        })
        .collect();
    let invalid: Vec<String> = c
        .invalid
        .iter()
        .map(|(i, e)| format!("{}: {e}", policy.witnesses()[*i].name))
        .collect();
    let mut detail = if cosigners.is_empty() {
        "no valid cosignature".to_string()
    } else {
        format!("cosigned by {}", cosigners.join(", "))
    };
    if !invalid.is_empty() {
        detail.push_str(&format!("; invalid: {}", invalid.join("; ")));
    }
    if c.met {
        Ok(Ok(format!(
            "{detail} (quorum {})",
            policy.describe_quorum()
        )))
    } else {
        let missing = names(
            &mut policy
                .quorum_witnesses()
                .into_iter()
                .filter(|i| !c.cosigners.iter().any(|s| s.witness == *i)),
        );
        Ok(Err(format!(
            "the quorum {} is not met: {detail}; no valid cosignature from {}",
            policy.describe_quorum(),
            missing.join(", ")
        )))
    }
}
