//! Reading messages: the cost of the strict scan every message goes through, and the memory a
//! gateway spends on one large JSON-RPC batch.

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use custody::mcp::message::{Limits, Message};
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

use crate::procstat;
use crate::relay::{free_addr, mb, spawn_self, wait_listening};

/// A tool result of about `size` bytes: text, nested objects, numbers, escapes.
fn sample(size: usize) -> Vec<u8> {
    let mut items = Vec::new();
    let mut n = 0;
    let mut text = String::new();
    while text.len() + items.len() * 120 < size {
        items.push(json!({
            "id": n, "name": format!("item-{n}"), "score": n as f64 / 7.0,
            "tags": ["a", "b\n\"c\"", "é"], "nested": {"ok": true, "none": null, "count": n * 31}
        }));
        text.push_str("lorem ipsum dolor sit amet, consectetur adipiscing elit ");
        n += 1;
    }
    serde_json::to_vec(&json!({"jsonrpc": "2.0", "id": 7, "result": {
        "content": [{"type": "text", "text": text}], "structuredContent": {"items": items}}}))
    .unwrap_or_default()
}

fn per_kib(d: Duration, bytes: usize, rounds: usize) -> f64 {
    d.as_secs_f64() * 1e9 / rounds as f64 / (bytes as f64 / 1024.0)
}

/// `custody-bench scan`: ns per KiB of the strict scan, next to serde reading the same bytes.
pub fn scan(size: usize, rounds: usize) -> anyhow::Result<()> {
    let text = sample(size);
    let limits = Limits {
        max_depth: 64,
        max_batch: 64,
    };
    let bytes = Bytes::from(text.clone());
    let time = |f: &dyn Fn()| {
        f();
        let t = Instant::now();
        for _ in 0..rounds {
            f();
        }
        t.elapsed()
    };
    let scan = time(&|| {
        black_box(custody::mcp::message::check(black_box(&text), limits)).ok();
    });
    let skip = time(&|| {
        black_box(serde_json::from_slice::<serde::de::IgnoredAny>(black_box(
            &text,
        )))
        .ok();
    });
    let parse = time(&|| {
        black_box(Message::parse(bytes.clone(), limits)).ok();
    });
    let value = time(&|| {
        black_box(serde_json::from_slice::<Value>(black_box(&text))).ok();
    });
    println!(
        "message of {} bytes, {rounds} rounds (custody-bench scan --size {size} --rounds {rounds}):",
        text.len()
    );
    println!(
        "  strict scan            {:8.0} ns/KiB",
        per_kib(scan, text.len(), rounds)
    );
    println!(
        "  serde skip (IgnoredAny){:8.0} ns/KiB",
        per_kib(skip, text.len(), rounds)
    );
    println!(
        "  Message::parse (scan + head) {:8.0} ns/KiB",
        per_kib(parse, text.len(), rounds)
    );
    println!(
        "  serde_json::Value      {:8.0} ns/KiB",
        per_kib(value, text.len(), rounds)
    );
    Ok(())
}

/// Peak resident memory of `pid`, in bytes.
fn peak(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|kb| kb.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

pub async fn post(
    addr: SocketAddr,
    session: Option<&str>,
    body: Bytes,
) -> anyhow::Result<(u16, Option<String>, Bytes)> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let mut req = Request::post("/mcp/bench")
        .header("host", "127.0.0.1")
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2025-03-26");
    if let Some(s) = session {
        req = req.header("mcp-session-id", s);
    }
    let resp = sender.send_request(req.body(Full::new(body))?).await?;
    let status = resp.status().as_u16();
    let sid = resp
        .headers()
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((status, sid, body))
}

/// `custody-bench batch`: the gateway's peak memory while it relays one batch of `messages`
/// pings padded to `size` bytes in all (2025-03-26, a session on the conformance fixture over
/// stdio).
pub async fn batch(messages: usize, size: usize, max_batch: usize) -> anyhow::Result<()> {
    let work = std::env::temp_dir().join(format!("custody-bench-batch-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let gw_addr = free_addr()?;
    let config = work.join("custody.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"{gw_addr}\"\ndata_dir = \"{}\"\nmax_batch = {max_batch}\nmax_message_bytes = {}\n[auth]\nanonymous = true\n[endpoints.bench.upstream]\ntransport = \"stdio\"\ncommand = \"{}\"\nargs = [\"stdio-upstream\"]\n",
            work.join("data").display(),
            (size + 1024 * 1024).max(4 * 1024 * 1024),
            std::env::current_exe()?.display(),
        ),
    )?;
    let gateway = spawn_self(&["gateway", config.to_str().unwrap_or_default()])?;
    wait_listening(gw_addr)
        .await
        .context("starting the gateway")?;
    let pid = gateway.0.id();
    let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-03-26", "capabilities": {},
        "clientInfo": {"name": "custody-bench", "version": "0"}}});
    let (status, sid, _) = post(gw_addr, None, Bytes::from(init.to_string())).await?;
    let sid = sid.with_context(|| format!("initialize answered {status} without a session"))?;
    let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    post(gw_addr, Some(&sid), Bytes::from(note.to_string())).await?;
    // Warm up with a small batch so one-time allocations are not counted.
    let small: Vec<Value> = (0..2)
        .map(|i| json!({"jsonrpc": "2.0", "id": 1_000_000 + i, "method": "ping"}))
        .collect();
    post(
        gw_addr,
        Some(&sid),
        Bytes::from(serde_json::to_vec(&small)?),
    )
    .await?;
    tokio::time::sleep(Duration::from_millis(200)).await;

    // Bare pings (about 40 bytes) when the size leaves no room for padding.
    let pad = (size / messages.max(1)).saturating_sub(80);
    let items: Vec<Value> = (0..messages)
        .map(|i| {
            if pad == 0 {
                json!({"jsonrpc": "2.0", "id": i + 1, "method": "ping"})
            } else {
                json!({"jsonrpc": "2.0", "id": i + 1, "method": "ping",
                       "params": {"_meta": {"pad": "x".repeat(pad)}}})
            }
        })
        .collect();
    let body = Bytes::from(serde_json::to_vec(&items)?);
    // Reset the peak to what the process holds now (Linux: clear_refs 5).
    let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
    let before = procstat::rss(pid).max(1);
    let base_peak = peak(pid);
    let t = Instant::now();
    let (status, _, answer) = post(gw_addr, Some(&sid), body.clone()).await?;
    let took = t.elapsed();
    let after = peak(pid);
    let grew = after.saturating_sub(before.max(base_peak.min(before)));
    println!(
        "batch of {messages} messages, {} bytes (custody-bench batch --messages {messages} --size {size} --max-batch {max_batch}):",
        body.len()
    );
    println!(
        "  HTTP {status}, answer {} bytes, in {:.0} ms",
        answer.len(),
        took.as_secs_f64() * 1e3
    );
    if status != 200 {
        println!(
            "  {}",
            String::from_utf8_lossy(&answer[..answer.len().min(300)])
        );
    }
    println!(
        "  gateway resident before {}, peak during {}: +{} ({:.1}x the body)",
        mb(before),
        mb(after),
        mb(grew),
        grew as f64 / body.len() as f64
    );
    drop(gateway);
    let _ = std::fs::remove_dir_all(&work);
    Ok(())
}
