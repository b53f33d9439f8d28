//! An MCP server over Streamable HTTP.
//!
//! The gateway is a client here: it sends each message as a POST, follows the server's choice
//! of JSON or SSE, keeps the upstream's session id (mapped to the gateway's own by the relay),
//! and never forwards the caller's credentials or hop-by-hop headers.

use std::sync::Arc;
use std::time::Duration;

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};
use http::header;
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::ndjson::{JsonAnswer, Scanner, is_answer, take_value};
use super::oversized::Meter;
use super::{Event, EventStream, Reply, UpstreamError};
use crate::config::{HttpUpstreamConfig, MessageLimits};
use crate::credentials::Credentials;
use crate::mcp::headers::{LAST_EVENT_ID, MCP_PROTOCOL_VERSION, MCP_SESSION_ID};
use crate::mcp::message::{Body, Message};
use crate::mcp::sse::decode::{Decoder, Item};

type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// The largest error body read from an upstream to pass on or quote.
const MAX_ERROR_BODY: usize = 64 * 1024;

pub struct HttpUpstream {
    /// Where requests go (the configured URL without its userinfo).
    url: Uri,
    /// `Authorization: Basic` from the configured URL's user and password.
    basic: Option<HeaderValue>,
    /// The headers (and OAuth token) only the gateway holds.
    credentials: Arc<Credentials>,
    client: HttpClient,
    request_timeout: Duration,
    stream_idle_timeout: Duration,
    /// Bounds on each message the upstream sends.
    messages: MessageLimits,
}

/// Per-call context: the upstream session and protocol version to send, and the caller's
/// headers (filtered by [`forward_headers`] on the way out).
pub struct Outbound<'a> {
    pub session: Option<&'a HeaderValue>,
    pub version: Option<&'a str>,
    pub headers: &'a HeaderMap,
}

/// Headers never forwarded from a client to an upstream: hop-by-hop headers (RFC 9110 §7.6.1),
/// the caller's credentials, and those the gateway sets itself.
const NOT_FORWARDED: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "authorization",
    "cookie",
    "origin",
    "referer",
    "content-length",
    "content-type",
    "accept",
    "accept-encoding",
    "expect",
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    MCP_SESSION_ID,
    MCP_PROTOCOL_VERSION,
    LAST_EVENT_ID,
];

/// Appends the caller's headers that may go on to the upstream to `out`.
pub fn forward_headers(client: &HeaderMap, out: &mut HeaderMap) {
    // Headers named in `Connection` are hop-by-hop too (RFC 9110 §7.6.1).
    let listed: Vec<String> = client
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .collect();
    for (name, value) in client {
        let n = name.as_str();
        if NOT_FORWARDED.contains(&n) || listed.iter().any(|l| l == n) {
            continue;
        }
        out.append(name.clone(), value.clone());
    }
}

/// An upstream's response headers as the audit log records them: name to value.
pub type ResponseHeaders = serde_json::Map<String, serde_json::Value>;

/// The response headers worth recording: all but transport framing, the content type (the
/// message says it), and the upstream's own session id (which the gateway keeps to itself).
pub fn recorded_headers(headers: &HeaderMap) -> ResponseHeaders {
    const SKIP: [&str; 12] = [
        "connection",
        "keep-alive",
        "transfer-encoding",
        "te",
        "trailer",
        "upgrade",
        "proxy-authenticate",
        "proxy-connection",
        "content-length",
        "content-type",
        "date",
        "mcp-session-id",
    ];
    let mut out = ResponseHeaders::new();
    for (name, value) in headers {
        if SKIP.contains(&name.as_str()) {
            continue;
        }
        let text = String::from_utf8_lossy(value.as_bytes()).into_owned();
        match out.get_mut(name.as_str()) {
            Some(serde_json::Value::String(prev)) => {
                prev.push_str(", ");
                prev.push_str(&text);
            }
            _ => {
                out.insert(name.as_str().to_string(), serde_json::Value::String(text));
            }
        }
    }
    out
}

impl HttpUpstream {
    pub fn new(
        cfg: &HttpUpstreamConfig,
        credentials: Arc<Credentials>,
        messages: MessageLimits,
    ) -> Self {
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.enforce_http(false);
        http.set_connect_timeout(Some(cfg.connect_timeout));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .build(https);
        Self {
            url: cfg.url.uri().clone(),
            basic: cfg.url.basic_auth().cloned(),
            credentials,
            client,
            request_timeout: cfg.request_timeout,
            stream_idle_timeout: cfg.stream_idle_timeout,
            messages,
        }
    }

    async fn request(
        &self,
        method: Method,
        out: &Outbound<'_>,
        body: Bytes,
    ) -> Result<Request<Full<Bytes>>, UpstreamError> {
        let bearer = self
            .credentials
            .bearer()
            .await
            .map_err(UpstreamError::Unreachable)?;
        let mut req = Request::new(Full::new(body));
        *req.method_mut() = method;
        *req.uri_mut() = self.url.clone();
        let h = req.headers_mut();
        forward_headers(out.headers, h);
        if let Some(basic) = &self.basic {
            h.insert(header::AUTHORIZATION, basic.clone());
        }
        for (name, value) in &self.credentials.current().headers {
            h.insert(name.clone(), value.clone());
        }
        if let Some(token) = bearer {
            h.insert(header::AUTHORIZATION, token);
        }
        h.insert(
            header::ACCEPT,
            HeaderValue::from_static("application/json, text/event-stream"),
        );
        if let Some(sid) = out.session {
            h.insert(MCP_SESSION_ID, sid.clone());
        }
        if let Some(v) = out.version.and_then(|v| HeaderValue::from_str(v).ok()) {
            h.insert(MCP_PROTOCOL_VERSION, v);
        }
        Ok(req)
    }

    async fn send(
        &self,
        req: Request<Full<Bytes>>,
    ) -> Result<http::Response<Incoming>, UpstreamError> {
        match tokio::time::timeout(self.request_timeout, self.client.request(req)).await {
            Err(_) => Err(UpstreamError::Timeout(self.request_timeout)),
            Ok(Err(e)) => Err(UpstreamError::Unreachable(describe_client_error(&e))),
            Ok(Ok(resp)) => Ok(resp),
        }
    }

    /// POSTs a message (or batch). Returns the reply, the upstream's `Mcp-Session-Id` and the
    /// response headers worth recording ([`recorded_headers`]).
    ///
    /// # Errors
    /// Unreachable, timeout, `SessionGone` (404 on a session), or a non-MCP answer.
    pub async fn post(
        &self,
        out: Outbound<'_>,
        body: Bytes,
    ) -> Result<(Reply, Option<HeaderValue>, ResponseHeaders), UpstreamError> {
        let mut req = self.request(Method::POST, &out, body).await?;
        req.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        // Traced: a client span, whose context replaces the client's `traceparent`.
        let mut span = crate::telemetry::upstream_call(Some(req.headers_mut()));
        if let Some(s) = &mut span {
            s.set("server.address", self.url.host().unwrap_or("").to_string());
        }
        let resp = self.send(req).await;
        if let (Some(s), Err(e)) = (&mut span, &resp) {
            s.fail(e.to_string());
        }
        let resp = resp?;
        if let Some(s) = &mut span {
            s.set(
                "http.response.status_code",
                i64::from(resp.status().as_u16()),
            );
        }
        let session = resp.headers().get(MCP_SESSION_ID).cloned();
        let recorded = recorded_headers(resp.headers());
        let reply = self.reply(resp, out.session.is_some()).await?;
        Ok((reply, session, recorded))
    }

    /// Opens the standalone server stream of a session (GET), resuming after `last_event_id`.
    ///
    /// # Errors
    /// As for [`HttpUpstream::post`].
    pub async fn get(
        &self,
        out: Outbound<'_>,
        last_event_id: Option<&HeaderValue>,
    ) -> Result<(Reply, ResponseHeaders), UpstreamError> {
        let mut req = self.request(Method::GET, &out, Bytes::new()).await?;
        req.headers_mut().insert(
            header::ACCEPT,
            HeaderValue::from_static("text/event-stream"),
        );
        if let Some(id) = last_event_id {
            req.headers_mut().insert(LAST_EVENT_ID, id.clone());
        }
        let resp = self.send(req).await?;
        let recorded = recorded_headers(resp.headers());
        Ok((self.reply(resp, out.session.is_some()).await?, recorded))
    }

    /// Ends a session upstream (DELETE). Returns the upstream's status.
    ///
    /// # Errors
    /// Unreachable or timeout.
    pub async fn delete(&self, out: Outbound<'_>) -> Result<StatusCode, UpstreamError> {
        let req = self.request(Method::DELETE, &out, Bytes::new()).await?;
        let resp = self.send(req).await?;
        Ok(resp.status())
    }

    async fn reply(
        &self,
        resp: http::Response<Incoming>,
        had_session: bool,
    ) -> Result<Reply, UpstreamError> {
        let status = resp.status();
        let content_type = resp.headers().get(header::CONTENT_TYPE).cloned();
        let media = content_type
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .map(|v| {
                v.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase()
            })
            .unwrap_or_default();
        if status == StatusCode::ACCEPTED {
            return Ok(Reply::Accepted);
        }
        if status == StatusCode::NOT_FOUND && had_session {
            return Err(UpstreamError::SessionGone);
        }
        if !status.is_success() {
            let body = read_limited(resp.into_body(), MAX_ERROR_BODY, self.request_timeout)
                .await
                .unwrap_or_default();
            if media == "application/json"
                && serde_json::from_slice::<serde_json::Value>(&body).is_ok()
            {
                return Ok(Reply::Rejected {
                    status,
                    content_type,
                    body,
                });
            }
            return Err(UpstreamError::Status(status.as_u16(), snippet(&body)));
        }
        match media.as_str() {
            "application/json" => {
                let answer = read_json_answer(
                    resp.into_body(),
                    self.messages.max_message_bytes,
                    self.request_timeout,
                )
                .await?;
                match answer {
                    JsonAnswer::Whole(body) => match Body::parse(body, self.messages.json()) {
                        Ok(Body::Single(m)) => Ok(Reply::Message(m)),
                        Ok(Body::Batch(b, _)) => Ok(Reply::Batch(b)),
                        Err(e) => Err(UpstreamError::Protocol(format!("its JSON answer: {e}"))),
                    },
                    JsonAnswer::Lines {
                        first,
                        rest,
                        scanner,
                        body,
                    } => {
                        let first = Message::parse(first, self.messages.json()).map_err(|e| {
                            UpstreamError::Protocol(format!("its JSON stream's first message: {e}"))
                        })?;
                        Ok(Reply::Stream(super::ndjson::lines(
                            first,
                            rest,
                            scanner,
                            body,
                            self.messages.json(),
                            self.messages.max_message_bytes,
                            self.stream_idle_timeout,
                        )))
                    }
                }
            }
            "text/event-stream" => Ok(Reply::Stream(self.events(resp.into_body()))),
            other => Err(UpstreamError::Protocol(format!(
                "HTTP {status} with content type {other:?}, expected application/json or text/event-stream"
            ))),
        }
    }

    fn events(&self, body: Incoming) -> EventStream {
        let idle = self.stream_idle_timeout;
        let limits = self.messages;
        let state = Events {
            body,
            decoder: Decoder::new(limits.max_message_bytes),
            ready: VecDeque::new(),
            ended: false,
            failed: false,
        };
        Box::pin(futures_util::stream::unfold(
            state,
            move |mut st| async move {
                if st.failed {
                    return None;
                }
                // Silence is measured between events: comments and partial events do not count.
                let deadline = tokio::time::Instant::now() + idle;
                loop {
                    if let Some(item) = st.ready.pop_front() {
                        let (id, retry, data) = match item {
                            Item::Oversized(o) => {
                                // Not fatal: the call it answers fails, the stream goes on.
                                return Some((Err(UpstreamError::TooLarge(Box::new(o))), st));
                            }
                            Item::Event { id, retry, data } => (id, retry, data),
                        };
                        let data = data.unwrap_or_default();
                        if data.is_empty() && id.is_none() && retry.is_none() {
                            continue;
                        }
                        let message = if data.iter().all(u8::is_ascii_whitespace) {
                            None
                        } else {
                            match Message::parse(data, limits.json()) {
                                Ok(m) => Some(m),
                                Err(e) => {
                                    st.failed = true;
                                    return Some((
                                        Err(UpstreamError::Protocol(format!(
                                            "an event's data is not a JSON-RPC message ({e})"
                                        ))),
                                        st,
                                    ));
                                }
                            }
                        };
                        return Some((Ok(Event { id, retry, message }), st));
                    }
                    if st.ended {
                        return None;
                    }
                    match tokio::time::timeout_at(deadline, st.body.frame()).await {
                        Err(_) => {
                            st.failed = true;
                            return Some((Err(UpstreamError::Timeout(idle)), st));
                        }
                        Ok(None) => {
                            st.ended = true;
                            st.decoder.finish(&mut st.ready);
                        }
                        Ok(Some(Err(e))) => {
                            st.failed = true;
                            return Some((
                                Err(UpstreamError::Closed(format!(
                                    "the upstream's event stream broke: {e}"
                                ))),
                                st,
                            ));
                        }
                        Ok(Some(Ok(frame))) => {
                            if let Ok(data) = frame.into_data() {
                                st.decoder.push(&data, &mut st.ready);
                            }
                        }
                    }
                }
            },
        ))
    }
}

/// The state of an upstream's event stream.
struct Events {
    body: Incoming,
    decoder: Decoder,
    ready: VecDeque<Item>,
    ended: bool,
    failed: bool,
}

/// Reads an `application/json` answer up to the end of its first message: the whole reply when
/// that message is the answer, else the start of a stream of messages ([`super::ndjson`]). A
/// first message over `limit` is counted and hashed to its end, never buffered past it.
async fn read_json_answer(
    mut body: Incoming,
    limit: usize,
    timeout: Duration,
) -> Result<JsonAnswer, UpstreamError> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut buf = BytesMut::new();
    let mut scanner = Scanner::default();
    loop {
        let first = take_value(&mut buf, &mut scanner)
            .map_err(|e| UpstreamError::Protocol(format!("its JSON answer: {e}")))?;
        if let Some(first) = first {
            if is_answer(&first) {
                return Ok(JsonAnswer::Whole(first));
            }
            return Ok(JsonAnswer::Lines {
                first,
                rest: buf,
                scanner,
                body,
            });
        }
        if buf.len() > limit {
            let mut m = Meter::new(limit);
            m.feed(&buf);
            let whole = loop {
                match tokio::time::timeout_at(deadline, body.frame()).await {
                    Ok(None) => break true,
                    Ok(Some(Ok(frame))) => {
                        if let Ok(data) = frame.into_data() {
                            m.feed(&data);
                        }
                    }
                    Err(_) | Ok(Some(Err(_))) => break false,
                }
            };
            return Err(UpstreamError::TooLarge(Box::new(m.finish(whole))));
        }
        match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => return Err(UpstreamError::Timeout(timeout)),
            // The end: what there is (nothing complete) is refused by the parser, with why.
            Ok(None) => return Ok(JsonAnswer::Whole(buf.freeze())),
            Ok(Some(Err(e))) => {
                return Err(UpstreamError::Closed(format!(
                    "the upstream closed the connection mid-response: {e}"
                )));
            }
            Ok(Some(Ok(frame))) => {
                if let Ok(data) = frame.into_data() {
                    buf.extend_from_slice(&data);
                }
            }
        }
    }
}

async fn read_limited(
    body: Incoming,
    limit: usize,
    timeout: Duration,
) -> Result<Bytes, UpstreamError> {
    let collected = tokio::time::timeout(timeout, Limited::new(body, limit).collect()).await;
    match collected {
        Err(_) => Err(UpstreamError::Timeout(timeout)),
        Ok(Err(e)) => {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                Err(UpstreamError::Protocol(format!(
                    "the response is larger than {limit} bytes"
                )))
            } else {
                Err(UpstreamError::Closed(format!(
                    "the upstream closed the connection mid-response: {e}"
                )))
            }
        }
        Ok(Ok(c)) => Ok(c.to_bytes()),
    }
}

/// The body as text, whole (up to [`MAX_ERROR_BODY`]): the relay scrubs secrets from it
/// before it shortens it, so that no secret is cut in half and half-shown.
fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        "(no body)".into()
    } else {
        text.to_string()
    }
}

/// Finds the most useful cause in a hyper client error chain ("connection refused" beats
/// "client error (Connect)").
fn describe_client_error(e: &hyper_util::client::legacy::Error) -> String {
    let mut msg = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        msg = s.to_string();
        source = s.source();
    }
    msg
}

/// The shared pieces a relay needs to hold an HTTP upstream.
pub type Shared = Arc<HttpUpstream>;
