//! The relay benchmark: the load generator, the gateway and the upstream each in a process of
//! its own, direct and through the gateway, with each process's CPU and memory; and the
//! restart and audit-relay benchmarks that reuse its processes.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::{audit, load, procstat};

/// A child process that is killed when dropped.
pub(crate) struct Proc(pub(crate) Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(crate) fn free_addr() -> anyhow::Result<SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

pub(crate) fn spawn_self(args: &[&str]) -> anyhow::Result<Proc> {
    let exe = std::env::current_exe()?;
    let child = Command::new(exe)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    Ok(Proc(child))
}

pub(crate) async fn wait_listening(addr: SocketAddr) -> anyhow::Result<()> {
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    anyhow::bail!("nothing listening on {addr}")
}

#[derive(Clone, Copy)]
pub(crate) struct Phase {
    pub(crate) calls: u64,
    pub(crate) wall: Duration,
    pub(crate) cpu_self: Duration,
    pub(crate) cpu_gateway: Duration,
    pub(crate) cpu_upstream: Duration,
    pub(crate) rss_gateway_max: u64,
}

pub(crate) async fn measure(
    addr: SocketAddr,
    path: &str,
    clients: usize,
    time: Duration,
    gateway: u32,
    upstream: u32,
) -> anyhow::Result<Phase> {
    let me = std::process::id();
    let (s0, g0, u0) = (
        procstat::cpu_time(me),
        procstat::cpu_time(gateway),
        procstat::cpu_time(upstream),
    );
    let started = Instant::now();
    let sampler = tokio::spawn(async move {
        let mut max = 0;
        loop {
            max = max.max(procstat::rss(gateway));
            tokio::time::sleep(Duration::from_millis(200)).await;
            if started.elapsed() > time + Duration::from_secs(1) {
                return max;
            }
        }
    });
    let calls = load::throughput(addr, path, clients, time).await?;
    let wall = started.elapsed();
    let phase = Phase {
        calls,
        wall,
        cpu_self: procstat::cpu_time(me) - s0,
        cpu_gateway: procstat::cpu_time(gateway) - g0,
        cpu_upstream: procstat::cpu_time(upstream) - u0,
        rss_gateway_max: sampler.await?,
    };
    Ok(phase)
}

pub(crate) fn us(d: Duration) -> String {
    format!("{:.0} µs", d.as_secs_f64() * 1e6)
}

pub(crate) fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

pub(crate) async fn relay(
    clients: usize,
    time: Duration,
    calls: usize,
    rounds: usize,
    durability: &str,
) -> anyhow::Result<()> {
    let work = std::env::temp_dir().join(format!("custody-bench-{}", std::process::id()));
    let (upstream, up_addr, gateway, gw_addr) = upstream_and_gateway(&work, durability).await?;
    let (gw_pid, up_pid) = (gateway.0.id(), upstream.0.id());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_idle = procstat::rss(gw_pid);

    // The floor: a plain proxy hop on the same stack (`bare.rs`), nothing parsed or recorded.
    let bare_addr = free_addr()?;
    let bare = spawn_self(&["bare-proxy", &bare_addr.to_string(), &up_addr.to_string()])?;
    wait_listening(bare_addr).await?;
    let bare_pid = bare.0.id();

    // Latency at one client: direct, through the plain hop and through the gateway, in turn;
    // each proxy's CPU over the phase is its CPU at one client (it is idle in the others' turns).
    let (gw_cpu0, bare_cpu0) = (procstat::cpu_time(gw_pid), procstat::cpu_time(bare_pid));
    const WARMUP: usize = 500;
    let mut lat = load::latencies_of(
        &[
            (up_addr, "/mcp"),
            (bare_addr, "/mcp"),
            (gw_addr, "/mcp/bench"),
        ],
        WARMUP,
        calls,
    )
    .await?;
    let one_client = |cpu: Duration| cpu.as_secs_f64() * 1e6 / (WARMUP + calls) as f64;
    let (gw_cpu1, bare_cpu1) = (
        one_client(procstat::cpu_time(gw_pid) - gw_cpu0),
        one_client(procstat::cpu_time(bare_pid) - bare_cpu0),
    );
    for l in &mut lat {
        l.sort();
    }
    let (direct, hop, via) = (&lat[0], &lat[1], &lat[2]);
    let rss_after_warm = procstat::rss(gw_pid);

    // Throughput at many clients: direct, the plain hop and the gateway, in turn, `rounds`
    // times; the round with the median ratio of the gateway to direct is reported (the machine
    // is shared, so single runs vary).
    let mut runs = Vec::new();
    for _ in 0..rounds {
        let d = measure(up_addr, "/mcp", clients, time, gw_pid, up_pid).await?;
        let b = measure(bare_addr, "/mcp", clients, time, bare_pid, up_pid).await?;
        let g = measure(gw_addr, "/mcp/bench", clients, time, gw_pid, up_pid).await?;
        runs.push((d, g, b));
    }
    drop(bare);
    let rate = |p: &Phase| p.calls as f64 / p.wall.as_secs_f64();
    let ratio_of = |(d, g, _): &(Phase, Phase, Phase)| rate(g) / rate(d);
    let rounds_text: Vec<String> = runs
        .iter()
        .map(|r| {
            format!(
                "{:.0}/{:.0}/{:.0} ({:.0}%)",
                rate(&r.0),
                rate(&r.2),
                rate(&r.1),
                ratio_of(r) * 100.0
            )
        })
        .collect();
    runs.sort_by(|a, b| ratio_of(a).total_cmp(&ratio_of(b)));
    let (d, g, b) = runs.swap_remove(runs.len() / 2);

    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let share =
        |cpu: Duration, wall: Duration| 100.0 * cpu.as_secs_f64() / (wall.as_secs_f64() * cores);
    let (p50d, p50b, p50g) = (
        load::percentile(direct, 0.5),
        load::percentile(hop, 0.5),
        load::percentile(via, 0.5),
    );
    let (p99d, p99b, p99g) = (
        load::percentile(direct, 0.99),
        load::percentile(hop, 0.99),
        load::percentile(via, 0.99),
    );
    let per_call = |cpu: Duration, p: &Phase| cpu.as_secs_f64() * 1e6 / p.calls as f64;

    println!(
        "custody relay benchmark: tools/call (2026-07-28, JSON answers) to the conformance fixture over HTTP, audit durability {durability}"
    );
    println!(
        "command: cargo run --release -p custody-bench -- relay --clients {clients} --seconds {} --calls {calls} --rounds {rounds} --durability {durability}",
        time.as_secs()
    );
    println!("machine: {cores} CPUs, shared by the load generator, custody and the upstream\n");
    println!(
        "plain hop: a proxy on the same stack (tokio, hyper HTTP/1, mimalloc, as many threads), nothing parsed or recorded\n"
    );
    println!(
        "latency, 1 client, {calls} calls      direct   plain hop   via custody   added (plain hop's)"
    );
    println!(
        "  p50                              {:>9}   {:>9}   {:>9}    +{} (+{})",
        us(p50d),
        us(p50b),
        us(p50g),
        us(p50g.saturating_sub(p50d)),
        us(p50b.saturating_sub(p50d))
    );
    println!(
        "  p99                              {:>9}   {:>9}   {:>9}    +{} (+{})",
        us(p99d),
        us(p99b),
        us(p99g),
        us(p99g.saturating_sub(p99d)),
        us(p99b.saturating_sub(p99d))
    );
    println!(
        "  CPU time per call in the proxy               {:>6.1} µs   {:>6.1} µs",
        bare_cpu1, gw_cpu1
    );
    println!(
        "\nthroughput, {clients} clients, {rounds} rounds of {} s (the round of custody's median ratio)  direct   plain hop   via custody   ratio (plain hop's)",
        time.as_secs()
    );
    println!(
        "  calls/s                          {:>9.0}   {:>9.0}   {:>9.0}    {:.0}% ({:.0}%)",
        rate(&d),
        rate(&b),
        rate(&g),
        100.0 * rate(&g) / rate(&d),
        100.0 * rate(&b) / rate(&d)
    );
    println!(
        "  CPU time per call in the proxy               {:>6.1} µs   {:>6.1} µs",
        per_call(b.cpu_gateway, &b),
        per_call(g.cpu_gateway, &g)
    );
    println!(
        "  CPU share of {cores} cores (plain hop)  load generator {:.0}%, plain hop {:.0}%, upstream {:.0}%",
        share(b.cpu_self, b.wall),
        share(b.cpu_gateway, b.wall),
        share(b.cpu_upstream, b.wall)
    );
    println!(
        "  CPU share of {cores} cores (direct)   load generator {:.0}%, upstream {:.0}%",
        share(d.cpu_self, d.wall),
        share(d.cpu_upstream, d.wall)
    );
    println!(
        "  CPU share of {cores} cores (via)      load generator {:.0}%, custody {:.0}%, upstream {:.0}%",
        share(g.cpu_self, g.wall),
        share(g.cpu_gateway, g.wall),
        share(g.cpu_upstream, g.wall)
    );
    println!(
        "  each round, direct/plain hop/via calls/s: {}",
        rounds_text.join(", ")
    );
    println!(
        "\ncustody CPU time per relayed call: {:.1} µs",
        g.cpu_gateway.as_secs_f64() * 1e6 / g.calls as f64
    );
    println!(
        "custody RSS: idle {} (after warm-up {}), under load up to {}",
        mb(rss_idle),
        mb(rss_after_warm),
        mb(g.rss_gateway_max)
    );
    drop(gateway);
    drop(upstream);
    let _ = std::fs::remove_dir_all(&work);
    Ok(())
}

/// The conformance fixture over HTTP and a gateway relaying it (`gateway_config`, data in
/// `work`): each process and its address, once both listen.
pub(crate) async fn upstream_and_gateway(
    work: &std::path::Path,
    durability: &str,
) -> anyhow::Result<(Proc, SocketAddr, Proc, SocketAddr)> {
    std::fs::create_dir_all(work)?;
    let up_addr = free_addr()?;
    let upstream = spawn_self(&["upstream", &up_addr.to_string()])?;
    wait_listening(up_addr)
        .await
        .context("starting the upstream")?;
    let gw_addr = free_addr()?;
    let config = work.join("custody.toml");
    gateway_config(&config, gw_addr, &work.join("data"), up_addr, durability)?;
    let gateway = spawn_self(&["gateway", config.to_str().unwrap_or_default()])?;
    wait_listening(gw_addr)
        .await
        .context("starting the gateway")?;
    Ok((upstream, up_addr, gateway, gw_addr))
}

pub(crate) fn gateway_config(
    path: &std::path::Path,
    listen: SocketAddr,
    data: &std::path::Path,
    upstream: SocketAddr,
    durability: &str,
) -> anyhow::Result<()> {
    std::fs::write(
        path,
        format!(
            "[server]\nlisten = \"{listen}\"\ndata_dir = \"{}\"\n\n[audit]\ndurability = \"{durability}\"\norigin = \"bench.custody/log\"\n\n[auth]\nanonymous = true\n\n# Every benchmark client is the same (anonymous) principal: lift its limits.\n[limits]\nprincipal_requests_per_second = 1000000\nprincipal_request_burst = 1000000\nprincipal_concurrent_requests = 100000\n\n[endpoints.bench.upstream]\ntransport = \"http\"\nurl = \"http://{upstream}/mcp\"\n",
            data.display()
        ),
    )?;
    Ok(())
}

pub(crate) async fn restart(entries: u64, size: usize) -> anyhow::Result<()> {
    eprintln!("filling a log of {entries} entries of {size} bytes…");
    let dir = audit::fill(entries, size).await?;
    let up_addr = free_addr()?;
    let gw_addr = free_addr()?;
    let config = dir.path().join("custody.toml");
    gateway_config(&config, gw_addr, dir.path(), up_addr, "fsync")?;
    let started = Instant::now();
    let gateway = spawn_self(&["gateway", config.to_str().unwrap_or_default()])?;
    let serving = loop {
        if let Ok(mut s) = tokio::net::TcpStream::connect(gw_addr).await {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            s.write_all(b"GET /readyz HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n")
                .await?;
            let mut out = String::new();
            s.read_to_string(&mut out).await?;
            if out.starts_with("HTTP/1.1 200") {
                break started.elapsed();
            }
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(60),
            "the gateway did not come up"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    drop(gateway);
    println!("custody restart benchmark: start to serving (/readyz 200) with an existing log");
    println!(
        "command: cargo run --release -p custody-bench -- restart --entries {entries} --size {size}"
    );
    println!(
        "  log of {entries} entries: serving {:.0} ms after the process started",
        serving.as_secs_f64() * 1e3
    );
    Ok(())
}

pub(crate) async fn audit_relay(
    clients: usize,
    time: Duration,
    calls: usize,
    rounds: usize,
) -> anyhow::Result<()> {
    let work = tempfile::tempdir_in(std::env::current_dir()?)?;
    let up_addr = free_addr()?;
    let upstream = spawn_self(&["upstream", &up_addr.to_string()])?;
    wait_listening(up_addr).await?;
    let mut gateways = Vec::new();
    let mut addrs = Vec::new();
    for mode in ["none", "fsync"] {
        let addr = free_addr()?;
        let data = work.path().join(mode);
        std::fs::create_dir_all(&data)?;
        let config = work.path().join(format!("{mode}.toml"));
        gateway_config(&config, addr, &data, up_addr, mode)?;
        gateways.push(spawn_self(&[
            "gateway",
            config.to_str().unwrap_or_default(),
        ])?);
        wait_listening(addr).await?;
        addrs.push(addr);
    }
    let (none, fsync) = (addrs[0], addrs[1]);
    let (gw_none, gw_fsync) = (gateways[0].0.id(), gateways[1].0.id());
    let (mut lat_none, mut lat_fsync) =
        load::latencies((none, "/mcp/bench"), (fsync, "/mcp/bench"), 300, calls).await?;
    lat_none.sort();
    lat_fsync.sort();
    let mut runs = Vec::new();
    for _ in 0..rounds {
        let a = measure(none, "/mcp/bench", clients, time, gw_none, upstream.0.id()).await?;
        let b = measure(
            fsync,
            "/mcp/bench",
            clients,
            time,
            gw_fsync,
            upstream.0.id(),
        )
        .await?;
        runs.push((a, b));
    }
    let rate = |p: &Phase| p.calls as f64 / p.wall.as_secs_f64();
    let ratio = |(a, b): &(Phase, Phase)| rate(b) / rate(a);
    runs.sort_by(|x, y| ratio(x).total_cmp(&ratio(y)));
    let each: Vec<String> = runs
        .iter()
        .map(|r| {
            format!(
                "{:.0}/{:.0} ({:.0}%)",
                rate(&r.0),
                rate(&r.1),
                ratio(r) * 100.0
            )
        })
        .collect();
    let (a, b) = &runs[runs.len() / 2];
    let fsync_p50 = audit::fsync_p50(work.path())?;
    let (p50n, p50f) = (
        load::percentile(&lat_none, 0.5),
        load::percentile(&lat_fsync, 0.5),
    );
    println!(
        "custody audit relay benchmark: tools/call through custody, audit log durable (fsync) against durability = \"none\""
    );
    println!(
        "command: cargo run --release -p custody-bench -- audit-relay --clients {clients} --seconds {} --calls {calls} --rounds {rounds}",
        time.as_secs()
    );
    println!("\nlatency, 1 client, {calls} calls     none       fsync      added");
    println!(
        "  p50                             {:>8}   {:>8}   +{}   (budget: two fsyncs + 0.5 ms = {})",
        us(p50n),
        us(p50f),
        us(p50f.saturating_sub(p50n)),
        us(fsync_p50 * 2 + Duration::from_micros(500))
    );
    println!(
        "  p99                             {:>8}   {:>8}   +{}",
        us(load::percentile(&lat_none, 0.99)),
        us(load::percentile(&lat_fsync, 0.99)),
        us(load::percentile(&lat_fsync, 0.99).saturating_sub(load::percentile(&lat_none, 0.99)))
    );
    println!(
        "\nthroughput, {clients} clients, {rounds} rounds of {} s (the median round)",
        time.as_secs()
    );
    println!(
        "  calls/s: none {:.0}, fsync {:.0}: {:.0}%",
        rate(a),
        rate(b),
        ratio(&(*a, *b)) * 100.0
    );
    println!("  each round, none/fsync calls/s: {}", each.join(", "));
    println!(
        "  custody CPU per call: none {:.1} µs, fsync {:.1} µs",
        a.cpu_gateway.as_secs_f64() * 1e6 / a.calls as f64,
        b.cpu_gateway.as_secs_f64() * 1e6 / b.calls as f64
    );
    println!(
        "  this disk: 4 KiB write + fdatasync p50 {:.2} ms",
        fsync_p50.as_secs_f64() * 1e3
    );
    drop(gateways);
    drop(upstream);
    Ok(())
}
