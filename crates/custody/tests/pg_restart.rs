//! PostgreSQL restarted under two replicas' load: the rounds in flight fail unacknowledged,
//! each replica connects again, the load goes on, and the log stays one contiguous log that
//! verifies, with every answered call's entries at the indices its receipt names.
//!
//! Restarting the database server is intrusive: the test runs only with
//! `CUSTODY_TEST_RESTART_POSTGRES` set to the command that restarts it (`.ci/run` sets
//! `pg_ctlcluster 15 main restart`), and says so and passes otherwise. A test binary of its
//! own, so no other test's connection is cut (cargo runs test binaries one at a time).

mod common;
mod pg_common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{call_receipt, fixture_http};
use pg_common::{Db, config, logs, terminate};
use serde_json::Value;

#[test]
fn postgres_restarted_under_load_leaves_one_whole_log() {
    let Ok(restart) = std::env::var("CUSTODY_TEST_RESTART_POSTGRES") else {
        eprintln!(
            "skipped: set CUSTODY_TEST_RESTART_POSTGRES to the command that restarts PostgreSQL"
        );
        return;
    };
    let Some(db) = Db::new("restart") else {
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let key = root.path().join("log.key");
    let rt = pg_common::runtime();
    let upstream = rt.block_on(fixture_http());
    let configs: Vec<_> = (0..2)
        .map(|i| config(root.path(), &format!("r{i}"), &db.url, &key, &upstream))
        .collect();
    let (mut procs, bases) = pg_common::start_all(&configs);
    let receipts = Arc::new(Mutex::new(Vec::<Value>::new()));
    let after = Arc::new(AtomicU64::new(0));
    let restarted = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let load: Vec<_> = (0..8u64)
        .map(|n| {
            let base = bases[(n % 2) as usize].clone();
            let (receipts, after, restarted, stop) = (
                receipts.clone(),
                after.clone(),
                restarted.clone(),
                stop.clone(),
            );
            rt.spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    match call_receipt(&base).await {
                        Some(r) => {
                            receipts.lock().unwrap().push(r);
                            if restarted.load(Ordering::Relaxed) {
                                after.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        None => tokio::time::sleep(Duration::from_millis(20)).await,
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(1));
    let out = std::process::Command::new("sh")
        .args(["-c", &restart])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{restart}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    restarted.store(true, Ordering::Relaxed);
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, Ordering::Relaxed);
    rt.block_on(async {
        for l in load {
            l.await.unwrap();
        }
    });
    assert!(
        after.load(Ordering::Relaxed) > 20,
        "the replicas answer again after the restart ({} calls)\n{}",
        after.load(Ordering::Relaxed),
        logs(&configs)
    );
    for p in procs.iter_mut() {
        terminate(p);
    }
    db.contiguous_entries();
    db.assert_receipts_in_log(receipts.lock().unwrap().iter());
    let key_string = std::fs::read_to_string(root.path().join("log.key.pub")).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_custody"))
        .args(["verify", "--db", &db.url, "--key", key_string.trim()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
