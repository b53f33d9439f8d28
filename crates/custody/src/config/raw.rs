//! The configuration file as written: plain serde types, no I/O, no validation beyond types.
//! Unknown keys are errors. Every field is documented here; `docs/configuration.md` mirrors it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Listener, limits and data directory.
    #[serde(default)]
    pub server: RawServer,
    /// The audit log.
    #[serde(default)]
    pub audit: RawAudit,
    /// Who may call: OIDC issuers and static tokens. Required; see [`RawAuth`].
    pub auth: Option<RawAuth>,
    /// Masking: where the masking key is.
    #[serde(default)]
    pub masking: RawMasking,
    /// Access policy: Cedar files. Without it every authenticated caller may call everything.
    pub policy: Option<RawPolicy>,
    /// Approvals of calls policy holds (`@approval("required")`): who approves, how long a
    /// call waits, who is notified.
    #[serde(default)]
    pub approvals: RawApprovals,
    /// `[explorer]`: who may read the log through the explorer API.
    #[serde(default)]
    pub explorer: RawExplorer,
    /// MCP endpoints by name; each is served at `/mcp/{name}`.
    #[serde(default)]
    pub endpoints: BTreeMap<String, RawEndpoint>,
    /// What an outsider may make the gateway spend: see [`super::limits::RawLimits`].
    #[serde(default)]
    pub limits: super::limits::RawLimits,
    /// Witnesses that cosign the log's checkpoints (C2SP tlog-witness); see
    /// [`super::witness::RawWitness`]. Without it no witness is asked.
    pub witness: Option<super::witness::RawWitness>,
    /// Sinks that stream committed entries; see [`super::export::RawExport`].
    #[serde(default)]
    pub export: Vec<super::export::RawExport>,
    /// `/metrics` (Prometheus): whether, where, and behind which token; see
    /// [`super::metrics::RawMetrics`].
    #[serde(default)]
    pub metrics: super::metrics::RawMetrics,
    /// The web page at `/ui/`; see [`super::ui::RawUi`].
    #[serde(default)]
    pub ui: super::ui::RawUi,
    /// OpenTelemetry traces; see [`super::telemetry::RawTelemetry`].
    #[serde(default)]
    pub telemetry: super::telemetry::RawTelemetry,
}

/// `[auth]`: every call presents a bearer token that one of these accepts. A file without
/// `[auth]` is refused: the gateway never runs open by omission.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuth {
    /// Accept calls without an `Authorization` header, as the anonymous principal. A token that
    /// is sent is still checked. Default `false`; for local testing only.
    pub anonymous: Option<bool>,
    /// `[[auth.oidc]]`: OIDC issuers (GitHub Actions, GitLab, any other) whose JWTs are accepted.
    #[serde(default)]
    pub oidc: Vec<RawOidc>,
    /// `[[auth.static]]`: static bearer tokens, kept only as SHA-256 hashes
    /// (`custody token create NAME` makes one).
    #[serde(default, rename = "static")]
    pub static_tokens: Vec<RawStaticToken>,
    /// Verified tokens remembered (by hash, until they expire) so a repeated token skips the
    /// signature check. Default 10000; 0 turns the cache off.
    pub token_cache_size: Option<usize>,
}

/// `[policy]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPolicy {
    /// Cedar policy files, relative to this config file. Calls are denied unless a policy
    /// permits them.
    #[serde(default)]
    pub files: Vec<PathBuf>,
    /// Reload when a file changes (checked every second). Default `true`. SIGHUP always reloads.
    pub watch: Option<bool>,
}

/// `[[auth.oidc]]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOidc {
    /// `"github-actions"`, `"gitlab"` or `"generic"` (default): fills in the issuer, the
    /// claims kept on the principal and its name.
    pub preset: Option<String>,
    /// The `iss` of the tokens; required for `generic`.
    pub issuer: Option<String>,
    /// Accepted `aud` values; a token must name at least one. Required.
    #[serde(default)]
    pub audiences: Vec<String>,
    /// Where the issuer's keys are. Default: the `jwks_uri` of its OIDC discovery document.
    pub jwks_uri: Option<String>,
    /// Accepted signature algorithms. Default `["RS256"]` for the presets; `["RS256", "ES256"]`
    /// for `generic`. `none` and HMAC (`HS*`) are never accepted.
    pub algorithms: Option<Vec<String>>,
    /// Clock difference tolerated on `exp`, `nbf` and `iat`. Default `60s`.
    #[serde(default, with = "humantime_serde")]
    pub clock_skew: Option<Duration>,
    /// Claims a token must carry with these values: a string, number or boolean, or a list of
    /// accepted values (e.g. `repository_owner = "acme"`).
    #[serde(default)]
    pub required_claims: BTreeMap<String, toml::Value>,
    /// Claims kept on the principal and written to every audit entry. Default: the preset's
    /// list (none for `generic`).
    pub claims: Option<Vec<String>>,
    /// The principal's display name, with `{claim}` placeholders. Default: the preset's
    /// (`{sub}` for `generic`).
    pub name: Option<String>,
    /// Claims that must keep their values for a session to continue with a fresh token, on top
    /// of `iss` and `sub`. Default: `["run_id", "run_attempt"]` for GitHub Actions,
    /// `["pipeline_id"]` for GitLab, none for `generic`.
    pub session_binding: Option<Vec<String>>,
    /// Least time between two key refreshes caused by an unknown `kid`. Default `10s`.
    #[serde(default, with = "humantime_serde")]
    pub jwks_min_refresh: Option<Duration>,
    /// Keys are fetched again at least this often, so a removed key stops working. Default `1h`.
    #[serde(default, with = "humantime_serde")]
    pub jwks_max_age: Option<Duration>,
}

/// `[[auth.static]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStaticToken {
    /// The principal's name (its subject), e.g. `alice` or `nightly-job`.
    pub name: String,
    /// SHA-256 of the token, 64 hex digits.
    pub sha256: String,
}

/// `[audit]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAudit {
    /// `"fsync"` (default): an entry is on stable storage before the message it records moves
    /// on. `"none"`: no fsync, for benchmarks only; the gateway warns and the log records it.
    pub durability: Option<String>,
    /// The log's name in its checkpoints and key (`host/path`, no spaces or `+`). Default:
    /// generated on first start and kept with the key.
    pub origin: Option<String>,
    /// The log's Ed25519 signing key file. Default `<data_dir>/log.key`, created on first start.
    pub key_file: Option<PathBuf>,
    /// Longest time between a new entry and a checkpoint that covers it. Default `1s`.
    #[serde(default, with = "humantime_serde")]
    pub checkpoint_interval: Option<Duration>,
    /// While idle, a heartbeat entry and checkpoint at least this often. Default `60s`.
    #[serde(default, with = "humantime_serde")]
    pub heartbeat_interval: Option<Duration>,
    /// How often the whole stored log is verified again in the background. Default `1d`;
    /// `"0s"` turns the scrub off.
    #[serde(default, with = "humantime_serde")]
    pub scrub_interval: Option<Duration>,
    /// Payloads (messages, recorded headers) older than this are erased in recorded batches;
    /// headers and the tree are kept. Version-2 logs only. Default: kept for good.
    #[serde(default, with = "humantime_serde")]
    pub retention: Option<Duration>,
    /// Principal names that may erase a payload through the API
    /// (`POST /api/v1/log/entries/{index}/erase`). Default: none.
    #[serde(default)]
    pub erasers: Vec<String>,
    /// Where the log is served as C2SP tlog-tiles. Default `/log`.
    pub tiles_prefix: Option<String>,
    /// Whether the tiles are readable without a token. Default `true`: they hold the
    /// entries' headers and commitments, never payloads.
    pub tiles_public: Option<bool>,
    /// Only for a new log that follows one whose entries were lost: a file holding the old
    /// log's last checkpoint (its `checkpoints.jsonl`, `log.head`, or a signed note). The new
    /// log's first entry names it.
    pub predecessor: Option<PathBuf>,
    /// Where the log is stored: the embedded SQLite log in the data directory (default), or
    /// `"postgres://..."`, a log several replicas share. A URL with a password must be named by
    /// reference (`${env:NAME}`, `${file:PATH}`).
    pub store: Option<String>,
    /// This replica's name in the shared log (which replica wrote each entry). Default: the
    /// host's name.
    pub replica: Option<String>,
}

/// `[server]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    /// Address to listen on, `host:port`. Default `127.0.0.1:8080`.
    pub listen: Option<String>,
    /// The URL clients use to reach the gateway (`https://custody.example.com`), when it differs
    /// from what they send in `Host` (behind a proxy). Used in RFC 9728 metadata.
    pub public_url: Option<String>,
    /// Where the gateway keeps its state. Default `./custody-data`.
    pub data_dir: Option<PathBuf>,
    /// `Host` header values accepted (DNS-rebinding protection), with or without a port.
    /// Default: `localhost`, `127.0.0.1`, `[::1]` when listening on loopback; required otherwise.
    pub allowed_hosts: Option<Vec<String>>,
    /// `Origin` values accepted when a client sends one (`scheme://host[:port]`, `*` for a port).
    /// Default: `http://localhost:*`, `http://127.0.0.1:*`, `http://[::1]:*`.
    pub allowed_origins: Option<Vec<String>>,
    /// Largest message, in bytes, in either direction on every transport (a request body, a
    /// JSON answer, one SSE event, one stdio line), for endpoints that do not set their own.
    /// Default 4 MiB; at most the log's entry limit less 1 MiB.
    pub max_message_bytes: Option<u64>,
    /// The former name of `max_message_bytes` (which takes its place); set one or the other.
    pub max_body_bytes: Option<u64>,
    /// Most messages in a JSON-RPC batch (2025-03-26), for endpoints that do not set their own.
    /// Default 64.
    pub max_batch: Option<usize>,
    /// Deepest JSON nesting accepted in a message. Default 64.
    pub max_json_depth: Option<usize>,
    /// A session unused for this long is closed (its upstream session or process too).
    /// Default `30m`.
    #[serde(default, with = "humantime_serde")]
    pub session_idle_timeout: Option<Duration>,
    /// A session of a stdio endpoint (which holds a process of its own) unused for this long
    /// is closed, and its process stopped. Default `5m`: clients that never send DELETE must
    /// not keep processes for half an hour.
    #[serde(default, with = "humantime_serde")]
    pub stdio_session_idle_timeout: Option<Duration>,
    /// Threads that relay calls. Default: the cores this process may use (its CPU quota
    /// included).
    pub worker_threads: Option<usize>,
    /// On SIGTERM or Ctrl-C, how long in-flight calls may take to finish. Default `10s`.
    #[serde(default, with = "humantime_serde")]
    pub shutdown_grace: Option<Duration>,
    /// Client connections open at once. When full, a new connection closes the one idle
    /// longest; only when none is idle is it refused (503). Default 1024, and never more than
    /// the process's file limit allows (less 256 kept for upstreams and the log).
    pub max_connections: Option<usize>,
    /// A connection with no request in progress is closed after this. Default `60s`.
    #[serde(default, with = "humantime_serde")]
    pub idle_timeout: Option<Duration>,
    /// A request's headers must arrive whole within this of their first byte, or the
    /// connection is closed (slowloris). Default `10s`.
    #[serde(default, with = "humantime_serde")]
    pub header_read_timeout: Option<Duration>,
    /// Largest request head (request line and headers) in bytes; larger gets 431. Default
    /// 16384.
    pub max_header_bytes: Option<usize>,
    /// Most header fields in a request; more gets 431. Default 100.
    pub max_headers: Option<usize>,
}

/// `[endpoints.NAME]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEndpoint {
    /// Free text shown in listings.
    pub description: Option<String>,
    /// The MCP server behind this endpoint.
    pub upstream: RawUpstream,
    /// `[[endpoints.NAME.mask_client]]`: what the client receives masked (and the log too).
    #[serde(default)]
    pub mask_client: Vec<RawMaskRule>,
    /// `[[endpoints.NAME.mask_audit]]`: masked in the log only, on top of `mask_client`.
    #[serde(default)]
    pub mask_audit: Vec<RawMaskRule>,
    /// Secret detectors on what the client receives: `true`, `false` (default) or a list of
    /// detector names.
    pub detectors_client: Option<RawDetectors>,
    /// Secret detectors on what the log stores: `true` (default), `false` or a list.
    pub detectors_audit: Option<RawDetectors>,
    /// Caps on this endpoint's sessions and processes: see
    /// [`super::limits::RawEndpointLimits`].
    pub limits: Option<super::limits::RawEndpointLimits>,
    /// Largest message in either direction, in bytes. Default `server.max_message_bytes`.
    pub max_message_bytes: Option<u64>,
    /// Most messages in a JSON-RPC batch. Default `server.max_batch`.
    pub max_batch: Option<usize>,
}

/// A masking rule.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMaskRule {
    /// An RFC 9535 JSONPath over the whole JSON-RPC message, e.g. `$..password`.
    pub path: Option<String>,
    /// Or: an upstream response header, e.g. `x-debug-token` (recorded in the log, never
    /// relayed).
    pub header: Option<String>,
    /// `redact` (default), `hmac` or `partial`.
    pub action: Option<String>,
    /// For `partial`: how many trailing characters stay. Default 4.
    pub keep: Option<usize>,
}

/// `true`/`false`, or the detectors by name.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawDetectors {
    All(bool),
    Named(Vec<String>),
}

/// `[approvals]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawApprovals {
    /// How long a held call waits for its decision before it fails. Default `10m`.
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
    /// How often a waiting client hears from the gateway (an SSE comment, and a progress
    /// notification when it sent a progress token). Default `15s`.
    #[serde(default, with = "humantime_serde")]
    pub keepalive: Option<Duration>,
    /// Principal names (as rendered by their issuer's `name` template, or a static token's
    /// name) who may approve any held call. Cedar policies on `Action::"approve"` grant more
    /// precisely.
    #[serde(default)]
    pub approvers: Vec<String>,
    /// `[[approvals.webhooks]]`: where a new pending approval is announced.
    #[serde(default)]
    pub webhooks: Vec<RawWebhook>,
    /// What approvers see of a held call's arguments: `"arguments"` (default) as the upstream
    /// will receive them, only the credentials the gateway holds scrubbed; `"masked"` the
    /// log's masked copy, with the number of values hidden.
    pub show: Option<String>,
}

/// `[[approvals.webhooks]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWebhook {
    /// Where to POST: `https://`, or `http://` to this machine. Treated as a secret (Slack's
    /// URLs are credentials): only its host appears in logs and the audit trail.
    pub url: String,
    /// `"json"` (default): custody's own payload; `"slack"`: a Slack incoming-webhook message.
    pub format: Option<String>,
    /// Extra request headers (e.g. `Authorization`).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Delivery attempts before giving up (default 5), with backoff 1 s, 2 s, 4 s, ... between.
    pub attempts: Option<u32>,
}

/// `[endpoints.NAME.upstream.oauth]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOAuth {
    /// The token endpoint: `https://`, or `http://` to this machine.
    pub token_url: String,
    /// The client id; may be a reference.
    pub client_id: String,
    /// The client secret; write it as a reference (`${env:...}` or `${file:...}`).
    pub client_secret: String,
    /// The `scope` parameter, if the server wants one.
    pub scope: Option<String>,
    /// The `audience` parameter (Auth0, Okta), if the server wants one.
    pub audience: Option<String>,
    /// How the client authenticates: `"basic"` (HTTP Basic, default) or `"post"` (in the form).
    pub auth: Option<String>,
}

/// `[masking]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMasking {
    /// The HMAC key of `hmac` rules and `custody audit-hash`. Default `<data_dir>/mask.key`,
    /// created (mode 0600) on first start.
    pub key_file: Option<PathBuf>,
}

/// `[endpoints.NAME.upstream]`, chosen by `transport`.
#[derive(Debug, Deserialize)]
#[serde(tag = "transport", rename_all = "lowercase", deny_unknown_fields)]
pub enum RawUpstream {
    /// An MCP server over Streamable HTTP.
    Http {
        /// The server's MCP endpoint URL (`http` or `https`).
        url: String,
        /// Extra request headers sent to the upstream (for example its API key). Values may
        /// name secrets: `${env:NAME}`, `${file:PATH}`.
        #[serde(default)]
        headers: BTreeMap<String, String>,
        /// OAuth 2.0 client credentials: the gateway fetches a token and sends it as
        /// `Authorization: Bearer`.
        oauth: Option<RawOAuth>,
        /// Time allowed to open a connection. Default `5s`.
        #[serde(default, with = "humantime_serde")]
        connect_timeout: Option<Duration>,
        /// Time allowed for the upstream to start answering a request. Default `60s`.
        #[serde(default, with = "humantime_serde")]
        request_timeout: Option<Duration>,
        /// Longest silence allowed on a response stream before the call fails. Default `5m`.
        #[serde(default, with = "humantime_serde")]
        stream_idle_timeout: Option<Duration>,
    },
    /// A local MCP server process speaking newline-delimited JSON-RPC on stdin/stdout.
    Stdio {
        /// Program to run (looked up on `PATH` if not a path).
        command: String,
        /// Its arguments.
        #[serde(default)]
        args: Vec<String>,
        /// Extra environment variables. Values may name secrets: `${env:NAME}`,
        /// `${file:PATH}`.
        #[serde(default)]
        env: BTreeMap<String, String>,
        /// Pass the gateway's own environment on to the process. Default `false`: only
        /// `PATH`, `HOME`, `LANG`, `TZ` and `env` are set.
        inherit_env: Option<bool>,
        /// Working directory. Default: the gateway's.
        cwd: Option<PathBuf>,
        /// Processes kept for stateless (2026-07-28) requests. Default 2.
        pool_size: Option<usize>,
        /// A process with nothing to do for this long is stopped. Default `10m`.
        #[serde(default, with = "humantime_serde")]
        idle_timeout: Option<Duration>,
        /// Time allowed for the process to answer a request. Default `60s`.
        #[serde(default, with = "humantime_serde")]
        request_timeout: Option<Duration>,
        /// How long a pooled process's call waits for a stateless client to come back with the
        /// input the process asked it for (a multi round-trip request). Default `60s`.
        #[serde(default, with = "humantime_serde")]
        input_timeout: Option<Duration>,
    },
}

/// `[explorer]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawExplorer {
    /// Principal names (as their issuer renders them, or a static token's name) who may read
    /// every entry of the log through the explorer API: headers and masked payloads.
    #[serde(default)]
    pub auditors: Vec<String>,
}
