//! The command line as clap parses it: the commands, their subcommands and arguments.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(
    name = "custody",
    version,
    about = "A gateway between CI/CD pipelines and MCP servers that records every message in a tamper-evident log"
)]
pub(super) struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "CUSTODY_LOG_FORMAT")]
    pub(super) log_format: LogFormat,
    #[command(subcommand)]
    pub(super) command: Command,
}

#[derive(Subcommand)]
pub(super) enum ReceiptCommand {
    /// Check a proof offline with only the log's verifier key.
    Verify {
        /// The log's verifier key (`name+keyid+base64`).
        #[arg(long)]
        key: String,
        /// The leaf hash the receipt in the response's _meta names (hex); default: the one in
        /// the proof.
        #[arg(long)]
        leaf: Option<String>,
        /// A C2SP tlog-policy file: the proof's checkpoint must also carry cosignatures of
        /// the witnesses it lists that meet its quorum.
        #[arg(long)]
        witness_policy: Option<PathBuf>,
        /// The tlog-proof file.
        proof: PathBuf,
    },
}

#[derive(Subcommand)]
pub(super) enum WitnessCommand {
    /// Create a witness's Ed25519 cosigning key in DIR (mode 0600; never overwrites one) and
    /// print its verifier key.
    Keygen {
        /// The witness's data directory.
        #[arg(long)]
        data: PathBuf,
        /// The witness's name (`host/path`, no spaces or '+'), e.g. witness.example.com/w1.
        #[arg(long)]
        name: String,
    },
    /// Run a C2SP tlog-witness: cosign checkpoints of the accepted logs that extend what it
    /// cosigned before, and never anything else.
    Serve {
        /// Address to listen on (default 127.0.0.1:7380).
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
        /// The witness's data directory (key and state).
        #[arg(long)]
        data: Option<PathBuf>,
        /// A log to accept: its verifier key (origin+keyid+base64). Repeatable.
        #[arg(long)]
        accept: Vec<String>,
        /// A TOML file with `listen`, `data` and `accept = [...]`.
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
pub(super) enum TokenCommand {
    /// Print a new static token and the `[[auth.static]]` lines that accept it. The token is
    /// shown once; the config holds only its SHA-256.
    Create {
        /// The principal's name, as it appears in the audit log (e.g. `alice`, `nightly-job`).
        name: String,
    },
}

#[derive(clap::Args)]
pub(super) struct ApprovalsArgs {
    /// The gateway's URL.
    #[arg(
        long,
        global = true,
        env = "CUSTODY_GATEWAY",
        default_value = "http://127.0.0.1:8080"
    )]
    pub(super) gateway: String,
    /// The approver's bearer token (an OIDC token or a static token).
    #[arg(long, global = true, env = "CUSTODY_TOKEN", hide_env_values = true)]
    pub(super) token: Option<String>,
    /// Read the token from this file instead.
    #[arg(long, global = true)]
    pub(super) token_file: Option<PathBuf>,
    /// Print the API's JSON.
    #[arg(long, global = true)]
    pub(super) json: bool,
    #[command(subcommand)]
    pub(super) command: ApprovalsCommand,
}

#[derive(Subcommand)]
pub(super) enum ApprovalsCommand {
    /// Calls waiting for approval that you may decide (or asked for).
    List {
        /// Include recently finished approvals.
        #[arg(long)]
        all: bool,
    },
    /// One approval: the call, who asked, its arguments as the log stores them, the votes.
    Show { id: String },
    /// Approve a held call; with enough approvals it is released.
    Approve {
        id: String,
        #[arg(long)]
        reason: Option<String>,
        /// Approve only if the call's arguments have this SHA-256 (from `show`).
        #[arg(long)]
        digest: Option<String>,
    },
    /// Deny a held call; the pipeline's job gets your name and reason.
    Deny {
        id: String,
        #[arg(long)]
        reason: String,
    },
}

#[derive(Subcommand)]
pub(super) enum PolicyCommand {
    /// Validate the policy files named in the config against custody's schema.
    Check {
        #[arg(long, short, env = "CUSTODY_CONFIG")]
        config: PathBuf,
    },
    /// Print the Cedar schema policies are validated against.
    Schema {
        #[arg(long, short, env = "CUSTODY_CONFIG")]
        config: PathBuf,
    },
    /// Decide one call and print the decision and the deciding policies.
    Eval {
        #[arg(long, short, env = "CUSTODY_CONFIG")]
        config: PathBuf,
        /// A JSON file of token claims (`iss`, `sub`, `repository`, ...); without `iss`, a
        /// static token's principal named `sub`.
        #[arg(long)]
        principal: PathBuf,
        #[arg(long)]
        endpoint: String,
        /// The MCP method, e.g. `tools/call`.
        #[arg(long)]
        method: String,
        /// The tool (tools/call), prompt (prompts/get) or resource URI (resources/read).
        #[arg(long, alias = "target")]
        tool: Option<String>,
        /// The call's arguments, a JSON object.
        #[arg(long)]
        args: Option<String>,
        /// Exit 1 unless the decision is this: allow, deny or needs_approval.
        #[arg(long)]
        expect: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Clone, Copy, ValueEnum)]
pub(super) enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
pub(super) enum Command {
    /// Run the gateway. Without --config it runs the embedded default: 127.0.0.1:8080, data in
    /// ./custody-data, one endpoint `demo` backed by the built-in demo MCP server.
    Serve {
        /// The configuration file (TOML).
        #[arg(long, short, env = "CUSTODY_CONFIG")]
        config: Option<PathBuf>,
        /// Override `server.listen`.
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
    },
    /// Check a configuration file and exit.
    CheckConfig {
        #[arg(long, short, env = "CUSTODY_CONFIG")]
        config: PathBuf,
    },
    /// Verify an audit log: every leaf hash, the tree, every checkpoint's signature, every entry
    /// and request/response pair. Exits 1 naming the first bad entry.
    Verify {
        /// The gateway's data directory.
        #[arg(long, default_value = crate::config::DEFAULT_DATA_DIR)]
        data: PathBuf,
        /// The log's verifier key (`name+keyid+base64`); default: the one stored with the log.
        #[arg(long)]
        key: Option<String>,
        /// A checkpoint kept elsewhere (a signed note, a copy of checkpoints.jsonl or
        /// log.head, or a tlog-proof) that the log must still match. Repeatable.
        #[arg(long)]
        trusted: Vec<PathBuf>,
        /// A C2SP tlog-policy file: the newest checkpoint must carry cosignatures of its
        /// witnesses that meet its quorum (a history rewritten after the witnesses cosigned has
        /// none of its own).
        #[arg(long)]
        witness_policy: Option<PathBuf>,
        /// An evidence file a CI job kept (`custody connect --evidence`): prove every record in
        /// it is still in today's log, unchanged, read from --gateway URL or --data DIR.
        #[arg(long)]
        evidence: Option<PathBuf>,
        /// With --evidence: the gateway whose log to check (its base URL, e.g.
        /// https://custody.example.com).
        #[arg(long)]
        gateway: Option<String>,
        /// Verify from the log's tiles served at this URL (e.g.
        /// https://custody.example.com/log/), without its database; needs --key.
        #[arg(long, conflicts_with_all = ["tiles", "evidence"])]
        url: Option<String>,
        /// Verify from tiles exported to this directory (`custody log export-tiles`); needs
        /// --key.
        #[arg(long, conflicts_with = "evidence")]
        tiles: Option<PathBuf>,
        /// Verify the log replicas share in PostgreSQL (`postgres://…`); needs --key.
        #[arg(long, env = "CUSTODY_VERIFY_DB", conflicts_with_all = ["tiles", "url", "evidence"])]
        db: Option<String>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print audit entries as JSON lines (caller, message, detail embedded as JSON). Reading
    /// only; `custody verify` checks integrity.
    #[command(args_conflicts_with_subcommands = true)]
    Log {
        #[command(subcommand)]
        command: Option<LogCommand>,
        /// The gateway's data directory.
        #[arg(long, default_value = crate::config::DEFAULT_DATA_DIR)]
        data: PathBuf,
        /// Only entries of this kind (request, response, auth_failure, ...).
        #[arg(long)]
        kind: Option<String>,
        /// Start at this index.
        #[arg(long, default_value_t = 0)]
        from: u64,
        /// Print at most this many entries.
        #[arg(long)]
        limit: Option<u64>,
        /// The explorer's filters, format and source (docs/explorer.md).
        #[command(flatten)]
        query: Box<crate::explorer::cli::QueryArgs>,
    },
    /// Print the HMAC a `hmac` masking rule stores for VALUE, to check whether that value
    /// appears in the log without the log holding it.
    AuditHash {
        #[arg(long, short, env = "CUSTODY_CONFIG")]
        config: PathBuf,
        /// The value, exactly as it appeared (a string's text; other JSON values as JSON).
        value: String,
    },
    /// Create a log signing key (mode 0600) and print its verifier key.
    Keygen {
        /// The log's name (`host/path`, no spaces or '+').
        #[arg(long)]
        origin: String,
        /// Where to write the key; the verifier key goes to FILE.pub.
        #[arg(long)]
        out: PathBuf,
        /// For a log that follows one whose entries were lost: the old log's last checkpoint
        /// (its checkpoints.jsonl, log.head or a signed note). Checked here; the new log's
        /// first entry will name it once `[audit] predecessor` points at it.
        #[arg(long)]
        predecessor: Option<PathBuf>,
    },
    /// Work with receipts (C2SP tlog-proof files from /api/v1/log/proof).
    Receipt {
        #[command(subcommand)]
        command: ReceiptCommand,
    },
    /// Work with the access policy: check, schema, eval.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Serve MCP on stdio and relay it to a gateway endpoint with the CI job's own identity:
    /// GitHub Actions' OIDC token when the job may request one, else a token from an
    /// environment variable or a file (GitLab `id_tokens`, a static token).
    Connect {
        /// The endpoint's URL, e.g. https://custody.example.com/mcp/deploy.
        url: String,
        /// The audience of the GitHub Actions token (the gateway's `audiences`).
        #[arg(long, default_value = "custody")]
        audience: String,
        /// The environment variable holding the token when not on GitHub Actions.
        #[arg(long, default_value = "CUSTODY_TOKEN")]
        token_env: String,
        /// A file holding the token, read again when the token nears expiry.
        #[arg(long)]
        token_file: Option<PathBuf>,
        /// When the session ends, write here every receipt of the job's calls with an
        /// inclusion proof of each in the latest (cosigned) checkpoint that covers them, for
        /// `custody verify --evidence` (keep it as a build artifact).
        #[arg(long)]
        evidence: Option<PathBuf>,
    },
    /// List, inspect, approve and deny calls held for approval (through a running gateway).
    Approvals(ApprovalsArgs),
    /// A witness for custody logs (or any C2SP log): keygen, serve.
    Witness {
        #[command(subcommand)]
        command: WitnessCommand,
    },
    /// Static bearer tokens for local use and for people without an identity provider.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Run the built-in MCP server (the embedded default's upstream) on stdio or HTTP.
    #[command(hide = true)]
    DemoServer {
        /// Offer the MCP conformance-suite fixtures instead of the demo tools.
        #[arg(long)]
        conformance: bool,
        /// Serve Streamable HTTP at /mcp on this address instead of stdio.
        #[arg(long)]
        http: Option<std::net::SocketAddr>,
    },
}

#[derive(Subcommand)]
pub(super) enum LogCommand {
    /// Rebuild the search index (`index.sqlite`) from the log. It is derived data: safe to
    /// delete, rebuilt by this or by the gateway.
    Reindex {
        /// The gateway's data directory.
        #[arg(long, default_value = crate::config::DEFAULT_DATA_DIR)]
        data: PathBuf,
    },
    /// Every call of a CI run in order: request and answer paired, duration, decision,
    /// approval and masking.
    Timeline {
        /// The run: its id as the runs API gives it, a GitHub run id or a GitLab pipeline id.
        run: String,
        /// The gateway's data directory.
        #[arg(long, default_value = crate::config::DEFAULT_DATA_DIR)]
        data: PathBuf,
        /// How to print: a table on a terminal, JSON lines otherwise.
        #[arg(long, value_enum)]
        format: Option<crate::explorer::cli::Format>,
        #[command(flatten)]
        remote: crate::explorer::cli::Remote,
    },
    /// Erase an entry's payloads (its message, its recorded headers) for good, recording a
    /// `payload_erased` entry with the reason; the tree and every proof stay valid. Run it
    /// with the gateway stopped; while it runs, use `POST /api/v1/log/entries/{index}/erase`.
    Erase {
        /// The gateway's configuration (its data directory and log key); default: the
        /// embedded default's.
        #[arg(long, short, env = "CUSTODY_CONFIG")]
        config: Option<PathBuf>,
        /// The entry whose payloads to erase.
        #[arg(long)]
        index: u64,
        /// Why (the order, ticket or incident), recorded with the erasure.
        #[arg(long)]
        reason: String,
    },
    /// Print entries as a SIEM takes them: `--format ocsf` (one OCSF API Activity event per
    /// call, with the entry's index, leaf hash and origin as evidence) or `entries`, as JSON
    /// lines. What `[[export]]` sinks stream as entries land.
    Export {
        /// The gateway's data directory.
        #[arg(long, default_value = crate::config::DEFAULT_DATA_DIR)]
        data: PathBuf,
        /// `ocsf` or `entries`.
        #[arg(long, default_value = "ocsf")]
        format: String,
        /// Start at this index.
        #[arg(long, default_value_t = 0)]
        from: u64,
    },
    /// Write the log's tiles (C2SP tlog-tiles, as served at /log/) to a directory, for
    /// write-once storage: incremental, create-only (a tile present with other bytes is an
    /// error), the checkpoint last. Runs beside a running gateway.
    ExportTiles {
        /// The gateway's data directory.
        #[arg(long, default_value = crate::config::DEFAULT_DATA_DIR)]
        data: PathBuf,
        /// Where to write `checkpoint` and `tile/...`.
        #[arg(long)]
        out: PathBuf,
    },
}
