//! Audit-log benchmarks: group-commit append throughput, verification of a large log, and
//! restart time with a large log.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use custody::audit::{Audit, Direction, Draft, Kind, now_ns};
use custody::config::{AuditConfig, Durability};

pub fn audit_config(dir: &Path, durability: Durability) -> AuditConfig {
    AuditConfig {
        durability,
        origin: Some("bench.custody/log".into()),
        key_file: dir.join("log.key"),
        checkpoint_interval: Duration::from_secs(1),
        heartbeat_interval: Duration::from_secs(60),
        scrub_interval: None,
        retention: None,
        erasers: Vec::new(),
        tiles_prefix: "/log".into(),
        tiles_public: true,
        tiles_public_set: false,
        predecessor: None,
        store: None,
    }
}

/// A request entry whose message is `size` bytes of JSON.
pub fn draft(size: usize, n: u64) -> Draft {
    let pad = size.saturating_sub(120);
    let message = format!(
        "{{\"jsonrpc\":\"2.0\",\"id\":{n},\"method\":\"tools/call\",\"params\":{{\"name\":\"echo\",\"arguments\":{{\"text\":\"{}\"}}}}}}",
        "x".repeat(pad)
    );
    Draft {
        kind: Kind::Request,
        direction: Direction::ClientToUpstream,
        time_ns: now_ns(),
        endpoint: "bench".into(),
        session: Some("0123456789abcdef0123456789abcdef".into()),
        id: Some(n.to_string()),
        method: Some("tools/call".into()),
        target: Some("echo".into()),
        caller: custody::audit::ANONYMOUS.into(),
        request: None,
        detail: String::new(),
        message: Bytes::from(message),
        mark: None,
        headers: None,
        erase: None,
    }
}

/// `writers` tasks appending `size`-byte entries for `time`; returns entries appended.
pub async fn append_load(
    audit: &Arc<Audit>,
    writers: usize,
    size: usize,
    time: Duration,
) -> anyhow::Result<u64> {
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let (audit, done, stop) = (audit.clone(), done.clone(), stop.clone());
            tokio::spawn(async move {
                let mut n = w as u64 * 1_000_000_000;
                // Made once: the figure is the append's cost, not the generator's (a relayed
                // message arrives already in memory). Each clone shares the message's bytes.
                let template = sized_draft(1024, size, n);
                while !stop.load(Ordering::Relaxed) {
                    let mut d = template.clone();
                    d.id = Some(n.to_string());
                    d.time_ns = now_ns();
                    audit.append(d).await?;
                    n += 1;
                    done.fetch_add(1, Ordering::Relaxed);
                }
                anyhow::Ok(())
            })
        })
        .collect();
    tokio::time::sleep(time).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await??;
    }
    Ok(done.load(Ordering::Relaxed))
}

/// p50 of a 4 KiB write + fdatasync on the filesystem of `dir`.
pub fn fsync_p50(dir: &Path) -> anyhow::Result<Duration> {
    Ok(fsync_probe(dir)?.0)
}

/// A 4 KiB write + fdatasync on the filesystem of `dir`, 200 times: the p50 of its latency
/// and the CPU time (kernel included) the calling thread spent on each, on average.
pub fn fsync_probe(dir: &Path) -> anyhow::Result<(Duration, Duration)> {
    use std::io::Write;
    let path = dir.join("fsync-probe");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)?;
    let buf = vec![7u8; 4096];
    let mut lat = Vec::new();
    let cpu0 = crate::procstat::thread_cpu();
    for _ in 0..200 {
        let t = Instant::now();
        f.write_all(&buf)?;
        f.sync_data()?;
        lat.push(t.elapsed());
    }
    let cpu = (crate::procstat::thread_cpu() - cpu0) / 200;
    std::fs::remove_file(&path)?;
    lat.sort();
    Ok((lat[lat.len() / 2], cpu))
}

/// The CPU time one thread spends on what the entry format asks of an append of `draft`,
/// whatever stores it: encoding its header, drawing and hashing its payload's commitment,
/// hashing its leaf. The floor under the CPU of a durable append.
pub fn format_floor(draft: &Draft) -> Duration {
    const N: u32 = 20_000;
    let cpu0 = crate::procstat::thread_cpu();
    for _ in 0..N {
        std::hint::black_box(tlog::leaf_hash(&draft.leaf_bytes()));
    }
    (crate::procstat::thread_cpu() - cpu0) / N
}

/// An entry with a header of about `header` bytes (its detail padded) and a payload of
/// `payload` bytes: what the CPU-per-append figure is measured with.
pub fn sized_draft(header: usize, payload: usize, n: u64) -> Draft {
    let mut d = draft(payload, n);
    let pad = header.saturating_sub(220);
    d.detail = format!("{{\"note\":\"{}\"}}", "h".repeat(pad));
    d
}

pub async fn append(writers: usize, size: usize, seconds: u64) -> anyhow::Result<()> {
    let dir = tempfile::tempdir_in(std::env::current_dir()?)?;
    let opened = Audit::open(dir.path(), &audit_config(dir.path(), Durability::Fsync))?;
    let audit = opened.audit;
    // Warm up the database file.
    append_load(&audit, writers, size, Duration::from_millis(500)).await?;
    let cpu0 = crate::procstat::cpu_time(std::process::id());
    let threads0 = crate::procstat::threads(std::process::id());
    let started = Instant::now();
    let n = append_load(&audit, writers, size, Duration::from_secs(seconds)).await?;
    let elapsed = started.elapsed();
    let cpu = crate::procstat::cpu_time(std::process::id()) - cpu0;
    let (sequencer, _) = crate::procstat::thread_shares(
        &threads0,
        &crate::procstat::threads(std::process::id()),
        elapsed,
    );
    audit.close().await;
    let (fsync, fsync_cpu) = fsync_probe(dir.path())?;
    let floor = format_floor(&sized_draft(1024, size, 0));
    println!(
        "custody audit append benchmark: durable appends (SQLite WAL, synchronous=FULL, group commit), version-2 entries"
    );
    println!(
        "command: cargo run --release -p custody-bench -- append --writers {writers} --size {size} --seconds {seconds}"
    );
    println!(
        "  entries with a ~1 KiB header and a {size}-byte payload, {writers} concurrent writers, {seconds} s"
    );
    println!(
        "  {:.0} entries/s ({n} entries)",
        n as f64 / elapsed.as_secs_f64()
    );
    println!(
        "  CPU per durable append, amortised (the whole process: writers, sequencer, SQLite): {:.2} µs (target ≤ 5 µs)",
        cpu.as_secs_f64() * 1e6 / n.max(1) as f64
    );
    println!(
        "  the sequencer thread (the serial part): {:.2} of a core busy, {:.2} µs per append",
        sequencer,
        sequencer * elapsed.as_secs_f64() * 1e6 / n.max(1) as f64
    );
    println!(
        "  the entry format's own work per append (encode, payload commitment, leaf hash; one thread): {:.2} µs",
        floor.as_secs_f64() * 1e6
    );
    println!(
        "  this disk: 4 KiB write + fdatasync p50 {:.2} ms, {:.1} µs of CPU (kernel included) each",
        fsync.as_secs_f64() * 1e3,
        fsync_cpu.as_secs_f64() * 1e6
    );
    // No store can spend less than the format's work plus its share of one fdatasync, with
    // every writer's entry in each commit (at most `writers` of them wait at once).
    println!(
        "  the least any store could spend per append here (the format's work + one fdatasync shared by all {writers} writers): {:.2} µs",
        (floor + fsync_cpu / writers.max(1) as u32).as_secs_f64() * 1e6
    );
    Ok(())
}

/// Fills a log of `entries` entries of `size` bytes (fsync off while filling), with a
/// checkpoint every 100,000 entries and one at the end. Returns the data directory.
pub async fn fill(entries: u64, size: usize) -> anyhow::Result<tempfile::TempDir> {
    fill_with(entries, size, draft).await
}

/// As [`fill`], each entry made by `make(size, n)`.
pub async fn fill_with(
    entries: u64,
    size: usize,
    make: fn(usize, u64) -> Draft,
) -> anyhow::Result<tempfile::TempDir> {
    let dir = tempfile::tempdir_in(std::env::current_dir()?)?;
    let opened = Audit::open(dir.path(), &audit_config(dir.path(), Durability::None))?;
    let audit = opened.audit;
    let next = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let (audit, next) = (audit.clone(), next.clone());
            tokio::spawn(async move {
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= entries {
                        return anyhow::Ok(());
                    }
                    audit.append(make(size, n)).await?;
                    if (n + 1) % 100_000 == 0 {
                        audit.checkpoint().await?;
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await??;
    }
    audit.checkpoint().await?;
    audit.close().await;
    Ok(dir)
}

pub async fn verify(entries: u64, size: usize) -> anyhow::Result<()> {
    eprintln!("filling a log of {entries} entries with {size}-byte payloads…");
    let started = Instant::now();
    let dir = fill(entries, size).await?;
    eprintln!("filled in {:.1} s", started.elapsed().as_secs_f64());
    let key = std::fs::read_to_string(dir.path().join("log.key.pub"))?;
    let verifier = tlog::Verifier::from_key_string(&key)?;
    let reader = custody::store::SqliteReader::open(dir.path())?;
    let started = Instant::now();
    let sources = custody::audit::verify::stored(&reader)?;
    let summary = custody::audit::verify::check(&reader, verifier.clone(), &sources, &[])
        .map_err(|p| anyhow::anyhow!("{p}"))?;
    let local = started.elapsed();
    drop(reader);
    let bytes = std::fs::metadata(dir.path().join("log.sqlite"))?.len();

    let out = tempfile::tempdir_in(std::env::current_dir()?)?;
    let started = Instant::now();
    let exported = custody::tiles::export(dir.path(), out.path())?;
    let export = started.elapsed();

    let started = Instant::now();
    let from_dir = custody::tiles::verify(
        &custody::tiles::Source::Dir(out.path().to_path_buf()),
        verifier.clone(),
        &[],
        &[],
        false,
    )
    .await
    .map_err(|p| anyhow::anyhow!("{p}"))?;
    let dir_time = started.elapsed();

    // Over HTTP, from a gateway serving the log on loopback.
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n[auth]\nanonymous = true\n[audit]\norigin = \"bench.custody/log\"\ntiles_public = true\n[endpoints.e.upstream]\ntransport = \"stdio\"\ncommand = \"cat\"\n",
        dir.path().display()
    );
    let config = custody::config::Config::parse(&text, "bench.toml")?;
    let running = custody::http::start(&config).await?;
    let url = format!("http://{}/log/", running.addr);
    let started = Instant::now();
    let from_http =
        custody::tiles::verify(&custody::tiles::Source::Url(url), verifier, &[], &[], false)
            .await
            .map_err(|p| anyhow::anyhow!("{p}"))?;
    let http_time = started.elapsed();
    running.shutdown().await;

    println!(
        "custody verify benchmark: version-2 entries, {size}-byte payloads (each opened against its commitment locally)"
    );
    println!(
        "command: cargo run --release -p custody-bench -- verify --entries {entries} --size {size}"
    );
    println!(
        "  local (custody verify --data): {} entries ({:.0} MB on disk), {} checkpoints, {} payloads checked: {:.2} s (target ≤ 10 s)",
        summary.entries,
        bytes as f64 / 1e6,
        summary.checkpoints,
        summary.payloads_checked,
        local.as_secs_f64()
    );
    println!(
        "  export-tiles: {} tiles of {} entries written in {:.2} s (target ≤ 20 s)",
        exported.written,
        exported.size,
        export.as_secs_f64()
    );
    println!(
        "  verify --tiles DIR: {} entries, {} tiles in {:.2} s",
        from_dir.summary.entries,
        from_dir.tiles,
        dir_time.as_secs_f64()
    );
    println!(
        "  verify --url (a gateway's /log/ on loopback): {} entries, {} tiles in {:.2} s (target ≤ 30 s)",
        from_http.summary.entries,
        from_http.tiles,
        http_time.as_secs_f64()
    );
    Ok(())
}
