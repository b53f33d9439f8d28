//! `custody-bench sessions`: what one idle session-based session costs the gateway in memory
//! (an HTTP upstream, so no process of its own): resident memory before and after opening
//! `count` sessions that then stay idle.

use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use serde_json::json;

use crate::procstat;
use crate::relay::{free_addr, spawn_self, wait_listening};

pub async fn sessions(count: usize) -> anyhow::Result<()> {
    let work = std::env::temp_dir().join(format!("custody-bench-sessions-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let up_addr = free_addr()?;
    let _upstream = spawn_self(&["upstream", &up_addr.to_string()])?;
    wait_listening(up_addr)
        .await
        .context("starting the upstream")?;
    let gw_addr = free_addr()?;
    let config = work.join("custody.toml");
    // One anonymous principal opens every session: lift the session caps.
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"{gw_addr}\"\ndata_dir = \"{}\"\n[auth]\nanonymous = true\n\
             [limits]\nprincipal_sessions = 100000\nprincipal_requests_per_second = 1000000\n\
             principal_request_burst = 1000000\n\
             [endpoints.bench.upstream]\ntransport = \"http\"\nurl = \"http://{up_addr}/mcp\"\n\
             [endpoints.bench.limits]\nsessions = 100000\n",
            work.join("data").display(),
        ),
    )?;
    let gateway = spawn_self(&["gateway", config.to_str().unwrap_or_default()])?;
    wait_listening(gw_addr)
        .await
        .context("starting the gateway")?;
    let pid = gateway.0.id();
    let open = |n: usize| async move {
        let init = json!({"jsonrpc": "2.0", "id": n, "method": "initialize", "params": {
            "protocolVersion": "2025-03-26", "capabilities": {},
            "clientInfo": {"name": "custody-bench", "version": "0"}}});
        let (status, sid, _) =
            crate::messages::post(gw_addr, None, Bytes::from(init.to_string())).await?;
        let sid = sid.with_context(|| format!("initialize answered {status} without a session"))?;
        let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
        crate::messages::post(gw_addr, Some(&sid), Bytes::from(note.to_string())).await?;
        anyhow::Ok(())
    };
    // Warm up: the first sessions' one-time allocations (pools, tables) are not counted.
    for n in 0..50 {
        open(n).await?;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = procstat::rss(pid);
    let mut opened = 0;
    while opened < count {
        let mut wave = tokio::task::JoinSet::new();
        for n in opened..(opened + 32).min(count) {
            wave.spawn(open(n + 1000));
        }
        while let Some(r) = wave.join_next().await {
            r??;
        }
        opened = (opened + 32).min(count);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = procstat::rss(pid);
    let per = after.saturating_sub(before) / count.max(1) as u64;
    println!(
        "custody idle sessions benchmark: session-based (2025-03-26) sessions of an HTTP upstream, left idle"
    );
    println!("command: cargo run --release -p custody-bench -- sessions --count {count}");
    println!(
        "  gateway RSS: {:.1} MB before, {:.1} MB after {count} sessions",
        before as f64 / 1e6,
        after as f64 / 1e6
    );
    println!(
        "  per idle session: {:.1} KB (target < 16 KB)",
        per as f64 / 1e3
    );
    let _ = std::fs::remove_dir_all(&work);
    Ok(())
}
