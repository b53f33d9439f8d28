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

pub fn run(
    url: &str,
    replicas: usize,
    writers: usize,
    size: usize,
    seconds: u64,
) -> anyhow::Result<()> {
    // A database of the benchmark's own.
    let name = format!("custody_bench_{}", std::process::id());
    let mut admin = postgres::Client::connect(url, postgres::NoTls)?;
    admin.batch_execute(&format!("DROP DATABASE IF EXISTS {name}"))?;
    admin.batch_execute(&format!("CREATE DATABASE {name}"))?;
    let mut db_url = url::Url::parse(url)?;
    db_url.set_path(&name);
    let db_url = db_url.to_string();
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
