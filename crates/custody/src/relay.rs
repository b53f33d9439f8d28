//! The data path of one call, per endpoint:
//!
//! ```text
//! http ─► [identity] ─► mcp (parse, session/version, mirrored headers) ─► [policy] ─► [approval]
//!      ─► audit: request (durable) ─► upstream ─► [mask] ─► audit: response (durable) ─► client
//! ```
//!
//! The bracketed stages are the seams where identity, policy, approval and masking attach; each
//! is a plain call on the request's path. The audit log is written ahead: a message is on
//! stable storage before it is forwarded, an answer before the client gets it, and a message
//! that cannot be recorded does not move (the call fails closed with "audit log unavailable").
//! Nothing here blocks a thread: the only locks are the session table's and the tool-header
//! cache's, held for a map operation.

mod decide;
mod endpoint;
mod error;
mod event_ids;
mod hold;
mod lifecycle;
mod mrtr;
mod record;
mod refusals;
mod reply;
mod server_requests;
mod session;
mod session_based;
mod session_find;
mod stateless;
mod versions;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::BoxStream;
use http::{HeaderMap, HeaderValue, StatusCode};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

pub use endpoint::Endpoint;
pub use error::{RelayError, code};
pub use record::RECEIPT_KEY;
use record::Scope;
pub use refusals::{At, Refusals};
use reply::{Ctx, ListFilter, Watch, render, render_first};
pub use session::{Session, SessionUpstream, Sessions};

use crate::approval::Approvals;
use crate::audit::{Appended, Audit, Kind as EntryKind};
use crate::config::{Config, MessageLimits, UpstreamConfig};
use crate::credentials::Credentials;
use crate::identity::Principal;
use crate::limits::{Gauge, Limit, Limiter, Permit};
use crate::mask::{MaskKey, Masker};
use crate::mcp::headers::{self, MCP_PROTOCOL_VERSION, ParamHeader};
use crate::mcp::message::{Body, Kind, Message};
use crate::mcp::upstream::http::{HttpUpstream, Outbound};
use crate::mcp::upstream::stdio::StdioUpstream;
use crate::mcp::upstream::{Reply, UpstreamError};
use crate::mcp::version::{self, BATCH_VERSION, Generation};
use crate::policy::{self, Call, Decision, Engine, Verdict};

/// Who is calling, from where.
pub struct Caller {
    pub principal: Arc<Principal>,
    /// The client's address, `ip:port`.
    pub address: String,
}

/// What the client gets.
pub enum Outcome {
    /// 202, no body.
    Accepted { session: Option<Arc<str>> },
    /// One JSON body.
    Json {
        status: StatusCode,
        body: Bytes,
        session: Option<Arc<str>>,
    },
    /// An upstream's own error answer, relayed as it is.
    Passthrough {
        status: StatusCode,
        content_type: Option<HeaderValue>,
        body: Bytes,
        session: Option<Arc<str>>,
    },
    /// A `text/event-stream` body, already framed.
    Stream {
        events: BoxStream<'static, Bytes>,
        session: Option<Arc<str>>,
    },
    /// A status with no body.
    Status(StatusCode),
    /// A refusal or failure (already recorded when an endpoint is known); `id` is the request
    /// it answers, if any.
    Error {
        error: RelayError,
        id: Option<Value>,
        session: Option<Arc<str>>,
    },
}

enum Upstream {
    Http(Box<HttpUpstream>),
    Stdio(Box<StdioUpstream>),
}

/// All endpoints and the state shared across calls.
pub struct Relay {
    endpoints: HashMap<String, Arc<Endpoint>>,
    known: String,
    /// Rates, concurrency and sessions per address and principal.
    pub limiter: Arc<Limiter>,
    /// Refusals a flood can cause, recorded in aggregate.
    pub refusals: Arc<Refusals>,
    pub audit: Arc<Audit>,
    /// The access policy; `None` when none is configured.
    pub policy: Option<Arc<Engine>>,
    /// Calls held for approval.
    pub approvals: Arc<Approvals>,
    /// What `/metrics` shows.
    pub metrics: Arc<crate::metrics::Metrics>,
    session_idle: Duration,
    stdio_session_idle: Duration,
    /// Between replicas of a shared log: the sessions they share, and when their use was last
    /// shared with the other replicas.
    shared: Option<Arc<session::shared::Shared>>,
    last_sync: std::sync::Mutex<Option<std::time::Instant>>,
    /// Cancelled when shutdown begins: long-lived streams end.
    closing: CancellationToken,
    /// Cancelled when the grace period is over: everything ends.
    force: CancellationToken,
}

impl Relay {
    pub fn new(
        config: &Config,
        audit: Arc<Audit>,
        policy: Option<Arc<Engine>>,
        mask_key: Option<Arc<MaskKey>>,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> Result<Arc<Self>, String> {
        let closing = CancellationToken::new();
        // One key for every endpoint: state shown to the wrong one is told apart from state
        // that was altered.
        let state_key = Arc::new(mrtr::StateKey::random());
        let endpoints: HashMap<String, Arc<Endpoint>> = config
            .endpoints
            .iter()
            .map(|ep| {
                let credentials = Credentials::new(&ep.name, &ep.upstream)?;
                let upstream = match &ep.upstream {
                    UpstreamConfig::Http(h) => Upstream::Http(Box::new(HttpUpstream::new(
                        h,
                        credentials.clone(),
                        ep.messages,
                    ))),
                    UpstreamConfig::Stdio(s) => Upstream::Stdio(Box::new(StdioUpstream::new(
                        &ep.name,
                        s.clone(),
                        credentials.clone(),
                        ep.messages,
                        Gauge::new(Limit::EndpointProcesses, ep.limits.processes),
                    ))),
                };
                let parking = match &upstream {
                    Upstream::Stdio(up) => (up.input_timeout(), up.capacity()),
                    Upstream::Http(_) => (Duration::ZERO, 0),
                };
                let counted = metrics.endpoint(&ep.name);
                let endpoint = Endpoint {
                    metrics: counted.clone(),
                    parking: mrtr::Parking::new(
                        state_key.clone(),
                        parking.0,
                        parking.1,
                        closing.clone(),
                    ),
                    name: ep.name.as_str().into(),
                    messages: ep.messages,
                    upstream,
                    sessions: Sessions::default(),
                    tool_headers: RwLock::new(HashMap::new()),
                    versions: RwLock::new(endpoint::Versions::default()),
                    mask: Arc::new(Masker {
                        client: ep.mask_client.clone(),
                        audit: ep.mask_audit.clone(),
                        credentials: credentials.scrub(),
                        key: mask_key.clone(),
                        metrics: Some(counted),
                    }),
                    credentials,
                    session_cap: Gauge::new(Limit::EndpointSessions, ep.limits.sessions),
                };
                let endpoint = Arc::new(endpoint);
                if let Upstream::Stdio(up) = &endpoint.upstream
                    && let Some(rx) = up.take_server_requests()
                {
                    server_requests::spawn(audit.clone(), endpoint.clone(), rx);
                }
                Ok((ep.name.clone(), endpoint))
            })
            .collect::<Result<_, String>>()?;
        let mut names: Vec<&str> = endpoints.keys().map(String::as_str).collect();
        names.sort_unstable();
        let limiter = Arc::new(Limiter::new(&config.limits));
        let shared = config.audit.store.as_ref().map(|s| {
            Arc::new(session::shared::Shared::new(
                &s.url,
                &s.replica,
                audit.replica_seal(),
            ))
        });
        Ok(Arc::new(Self {
            known: names.join(", "),
            endpoints,
            refusals: Arc::new(Refusals::new(
                audit.clone(),
                limiter.refusal_records,
                metrics.clone(),
            )),
            limiter,
            approvals: Approvals::new(
                &config.approvals,
                audit.clone(),
                policy.clone(),
                config.server.public_url.clone(),
                metrics.approvals.clone(),
            ),
            metrics,
            audit,
            policy,
            session_idle: config.server.session_idle_timeout,
            stdio_session_idle: config.server.stdio_session_idle_timeout,
            shared,
            last_sync: std::sync::Mutex::new(None),
            closing,
            force: CancellationToken::new(),
        }))
    }

    /// The endpoint called `name`.
    ///
    /// # Errors
    /// [`RelayError::UnknownEndpoint`], listing the configured ones.
    pub fn endpoint(&self, name: &str) -> Result<Arc<Endpoint>, RelayError> {
        self.endpoints
            .get(name)
            .cloned()
            .ok_or_else(|| RelayError::UnknownEndpoint {
                name: name.to_string(),
                known: self.known.clone(),
            })
    }

    pub fn endpoints(&self) -> impl Iterator<Item = &Arc<Endpoint>> {
        self.endpoints.values()
    }

    fn scope(&self, ep: &Arc<Endpoint>, session: Option<Arc<str>>, who: &Principal) -> Scope {
        Scope::new(
            &self.audit,
            &ep.name,
            session,
            who,
            &ep.mask,
            ep.messages.json(),
        )
    }

    fn ctx(
        &self,
        ep: &Arc<Endpoint>,
        requests: Vec<(Value, Appended)>,
        session: Option<Arc<Session>>,
        scope: Scope,
    ) -> Ctx {
        Ctx {
            endpoint: ep.clone(),
            requests,
            session,
            scope,
            watch: Watch::Nothing,
            long_lived: false,
            closing: self.closing.clone(),
            force: self.force.clone(),
            stateless_status: false,
            filter: None,
            upstream_headers: std::sync::Mutex::new(None),
            forwarded: std::time::Instant::now(),
            timed: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Records a refusal of input for a known endpoint and returns it as the answer.
    pub async fn refuse(
        &self,
        ep: &Arc<Endpoint>,
        who: &Principal,
        headers: &HeaderMap,
        error: RelayError,
        incoming: Option<&Message>,
        raw: Option<Bytes>,
    ) -> Outcome {
        let session = session_header(headers);
        let id = incoming.and_then(Message::id).cloned();
        let scope = self.scope(ep, session, who);
        let error = match scope.refusal(incoming, raw, &error, id.as_ref()).await {
            Ok(_) => error,
            Err(audit) => audit,
        };
        Outcome::Error {
            error,
            id,
            session: None,
        }
    }

    /// Answers a request refused by a limit, counting it with the others of its second (a
    /// caller pushing against a limit must not fill the log).
    pub fn limited(
        &self,
        at: &At<'_>,
        who: &Principal,
        method: Option<&str>,
        error: RelayError,
        id: Option<Value>,
    ) -> Outcome {
        self.refusals.limited(at, who, method, &error);
        Outcome::Error {
            error,
            id,
            session: None,
        }
    }

    /// Places for a new session: its owner's and the endpoint's, and for a stdio endpoint the
    /// session's process.
    fn session_places(
        &self,
        ep: &Arc<Endpoint>,
        caller: &Caller,
    ) -> Result<(Permit, Option<Permit>), RelayError> {
        let owner = self
            .limiter
            .principal_sessions
            .acquire(&caller.principal.binding)
            .map_err(RelayError::Limit)?;
        let open = ep.session_cap.acquire().map_err(RelayError::Limit)?;
        let process = match &ep.upstream {
            Upstream::Stdio(up) => Some(
                up.reserve()
                    .map_err(|e| RelayError::upstream(&ep.name, &ep.mask, e))?,
            ),
            Upstream::Http(_) => None,
        };
        Ok((owner.and(open), process))
    }

    /// Records a client message before it is forwarded, with the policy decision on it.
    async fn record_client(
        &self,
        scope: &Scope,
        msg: &Message,
        decision: Option<&Decision>,
    ) -> Result<Appended, RelayError> {
        let mut detail = serde_json::Map::new();
        if let Some(d) = decision {
            detail.insert("policy".into(), d.to_json());
        }
        scope.client_message(msg, detail).await
    }

    /// A POSTed body.
    pub async fn post(
        self: &Arc<Self>,
        ep: &Arc<Endpoint>,
        caller: &Caller,
        headers: &HeaderMap,
        body: Body,
    ) -> Outcome {
        let single = match &body {
            Body::Single(m) => Some(m),
            Body::Batch(..) => None,
        };
        let raw_batch = || match &body {
            Body::Batch(_, raw) => Some(raw.clone()),
            Body::Single(_) => None,
        };
        let version_header = match headers::get(headers, MCP_PROTOCOL_VERSION).transpose() {
            Ok(v) => v.map(str::to_string),
            Err(e) => {
                return self
                    .refuse(
                        ep,
                        &caller.principal,
                        headers,
                        e.into(),
                        single,
                        raw_batch(),
                    )
                    .await;
            }
        };
        if let Some(v) = &version_header
            && version::generation(v).is_none()
        {
            let error = self.unsupported(ep, v).await;
            return self
                .refuse(ep, &caller.principal, headers, error, single, raw_batch())
                .await;
        }
        if let Some(sid) = headers.get(headers::MCP_SESSION_ID) {
            let found = match sid.to_str() {
                Ok(sid) => self.find_session(ep, caller, sid, false).await,
                Err(_) => Err(RelayError::SessionNotFound(String::new())),
            };
            let session = match found {
                Ok(s) => s,
                Err(e) => {
                    return self
                        .session_refused(ep, caller, headers, e, single, raw_batch(), "POST")
                        .await;
                }
            };
            return self
                .session_post(ep, caller, session, headers, version_header, body)
                .await;
        }
        let header_gen = version_header.as_deref().and_then(version::generation);
        match body {
            Body::Single(m)
                if m.method() == Some("initialize")
                    && header_gen != Some(Generation::Stateless) =>
            {
                self.initialize(ep, caller, headers, version_header, m)
                    .await
            }
            Body::Single(m)
                if header_gen == Some(Generation::Stateless)
                    || (header_gen.is_none() && m.meta_protocol_version().is_some()) =>
            {
                self.stateless_post(ep, caller, headers, version_header, m)
                    .await
            }
            Body::Batch(..) if header_gen == Some(Generation::Stateless) => {
                let raw = raw_batch();
                self.refuse(
                    ep,
                    &caller.principal,
                    headers,
                    RelayError::BatchNotAllowed(version_header.unwrap_or_default()),
                    None,
                    raw,
                )
                .await
            }
            Body::Single(m) => {
                self.refuse(
                    ep,
                    &caller.principal,
                    headers,
                    RelayError::SessionRequired,
                    Some(&m),
                    None,
                )
                .await
            }
            Body::Batch(..) => {
                let raw = raw_batch();
                self.refuse(
                    ep,
                    &caller.principal,
                    headers,
                    RelayError::SessionRequired,
                    None,
                    raw,
                )
                .await
            }
        }
    }
}

/// The `Mcp-Session-Id` a request names, as recorded with a refusal: the session's id where it
/// has the shape of one the gateway gives (never what a shared one carries sealed), else the
/// header clipped (it may be anything).
pub fn session_header(headers: &HeaderMap) -> Option<Arc<str>> {
    headers
        .get(headers::MCP_SESSION_ID)
        .and_then(|v| v.to_str().ok())
        .map(|s| match session::shared::Token::parse(s) {
            Some(t) => Arc::<str>::from(t.id()),
            None => Arc::<str>::from(crate::identity::clip(s)),
        })
}

/// The id of the one request a POST carries, when it carries exactly one message and that is a
/// request: failures answer it.
fn single_request_id(messages: &[Message]) -> Option<Value> {
    match messages {
        [m] if m.is_request() => m.id().cloned(),
        _ => None,
    }
}

fn error_outcome(error: RelayError, id: Option<Value>, session: Option<Arc<str>>) -> Outcome {
    Outcome::Error { error, id, session }
}

/// Answers a recorded request with a failure, recording the answer.
async fn fail(ctx: &Ctx, error: RelayError, id: Option<Value>) -> Outcome {
    if matches!(error, RelayError::Upstream { .. }) {
        ctx.answered(true);
    }
    let request = id
        .as_ref()
        .and_then(|i| ctx.requests.iter().find(|(r, _)| r == i))
        .map(|(_, a)| a.index);
    let error = match ctx.scope.failure(&error, id.as_ref(), request).await {
        Ok(_) => error,
        Err(audit) => audit,
    };
    Outcome::Error {
        error,
        id,
        session: ctx.session.as_ref().map(|s| s.token.clone()),
    }
}
