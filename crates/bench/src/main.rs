//! Benchmarks for custody. Each prints its figures with the command that produced them.
//!
//! `custody-bench relay`: `tools/call` round trips to the conformance fixture over HTTP,
//! directly and through the gateway, with the load generator, the gateway and the upstream each
//! in their own process on this machine. Build with `--release`.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod load;
mod procstat;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "custody benchmarks")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Relay overhead: latency at one client, throughput at many, gateway CPU and memory.
    Relay {
        /// Concurrent clients for the throughput phase.
        #[arg(long, default_value_t = 32)]
        clients: usize,
        /// Seconds per throughput phase.
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        /// Sequential calls measured for latency.
        #[arg(long, default_value_t = 5000)]
        calls: usize,
        /// Throughput rounds (each: direct, then through the gateway).
        #[arg(long, default_value_t = 3)]
        rounds: usize,
    },
    /// (internal) The conformance fixture over HTTP.
    #[command(hide = true)]
    Upstream { addr: SocketAddr },
    /// (internal) The gateway with a config file.
    #[command(hide = true)]
    Gateway { config: PathBuf },
    /// Load only, against a running server (for profiling it): prints calls/s.
    Load {
        addr: SocketAddr,
        path: String,
        #[arg(long, default_value_t = 32)]
        clients: usize,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // The gateway runs with its configured threads, as `custody serve` does; the upstream and
    // the load generator get the machine's default.
    if let Cmd::Gateway { config } = &cli.command {
        let mut config = custody::config::Config::load(config)?;
        if let Some(n) = std::env::var("GATEWAY_THREADS")
            .ok()
            .and_then(|v| v.parse().ok())
        {
            config.server.worker_threads = n;
        }
        return custody::cli::runtime(config.server.worker_threads)?.block_on(async {
            let running = custody::http::start(&config).await?;
            running.wait().await;
            Ok(())
        });
    }
    let rt = tokio::runtime::Runtime::new()?;
    match cli.command {
        Cmd::Upstream { addr } => rt.block_on(async {
            let engine = custody_mcp_server::Engine::new(custody_mcp_server::Catalog::Conformance);
            custody_mcp_server::http::serve(engine, addr).await?;
            Ok(())
        }),
        Cmd::Gateway { .. } => unreachable!("handled above"),
        Cmd::Load {
            addr,
            path,
            clients,
            seconds,
        } => rt.block_on(async {
            let time = Duration::from_secs(seconds);
            let calls = load::throughput(addr, &path, clients, time).await?;
            println!("{:.0} calls/s", calls as f64 / time.as_secs_f64());
            Ok(())
        }),
        Cmd::Relay {
            clients,
            seconds,
            calls,
            rounds,
        } => rt.block_on(relay(
            clients,
            Duration::from_secs(seconds),
            calls,
            rounds.max(1),
        )),
    }
}

/// A child process that is killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_addr() -> anyhow::Result<SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

fn spawn_self(args: &[&str]) -> anyhow::Result<Proc> {
    let exe = std::env::current_exe()?;
    let child = Command::new(exe)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    Ok(Proc(child))
}

async fn wait_listening(addr: SocketAddr) -> anyhow::Result<()> {
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    anyhow::bail!("nothing listening on {addr}")
}

struct Phase {
    calls: u64,
    wall: Duration,
    cpu_self: Duration,
    cpu_gateway: Duration,
    cpu_upstream: Duration,
    rss_gateway_max: u64,
}

async fn measure(
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

fn us(d: Duration) -> String {
    format!("{:.0} µs", d.as_secs_f64() * 1e6)
}

fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

async fn relay(clients: usize, time: Duration, calls: usize, rounds: usize) -> anyhow::Result<()> {
    let work = std::env::temp_dir().join(format!("custody-bench-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let up_addr = free_addr()?;
    let upstream = spawn_self(&["upstream", &up_addr.to_string()])?;
    wait_listening(up_addr)
        .await
        .context("starting the upstream")?;
    let gw_addr = free_addr()?;
    let config = work.join("custody.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"{gw_addr}\"\ndata_dir = \"{}\"\n\n[endpoints.bench.upstream]\ntransport = \"http\"\nurl = \"http://{up_addr}/mcp\"\n",
            work.join("data").display()
        ),
    )?;
    let gateway = spawn_self(&["gateway", config.to_str().unwrap_or_default()])?;
    wait_listening(gw_addr)
        .await
        .context("starting the gateway")?;
    let (gw_pid, up_pid) = (gateway.0.id(), upstream.0.id());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_idle = procstat::rss(gw_pid);

    // Latency at one client, direct and through the gateway, interleaved.
    let (mut direct, mut via) =
        load::latencies((up_addr, "/mcp"), (gw_addr, "/mcp/bench"), 500, calls).await?;
    direct.sort();
    via.sort();
    let rss_after_warm = procstat::rss(gw_pid);

    // Throughput at many clients: direct and through the gateway, alternating, `rounds` times;
    // the round with the median ratio is reported (the machine is shared, so single runs vary).
    let mut runs = Vec::new();
    for _ in 0..rounds {
        let d = measure(up_addr, "/mcp", clients, time, gw_pid, up_pid).await?;
        let g = measure(gw_addr, "/mcp/bench", clients, time, gw_pid, up_pid).await?;
        runs.push((d, g));
    }
    let ratio_of = |(d, g): &(Phase, Phase)| {
        (g.calls as f64 / g.wall.as_secs_f64()) / (d.calls as f64 / d.wall.as_secs_f64())
    };
    let rounds_text: Vec<String> = runs
        .iter()
        .map(|r| {
            format!(
                "{:.0}/{:.0} ({:.0}%)",
                r.0.calls as f64 / r.0.wall.as_secs_f64(),
                r.1.calls as f64 / r.1.wall.as_secs_f64(),
                ratio_of(r) * 100.0
            )
        })
        .collect();
    runs.sort_by(|a, b| ratio_of(a).total_cmp(&ratio_of(b)));
    let (d, g) = runs.swap_remove(runs.len() / 2);

    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let share =
        |cpu: Duration, wall: Duration| 100.0 * cpu.as_secs_f64() / (wall.as_secs_f64() * cores);
    let rate = |p: &Phase| p.calls as f64 / p.wall.as_secs_f64();
    let (p50d, p50g) = (load::percentile(&direct, 0.5), load::percentile(&via, 0.5));
    let (p99d, p99g) = (
        load::percentile(&direct, 0.99),
        load::percentile(&via, 0.99),
    );

    println!(
        "custody relay benchmark: tools/call (2026-07-28, JSON answers) to the conformance fixture over HTTP"
    );
    println!(
        "command: cargo run --release -p custody-bench -- relay --clients {clients} --seconds {} --calls {calls} --rounds {rounds}",
        time.as_secs()
    );
    println!("machine: {cores} CPUs, shared by the load generator, custody and the upstream\n");
    println!("latency, 1 client, {calls} calls      direct      via custody   added");
    println!(
        "  p50                              {:>9}   {:>9}    +{}",
        us(p50d),
        us(p50g),
        us(p50g.saturating_sub(p50d))
    );
    println!(
        "  p99                              {:>9}   {:>9}    +{}",
        us(p99d),
        us(p99g),
        us(p99g.saturating_sub(p99d))
    );
    println!(
        "\nthroughput, {clients} clients, {rounds} rounds of {} s (the median round)  direct      via custody   ratio",
        time.as_secs()
    );
    println!(
        "  calls/s                          {:>9.0}   {:>9.0}    {:.0}%",
        rate(&d),
        rate(&g),
        100.0 * rate(&g) / rate(&d)
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
        "  each round, direct/via calls/s: {}",
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
