//! Scaling with cores: the gateway pinned to 1, 2, 4, … cores of its own (its worker threads as
//! many), the upstream and the load generator each pinned to cores of their own, so that each
//! core added is the gateway's alone and the other two processes' shares show when they, not
//! the gateway, set the pace.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;

use crate::procstat;
use crate::relay::{Phase, Proc, free_addr, gateway_config, measure, wait_listening};

/// The environment variable a benchmark process pins itself by (a CPU list such as `0-3`), read
/// before its runtime starts so that every thread it makes inherits the set.
pub(crate) const PIN_VAR: &str = "CUSTODY_BENCH_CPUS";

/// Pins this process to the CPUs `PIN_VAR` lists, if it is set.
pub(crate) fn pin_from_env() -> anyhow::Result<()> {
    match std::env::var(PIN_VAR) {
        Ok(list) => pin(&parse_cpus(&list)?),
        Err(_) => Ok(()),
    }
}

/// Pins this process (the calling thread and every thread it starts later) to `cpus`.
pub(crate) fn pin(cpus: &[usize]) -> anyhow::Result<()> {
    let mut set = nix::sched::CpuSet::new();
    for &cpu in cpus {
        set.set(cpu)
            .with_context(|| format!("CPU {cpu} is beyond what this system can name"))?;
    }
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)
        .with_context(|| format!("pinning to CPUs {cpus:?}"))
}

/// `0-3,8` → `[0, 1, 2, 3, 8]`.
pub(crate) fn parse_cpus(list: &str) -> anyhow::Result<Vec<usize>> {
    let mut cpus = Vec::new();
    for part in list.split(',').filter(|p| !p.is_empty()) {
        let bad = || format!("{PIN_VAR}: {part:?} is not a CPU or a range such as 0-3");
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) = (
                    a.trim().parse().with_context(bad)?,
                    b.trim().parse().with_context(bad)?,
                );
                anyhow::ensure!(a <= b, "{}", bad());
                cpus.extend(a..=b);
            }
            None => cpus.push(part.trim().parse().with_context(bad)?),
        }
    }
    anyhow::ensure!(!cpus.is_empty(), "{PIN_VAR} names no CPU");
    Ok(cpus)
}

fn list(cpus: &[usize]) -> String {
    match (cpus.first(), cpus.last()) {
        (Some(a), Some(b)) if b - a + 1 == cpus.len() && a != b => format!("{a}-{b}"),
        _ => cpus
            .iter()
            .map(usize::to_string)
            .collect::<Vec<_>>()
            .join(","),
    }
}

/// Which CPUs each process gets: the gateway the first `max(threads)` of those this process may
/// use, then the upstream's, then the load generator's (this process).
pub(crate) struct Layout {
    pub(crate) gateway: Vec<usize>,
    pub(crate) upstream: Vec<usize>,
    pub(crate) load: Vec<usize>,
    /// Nothing pinned: every process may run on every CPU (a machine with too few cores to
    /// give each its own, such as a 2-core VM); the gateway still gets its threads.
    pub(crate) shared: bool,
    /// The CPUs this process could use when it started.
    pub(crate) cpus: usize,
}

/// The CPUs this process may run on (its affinity mask: a cpuset or `taskset` narrows it).
pub(crate) fn allowed_cpus() -> anyhow::Result<Vec<usize>> {
    let set = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0))
        .context("reading this process's CPU affinity")?;
    Ok((0..nix::sched::CpuSet::count())
        .filter(|&cpu| set.is_set(cpu).unwrap_or(false))
        .collect())
}

/// The gateway's steps: at least one, each at least one thread, each more than the last (the
/// per-core figures compare a step with the one before).
pub(crate) fn check_threads(threads: &[usize]) -> anyhow::Result<()> {
    anyhow::ensure!(
        !threads.is_empty() && threads[0] > 0 && threads.windows(2).all(|w| w[0] < w[1]),
        "--threads {threads:?}: give one or more thread counts, each above 0 and above the one before (such as 1,2,4,8)"
    );
    Ok(())
}

impl Layout {
    pub(crate) fn new(
        threads: &[usize],
        upstream: usize,
        load: usize,
        allowed: &[usize],
    ) -> anyhow::Result<Self> {
        check_threads(threads)?;
        let most = threads.iter().copied().max().unwrap_or(1);
        anyhow::ensure!(
            upstream > 0 && load > 0,
            "the upstream and the load generator need at least one core each"
        );
        let cores = allowed.len();
        anyhow::ensure!(
            most + upstream + load <= cores,
            "{most} gateway cores + {upstream} upstream + {load} load generator need {} CPUs; this process may use {cores}: lower --threads, --upstream-cores or --load-cores, or pass --shared-cores",
            most + upstream + load
        );
        Ok(Self {
            gateway: allowed[..most].to_vec(),
            upstream: allowed[most..most + upstream].to_vec(),
            load: allowed[most + upstream..most + upstream + load].to_vec(),
            shared: false,
            cpus: cores,
        })
    }

    /// Every process on every CPU in `allowed`.
    pub(crate) fn shared(threads: &[usize], allowed: &[usize]) -> anyhow::Result<Self> {
        check_threads(threads)?;
        Ok(Self {
            gateway: allowed.to_vec(),
            upstream: allowed.to_vec(),
            load: allowed.to_vec(),
            shared: true,
            cpus: allowed.len(),
        })
    }
}

/// Starts this benchmark as `args`, pinned to `cpus` (none: unpinned), its error output in
/// `log` (read back by [`started`] when it does not come up).
fn spawn_pinned(
    args: &[&str],
    cpus: &[usize],
    threads: Option<usize>,
    log: &std::path::Path,
) -> anyhow::Result<Proc> {
    let mut cmd = std::process::Command::new(std::env::current_exe()?);
    cmd.args(args);
    if !cpus.is_empty() {
        cmd.env(PIN_VAR, list(cpus));
    }
    cmd.stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(log)?);
    if let Some(n) = threads {
        cmd.env("GATEWAY_THREADS", n.to_string());
    }
    Ok(Proc(cmd.spawn()?))
}

/// Waits for `what` to listen on `addr`; if it does not, the error carries what it printed.
async fn started(addr: SocketAddr, what: &str, log: &std::path::Path) -> anyhow::Result<()> {
    wait_listening(addr).await.with_context(|| {
        let said = std::fs::read_to_string(log).unwrap_or_default();
        let tail: Vec<&str> = said.lines().rev().take(5).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        format!("starting the {what}: {}", tail.join(" | "))
    })
}

struct Step {
    threads: usize,
    direct: Phase,
    via: Phase,
    /// The sequencer thread's CPU over the wall time (1.0: the serial part is saturated).
    sequencer: f64,
    /// The busiest other thread's.
    busiest: f64,
}

fn rate(p: &Phase) -> f64 {
    p.calls as f64 / p.wall.as_secs_f64()
}

fn cores_used(cpu: Duration, wall: Duration) -> f64 {
    cpu.as_secs_f64() / wall.as_secs_f64()
}

pub(crate) async fn scaling(
    threads: Vec<usize>,
    layout: Layout,
    clients: usize,
    time: Duration,
    durability: &str,
) -> anyhow::Result<()> {
    let work = tempfile::tempdir()?;
    let up_addr = free_addr()?;
    let pinned = |cpus: &[usize]| {
        if layout.shared {
            Vec::new()
        } else {
            cpus.to_vec()
        }
    };
    let up_log = work.path().join("upstream.log");
    let upstream = spawn_pinned(
        &["upstream", &up_addr.to_string()],
        &pinned(&layout.upstream),
        None,
        &up_log,
    )?;
    started(up_addr, "upstream", &up_log).await?;
    let up_pid = upstream.0.id();
    let mut steps = Vec::new();
    for &n in &threads {
        let gw_addr: SocketAddr = free_addr()?;
        let data = work.path().join(format!("data-{n}"));
        let config = work.path().join(format!("custody-{n}.toml"));
        gateway_config(&config, gw_addr, &data, up_addr, durability)?;
        let gw_log = work.path().join(format!("gateway-{n}.log"));
        let gateway = spawn_pinned(
            &["gateway", config.to_str().unwrap_or_default()],
            &pinned(&layout.gateway[..n.min(layout.gateway.len())]),
            Some(n),
            &gw_log,
        )?;
        started(gw_addr, "gateway", &gw_log).await?;
        let gw_pid = gateway.0.id();
        // A short warm-up (connections, caches, the log's first pages), then direct and via.
        measure(
            gw_addr,
            "/mcp/bench",
            clients,
            Duration::from_secs(1),
            gw_pid,
            up_pid,
        )
        .await?;
        let direct = measure(up_addr, "/mcp", clients, time, gw_pid, up_pid).await?;
        let threads0 = procstat::threads(gw_pid);
        let via = measure(gw_addr, "/mcp/bench", clients, time, gw_pid, up_pid).await?;
        let (sequencer, busiest) =
            procstat::thread_shares(&threads0, &procstat::threads(gw_pid), via.wall);
        eprintln!(
            "{n} gateway core(s): direct {:.0}/s, via custody {:.0}/s",
            rate(&direct),
            rate(&via)
        );
        steps.push(Step {
            threads: n,
            direct,
            via,
            sequencer,
            busiest,
        });
        drop(gateway);
    }
    drop(upstream);
    report(&steps, &layout, clients, time, durability, &threads);
    Ok(())
}

fn report(
    steps: &[Step],
    layout: &Layout,
    clients: usize,
    time: Duration,
    durability: &str,
    threads: &[usize],
) {
    // This process is pinned to the load generator's CPUs by now: the count from before.
    let cores = layout.cpus;
    let names: Vec<String> = threads.iter().map(usize::to_string).collect();
    println!(
        "custody scaling benchmark: tools/call through the gateway with 1..n worker threads, each step pinned to as many cores of its own unless --shared-cores, audit durability {durability}"
    );
    println!(
        "command: cargo run --release -p custody-bench -- scaling --threads {} {} --clients {clients} --seconds {} --durability {durability}",
        names.join(","),
        if layout.shared {
            "--shared-cores".to_string()
        } else {
            format!(
                "--upstream-cores {} --load-cores {}",
                layout.upstream.len(),
                layout.load.len()
            )
        },
        time.as_secs()
    );
    if layout.shared {
        println!(
            "machine: {cores} CPUs, shared by the load generator, custody and the upstream (--shared-cores: nothing pinned)\n"
        );
    } else {
        println!(
            "machine: {cores} CPUs; gateway on CPUs {}, upstream on {}, load generator on {}\n",
            list(&layout.gateway),
            list(&layout.upstream),
            list(&layout.load)
        );
    }
    println!(
        "{}   direct/s    via/s   of direct   per added core   CPU/call   cores busy: gateway  upstream  load   sequencer  busiest other thread",
        if layout.shared {
            "gateway threads"
        } else {
            "  gateway cores"
        }
    );
    let mut previous: Option<&Step> = None;
    for s in steps {
        let gain = previous.map_or("".to_string(), |p| {
            let per_core = rate(&p.via) / p.threads as f64;
            let added = (s.threads - p.threads) as f64;
            format!("{:.2}x", (rate(&s.via) - rate(&p.via)) / (added * per_core))
        });
        println!(
            "{:>15}   {:>8.0}   {:>6.0}   {:>8.0}%   {:>14}   {:>5.1} µs   {:>8.2} of {:<3} {:>7.2}  {:>5.2}   {:>9.2}  {:>6.2}",
            s.threads,
            rate(&s.direct),
            rate(&s.via),
            100.0 * rate(&s.via) / rate(&s.direct),
            gain,
            s.via.cpu_gateway.as_secs_f64() * 1e6 / s.via.calls.max(1) as f64,
            cores_used(s.via.cpu_gateway, s.via.wall),
            s.threads,
            cores_used(s.via.cpu_upstream, s.via.wall),
            cores_used(s.via.cpu_self, s.via.wall),
            s.sequencer,
            s.busiest,
        );
        previous = Some(s);
    }
    println!(
        "\n'per added core': the throughput each added core contributed, as a share of what one core gave at the step before (the target is at least 0.70x)."
    );
    let owned = if layout.shared {
        format!("All three share the machine's {cores} CPUs.")
    } else {
        format!(
            "The upstream has {} core(s), the load generator {}.",
            layout.upstream.len(),
            layout.load.len()
        )
    };
    println!(
        "'cores busy': CPU time over wall time through custody; a process near its cores' count is what set the pace. {owned} 'sequencer': the log's one writing thread (near 1.00: the serial part sets the pace)."
    );
    if let Some(even) = steps
        .iter()
        .find(|s| s.threads == layout.upstream.len() && !layout.shared)
    {
        println!(
            "with as many gateway cores as the upstream's ({}): custody {:.0}% of direct at {clients} clients (the target is at least 50% at 64)",
            even.threads,
            100.0 * rate(&even.via) / rate(&even.direct)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_parse_and_refuse_nonsense() {
        assert_eq!(parse_cpus("0-3,8").unwrap(), vec![0, 1, 2, 3, 8]);
        assert_eq!(parse_cpus("5").unwrap(), vec![5]);
        assert!(parse_cpus("3-1").is_err());
        assert!(parse_cpus("x").is_err());
        assert!(parse_cpus("").is_err());
        assert_eq!(list(&[0, 1, 2, 3]), "0-3");
        assert_eq!(list(&[4]), "4");
        assert_eq!(list(&[1, 5]), "1,5");
    }

    #[test]
    fn a_layout_that_does_not_fit_is_refused() {
        let all: Vec<usize> = (0..16).collect();
        let l = Layout::new(&[1, 2, 4, 8], 4, 4, &all).unwrap();
        assert_eq!(l.gateway, (0..8).collect::<Vec<_>>());
        assert_eq!(l.upstream, vec![8, 9, 10, 11]);
        assert_eq!(l.load, vec![12, 13, 14, 15]);
        assert_eq!(l.cpus, 16);
        let err = Layout::new(&[1, 2], 1, 1, &[0, 1])
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("this process may use 2"), "{err}");
    }

    #[test]
    fn a_layout_takes_the_cpus_this_process_may_use() {
        // As under `taskset -c 8-15`: CPUs 8 to 15, not 0 to 7.
        let allowed: Vec<usize> = (8..16).collect();
        let l = Layout::new(&[1, 2, 4], 2, 2, &allowed).unwrap();
        assert_eq!(l.gateway, vec![8, 9, 10, 11]);
        assert_eq!(l.upstream, vec![12, 13]);
        assert_eq!(l.load, vec![14, 15]);
    }

    #[test]
    fn thread_steps_must_grow() {
        for bad in [&[][..], &[0, 1][..], &[2, 1][..], &[2, 2][..]] {
            let err = check_threads(bad).err().unwrap().to_string();
            assert!(err.contains("above the one before"), "{bad:?}: {err}");
            assert!(Layout::shared(bad, &[0, 1]).is_err(), "{bad:?}");
        }
        assert!(check_threads(&[1, 2, 4, 8]).is_ok());
    }
}
