//! The transport-independent part of the server: sessions, dispatch, the request context tools
//! run in, server-to-client requests and `subscriptions/listen` streams.

mod dispatch;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};
use tokio::task::AbortHandle;

use crate::catalog::Catalog;
use crate::rpc::{self, RpcError, Shape, code};
use crate::{SESSION_VERSIONS, all_versions, is_stateless_version, meta};

/// How long a tool waits for the client to answer a server-to-client request.
const CLIENT_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Something the engine wants a transport to do.
#[derive(Debug)]
pub enum Outgoing {
    /// Send a message. `related` is the id of the client request it belongs to; `None` means it
    /// belongs to no request (it goes on the session's standalone stream).
    Message {
        related: Option<Value>,
        message: Value,
    },
    /// Close the response stream of request `related` without answering (SSE polling, SEP-1699).
    CloseStream { related: Value },
}

/// Where a request's messages go.
#[derive(Clone, Debug)]
pub struct Outbox(mpsc::UnboundedSender<Outgoing>);

impl Outbox {
    pub fn channel() -> (Self, mpsc::UnboundedReceiver<Outgoing>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Self(tx), rx)
    }

    pub fn send(&self, related: Option<Value>, message: Value) {
        // A closed outbox means the client went away; there is nobody left to tell.
        let _ = self.0.send(Outgoing::Message { related, message });
    }

    fn close_stream(&self, related: Value) {
        let _ = self.0.send(Outgoing::CloseStream { related });
    }

    pub fn is_closed(&self) -> bool {
        self.0.is_closed()
    }

    pub async fn closed(&self) {
        self.0.closed().await
    }
}

/// State of one session-based client (or one stdio connection).
#[derive(Debug)]
pub struct Session {
    version: Mutex<String>,
    client_capabilities: Mutex<Value>,
    log_level: Mutex<Option<String>>,
    /// Server-to-client requests waiting for the client's answer, by id key.
    pending: Mutex<HashMap<String, oneshot::Sender<Value>>>,
    /// Client requests being worked on, for `notifications/cancelled`.
    inflight: Mutex<HashMap<String, AbortHandle>>,
    subscriptions: Mutex<HashSet<String>>,
    next_id: AtomicU64,
    /// Messages that belong to no request (list changes, resource updates).
    standalone: Outbox,
}

impl Session {
    pub fn new(standalone: Outbox) -> Arc<Self> {
        Arc::new(Self {
            version: Mutex::new(SESSION_VERSIONS[0].to_string()),
            client_capabilities: Mutex::new(json!({})),
            log_level: Mutex::new(None),
            pending: Mutex::new(HashMap::new()),
            inflight: Mutex::new(HashMap::new()),
            subscriptions: Mutex::new(HashSet::new()),
            next_id: AtomicU64::new(1),
            standalone,
        })
    }

    pub fn version(&self) -> String {
        lock(&self.version).clone()
    }

    /// Stop everything this session is working on.
    pub fn close(&self) {
        for (_, handle) in lock(&self.inflight).drain() {
            handle.abort();
        }
        lock(&self.pending).clear();
    }
}

/// A `subscriptions/listen` stream (stateless generation).
struct Listener {
    id: Value,
    tools: bool,
    prompts: bool,
    resources: bool,
    out: Outbox,
}

/// The server: a catalog of tools, resources and prompts plus the protocol around it.
pub struct Engine {
    catalog: Catalog,
    listeners: Mutex<Vec<Listener>>,
    /// Key that protects `requestState` round-tripped through clients.
    state_key: [u8; 32],
}

impl Engine {
    pub fn new(catalog: Catalog) -> Arc<Self> {
        Arc::new(Self {
            catalog,
            listeners: Mutex::new(Vec::new()),
            state_key: rand::random(),
        })
    }

    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    pub fn state_key(&self) -> &[u8; 32] {
        &self.state_key
    }

    /// Validates the per-request `_meta` of a stateless request.
    ///
    /// # Errors
    /// `-32602` (HTTP 400) when `_meta` or its required fields are missing, `-32022` (HTTP 400)
    /// for a protocol version this server does not speak.
    pub fn check_stateless(&self, msg: &Value) -> Result<(), RpcError> {
        let meta = msg.pointer("/params/_meta");
        let Some(meta) = meta.and_then(Value::as_object) else {
            return Err(RpcError::bad_request(
                code::INVALID_PARAMS,
                "request params must carry _meta with the protocol version and client capabilities",
            ));
        };
        let Some(version) = meta.get(meta::PROTOCOL_VERSION).and_then(Value::as_str) else {
            return Err(RpcError::bad_request(
                code::INVALID_PARAMS,
                format!("_meta is missing {}", meta::PROTOCOL_VERSION),
            ));
        };
        if !meta
            .get(meta::CLIENT_CAPABILITIES)
            .is_some_and(Value::is_object)
        {
            return Err(RpcError::bad_request(
                code::INVALID_PARAMS,
                format!("_meta is missing {}", meta::CLIENT_CAPABILITIES),
            ));
        }
        if !is_stateless_version(version) {
            return Err(unsupported_version(version));
        }
        Ok(())
    }

    /// Takes one message from a client. A request runs on its own task; its response and the
    /// messages related to it go to `out`. Returns the task's abort handle for requests, so a
    /// transport can cancel the work when the client goes away.
    pub fn receive(
        self: &Arc<Self>,
        session: Option<&Arc<Session>>,
        msg: Value,
        out: Outbox,
    ) -> Option<AbortHandle> {
        match rpc::shape(&msg) {
            Shape::Request => {
                let id = msg["id"].clone();
                let stateless = msg.pointer("/params/_meta").is_some_and(|m| {
                    m.get(meta::PROTOCOL_VERSION)
                        .and_then(Value::as_str)
                        .is_some_and(is_stateless_version)
                });
                let ctx = Ctx {
                    engine: self.clone(),
                    session: session.cloned(),
                    id: id.clone(),
                    method: rpc::method(&msg).to_string(),
                    params: msg.get("params").cloned().unwrap_or_else(|| json!({})),
                    stateless,
                    out: out.clone(),
                };
                let key = rpc::id_key(&id);
                let session_for_task = session.cloned();
                let task = tokio::spawn(async move {
                    let response = match ctx.dispatch().await {
                        Ok(Some(result)) => Some(rpc::result(&ctx.id, result)),
                        Ok(None) => None,
                        Err(err) => Some(err.to_response(&ctx.id)),
                    };
                    if let Some(response) = response {
                        ctx.out.send(Some(ctx.id.clone()), response);
                    }
                    if let Some(session) = session_for_task {
                        lock(&session.inflight).remove(&rpc::id_key(&ctx.id));
                    }
                });
                let handle = task.abort_handle();
                if let Some(session) = session {
                    lock(&session.inflight).insert(key, handle.clone());
                }
                Some(handle)
            }
            Shape::Response => {
                if let Some(session) = session {
                    let waiter = lock(&session.pending).remove(&rpc::id_key(&msg["id"]));
                    if let Some(waiter) = waiter {
                        let _ = waiter.send(msg);
                    }
                }
                None
            }
            Shape::Notification => {
                if let (Some(session), "notifications/cancelled") = (session, rpc::method(&msg))
                    && let Some(id) = msg.pointer("/params/requestId")
                    && let Some(handle) = lock(&session.inflight).remove(&rpc::id_key(id))
                {
                    handle.abort();
                }
                None
            }
            Shape::Invalid => None,
        }
    }

    fn add_listener(&self, listener: Listener) {
        let mut listeners = lock(&self.listeners);
        listeners.retain(|l| !l.out.is_closed());
        listeners.push(listener);
    }

    /// Tells every open `subscriptions/listen` stream that opted in to `kind`.
    pub fn notify_listeners(&self, method: &str, kind: ListKind, params: Value) {
        let mut listeners = lock(&self.listeners);
        listeners.retain(|l| !l.out.is_closed());
        for l in listeners.iter() {
            let wanted = match kind {
                ListKind::Tools => l.tools,
                ListKind::Prompts => l.prompts,
                ListKind::Resources => l.resources,
            };
            if wanted {
                let mut params = params.clone();
                params["_meta"] = json!({ meta::SUBSCRIPTION_ID: l.id });
                l.out
                    .send(Some(l.id.clone()), rpc::notification(method, params));
            }
        }
    }
}

/// Which list a change notification is about.
#[derive(Debug, Clone, Copy)]
pub enum ListKind {
    Tools,
    Prompts,
    Resources,
}

pub fn unsupported_version(requested: &str) -> RpcError {
    RpcError::bad_request(
        code::UNSUPPORTED_PROTOCOL_VERSION,
        format!("unsupported protocol version {requested:?}"),
    )
    .with_data(json!({ "requested": requested, "supported": all_versions() }))
}

/// The context one client request runs in.
pub struct Ctx {
    engine: Arc<Engine>,
    session: Option<Arc<Session>>,
    pub id: Value,
    pub method: String,
    pub params: Value,
    /// The request carries stateless `_meta` (2026-07-28).
    pub stateless: bool,
    out: Outbox,
}

impl Ctx {
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn meta(&self) -> &Value {
        self.params.get("_meta").unwrap_or(&Value::Null)
    }

    pub fn progress_token(&self) -> Option<Value> {
        self.meta().get("progressToken").cloned()
    }

    /// The client's capabilities: per request when stateless, from `initialize` otherwise.
    pub fn client_capabilities(&self) -> Value {
        if self.stateless {
            return self
                .meta()
                .get(meta::CLIENT_CAPABILITIES)
                .cloned()
                .unwrap_or_else(|| json!({}));
        }
        match &self.session {
            Some(s) => lock(&s.client_capabilities).clone(),
            None => json!({}),
        }
    }

    /// Sends a notification related to this request.
    pub fn notify(&self, method: &str, params: Value) {
        self.out
            .send(Some(self.id.clone()), rpc::notification(method, params));
    }

    /// Sends a log message if the client asked for this level.
    pub fn log(&self, level: &str, data: Value) {
        let threshold = if self.stateless {
            match self.meta().get(meta::LOG_LEVEL).and_then(Value::as_str) {
                Some(l) => Some(l.to_string()),
                // Stateless servers must not log for requests that did not ask for it.
                None => return,
            }
        } else {
            self.session
                .as_ref()
                .and_then(|s| lock(&s.log_level).clone())
        };
        if threshold.is_some_and(|t| severity(level) < severity(&t)) {
            return;
        }
        self.notify(
            "notifications/message",
            json!({ "level": level, "logger": self.engine.catalog.name(), "data": data }),
        );
    }

    /// Closes this request's response stream without answering (the client resumes it).
    pub fn close_stream(&self) {
        self.out.close_stream(self.id.clone());
    }

    /// Sends a request to the client and waits for its answer (session-based generation only).
    ///
    /// # Errors
    /// The client's JSON-RPC error, a timeout, or "not supported" without a session.
    pub async fn request(&self, method: &str, params: Value) -> Result<Value, RpcError> {
        let Some(session) = &self.session else {
            return Err(RpcError::new(
                code::INTERNAL_ERROR,
                "server-to-client requests need a session",
            ));
        };
        let n = session.next_id.fetch_add(1, Ordering::Relaxed);
        let id = json!(format!("srv-{n}"));
        let (tx, rx) = oneshot::channel();
        lock(&session.pending).insert(rpc::id_key(&id), tx);
        self.out
            .send(Some(self.id.clone()), rpc::request(&id, method, params));
        let answer = tokio::time::timeout(CLIENT_REQUEST_TIMEOUT, rx).await;
        lock(&session.pending).remove(&rpc::id_key(&id));
        match answer {
            Ok(Ok(msg)) => match msg.get("result") {
                Some(result) => Ok(result.clone()),
                None => Err(RpcError::new(
                    msg.pointer("/error/code")
                        .and_then(Value::as_i64)
                        .unwrap_or(code::INTERNAL_ERROR),
                    msg.pointer("/error/message")
                        .and_then(Value::as_str)
                        .unwrap_or("client returned an error"),
                )),
            },
            Ok(Err(_)) => Err(RpcError::new(code::INTERNAL_ERROR, "session closed")),
            Err(_) => Err(RpcError::new(
                code::INTERNAL_ERROR,
                format!("client did not answer {method} in time"),
            )),
        }
    }

    /// Sends a list-changed notification to this session's standalone stream (session-based) or
    /// to every listen stream that opted in (stateless).
    pub fn list_changed(&self, kind: ListKind) {
        let method = match kind {
            ListKind::Tools => "notifications/tools/list_changed",
            ListKind::Prompts => "notifications/prompts/list_changed",
            ListKind::Resources => "notifications/resources/list_changed",
        };
        self.engine.notify_listeners(method, kind, json!({}));
        if let Some(s) = &self.session {
            s.standalone
                .send(None, rpc::notification(method, json!({})));
        }
    }

    /// Sends `notifications/resources/updated` if this session subscribed to `uri`.
    pub fn resource_updated(&self, uri: &str) {
        if let Some(s) = &self.session
            && lock(&s.subscriptions).contains(uri)
        {
            s.standalone.send(
                None,
                rpc::notification("notifications/resources/updated", json!({ "uri": uri })),
            );
        }
    }
}

fn severity(level: &str) -> u8 {
    match level {
        "debug" => 0,
        "info" => 1,
        "notice" => 2,
        "warning" => 3,
        "error" => 4,
        "critical" => 5,
        "alert" => 6,
        "emergency" => 7,
        _ => 1,
    }
}

/// Locks a mutex, recovering the data if a panicking thread poisoned it (state here stays
/// consistent across a panic: every critical section is a single insert or remove).
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
