//! `custody serve` and `custody check-config`.

use std::path::Path;

use anyhow::Context;

use crate::config::{Config, StaticToken, UpstreamConfig};

/// Prints a line to stdout, ignoring a closed stdout (the gateway keeps serving).
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// Loads the configuration named, or the embedded default.
pub fn load(path: Option<&Path>) -> anyhow::Result<Config> {
    match path {
        Some(p) => Ok(Config::load(p)?),
        None => {
            let program = std::env::current_exe()
                .context("finding the custody binary for the demo endpoint")?;
            Ok(Config::embedded(program))
        }
    }
}

pub fn check(path: &Path) -> anyhow::Result<()> {
    let config = Config::load(path)?;
    if let Err(errors) = crate::policy::Engine::new(&config.policy, &config.auth) {
        anyhow::bail!("the access policy is invalid:\n{errors}");
    }
    say!(
        "{}: ok ({} endpoint{})",
        path.display(),
        config.endpoints.len(),
        if config.endpoints.len() == 1 { "" } else { "s" }
    );
    Ok(())
}

pub async fn run(mut config: Config, embedded: bool) -> anyhow::Result<()> {
    if embedded {
        tracing::info!(
            "no --config given: running the embedded default (one endpoint, `demo`, backed by the built-in demo server)"
        );
    }
    // Readable by the gateway's user only (created 0700, or tightened with a warning).
    crate::data_dir::prepare(&config.server.data_dir)?;
    // The embedded default accepts two local tokens: the pipeline's (`dev`) and a person's who
    // approves what the demo policy holds (`approver`).
    let tokens = if embedded {
        let mut tokens = Vec::new();
        for (name, file) in [
            ("dev", "dev-token"),
            (crate::config::EMBEDDED_APPROVER, "approver-token"),
        ] {
            let token = super::token::local_token(&config.server.data_dir, file)?;
            config.auth.static_tokens.push(StaticToken {
                name: name.into(),
                sha256: crate::identity::token_hash(&token),
            });
            tokens.push((token, file));
        }
        tokens
    } else {
        Vec::new()
    };
    // Listening for SIGTERM before the gateway starts: a stop that arrives at once is still
    // graceful.
    let signals = wait_for_signal();
    let running = crate::http::start(&config)
        .await
        .with_context(|| format!("listening on {}", config.server.listen))?;
    let base = format!("http://{}", running.addr);
    say!("custody listening on {base}");
    let audit = &running.relay.audit;
    say!(
        "  audit log      {} (origin {}, {} entries)",
        config.server.data_dir.join("log.sqlite").display(),
        audit.origin(),
        audit.head().size
    );
    say!("  verifier key   {}", audit.verifier().to_key_string());
    if let [(dev, dev_file), (approver, approver_file)] = &tokens[..] {
        say!(
            "  dev token      {dev}  (also in {}; send it as `Authorization: Bearer <token>`)",
            config.server.data_dir.join(dev_file).display()
        );
        say!(
            "  approver token {approver}  (also in {}; for `custody approvals`)",
            config.server.data_dir.join(approver_file).display()
        );
    }
    for ep in &config.endpoints {
        let upstream = match &ep.upstream {
            UpstreamConfig::Http(h) => h.url.to_string(),
            UpstreamConfig::Stdio(s) => format!("stdio: {}", s.command.display()),
        };
        say!(
            "  endpoint {:<16} {base}/mcp/{}  ->  {upstream}",
            ep.name,
            ep.name
        );
    }
    if config.metrics.enabled {
        let at = running
            .metrics_addr
            .map_or_else(|| base.clone(), |a| format!("http://{a}"));
        let token = if config.metrics.token_sha256.is_some() {
            " (bearer token: [metrics] token)"
        } else {
            ""
        };
        say!("  metrics        {at}/metrics{token}");
    }
    let stop = running.stop_token();
    tokio::spawn(async move {
        signals.await;
        tracing::info!("shutting down: no new connections; waiting for calls in flight");
        stop.cancel();
    });
    running.wait().await;
    tracing::info!("stopped");
    Ok(())
}

/// Registers for SIGTERM and SIGINT now; the future completes when either arrives.
pub(super) fn wait_for_signal() -> impl std::future::Future<Output = ()> + Send {
    use tokio::signal::unix::{SignalKind, signal};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    async move {
        match (term, int) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            (Err(e), _) | (_, Err(e)) => {
                tracing::error!("cannot listen for SIGTERM/SIGINT: {e}");
                std::future::pending::<()>().await;
            }
        }
    }
}
