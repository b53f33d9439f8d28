//! Benchmarks for custody. Each prints its figures with the command that produced them.
//!
//! `custody-bench relay`: `tools/call` round trips to the conformance fixture over HTTP,
//! directly and through the gateway, with the load generator, the gateway and the upstream each
//! in their own process on this machine. Build with `--release`.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod audit;
mod auth;
mod bare;
mod explorer;
mod explorer_pages;
mod flood;
mod load;
mod mask;
mod messages;
mod peers;
mod policy;
mod postgres;
mod procstat;
mod relay;
mod replicas;
mod scaling;
mod sessions;
mod witnessing;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

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
        /// The gateway's audit durability: fsync (the default) or none.
        #[arg(long, default_value = "fsync")]
        durability: String,
    },
    /// The relay through one replica of a PostgreSQL log, then two: calls/s, ratio, CPU.
    RelayReplicas {
        #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
        url: String,
        #[arg(long, default_value_t = 64)]
        clients: usize,
        #[arg(long, default_value_t = 5)]
        seconds: u64,
    },
    /// Durable appends into the shared PostgreSQL log, replicas committing batches: entries/s.
    Postgres {
        /// A PostgreSQL the benchmark may create a database in.
        #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
        url: String,
        #[arg(long, default_value_t = 2)]
        replicas: usize,
        #[arg(long, default_value_t = 64)]
        writers: usize,
        /// Entry size in bytes.
        #[arg(long, default_value_t = 1024)]
        size: usize,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Through the audit log (an Audit on PgStore per replica) instead of the store alone.
        #[arg(long)]
        through_audit: bool,
        /// With --through-audit: each replica a process of its own.
        #[arg(long)]
        processes: bool,
    },
    /// One replica process of `postgres --through-audit --processes` (started by it).
    #[command(hide = true)]
    PostgresReplica {
        #[arg(long)]
        db: String,
        #[arg(long)]
        name: String,
        #[arg(long)]
        writers: usize,
        #[arg(long)]
        size: usize,
        #[arg(long)]
        seconds: u64,
    },
    /// The relay benchmark with the peer gateways installed by crates/bench/peers/install.sh
    /// beside custody, in one run.
    Peers {
        /// Where install.sh put the peers.
        #[arg(long)]
        cache: PathBuf,
        #[arg(long, default_value_t = 32)]
        clients: usize,
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        #[arg(long, default_value_t = 2000)]
        calls: usize,
        #[arg(long, default_value_t = 3)]
        rounds: usize,
    },
    /// Memory per idle session-based session (an HTTP upstream).
    Sessions {
        #[arg(long, default_value_t = 2000)]
        count: usize,
    },
    /// Durable audit appends with group commit: entries/s.
    Append {
        #[arg(long, default_value_t = 64)]
        writers: usize,
        /// Entry size in bytes.
        #[arg(long, default_value_t = 1024)]
        size: usize,
        #[arg(long, default_value_t = 5)]
        seconds: u64,
    },
    /// The explorer's search index on a large log of CI traffic: build time and the p95 of
    /// filtered queries.
    Explorer {
        #[arg(long, default_value_t = 1_000_000)]
        entries: u64,
        #[arg(long, default_value_t = 256)]
        size: usize,
        /// Queries timed per filter.
        #[arg(long, default_value_t = 200)]
        samples: u32,
    },
    /// `custody verify` on a large log.
    Verify {
        #[arg(long, default_value_t = 1_000_000)]
        entries: u64,
        #[arg(long, default_value_t = 1024)]
        size: usize,
    },
    /// Time from start to serving with a large log.
    Restart {
        #[arg(long, default_value_t = 1_000_000)]
        entries: u64,
        #[arg(long, default_value_t = 1024)]
        size: usize,
    },
    /// The relay with the audit log durable (fsync) against `durability = "none"`.
    AuditRelay {
        #[arg(long, default_value_t = 32)]
        clients: usize,
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        #[arg(long, default_value_t = 3000)]
        calls: usize,
        #[arg(long, default_value_t = 3)]
        rounds: usize,
    },
    /// Authentication: token-cache hits, full signature checks per algorithm, and the
    /// difference a token makes to a round trip through the gateway.
    Auth {
        #[arg(long, default_value_t = 5000)]
        calls: usize,
    },
    /// A forged-token flood: log growth, and a real job's latency idle and under the flood.
    Flood {
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// Flooding connections (each reconnects when the gateway closes it).
        #[arg(long, default_value_t = 64)]
        connections: usize,
        /// Loopback source addresses they spread over (127.0.0.2 on).
        #[arg(long, default_value_t = 32)]
        addresses: u8,
        /// The job's calls measured idle.
        #[arg(long, default_value_t = 2000)]
        calls: usize,
    },
    /// Authorization: one policy decision with many policies loaded.
    Policy {
        #[arg(long, default_value_t = 1000)]
        policies: usize,
        #[arg(long, default_value_t = 10000)]
        calls: usize,
    },
    /// Masking: a tool result of SIZE bytes through both copies with every detector on.
    Mask {
        #[arg(long, default_value_t = 65536)]
        size: usize,
        #[arg(long, default_value_t = 200)]
        rounds: usize,
    },
    /// (internal) The flood of `flood`, in a process of its own.
    #[command(hide = true)]
    FloodGen {
        addr: SocketAddr,
        #[arg(long)]
        connections: usize,
        #[arg(long)]
        addresses: u8,
        #[arg(long)]
        seconds: u64,
    },
    /// The strict scan every message goes through: ns per KiB, next to serde.
    Scan {
        #[arg(long, default_value_t = 65536)]
        size: usize,
        #[arg(long, default_value_t = 2000)]
        rounds: usize,
    },
    /// The gateway's peak memory for one JSON-RPC batch (2025-03-26 session).
    Batch {
        #[arg(long, default_value_t = 64)]
        messages: usize,
        /// Total size of the batch in bytes.
        #[arg(long, default_value_t = 4 * 1024 * 1024)]
        size: usize,
        /// The gateway's `max_batch`.
        #[arg(long, default_value_t = 64)]
        max_batch: usize,
    },
    /// (internal) The conformance fixture over HTTP.
    #[command(hide = true)]
    Upstream { addr: SocketAddr },
    /// (internal) A plain proxy hop to `upstream` (the relay benchmark's floor).
    #[command(hide = true)]
    BareProxy {
        addr: SocketAddr,
        upstream: SocketAddr,
    },
    /// (internal) The conformance fixture over stdio.
    #[command(hide = true)]
    StdioUpstream,
    /// (internal) The gateway with a config file.
    #[command(hide = true)]
    Gateway { config: PathBuf },
    /// Two local witnesses in `required` mode: relay throughput against no witnesses, and the
    /// time from an entry's commit to a published checkpoint with both cosignatures.
    Witness {
        #[arg(long, default_value_t = 32)]
        clients: usize,
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Calls whose wait for a cosigned checkpoint is measured.
        #[arg(long, default_value_t = 200)]
        samples: usize,
    },
    /// (internal) A built-in witness: DIR ADDR LOG_VKEY.
    #[command(hide = true)]
    WitnessServer {
        dir: PathBuf,
        addr: SocketAddr,
        accept: String,
    },
    /// Throughput through the gateway pinned to 1, 2, 4, … cores of its own, against the
    /// upstream direct, with each process's CPU: how the relay scales with cores.
    Scaling {
        /// The gateway's core counts, one step each (worker threads = cores).
        #[arg(long, value_delimiter = ',', default_value = "1,2")]
        threads: Vec<usize>,
        /// Cores of the upstream's own.
        #[arg(long, default_value_t = 4)]
        upstream_cores: usize,
        /// Cores of the load generator's own.
        #[arg(long, default_value_t = 4)]
        load_cores: usize,
        #[arg(long, default_value_t = 64)]
        clients: usize,
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        #[arg(long, default_value = "fsync")]
        durability: String,
        /// Pin nothing: all three processes share every CPU (for a machine with too few cores
        /// to give each its own).
        #[arg(long)]
        shared_cores: bool,
    },
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
    // A process the scaling benchmark started pins itself before any thread is made.
    scaling::pin_from_env()?;
    if let Cmd::Scaling {
        threads,
        upstream_cores,
        load_cores,
        clients,
        seconds,
        durability,
        shared_cores,
    } = cli.command
    {
        let allowed = scaling::allowed_cpus()?;
        let layout = if shared_cores {
            scaling::Layout::shared(&threads, &allowed)?
        } else {
            let layout = scaling::Layout::new(&threads, upstream_cores, load_cores, &allowed)?;
            scaling::pin(&layout.load)?;
            layout
        };
        return tokio::runtime::Runtime::new()?.block_on(scaling::scaling(
            threads,
            layout,
            clients,
            Duration::from_secs(seconds),
            &durability,
        ));
    }
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
        Cmd::BareProxy { addr, upstream } => rt.block_on(bare::serve(addr, upstream)),
        Cmd::StdioUpstream => rt.block_on(async {
            let engine = custody_mcp_server::Engine::new(custody_mcp_server::Catalog::Conformance);
            custody_mcp_server::stdio::serve(engine).await?;
            Ok(())
        }),
        Cmd::Gateway { .. } | Cmd::Scaling { .. } => unreachable!("handled above"),
        Cmd::Witness {
            clients,
            seconds,
            rounds,
            samples,
        } => rt.block_on(witnessing::run(clients, seconds, rounds, samples)),
        Cmd::WitnessServer { dir, addr, accept } => {
            rt.block_on(witnessing::serve_witness(&dir, addr, &accept))
        }
        Cmd::Append {
            writers,
            size,
            seconds,
        } => rt.block_on(audit::append(writers, size, seconds)),
        Cmd::Sessions { count } => rt.block_on(sessions::sessions(count)),
        Cmd::Peers {
            cache,
            clients,
            seconds,
            calls,
            rounds,
        } => rt.block_on(peers::peers(
            cache,
            clients,
            Duration::from_secs(seconds),
            calls,
            rounds,
        )),
        Cmd::Postgres {
            url,
            replicas,
            writers,
            size,
            seconds,
            through_audit,
            processes,
        } => {
            if through_audit && processes {
                postgres::processes(&url, replicas, writers, size, seconds)
            } else if through_audit {
                postgres::through_audit(&url, replicas, writers, size, seconds)
            } else {
                postgres::run(&url, replicas, writers, size, seconds)
            }
        }
        Cmd::PostgresReplica {
            db,
            name,
            writers,
            size,
            seconds,
        } => postgres::replica_process(&db, &name, writers, size, seconds),
        Cmd::RelayReplicas {
            url,
            clients,
            seconds,
        } => rt.block_on(replicas::run(&url, clients, seconds)),
        Cmd::Auth { calls } => rt.block_on(auth::run(calls)),
        Cmd::Flood {
            seconds,
            connections,
            addresses,
            calls,
        } => rt.block_on(flood::run(seconds, connections, addresses, calls)),
        Cmd::FloodGen {
            addr,
            connections,
            addresses,
            seconds,
        } => rt.block_on(flood::generate(addr, connections, addresses, seconds)),
        Cmd::Mask { size, rounds } => mask::run(size, rounds),
        Cmd::Scan { size, rounds } => messages::scan(size, rounds),
        Cmd::Batch {
            messages,
            size,
            max_batch,
        } => rt.block_on(messages::batch(messages, size, max_batch)),
        Cmd::Policy { policies, calls } => policy::run(policies, calls),
        Cmd::Verify { entries, size } => rt.block_on(audit::verify(entries, size)),
        Cmd::Explorer {
            entries,
            size,
            samples,
        } => rt.block_on(explorer::run(entries, size, samples)),
        Cmd::Restart { entries, size } => rt.block_on(relay::restart(entries, size)),
        Cmd::AuditRelay {
            clients,
            seconds,
            calls,
            rounds,
        } => rt.block_on(relay::audit_relay(
            clients,
            Duration::from_secs(seconds),
            calls,
            rounds.max(1),
        )),
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
            durability,
        } => rt.block_on(relay::relay(
            clients,
            Duration::from_secs(seconds),
            calls,
            rounds.max(1),
            &durability,
        )),
    }
}
