//! Configuration in two phases: [`raw`] deserializes the TOML file with no I/O; [`Config::load`]
//! then resolves and validates it into the types the gateway runs on, failing at start-up with
//! the file, line, key path and what is wrong.

mod approvals;
mod audit;
mod auth;
mod endpoint;
mod export;
mod limits;
mod locate;
mod mask;
pub mod messages;
mod metrics;
pub mod raw;
mod secret;
mod server;
mod telemetry;
mod ui;
mod upstream_url;
mod witness;

pub use approvals::{ApprovalsConfig, ShowArguments, WebhookConfig, WebhookFormat};
pub use audit::{AuditConfig, Durability};
pub use auth::{AuthConfig, NameTemplate, OidcConfig, Preset, StaticToken, is_fetchable};
pub use endpoint::{
    EndpointConfig, HttpUpstreamConfig, OAuthAuth, OAuthConfig, StdioUpstreamConfig, UpstreamConfig,
};
pub use export::{ExportConfig, ExportFormat, ExportTarget, RawExport};
pub use limits::{EndpointLimits, LimitsConfig, ServerLimits};
pub use metrics::{MetricsConfig, RawMetrics};
pub use secret::SecretRef;
pub use server::{OriginPattern, ServerConfig, split_host_port};
pub use telemetry::{RawTelemetry, Sampling, TelemetryConfig};
pub use ui::{RawUi, UiConfig, UiOidcConfig};
pub use upstream_url::UpstreamUrl;
pub use witness::{RawWitness, WitnessConfig, WitnessMode, load_policy as load_witness_policy};

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use messages::MessageLimits;
use raw::{RawAudit, RawConfig, RawPolicy, RawServer};

/// A configuration error: where it is and what is wrong.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    /// The file, or `<embedded default>`.
    pub file: String,
    /// 1-based line and column, when known.
    pub position: Option<(usize, usize)>,
    /// Dotted key path, when known.
    pub key: Option<String>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some((line, col)) = self.position {
            write!(f, ":{line}:{col}")?;
        }
        if let Some(key) = &self.key {
            write!(f, ": `{key}`")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// The whole, validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    pub audit: AuditConfig,
    pub auth: AuthConfig,
    pub policy: PolicyConfig,
    pub approvals: ApprovalsConfig,
    /// The masking key's file.
    pub mask_key_file: PathBuf,
    pub endpoints: Vec<EndpointConfig>,
    /// `[limits]`.
    pub limits: LimitsConfig,
    /// `[witness]`: who cosigns the log's checkpoints. `None`: no witnesses.
    pub witness: Option<WitnessConfig>,
    /// `[[export]]`: sinks streaming committed entries.
    pub exports: Vec<ExportConfig>,
    /// `[metrics]`: `/metrics`, where and for whom.
    pub metrics: MetricsConfig,
    /// `[explorer]`: who may read the log through the explorer API.
    pub explorer: ExplorerConfig,
    /// `[ui]`: the web page and how people sign in to it.
    pub ui: UiConfig,
    /// `[telemetry]`: where traces go, if anywhere.
    pub telemetry: Option<TelemetryConfig>,
}

/// `[explorer]`, validated.
#[derive(Debug, Clone, Default)]
pub struct ExplorerConfig {
    /// Principal names that may read every entry (headers and masked payloads).
    pub auditors: Vec<String>,
}

/// The embedded default's policy: permissive, for the demo only.
pub const EMBEDDED_POLICY: &str = r#"// The embedded default's demo policy. It is PERMISSIVE: every caller with the dev token may
// call everything, except that the demo's `deploy` tool needs a human approval. Write your own
// policy files and name them in [policy] files = [...] for anything real.

@id("demo-permit-all")
permit(principal, action, resource);

@id("demo-deploy-needs-approval")
@approval("required")
permit(principal, action == Action::"tools/call", resource)
when { resource.name == "deploy" };
"#;

/// The embedded default's approver: `custody serve` gives it a token of its own.
pub const EMBEDDED_APPROVER: &str = "approver";

/// Where the access policy comes from.
#[derive(Debug, Clone, Default)]
pub struct PolicyConfig {
    /// Cedar files, resolved against the config file's directory. Empty: no policy, every
    /// authenticated caller may call everything.
    pub files: Vec<PathBuf>,
    /// Policy text built into the binary (the embedded default's demo policy).
    pub builtin: Option<&'static str>,
    /// Reload when a file changes.
    pub watch: bool,
}

impl PolicyConfig {
    /// Is any policy configured (so calls are denied unless permitted)?
    pub fn is_enabled(&self) -> bool {
        !self.files.is_empty() || self.builtin.is_some()
    }
}

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
pub const DEFAULT_DATA_DIR: &str = "./custody-data";
const EMBEDDED: &str = "<embedded default>";

impl Config {
    /// Reads, parses and validates a configuration file.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the file, the position and key where known, and the problem.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: file.clone(),
            position: None,
            key: None,
            message: format!("cannot read the file: {e}"),
        })?;
        Self::parse(&text, &file)
    }

    /// Parses and validates configuration text; `file` names it in errors.
    ///
    /// # Errors
    /// See [`Config::load`].
    pub fn parse(text: &str, file: &str) -> Result<Self, ConfigError> {
        let raw = parse_raw(text, file)?;
        Resolver { text, file }.resolve(raw)
    }

    /// The embedded default: one endpoint, `demo`, backed by the built-in demo server run as a
    /// child process of `program` (the `custody` binary itself). It accepts nobody until a
    /// static token is added (`custody serve` adds its dev token).
    pub fn embedded(program: PathBuf) -> Self {
        let resolver = Resolver {
            text: "",
            file: EMBEDDED,
        };
        let server = resolver
            .server(RawServer::default())
            .unwrap_or_else(|e| unreachable!("the embedded default is valid: {e}"));
        let audit = resolver
            .audit(RawAudit::default(), &server.data_dir)
            .unwrap_or_else(|e| unreachable!("the embedded default is valid: {e}"));
        let messages = server.messages;
        Self {
            server,
            audit,
            auth: AuthConfig {
                anonymous: false,
                ..AuthConfig::anonymous()
            },
            policy: PolicyConfig {
                files: Vec::new(),
                builtin: Some(EMBEDDED_POLICY),
                watch: false,
            },
            approvals: ApprovalsConfig {
                approvers: vec![EMBEDDED_APPROVER.into()],
                ..ApprovalsConfig::default()
            },
            explorer: ExplorerConfig {
                auditors: vec![EMBEDDED_APPROVER.into()],
            },
            mask_key_file: PathBuf::from(DEFAULT_DATA_DIR).join("mask.key"),
            limits: LimitsConfig::default(),
            endpoints: vec![EndpointConfig {
                limits: EndpointLimits::default(),
                messages,
                mask_client: crate::mask::RuleSet::default(),
                mask_audit: crate::mask::RuleSet {
                    paths: Vec::new(),
                    headers: Vec::new(),
                    detectors: [true; 8],
                },
                name: "demo".into(),
                description: Some("custody's built-in demo MCP server".into()),
                upstream: UpstreamConfig::Stdio(StdioUpstreamConfig {
                    command: program,
                    args: vec!["demo-server".into()],
                    env: BTreeMap::new(),
                    inherit_env: false,
                    cwd: None,
                    pool_size: 2,
                    idle_timeout: Duration::from_secs(600),
                    request_timeout: Duration::from_secs(60),
                    input_timeout: Duration::from_secs(60),
                }),
            }],
            witness: None,
            exports: Vec::new(),
            metrics: MetricsConfig::default(),
            ui: UiConfig::default(),
            // The embedded default traces where the standard environment says.
            telemetry: resolver
                .telemetry(RawTelemetry::default(), &|k| std::env::var(k).ok())
                .unwrap_or_else(|e| {
                    tracing::warn!("no traces: {e}");
                    None
                }),
        }
    }
}

fn parse_raw(text: &str, file: &str) -> Result<RawConfig, ConfigError> {
    let de = toml::Deserializer::parse(text).map_err(|e| ConfigError {
        file: file.into(),
        position: e.span().map(|s| locate::line_col(text, s.start)),
        key: None,
        message: e.message().to_string(),
    })?;
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        // An unknown key is best shown at the key itself, which the span of a tagged table
        // does not point at.
        let unknown = inner
            .message()
            .strip_prefix("unknown field `")
            .and_then(|rest| rest.split('`').next())
            .and_then(|field| {
                let full = if path == "." {
                    field.to_string()
                } else {
                    format!("{path}.{field}")
                };
                locate::find_key(text, &full)
            });
        let position = unknown
            .or_else(|| inner.span().map(|s| s.start))
            .or_else(|| locate::find_key(text, &path))
            .map(|o| locate::line_col(text, o));
        ConfigError {
            file: file.into(),
            position,
            key: (path != ".").then_some(path),
            message: inner.message().to_string(),
        }
    })
}

/// Phase two: turns raw values into validated ones, with errors located in the text.
struct Resolver<'a> {
    text: &'a str,
    file: &'a str,
}

impl Resolver<'_> {
    fn policy(&self, raw: Option<RawPolicy>) -> Result<PolicyConfig, ConfigError> {
        let Some(raw) = raw else {
            return Ok(PolicyConfig::default());
        };
        if raw.files.is_empty() {
            return Err(self.err(
                "policy.files",
                "list at least one Cedar policy file, or remove [policy] to allow every authenticated caller everything",
            ));
        }
        let base = Path::new(self.file).parent().unwrap_or(Path::new(""));
        Ok(PolicyConfig {
            files: raw.files.iter().map(|f| base.join(f)).collect(),
            builtin: None,
            watch: raw.watch.unwrap_or(true),
        })
    }

    /// A value that may name secrets: parsed, and resolved once now so that a missing one stops
    /// the start with the key, the endpoint (when it belongs to one) and the reference, never a
    /// value. Returns the reference and its value.
    fn secret(
        &self,
        key: &str,
        endpoint: Option<&str>,
        text: &str,
    ) -> Result<(SecretRef, String), ConfigError> {
        self.secret_parts(key, endpoint, text)
            .map(|(r, value, _)| (r, value))
    }

    /// A secret the configuration must name by reference (`${env:NAME}` or `${file:PATH}`),
    /// resolved; `what` names it in the refusal of a value written in the file.
    fn secret_by_reference(
        &self,
        key: &str,
        what: &str,
        text: &str,
    ) -> Result<String, ConfigError> {
        let (r, value) = self.secret(key, None, text)?;
        if !r.has_references() {
            return Err(self.err(
                key,
                format!(
                    "name the {what} by reference, \"${{env:NAME}}\" or \"${{file:PATH}}\", so it stays out of the configuration"
                ),
            ));
        }
        Ok(value)
    }

    /// As [`Resolver::secret`], with what each reference resolved to.
    fn secret_parts(
        &self,
        key: &str,
        endpoint: Option<&str>,
        text: &str,
    ) -> Result<(SecretRef, String, Vec<String>), ConfigError> {
        let base = Path::new(self.file).parent().unwrap_or(Path::new(""));
        let r = SecretRef::parse(text, base).map_err(|e| self.err(key, e))?;
        let (value, parts) = r.resolve_parts().map_err(|e| {
            let whose = endpoint
                .map(|ep| format!("endpoint {ep:?}: "))
                .unwrap_or_default();
            self.err(
                key,
                format!("{whose}{e}; set it before starting the gateway"),
            )
        })?;
        Ok((r, value, parts))
    }

    fn err(&self, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.into(),
            position: locate::find_key(self.text, key).map(|o| locate::line_col(self.text, o)),
            key: Some(key.into()),
            message: message.into(),
        }
    }

    fn resolve(&self, raw: RawConfig) -> Result<Config, ConfigError> {
        let server = self.server(raw.server)?;
        let audit = self.audit(raw.audit, &server.data_dir)?;
        if raw.endpoints.is_empty() {
            return Err(self.err(
                "endpoints",
                "no endpoints configured; add at least one [endpoints.NAME] table",
            ));
        }
        let endpoints = raw
            .endpoints
            .into_iter()
            .map(|(name, ep)| self.endpoint(name, ep, server.messages))
            .collect::<Result<Vec<_>, _>>()?;
        let auth = self.auth(raw.auth)?;
        // Tile entries carry session ids; with anonymous calls allowed, every anonymous caller
        // is the same principal, so a session id read from a public tile would be a way into
        // someone's session. Public tiles then need saying so.
        let mut audit = audit;
        if auth.anonymous && audit.tiles_public && !audit.tiles_public_set {
            audit.tiles_public = false;
        }
        let policy = self.policy(raw.policy)?;
        let approvals = self.approvals(raw.approvals)?;
        let limits = self.limits(raw.limits)?;
        let witness = raw.witness.map(|w| self.witness(w)).transpose()?;
        let exports = self.exports(raw.export)?;
        let metrics = self.metrics(raw.metrics)?;
        for (i, a) in raw.explorer.auditors.iter().enumerate() {
            if a.trim().is_empty() {
                return Err(self.err(
                    &format!("explorer.auditors.{i}"),
                    "an auditor's name must not be empty",
                ));
            }
        }
        let explorer = ExplorerConfig {
            auditors: raw.explorer.auditors,
        };
        let ui = self.ui(raw.ui, &auth, server.public_url.as_deref())?;
        let telemetry = self.telemetry(raw.telemetry, &|k| std::env::var(k).ok())?;
        let mask_key_file = raw
            .masking
            .key_file
            .unwrap_or_else(|| server.data_dir.join("mask.key"));
        Ok(Config {
            server,
            audit,
            auth,
            policy,
            approvals,
            mask_key_file,
            endpoints,
            limits,
            witness,
            exports,
            metrics,
            explorer,
            ui,
            telemetry,
        })
    }
}

#[cfg(test)]
mod tests;
