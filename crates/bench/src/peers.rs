//! `custody-bench peers`: the relay benchmark with the peer gateways installable here beside
//! custody, in one run: each relays the same stateless `tools/call` (2026-07-28) to the same
//! upstream, and is measured the same way (latency at one client, throughput at many, CPU per
//! call and memory of the gateway process). Peers are installed by `crates/bench/peers/install.sh
//! CACHE`; today one: FastMCP's proxy (Python).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::Context as _;

use crate::relay::{Phase, Proc, free_addr, mb, measure, us, wait_listening};
use crate::{load, procstat};

/// One gateway under test.
struct Subject {
    name: &'static str,
    addr: SocketAddr,
    path: &'static str,
    pid: u32,
}

/// Starts FastMCP's proxy from the peers cache, relaying to `upstream`.
fn fastmcp(cache: &Path, upstream: SocketAddr, addr: SocketAddr) -> anyhow::Result<Proc> {
    let python = cache.join("fastmcp/bin/python");
    anyhow::ensure!(
        python.exists(),
        "{} is missing: run crates/bench/peers/install.sh {} first",
        python.display(),
        cache.display()
    );
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("peers/fastmcp_proxy.py");
    let child = Command::new(python)
        .arg(script)
        .arg(format!("http://{upstream}/mcp"))
        .arg(addr.port().to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    Ok(Proc(child))
}

pub async fn peers(
    cache: PathBuf,
    clients: usize,
    time: Duration,
    calls: usize,
    rounds: usize,
) -> anyhow::Result<()> {
    let work = std::env::temp_dir().join(format!("custody-bench-peers-{}", std::process::id()));
    let (upstream, up_addr, gateway, gw_addr) =
        crate::relay::upstream_and_gateway(&work, "fsync").await?;
    let peer_addr = free_addr()?;
    let peer = fastmcp(&cache, up_addr, peer_addr)?;
    wait_listening(peer_addr)
        .await
        .context("starting FastMCP's proxy")?;
    let up_pid = upstream.0.id();
    let subjects = [
        Subject {
            name: "direct",
            addr: up_addr,
            path: "/mcp",
            pid: up_pid,
        },
        Subject {
            name: "custody",
            addr: gw_addr,
            path: "/mcp/bench",
            pid: gateway.0.id(),
        },
        Subject {
            name: "fastmcp proxy",
            addr: peer_addr,
            path: "/mcp",
            pid: peer.0.id(),
        },
    ];
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle: Vec<u64> = subjects.iter().map(|s| procstat::rss(s.pid)).collect();

    // Latency at one client: each subject in turn, in batches, so all see the same machine.
    let mut conns = Vec::new();
    for s in &subjects {
        conns.push(load::Conn::open(s.addr, s.path).await?);
    }
    for c in &mut conns {
        for _ in 0..200 {
            c.call().await?;
        }
    }
    let mut lat: Vec<Vec<Duration>> = vec![Vec::new(); subjects.len()];
    while lat[0].len() < calls {
        for (c, l) in conns.iter_mut().zip(lat.iter_mut()) {
            for _ in 0..100 {
                l.push(c.call().await?);
            }
        }
    }
    drop(conns);
    for l in &mut lat {
        l.sort();
    }

    // Throughput: each subject in turn, `rounds` times; the median round of each.
    let mut phases: Vec<Vec<Phase>> = vec![Vec::new(); subjects.len()];
    for _ in 0..rounds {
        for (s, p) in subjects.iter().zip(phases.iter_mut()) {
            p.push(measure(s.addr, s.path, clients, time, s.pid, up_pid).await?);
        }
    }
    let rate = |p: &Phase| p.calls as f64 / p.wall.as_secs_f64();
    let median: Vec<Phase> = phases
        .into_iter()
        .map(|mut p| {
            p.sort_by(|a, b| rate(a).total_cmp(&rate(b)));
            p.swap_remove(p.len() / 2)
        })
        .collect();
    let direct_rate = rate(&median[0]);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;

    println!(
        "custody against peer gateways: tools/call (2026-07-28, JSON answers) to the conformance fixture over HTTP; custody with audit durability fsync"
    );
    println!(
        "command: crates/bench/peers/install.sh CACHE && cargo run --release -p custody-bench -- peers --cache CACHE --clients {clients} --seconds {} --calls {calls} --rounds {rounds}",
        time.as_secs()
    );
    println!(
        "machine: {cores} CPUs, shared by the load generator, the gateway under test and the upstream\n"
    );
    println!(
        "{:<15} {:>9} {:>9} {:>10} {:>10} {:>13} {:>11} {:>11}",
        "", "p50", "p99", "calls/s", "of direct", "CPU per call", "RSS idle", "RSS load"
    );
    for (i, s) in subjects.iter().enumerate() {
        let p = &median[i];
        let (cpu, rss) = if i == 0 {
            (String::from("-"), String::from("-"))
        } else {
            (
                format!(
                    "{:.1} µs",
                    p.cpu_gateway.as_secs_f64() * 1e6 / p.calls.max(1) as f64
                ),
                mb(p.rss_gateway_max),
            )
        };
        println!(
            "{:<15} {:>9} {:>9} {:>10.0} {:>9.0}% {:>13} {:>11} {:>11}",
            s.name,
            us(load::percentile(&lat[i], 0.5)),
            us(load::percentile(&lat[i], 0.99)),
            rate(p),
            100.0 * rate(p) / direct_rate,
            cpu,
            if i == 0 {
                String::from("-")
            } else {
                mb(idle[i])
            },
            rss
        );
    }
    println!(
        "\n{clients} clients, median of {rounds} rounds of {} s; latency over {calls} sequential calls at one client. \
         custody records every message durably (two fsynced entries per call); the peer records nothing.",
        time.as_secs()
    );
    let _ = std::fs::remove_dir_all(&work);
    Ok(())
}
