//! `custody-bench flood`: a forged-token flood against a gateway, for a minute by default.
//!
//! The gateway (durable log, default limits) fronts the conformance fixture over HTTP and
//! accepts tokens of the project's test issuer. A real job calls `tools/call` with its token,
//! one call after another: first with nothing else going on (idle), then while many connections
//! from many loopback addresses send forged tokens as fast as they can (tokens of unknown
//! issuers with kilobyte claims, `alg: none`, garbage). Printed: the job's latency idle and
//! under flood, what the flood got (401, 429), and how much the log grew. The job calls back to
//! back, far above the default `limits.principal_requests_per_second`, so the bench raises that
//! one limit; every other is the default.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde_json::json;

use crate::load::{Conn, percentile};
use crate::relay::{Proc, free_addr, spawn_self, us, wait_listening};

#[derive(Default)]
struct Answers {
    unauthorized: AtomicU64,
    too_many: AtomicU64,
    other: AtomicU64,
    connects: AtomicU64,
}

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
}

/// Forged tokens as large as the default head limit allows.
fn forged(n: u64) -> String {
    let long = "x".repeat(5000);
    match n % 3 {
        0 => format!(
            "{}.{}.c2ln",
            b64(r#"{"alg":"RS256","kid":"k"}"#),
            b64(&format!(
                r#"{{"iss":"https://{n}.{long}","sub":"{long}","aud":"custody","exp":9999999999}}"#
            ))
        ),
        1 => format!(
            "{}.{}.",
            b64(r#"{"alg":"none"}"#),
            b64(&format!(r#"{{"iss":"x","sub":"{long}"}}"#))
        ),
        _ => format!("not-a-jwt-{n}-{long}"),
    }
}

/// One flooding connection at a time from `local`, reconnecting whenever the gateway closes it.
async fn flooder(
    gw: SocketAddr,
    local: IpAddr,
    mut n: u64,
    stop: Arc<AtomicBool>,
    answers: Arc<Answers>,
) {
    while !stop.load(Ordering::Relaxed) {
        let Ok(socket) = tokio::net::TcpSocket::new_v4() else {
            return;
        };
        if socket.bind(SocketAddr::new(local, 0)).is_err() {
            return;
        }
        let Ok(stream) = socket.connect(gw).await else {
            tokio::time::sleep(Duration::from_millis(5)).await;
            continue;
        };
        answers.connects.fetch_add(1, Ordering::Relaxed);
        let _ = stream.set_nodelay(true);
        let Ok((mut sender, conn)) =
            hyper::client::conn::http1::handshake::<_, Full<Bytes>>(TokioIo::new(stream)).await
        else {
            continue;
        };
        tokio::spawn(conn);
        while !stop.load(Ordering::Relaxed) {
            n += 1;
            let Ok(req) = Request::post("/mcp/bench")
                .header("host", "127.0.0.1")
                .header("authorization", format!("Bearer {}", forged(n)))
                .header("content-type", "application/json")
                .header("accept", "application/json, text/event-stream")
                .body(Full::new(Bytes::from_static(b"{}")))
            else {
                return;
            };
            if sender.ready().await.is_err() {
                break;
            }
            let Ok(resp) = sender.send_request(req).await else {
                break;
            };
            let counter = match resp.status().as_u16() {
                401 => &answers.unauthorized,
                429 => &answers.too_many,
                _ => &answers.other,
            };
            counter.fetch_add(1, Ordering::Relaxed);
            let close = resp
                .headers()
                .get("connection")
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
            let _ = resp.into_body().collect().await;
            if close {
                break;
            }
        }
    }
}

/// Entries and bytes of entry data in the log.
fn log_size(data: &std::path::Path) -> anyhow::Result<(u64, u64)> {
    let db = rusqlite::Connection::open(data.join("log.sqlite"))?;
    let (n, b): (i64, i64) = db.query_row(
        "SELECT count(*), coalesce(sum(length(data)), 0) FROM entries",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    Ok((n as u64, b as u64))
}

/// Refusal entries from index `from` on: how many, their bytes, the refusals they count.
fn counted_refusals(data: &std::path::Path, from: u64) -> anyhow::Result<(u64, u64, u64)> {
    let db = rusqlite::Connection::open(data.join("log.sqlite"))?;
    let mut stmt = db.prepare("SELECT data FROM entries WHERE idx >= ?1")?;
    let rows = stmt.query_map([from as i64], |r| r.get::<_, Vec<u8>>(0))?;
    let (mut entries, mut bytes, mut count) = (0, 0, 0);
    for row in rows {
        let row = row?;
        let e = tlog::Entry::decode(&row).map_err(|e| anyhow::anyhow!("{e}"))?;
        if matches!(
            e.kind,
            tlog::entry::Kind::AuthFailure | tlog::entry::Kind::Rejected
        ) {
            entries += 1;
            bytes += row.len() as u64;
            let d: serde_json::Value = serde_json::from_str(&e.detail)?;
            count += d["count"].as_u64().unwrap_or(1);
        }
    }
    Ok((entries, bytes, count))
}

async fn latencies(conn: &mut Conn, calls: usize) -> anyhow::Result<Vec<Duration>> {
    let mut out = Vec::with_capacity(calls);
    for _ in 0..calls {
        out.push(conn.call().await?);
    }
    Ok(out)
}

pub async fn run(
    seconds: u64,
    connections: usize,
    addresses: u8,
    calls: usize,
) -> anyhow::Result<()> {
    let issuer = custody_test_issuer::TestIssuer::start().await;
    let work = tempfile::tempdir_in(std::env::current_dir()?)?;
    let up_addr = free_addr()?;
    let _upstream: Proc = spawn_self(&["upstream", &up_addr.to_string()])?;
    wait_listening(up_addr).await?;
    let gw: SocketAddr = free_addr()?;
    let data = work.path().join("data");
    let config = work.path().join("custody.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"{gw}\"\ndata_dir = \"{}\"\n[audit]\norigin = \"bench.custody/log\"\n[limits]\nprincipal_requests_per_second = 1000000\nprincipal_request_burst = 1000000\n[[auth.oidc]]\npreset = \"github-actions\"\nissuer = \"{}\"\naudiences = [\"custody\"]\n[endpoints.bench.upstream]\ntransport = \"http\"\nurl = \"http://{up_addr}/mcp\"\n",
            data.display(),
            issuer.url
        ),
    )?;
    let gateway: Proc = spawn_self(&["gateway", config.to_str().unwrap_or_default()])?;
    wait_listening(gw).await?;
    let claims = issuer.claims(
        "repo:acme/api:ref:refs/heads/main",
        &json!({"repository_owner": "acme", "run_id": "1", "run_attempt": "1"}),
    );
    let token = issuer.token("rsa-1", &claims);
    let mut job = Conn::open_with_token(gw, "/mcp/bench", &token).await?;
    latencies(&mut job, 300).await?;
    let mut idle = latencies(&mut job, calls).await?;
    idle.sort_unstable();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (entries0, bytes0) = log_size(&data)?;
    let cpu0 = crate::procstat::cpu_time(gateway.0.id());

    // The flood runs in a process of its own at the lowest CPU priority: an attacker's
    // machines pay for making the flood; on this shared machine, `nice` keeps that cost from
    // being charged to the gateway and the job as if it were the gateway's.
    let exe = std::env::current_exe()?;
    let flood = std::process::Command::new("nice")
        .args(["-n", "19"])
        .arg(exe)
        .args([
            "flood-gen",
            &gw.to_string(),
            "--connections",
            &connections.to_string(),
            "--addresses",
            &addresses.to_string(),
            "--seconds",
            &seconds.to_string(),
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()?;
    let started = Instant::now();
    let mut under = Vec::new();
    let mut failed = 0u64;
    while started.elapsed() < Duration::from_secs(seconds) {
        match job.call().await {
            Ok(d) => under.push(d),
            Err(_) => {
                failed += 1;
                job = Conn::open_with_token(gw, "/mcp/bench", &token).await?;
            }
        }
    }
    let elapsed = started.elapsed();
    let cpu = crate::procstat::cpu_time(gateway.0.id()) - cpu0;
    let out = flood.wait_with_output()?;
    let counts: Vec<u64> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    anyhow::ensure!(
        counts.len() == 4,
        "the flood process failed: {:?}",
        out.status
    );
    let (u, t, o, connects) = (counts[0], counts[1], counts[2], counts[3]);
    under.sort_unstable();
    // The refusals of the last second are written a second later.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (entries1, bytes1) = log_size(&data)?;
    let (refusal_entries, refusal_bytes, refusals_counted) = counted_refusals(&data, entries0)?;
    drop(gateway);

    let secs = elapsed.as_secs_f64();
    let (p50i, p50f) = (percentile(&idle, 0.5), percentile(&under, 0.5));
    println!(
        "custody flood benchmark: forged tokens from {connections} connections on {addresses} loopback addresses for {seconds} s, against a gateway with its default limits (but the job's request rate) and a durable log"
    );
    println!(
        "command: cargo run --release -p custody-bench -- flood --seconds {seconds} --connections {connections} --addresses {addresses} --calls {calls}"
    );
    println!(
        "machine: {} CPUs, shared by the flood (nice 19), the job, custody and the upstream\n",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!(
        "flood: {:.0} requests/s answered ({u} 401, {t} 429, {o} other), {connects} connections opened; custody CPU {:.0}% of one core",
        (u + t + o) as f64 / secs,
        100.0 * cpu.as_secs_f64() / secs
    );
    println!(
        "log, from the flood: {refusal_entries} refusal entries, {refusal_bytes} bytes ({:.0} bytes/s; the bound is 2,000,000 bytes a minute), counting {refusals_counted} refusals ({} answered)",
        refusal_bytes as f64 / secs,
        u + t
    );
    println!(
        "log, all: +{} entries, +{} bytes (the job's own calls are recorded too)",
        entries1 - entries0,
        bytes1 - bytes0
    );
    println!(
        "the job's tools/call: idle p50 {} p99 {} ({calls} calls); under flood p50 {} p99 {} ({} calls, {failed} failed): p50 {:.2}x idle",
        us(p50i),
        us(percentile(&idle, 0.99)),
        us(p50f),
        us(percentile(&under, 0.99)),
        under.len(),
        p50f.as_secs_f64() / p50i.as_secs_f64()
    );
    Ok(())
}

/// The flood alone (`custody-bench flood-gen`): prints the 401s, 429s, other answers and
/// connections opened.
pub async fn generate(
    gw: SocketAddr,
    connections: usize,
    addresses: u8,
    seconds: u64,
) -> anyhow::Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    let answers = Arc::new(Answers::default());
    let flood: Vec<_> = (0..connections)
        .map(|i| {
            let local = IpAddr::from([127, 0, 0, 2 + (i % usize::from(addresses.max(1))) as u8]);
            tokio::spawn(flooder(
                gw,
                local,
                i as u64 * 10_000_000,
                stop.clone(),
                answers.clone(),
            ))
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    for f in flood {
        let _ = f.await;
    }
    println!(
        "{} {} {} {}",
        answers.unauthorized.load(Ordering::Relaxed),
        answers.too_many.load(Ordering::Relaxed),
        answers.other.load(Ordering::Relaxed),
        answers.connects.load(Ordering::Relaxed)
    );
    Ok(())
}
