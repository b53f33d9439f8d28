//! `custody-bench postgres`: durable appends into the shared PostgreSQL log
//! (`custody::store::postgres`), as replicas make them: each replica has one connection and one
//! committer that takes every entry its writers have queued (up to 4,096) and commits them as
//! one batch, its indices taken inside the commit under the sequencing row's lock; writers wait
//! for their entry's commit before writing the next. Reports entries/s over all replicas and
//! checks that the indices are contiguous afterwards.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use custody::store::postgres::{Bounds, NewEntry, PgLog};

const MAX_BATCH: usize = 4096;

type Ack = mpsc::SyncSender<u64>;

/// A database of the benchmark's own: its name, URL and an admin connection.
pub(crate) fn database(url: &str) -> anyhow::Result<(String, String, postgres::Client)> {
    let name = format!("custody_bench_{}", std::process::id());
    let mut admin = postgres::Client::connect(url, postgres::NoTls)?;
    admin.batch_execute(&format!("DROP DATABASE IF EXISTS {name}"))?;
    admin.batch_execute(&format!("CREATE DATABASE {name}"))?;
    let mut db_url = url::Url::parse(url)?;
    db_url.set_path(&name);
    Ok((name, db_url.to_string(), admin))
}

/// Checks that the benchmark's log has no hole, says so, and drops its database.
fn check_and_drop(db_url: &str, name: &str, admin: &mut postgres::Client) -> anyhow::Result<()> {
    let mut c = postgres::Client::connect(db_url, postgres::NoTls)?;
    let row = c.query_one("SELECT count(*), coalesce(max(idx), -1) FROM entries", &[])?;
    let (count, max): (i64, i64) = (row.get(0), row.get(1));
    anyhow::ensure!(
        count == max + 1,
        "indices are not contiguous: {count} entries, max {max}"
    );
    println!("indices contiguous: {count} entries");
    drop(c);
    admin.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))?;
    Ok(())
}

/// The same load through the audit log itself: each replica an `Audit` on `PgStore` (entries
/// encoded, hashed, integrated into the tree, payloads committed), its writers appending as
/// the relay does.
pub fn through_audit(
    url: &str,
    replicas: usize,
    writers: usize,
    size: usize,
    seconds: u64,
) -> anyhow::Result<()> {
    use custody::audit::Audit;
    use custody::store::postgres::PgStore;
    let (name, db_url, mut admin) = database(url)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let (n, took, cpu) = rt.block_on(async {
        let mut audits = Vec::new();
        let mut dirs = Vec::new();
        for r in 0..replicas {
            let dir = tempfile::tempdir()?;
            let signer = tlog::Signer::new("bench.custody/shared", [3u8; 32])
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let seal = signer.derive_secret(custody::store::postgres::ENTRY_SEAL);
            let store = PgStore::connect(&db_url, &format!("replica-{r}"), seal)?;
            let config = crate::audit::audit_config(dir.path(), custody::config::Durability::Fsync);
            audits.push(Audit::with_store(store, signer, true, dir.path(), &config)?.audit);
            dirs.push(dir);
        }
        let per = writers / replicas.max(1);
        join_load(&audits, per, size, Duration::from_millis(500)).await?;
        let cpu0 = crate::procstat::cpu_time(std::process::id());
        let t0 = Instant::now();
        let n = join_load(&audits, per, size, Duration::from_secs(seconds)).await?;
        let took = t0.elapsed();
        let cpu = crate::procstat::cpu_time(std::process::id()) - cpu0;
        for a in &audits {
            a.close().await;
        }
        anyhow::Ok((n, took, cpu))
    })?;
    drop(rt);
    #[allow(clippy::cast_precision_loss)]
    let rate = n as f64 / took.as_secs_f64();
    #[allow(clippy::cast_precision_loss)]
    let per_append = cpu.as_secs_f64() * 1e6 / n.max(1) as f64;
    println!(
        "custody postgres append benchmark, through the audit log: {replicas} replicas (each an Audit on PgStore), {writers} writers, entries with a ~1 KiB header and a {size}-byte payload, synchronous_commit = on"
    );
    println!(
        "durable appends: {rate:.0} entries/s ({n} in {:.1} s); this process's CPU per append {per_append:.2} µs (PostgreSQL's own not counted)",
        took.as_secs_f64()
    );
    check_and_drop(&db_url, &name, &mut admin)
}

/// [`through_audit`] with each replica a process of its own (`postgres-replica`): the total
/// appended over the processes, and each one's CPU.
pub fn processes(
    url: &str,
    replicas: usize,
    writers: usize,
    size: usize,
    seconds: u64,
) -> anyhow::Result<()> {
    let (name, db_url, mut admin) = database(url)?;
    // The schema first, so the replicas do not race to create it.
    drop(custody::store::postgres::PgStore::connect(
        &db_url, "setup", [0; 32],
    )?);
    let per = writers / replicas.max(1);
    let children: Vec<_> = (0..replicas)
        .map(|r| {
            std::process::Command::new(std::env::current_exe()?)
                .args([
                    "postgres-replica",
                    "--db",
                    &db_url,
                    "--name",
                    &format!("replica-{r}"),
                ])
                .args(["--writers", &per.to_string(), "--size", &size.to_string()])
                .args(["--seconds", &seconds.to_string()])
                .stdout(std::process::Stdio::piped())
                .spawn()
                .map_err(anyhow::Error::from)
        })
        .collect::<anyhow::Result<_>>()?;
    let mut total = 0u64;
    let mut lines = Vec::new();
    for c in children {
        let out = c.wait_with_output()?;
        anyhow::ensure!(out.status.success(), "a replica process failed");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let n: u64 = text
            .split_whitespace()
            .nth(1)
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| anyhow::anyhow!("a replica said {text:?}"))?;
        total += n;
        lines.push(text.trim().to_string());
    }
    #[allow(clippy::cast_precision_loss)]
    let rate = total as f64 / seconds as f64;
    println!(
        "custody postgres append benchmark, through the audit log: {replicas} replica processes (each an Audit on PgStore), {writers} writers, entries with a ~1 KiB header and a {size}-byte payload, synchronous_commit = on"
    );
    for l in &lines {
        println!("  {l}");
    }
    println!(
        "durable appends: {rate:.0} entries/s ({total} in {seconds} s, each process's own window)"
    );
    check_and_drop(&db_url, &name, &mut admin)
}

/// One replica process: an Audit on PgStore, `writers` appending for `seconds` after a short
/// warm-up; prints `appended N cpu_us_per_append X`.
pub fn replica_process(
    db: &str,
    name: &str,
    writers: usize,
    size: usize,
    seconds: u64,
) -> anyhow::Result<()> {
    use custody::audit::Audit;
    use custody::store::postgres::PgStore;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let (n, cpu) = rt.block_on(async {
        let dir = tempfile::tempdir()?;
        let signer = tlog::Signer::new("bench.custody/shared", [3u8; 32])
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let seal = signer.derive_secret(custody::store::postgres::ENTRY_SEAL);
        let store = PgStore::connect(db, name, seal)?;
        let config = crate::audit::audit_config(dir.path(), custody::config::Durability::Fsync);
        let audit = Audit::with_store(store, signer, true, dir.path(), &config)?.audit;
        crate::audit::append_load(&audit, writers, size, Duration::from_millis(500)).await?;
        let cpu0 = crate::procstat::cpu_time(std::process::id());
        let n =
            crate::audit::append_load(&audit, writers, size, Duration::from_secs(seconds)).await?;
        let cpu = crate::procstat::cpu_time(std::process::id()) - cpu0;
        audit.close().await;
        anyhow::Ok((n, cpu))
    })?;
    #[allow(clippy::cast_precision_loss)]
    let per = cpu.as_secs_f64() * 1e6 / n.max(1) as f64;
    println!("appended {n} cpu_us_per_append {per:.2} ({name})");
    Ok(())
}

/// `append_load` on every replica at once; the total appended.
async fn join_load(
    audits: &[std::sync::Arc<custody::audit::Audit>],
    per: usize,
    size: usize,
    time: Duration,
) -> anyhow::Result<u64> {
    let runs: Vec<_> = audits
        .iter()
        .map(|a| {
            let a = a.clone();
            tokio::spawn(async move { crate::audit::append_load(&a, per, size, time).await })
        })
        .collect();
    let mut total = 0;
    for r in runs {
        total += r.await??;
    }
    Ok(total)
}

pub fn run(
    url: &str,
    replicas: usize,
    writers: usize,
    size: usize,
    seconds: u64,
) -> anyhow::Result<()> {
    let (name, db_url, mut admin) = database(url)?;
    PgLog::connect(&db_url, "setup", Bounds::default())?.migrate()?;

    let stop = Arc::new(AtomicBool::new(false));
    let committed = Arc::new(AtomicU64::new(0));
    let batches = Arc::new(AtomicU64::new(0));
    let mut threads = Vec::new();
    for r in 0..replicas {
        let (tx, rx) = mpsc::sync_channel::<Ack>(writers * 2);
        let (db_url, stop, committed, batches) = (
            db_url.clone(),
            stop.clone(),
            committed.clone(),
            batches.clone(),
        );
        threads.push(std::thread::spawn(move || -> anyhow::Result<()> {
            let replica = format!("replica-{r}");
            let mut log = PgLog::connect(&db_url, &replica, Bounds::default())?;
            let payload = vec![b'x'; size];
            while let Ok(first) = rx.recv() {
                let mut acks = vec![first];
                while acks.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(a) => acks.push(a),
                        Err(_) => break,
                    }
                }
                let first = log.append(acks.len(), &mut |i, _| {
                    let mut data = i.to_be_bytes().to_vec();
                    data.extend_from_slice(&payload);
                    NewEntry {
                        leaf: tlog::leaf_hash(&data),
                        data,
                        payloads: Vec::new(),
                        time_ns: 1,
                    }
                })?;
                committed.fetch_add(acks.len() as u64, Ordering::Relaxed);
                batches.fetch_add(1, Ordering::Relaxed);
                for (i, a) in acks.into_iter().enumerate() {
                    let _ = a.send(first + i as u64);
                }
            }
            Ok(())
        }));
        for _ in 0..writers / replicas {
            let (tx, stop) = (tx.clone(), stop.clone());
            threads.push(std::thread::spawn(move || -> anyhow::Result<()> {
                while !stop.load(Ordering::Relaxed) {
                    let (ack, wait) = mpsc::sync_channel(1);
                    tx.send(ack)?;
                    wait.recv()?;
                }
                Ok(())
            }));
        }
    }
    let warm = Duration::from_secs(1);
    std::thread::sleep(warm);
    let (start, t0) = (committed.load(Ordering::Relaxed), Instant::now());
    let b0 = batches.load(Ordering::Relaxed);
    std::thread::sleep(Duration::from_secs(seconds));
    let (end, took) = (committed.load(Ordering::Relaxed), t0.elapsed());
    let b1 = batches.load(Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    // Writers stop after their next commit; committers stop when their writers are gone.
    for t in threads {
        let _ = t.join();
    }
    let n = end - start;
    #[allow(clippy::cast_precision_loss)]
    let rate = n as f64 / took.as_secs_f64();
    #[allow(clippy::cast_precision_loss)]
    let per_batch = n as f64 / (b1 - b0).max(1) as f64;
    println!(
        "custody postgres append benchmark: {replicas} replicas, {writers} writers, {size}-byte entries, synchronous_commit = on"
    );
    println!(
        "durable appends: {rate:.0} entries/s ({n} in {:.1} s; {per_batch:.1} entries per commit)",
        took.as_secs_f64()
    );
    // The indices are contiguous.
    let mut c = postgres::Client::connect(&db_url, postgres::NoTls)?;
    let row = c.query_one("SELECT count(*), coalesce(max(idx), -1), (SELECT next_index FROM log_sequence) FROM entries", &[])?;
    let (count, max, next): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
    anyhow::ensure!(
        count == max + 1 && count == next,
        "indices are not contiguous: {count} entries, max {max}, next {next}"
    );
    println!("indices contiguous: {count} entries, 0..{max}");
    drop(c);
    admin.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))?;
    Ok(())
}
