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

use common::{Client, fixture_http};
use pg_common::{Db, Replicas, config, logs, start, terminate};
use serde_json::{Value, json};

/// One stateless `tools/call`; its receipt when answered.
async fn call(base: &str) -> Option<Value> {
    let c = Client::new(format!("{base}/mcp/f")).stateless();
    let body = c.request_body(
        "tools/call",
        json!({"name": "test_simple_text", "arguments": {}}),
    );
    let resp = c
        .with_mirrored(c.post_builder(), &body)
        .body(body.to_string())
        .send()
        .await
        .ok()?;
    let v: Value = resp.json().await.ok()?;
    v.pointer("/result/_meta/dev.custody~1receipt").cloned()
}

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
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let upstream = rt.block_on(fixture_http());
    let configs: Vec<_> = (0..2)
        .map(|i| config(root.path(), &format!("r{i}"), &db.url, &key, &upstream))
        .collect();
    let mut procs = Replicas::default();
    let mut bases = Vec::new();
    for c in &configs {
        let (p, b) = start(c).unwrap_or_else(|e| panic!("a replica did not start: {e}"));
        procs.push(p);
        bases.push(b);
    }
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
                    match call(&base).await {
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
    let mut c = db.admin();
    let n: i64 = c
        .query_one("SELECT count(*) FROM entries", &[])
        .unwrap()
        .get(0);
    let max: i64 = c
        .query_one("SELECT max(idx) FROM entries", &[])
        .unwrap()
        .get(0);
    assert_eq!(n, max + 1, "indices are contiguous");
    let leaves: std::collections::HashMap<i64, String> = c
        .query("SELECT idx, leaf FROM entries", &[])
        .unwrap()
        .iter()
        .map(|r| (r.get(0), hex::encode(r.get::<_, Vec<u8>>(1))))
        .collect();
    for r in receipts.lock().unwrap().iter() {
        for side in ["request", "response"] {
            let index = r[side]["index"].as_i64().unwrap();
            assert_eq!(
                leaves.get(&index).map(String::as_str),
                r[side]["leaf"].as_str(),
                "the {side} entry {index} of an answered call is in the log"
            );
        }
    }
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
