//! Test harness: a gateway in-process on an ephemeral port, fixture upstreams, and a small
//! Streamable HTTP client that exposes every status, header and event.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use custody::config::Config;
use custody::http::Running;
use futures_util::StreamExt;
use serde_json::{Value, json};

pub const SESSION_VERSION: &str = "2025-11-25";
pub const STATELESS_VERSION: &str = "2026-07-28";

/// Every entry of the log in `dir`, read straight from the database. A version-2 entry holds
/// its payloads beside it: they are put back where a version-1 entry had them (the message in
/// `message`, the recorded upstream headers in `detail.upstream_headers`), so one reading
/// serves both versions.
pub fn entries(dir: &std::path::Path) -> Vec<tlog::Entry<'static>> {
    let db = rusqlite::Connection::open(dir.join("log.sqlite")).unwrap();
    let mut stmt = db
        .prepare("SELECT idx, data FROM entries ORDER BY idx")
        .unwrap();
    let rows: Vec<(i64, Vec<u8>)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let mut payloads = db
        .prepare("SELECT id & 3, data FROM payloads WHERE id >> 2 = ?1")
        .unwrap();
    rows.into_iter()
        .map(|(idx, d)| {
            let mut e = tlog::Entry::decode(&d).unwrap().into_owned();
            if e.version == tlog::entry::V2 {
                let stored: Vec<(u8, Vec<u8>)> = payloads
                    .query_map([idx], |r| Ok((r.get(0)?, r.get(1)?)))
                    .unwrap()
                    .map(Result::unwrap)
                    .collect();
                for (slot, data) in stored {
                    if slot == tlog::payload::MESSAGE {
                        e.message = data.into();
                    } else if slot == tlog::payload::HEADERS {
                        let mut detail: serde_json::Value =
                            serde_json::from_str(&e.detail).unwrap_or_default();
                        detail["upstream_headers"] = serde_json::from_slice(&data).unwrap();
                        e.detail = detail.to_string().into();
                    }
                }
            }
            e
        })
        .collect()
}

/// Runs `custody serve` in `dir` with an anonymous config holding `endpoints` (data in
/// `dir/data`); returns the process and its base URL, once it listens.
pub fn serve_in(dir: &std::path::Path, endpoints: &str) -> (std::process::Child, String) {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let config = dir.join("custody.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n[auth]\nanonymous = true\n{endpoints}",
            dir.join("data").display(),
        ),
    )
    .unwrap();
    let mut child = Command::new(custody_bin())
        .args(["serve", "--config"])
        .arg(&config)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let first = BufReader::new(child.stdout.take().unwrap())
        .lines()
        .next()
        .unwrap()
        .unwrap();
    let base = first
        .strip_prefix("custody listening on ")
        .unwrap_or_else(|| panic!("unexpected first line: {first}"))
        .to_string();
    (child, base)
}

/// Runs `custody verify --data DIR` and fails the test with its output unless the log verifies.
pub fn assert_log_verifies(dir: &std::path::Path) {
    let out = std::process::Command::new(custody_bin())
        .args(["verify", "--data"])
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "custody verify failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The `custody` binary built for these tests.
pub fn custody_bin() -> &'static str {
    env!("CARGO_BIN_EXE_custody")
}

/// An upstream table for the conformance fixture over stdio.
pub fn stdio_fixture(name: &str, extra: &str) -> String {
    format!(
        "[endpoints.{name}.upstream]\ntransport = \"stdio\"\ncommand = \"{}\"\nargs = [\"demo-server\", \"--conformance\"]\n{extra}\n",
        custody_bin()
    )
}

pub fn http_upstream(name: &str, url: &str, extra: &str) -> String {
    format!("[endpoints.{name}.upstream]\ntransport = \"http\"\nurl = \"{url}\"\n{extra}\n")
}

/// Starts the conformance fixture over Streamable HTTP on an ephemeral port.
pub async fn fixture_http() -> String {
    let engine = custody_mcp_server::Engine::new(custody_mcp_server::Catalog::Conformance);
    let app = custody_mcp_server::http::router(engine, "/mcp");
    serve_router(app).await
}

/// Serves an axum router on an ephemeral loopback port; returns its `/mcp` URL.
pub async fn serve_router(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}/mcp")
}

pub struct Gateway {
    pub addr: SocketAddr,
    pub running: Option<Running>,
    pub data: tempfile::TempDir,
}

impl Gateway {
    /// Starts a gateway with `[server]` settings (besides `listen` and `data_dir`) and endpoint
    /// tables (which may include an `[audit]` table).
    pub async fn start(server: &str, endpoints: &str) -> Self {
        let data = tempfile::tempdir().unwrap();
        Self::start_in(data, server, endpoints).await
    }

    /// Starts a gateway on an existing data directory (a restart).
    pub async fn start_in(data: tempfile::TempDir, server: &str, endpoints: &str) -> Self {
        // Tests that are not about identity call anonymously.
        let auth = if endpoints.contains("[auth") {
            ""
        } else {
            "[auth]\nanonymous = true\n"
        };
        let text = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n{server}\n{auth}{endpoints}",
            data.path().display()
        );
        let config = Config::parse(&text, "test.toml").unwrap_or_else(|e| panic!("{e}\n{text}"));
        let running = custody::http::start(&config).await.unwrap();
        Self {
            addr: running.addr,
            running: Some(running),
            data,
        }
    }

    pub fn url(&self, endpoint: &str) -> String {
        format!("http://{}/mcp/{endpoint}", self.addr)
    }

    pub fn client(&self, endpoint: &str) -> Client {
        Client::new(self.url(endpoint))
    }

    /// Shuts down and returns the data directory.
    pub async fn shutdown(mut self) -> tempfile::TempDir {
        if let Some(r) = self.running.take() {
            r.shutdown().await;
        }
        self.data
    }
}

/// One HTTP answer, with its JSON-RPC messages (the body, or each SSE event's data).
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub content_type: String,
    pub messages: Vec<Value>,
    pub event_ids: Vec<Option<String>>,
    pub raw: String,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The final response (the last message with an id and a result or error).
    pub fn response(&self) -> &Value {
        self.messages
            .iter()
            .rev()
            .find(|m| m.get("result").is_some() || m.get("error").is_some())
            .unwrap_or_else(|| panic!("no response in {self:#?}"))
    }

    pub fn error_code(&self) -> i64 {
        self.response()["error"]["code"]
            .as_i64()
            .unwrap_or_else(|| panic!("not an error: {self:#?}"))
    }

    pub fn error_message(&self) -> String {
        self.response()["error"]["message"]
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    pub fn is_sse(&self) -> bool {
        self.content_type.starts_with("text/event-stream")
    }
}

/// Splits SSE text into (id, data) events.
pub fn parse_sse(text: &str) -> Vec<(Option<String>, String)> {
    text.split("\n\n")
        .filter(|block| !block.trim().is_empty())
        .filter_map(|block| {
            let mut id = None;
            let mut data = Vec::new();
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("id:") {
                    id = Some(v.trim().to_string());
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push(v.strip_prefix(' ').unwrap_or(v).to_string());
                }
            }
            if id.is_none() && data.is_empty() {
                return None;
            }
            Some((id, data.join("\n")))
        })
        .collect()
}

#[derive(Clone)]
pub struct Client {
    pub http: reqwest::Client,
    pub url: String,
    pub session: Option<String>,
    pub version: String,
    /// Sent as `Authorization: Bearer`.
    pub token: Option<String>,
    next_id: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Client {
    pub fn new(url: String) -> Self {
        Self {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
            url,
            session: None,
            version: SESSION_VERSION.into(),
            token: None,
            next_id: std::sync::Arc::new(std::sync::atomic::AtomicU64::new(1)),
        }
    }

    pub fn with_token(mut self, token: &str) -> Self {
        self.token = Some(token.to_string());
        self
    }

    /// Adds the bearer token, if any.
    pub fn authed(&self, b: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            Some(t) => b.bearer_auth(t),
            None => b,
        }
    }

    pub fn stateless(mut self) -> Self {
        self.version = STATELESS_VERSION.into();
        self
    }

    pub fn id(&self) -> u64 {
        self.next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    /// A POST builder with the standard headers (session, version, media types).
    pub fn post_builder(&self) -> reqwest::RequestBuilder {
        let mut b = self
            .authed(self.http.post(&self.url))
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", &self.version);
        if let Some(s) = &self.session {
            b = b.header("mcp-session-id", s);
        }
        b
    }

    pub async fn send(b: reqwest::RequestBuilder) -> Answer {
        let resp = b.send().await.expect("request failed");
        collect(resp).await
    }

    pub async fn post(&self, body: &Value) -> Answer {
        Self::send(self.post_builder().body(body.to_string())).await
    }

    /// A request with the stateless `_meta` and mirrored headers when the client is stateless.
    pub fn request_body(&self, method: &str, mut params: Value) -> Value {
        if self.version == STATELESS_VERSION {
            if params.get("_meta").is_none() {
                params["_meta"] = json!({});
            }
            params["_meta"]["io.modelcontextprotocol/protocolVersion"] = json!(STATELESS_VERSION);
            params["_meta"]["io.modelcontextprotocol/clientCapabilities"] =
                json!({"sampling": {}, "elicitation": {}, "roots": {}});
            params["_meta"]["io.modelcontextprotocol/clientInfo"] =
                json!({"name": "custody-tests", "version": "0"});
        }
        json!({"jsonrpc": "2.0", "id": self.id(), "method": method, "params": params})
    }

    pub fn with_mirrored(
        &self,
        b: reqwest::RequestBuilder,
        body: &Value,
    ) -> reqwest::RequestBuilder {
        if self.version != STATELESS_VERSION {
            return b;
        }
        let method = body["method"].as_str().unwrap_or("");
        let mut b = b.header("mcp-method", method);
        let name = match method {
            "tools/call" | "prompts/get" => body["params"]["name"].as_str(),
            "resources/read" => body["params"]["uri"].as_str(),
            _ => None,
        };
        if let Some(n) = name {
            b = b.header("mcp-name", n);
        }
        b
    }

    pub async fn call(&self, method: &str, params: Value) -> Answer {
        let body = self.request_body(method, params);
        Self::send(
            self.with_mirrored(self.post_builder(), &body)
                .body(body.to_string()),
        )
        .await
    }

    pub async fn notify(&self, method: &str, params: Value) -> Answer {
        self.post(&json!({"jsonrpc": "2.0", "method": method, "params": params}))
            .await
    }

    /// `initialize` + `notifications/initialized`; remembers the session.
    pub async fn initialize(&mut self) -> Answer {
        let body = json!({"jsonrpc": "2.0", "id": self.id(), "method": "initialize", "params": {
            "protocolVersion": self.version, "capabilities": {"sampling": {}, "elicitation": {}, "roots": {}},
            "clientInfo": {"name": "custody-tests", "version": "0"}}});
        let answer = self.post(&body).await;
        assert_eq!(answer.status, 200, "initialize failed: {answer:#?}");
        self.session = answer.header("mcp-session-id").map(str::to_string);
        assert!(self.session.is_some(), "no session id: {answer:#?}");
        let ack = self.notify("notifications/initialized", json!({})).await;
        assert_eq!(ack.status, 202, "{ack:#?}");
        answer
    }

    pub async fn delete(&self) -> u16 {
        let mut b = self.authed(self.http.delete(&self.url));
        if let Some(s) = &self.session {
            b = b.header("mcp-session-id", s);
        }
        b.send().await.unwrap().status().as_u16()
    }
}

/// One stateless `tools/call` of the conformance fixture's `test_simple_text` at
/// `{base}/mcp/f`; the receipt custody added to its answer, when it answered.
pub async fn call_receipt(base: &str) -> Option<Value> {
    let c = Client::new(format!("{base}/mcp/f")).stateless();
    let body = c.request_body(
        "tools/call",
        json!({"name": "test_simple_text", "arguments": {}}),
    );
    let resp = c
        .with_mirrored(c.post_builder(), &body)
        .body(body.to_string())
        .send()
        .await
        .ok()?;
    let v: Value = resp.json().await.ok()?;
    v.pointer("/result/_meta/dev.custody~1receipt").cloned()
}

pub async fn collect(resp: reqwest::Response) -> Answer {
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let raw = resp.text().await.unwrap_or_default();
    let (messages, event_ids) = if content_type.starts_with("text/event-stream") {
        parse_sse(&raw)
            .into_iter()
            .filter(|(_, d)| !d.is_empty())
            .map(|(id, d)| (serde_json::from_str(&d).unwrap_or(Value::String(d)), id))
            .unzip()
    } else if raw.is_empty() {
        (Vec::new(), Vec::new())
    } else {
        (
            vec![serde_json::from_str(&raw).unwrap_or(Value::String(raw.clone()))],
            vec![None],
        )
    };
    Answer {
        status,
        headers,
        content_type,
        messages,
        event_ids,
        raw,
    }
}

/// Reads an SSE response incrementally.
pub struct EventReader {
    stream: futures_util::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    buf: String,
}

impl EventReader {
    pub fn new(resp: reqwest::Response) -> Self {
        Self {
            stream: resp.bytes_stream().boxed(),
            buf: String::new(),
        }
    }

    /// The next event's JSON data, or `None` when the stream ends.
    pub async fn next(&mut self) -> Option<Value> {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                if let Some((_, data)) = parse_sse(&block).into_iter().next()
                    && !data.is_empty()
                {
                    return Some(serde_json::from_str(&data).unwrap());
                }
                continue;
            }
            match tokio::time::timeout(Duration::from_secs(20), self.stream.next()).await {
                Ok(Some(Ok(chunk))) => self.buf.push_str(&String::from_utf8_lossy(&chunk)),
                _ => return None,
            }
        }
    }
}

/// A TCP server that accepts connections and never answers (an upstream that hangs).
pub async fn silent_server() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((sock, _)) = listener.accept().await {
            held.push(sock);
        }
    });
    format!("http://{addr}/mcp")
}

/// A loopback URL where nothing listens.
pub async fn closed_port() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}/mcp")
}

/// The value of the sample `name{labels}` in a scrape, where the sample's labels are exactly
/// `labels` (in any order).
pub fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric, rest) = series.split_once('{').unwrap_or((series, "}"));
            if metric != name {
                return None;
            }
            let inner = rest.strip_suffix('}')?;
            let mut found: Vec<(&str, &str)> = if inner.is_empty() {
                Vec::new()
            } else {
                inner
                    .split("\",")
                    .map(|kv| {
                        let (k, v) = kv.split_once("=\"").unwrap();
                        (k, v.trim_end_matches('"'))
                    })
                    .collect()
            };
            let mut want = labels.to_vec();
            found.sort_unstable();
            want.sort_unstable();
            (found == want).then(|| value.parse().unwrap())
        })
}

pub async fn scrape(addr: std::net::SocketAddr) -> String {
    let r = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4"),
        "{:?}",
        r.headers()
    );
    r.text().await.unwrap()
}
