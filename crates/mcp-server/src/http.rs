//! The Streamable HTTP transport, both generations, on one endpoint path.
//!
//! Session-based clients get an `Mcp-Session-Id`, SSE responses with event ids and a priming
//! event (2025-11-25), resumption with `Last-Event-ID` on GET, a standalone GET stream and
//! DELETE. Stateless clients get per-request validation of the mirrored headers and `_meta`.

mod stateless;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use futures_util::StreamExt;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tokio_stream::wrappers::ReceiverStream;

use crate::engine::{Engine, Outbox, Outgoing, Session, lock, unsupported_version};
use crate::rpc::{self, RpcError, Shape, code};
use crate::{SESSION_VERSIONS, is_stateless_version};

/// Milliseconds a client should wait before resuming a closed stream.
const RETRY_MS: u64 = 500;

struct HttpSession {
    session: Arc<Session>,
    /// The connection of the current GET stream, if one is open.
    standalone: Arc<Mutex<Option<mpsc::Sender<Bytes>>>>,
    streams: Mutex<HashMap<u64, Arc<Mutex<StreamState>>>>,
    next_stream: AtomicU64,
}

/// One request's SSE stream, kept so that a client can resume it.
#[derive(Default)]
struct StreamState {
    events: Vec<(u64, Value)>,
    live: Option<mpsc::Sender<Bytes>>,
    done: bool,
}

struct AppState {
    engine: Arc<Engine>,
    sessions: Mutex<HashMap<String, Arc<HttpSession>>>,
}

/// The MCP endpoint at `path`.
pub fn router(engine: Arc<Engine>, path: &str) -> Router {
    let state = Arc::new(AppState {
        engine,
        sessions: Mutex::new(HashMap::new()),
    });
    Router::new()
        .route(
            path,
            post(handle_post).get(handle_get).delete(handle_delete),
        )
        .with_state(state)
}

/// Serves the MCP endpoint `/mcp` on `addr` until the process ends.
///
/// # Errors
/// Binding or serving errors.
pub async fn serve(engine: Arc<Engine>, addr: SocketAddr) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    axum::serve(listener, router(engine, "/mcp")).await
}

fn error_response(status: StatusCode, err: &RpcError, id: &Value) -> Response {
    let body = err.to_response(id).to_string();
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn plain_error(status: StatusCode, code: i64, message: &str) -> Response {
    error_response(status, &RpcError::new(code, message), &Value::Null)
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// DNS-rebinding protection: only loopback names in Host and Origin.
fn host_allowed(headers: &HeaderMap) -> bool {
    fn loopback(host: &str) -> bool {
        let name = if let Some(rest) = host.strip_prefix('[') {
            rest.split(']')
                .next()
                .map(|h| format!("[{h}]"))
                .unwrap_or_default()
        } else {
            host.split(':').next().unwrap_or("").to_string()
        };
        matches!(name.as_str(), "localhost" | "127.0.0.1" | "[::1]")
    }
    if let Some(host) = header_str(headers, "host")
        && !loopback(host)
    {
        return false;
    }
    if let Some(origin) = header_str(headers, "origin") {
        let host = origin.split("://").nth(1).unwrap_or("");
        if !loopback(host) {
            return false;
        }
    }
    true
}

fn sse_event(id: Option<&str>, retry: Option<u64>, data: &str) -> Bytes {
    let mut out = String::new();
    if let Some(id) = id {
        out.push_str("id: ");
        out.push_str(id);
        out.push('\n');
    }
    if let Some(retry) = retry {
        out.push_str(&format!("retry: {retry}\n"));
    }
    out.push_str("data: ");
    out.push_str(data);
    out.push_str("\n\n");
    Bytes::from(out)
}

fn sse_response(
    rx: mpsc::Receiver<Bytes>,
    session_id: Option<&str>,
    guard: Option<AbortOnDrop>,
) -> Response {
    let stream = ReceiverStream::new(rx).map(move |b| {
        let _keep = &guard;
        Ok::<_, Infallible>(b)
    });
    let mut resp = Response::new(Body::from_stream(stream));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Some(sid) = session_id.and_then(|s| HeaderValue::from_str(s).ok()) {
        h.insert("mcp-session-id", sid);
    }
    resp
}

/// Aborts a request's task when its response stream is dropped (stateless cancellation).
struct AbortOnDrop(AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn is_final(msg: &Value, id: &Value) -> bool {
    rpc::shape(msg) == Shape::Response && &msg["id"] == id
}

fn status_for(msg: &Value, stateless: bool) -> StatusCode {
    if !stateless {
        return StatusCode::OK;
    }
    match msg.pointer("/error/code").and_then(Value::as_i64) {
        Some(code::METHOD_NOT_FOUND) => StatusCode::NOT_FOUND,
        Some(
            code::HEADER_MISMATCH
            | code::MISSING_CLIENT_CAPABILITY
            | code::UNSUPPORTED_PROTOCOL_VERSION,
        ) => StatusCode::BAD_REQUEST,
        _ => StatusCode::OK,
    }
}

fn json_response(msg: &Value, status: StatusCode, session_id: Option<&str>) -> Response {
    let mut resp = (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        msg.to_string(),
    )
        .into_response();
    if let Some(sid) = session_id.and_then(|s| HeaderValue::from_str(s).ok()) {
        resp.headers_mut().insert("mcp-session-id", sid);
    }
    resp
}

async fn handle_post(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !host_allowed(&headers) {
        return plain_error(
            StatusCode::FORBIDDEN,
            code::INVALID_REQUEST,
            "Host or Origin not allowed",
        );
    }
    let accept = header_str(&headers, "accept").unwrap_or("");
    if !(accept.contains("application/json") && accept.contains("text/event-stream")) {
        return plain_error(
            StatusCode::NOT_ACCEPTABLE,
            code::INVALID_REQUEST,
            "Accept must list application/json and text/event-stream",
        );
    }
    if !header_str(&headers, "content-type").is_some_and(|c| c.starts_with("application/json")) {
        return plain_error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            code::INVALID_REQUEST,
            "Content-Type must be application/json",
        );
    }
    let msg: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return plain_error(
                StatusCode::BAD_REQUEST,
                code::PARSE_ERROR,
                &format!("invalid JSON: {e}"),
            );
        }
    };
    let version_header = header_str(&headers, "mcp-protocol-version").map(str::trim);
    let session_header = header_str(&headers, "mcp-session-id");
    let id = msg.get("id").cloned().unwrap_or(Value::Null);

    if let Some(sid) = session_header {
        let Some(sess) = lock(&app.sessions).get(sid).cloned() else {
            return plain_error(
                StatusCode::NOT_FOUND,
                code::INVALID_REQUEST,
                "session not found",
            );
        };
        if let Some(v) = version_header
            && !SESSION_VERSIONS.contains(&v)
        {
            return error_response(StatusCode::BAD_REQUEST, &unsupported_version(v), &id);
        }
        return session_post(&app, &sess, sid, msg).await;
    }
    let method = rpc::method(&msg);
    let stateless = version_header.is_some_and(is_stateless_version)
        || (method != "initialize"
            && msg
                .pointer("/params/_meta/io.modelcontextprotocol~1protocolVersion")
                .is_some());
    if method == "initialize" && !stateless {
        let (standalone, standalone_rx) = Outbox::channel();
        let sess = Arc::new(HttpSession {
            session: Session::new(standalone),
            standalone: Arc::new(Mutex::new(None)),
            streams: Mutex::new(HashMap::new()),
            next_stream: AtomicU64::new(1),
        });
        spawn_standalone_pump(standalone_rx, sess.standalone.clone());
        let sid = hex::encode(rand::random::<[u8; 16]>());
        lock(&app.sessions).insert(sid.clone(), sess.clone());
        return session_post(&app, &sess, &sid, msg).await;
    }
    if !stateless {
        if let Some(v) = version_header
            && !SESSION_VERSIONS.contains(&v)
        {
            return error_response(StatusCode::BAD_REQUEST, &unsupported_version(v), &id);
        }
        return plain_error(
            StatusCode::BAD_REQUEST,
            -32000,
            "Bad Request: missing Mcp-Session-Id",
        );
    }
    stateless::stateless_post(&app, &headers, msg).await
}

fn spawn_standalone_pump(
    mut rx: mpsc::UnboundedReceiver<Outgoing>,
    target: Arc<Mutex<Option<mpsc::Sender<Bytes>>>>,
) {
    tokio::spawn(async move {
        while let Some(item) = rx.recv().await {
            if let Outgoing::Message { message, .. } = item {
                let tx = lock(&target).clone();
                if let Some(tx) = tx {
                    let _ = tx.send(sse_event(None, None, &message.to_string())).await;
                }
            }
        }
    });
}

async fn session_post(
    app: &Arc<AppState>,
    sess: &Arc<HttpSession>,
    sid: &str,
    msg: Value,
) -> Response {
    if rpc::shape(&msg) != Shape::Request {
        app.engine
            .receive(Some(&sess.session), msg, Outbox::channel().0);
        return StatusCode::ACCEPTED.into_response();
    }
    let id = msg["id"].clone();
    let (out, mut rx) = Outbox::channel();
    app.engine.receive(Some(&sess.session), msg, out);
    let Some(first) = rx.recv().await else {
        return plain_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            code::INTERNAL_ERROR,
            "request produced no answer",
        );
    };
    if let Outgoing::Message { message, .. } = &first
        && is_final(message, &id)
    {
        return json_response(message, StatusCode::OK, Some(sid));
    }
    // An SSE stream, resumable: every event gets an id, a priming event comes first.
    let stream_no = sess.next_stream.fetch_add(1, Ordering::Relaxed);
    let state = Arc::new(Mutex::new(StreamState::default()));
    lock(&sess.streams).insert(stream_no, state.clone());
    let (tx, live_rx) = mpsc::channel(64);
    let priming = sess.session.version().as_str() >= "2025-11-25";
    if priming {
        let _ = tx.try_send(sse_event(
            Some(&format!("{stream_no}_0")),
            Some(RETRY_MS),
            "",
        ));
    }
    lock(&state).live = Some(tx);
    tokio::spawn(async move {
        let mut seq = 0u64;
        let mut next = Some(first);
        while let Some(item) = match next.take() {
            Some(item) => Some(item),
            None => rx.recv().await,
        } {
            match item {
                Outgoing::CloseStream { .. } => {
                    lock(&state).live = None;
                }
                Outgoing::Message { message, .. } => {
                    seq += 1;
                    let done = is_final(&message, &id);
                    let bytes = sse_event(
                        Some(&format!("{stream_no}_{seq}")),
                        None,
                        &message.to_string(),
                    );
                    let live = {
                        let mut st = lock(&state);
                        st.events.push((seq, message));
                        st.done = done;
                        if done {
                            st.live.take()
                        } else {
                            st.live.clone()
                        }
                    };
                    if let Some(live) = live {
                        let _ = live.send(bytes).await;
                    }
                    if done {
                        break;
                    }
                }
            }
        }
    });
    sse_response(live_rx, Some(sid), None)
}

async fn handle_get(State(app): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if !host_allowed(&headers) {
        return plain_error(
            StatusCode::FORBIDDEN,
            code::INVALID_REQUEST,
            "Host or Origin not allowed",
        );
    }
    if !header_str(&headers, "accept").is_some_and(|a| a.contains("text/event-stream")) {
        return plain_error(
            StatusCode::NOT_ACCEPTABLE,
            code::INVALID_REQUEST,
            "Accept must list text/event-stream",
        );
    }
    let Some(sid) = header_str(&headers, "mcp-session-id") else {
        return plain_error(
            StatusCode::METHOD_NOT_ALLOWED,
            code::INVALID_REQUEST,
            "GET needs a session",
        );
    };
    let Some(sess) = lock(&app.sessions).get(sid).cloned() else {
        return plain_error(
            StatusCode::NOT_FOUND,
            code::INVALID_REQUEST,
            "session not found",
        );
    };
    let (tx, rx) = mpsc::channel(64);
    if let Some(last) = header_str(&headers, "last-event-id") {
        let parsed = last
            .split_once('_')
            .and_then(|(s, n)| Some((s.parse::<u64>().ok()?, n.parse::<u64>().ok()?)));
        let Some((stream_no, after)) = parsed else {
            return plain_error(
                StatusCode::BAD_REQUEST,
                code::INVALID_REQUEST,
                "unknown Last-Event-ID",
            );
        };
        let Some(state) = lock(&sess.streams).get(&stream_no).cloned() else {
            return plain_error(
                StatusCode::NOT_FOUND,
                code::INVALID_REQUEST,
                "stream not found",
            );
        };
        let mut st = lock(&state);
        for (seq, message) in st.events.iter().filter(|(seq, _)| *seq > after) {
            let _ = tx.try_send(sse_event(
                Some(&format!("{stream_no}_{seq}")),
                None,
                &message.to_string(),
            ));
        }
        if !st.done {
            st.live = Some(tx);
        }
        drop(st);
        return sse_response(rx, Some(sid), None);
    }
    let mut slot = lock(&sess.standalone);
    if slot.as_ref().is_some_and(|t| !t.is_closed()) {
        return plain_error(
            StatusCode::CONFLICT,
            code::INVALID_REQUEST,
            "a GET stream is already open for this session",
        );
    }
    *slot = Some(tx);
    drop(slot);
    sse_response(rx, Some(sid), None)
}

async fn handle_delete(State(app): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if !host_allowed(&headers) {
        return plain_error(
            StatusCode::FORBIDDEN,
            code::INVALID_REQUEST,
            "Host or Origin not allowed",
        );
    }
    let Some(sid) = header_str(&headers, "mcp-session-id") else {
        return plain_error(
            StatusCode::METHOD_NOT_ALLOWED,
            code::INVALID_REQUEST,
            "DELETE needs a session",
        );
    };
    match lock(&app.sessions).remove(sid) {
        Some(sess) => {
            sess.session.close();
            StatusCode::OK.into_response()
        }
        None => plain_error(
            StatusCode::NOT_FOUND,
            code::INVALID_REQUEST,
            "session not found",
        ),
    }
}
