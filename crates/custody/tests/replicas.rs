//! Several `custody serve` processes sharing one log in PostgreSQL (`[audit] store`), under
//! load from clients spread over them: replicas killed with SIGKILL at random points and
//! started again, one steward signing and the others publishing its checkpoints, a receipt
//! from one replica proved by another, and a replica with another key refused. Approvals,
//! sessions and checkpoints across replicas have files of their own (`replica_*.rs`).
//!
//! Needs PostgreSQL (see `pg_common`). `CUSTODY_REPLICA_KILLS` sets how many kills (default 20).

mod common;
mod pg_common;

use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use pg_common::{Db, Replicas, config, logs, start, terminate};
use serde_json::Value;

/// `what = "terminate"`: ends the database sessions of application `custody NAME...`, returning
/// how many. `what = "steward"`: the replica number whose steward session holds the lease
/// (-1 when none does).
async fn sessions(db: &str, name: &str, what: &'static str) -> i64 {
    let (url, name) = (db.to_string(), name.to_string());
    tokio::task::spawn_blocking(move || {
        let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        if what == "terminate" {
            return c
                .query_one(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                     WHERE application_name LIKE $1 AND datname = current_database()",
                    &[&format!("custody {name}%")],
                )
                .unwrap()
                .get(0);
        }
        // The lease's own key (store/postgres/steward.rs), in this test's database: the
        // server is shared with other tests' replicas, whose stewards hold the same key in
        // theirs, and a replica starting holds the migration lock for a moment.
        c.query_opt(
            "SELECT substring(a.application_name FROM 'custody r([0-9]+) steward')::bigint \
             FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
             WHERE l.locktype = 'advisory' AND l.granted AND a.application_name LIKE '%steward' \
             AND a.datname = current_database() \
             AND ((l.classid::bigint << 32) | l.objid::bigint) = $1",
            &[&0x6375_7374_6f64_7902_i64],
        )
        .unwrap()
        .map_or(-1, |r| r.get::<_, Option<i64>>(0).unwrap_or(-1))
    })
    .await
    .unwrap()
}

/// A small deterministic generator (the seed is printed, so a failure can be replayed).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[test]
fn three_replicas_share_one_log_through_kills() {
    let Some(db) = Db::new("replicas") else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (seen, key_string) = rt.block_on(load_through_kills(&db.url));
    check_one_log(&db, &seen, &key_string);
}

/// Three replicas under load, killed and started again; what the clients were answered, and
/// the log's key.
async fn load_through_kills(db: &str) -> (Vec<(String, Value)>, String) {
    let upstream = fixture_http().await;
    let root = tempfile::tempdir().unwrap();
    let key = root.path().join("log.key");
    let configs: Vec<PathBuf> = (0..3)
        .map(|i| config(root.path(), &format!("r{i}"), db, &key, &upstream))
        .collect();
    // The first replica creates the log's key; the others sign with it.
    let mut procs = Replicas::default();
    let bases = Arc::new(Mutex::new(Vec::new()));
    for c in &configs {
        let (child, base) = start(c).unwrap_or_else(|e| panic!("a replica did not start: {e}"));
        procs.push(child);
        bases.lock().unwrap().push(base);
    }

    let receipts = Arc::new(Mutex::new(Vec::<(String, Value)>::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load: Vec<_> = (0..12)
        .map(|n| {
            let (bases, receipts, stop) = (bases.clone(), receipts.clone(), stop.clone());
            tokio::spawn(async move {
                let mut k = n;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    k += 1;
                    let base = {
                        let b = bases.lock().unwrap();
                        b[k % b.len()].clone()
                    };
                    if let Some(r) = call_receipt(&base).await {
                        receipts.lock().unwrap().push((base, r));
                    }
                }
            })
        })
        .collect();

    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("seed {seed}");
    let mut rng = Rng(seed);
    let kills: u64 = std::env::var("CUSTODY_REPLICA_KILLS")
        .ok()
        .and_then(|k| k.parse().ok())
        .unwrap_or(20);
    // Every third fault is one of the others: a replica's database sessions terminated (as a
    // failover or an operator would), a replica stopped (SIGSTOP) longer than the lock timeout
    // and continued, the steward stopped while its lease session is ended, then continued (it
    // must find it lost the lease, and another replica signs meanwhile).
    let mut other = 0u64;
    for n in 0..kills + kills / 2 {
        tokio::time::sleep(Duration::from_millis(100 + rng.below(300))).await;
        let victim = rng.below(3) as usize;
        let pid = nix::unistd::Pid::from_raw(procs[victim].id() as i32);
        let name = format!("r{victim}");
        if n % 3 == 2 {
            other += 1;
            match other % 3 {
                0 => {
                    let ended = sessions(db, &name, "terminate").await;
                    eprintln!("terminated {ended} sessions of {name}");
                }
                1 => {
                    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
                    tokio::time::sleep(Duration::from_millis(2500)).await;
                    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).unwrap();
                }
                _ => {
                    // The steward, whichever replica it is.
                    let steward = sessions(db, "", "steward").await;
                    let Some(who) = (0..3).find(|i| steward == *i as i64) else {
                        eprintln!("no steward at this moment");
                        continue;
                    };
                    eprintln!("stopping the steward r{who} while its lease session ends");
                    let pid = nix::unistd::Pid::from_raw(procs[who].id() as i32);
                    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
                    sessions(db, &format!("r{who} steward"), "terminate").await;
                    tokio::time::sleep(Duration::from_millis(800)).await;
                    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).unwrap();
                }
            }
            continue;
        }
        procs[victim].kill().unwrap(); // SIGKILL
        procs[victim].wait().unwrap();
        let (child, base) = start(&configs[victim])
            .unwrap_or_else(|e| panic!("replica r{victim} did not start again: {e}"));
        procs[victim] = child;
        bases.lock().unwrap()[victim] = base;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for l in load {
        l.await.unwrap();
    }
    let seen = receipts.lock().unwrap().clone();
    assert!(seen.len() > 50, "the load ran: {} answers", seen.len());

    // A call answered by one replica is proved by another, against the checkpoint that
    // replica publishes (signed by whichever replica is the steward).
    let live = bases.lock().unwrap().clone();
    let (answered_by, receipt) = seen.last().unwrap().clone();
    let other = live.iter().find(|b| **b != answered_by).unwrap();
    let index = receipt["response"]["index"].as_u64().unwrap();
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    let proof = loop {
        let r = http
            .get(format!("{other}/api/v1/log/proof?index={index}"))
            .send()
            .await
            .unwrap();
        if r.status() == 200 {
            break r.text().await.unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "no proof of entry {index} from another replica: {} {}\n{}",
            r.status(),
            r.text().await.unwrap(),
            logs(&configs)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let key_string = http
        .get(format!("{other}/api/v1/log/key"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let file = root.path().join("receipt.tlog-proof");
    std::fs::write(&file, &proof).unwrap();
    let out = Command::new(custody_bin())
        .args(["receipt", "verify", "--key", key_string.trim(), "--leaf"])
        .arg(receipt["response"]["leaf"].as_str().unwrap())
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    for p in procs.iter_mut() {
        terminate(p);
    }
    (seen, key_string)
}

fn check_one_log(db: &Db, seen: &[(String, Value)], key_string: &str) {
    // One log: contiguous indices, written by every replica, each answered call's entries in
    // it at the indices its receipt names.
    let n = db.contiguous_entries();
    let writers: i64 = db
        .admin()
        .query_one("SELECT count(DISTINCT replica) FROM entries", &[])
        .unwrap()
        .get(0);
    assert_eq!(writers, 3, "every replica wrote");
    db.assert_receipts_in_log(seen.iter().map(|(_, r)| r));
    // Every stored checkpoint verifies against the shared log, and the log against them.
    let out = Command::new(custody_bin())
        .args([
            "verify",
            "--db",
            &db.url,
            "--key",
            key_string.trim(),
            "--json",
        ])
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    assert!(
        out.status.success(),
        "{v}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(v["entries"], n, "{v}");
    assert!(v["checkpoints"].as_u64().unwrap() >= 1, "{v}");
}

#[test]
fn a_replica_with_another_key_is_refused() {
    let Some(db) = Db::new("otherkey") else {
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let upstream = "http://127.0.0.1:9/mcp";
    let first = config(
        root.path(),
        "r0",
        &db.url,
        &root.path().join("log.key"),
        upstream,
    );
    let (r0, _) = start(&first).unwrap();
    let mut procs = Replicas(vec![r0]);
    let other = config(
        root.path(),
        "r1",
        &db.url,
        &root.path().join("other.key"),
        upstream,
    );
    let refused = start(&other).map(|(mut c, _)| {
        terminate(&mut c);
    });
    let err = refused.expect_err("a replica signing with another key must not start");
    assert!(err.contains("the shared log is signed by the key"), "{err}");
    // Nor one with the name of a replica that is running.
    let twin = config(
        root.path(),
        "r0-twin",
        &db.url,
        &root.path().join("log.key"),
        upstream,
    );
    std::fs::write(
        &twin,
        std::fs::read_to_string(&twin)
            .unwrap()
            .replace("replica = \"r0-twin\"", "replica = \"r0\""),
    )
    .unwrap();
    let refused = start(&twin).map(|(mut c, _)| terminate(&mut c));
    let err = refused.expect_err("a second replica named r0 must not start");
    assert!(err.contains("another replica named \"r0\""), "{err}");
    terminate(&mut procs[0]);
}
