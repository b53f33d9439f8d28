//! `custody connect URL`: a local stdio MCP server that relays to one gateway endpoint, for MCP
//! clients that only start servers as processes. Every line on stdin is POSTed to the endpoint
//! with the job's own token; every message of the answer (JSON, or each event of a stream) is a
//! line on stdout. It speaks both protocol generations: for session-based ones it keeps the
//! gateway's `Mcp-Session-Id` and negotiated version and relays the session's own stream (GET);
//! for the stateless one it mirrors the headers the body implies (`Mcp-Method`, `Mcp-Name`,
//! `Mcp-Param-*`).
//!
//! A refused token or an unreachable gateway ends it with a message on stderr and a non-zero
//! status (after answering the request with a JSON-RPC error), so a pipeline step fails loudly.

pub mod evidence;
pub mod token;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http::{HeaderValue, Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::mcp::headers::{self, MCP_PROTOCOL_VERSION, MCP_SESSION_ID, ParamHeader};
use crate::mcp::message::Message;

/// The largest JSON answer read (an SSE stream is read event by event).
const MAX_BODY: usize = 64 * 1024 * 1024;

/// Why `connect` stopped early: printed on stderr, and the process exits non-zero.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("couldn't get a token: {0}")]
    Token(String),
    #[error("the gateway at {url} refused the token from {source_name}: {reason}")]
    Unauthorized {
        url: String,
        source_name: String,
        reason: String,
    },
    #[error("couldn't reach the gateway at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("{0}")]
    Io(String),
    #[error("couldn't write the evidence file {path}: {reason}")]
    Evidence { path: String, reason: String },
    #[error("the gateway at {url} answered HTTP {status}: {reason}")]
    Ended {
        url: String,
        status: StatusCode,
        reason: String,
    },
}

struct State {
    url: http::Uri,
    url_text: String,
    source: token::Source,
    token: tokio::sync::Mutex<token::Token>,
    session: Mutex<Option<HeaderValue>>,
    version: Mutex<Option<String>>,
    /// `x-mcp-header` arguments of the endpoint's tools, learned from `tools/list` answers.
    tools: Mutex<HashMap<String, Vec<ParamHeader>>>,
    http: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    out: mpsc::Sender<String>,
    fatal: Mutex<Option<ConnectError>>,
    stop: tokio_util::sync::CancellationToken,
    /// Receipts kept for `--evidence`.
    evidence: Option<evidence::Collector>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Relays stdin to `url` and answers to stdout until stdin ends.
///
/// # Errors
/// [`ConnectError`]: no token, a refused token, an unreachable gateway.
pub async fn run(
    url: &str,
    source: token::Source,
    evidence_file: Option<&std::path::Path>,
) -> Result<(), ConnectError> {
    let uri: http::Uri = url.parse().map_err(|_| ConnectError::Unreachable {
        url: url.to_string(),
        reason:
            "it is not a URL (give the endpoint's, e.g. https://custody.example.com/mcp/deploy)"
                .into(),
    })?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) {
        return Err(ConnectError::Unreachable {
            url: url.to_string(),
            reason: "only http:// and https:// URLs are supported".into(),
        });
    }
    let first = token::fetch(&source).await.map_err(ConnectError::Token)?;
    let (out, mut lines_out) = mpsc::channel::<String>(64);
    let state = Arc::new(State {
        url: uri,
        url_text: url.to_string(),
        source,
        token: tokio::sync::Mutex::new(first),
        session: Mutex::new(None),
        version: Mutex::new(None),
        tools: Mutex::new(HashMap::new()),
        http: crate::net::client(Duration::from_secs(10)),
        out,
        fatal: Mutex::new(None),
        stop: tokio_util::sync::CancellationToken::new(),
        evidence: evidence_file.map(|_| evidence::Collector::default()),
    });
    let writer = tokio::spawn(async move {
        let mut stdout = tokio::io::stdout();
        while let Some(line) = lines_out.recv().await {
            if stdout.write_all(line.as_bytes()).await.is_err()
                || stdout.write_all(b"\n").await.is_err()
                || stdout.flush().await.is_err()
            {
                break;
            }
        }
    });
    let mut stdin = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut calls = tokio::task::JoinSet::new();
    let mut listener: Option<tokio::task::JoinHandle<()>> = None;
    loop {
        let line = tokio::select! {
            () = state.stop.cancelled() => break,
            line = stdin.next_line() => match line {
                Ok(Some(l)) => l,
                Ok(None) => break,
                Err(e) => {
                    fatal(&state, ConnectError::Io(format!("reading stdin: {e}")));
                    break;
                }
            },
        };
        if line.trim().is_empty() {
            continue;
        }
        let msg = match Message::parse(
            Bytes::from(line),
            crate::mcp::message::Limits {
                max_depth: 120,
                max_batch: 1,
            },
        ) {
            Ok(m) => m,
            Err(e) => {
                let error = json!({"jsonrpc": "2.0", "id": null,
                    "error": {"code": -32700, "message": format!("custody connect: not a JSON-RPC message: {e}")}});
                let _ = state.out.send(error.to_string()).await;
                continue;
            }
        };
        // `initialize` must finish before anything else is sent: the answer carries the session.
        // Once the client says it is initialized, the session's own stream is opened.
        let is_initialize = msg.method() == Some("initialize");
        let initialized = msg.method() == Some("notifications/initialized");
        let st = state.clone();
        let call = async move { post(&st, msg).await };
        if is_initialize || initialized {
            call.await;
        } else {
            calls.spawn(call);
        }
        if initialized && listener.is_none() && lock(&state.session).is_some() {
            let st = state.clone();
            let (opened, is_open) = tokio::sync::oneshot::channel();
            listener = Some(tokio::spawn(async move { listen(&st, opened).await }));
            // What the server sends once the client is initialized must not be lost to a race
            // with the stream's opening: the next message is read only when the gateway has
            // answered the GET (or refused it, or after two seconds: a gateway that holds the
            // answer back delays the job by no more than that).
            let _ = tokio::time::timeout(Duration::from_secs(2), is_open).await;
        }
    }
    // Stdin ended: let calls in flight finish, then end the session.
    while calls.join_next().await.is_some() {}
    if let Some(l) = listener {
        l.abort();
    }
    let session = lock(&state.session).clone();
    if let Some(sid) = session
        && lock(&state.fatal).is_none()
    {
        let token = state.token.lock().await.value.clone();
        if let Ok(req) = Request::builder()
            .method(Method::DELETE)
            .uri(state.url.clone())
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .header(MCP_SESSION_ID, sid)
            .body(Full::new(Bytes::new()))
        {
            let _ = tokio::time::timeout(Duration::from_secs(5), state.http.request(req)).await;
        }
    }
    if let (Some(path), Some(collector)) = (evidence_file, &state.evidence)
        && lock(&state.fatal).is_none()
    {
        let base = evidence::base_of(&state.url);
        let written = match collector.finish(&state.url_text, &base, &state.http).await {
            Ok(e) => serde_json::to_vec_pretty(&e)
                .map_err(|e| e.to_string())
                .and_then(|bytes| std::fs::write(path, bytes).map_err(|e| e.to_string())),
            Err(e) => Err(e),
        };
        if let Err(reason) = written {
            fatal(
                &state,
                ConnectError::Evidence {
                    path: path.display().to_string(),
                    reason,
                },
            );
        }
    }
    let fatal = lock(&state.fatal).take();
    drop(state);
    let _ = writer.await;
    match fatal {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Records the first fatal error and stops reading stdin.
fn fatal(state: &State, e: ConnectError) {
    let mut f = lock(&state.fatal);
    if f.is_none() {
        *f = Some(e);
    }
    state.stop.cancel();
}

/// Answers `msg` (if it is a request) with a JSON-RPC error.
async fn answer_error(state: &State, msg: &Message, message: &str) {
    if !msg.is_request() {
        return;
    }
    let error = json!({"jsonrpc": "2.0", "id": msg.id(),
        "error": {"code": -32603, "message": format!("custody connect: {message}")}});
    let _ = state.out.send(error.to_string()).await;
}

/// The current token, renewed first when it nears expiry.
async fn bearer(state: &State) -> String {
    let mut t = state.token.lock().await;
    if t.needs_renewal() {
        match token::fetch(&state.source).await {
            Ok(new) => *t = new,
            Err(e) => {
                eprintln!("custody connect: couldn't renew the token, using the current one: {e}")
            }
        }
    }
    t.value.clone()
}

async fn post(state: &State, msg: Message) {
    let token = bearer(state).await;
    let mut req = Request::post(state.url.clone())
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::ACCEPT, "application/json, text/event-stream")
        .header(
            header::USER_AGENT,
            concat!("custody-connect/", env!("CARGO_PKG_VERSION")),
        );
    if msg.meta_protocol_version().is_some() {
        let params = msg
            .target_name()
            .filter(|_| msg.method() == Some("tools/call"))
            .and_then(|t| lock(&state.tools).get(t).cloned())
            .unwrap_or_default();
        for (k, v) in headers::mirror(&msg, &params) {
            req = req.header(k, v);
        }
    } else {
        if let Some(sid) = lock(&state.session).clone() {
            req = req.header(MCP_SESSION_ID, sid);
        }
        if let Some(v) = lock(&state.version).clone() {
            req = req.header(MCP_PROTOCOL_VERSION, v);
        }
    }
    let req = match req.body(Full::new(msg.to_bytes())) {
        Ok(r) => r,
        Err(e) => {
            answer_error(state, &msg, &format!("couldn't build the request: {e}")).await;
            return;
        }
    };
    let resp = match send_retrying(state, req).await {
        Ok(r) => r,
        Err(e) => {
            let reason = crate::net::error_chain(&e);
            answer_error(
                state,
                &msg,
                &format!("couldn't reach the gateway: {reason}"),
            )
            .await;
            fatal(
                state,
                ConnectError::Unreachable {
                    url: state.url_text.clone(),
                    reason,
                },
            );
            return;
        }
    };
    let status = resp.status();
    if status == StatusCode::UNAUTHORIZED {
        let reason = resp
            .headers()
            .get(header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .and_then(|c| c.split("error_description=\"").nth(1))
            .and_then(|d| d.split('"').next())
            .unwrap_or("no reason given")
            .to_string();
        answer_error(
            state,
            &msg,
            &format!("the gateway refused the token: {reason}"),
        )
        .await;
        fatal(
            state,
            ConnectError::Unauthorized {
                url: state.url_text.clone(),
                source_name: state.source.describe(),
                reason,
            },
        );
        return;
    }
    if msg.method() == Some("initialize")
        && let Some(sid) = resp.headers().get(MCP_SESSION_ID)
    {
        *lock(&state.session) = Some(sid.clone());
    }
    let content_type = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    if status == StatusCode::ACCEPTED {
        return;
    }
    if status == StatusCode::FORBIDDEN
        || status == StatusCode::NOT_FOUND
        || status.is_server_error()
    {
        let body = Limited::new(resp.into_body(), 64 * 1024)
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let answer = serde_json::from_slice::<Value>(&body).ok();
        // A 2026-07-28 server answers a method it does not know 404 / -32601: that is an
        // ordinary answer to this request, not the end of anything.
        let unknown_method = answer
            .as_ref()
            .and_then(|v| v.pointer("/error/code"))
            .and_then(Value::as_i64)
            == Some(-32601);
        if status == StatusCode::NOT_FOUND
            && unknown_method
            && let Some(v) = answer
        {
            deliver(state, Some(&msg), v.to_string()).await;
            return;
        }
        let reason = answer
            .as_ref()
            .and_then(|v| v.pointer("/error/message"))
            .and_then(Value::as_str)
            .map_or_else(
                || {
                    String::from_utf8_lossy(&body)
                        .trim()
                        .chars()
                        .take(300)
                        .collect()
                },
                str::to_string,
            );
        answer_error(
            state,
            &msg,
            &format!("the gateway answered HTTP {status}: {reason}"),
        )
        .await;
        fatal(
            state,
            ConnectError::Ended {
                url: state.url_text.clone(),
                status,
                reason,
            },
        );
        return;
    }
    if content_type.starts_with("text/event-stream") {
        let mut events = sse_stream::SseStream::new(resp.into_body());
        while let Some(event) = events.next().await {
            match event {
                Ok(ev) => {
                    if let Some(data) = ev.data.filter(|d| !d.trim().is_empty()) {
                        deliver(state, Some(&msg), data).await;
                    }
                }
                Err(e) => {
                    answer_error(
                        state,
                        &msg,
                        &format!("the gateway's event stream broke: {e}"),
                    )
                    .await;
                    return;
                }
            }
        }
        return;
    }
    let body = match Limited::new(resp.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            answer_error(
                state,
                &msg,
                &format!("couldn't read the gateway's answer: {e}"),
            )
            .await;
            return;
        }
    };
    match serde_json::from_slice::<Value>(&body) {
        Ok(v) if v.get("jsonrpc").is_some() || v.is_array() => {
            deliver(state, Some(&msg), v.to_string()).await;
        }
        _ => {
            answer_error(
                state,
                &msg,
                &format!(
                    "the gateway answered HTTP {status}: {}",
                    String::from_utf8_lossy(&body).trim()
                ),
            )
            .await;
        }
    }
}

/// Sends `req`, again after 1 s and 2 s while the gateway answers 502, 503 or 504 (a gateway
/// restarting behind a load balancer); the last answer otherwise.
async fn send_retrying(
    state: &State,
    req: Request<Full<Bytes>>,
) -> Result<http::Response<hyper::body::Incoming>, hyper_util::client::legacy::Error> {
    let (parts, body) = req.into_parts();
    let mut delay = Duration::from_secs(1);
    for _ in 0..2 {
        let retry = Request::from_parts(parts.clone(), body.clone());
        let resp = state.http.request(retry).await?;
        if !matches!(
            resp.status(),
            StatusCode::BAD_GATEWAY | StatusCode::SERVICE_UNAVAILABLE | StatusCode::GATEWAY_TIMEOUT
        ) || resp.headers().contains_key(header::RETRY_AFTER)
        {
            return Ok(resp);
        }
        tokio::time::sleep(delay).await;
        delay *= 2;
    }
    state.http.request(Request::from_parts(parts, body)).await
}

/// Relays the session's standalone stream (GET): what the server sends outside any request,
/// such as `notifications/tools/list_changed`. Reconnects with `Last-Event-ID` when the stream
/// drops; stops when the gateway does not offer one, or after five failures in a row.
/// `opened` hears when the gateway first answers (whatever it answers).
async fn listen(state: &State, opened: tokio::sync::oneshot::Sender<()>) {
    let mut opened = Some(opened);
    let mut last_event: Option<String> = None;
    let mut failures = 0;
    while failures < 5 && !state.stop.is_cancelled() {
        let token = bearer(state).await;
        let mut req = Request::get(state.url.clone())
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .header(header::ACCEPT, "text/event-stream");
        if let Some(sid) = lock(&state.session).clone() {
            req = req.header(MCP_SESSION_ID, sid);
        }
        if let Some(v) = lock(&state.version).clone() {
            req = req.header(MCP_PROTOCOL_VERSION, v);
        }
        if let Some(id) = &last_event {
            req = req.header(headers::LAST_EVENT_ID, id.as_str());
        }
        let Ok(req) = req.body(Full::new(Bytes::new())) else {
            return;
        };
        let answer = state.http.request(req).await;
        if let Some(o) = opened.take() {
            let _ = o.send(());
        }
        let resp = match answer {
            Ok(r) if r.status() == StatusCode::OK => r,
            // 405: no standalone stream here; anything else: the session is gone or refused.
            Ok(_) => return,
            Err(_) => {
                failures += 1;
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        failures = 0;
        let mut events = sse_stream::SseStream::new(resp.into_body());
        while let Some(Ok(ev)) = events.next().await {
            if let Some(id) = ev.id {
                last_event = Some(id);
            }
            if let Some(data) = ev.data.filter(|d| !d.trim().is_empty()) {
                deliver(state, None, data).await;
            }
        }
        failures += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Writes one message to stdout, learning what later requests need from the answer to
/// `request`.
async fn deliver(state: &State, request: Option<&Message>, data: String) {
    if let Some(request) = request
        && let Ok(v) = serde_json::from_str::<Value>(&data)
        && v.get("id").is_some()
        && v.get("id") == request.id()
    {
        if let Some(collector) = &state.evidence {
            collector.observe(&v, request.method(), request.target_name());
        }
        match request.method() {
            Some("initialize") => {
                if let Some(pv) = v.pointer("/result/protocolVersion").and_then(Value::as_str) {
                    *lock(&state.version) = Some(pv.to_string());
                }
            }
            Some("tools/list") => {
                if let Some(tools) = v.pointer("/result/tools").and_then(Value::as_array) {
                    let mut map = lock(&state.tools);
                    for t in tools {
                        if let (Some(name), Some(schema)) =
                            (t.get("name").and_then(Value::as_str), t.get("inputSchema"))
                        {
                            map.insert(name.to_string(), headers::param_headers(schema));
                        }
                    }
                }
            }
            _ => {}
        }
    }
    let line = if data.contains('\n') {
        serde_json::from_str::<Value>(&data).map_or(data, |v| v.to_string())
    } else {
        data
    };
    let _ = state.out.send(line).await;
}
