//! CPU time and memory of a process, from /proc (Linux).

use std::time::Duration;

/// User + system CPU time of `pid` so far.
pub fn cpu_time(pid: u32) -> Duration {
    stat_cpu_time(&format!("/proc/{pid}/stat"))
}

/// The calling thread's CPU time (user and kernel), to the nanosecond.
pub fn thread_cpu() -> Duration {
    use nix::time::{ClockId, clock_gettime};
    clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID).map_or(Duration::ZERO, Duration::from)
}

/// User + system CPU time from a `stat` file of /proc (a process's or one of its threads').
fn stat_cpu_time(path: &str) -> Duration {
    let stat = std::fs::read_to_string(path).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after the name.
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|i| fields.get(*i).and_then(|f| f.parse::<u64>().ok()))
        .sum();
    let hz = clock_ticks();
    Duration::from_secs_f64(ticks as f64 / hz as f64)
}

fn clock_ticks() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .and_then(|t| u64::try_from(t).ok())
        .unwrap_or(100)
}

/// Resident set size of `pid` in bytes.
pub fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|kb| kb.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Each thread of `pid`: its name and its user + system CPU time so far.
pub fn threads(pid: u32) -> Vec<(u32, String, Duration)> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .map(|tid| {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/comm"))
                .unwrap_or_default()
                .trim()
                .to_string();
            (
                tid,
                comm,
                stat_cpu_time(&format!("/proc/{pid}/task/{tid}/stat")),
            )
        })
        .collect()
}

/// The busiest threads between two [`threads`] snapshots, as cores (CPU over `wall`): the
/// sequencer's alone, then the busiest other thread's.
pub fn thread_shares(
    before: &[(u32, String, Duration)],
    after: &[(u32, String, Duration)],
    wall: Duration,
) -> (f64, f64) {
    let mut sequencer = 0.0;
    let mut other: f64 = 0.0;
    for (tid, comm, cpu) in after {
        let was = before
            .iter()
            .find(|(t, _, _)| t == tid)
            .map_or(Duration::ZERO, |(_, _, c)| *c);
        let cores = cpu.saturating_sub(was).as_secs_f64() / wall.as_secs_f64();
        if comm.starts_with("custody-sequenc") {
            sequencer += cores;
        } else {
            other = other.max(cores);
        }
    }
    (sequencer, other)
}
