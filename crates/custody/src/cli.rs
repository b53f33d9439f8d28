//! The `custody` command. Errors here are `anyhow` and end the process with a message and a
//! non-zero status; everything below reports typed errors.

/// `println!` for commands whose output is piped: a reader that went away (`custody log |
/// head`) ends the command quietly instead of a panic on the broken pipe.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = writeln!(std::io::stdout(), $($arg)*) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                std::process::exit(0);
            }
        }
    }};
}

pub(crate) mod approvals;
mod args;
mod demo;
mod evidence;
mod keys;
pub(crate) mod log;
mod policy;
mod serve;
mod token;
mod verify;
mod witness;

use std::process::ExitCode;

use clap::Parser;

use args::{
    ApprovalsCommand, Cli, Command, LogCommand, LogFormat, PolicyCommand, ReceiptCommand,
    TokenCommand, WitnessCommand,
};

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CUSTODY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colour only for a person at a terminal: a file, a pipe or a log collector gets plain
    // text (and anyone may ask for none with NO_COLOR).
    let colour = {
        use std::io::IsTerminal;
        std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
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
        Command::Verify {
            data,
            key,
            trusted,
            witness_policy,
            evidence: Some(evidence),
            gateway,
            json,
            ..
        } => {
            if !trusted.is_empty() {
                eprintln!("custody verify: --trusted does not apply to --evidence");
                return ExitCode::from(2);
            }
            // --data has a default; with --gateway it is not what is meant.
            let data = gateway.is_none().then_some(data);
            match evidence::run(&evidence::Options {
                evidence,
                gateway,
                data,
                key,
                witness_policy,
                json,
            }) {
                Ok(true) => Ok(()),
                Ok(false) => return ExitCode::FAILURE,
                Err(e) => Err(e),
            }
        }
        Command::Verify {
            data,
            key,
            trusted,
            witness_policy,
            evidence: None,
            gateway,
            json,
            url,
            tiles,
            db,
        } => {
            if let Some(db) = db {
                let opts = verify::Options {
                    data,
                    key,
                    trusted,
                    witness_policy,
                    json,
                };
                return match verify::run_db(&db, &opts) {
                    Ok(true) => ExitCode::SUCCESS,
                    Ok(false) => ExitCode::FAILURE,
                    Err(e) => {
                        eprintln!("custody verify: {e:#}");
                        ExitCode::from(2)
                    }
                };
            }
            let source = match (url, tiles) {
                (Some(u), _) => Some(crate::tiles::Source::Url(u)),
                (None, Some(d)) => Some(crate::tiles::Source::Dir(d)),
                (None, None) => None,
            };
            if let Some(source) = source {
                let Some(key) = key else {
                    eprintln!(
                        "custody verify: verifying from tiles needs --key, the log's verifier key from a copy kept apart from the log (what serves the tiles could serve another key too)"
                    );
                    return ExitCode::from(2);
                };
                return match runtime(2).and_then(|rt| {
                    rt.block_on(verify::run_tiles(&verify::TilesOptions {
                        source,
                        key,
                        trusted,
                        witness_policy,
                        json,
                    }))
                }) {
                    Ok(true) => ExitCode::SUCCESS,
                    Ok(false) => ExitCode::FAILURE,
                    Err(e) => {
                        eprintln!("custody verify: {e:#}");
                        ExitCode::from(2)
                    }
                };
            }
            if gateway.is_some() {
                eprintln!(
                    "custody verify: --gateway goes with --evidence; to check a whole log, run custody verify --data on the gateway's data directory"
                );
                return ExitCode::from(2);
            }
            match verify::run(&verify::Options {
                data,
                key,
                trusted,
                witness_policy,
                json,
            }) {
                Ok(true) => Ok(()),
                Ok(false) => return ExitCode::FAILURE,
                Err(e) => Err(e),
            }
        }
        Command::Log {
            command: None,
            data,
            kind,
            from,
            limit,
            query,
        } => {
            // On a terminal, a table through the index; piped, JSON lines of every entry as
            // before (`--from` always reads the log directly).
            let people = std::io::IsTerminal::is_terminal(&std::io::stdout()) && from == 0;
            if query.any() || people {
                crate::explorer::cli::entries(&data, &query, kind, limit)
            } else {
                log::run(&data, &log::Filter { kind, from, limit })
            }
        }
        Command::Log {
            command: Some(LogCommand::Reindex { data }),
            ..
        } => crate::explorer::cli::reindex(&data).map(|n| {
            out!(
                "rebuilt the search index of {}: {n} entries",
                data.display()
            );
        }),
        Command::Log {
            command:
                Some(LogCommand::Timeline {
                    run,
                    data,
                    format,
                    remote,
                }),
            ..
        } => crate::explorer::cli::timeline(&data, &run, format, &remote),
        Command::Log {
            command:
                Some(LogCommand::Erase {
                    config,
                    index,
                    reason,
                }),
            ..
        } => serve::load(config.as_deref())
            .and_then(|cfg| runtime(1)?.block_on(log::erase(&cfg, index, &reason))),
        Command::Log {
            command: Some(LogCommand::Export { data, format, from }),
            ..
        } => log::export(&data, &format, from),
        Command::Log {
            command: Some(LogCommand::ExportTiles { data, out }),
            ..
        } => crate::tiles::export(&data, &out).map(|e| {
            out!(
                "exported the tiles of {} entries to {}: {} written, {} already there",
                e.size,
                out.display(),
                e.written,
                e.present
            );
        }),
        Command::AuditHash { config, value } => (|| {
            let config = crate::config::Config::load(&config)?;
            let key = crate::mask::MaskKey::load(&config.mask_key_file, false)?;
            out!("{}", key.tag(&value));
            anyhow::Ok(())
        })(),
        Command::Keygen {
            origin,
            out,
            predecessor,
        } => keys::keygen(&origin, &out, predecessor.as_deref()),
        Command::Receipt {
            command:
                ReceiptCommand::Verify {
                    key,
                    leaf,
                    witness_policy,
                    proof,
                },
        } => match keys::receipt_verify(&key, &proof, leaf.as_deref(), witness_policy.as_deref()) {
            Ok(true) => Ok(()),
            Ok(false) => return ExitCode::FAILURE,
            Err(e) => Err(e),
        },
        Command::Policy { command } => match command {
            PolicyCommand::Check { config } => policy::check(&config),
            PolicyCommand::Schema { config } => policy::schema(&config),
            PolicyCommand::Eval {
                config,
                principal,
                endpoint,
                method,
                tool,
                args,
                expect,
                json,
            } => match policy::eval(&policy::EvalArgs {
                config: &config,
                principal: &principal,
                endpoint: &endpoint,
                method: &method,
                target: tool.as_deref(),
                args: args.as_deref(),
                expect: expect.as_deref(),
                json,
            }) {
                Ok(true) => Ok(()),
                Ok(false) => return ExitCode::FAILURE,
                Err(e) => Err(e),
            },
        },
        Command::Connect {
            url,
            audience,
            token_env,
            token_file,
            evidence,
        } => {
            let source = crate::connect::token::Source::detect(&audience, &token_env, token_file);
            match runtime(1).and_then(|rt| {
                let result = rt
                    .block_on(crate::connect::run(&url, source, evidence.as_deref()))
                    .map_err(anyhow::Error::from);
                // The read of stdin sits on a blocking thread that only returns when the
                // client writes or closes it; a job's client keeps it open, so waiting for
                // that thread (as dropping the runtime does) would keep connect running.
                rt.shutdown_background();
                result
            }) {
                Ok(()) => Ok(()),
                Err(e) => {
                    eprintln!("custody connect: {e:#}");
                    return ExitCode::from(2);
                }
            }
        }
        Command::Approvals(args) => (|| {
            let target = approvals::Target {
                gateway: args.gateway,
                token: approvals::token(args.token, args.token_file.as_deref())?,
            };
            let action = match args.command {
                ApprovalsCommand::List { all } => approvals::Action::List { all },
                ApprovalsCommand::Show { id } => approvals::Action::Show { id },
                ApprovalsCommand::Approve { id, reason, digest } => {
                    approvals::Action::Approve { id, reason, digest }
                }
                ApprovalsCommand::Deny { id, reason } => approvals::Action::Deny { id, reason },
            };
            runtime(1)?.block_on(approvals::run(&target, action, args.json))
        })(),
        Command::Token {
            command: TokenCommand::Create { name },
        } => token::create(&name),
        Command::Witness { command } => match command {
            WitnessCommand::Keygen { data, name } => witness::keygen(&data, &name),
            WitnessCommand::Serve {
                listen,
                data,
                accept,
                config,
            } => runtime(2).and_then(|rt| {
                rt.block_on(witness::serve(witness::ServeArgs {
                    listen,
                    data,
                    accept,
                    config,
                }))
            }),
        },
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
