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

mod error;
mod event_ids;
mod hold;
mod record;
mod refusals;
mod reply;
mod session;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::BoxStream;
use http::{HeaderMap, HeaderValue, StatusCode};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

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

/// One configured endpoint: its upstream and its sessions.
pub struct Endpoint {
    pub name: Arc<str>,
    /// Bounds on each message, in either direction.
    pub messages: MessageLimits,
    upstream: Upstream,
    sessions: Sessions,
    /// `x-mcp-header` parameters of the upstream's tools, learned from `tools/list` answers.
    tool_headers: RwLock<HashMap<String, Vec<ParamHeader>>>,
    /// What the client and the log get masked.
    pub mask: Arc<Masker>,
    /// The upstream credentials only the gateway holds.
    pub credentials: Arc<Credentials>,
    /// Sessions open, with the endpoint's cap.
    session_cap: Arc<Gauge>,
}

impl Endpoint {
    fn learn_tools(&self, tools: &Value) {
        let Some(tools) = tools.as_array() else {
            return;
        };
        let mut map = self
            .tool_headers
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for tool in tools {
            if let (Some(name), Some(schema)) = (
                tool.get("name").and_then(Value::as_str),
                tool.get("inputSchema"),
            ) {
                let params = headers::param_headers(schema);
                if params.is_empty() {
                    map.remove(name);
                } else {
                    map.insert(name.to_string(), params);
                }
            }
        }
    }

    fn param_headers(&self, msg: &Message) -> Vec<ParamHeader> {
        if msg.method() != Some("tools/call") {
            return Vec::new();
        }
        let Some(tool) = msg.target_name() else {
            return Vec::new();
        };
        self.tool_headers
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(tool)
            .cloned()
            .unwrap_or_default()
    }

    /// Sessions currently open.
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// Upstream processes running (stdio endpoints).
    pub fn process_count(&self) -> u64 {
        match &self.upstream {
            Upstream::Stdio(up) => up.processes(),
            Upstream::Http(_) => 0,
        }
    }

    async fn close_session(&self, session: &Session) {
        match (&session.upstream, &self.upstream) {
            (SessionUpstream::Stdio(child), _) => child.stop().await,
            (
                SessionUpstream::Http {
                    session: upstream_sid,
                },
                Upstream::Http(up),
            ) => {
                if let Some(sid) = upstream_sid {
                    let empty = HeaderMap::new();
                    let out = Outbound {
                        session: Some(sid),
                        version: Some(&session.version()),
                        headers: &empty,
                    };
                    let _ = tokio::time::timeout(Duration::from_secs(2), up.delete(out)).await;
                }
            }
            (SessionUpstream::Http { .. }, Upstream::Stdio(_)) => {}
        }
    }
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
    session_idle: Duration,
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
    ) -> Result<Arc<Self>, String> {
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
                let endpoint = Endpoint {
                    name: ep.name.as_str().into(),
                    messages: ep.messages,
                    upstream,
                    sessions: Sessions::default(),
                    tool_headers: RwLock::new(HashMap::new()),
                    mask: Arc::new(Masker {
                        client: ep.mask_client.clone(),
                        audit: ep.mask_audit.clone(),
                        credentials: credentials.scrub(),
                        key: mask_key.clone(),
                    }),
                    credentials,
                    session_cap: Gauge::new(Limit::EndpointSessions, ep.limits.sessions),
                };
                Ok((ep.name.clone(), Arc::new(endpoint)))
            })
            .collect::<Result<_, String>>()?;
        let mut names: Vec<&str> = endpoints.keys().map(String::as_str).collect();
        names.sort_unstable();
        let limiter = Arc::new(Limiter::new(&config.limits));
        Ok(Arc::new(Self {
            known: names.join(", "),
            endpoints,
            refusals: Arc::new(Refusals::new(audit.clone(), limiter.refusal_records)),
            limiter,
            approvals: Approvals::new(
                &config.approvals,
                audit.clone(),
                policy.clone(),
                config.server.public_url.clone(),
            ),
            audit,
            policy,
            session_idle: config.server.session_idle_timeout,
            closing: CancellationToken::new(),
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
        }
    }

    /// What policy says about a client request; `None` without policies or for a message
    /// that is not a request.
    fn authorize(
        &self,
        ep: &Endpoint,
        caller: &Caller,
        msg: &Message,
        version: &str,
    ) -> Option<Decision> {
        let engine = self.policy.as_ref()?;
        if !msg.is_request() {
            return None;
        }
        let method = msg.method()?;
        let arguments = match method {
            "tools/call" | "prompts/get" => msg.params().and_then(|p| p.get("arguments")),
            _ => None,
        };
        Some(engine.decide(&Call {
            principal: &caller.principal,
            endpoint: &ep.name,
            method,
            target: msg.target_name(),
            arguments,
            protocol_version: version,
            client_address: &caller.address,
        }))
    }

    /// The list filter for the list requests among `messages`, when policies are configured.
    fn list_filter(
        &self,
        caller: &Caller,
        messages: &[&Message],
        version: &str,
    ) -> Option<ListFilter> {
        let engine = self.policy.as_ref()?;
        let requests: Vec<(Value, &'static str)> = messages
            .iter()
            .filter_map(|m| {
                let method = policy::LIST_METHODS
                    .into_iter()
                    .find(|x| Some(*x) == m.method())?;
                Some((m.id()?.clone(), method))
            })
            .collect();
        if requests.is_empty() {
            return None;
        }
        Some(ListFilter {
            engine: engine.clone(),
            principal: caller.principal.clone(),
            address: caller.address.clone(),
            version: version.to_string(),
            requests,
        })
    }

    /// Refuses a request policy did not allow, recording the decision.
    async fn deny(
        &self,
        ep: &Arc<Endpoint>,
        caller: &Caller,
        msg: &Message,
        decision: &Decision,
        session: Option<Arc<str>>,
        why: &'static str,
    ) -> Outcome {
        let action = policy::action_of(msg.method().unwrap_or(""));
        let target = msg.target_name().map(str::to_string);
        let endpoint = ep.name.to_string();
        let policies = decision.policies.clone();
        let error = if decision.verdict == Verdict::NeedsApproval {
            RelayError::ApprovalRequired {
                action,
                target,
                endpoint,
                policies,
                why,
            }
        } else {
            RelayError::Denied {
                action,
                target,
                endpoint,
                policies,
            }
        };
        tracing::info!(endpoint = %ep.name, caller = %caller.principal.name, "{error}");
        let id = msg.id().cloned();
        let scope = self.scope(ep, session.clone(), &caller.principal);
        let error = match scope
            .refusal_with(
                Some(msg),
                None,
                &error,
                id.as_ref(),
                Some(decision.to_json()),
            )
            .await
        {
            Ok(_) => error,
            Err(audit) => audit,
        };
        Outcome::Error { error, id, session }
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
            return self
                .refuse(
                    ep,
                    &caller.principal,
                    headers,
                    RelayError::UnsupportedVersion(v.clone()),
                    single,
                    raw_batch(),
                )
                .await;
        }
        if let Some(sid) = headers.get(headers::MCP_SESSION_ID) {
            let session = sid
                .to_str()
                .ok()
                .and_then(|sid| ep.sessions.get(sid, &caller.principal.binding));
            let Some(session) = session else {
                return self
                    .refuse(
                        ep,
                        &caller.principal,
                        headers,
                        RelayError::SessionNotFound(String::new()),
                        single,
                        raw_batch(),
                    )
                    .await;
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

    async fn initialize(
        &self,
        ep: &Arc<Endpoint>,
        caller: &Caller,
        headers: &HeaderMap,
        version_header: Option<String>,
        msg: Message,
    ) -> Outcome {
        let id = msg.id().cloned();
        let requested = msg
            .params()
            .and_then(|p| p.get("protocolVersion"))
            .and_then(Value::as_str)
            .unwrap_or(version::DEFAULT_SESSION_VERSION)
            .to_string();
        let decision = self.authorize(ep, caller, &msg, &requested);
        if let Some(d) = decision.as_ref().filter(|d| d.verdict != Verdict::Allow) {
            return self
                .deny(ep, caller, &msg, d, None, "initialize cannot wait for one")
                .await;
        }
        // The caps first: a refused open is counted, not recorded as a handshake.
        let (places, process) = match self.session_places(ep, caller) {
            Ok(p) => p,
            Err(e) => {
                let at = At {
                    endpoint: &ep.name,
                    address: &caller.address,
                    http_method: "POST",
                    session: None,
                };
                return self.limited(&at, &caller.principal, Some("initialize"), e, id);
            }
        };
        // The session id exists before the handshake so that both of its entries carry it; the
        // session itself exists only if the upstream accepts.
        let sid = session::new_id();
        let scope = self.scope(ep, Some(sid.clone()), &caller.principal);
        let recorded = match self.record_client(&scope, &msg, decision.as_ref()).await {
            Ok(a) => a,
            Err(e) => return error_outcome(e, id, None),
        };
        let requests: Vec<(Value, Appended)> =
            id.clone().map(|i| (i, recorded)).into_iter().collect();
        match &ep.upstream {
            Upstream::Http(up) => {
                let out = Outbound {
                    session: None,
                    version: version_header.as_deref(),
                    headers,
                };
                let (reply, upstream_sid, recorded) = match up.post(out, msg.to_bytes()).await {
                    Ok(r) => r,
                    Err(e) => {
                        let ctx = self.ctx(ep, requests, None, scope);
                        return fail(&ctx, RelayError::upstream(&ep.name, &ep.mask, e), id).await;
                    }
                };
                let opened = matches!(&reply, Reply::Stream(_))
                    || matches!(&reply, Reply::Message(m) if m.kind() == Kind::Response);
                let session = if opened {
                    if let Err(e) = scope
                        .event(
                            EntryKind::SessionOpened,
                            json!({ "protocol_version": requested }),
                        )
                        .await
                    {
                        return error_outcome(e, id, None);
                    }
                    Some(ep.sessions.insert(
                        sid,
                        SessionUpstream::Http {
                            session: upstream_sid,
                        },
                        &requested,
                        caller.principal.clone(),
                        places,
                    ))
                } else {
                    None
                };
                let mut ctx = self.ctx(ep, requests, session, scope);
                ctx.watch = Watch::Initialize;
                ctx.upstream_headers = std::sync::Mutex::new(Some(recorded));
                render(reply, ctx).await
            }
            Upstream::Stdio(up) => {
                let child = match up.spawn(process.unwrap_or_default()) {
                    Ok(c) => c,
                    Err(e) => {
                        let ctx = self.ctx(ep, requests, None, scope);
                        return fail(&ctx, RelayError::upstream(&ep.name, &ep.mask, e), id).await;
                    }
                };
                let events = match child.request(msg, false).await {
                    Ok(s) => s,
                    Err(e) => {
                        child.stop().await;
                        let ctx = self.ctx(ep, requests, None, scope);
                        return fail(&ctx, RelayError::upstream(&ep.name, &ep.mask, e), id).await;
                    }
                };
                let session = ep.sessions.insert(
                    sid,
                    SessionUpstream::Stdio(child.clone()),
                    &requested,
                    caller.principal.clone(),
                    places,
                );
                let mut ctx = self.ctx(ep, requests, Some(session.clone()), scope.clone());
                ctx.watch = Watch::Initialize;
                let outcome = render_first(events, ctx).await;
                // A failed handshake leaves no session behind.
                let failed = match &outcome {
                    Outcome::Json { body, .. } => serde_json::from_slice::<Value>(body)
                        .map_or(true, |v| v.get("error").is_some()),
                    Outcome::Error { .. } => true,
                    _ => false,
                };
                if failed {
                    ep.sessions.remove(&session.id);
                    child.stop().await;
                    return match outcome {
                        Outcome::Json { status, body, .. } => Outcome::Json {
                            status,
                            body,
                            session: None,
                        },
                        Outcome::Error { error, id, .. } => Outcome::Error {
                            error,
                            id,
                            session: None,
                        },
                        other => other,
                    };
                }
                if let Err(e) = scope
                    .event(
                        EntryKind::SessionOpened,
                        json!({ "protocol_version": requested }),
                    )
                    .await
                {
                    ep.sessions.remove(&session.id);
                    child.stop().await;
                    return error_outcome(e, id, None);
                }
                outcome
            }
        }
    }

    async fn session_post(
        self: &Arc<Self>,
        ep: &Arc<Endpoint>,
        caller: &Caller,
        session: Arc<Session>,
        headers: &HeaderMap,
        version_header: Option<String>,
        body: Body,
    ) -> Outcome {
        let version = version_header.unwrap_or_else(|| session.version());
        let scope = self.scope(ep, Some(session.id.clone()), &caller.principal);
        let messages = match body {
            Body::Single(m) => vec![m],
            Body::Batch(ms, raw) => {
                if session.version() != BATCH_VERSION {
                    return self
                        .refuse(
                            ep,
                            &caller.principal,
                            headers,
                            RelayError::BatchNotAllowed(session.version()),
                            None,
                            Some(raw),
                        )
                        .await;
                }
                ms
            }
        };
        let is_batch = messages.len() > 1;
        let single_id = single_request_id(&messages);
        // Policy first: a batch with a request policy does not allow is refused whole.
        let decisions: Vec<Option<Decision>> = messages
            .iter()
            .map(|m| self.authorize(ep, caller, m, &version))
            .collect();
        let refused = |verdict: Verdict| {
            messages
                .iter()
                .zip(&decisions)
                .find_map(|(m, d)| d.as_ref().filter(|d| d.verdict == verdict).map(|d| (m, d)))
        };
        if let Some((m, d)) = refused(Verdict::Deny) {
            return self
                .deny(ep, caller, m, d, Some(session.id.clone()), "")
                .await;
        }
        if is_batch && let Some((m, d)) = refused(Verdict::NeedsApproval) {
            return self
                .deny(
                    ep,
                    caller,
                    m,
                    d,
                    Some(session.id.clone()),
                    "a call that needs approval must be sent on its own, not in a JSON-RPC batch",
                )
                .await;
        }
        // A client cancelling a call it is waiting on ends that call's approval.
        for m in &messages {
            if m.method() == Some("notifications/cancelled")
                && let Some(rid) = m.params().and_then(|p| p.get("requestId"))
            {
                self.approvals
                    .cancel_request(&ep.name, &session.id, &rid.to_string())
                    .await;
            }
        }
        let filter = self.list_filter(caller, &messages.iter().collect::<Vec<_>>(), &version);
        // Write-ahead: every message is recorded before any is forwarded.
        let mut requests = Vec::new();
        for (m, d) in messages.iter().zip(&decisions) {
            match self.record_client(&scope, m, d.as_ref()).await {
                Ok(a) => {
                    if let (true, Some(id)) = (m.is_request(), m.id()) {
                        requests.push((id.clone(), a));
                    }
                }
                Err(e) => return error_outcome(e, single_id, Some(session.id.clone())),
            }
        }
        if let Some(d) = decisions
            .first()
            .and_then(Option::as_ref)
            .filter(|d| d.verdict == Verdict::NeedsApproval)
            && let [(_, recorded)] = requests[..]
        {
            let (ep2, session2, headers) = (ep.clone(), session.clone(), headers.clone());
            let msg = messages
                .into_iter()
                .next()
                .unwrap_or_else(|| unreachable!());
            return self
                .hold(
                    ep,
                    caller,
                    hold::Held {
                        scope,
                        session: Some(session.clone()),
                        msg,
                        decision: d,
                        recorded,
                        version: version.clone(),
                    },
                    move |relay, msg, scope| async move {
                        let requests = msg
                            .id()
                            .cloned()
                            .map(|i| (i, recorded))
                            .into_iter()
                            .collect();
                        relay
                            .session_send(
                                &ep2,
                                session2,
                                &headers,
                                version,
                                vec![msg],
                                requests,
                                scope,
                                filter,
                            )
                            .await
                    },
                )
                .await;
        }
        self.session_send(
            ep, session, headers, version, messages, requests, scope, filter,
        )
        .await
    }

    /// Forwards recorded messages of a session to its upstream and renders the answer.
    #[allow(clippy::too_many_arguments)]
    async fn session_send(
        &self,
        ep: &Arc<Endpoint>,
        session: Arc<Session>,
        headers: &HeaderMap,
        version: String,
        messages: Vec<Message>,
        requests: Vec<(Value, Appended)>,
        scope: Scope,
        filter: Option<ListFilter>,
    ) -> Outcome {
        let single_id = single_request_id(&messages);
        let is_batch = messages.len() > 1;
        let watch = if !is_batch && messages[0].method() == Some("tools/list") {
            Watch::ToolsList
        } else {
            Watch::Nothing
        };
        match (&ep.upstream, &session.upstream) {
            (
                Upstream::Http(up),
                SessionUpstream::Http {
                    session: upstream_sid,
                },
            ) => {
                let out = Outbound {
                    session: upstream_sid.as_ref(),
                    version: Some(&version),
                    headers,
                };
                let body = if is_batch {
                    // The messages as they are (each its own bytes unless the gateway changed
                    // it), without building a document.
                    let parts: Vec<Bytes> = messages.iter().map(Message::to_bytes).collect();
                    let mut out = Vec::with_capacity(
                        parts.iter().map(Bytes::len).sum::<usize>() + parts.len() + 1,
                    );
                    out.push(b'[');
                    for (i, part) in parts.iter().enumerate() {
                        if i > 0 {
                            out.push(b',');
                        }
                        out.extend_from_slice(part);
                    }
                    out.push(b']');
                    Bytes::from(out)
                } else {
                    messages[0].to_bytes()
                };
                match up.post(out, body).await {
                    Ok((reply, _, recorded)) => {
                        let mut ctx = self.ctx(ep, requests, Some(session), scope);
                        ctx.watch = watch;
                        ctx.filter = filter;
                        ctx.upstream_headers = std::sync::Mutex::new(Some(recorded));
                        render(reply, ctx).await
                    }
                    Err(UpstreamError::SessionGone) => {
                        ep.sessions.remove(&session.id);
                        let _ = scope
                            .event(
                                EntryKind::SessionClosed,
                                json!({ "reason": "the upstream ended it" }),
                            )
                            .await;
                        let ctx = self.ctx(ep, requests, None, scope);
                        let error = RelayError::SessionNotFound(" (the upstream ended it)".into());
                        match single_id {
                            Some(id) => fail(&ctx, error, Some(id)).await,
                            None => error_outcome(error, None, None),
                        }
                    }
                    Err(e) => {
                        let ctx = self.ctx(ep, requests, Some(session), scope);
                        fail(&ctx, RelayError::upstream(&ep.name, &ep.mask, e), single_id).await
                    }
                }
            }
            (_, SessionUpstream::Stdio(child)) => {
                if !child.is_alive() {
                    ep.sessions.remove(&session.id);
                    child.stop().await;
                    let _ = scope
                        .event(
                            EntryKind::SessionClosed,
                            json!({ "reason": "its upstream process exited" }),
                        )
                        .await;
                    let ctx = self.ctx(ep, requests, None, scope);
                    let error =
                        RelayError::SessionNotFound(" (its upstream process exited)".into());
                    return match single_id {
                        Some(id) => fail(&ctx, error, Some(id)).await,
                        None => error_outcome(error, None, None),
                    };
                }
                let mut streams = Vec::new();
                for m in messages {
                    let result = if m.is_request() {
                        child.request(m, false).await.map(Some)
                    } else {
                        child.send(m).await.map(|()| None)
                    };
                    match result {
                        Ok(Some(s)) => streams.push(s),
                        Ok(None) => {}
                        Err(e) => {
                            let ctx = self.ctx(ep, requests, Some(session), scope);
                            return fail(
                                &ctx,
                                RelayError::upstream(&ep.name, &ep.mask, e),
                                single_id,
                            )
                            .await;
                        }
                    }
                }
                if streams.is_empty() {
                    return Outcome::Accepted {
                        session: Some(session.id.clone()),
                    };
                }
                let events = futures_util::stream::select_all(streams);
                let mut ctx = self.ctx(ep, requests, Some(session), scope);
                ctx.watch = watch;
                ctx.filter = filter;
                render_first(Box::pin(events), ctx).await
            }
            (Upstream::Stdio(_), SessionUpstream::Http { .. }) => {
                unreachable!("sessions are created by their endpoint's own upstream kind")
            }
        }
    }

    async fn stateless_post(
        self: &Arc<Self>,
        ep: &Arc<Endpoint>,
        caller: &Caller,
        headers: &HeaderMap,
        version_header: Option<String>,
        msg: Message,
    ) -> Outcome {
        let id = msg.id().cloned();
        if let Err(e) = headers::check_mirrored(headers, &msg, &ep.param_headers(&msg)) {
            return self
                .refuse(ep, &caller.principal, headers, e.into(), Some(&msg), None)
                .await;
        }
        if msg.is_request()
            && let Err(e) = check_request_meta(&msg)
        {
            return self
                .refuse(ep, &caller.principal, headers, e, Some(&msg), None)
                .await;
        }
        let version = version_header
            .clone()
            .or_else(|| msg.meta_protocol_version().map(str::to_string))
            .unwrap_or_default();
        let decision = self.authorize(ep, caller, &msg, &version);
        if let Some(d) = decision.as_ref().filter(|d| d.verdict == Verdict::Deny) {
            return self.deny(ep, caller, &msg, d, None, "").await;
        }
        let filter = self.list_filter(caller, &[&msg], &version);
        let scope = self.scope(ep, None, &caller.principal);
        let recorded = match self.record_client(&scope, &msg, decision.as_ref()).await {
            Ok(a) => a,
            Err(e) => return error_outcome(e, id, None),
        };
        if let Some(d) = decision.filter(|d| d.verdict == Verdict::NeedsApproval) {
            // A granted list is filtered like any other.
            let (ep2, headers) = (ep.clone(), headers.clone());
            return self
                .hold(
                    ep,
                    caller,
                    hold::Held {
                        scope,
                        session: None,
                        msg,
                        decision: &d,
                        recorded,
                        version,
                    },
                    move |relay, msg, scope| async move {
                        relay
                            .stateless_send(
                                &ep2,
                                &headers,
                                version_header,
                                msg,
                                recorded,
                                scope,
                                filter,
                            )
                            .await
                    },
                )
                .await;
        }
        self.stateless_send(ep, headers, version_header, msg, recorded, scope, filter)
            .await
    }

    /// Forwards a recorded stateless message to the upstream and renders the answer.
    #[allow(clippy::too_many_arguments)]
    async fn stateless_send(
        &self,
        ep: &Arc<Endpoint>,
        headers: &HeaderMap,
        version_header: Option<String>,
        msg: Message,
        recorded: Appended,
        scope: Scope,
        filter: Option<ListFilter>,
    ) -> Outcome {
        let id = msg.id().cloned();
        let requests: Vec<(Value, Appended)> = id
            .clone()
            .filter(|_| msg.is_request())
            .map(|i| (i, recorded))
            .into_iter()
            .collect();
        let watch = if msg.method() == Some("tools/list") {
            Watch::ToolsList
        } else {
            Watch::Nothing
        };
        let long_lived = msg.method() == Some("subscriptions/listen");
        match &ep.upstream {
            Upstream::Http(up) => {
                let out = Outbound {
                    session: None,
                    version: version_header.as_deref(),
                    headers,
                };
                match up.post(out, msg.to_bytes()).await {
                    Ok((reply, _, recorded)) => {
                        let mut ctx = self.ctx(ep, requests, None, scope);
                        ctx.watch = watch;
                        ctx.long_lived = long_lived;
                        ctx.filter = filter;
                        ctx.upstream_headers = std::sync::Mutex::new(Some(recorded));
                        render(reply, ctx).await
                    }
                    Err(e) => {
                        let ctx = self.ctx(ep, requests, None, scope);
                        fail(&ctx, RelayError::upstream(&ep.name, &ep.mask, e), id).await
                    }
                }
            }
            Upstream::Stdio(up) => {
                if !msg.is_request() {
                    // Stateless HTTP clients cancel by closing the stream; there is nothing to
                    // pass on for a notification without a session.
                    return Outcome::Accepted { session: None };
                }
                let events = match up.pooled() {
                    Ok(child) => child.request(msg, true).await,
                    Err(e) => Err(e),
                };
                let mut ctx = self.ctx(ep, requests, None, scope);
                match events {
                    Ok(events) => {
                        ctx.watch = watch;
                        ctx.long_lived = long_lived;
                        ctx.stateless_status = true;
                        ctx.filter = filter;
                        render_first(events, ctx).await
                    }
                    Err(e) => fail(&ctx, RelayError::upstream(&ep.name, &ep.mask, e), id).await,
                }
            }
        }
    }

    /// The session a GET or DELETE names (taken out of the table for DELETE), or the refusal.
    async fn named_session(
        &self,
        ep: &Arc<Endpoint>,
        caller: &Caller,
        headers: &HeaderMap,
        method: &'static str,
        take: bool,
    ) -> Result<Arc<Session>, Outcome> {
        let Some(sid) = headers.get(headers::MCP_SESSION_ID) else {
            return Err(self
                .refuse(
                    ep,
                    &caller.principal,
                    headers,
                    RelayError::MethodNotAllowed(method),
                    None,
                    None,
                )
                .await);
        };
        let sid = sid.to_str().ok();
        let found = sid.and_then(|sid| {
            if take {
                ep.sessions.remove_owned(sid, &caller.principal.binding)
            } else {
                ep.sessions.get(sid, &caller.principal.binding)
            }
        });
        match found {
            Some(session) => Ok(session),
            None => Err(self
                .refuse(
                    ep,
                    &caller.principal,
                    headers,
                    RelayError::SessionNotFound(String::new()),
                    None,
                    None,
                )
                .await),
        }
    }

    /// A GET: the standalone server stream of a session.
    pub async fn get(&self, ep: &Arc<Endpoint>, caller: &Caller, headers: &HeaderMap) -> Outcome {
        let session = match self.named_session(ep, caller, headers, "GET", false).await {
            Ok(s) => s,
            Err(refused) => return refused,
        };
        let scope = self.scope(ep, Some(session.id.clone()), &caller.principal);
        let mut ctx = self.ctx(ep, Vec::new(), Some(session.clone()), scope.clone());
        ctx.long_lived = true;
        match (&ep.upstream, &session.upstream) {
            (
                Upstream::Http(up),
                SessionUpstream::Http {
                    session: upstream_sid,
                },
            ) => {
                let version = headers::get(headers, MCP_PROTOCOL_VERSION)
                    .and_then(Result::ok)
                    .map(str::to_string)
                    .unwrap_or_else(|| session.version());
                let out = Outbound {
                    session: upstream_sid.as_ref(),
                    version: Some(&version),
                    headers,
                };
                // The client resumes after an event id the gateway issued; the upstream gets
                // its own id for that event back.
                let last_event = match headers.get(headers::LAST_EVENT_ID) {
                    None => None,
                    Some(v) => match v
                        .to_str()
                        .ok()
                        .and_then(|id| session.events.upstream(id))
                        .and_then(|id| HeaderValue::from_str(&id).ok())
                    {
                        Some(upstream_id) => Some(upstream_id),
                        None => {
                            let error = RelayError::UnknownEventId(
                                String::from_utf8_lossy(v.as_bytes())
                                    .chars()
                                    .take(64)
                                    .collect(),
                            );
                            return self
                                .refuse(ep, &caller.principal, headers, error, None, None)
                                .await;
                        }
                    },
                };
                match up.get(out, last_event.as_ref()).await {
                    Ok((reply, recorded)) => {
                        ctx.upstream_headers = std::sync::Mutex::new(Some(recorded));
                        render(reply, ctx).await
                    }
                    Err(UpstreamError::SessionGone) => {
                        ep.sessions.remove(&session.id);
                        let _ = scope
                            .event(
                                EntryKind::SessionClosed,
                                json!({ "reason": "the upstream ended it" }),
                            )
                            .await;
                        error_outcome(
                            RelayError::SessionNotFound(" (the upstream ended it)".into()),
                            None,
                            None,
                        )
                    }
                    Err(UpstreamError::Status(status, _)) => Outcome::Status(
                        StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY),
                    ),
                    Err(e) => {
                        error_outcome(RelayError::upstream(&ep.name, &ep.mask, e), None, None)
                    }
                }
            }
            (_, SessionUpstream::Stdio(child)) => match child.standalone() {
                Ok(events) => render(Reply::Stream(events), ctx).await,
                Err(e) => error_outcome(RelayError::upstream(&ep.name, &ep.mask, e), None, None),
            },
            (Upstream::Stdio(_), SessionUpstream::Http { .. }) => {
                unreachable!("sessions are created by their endpoint's own upstream kind")
            }
        }
    }

    /// A DELETE: ends a session here and upstream.
    pub async fn delete(
        &self,
        ep: &Arc<Endpoint>,
        caller: &Caller,
        headers: &HeaderMap,
    ) -> Outcome {
        let session = match self
            .named_session(ep, caller, headers, "DELETE", true)
            .await
        {
            Ok(s) => s,
            Err(refused) => return refused,
        };
        ep.close_session(&session).await;
        let scope = self.scope(ep, Some(session.id.clone()), &caller.principal);
        if let Err(e) = scope
            .event(
                EntryKind::SessionClosed,
                json!({ "reason": "deleted by the client" }),
            )
            .await
        {
            return error_outcome(e, None, None);
        }
        Outcome::Status(StatusCode::OK)
    }

    async fn close(&self, ep: &Arc<Endpoint>, session: &Session, reason: &str) {
        ep.close_session(session).await;
        let scope = self.scope(ep, Some(session.id.clone()), &session.owner);
        if let Err(e) = scope
            .event(EntryKind::SessionClosed, json!({ "reason": reason }))
            .await
        {
            tracing::error!(endpoint = %ep.name, session = %session.id, "couldn't record the session's end: {e}");
        }
    }

    /// Closes sessions idle longer than the configured timeout and idle pooled processes.
    pub async fn reap(&self) {
        for ep in self.endpoints.values() {
            for session in ep.sessions.take_idle(self.session_idle) {
                tracing::info!(endpoint = %ep.name, session = %session.id, "closing idle session");
                self.close(ep, &session, "idle").await;
            }
            if let Upstream::Stdio(up) = &ep.upstream {
                up.reap_idle().await;
            }
        }
    }

    /// Resolves every endpoint's credential references again (SIGHUP), recording each outcome
    /// as a `config_changed` entry (endpoint and reference on failure, never a value). A failed
    /// endpoint keeps the values in force.
    pub async fn reload_credentials(&self) {
        let mut names: Vec<&String> = self.endpoints.keys().collect();
        names.sort();
        for name in names {
            let ep = &self.endpoints[name];
            if !ep.credentials.has_references() {
                continue;
            }
            let detail = match ep.credentials.reload() {
                Ok(()) => {
                    tracing::info!(endpoint = %name, "upstream credentials re-read (SIGHUP)");
                    json!({ "credentials": { "endpoint": name, "reloaded": true, "trigger": "SIGHUP" } })
                }
                Err(e) => {
                    tracing::error!(
                        "upstream credentials not reloaded, the values in force stay: {e}"
                    );
                    json!({ "credentials": { "endpoint": name, "reloaded": false, "trigger": "SIGHUP", "error": e } })
                }
            };
            if let Err(e) = self
                .audit
                .append(crate::audit::Draft::gateway(
                    EntryKind::ConfigChanged,
                    name,
                    detail.to_string(),
                ))
                .await
            {
                tracing::error!("couldn't record the credential reload: {e}");
            }
        }
    }

    /// Begins shutdown: long-lived streams end now; other calls may finish.
    pub fn begin_shutdown(&self) {
        self.closing.cancel();
    }

    /// Ends every call still running and stops every upstream session and process.
    pub async fn finish_shutdown(&self) {
        self.closing.cancel();
        self.force.cancel();
        let mut closing = Vec::new();
        for ep in self.endpoints.values() {
            for session in ep.sessions.drain() {
                let ep = ep.clone();
                closing.push(async move { self.close(&ep, &session, "the gateway stopped").await });
            }
        }
        futures_util::future::join_all(closing).await;
        for ep in self.endpoints.values() {
            if let Upstream::Stdio(up) = &ep.upstream {
                up.shutdown().await;
            }
        }
    }
}

/// The `Mcp-Session-Id` a request names (clipped: it may be anything), as recorded with a
/// refusal.
pub fn session_header(headers: &HeaderMap) -> Option<Arc<str>> {
    headers
        .get(headers::MCP_SESSION_ID)
        .and_then(|v| v.to_str().ok())
        .map(|s| Arc::<str>::from(crate::identity::clip(s)))
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
        session: ctx.session.as_ref().map(|s| s.id.clone()),
    }
}

/// A stateless request must say, in `_meta`, which version it speaks and what the client can
/// do; the gateway relies on both and refuses a request that omits them.
fn check_request_meta(msg: &Message) -> Result<(), RelayError> {
    let Some(meta) = msg.meta_head() else {
        return Err(RelayError::InvalidMeta(
            "a 2026-07-28 request must carry params._meta with the protocol version and client capabilities",
        ));
    };
    let Some(v) = meta.protocol_version.as_deref() else {
        return Err(RelayError::InvalidMeta(
            "params._meta is missing io.modelcontextprotocol/protocolVersion",
        ));
    };
    if !meta.client_capabilities_is_object {
        return Err(RelayError::InvalidMeta(
            "params._meta is missing io.modelcontextprotocol/clientCapabilities",
        ));
    }
    if version::generation(v) != Some(Generation::Stateless) {
        return Err(RelayError::UnsupportedVersion(v.to_string()));
    }
    Ok(())
}
