//! Several `custody serve` processes sharing one log in PostgreSQL (`[audit] store`), under
//! load from clients spread over them: replicas killed with SIGKILL at random points and
//! started again, one steward signing and the others publishing its checkpoints, a receipt
//! from one replica proved by another, and a replica with another key refused.
//!
//! Needs PostgreSQL (see `pg_common`). `CUSTODY_REPLICA_KILLS` sets how many kills (default 20).

mod common;
mod pg_common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use pg_common::{Db, Replicas, config, config_with, logs, start, terminate};
use serde_json::{Value, json};

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
                     WHERE application_name LIKE $1",
                    &[&format!("custody {name}%")],
                )
                .unwrap()
                .get(0);
        }
        c.query_opt(
            "SELECT substring(a.application_name FROM 'custody r([0-9]+) steward')::bigint \
             FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
             WHERE l.locktype = 'advisory' AND l.granted AND a.application_name LIKE '%steward'",
            &[],
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

const APPROVAL_POLICY: &str = r#"
@id("everything")
permit(principal, action in [Action::"tools/call", Action::"list", Action::"other"], resource);

@id("deploys-need-approval")
@approval("required")
permit(principal, action == Action::"tools/call", resource)
when { resource.name == "deploy" };
"#;

/// Two replicas whose `deploy` calls wait for `alice` or `bob`; the static tokens by name.
fn approval_replicas(
    root: &Path,
    db: &str,
) -> (
    Vec<PathBuf>,
    std::collections::HashMap<&'static str, String>,
) {
    use custody::identity::{new_static_token, token_hash};
    let policy = root.join("approvals.cedar");
    std::fs::write(&policy, APPROVAL_POLICY).unwrap();
    let mut tokens = std::collections::HashMap::new();
    let mut statics = String::new();
    for name in ["ci", "alice", "carol"] {
        let token = new_static_token();
        statics.push_str(&format!(
            "[[auth.static]]\nname = \"{name}\"\nsha256 = \"{}\"\n",
            hex::encode(token_hash(&token))
        ));
        tokens.insert(name, token);
    }
    let rest = format!(
        "[auth]\n{statics}[policy]\nfiles = [\"{}\"]\n[approvals]\napprovers = [\"alice\"]\n\
         [endpoints.demo.upstream]\ntransport = \"stdio\"\ncommand = \"{}\"\nargs = [\"demo-server\"]\n",
        policy.display(),
        custody_bin()
    );
    let key = root.join("log.key");
    let configs = ["r0", "r1"]
        .iter()
        .map(|n| config_with(root, n, db, &key, &rest))
        .collect();
    (configs, tokens)
}

/// The pending approvals `token` sees on the replica at `base`, once there are `n`.
async fn pending_on(base: &str, token: &str, n: usize) -> Vec<Value> {
    let started = Instant::now();
    loop {
        let list: Value = reqwest::Client::new()
            .get(format!("{base}/api/v1/approvals"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let items = list["approvals"].as_array().cloned().unwrap_or_default();
        if items.len() >= n {
            return items;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "expected {n} pending approvals on {base}: {list}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn decide_on(base: &str, token: &str, id: &str, verb: &str) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .post(format!("{base}/api/v1/approvals/{id}/{verb}"))
        .bearer_auth(token)
        .json(&json!({"reason": "checked on another replica"}))
        .send()
        .await
        .unwrap();
    (
        resp.status().as_u16(),
        resp.json().await.unwrap_or_default(),
    )
}

fn hold_on(base: &str, token: &str) -> tokio::task::JoinHandle<Answer> {
    let c = Client::new(format!("{base}/mcp/demo"))
        .with_token(token)
        .stateless();
    tokio::spawn(async move {
        c.call(
            "tools/call",
            json!({"name": "deploy", "arguments": {"service": "api", "version": "1.2.3", "environment": "staging"}}),
        )
        .await
    })
}

/// The `approval_*` entries of the shared log for approval `id`, by kind name.
fn approval_entries(db: &Db, id: &str) -> Vec<String> {
    db.admin()
        .query("SELECT data FROM entries ORDER BY idx", &[])
        .unwrap()
        .iter()
        .filter_map(|r| {
            let data: Vec<u8> = r.get(0);
            let e = tlog::Entry::decode(&data).ok()?;
            let name = e.kind.name();
            (name.starts_with("approval_") && e.detail.contains(id)).then(|| name.to_string())
        })
        .collect()
}

#[test]
fn an_approval_granted_on_one_replica_releases_the_call_held_on_another() {
    let Some(db) = Db::new("replica_approvals") else {
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let (configs, tokens) = approval_replicas(root.path(), &db.url);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut procs = Replicas::default();
    let mut bases = Vec::new();
    for c in &configs {
        let (p, b) = start(c).unwrap_or_else(|e| panic!("a replica did not start: {e}"));
        procs.push(p);
        bases.push(b);
    }
    let (held_id, forged_row, abandoned_id) = rt.block_on(async {
        // Held on r0, approved on r1.
        let held = hold_on(&bases[0], &tokens["ci"]);
        let first = pending_on(&bases[0], &tokens["alice"], 1).await.remove(0);
        let id = first["id"].as_str().unwrap().to_string();
        // Who may not decide it here may not decide it from there either: the holder judges.
        let (status, body) = decide_on(&bases[1], &tokens["carol"], &id, "approve").await;
        assert_eq!(status, 404, "{body}");
        let (status, body) = decide_on(&bases[1], &tokens["ci"], &id, "approve").await;
        assert_eq!(status, 403, "self-approval from another replica: {body}");
        // A decision written into the database without the log's key is refused by the holder.
        let forged: i64 = {
            let url = db.url.clone();
            let id = id.clone();
            tokio::task::spawn_blocking(move || {
                let ask = json!({"approval": id, "approve": true, "reason": null, "digest": null,
                    "asked_ns": custody::audit::now_ns(), "by": "intruder",
                    "who": {"kind": "static", "issuer": null, "subject": "alice", "name": "alice",
                            "claims": {}, "audit": "{\"name\":\"alice\"}", "binding": "static:alice"}});
                let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
                c.query_one(
                    "INSERT INTO approval_asks (holder, ask, seal) VALUES ('r0', $1, $2) RETURNING id",
                    &[&ask.to_string(), &vec![0u8; 32]],
                )
                .unwrap()
                .get(0)
            })
            .await
            .unwrap()
        };
        tokio::time::sleep(Duration::from_millis(800)).await;
        let still = pending_on(&bases[0], &tokens["alice"], 1).await;
        assert_eq!(still[0]["state"], "pending", "a forged decision released nothing");

        let (status, body) = decide_on(&bases[1], &tokens["alice"], &id, "approve").await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["state"], "granted", "{body}");
        let answer = tokio::time::timeout(Duration::from_secs(10), held)
            .await
            .expect("the held call is released")
            .unwrap();
        assert_eq!(answer.status, 200, "{answer:?}");
        assert!(answer.response().get("result").is_some(), "{answer:?}");
        // Deciding again, anywhere, changes nothing.
        let (status, body) = decide_on(&bases[1], &tokens["alice"], &id, "approve").await;
        assert_ne!(status, 200, "{body}");

        // A call held on r0 when r0 dies: r1 starting again leaves it alone; r0 starting again
        // abandons it, once.
        let _orphan = hold_on(&bases[0], &tokens["ci"]);
        let second = pending_on(&bases[0], &tokens["alice"], 1).await.remove(0);
        (id, forged, second["id"].as_str().unwrap().to_string())
    });
    procs[0].kill().unwrap();
    procs[0].wait().unwrap();
    terminate(&mut procs[1]);
    let (p1, _) = start(&configs[1]).unwrap();
    procs[1] = p1;
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        !approval_entries(&db, &abandoned_id).contains(&"approval_abandoned".to_string()),
        "another replica abandoned r0's approval"
    );
    let (p0, _) = start(&configs[0]).unwrap();
    procs[0] = p0;
    let (p0b, _) = {
        terminate(&mut procs[0]);
        start(&configs[0]).unwrap()
    };
    procs[0] = p0b;
    for p in procs.iter_mut() {
        terminate(p);
    }
    let kinds = approval_entries(&db, &abandoned_id);
    assert_eq!(
        kinds.iter().filter(|k| *k == "approval_abandoned").count(),
        1,
        "abandoned once, whatever restarts: {kinds:?}"
    );
    let kinds = approval_entries(&db, &held_id);
    assert_eq!(
        kinds,
        ["approval_requested", "approval_granted"],
        "the decision taken on r1 is recorded once, by the holder"
    );
    let (status, answer): (i32, String) = {
        let r = db
            .admin()
            .query_opt(
                "SELECT status, answer FROM approval_asks WHERE id = $1",
                &[&forged_row],
            )
            .unwrap()
            .expect("the forged row is answered and left");
        (r.get(0), r.get(1))
    };
    assert_eq!(status, 403, "{answer}");
    assert!(answer.contains("seal does not check"), "{answer}");
}
