//! Issue 13, class 4, at the connection: a flood of connections or of slow or oversized
//! request heads cannot starve callers. Each test reproduces an attack that worked before the
//! connection table: idle connections exhausting the file descriptors, slowloris heads, heads
//! of tens of kilobytes.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};
use tlog::entry::Kind;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What the refusal entries of a log count under `reason`.
fn counted(dir: &std::path::Path, reason: &str) -> u64 {
    entries(dir)
        .iter()
        .filter(|e| matches!(e.kind, Kind::AuthFailure | Kind::Rejected))
        .map(|e| serde_json::from_str::<Value>(&e.detail).unwrap())
        .filter(|d| d["reason"] == reason)
        .map(|d| d["count"].as_u64().unwrap())
        .sum()
}

/// Sends `head` and returns what the server answers before closing, or `None` if it keeps the
/// connection open past `wait`.
async fn raw(addr: std::net::SocketAddr, head: &[u8], wait: Duration) -> Option<String> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(head).await.unwrap();
    let mut out = Vec::new();
    match tokio::time::timeout(wait, s.read_to_end(&mut out)).await {
        Ok(_) => Some(String::from_utf8_lossy(&out).into_owned()),
        Err(_) => None,
    }
}

#[tokio::test]
async fn oversized_heads_get_431_with_the_reason_and_are_counted() {
    let gw = Gateway::start("", &stdio_fixture("f", "")).await;
    let post = |extra: String| {
        format!(
            "POST /mcp/f HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-length: 2\r\n{extra}connection: close\r\n\r\n{{}}"
        )
        .into_bytes()
    };
    let big = raw(
        gw.addr,
        &post(format!("x-big: {}\r\n", "a".repeat(20_000))),
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    assert!(big.starts_with("HTTP/1.1 431"), "{big}");
    assert!(
        big.contains("server.header_bytes") && big.contains("16384"),
        "{big}"
    );
    let many: String = (0..150).map(|i| format!("x-h{i}: v\r\n")).collect();
    let many = raw(gw.addr, &post(many), Duration::from_secs(5))
        .await
        .unwrap();
    assert!(many.starts_with("HTTP/1.1 431"), "{many}");
    assert!(many.contains("server.headers"), "{many}");
    // Past twice the limit hyper refuses the head itself (a bare 431); it is counted too.
    let huge = raw(
        gw.addr,
        &post(format!("x-big: {}\r\n", "a".repeat(40_000))),
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    assert!(huge.starts_with("HTTP/1.1 431"), "{huge}");
    let dir = gw.shutdown().await;
    assert_eq!(counted(dir.path(), "server.header_bytes"), 2);
    assert_eq!(counted(dir.path(), "server.headers"), 1);
}

#[tokio::test]
async fn slow_heads_and_idle_connections_are_closed_but_keep_alive_between_calls_works() {
    let gw = Gateway::start(
        "header_read_timeout = \"1s\"\nidle_timeout = \"3s\"",
        &stdio_fixture("f", ""),
    )
    .await;
    // Slowloris: a head that never ends, one header every 300 ms.
    let mut slow = TcpStream::connect(gw.addr).await.unwrap();
    slow.write_all(b"POST /mcp/f HTTP/1.1\r\nhost: 127.0.0.1\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let closed = loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        if slow.write_all(b"x-slow: 1\r\n").await.is_err() {
            break started.elapsed();
        }
        let mut buf = [0u8; 64];
        if let Ok(Ok(0)) = tokio::time::timeout(Duration::from_millis(1), slow.read(&mut buf)).await
        {
            break started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(6),
            "a slow head is never closed"
        );
    };
    assert!(closed < Duration::from_secs(3), "closed after {closed:?}");
    // An idle connection (nothing sent) goes after idle_timeout.
    let idle = raw(gw.addr, b"", Duration::from_secs(6)).await;
    assert_eq!(idle.as_deref(), Some(""), "an idle connection is closed");
    // Keep-alive between calls longer than the header timeout is not a slow head.
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .build()
        .unwrap();
    let mut c = gw.client("f").stateless();
    c.http = http;
    assert_eq!(c.call("tools/list", json!({})).await.status, 200);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(c.call("tools/list", json!({})).await.status, 200);
    let dir = gw.shutdown().await;
    assert_eq!(
        counted(dir.path(), "server.header_read_timeout"),
        1,
        "the slow head is counted"
    );
}

#[tokio::test]
async fn a_table_full_of_idle_connections_makes_room_and_one_full_of_busy_ones_answers_503() {
    let gw = Gateway::start("max_connections = 16", &stdio_fixture("f", "")).await;
    let mut idle = Vec::new();
    for _ in 0..100 {
        idle.push(TcpStream::connect(gw.addr).await.unwrap());
    }
    let c = gw.client("f").stateless();
    let a = tokio::time::timeout(Duration::from_secs(10), c.call("tools/list", json!({})))
        .await
        .expect("idle connections must not block a call");
    assert_eq!(a.status, 200);
    drop(idle);
    // Sixteen requests whose bodies never finish hold every place.
    let mut busy = Vec::new();
    for _ in 0..16 {
        let mut s = TcpStream::connect(gw.addr).await.unwrap();
        s.write_all(
            b"POST /mcp/f HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\naccept: application/json, text/event-stream\r\nmcp-protocol-version: 2026-07-28\r\ncontent-length: 100\r\n\r\n{",
        )
        .await
        .unwrap();
        busy.push(s);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let refused = raw(gw.addr, b"", Duration::from_secs(5)).await.unwrap();
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    assert!(
        refused.contains("retry-after: 1") && refused.contains("server.connections"),
        "{refused}"
    );
    drop(busy);
    gw.shutdown().await;
}

/// The attack as it was: `custody serve` at the default file limit of 1,024, and 1,100
/// connections that send nothing. Before, accept failed (EMFILE) and every call hung.
#[tokio::test]
async fn eleven_hundred_idle_connections_at_the_default_file_limit_do_not_block_a_call() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("custody.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n[auth]\nanonymous = true\n{}",
            dir.path().join("data").display(),
            stdio_fixture("f", "")
        ),
    )
    .unwrap();
    let mut child = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -n 1024 && exec {} serve --config {}",
            custody_bin(),
            config.display()
        ))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let first = BufReader::new(child.stdout.take().unwrap())
        .lines()
        .next()
        .unwrap()
        .unwrap();
    let base = first
        .strip_prefix("custody listening on ")
        .unwrap()
        .to_string();
    let addr: std::net::SocketAddr = base.trim_start_matches("http://").parse().unwrap();
    let mut idle = Vec::new();
    for _ in 0..1100 {
        idle.push(TcpStream::connect(addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let c = Client::new(format!("{base}/mcp/f")).stateless();
    let a = tokio::time::timeout(Duration::from_secs(15), c.call("tools/list", json!({}))).await;
    let _ = child.kill();
    let _ = child.wait();
    let a = a.expect("1,100 idle connections must not block a call");
    assert_eq!(a.status, 200, "{a:#?}");
}
