//! The relay through replicas of one log in PostgreSQL: `clients` stateless callers on one
//! replica, then the same callers split over two, against the conformance fixture over HTTP;
//! calls/s of each, their ratio, and each process's CPU (the replicas, the upstream, the
//! replicas' PostgreSQL backends, this load generator).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::relay::{free_addr, spawn_self, wait_listening};
use crate::{load, procstat};

fn config(
    path: &std::path::Path,
    listen: SocketAddr,
    work: &std::path::Path,
    name: &str,
    db: &str,
    upstream: SocketAddr,
) -> anyhow::Result<()> {
    std::fs::write(
        path,
        format!(
            "[server]\nlisten = \"{listen}\"\ndata_dir = \"{}\"\n\n[audit]\norigin = \"bench.custody/replicas\"\n\
             store = \"{db}\"\nreplica = \"{name}\"\nkey_file = \"{}\"\n\n[auth]\nanonymous = true\n\n\
             [limits]\nprincipal_requests_per_second = 1000000\nprincipal_request_burst = 1000000\n\
             principal_concurrent_requests = 100000\n\n[endpoints.bench.upstream]\ntransport = \"http\"\n\
             url = \"http://{upstream}/mcp\"\n",
            work.join(name).display(),
            work.join("log.key").display()
        ),
    )?;
    Ok(())
}

/// The CPU time of this database's backends (the replicas' connections), by pid.
fn backends(db: &mut postgres::Client, name: &str) -> anyhow::Result<Vec<u32>> {
    Ok(db
        .query(
            "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
            &[&name],
        )?
        .iter()
        .filter_map(|r| u32::try_from(r.get::<_, i32>(0)).ok())
        .collect())
}

struct Phase {
    calls: u64,
    wall: Duration,
    cpu: Vec<(String, Duration)>,
}

async fn phase(
    gateways: &[SocketAddr],
    clients: usize,
    time: Duration,
    pids: &[(String, Vec<u32>)],
) -> anyhow::Result<Phase> {
    let sum = |ps: &[u32]| ps.iter().map(|p| procstat::cpu_time(*p)).sum::<Duration>();
    let before: Vec<Duration> = pids.iter().map(|(_, p)| sum(p)).collect();
    let started = Instant::now();
    let runs: Vec<_> = gateways
        .iter()
        .map(|g| {
            let g = *g;
            let n = clients / gateways.len();
            tokio::spawn(async move { load::throughput(g, "/mcp/bench", n, time).await })
        })
        .collect();
    let mut calls = 0;
    for r in runs {
        calls += r.await??;
    }
    let wall = started.elapsed();
    let cpu = pids
        .iter()
        .zip(before)
        .map(|((name, p), b)| (name.clone(), sum(p).saturating_sub(b)))
        .collect();
    Ok(Phase { calls, wall, cpu })
}

pub async fn run(url: &str, clients: usize, seconds: u64) -> anyhow::Result<()> {
    // The blocking PostgreSQL client, where blocking is allowed.
    let (name, db_url, mut admin) = tokio::task::block_in_place(|| crate::postgres::database(url))?;
    let work = tempfile::tempdir()?;
    let up_addr = free_addr()?;
    let upstream = spawn_self(&["upstream", &up_addr.to_string()])?;
    wait_listening(up_addr)
        .await
        .context("starting the upstream")?;
    let mut gateways = Vec::new();
    let mut procs = Vec::new();
    for n in ["gw-1", "gw-2"] {
        let addr = free_addr()?;
        let path = work.path().join(format!("{n}.toml"));
        config(&path, addr, work.path(), n, &db_url, up_addr)?;
        let p = spawn_self(&["gateway", path.to_str().unwrap_or_default()])?;
        wait_listening(addr)
            .await
            .with_context(|| format!("starting {n}"))?;
        gateways.push(addr);
        procs.push(p);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let time = Duration::from_secs(seconds);
    let me = std::process::id();
    let pg_pids = tokio::task::block_in_place(|| {
        let mut c = postgres::Client::connect(&db_url, postgres::NoTls)?;
        backends(&mut c, &name)
    })?;
    let pids = vec![
        ("replica gw-1".to_string(), vec![procs[0].0.id()]),
        ("replica gw-2".to_string(), vec![procs[1].0.id()]),
        ("upstream".to_string(), vec![upstream.0.id()]),
        (format!("PostgreSQL ({} backends)", pg_pids.len()), pg_pids),
        ("load generator".to_string(), vec![me]),
    ];
    // Warm both, then measure one replica and two, alternating, three rounds each.
    phase(&gateways, clients, Duration::from_secs(1), &pids).await?;
    let mut one = Vec::new();
    let mut two = Vec::new();
    for _ in 0..3 {
        one.push(phase(&gateways[..1], clients, time, &pids).await?);
        two.push(phase(&gateways, clients, time, &pids).await?);
    }
    let rate = |p: &Phase| p.calls as f64 / p.wall.as_secs_f64();
    one.sort_by(|a, b| rate(a).total_cmp(&rate(b)));
    two.sort_by(|a, b| rate(a).total_cmp(&rate(b)));
    let (one, two) = (&one[1], &two[1]);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    println!(
        "custody relay through replicas of one PostgreSQL log: {clients} stateless clients, tools/call to the conformance fixture over HTTP, synchronous_commit = on"
    );
    println!(
        "command: cargo run --release -p custody-bench -- relay-replicas --clients {clients} --seconds {seconds}"
    );
    println!(
        "machine: {cores} CPUs shared by every process below; the median of 3 rounds of {seconds} s each\n"
    );
    println!("  1 replica : {:>7.0} calls/s", rate(one));
    println!(
        "  2 replicas: {:>7.0} calls/s   ratio {:.2}",
        rate(two),
        rate(two) / rate(one)
    );
    println!("\nCPU, % of the machine        1 replica   2 replicas");
    for ((name, a), (_, b)) in one.cpu.iter().zip(&two.cpu) {
        println!(
            "  {name:<28} {:>6.1}%     {:>6.1}%",
            100.0 * a.as_secs_f64() / (one.wall.as_secs_f64() * cores),
            100.0 * b.as_secs_f64() / (two.wall.as_secs_f64() * cores)
        );
    }
    drop(procs);
    drop(upstream);
    tokio::task::block_in_place(move || {
        admin.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))?;
        drop(admin);
        anyhow::Ok(())
    })
}
