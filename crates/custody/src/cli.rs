//! The `custody` command. Errors here are `anyhow` and end the process with a message and a
//! non-zero status; everything below reports typed errors.

mod demo;
mod serve;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(
    name = "custody",
    version,
    about = "A gateway between CI/CD pipelines and MCP servers that records every message in a tamper-evident log"
)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "CUSTODY_LOG_FORMAT")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
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

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CUSTODY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// The async runtime. The gateway gives it `server.worker_threads`; other commands one thread.
pub fn runtime(threads: usize) -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .map_err(|e| anyhow::anyhow!("cannot start the async runtime: {e}"))
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let result = match cli.command {
        Command::Serve { config, listen } => serve::load(config.as_deref()).and_then(|mut cfg| {
            if let Some(addr) = listen {
                cfg.server.listen = addr;
            }
            runtime(cfg.server.worker_threads)?.block_on(serve::run(cfg, config.is_none()))
        }),
        Command::CheckConfig { config } => serve::check(&config),
        Command::DemoServer { conformance, http } => {
            runtime(1).and_then(|rt| rt.block_on(demo::run(conformance, http)))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("custody: {e:#}");
            ExitCode::FAILURE
        }
    }
}
