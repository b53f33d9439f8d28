//! Configuration in two phases: [`raw`] deserializes the TOML file with no I/O; [`Config::load`]
//! then resolves and validates it into the types the gateway runs on, failing at start-up with
//! the file, line, key path and what is wrong.

mod auth;
mod limits;
mod locate;
mod mask;
pub mod messages;
pub mod raw;
mod secret;
mod upstream_url;
mod witness;

pub use auth::{AuthConfig, NameTemplate, OidcConfig, Preset, StaticToken, is_fetchable};
pub use limits::{EndpointLimits, LimitsConfig, ServerLimits};
pub use secret::SecretRef;
pub use upstream_url::UpstreamUrl;
pub use witness::{RawWitness, WitnessConfig, WitnessMode, load_policy as load_witness_policy};

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::{HeaderName, HeaderValue, Uri};

pub use messages::MessageLimits;
use raw::{
    RawApprovals, RawAudit, RawConfig, RawEndpoint, RawOAuth, RawPolicy, RawServer, RawUpstream,
    RawWebhook,
};

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
    /// `[explorer]`: who may read the log through the explorer API.
    pub explorer: ExplorerConfig,
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

/// `[approvals]`, validated.
#[derive(Debug, Clone)]
pub struct ApprovalsConfig {
    pub timeout: Duration,
    pub keepalive: Duration,
    /// Principal names that may approve any held call.
    pub approvers: Vec<String>,
    pub webhooks: Vec<WebhookConfig>,
    pub show: ShowArguments,
}

impl Default for ApprovalsConfig {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(600),
            keepalive: Duration::from_secs(15),
            approvers: Vec::new(),
            webhooks: Vec::new(),
            show: ShowArguments::AsSent,
        }
    }
}

/// `approvals.show`: what approvers see of a held call's arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShowArguments {
    /// As the upstream will receive them, only the credentials the gateway holds scrubbed.
    AsSent,
    /// The log's masked copy, saying how many values are hidden.
    Masked,
}

/// The payload a webhook gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookFormat {
    Json,
    Slack,
}

/// One `[[approvals.webhooks]]`.
#[derive(Clone)]
pub struct WebhookConfig {
    pub url: Uri,
    pub format: WebhookFormat,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub attempts: u32,
}

impl WebhookConfig {
    /// How the webhook is named in logs: its host, never its path (which can be a secret).
    pub fn label(&self) -> String {
        format!(
            "{}://{}",
            self.url.scheme_str().unwrap_or("https"),
            self.url.authority().map_or("?", |a| a.host())
        )
    }
}

impl fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("url", &self.label())
            .field("format", &self.format)
            .field("attempts", &self.attempts)
            .finish_non_exhaustive()
    }
}

/// Whether an entry is on stable storage before its message moves on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    Fsync,
    /// Benchmarks only.
    None,
}

#[derive(Debug, Clone)]
pub struct AuditConfig {
    pub durability: Durability,
    pub origin: Option<String>,
    pub key_file: PathBuf,
    pub checkpoint_interval: Duration,
    pub heartbeat_interval: Duration,
    /// How often the whole stored log is verified again in the background; `None`: never.
    pub scrub_interval: Option<Duration>,
    /// Payloads older than this are erased in recorded batches; `None`: kept for good.
    pub retention: Option<Duration>,
    /// Principal names that may erase payloads through the API.
    pub erasers: Vec<String>,
    /// Where the log is served as tiles (`/log`).
    pub tiles_prefix: String,
    /// Whether the tiles are readable without a token.
    pub tiles_public: bool,
    /// A new log's predecessor: a file holding the last checkpoint of the log it follows.
    pub predecessor: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// The gateway's URL as clients reach it (no trailing slash), when configured.
    pub public_url: Option<String>,
    pub data_dir: PathBuf,
    pub allowed_hosts: Vec<String>,
    pub allowed_origins: Vec<OriginPattern>,
    /// The defaults of every endpoint's [`MessageLimits`].
    pub messages: MessageLimits,
    pub session_idle_timeout: Duration,
    /// The idle timeout of sessions that hold a stdio process of their own.
    pub stdio_session_idle_timeout: Duration,
    pub shutdown_grace: Duration,
    pub worker_threads: usize,
    /// Connections, request heads.
    pub limits: ServerLimits,
}

/// An allowed `Origin`: scheme and host must match; the port may be `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginPattern {
    pub scheme: String,
    pub host: String,
    /// `None` matches any port.
    pub port: Option<u16>,
}

impl OriginPattern {
    fn parse(s: &str) -> Option<Self> {
        let (scheme, rest) = s.split_once("://")?;
        let (host, port) = split_host_port(rest.trim_end_matches('/'));
        let port = match port {
            Some("*") => None,
            Some(p) => Some(p.parse().ok()?),
            None => Some(if scheme == "https" { 443 } else { 80 }),
        };
        if host.is_empty() || !matches!(scheme, "http" | "https") {
            return None;
        }
        Some(Self {
            scheme: scheme.to_ascii_lowercase(),
            host: host.to_ascii_lowercase(),
            port,
        })
    }

    /// Does an `Origin` header value match this pattern?
    pub fn matches(&self, origin: &str) -> bool {
        let Some((scheme, rest)) = origin.split_once("://") else {
            return false;
        };
        let (host, port) = split_host_port(rest);
        let port = match port {
            Some(p) => match p.parse::<u16>() {
                Ok(p) => p,
                Err(_) => return false,
            },
            None if scheme.eq_ignore_ascii_case("https") => 443,
            None => 80,
        };
        scheme.eq_ignore_ascii_case(&self.scheme)
            && host.eq_ignore_ascii_case(&self.host)
            && self.port.is_none_or(|p| p == port)
    }
}

/// Splits `host[:port]`, keeping IPv6 brackets on the host.
pub fn split_host_port(s: &str) -> (&str, Option<&str>) {
    if s.starts_with('[') {
        match s.find(']') {
            Some(end) => {
                let host = &s[..=end];
                let port = s[end + 1..].strip_prefix(':');
                (host, port)
            }
            None => (s, None),
        }
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    }
}

#[derive(Debug, Clone)]
pub struct EndpointConfig {
    pub name: String,
    pub description: Option<String>,
    pub upstream: UpstreamConfig,
    /// What the client receives masked.
    pub mask_client: crate::mask::RuleSet,
    /// What the log stores masked, on top of `mask_client`.
    pub mask_audit: crate::mask::RuleSet,
    /// Caps on sessions and processes.
    pub limits: EndpointLimits,
    /// Bounds on each message.
    pub messages: MessageLimits,
}

#[derive(Debug, Clone)]
pub enum UpstreamConfig {
    Http(HttpUpstreamConfig),
    Stdio(StdioUpstreamConfig),
}

#[derive(Debug, Clone)]
pub struct HttpUpstreamConfig {
    /// May carry credentials (userinfo, query values, references): printed redacted only.
    pub url: UpstreamUrl,
    /// Header values, possibly by reference (resolved by `credentials`).
    pub headers: Vec<(HeaderName, SecretRef)>,
    pub oauth: Option<Box<OAuthConfig>>,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    pub stream_idle_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct StdioUpstreamConfig {
    pub command: PathBuf,
    pub args: Vec<String>,
    /// Environment values, possibly by reference (resolved by `credentials`).
    pub env: BTreeMap<String, SecretRef>,
    pub inherit_env: bool,
    pub cwd: Option<PathBuf>,
    pub pool_size: usize,
    pub idle_timeout: Duration,
    pub request_timeout: Duration,
    /// How long a call waits for a stateless client's retry with the input its process asked
    /// for (and how long the `requestState` the client holds is good for).
    pub input_timeout: Duration,
}

/// `[endpoints.NAME.upstream.oauth]`, validated.
#[derive(Debug, Clone)]
pub struct OAuthConfig {
    pub token_url: Uri,
    pub client_id: SecretRef,
    pub client_secret: SecretRef,
    pub scope: Option<String>,
    pub audience: Option<String>,
    pub auth: OAuthAuth,
}

/// How an OAuth client authenticates to the token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OAuthAuth {
    Basic,
    Post,
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

    fn oauth(&self, key: &str, endpoint: &str, raw: RawOAuth) -> Result<OAuthConfig, ConfigError> {
        if !auth::is_fetchable(&raw.token_url) {
            return Err(self.err(
                &format!("{key}.token_url"),
                format!(
                    "{:?} must be an https:// URL (http:// only to this machine): the client secret must not cross the network in the clear",
                    raw.token_url
                ),
            ));
        }
        let token_url: Uri = raw
            .token_url
            .parse()
            .map_err(|_| self.err(&format!("{key}.token_url"), "is not a URL"))?;
        let auth = match raw.auth.as_deref() {
            None | Some("basic") => OAuthAuth::Basic,
            Some("post") => OAuthAuth::Post,
            Some(other) => {
                return Err(self.err(
                    &format!("{key}.auth"),
                    format!("{other:?} is not a client authentication; use \"basic\" or \"post\""),
                ));
            }
        };
        let (client_secret, _) = self.secret(
            &format!("{key}.client_secret"),
            Some(endpoint),
            &raw.client_secret,
        )?;
        if !client_secret.has_references() {
            tracing::warn!(
                endpoint,
                "{key}.client_secret is written in the config file; name it by reference (${{env:NAME}} or ${{file:PATH}}) so the file holds no secret"
            );
        }
        Ok(OAuthConfig {
            token_url,
            client_id: self
                .secret(&format!("{key}.client_id"), Some(endpoint), &raw.client_id)?
                .0,
            client_secret,
            scope: raw.scope,
            audience: raw.audience,
            auth,
        })
    }

    fn approvals(&self, raw: RawApprovals) -> Result<ApprovalsConfig, ConfigError> {
        let defaults = ApprovalsConfig::default();
        let timeout = raw.timeout.unwrap_or(defaults.timeout);
        if timeout < Duration::from_secs(1) || timeout > Duration::from_secs(7 * 24 * 3600) {
            return Err(self.err(
                "approvals.timeout",
                "must be between 1s and 7 days (a held call keeps its connection open that long)",
            ));
        }
        let keepalive = raw.keepalive.unwrap_or(defaults.keepalive);
        if keepalive < Duration::from_millis(100) || keepalive > Duration::from_secs(300) {
            return Err(self.err(
                "approvals.keepalive",
                "must be between 100ms and 5m (proxies close connections that stay silent longer)",
            ));
        }
        for (i, a) in raw.approvers.iter().enumerate() {
            if a.trim().is_empty() {
                return Err(self.err(
                    &format!("approvals.approvers.{i}"),
                    "an approver's name must not be empty",
                ));
            }
        }
        let webhooks = raw
            .webhooks
            .into_iter()
            .enumerate()
            .map(|(i, w)| self.webhook(i, w))
            .collect::<Result<Vec<_>, _>>()?;
        let show = match raw.show.as_deref() {
            None | Some("arguments") => ShowArguments::AsSent,
            Some("masked") => ShowArguments::Masked,
            Some(other) => {
                return Err(self.err(
                    "approvals.show",
                    format!(
                        "{other:?} is not a view of a held call; use \"arguments\" (as the upstream will receive them) or \"masked\" (the log's masked copy)"
                    ),
                ));
            }
        };
        Ok(ApprovalsConfig {
            timeout,
            keepalive,
            approvers: raw.approvers,
            webhooks,
            show,
        })
    }

    fn webhook(&self, i: usize, raw: RawWebhook) -> Result<WebhookConfig, ConfigError> {
        let key = format!("approvals.webhooks.{i}");
        // The URL is a secret: errors name the key, never the value. It and the header values
        // may be references, resolved now.
        let (_, url_text) = self.secret(&format!("{key}.url"), None, &raw.url)?;
        if !auth::is_fetchable(&url_text) {
            return Err(self.err(
                &format!("{key}.url"),
                "must be an https:// URL (http:// only to this machine): approval details must not cross the network in the clear",
            ));
        }
        let url: Uri = url_text
            .parse()
            .map_err(|_| self.err(&format!("{key}.url"), "is not a URL"))?;
        let format = match raw.format.as_deref() {
            None | Some("json") => WebhookFormat::Json,
            Some("slack") => WebhookFormat::Slack,
            Some(other) => {
                return Err(self.err(
                    &format!("{key}.format"),
                    format!("{other:?} is not a webhook format; use \"json\" or \"slack\""),
                ));
            }
        };
        let attempts = raw.attempts.unwrap_or(5);
        if !(1..=20).contains(&attempts) {
            return Err(self.err(&format!("{key}.attempts"), "must be between 1 and 20"));
        }
        let headers = raw
            .headers
            .into_iter()
            .map(|(k, v)| {
                let hkey = format!("{key}.headers.{k}");
                let name = HeaderName::from_bytes(k.as_bytes())
                    .map_err(|_| self.err(&hkey, format!("{k:?} is not a header name")))?;
                let (_, v) = self.secret(&hkey, None, &v)?;
                let value = HeaderValue::from_str(&v).map_err(|_| {
                    self.err(&hkey, "the value has characters not allowed in a header")
                })?;
                Ok((name, value))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(WebhookConfig {
            url,
            format,
            headers,
            attempts,
        })
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
        let policy = self.policy(raw.policy)?;
        let approvals = self.approvals(raw.approvals)?;
        let limits = self.limits(raw.limits)?;
        let witness = raw.witness.map(|w| self.witness(w)).transpose()?;
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
            explorer,
        })
    }

    fn audit(&self, raw: RawAudit, data_dir: &Path) -> Result<AuditConfig, ConfigError> {
        let durability = match raw.durability.as_deref() {
            None | Some("fsync") => Durability::Fsync,
            Some("none") => Durability::None,
            Some(other) => {
                return Err(self.err(
                    "audit.durability",
                    format!(
                        "{other:?} is not a durability; use \"fsync\" or \"none\" (benchmarks only)"
                    ),
                ));
            }
        };
        if let Some(origin) = &raw.origin
            && tlog::note::check_key_name(origin).is_err()
        {
            return Err(self.err(
                    "audit.origin",
                    format!("{origin:?} cannot name a log: use a non-empty name without spaces or '+', like \"ci.example.com/custody\""),
                ));
        }
        let checkpoint_interval = raw.checkpoint_interval.unwrap_or(Duration::from_secs(1));
        if checkpoint_interval < Duration::from_millis(10) {
            return Err(self.err("audit.checkpoint_interval", "must be at least 10ms"));
        }
        let heartbeat_interval = raw.heartbeat_interval.unwrap_or(Duration::from_secs(60));
        if heartbeat_interval < checkpoint_interval {
            return Err(self.err(
                "audit.heartbeat_interval",
                "must not be shorter than checkpoint_interval",
            ));
        }
        let scrub_interval = match raw.scrub_interval {
            None => Some(Duration::from_secs(24 * 60 * 60)),
            Some(d) if d.is_zero() => None,
            Some(d) if d < Duration::from_secs(1) => {
                return Err(self.err(
                    "audit.scrub_interval",
                    "must be at least 1s (or \"0s\" to turn the scrub off)",
                ));
            }
            Some(d) => Some(d),
        };
        if let Some(r) = raw.retention
            && r < Duration::from_secs(60 * 60)
        {
            return Err(self.err(
                "audit.retention",
                "must be at least 1h (payloads younger than that are still being read by calls and approvals); leave it out to keep payloads",
            ));
        }
        for (i, name) in raw.erasers.iter().enumerate() {
            if name.trim().is_empty() {
                return Err(self.err(
                    &format!("audit.erasers.{i}"),
                    "must name a principal (a static token's name or an OIDC principal's name)",
                ));
            }
        }
        let tiles_prefix = raw.tiles_prefix.unwrap_or_else(|| "/log".into());
        let reserved = ["/mcp", "/api", "/.well-known", "/healthz", "/readyz"];
        if !tiles_prefix.starts_with('/')
            || tiles_prefix.len() < 2
            || tiles_prefix.ends_with('/')
            || !tiles_prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"/-_.".contains(&b))
            || tiles_prefix.contains("//")
            || reserved
                .iter()
                .any(|r| tiles_prefix == *r || tiles_prefix.starts_with(&format!("{r}/")))
        {
            return Err(self.err(
                "audit.tiles_prefix",
                format!("{tiles_prefix:?} cannot serve the tiles: use a path like \"/log\" (a leading /, no trailing /, letters, digits, - _ . /, not under /mcp, /api or /.well-known)"),
            ));
        }
        Ok(AuditConfig {
            tiles_prefix,
            tiles_public: raw.tiles_public.unwrap_or(true),
            durability,
            origin: raw.origin,
            key_file: raw.key_file.unwrap_or_else(|| data_dir.join("log.key")),
            checkpoint_interval,
            heartbeat_interval,
            scrub_interval,
            retention: raw.retention,
            erasers: raw.erasers,
            predecessor: raw.predecessor,
        })
    }

    fn server(&self, raw: RawServer) -> Result<ServerConfig, ConfigError> {
        let limits = self.server_limits(&raw)?;
        let listen_text = raw.listen.as_deref().unwrap_or(DEFAULT_LISTEN);
        let listen: SocketAddr = listen_text.parse().map_err(|_| {
            self.err(
                "server.listen",
                format!(
                    "{listen_text:?} is not an address; write host:port, e.g. \"127.0.0.1:8080\""
                ),
            )
        })?;
        let loopback_names = ["localhost", "127.0.0.1", "[::1]"];
        let allowed_hosts = match raw.allowed_hosts {
            Some(hosts) => {
                if hosts.is_empty() {
                    return Err(self.err("server.allowed_hosts", "must list at least one host"));
                }
                hosts.into_iter().map(|h| h.to_ascii_lowercase()).collect()
            }
            None if listen.ip().is_loopback() => {
                loopback_names.iter().map(|s| s.to_string()).collect()
            }
            None => {
                return Err(self.err(
                    "server.allowed_hosts",
                    format!(
                        "listening on {listen} (not loopback) needs allowed_hosts: the Host names clients use to reach the gateway"
                    ),
                ));
            }
        };
        let allowed_origins = match raw.allowed_origins {
            Some(list) => list
                .iter()
                .enumerate()
                .map(|(i, o)| {
                    OriginPattern::parse(o).ok_or_else(|| {
                        self.err(
                            &format!("server.allowed_origins.{i}"),
                            format!(
                                "{o:?} is not an origin; write scheme://host[:port], port may be *"
                            ),
                        )
                    })
                })
                .collect::<Result<Vec<_>, _>>()?,
            None => loopback_names
                .iter()
                .filter_map(|h| OriginPattern::parse(&format!("http://{h}:*")))
                .collect(),
        };
        let max_message_bytes = match (raw.max_message_bytes, raw.max_body_bytes) {
            (Some(_), Some(_)) => {
                return Err(self.err(
                    "server.max_body_bytes",
                    "is the former name of server.max_message_bytes; set only max_message_bytes",
                ));
            }
            (Some(v), None) => {
                messages::message_bytes(v).map_err(|e| self.err("server.max_message_bytes", e))?
            }
            (None, Some(v)) => {
                messages::message_bytes(v).map_err(|e| self.err("server.max_body_bytes", e))?
            }
            (None, None) => messages::DEFAULT_MAX_MESSAGE_BYTES,
        };
        let max_batch = match raw.max_batch {
            Some(v) => messages::batch(v).map_err(|e| self.err("server.max_batch", e))?,
            None => messages::DEFAULT_MAX_BATCH,
        };
        let max_json_depth = raw.max_json_depth.unwrap_or(64);
        // serde_json reads at most 127 levels: a deeper message would parse for one reader and
        // not for another.
        if !(8..=120).contains(&max_json_depth) {
            return Err(self.err("server.max_json_depth", "must be between 8 and 120"));
        }
        let public_url = match raw.public_url {
            Some(u) => {
                let parsed = url::Url::parse(&u).ok().filter(|p| {
                    matches!(p.scheme(), "http" | "https")
                        && p.host().is_some()
                        && p.query().is_none()
                });
                if parsed.is_none() {
                    return Err(self.err(
                        "server.public_url",
                        format!("{u:?} must be an absolute http:// or https:// URL, like \"https://custody.example.com\""),
                    ));
                }
                Some(u.trim_end_matches('/').to_string())
            }
            None => None,
        };
        Ok(ServerConfig {
            listen,
            public_url,
            data_dir: raw
                .data_dir
                .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
            allowed_hosts,
            allowed_origins,
            messages: MessageLimits {
                max_message_bytes,
                max_batch,
                max_json_depth,
            },
            session_idle_timeout: raw
                .session_idle_timeout
                .unwrap_or(Duration::from_secs(30 * 60)),
            stdio_session_idle_timeout: match raw.stdio_session_idle_timeout {
                Some(d) if d < Duration::from_secs(1) => {
                    return Err(
                        self.err("server.stdio_session_idle_timeout", "must be at least 1s")
                    );
                }
                Some(d) => d,
                None => Duration::from_secs(5 * 60),
            },
            shutdown_grace: raw.shutdown_grace.unwrap_or(Duration::from_secs(10)),
            worker_threads: match raw.worker_threads {
                Some(0) => {
                    return Err(self.err("server.worker_threads", "must be at least 1"));
                }
                Some(n) => n,
                None => 1,
            },
            limits,
        })
    }

    fn endpoint(
        &self,
        name: String,
        raw: RawEndpoint,
        defaults: MessageLimits,
    ) -> Result<EndpointConfig, ConfigError> {
        let key = format!("endpoints.{name}");
        let mut messages = defaults;
        if let Some(v) = raw.max_message_bytes {
            messages.max_message_bytes = messages::message_bytes(v)
                .map_err(|e| self.err(&format!("{key}.max_message_bytes"), e))?;
        }
        if let Some(v) = raw.max_batch {
            messages.max_batch =
                messages::batch(v).map_err(|e| self.err(&format!("{key}.max_batch"), e))?;
        }
        let valid_name = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            && !name.starts_with('.');
        if !valid_name {
            return Err(self.err(
                &key,
                format!("endpoint name {name:?} must be 1-64 characters of A-Z a-z 0-9 - _ . (it becomes the URL path /mcp/{name})"),
            ));
        }
        let ukey = format!("{key}.upstream");
        let name_of = name.clone();
        let upstream = match raw.upstream {
            RawUpstream::Http {
                url,
                headers,
                oauth,
                connect_timeout,
                request_timeout,
                stream_idle_timeout,
            } => {
                // The URL may carry credentials (userinfo, query values, references): errors
                // name the key, never the value.
                let url_key = format!("{ukey}.url");
                let (_, url_text, referenced) =
                    self.secret_parts(&url_key, Some(&name_of), &url)?;
                let url =
                    UpstreamUrl::parse(&url_text, referenced).map_err(|e| self.err(&url_key, e))?;
                let headers = headers
                    .into_iter()
                    .map(|(k, v)| {
                        let hkey = format!("{ukey}.headers.{k}");
                        let name = HeaderName::from_bytes(k.as_bytes())
                            .map_err(|_| self.err(&hkey, format!("{k:?} is not a header name")))?;
                        if is_reserved_upstream_header(&name) {
                            return Err(self.err(
                                &hkey,
                                format!("{k} is set by the gateway and cannot be configured"),
                            ));
                        }
                        let (value, resolved) = self.secret(&hkey, Some(&name_of), &v)?;
                        if HeaderValue::from_str(&resolved).is_err() {
                            return Err(
                                self.err(&hkey, "the value has characters not allowed in a header")
                            );
                        }
                        Ok((name, value))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                let oauth = oauth
                    .map(|o| {
                        self.oauth(&format!("{ukey}.oauth"), &name_of, o)
                            .map(Box::new)
                    })
                    .transpose()?;
                let authorization = headers
                    .iter()
                    .any(|(n, _)| n == http::header::AUTHORIZATION);
                if url.has_userinfo() && (oauth.is_some() || authorization) {
                    return Err(self.err(
                        &url_key,
                        "the URL carries a user and password (sent as Authorization: Basic) and the endpoint also sets Authorization (a header or oauth); keep one",
                    ));
                }
                UpstreamConfig::Http(HttpUpstreamConfig {
                    url,
                    headers,
                    oauth,
                    connect_timeout: connect_timeout.unwrap_or(Duration::from_secs(5)),
                    request_timeout: request_timeout.unwrap_or(Duration::from_secs(60)),
                    stream_idle_timeout: stream_idle_timeout.unwrap_or(Duration::from_secs(300)),
                })
            }
            RawUpstream::Stdio {
                command,
                args,
                env,
                inherit_env,
                cwd,
                pool_size,
                idle_timeout,
                request_timeout,
                input_timeout,
            } => {
                if command.trim().is_empty() {
                    return Err(self.err(&format!("{ukey}.command"), "must name a program"));
                }
                let pool_size = pool_size.unwrap_or(2);
                if !(1..=64).contains(&pool_size) {
                    return Err(self.err(&format!("{ukey}.pool_size"), "must be between 1 and 64"));
                }
                let input_timeout = input_timeout.unwrap_or(Duration::from_secs(60));
                if !(Duration::from_secs(1)..=Duration::from_secs(3600)).contains(&input_timeout) {
                    return Err(self.err(
                        &format!("{ukey}.input_timeout"),
                        "must be between 1s and 1h",
                    ));
                }
                if let Some(dir) = &cwd
                    && !dir.is_dir()
                {
                    return Err(self.err(
                        &format!("{ukey}.cwd"),
                        format!("{} is not a directory", dir.display()),
                    ));
                }
                let env = env
                    .into_iter()
                    .map(|(k, v)| {
                        let (value, _) =
                            self.secret(&format!("{ukey}.env.{k}"), Some(&name_of), &v)?;
                        Ok((k, value))
                    })
                    .collect::<Result<BTreeMap<_, _>, ConfigError>>()?;
                UpstreamConfig::Stdio(StdioUpstreamConfig {
                    command: PathBuf::from(command),
                    args,
                    env,
                    inherit_env: inherit_env.unwrap_or(false),
                    cwd,
                    pool_size,
                    idle_timeout: idle_timeout.unwrap_or(Duration::from_secs(600)),
                    request_timeout: request_timeout.unwrap_or(Duration::from_secs(60)),
                    input_timeout,
                })
            }
        };
        let mask_client = self.mask_rules(
            &format!("{key}.mask_client"),
            raw.mask_client,
            raw.detectors_client,
            &format!("{key}.detectors_client"),
            false,
        )?;
        let mask_audit = self.mask_rules(
            &format!("{key}.mask_audit"),
            raw.mask_audit,
            raw.detectors_audit,
            &format!("{key}.detectors_audit"),
            true,
        )?;
        let limits = self.endpoint_limits(&format!("{key}.limits"), raw.limits, &upstream)?;
        Ok(EndpointConfig {
            limits,
            name,
            description: raw.description,
            upstream,
            mask_client,
            mask_audit,
            messages,
        })
    }
}

/// Headers the gateway owns on upstream requests.
fn is_reserved_upstream_header(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "host"
            | "content-length"
            | "content-type"
            | "accept"
            | "transfer-encoding"
            | "connection"
            | "mcp-session-id"
            | "mcp-protocol-version"
            | "mcp-method"
            | "mcp-name"
            | "last-event-id"
    )
}

#[cfg(test)]
mod tests;
