//! The load generator: MCP clients on their own keep-alive connections, each sending
//! `tools/call` round trips one after the other.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

/// The body of the benchmark's call: `tools/call` of the fixture's `test_simple_text`, in the
/// stateless generation (2026-07-28).
pub fn tools_call_body() -> Bytes {
    let body = serde_json::json!({
        "jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": { "name": "test_simple_text", "arguments": {}, "_meta": {
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities": {},
            "io.modelcontextprotocol/clientInfo": { "name": "custody-bench", "version": "0" } } }
    });
    Bytes::from(body.to_string())
}

/// A POST of `body` ([`tools_call_body`]) to `path`, with the headers the stateless generation
/// mirrors.
///
/// # Errors
/// `path` is not a valid request target.
pub fn tools_call(path: &str, body: Bytes) -> anyhow::Result<Request<Full<Bytes>>> {
    Ok(Request::post(path)
        .header("host", "127.0.0.1")
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "tools/call")
        .header("mcp-name", "test_simple_text")
        .body(Full::new(body))?)
}

/// One client connection.
pub struct Conn {
    sender: SendRequest<Full<Bytes>>,
    path: String,
    body: Bytes,
    /// `Authorization` value, if the calls carry a token.
    authorization: Option<hyper::header::HeaderValue>,
}

impl Conn {
    /// A connection whose calls carry `Authorization: Bearer <token>`.
    pub async fn open_with_token(
        addr: SocketAddr,
        path: &str,
        token: &str,
    ) -> anyhow::Result<Self> {
        let mut conn = Self::open(addr, path).await?;
        conn.authorization = Some(format!("Bearer {token}").parse()?);
        Ok(conn)
    }

    pub async fn open(addr: SocketAddr, path: &str) -> anyhow::Result<Self> {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        Ok(Self {
            sender,
            path: path.to_string(),
            body: tools_call_body(),
            authorization: None,
        })
    }

    /// One round trip; returns its latency.
    pub async fn call(&mut self) -> anyhow::Result<Duration> {
        let mut req = tools_call(&self.path, self.body.clone())?;
        if let Some(a) = &self.authorization {
            req.headers_mut()
                .insert(hyper::header::AUTHORIZATION, a.clone());
        }
        let started = Instant::now();
        self.sender.ready().await?;
        let resp = self.sender.send_request(req).await?;
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        let elapsed = started.elapsed();
        anyhow::ensure!(
            status == 200 && body.windows(8).any(|w| w == b"\"result\""),
            "bad answer: {status} {}",
            String::from_utf8_lossy(&body)
        );
        Ok(elapsed)
    }
}

/// Sequential calls on one connection to each of `a` and `b`, alternating in batches of 100
/// so both see the same machine conditions; returns every latency of each.
pub async fn latencies(
    a: (SocketAddr, &str),
    b: (SocketAddr, &str),
    warmup: usize,
    calls: usize,
) -> anyhow::Result<(Vec<Duration>, Vec<Duration>)> {
    Ok(pair(latencies_of(&[a, b], warmup, calls).await?))
}

/// As [`latencies`], on connections already open (with a token, say).
pub async fn latencies_on(
    ca: Conn,
    cb: Conn,
    warmup: usize,
    calls: usize,
) -> anyhow::Result<(Vec<Duration>, Vec<Duration>)> {
    Ok(pair(latencies_on_all(vec![ca, cb], warmup, calls).await?))
}

/// As [`latencies`], for any number of targets, taken in turn in batches of 100.
pub async fn latencies_of(
    targets: &[(SocketAddr, &str)],
    warmup: usize,
    calls: usize,
) -> anyhow::Result<Vec<Vec<Duration>>> {
    let mut conns = Vec::with_capacity(targets.len());
    for (addr, path) in targets {
        conns.push(Conn::open(*addr, path).await?);
    }
    latencies_on_all(conns, warmup, calls).await
}

/// The two lists of a two-target measurement.
fn pair(mut both: Vec<Vec<Duration>>) -> (Vec<Duration>, Vec<Duration>) {
    let b = both.pop().unwrap_or_default();
    (both.pop().unwrap_or_default(), b)
}

async fn latencies_on_all(
    mut conns: Vec<Conn>,
    warmup: usize,
    calls: usize,
) -> anyhow::Result<Vec<Vec<Duration>>> {
    for _ in 0..warmup {
        for c in &mut conns {
            c.call().await?;
        }
    }
    let mut out: Vec<Vec<Duration>> = conns.iter().map(|_| Vec::with_capacity(calls)).collect();
    let mut done = 0;
    while done < calls {
        let n = 100.min(calls - done);
        for (c, l) in conns.iter_mut().zip(&mut out) {
            for _ in 0..n {
                l.push(c.call().await?);
            }
        }
        done += n;
    }
    Ok(out)
}

/// `clients` connections calling as fast as they can for `time`; returns the calls completed.
pub async fn throughput(
    addr: SocketAddr,
    path: &str,
    clients: usize,
    time: Duration,
) -> anyhow::Result<u64> {
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut conns = Vec::new();
    for _ in 0..clients {
        conns.push(Conn::open(addr, path).await?);
    }
    let tasks: Vec<_> = conns
        .into_iter()
        .map(|mut conn| {
            let done = done.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    conn.call().await?;
                    done.fetch_add(1, Ordering::Relaxed);
                }
                anyhow::Ok(())
            })
        })
        .collect();
    tokio::time::sleep(time).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await??;
    }
    Ok(done.load(Ordering::Relaxed))
}

pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

/// A GET of `path` on `addr`, as text (one connection per request: for polling, not load).
async fn get(addr: SocketAddr, path: &str) -> anyhow::Result<String> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let req = Request::get(path)
        .header("host", "127.0.0.1")
        .body(Full::new(Bytes::new()))?;
    let resp = sender.send_request(req).await?;
    let status = resp.status();
    let body = resp.into_body().collect().await?.to_bytes();
    anyhow::ensure!(status == 200, "GET {path}: {status}");
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// The published checkpoint's note.
pub async fn checkpoint_text(addr: SocketAddr) -> anyhow::Result<String> {
    get(addr, "/api/v1/log/checkpoint").await
}

/// The size the published checkpoint covers.
pub async fn checkpoint_size(addr: SocketAddr) -> anyhow::Result<u64> {
    let note = checkpoint_text(addr).await?;
    note.lines()
        .nth(1)
        .and_then(|l| l.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("not a checkpoint: {note}"))
}

/// One `tools/call` through the gateway; the index of its answer's entry (from the receipt).
pub async fn call_index(addr: SocketAddr, path: &str) -> anyhow::Result<u64> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let req = tools_call(path, tools_call_body())?;
    let resp = sender.send_request(req).await?;
    let body = resp.into_body().collect().await?.to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&body)?;
    v.pointer("/result/_meta/dev.custody~1receipt/response/index")
        .and_then(serde_json::Value::as_u64)
        .ok_or_else(|| anyhow::anyhow!("no receipt in {v}"))
}
