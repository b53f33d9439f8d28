//! `custody-bench witness`: what two local witnesses in `required` mode cost the relay
//! (throughput against a gateway without witnesses, alternating rounds), and how long an entry
//! waits, after its commit, for a checkpoint covering it to be published with the witnesses'
//! quorum (p50/p99, measured while the relay is under load).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::load;
use crate::relay::{Phase, free_addr, gateway_config, measure, spawn_self, wait_listening};

/// (internal) A built-in witness in a process of its own.
pub async fn serve_witness(dir: &Path, addr: SocketAddr, accept: &str) -> anyhow::Result<()> {
    let verifier = tlog::Verifier::from_key_string(accept)?;
    let w = Arc::new(custody::witness::server::Witness::open(
        dir,
        vec![verifier],
    )?);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    custody::witness::server::serve(listener, w, tokio_util::sync::CancellationToken::new()).await;
    Ok(())
}

pub async fn run(
    clients: usize,
    seconds: u64,
    rounds: usize,
    samples: usize,
) -> anyhow::Result<()> {
    let work = std::env::temp_dir().join(format!("custody-bench-witness-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let up_addr = free_addr()?;
    let upstream = spawn_self(&["upstream", &up_addr.to_string()])?;
    wait_listening(up_addr)
        .await
        .context("starting the upstream")?;

    // The log key both gateways sign with (separate data directories, separate logs of the
    // same origin would confuse the witnesses: only the witnessed gateway uses it).
    let key_path = work.join("witnessed").join("log.key");
    let signer = custody::audit::keys::create(&key_path, "bench.custody/witnessed")?;
    let log_vkey = signer.verifier().to_key_string();
    let mut policy = format!("log {log_vkey}\n");
    let mut witnesses = Vec::new();
    for name in ["a", "b"] {
        let dir = work.join(format!("witness-{name}"));
        let signer = custody::witness::keys::create(&dir, &format!("{name}.witness.bench"))?;
        let addr = free_addr()?;
        witnesses.push(spawn_self(&[
            "witness-server",
            dir.to_str().unwrap_or_default(),
            &addr.to_string(),
            &log_vkey,
        ])?);
        wait_listening(addr).await.context("starting a witness")?;
        policy.push_str(&format!(
            "witness {name} {} http://{addr}\n",
            signer.verifier().to_key_string()
        ));
    }
    policy.push_str("group both all a b\nquorum both\n");
    let policy_path = work.join("witnesses.policy");
    std::fs::write(&policy_path, policy)?;

    let plain_addr = free_addr()?;
    let plain_config = work.join("plain.toml");
    gateway_config(
        &plain_config,
        plain_addr,
        &work.join("plain"),
        up_addr,
        "fsync",
    )?;
    let witnessed_addr = free_addr()?;
    let witnessed_config = work.join("witnessed.toml");
    gateway_config(
        &witnessed_config,
        witnessed_addr,
        &work.join("witnessed"),
        up_addr,
        "fsync",
    )?;
    let text = std::fs::read_to_string(&witnessed_config)?
        .replace("origin = \"bench.custody/log\"\n", "")
        + &format!(
            "\n[witness]\npolicy = \"{}\"\nmode = \"required\"\nmax_lag = \"10s\"\n",
            policy_path.display()
        );
    std::fs::write(&witnessed_config, text)?;
    let plain = spawn_self(&["gateway", plain_config.to_str().unwrap_or_default()])?;
    let witnessed = spawn_self(&["gateway", witnessed_config.to_str().unwrap_or_default()])?;
    wait_listening(plain_addr)
        .await
        .context("starting the plain gateway")?;
    wait_listening(witnessed_addr)
        .await
        .context("starting the witnessed gateway")?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let up_pid = upstream.0.id();

    let time = Duration::from_secs(seconds);
    let mut runs: Vec<(Phase, Phase)> = Vec::new();
    for _ in 0..rounds {
        let p = measure(
            plain_addr,
            "/mcp/bench",
            clients,
            time,
            plain.0.id(),
            up_pid,
        )
        .await?;
        let w = measure(
            witnessed_addr,
            "/mcp/bench",
            clients,
            time,
            witnessed.0.id(),
            up_pid,
        )
        .await?;
        runs.push((p, w));
    }
    let rate = |p: &Phase| p.calls as f64 / p.wall.as_secs_f64();
    let ratio = |r: &(Phase, Phase)| rate(&r.1) / rate(&r.0);
    let text: Vec<String> = runs
        .iter()
        .map(|r| {
            format!(
                "{:.0}/{:.0} ({:.1}%)",
                rate(&r.0),
                rate(&r.1),
                ratio(r) * 100.0
            )
        })
        .collect();
    runs.sort_by(|a, b| ratio(a).total_cmp(&ratio(b)));
    let median = ratio(&runs[runs.len() / 2]);

    // Commit to cosigned publication, under load: a call's answer is durable when it arrives;
    // then the checkpoint is polled until it covers the answer's entry.
    let background = tokio::spawn(async move {
        measure(
            witnessed_addr,
            "/mcp/bench",
            clients / 2,
            Duration::from_secs(seconds.max(5) * 2),
            0,
            0,
        )
        .await
    });
    let mut waits = Vec::with_capacity(samples);
    for _ in 0..samples {
        let index = load::call_index(witnessed_addr, "/mcp/bench").await?;
        let committed = Instant::now();
        loop {
            let size = load::checkpoint_size(witnessed_addr).await?;
            if size > index {
                break;
            }
            anyhow::ensure!(
                committed.elapsed() < Duration::from_secs(30),
                "no checkpoint covered entry {index}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        waits.push(committed.elapsed());
    }
    let _ = background.await;
    waits.sort();
    let cosigned = load::checkpoint_text(witnessed_addr).await?;
    let cosignatures = cosigned
        .lines()
        .filter(|l| l.contains(".witness.bench "))
        .count();

    println!(
        "custody witness benchmark: tools/call (2026-07-28) through a gateway without witnesses and one with two local witnesses (2-of-2, mode required), durability fsync"
    );
    println!(
        "command: cargo run --release -p custody-bench -- witness --clients {clients} --seconds {seconds} --rounds {rounds} --samples {samples}"
    );
    println!(
        "machine: {} CPUs, shared by the load generator, both gateways, the witnesses and the upstream\n",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!(
        "throughput at {clients} clients, calls/s, without/with witnesses: {}",
        text.join(", ")
    );
    println!(
        "  median round: with witnesses {:.1}% of without (target: at least 95%)",
        median * 100.0
    );
    println!(
        "commit to a published checkpoint with both cosignatures ({samples} calls, under load):"
    );
    println!(
        "  p50 {} ms   p99 {} ms   max {} ms   (target p99: at most 1500 ms; checkpoint_interval 1 s)",
        load::percentile(&waits, 0.5).as_millis(),
        load::percentile(&waits, 0.99).as_millis(),
        waits.last().map_or(0, |d| d.as_millis())
    );
    println!("  the latest checkpoint carries {cosignatures} witness cosignatures");
    drop((plain, witnessed, witnesses, upstream));
    let _ = std::fs::remove_dir_all(&work);
    Ok(())
}
