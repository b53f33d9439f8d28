//! `[witness]`: the witnesses that cosign the log's checkpoints. The raw table, and its
//! resolution: the C2SP tlog-policy file is read and checked here, so a bad policy stops the
//! gateway at start-up with the policy file's line.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tlog::policy::{MAX_POLICY_BYTES, Policy};

use super::{ConfigError, Resolver, auth};

/// `[witness]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWitness {
    /// A C2SP tlog-policy file (relative to this config file): `witness NAME VKEY URL` lines,
    /// `group NAME all|any|K MEMBERS...` lines and one `quorum NAME` line. Required.
    pub policy: Option<PathBuf>,
    /// `"required"` (default): calls fail closed while no checkpoint has reached quorum for
    /// longer than `max_lag`. `"best_effort"`: calls go on and the lag is reported.
    pub mode: Option<String>,
    /// How long the newest entries may wait for a checkpoint that reached quorum. Default `10s`.
    #[serde(default, with = "humantime_serde")]
    pub max_lag: Option<Duration>,
    /// How long one `add-checkpoint` request may take. Default `5s`.
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
    /// Settings of single witnesses, by their name in the policy file.
    #[serde(default)]
    pub witnesses: BTreeMap<String, RawWitnessMember>,
}

/// `[witness.witnesses.NAME]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWitnessMember {
    /// Send this witness at most one checkpoint per interval (public witnesses ask for at
    /// most one a minute: `"1m"`). Default `0s`: every checkpoint.
    #[serde(default, with = "humantime_serde")]
    pub min_interval: Option<Duration>,
}

/// What the relay does while witnesses lag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WitnessMode {
    /// Fail closed: no call proceeds while the newest checkpoint with a quorum is older
    /// than `max_lag`.
    Required,
    /// Calls proceed; the lag is reported.
    BestEffort,
}

/// `[witness]`, validated.
#[derive(Debug, Clone)]
pub struct WitnessConfig {
    pub policy_file: PathBuf,
    pub policy: Arc<Policy>,
    pub mode: WitnessMode,
    pub max_lag: Duration,
    pub timeout: Duration,
    /// Per witness, in the order of [`Policy::witnesses`].
    pub min_interval: Vec<Duration>,
}

pub const DEFAULT_MAX_LAG: Duration = Duration::from_secs(10);
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// Reads and parses a policy file, bounding its size before reading it.
///
/// # Errors
/// A sentence naming the file (and the line, for a bad line).
pub fn load_policy(path: &Path) -> Result<Policy, String> {
    use std::io::Read as _;
    let f = std::fs::File::open(path)
        .map_err(|e| format!("cannot read the witness policy {}: {e}", path.display()))?;
    let mut bytes = Vec::new();
    f.take(MAX_POLICY_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read the witness policy {}: {e}", path.display()))?;
    Policy::parse(&bytes).map_err(|e| match e.line {
        Some(l) => format!("{}:{l}: {}", path.display(), e.message),
        None => format!("{}: {}", path.display(), e.message),
    })
}

impl Resolver<'_> {
    pub(super) fn witness(&self, raw: RawWitness) -> Result<WitnessConfig, ConfigError> {
        let Some(file) = raw.policy else {
            return Err(self.err(
                "witness.policy",
                "name a C2SP tlog-policy file with the witnesses and the quorum, e.g. policy = \"witnesses.policy\"",
            ));
        };
        let base = Path::new(self.file).parent().unwrap_or(Path::new(""));
        let policy_file = base.join(file);
        let policy = load_policy(&policy_file).map_err(|e| self.err("witness.policy", e))?;
        if policy.quorum_is_none() {
            return Err(self.err(
                "witness.policy",
                format!(
                    "{} has `quorum none`: no cosignature would ever be required; name a witness or group, or remove [witness]",
                    policy_file.display()
                ),
            ));
        }
        for i in policy.quorum_witnesses() {
            let w = &policy.witnesses()[i];
            let Some(url) = &w.url else {
                return Err(self.err(
                    "witness.policy",
                    format!(
                        "{}: witness {} counts towards the quorum but has no URL; write `witness {} <vkey> <url>` with its submission prefix",
                        policy_file.display(),
                        w.name,
                        w.name
                    ),
                ));
            };
            if !auth::is_fetchable(url) || url.parse::<http::Uri>().is_err() {
                return Err(self.err(
                    "witness.policy",
                    format!(
                        "{}: witness {}: {url:?} must be an https:// URL (http:// only to this machine)",
                        policy_file.display(),
                        w.name
                    ),
                ));
            }
        }
        let mode = match raw.mode.as_deref() {
            None | Some("required") => WitnessMode::Required,
            Some("best_effort") => WitnessMode::BestEffort,
            Some(other) => {
                return Err(self.err(
                    "witness.mode",
                    format!("{other:?} is not a mode; use \"required\" or \"best_effort\""),
                ));
            }
        };
        let max_lag = raw.max_lag.unwrap_or(DEFAULT_MAX_LAG);
        if max_lag < Duration::from_millis(100) || max_lag > Duration::from_secs(3600) {
            return Err(self.err("witness.max_lag", "must be between 100ms and 1h"));
        }
        let timeout = raw.timeout.unwrap_or(DEFAULT_TIMEOUT);
        if timeout < Duration::from_millis(100) || timeout > Duration::from_secs(60) {
            return Err(self.err("witness.timeout", "must be between 100ms and 60s"));
        }
        let mut min_interval = vec![Duration::ZERO; policy.witnesses().len()];
        for (name, m) in raw.witnesses {
            let key = format!("witness.witnesses.{name}");
            let i = policy
                .witnesses()
                .iter()
                .position(|w| w.name == name)
                .ok_or_else(|| {
                    self.err(
                        &key,
                        format!("{} has no witness named {name:?}", policy_file.display()),
                    )
                })?;
            let interval = m.min_interval.unwrap_or(Duration::ZERO);
            if interval > Duration::from_secs(24 * 3600) {
                return Err(self.err(&format!("{key}.min_interval"), "must be at most 24h"));
            }
            min_interval[i] = interval;
        }
        if mode == WitnessMode::Required {
            for (i, interval) in min_interval.iter().enumerate() {
                // A witness every quorum needs, asked less often than max_lag: calls would fail.
                if *interval > max_lag && !policy.quorum_met(|j| j != i) {
                    let name = &policy.witnesses()[i].name;
                    return Err(self.err(
                        &format!("witness.witnesses.{name}.min_interval"),
                        format!(
                            "witness {name} is needed for every quorum but is asked only every {}, longer than max_lag ({}): in required mode calls would fail between its cosignatures. Raise max_lag, add witnesses that can meet the quorum without it, or use mode = \"best_effort\"",
                            humantime::format_duration(*interval),
                            humantime::format_duration(max_lag)
                        ),
                    ));
                }
            }
        }
        Ok(WitnessConfig {
            policy_file,
            policy: Arc::new(policy),
            mode,
            max_lag,
            timeout,
            min_interval,
        })
    }
}

#[cfg(test)]
mod tests;
