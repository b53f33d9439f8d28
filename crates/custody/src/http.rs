//! The gateway's HTTP server: the MCP endpoints at `/mcp/{endpoint}`, health checks, graceful
//! shutdown. Requests are checked here (origin, media types, size, JSON) before the relay sees
//! them, and every [`Outcome`] becomes a response here.

mod api;
mod approvals;
mod erase;
mod explorer;
mod guard;
mod mcp_routes;
mod metadata;
mod observe;
mod ops;
mod serve;
mod tiles;
mod ui;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body as AxumBody;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use futures_util::StreamExt;
use http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use http_body_util::{BodyExt, Limited};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use guard::Guard;

use crate::audit::{Audit, Draft, Kind as EntryKind};
use crate::config::{Config, Durability};
use crate::identity::{Identity, Principal, Refused};
use crate::limits::{Connections, Limiter, Permit, address_key};
use crate::mask::MaskKey;
use crate::mcp::headers::MCP_SESSION_ID;
use crate::mcp::message::Body;
use crate::policy::Engine;
use crate::relay::{At, Caller, Endpoint, Outcome, Relay, RelayError};

/// How often retention (`[audit] retention`) looks for expired payloads.
const RETENTION_EVERY: Duration = Duration::from_secs(60 * 60);

struct App {
    relay: Arc<Relay>,
    limiter: Arc<Limiter>,
    guard: Guard,
    identity: Arc<Identity>,
    public_url: Option<String>,
    /// Whether the log's tiles are readable without a token.
    tiles_public: bool,
    /// Full entry bundles already gzipped (they never change).
    zipped: tiles::Zipped,
    /// The explorer's search index and who may read through it.
    explorer: Arc<crate::explorer::Explorer>,
    /// The web page's sessions, when `[ui] enabled`.
    ui: Option<Arc<ui::UiState>>,
    /// Where traces go, when `[telemetry]` says.
    telemetry: Option<Arc<crate::telemetry::Telemetry>>,
}

type Shared = State<Arc<App>>;

/// A running gateway.
pub struct Running {
    pub addr: SocketAddr,
    /// The listener of `[metrics] listen`, when configured.
    pub metrics_addr: Option<SocketAddr>,
    pub relay: Arc<Relay>,
    stop: CancellationToken,
    done: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Begins graceful shutdown and waits for it to finish.
    pub async fn shutdown(self) {
        self.stop.cancel();
        let _ = self.done.await;
    }

    /// A token that starts graceful shutdown when cancelled.
    pub fn stop_token(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// Waits until the server has shut down.
    pub async fn wait(self) {
        let _ = self.done.await;
    }
}

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("couldn't listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    DataDir(#[from] crate::data_dir::DataDirError),
    #[error("couldn't open the audit log: {0}")]
    Audit(#[from] crate::audit::OpenError),
    #[error("couldn't load the masking key: {0}")]
    MaskKey(#[from] crate::mask::key::KeyError),
    #[error("the access policy is invalid:\n{0}")]
    Policy(#[from] crate::policy::PolicyErrors),
    #[error("couldn't record the gateway's start: {0}")]
    Record(crate::audit::AuditError),
    #[error("an upstream credential cannot be resolved: {0}")]
    Credentials(String),
    #[error("the witnesses cannot be used: {0}")]
    Witnesses(String),
    #[error("traces cannot be exported: {0}")]
    Telemetry(String),
}

/// Opens the audit log, binds the listener and starts serving.
///
/// # Errors
/// [`StartError`]: the address cannot be bound, or the audit log cannot be opened or written.
pub async fn start(config: &Config) -> Result<Running, StartError> {
    crate::data_dir::prepare(&config.server.data_dir)?;
    let opened = Audit::open(&config.server.data_dir, &config.audit)?;
    start_with(config, opened).await
}

/// Starts serving with an audit log already opened (over any store).
///
/// # Errors
/// As [`start`], but for opening the log.
pub async fn start_with(
    config: &Config,
    opened: crate::audit::Opened,
) -> Result<Running, StartError> {
    let audit = opened.audit;
    if let Some(first) = opened.predecessor {
        // A new log that follows a lost one says so in its very first entry.
        audit.append(first).await.map_err(StartError::Record)?;
    }
    let policy = Engine::new(&config.policy, &config.auth)?;
    match &policy {
        None => tracing::warn!(
            "no [policy]: every authenticated caller may call every tool, resource and prompt of every endpoint"
        ),
        Some(engine) if config.policy.builtin.is_some() => tracing::warn!(
            policies = engine.summary().1,
            "running the embedded demo policy: it permits every caller with the dev token everything except the demo's `deploy` tool; use your own [policy] for anything real"
        ),
        Some(engine) => tracing::info!(
            policies = engine.summary().1,
            hash = %engine.summary().0,
            "access policy loaded"
        ),
    }
    if audit.durability() == Durability::None {
        tracing::warn!(
            "audit.durability = \"none\": entries are not fsynced and can be lost in a crash; use this for benchmarks only"
        );
    }
    let listener = TcpListener::bind(config.server.listen)
        .await
        .map_err(|source| StartError::Bind {
            addr: config.server.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| StartError::Bind {
        addr: config.server.listen,
        source,
    })?;
    let endpoints: Vec<&str> = config.endpoints.iter().map(|e| e.name.as_str()).collect();
    let detail = serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "listen": addr.to_string(),
        "durability": match audit.durability() { Durability::Fsync => "fsync", Durability::None => "none" },
        "endpoints": endpoints,
        "key_created": opened.key_created,
        "policy": policy.as_ref().map(|p| {
            let (hash, count) = p.summary();
            serde_json::json!({ "hash": hash, "policies": count })
        }),
        "verifier_key": audit.verifier().to_key_string(),
    });
    audit
        .append(Draft::gateway(
            EntryKind::GatewayStarted,
            "",
            detail.to_string(),
        ))
        .await
        .map_err(StartError::Record)?;
    crate::approval::Approvals::abandon_unfinished(&audit, &opened.pending_approvals)
        .await
        .map_err(StartError::Record)?;
    if let Some(w) = &config.witness {
        audit.attach_witnesses(w).map_err(StartError::Witnesses)?;
    }
    audit.vouch_for_latest();
    match audit.checkpoint().await {
        // Witnesses that are down do not stop a start; required witnessing refuses calls once
        // their lag passes max_lag.
        Ok(_) | Err(crate::audit::AuditError::Withheld(_)) => {}
        Err(e) => return Err(StartError::Record(e)),
    }
    let mask_key = MaskKey::load(&config.mask_key_file, true)?;
    let metrics = Arc::new(crate::metrics::Metrics::new(
        config.endpoints.iter().map(|e| e.name.as_str()),
        audit.metrics().clone(),
    ));
    let relay = Relay::new(
        config,
        audit.clone(),
        policy.clone(),
        Some(Arc::new(mask_key)),
        metrics,
    )
    .map_err(StartError::Credentials)?;
    let ops_listener = match config.metrics.listen.filter(|_| config.metrics.enabled) {
        Some(addr) => Some(
            ops::bind(addr)
                .await
                .map_err(|source| StartError::Bind { addr, source })?,
        ),
        None => None,
    };
    let stop = CancellationToken::new();
    let reloader = Some(match policy {
        Some(engine) => {
            crate::policy::reload::spawn(engine, audit.clone(), config.policy.watch, stop.clone())
        }
        // SIGHUP must not end a gateway that has nothing to reload.
        None => crate::policy::reload::ignore_hangups(stop.clone()),
    });
    let credential_reloader = {
        let relay = relay.clone();
        crate::signals::on_hangup(stop.clone(), move || {
            let relay = relay.clone();
            async move { relay.reload_credentials().await }
        })
    };
    let identity = Arc::new(Identity::new(&config.auth));
    let key_loaders = identity.start(&stop).await;
    let checkpointer = audit.start_checkpointer(stop.clone());
    let scrub = audit.start_scrub(stop.clone());
    let retention = audit.start_retention(RETENTION_EVERY, stop.clone());
    let (exports, export_tasks) = crate::export::start(&audit, &config.exports, &stop);
    let exports = Arc::new(exports);
    let explorer = crate::explorer::Explorer::new(
        &config.server.data_dir,
        audit.location().clone(),
        config.explorer.auditors.clone(),
        config.endpoints.iter().map(|e| e.name.clone()).collect(),
    );
    let follower = explorer.spawn_follower(audit.clone(), stop.clone());
    // Replicas of a shared log take each other's decisions on the calls they hold.
    let decisions = config.audit.store.as_ref().map(|s| {
        let remote = crate::approval::Remote::new(&s.url, &s.replica, *audit.replica_seal());
        relay.approvals.attach_remote(remote.clone());
        remote.spawn(relay.approvals.clone(), stop.clone())
    });
    let telemetry = match &config.telemetry {
        Some(t) => Some(Arc::new(
            crate::telemetry::Telemetry::start(t).map_err(StartError::Telemetry)?,
        )),
        None => None,
    };
    let app = Arc::new(App {
        telemetry,
        relay: relay.clone(),
        limiter: relay.limiter.clone(),
        guard: Guard::new(&config.server),
        identity,
        public_url: config.server.public_url.clone(),
        tiles_public: config.audit.tiles_public,
        zipped: tiles::Zipped::default(),
        explorer,
        ui: config.ui.enabled.then(|| {
            Arc::new(ui::UiState {
                sessions: crate::ui::Sessions::new(config.ui.session_ttl),
                provider: config.ui.oidc.clone().map(crate::ui::oidc::Provider::new),
                exports: exports.clone(),
                secure: config
                    .server
                    .public_url
                    .as_deref()
                    .is_some_and(|u| u.starts_with("https://")),
            })
        }),
    });
    let with_ui = app.ui.is_some();
    let telemetry = app.telemetry.clone();
    let make_ops = |metrics: bool| {
        Arc::new(ops::Ops {
            relay: relay.clone(),
            exports: exports.clone(),
            token_sha256: config.metrics.token_sha256,
            shutting_down: stop.clone(),
            metrics,
            fresh_within: ops::freshness(config),
        })
    };
    // `/metrics` on the main listener unless it has a listener of its own.
    let ops_here = make_ops(config.metrics.enabled && ops_listener.is_none());
    let ops_stopped = CancellationToken::new();
    let metrics_addr = ops_listener.as_ref().map(|(_, a)| *a);
    let ops_server =
        ops_listener.map(|(listener, _)| ops::serve(listener, make_ops(true), ops_stopped.clone()));
    let router = Router::new()
        .route(
            "/mcp/{endpoint}",
            post(mcp_routes::mcp_post)
                .get(mcp_routes::mcp_get)
                .delete(mcp_routes::mcp_delete),
        )
        .route(metadata::WELL_KNOWN, get(metadata::root))
        .route(
            &format!("{}/mcp/{{endpoint}}", metadata::WELL_KNOWN),
            get(metadata::endpoint),
        )
        .route("/api/v1/log/checkpoint", get(api::checkpoint))
        .route("/api/v1/log/proof", get(api::proof))
        .route("/api/v1/log/key", get(api::key))
        .route("/api/v1/log/consistency", get(api::consistency))
        .route("/api/v1/log/witnesses", get(api::witnesses))
        .route("/api/v1/log/entries/{index}/erase", post(erase::erase))
        .route(
            &format!("{}/checkpoint", config.audit.tiles_prefix),
            get(tiles::checkpoint),
        )
        .route(
            &format!("{}/tile/{{*path}}", config.audit.tiles_prefix),
            get(tiles::tile),
        )
        .route("/api/v1/entries", get(explorer::entries))
        .route("/api/v1/entries/{index}", get(explorer::entry))
        .route("/api/v1/runs", get(explorer::runs))
        .route("/api/v1/runs/{id}/timeline", get(explorer::timeline))
        .route("/api/v1/approvals", get(approvals::list))
        .route("/api/v1/approvals/{id}", get(approvals::show))
        .route("/api/v1/approvals/{id}/{verb}", post(approvals::decide))
        .merge(if with_ui { ui::routes() } else { Router::new() })
        .fallback(mcp_routes::not_found)
        .with_state(app)
        .merge(ops::routes(ops_here));

    let reaper = {
        let relay = relay.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(relay.reap_interval());
            loop {
                tokio::select! {
                    _ = tick.tick() => relay.reap().await,
                    () = stop.cancelled() => break,
                }
            }
        })
    };

    let grace = config.server.shutdown_grace;
    let mut conn_limits = config.server.limits.connections;
    conn_limits.max = serve::fit_to_file_limit(conn_limits.max);
    let serving = serve::Serve {
        limits: config.server.limits,
        conns: Connections::new(conn_limits),
        refusals: relay.refusals.clone(),
        limiter: relay.limiter.clone(),
    };
    let flusher = relay.refusals.spawn_flusher(stop.clone());
    let done = {
        let relay = relay.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let signal = {
                let stop = stop.clone();
                let relay = relay.clone();
                async move {
                    stop.cancelled().await;
                    relay.begin_shutdown();
                }
            };
            let server = serve::run(listener, router, serving, stop.clone());
            let server = async move {
                tokio::join!(server, signal);
                Ok::<(), std::convert::Infallible>(())
            };
            tokio::pin!(server);
            tokio::select! {
                result = &mut server => {
                    let Ok(()) = result;
                }
                () = async { stop.cancelled().await; tokio::time::sleep(grace).await } => {
                    tracing::warn!("calls still running after the {} grace period; ending them", humantime::format_duration(grace));
                    relay.finish_shutdown().await;
                    let _ = tokio::time::timeout(Duration::from_secs(2), &mut server).await;
                }
            }
            reaper.abort();
            follower.abort();
            if let Some(d) = decisions {
                d.abort();
            }
            if let Some(scrub) = scrub {
                scrub.abort();
            }
            if let Some(r) = retention {
                r.abort();
            }
            for t in export_tasks {
                let _ = tokio::time::timeout(Duration::from_secs(2), t).await;
            }
            for loader in key_loaders {
                loader.abort();
            }
            if let Some(r) = reloader {
                r.abort();
            }
            credential_reloader.abort();
            relay.finish_shutdown().await;
            let _ = flusher.await;
            relay.refusals.flush().await;
            let _ = checkpointer.await;
            let audit = &relay.audit;
            if let Err(e) = audit
                .append(Draft::gateway(EntryKind::GatewayStopped, "", "{}".into()))
                .await
            {
                tracing::error!("couldn't record the gateway's stop: {e}");
            }
            if let Err(e) = audit.checkpoint().await {
                tracing::error!("couldn't sign the final checkpoint: {e}");
            }
            audit.close().await;
            if let Some(t) = telemetry {
                // Flushing blocks until the last batch is sent, which runs on this runtime.
                let _ = tokio::task::spawn_blocking(move || t.shutdown()).await;
            }
            ops_stopped.cancel();
            if let Some(s) = ops_server {
                let _ = s.await;
            }
        })
    };
    Ok(Running {
        addr,
        metrics_addr,
        relay,
        stop,
        done,
    })
}

/// The refusal budget of the caller's address: an address past it is answered 429 unread,
/// unless its credential is known without parsing anything (a static token, a token verified
/// before), so that a flood from an address shared with real jobs does not lock them out.
/// Returns that principal when it was needed.
fn gate_address(
    app: &App,
    headers: &HeaderMap,
    peer: SocketAddr,
) -> Result<Option<Arc<Principal>>, RelayError> {
    match app.limiter.addresses.check(&address_key(peer.ip())) {
        Ok(()) => Ok(None),
        Err(exceeded) => match app.identity.known(headers) {
            Some(p) => Ok(Some(p)),
            None => Err(RelayError::Limit(exceeded)),
        },
    }
}

/// Checks the caller's token; a refusal is charged to the address, counted for the log, and
/// becomes a 401 (503 while the issuer's keys cannot be had, 400 for two `Authorization`
/// headers) with a `WWW-Authenticate` challenge.
async fn authenticate(
    app: &App,
    ep: &Arc<Endpoint>,
    headers: &HeaderMap,
    at: &At<'_>,
    peer: SocketAddr,
) -> Result<Arc<Principal>, Response> {
    match app.identity.authenticate(headers).await {
        Ok(p) => Ok(p),
        Err(refused) => {
            let temporary = refused.error.is_temporary();
            let description = refused.error.to_string();
            let error = refused_credential(app, at, peer, &refused);
            let mut resp = mcp_routes::respond(&ep.name, mcp_routes::unrecorded(error));
            let base = metadata::base_url(app.public_url.as_deref(), headers);
            let url = metadata::url_for(&base, &ep.name);
            if temporary {
                resp.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            } else if resp.status() == StatusCode::UNAUTHORIZED {
                resp.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    metadata::challenge(&url, &description),
                );
            }
            Err(resp)
        }
    }
}

/// A refused credential: charged to the address (temporary failures of the gateway's own are
/// not the caller's doing), counted for the log.
fn refused_credential(app: &App, at: &At<'_>, peer: SocketAddr, refused: &Refused) -> RelayError {
    if !refused.error.is_temporary() {
        app.limiter.addresses.charge(address_key(peer.ip()));
    }
    let error = RelayError::Unauthorized(refused.error.clone());
    app.relay.refusals.auth_failure(at, refused, &error);
    error
}
