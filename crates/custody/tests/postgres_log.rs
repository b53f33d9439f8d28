//! The log in PostgreSQL, as several replicas share it: schema migrations, sequencing under
//! concurrent writers with no hole and no duplicate, a writer killed inside its transaction, a
//! stalled writer bounded by the lock timeout, and stewards racing to move the head.
//!
//! Needs the PostgreSQL of `CUSTODY_TEST_POSTGRES` (default `postgres://postgres@127.0.0.1:5432/postgres`,
//! trust authentication); each test creates and drops a database of its own. Without a server
//! the tests say so and pass, except in CI (`CI` set), where they fail.

use std::time::{Duration, Instant};

use custody::store::postgres::{Bounds, NewEntry, PgError, PgLog, SCHEMA_VERSION};
use tlog::{CompactRange, leaf_hash};

mod pg_common;
use pg_common::Db;

/// An entry that names its index and its writer, as a real entry names its index.
fn entry(index: u64, writer: &str) -> NewEntry {
    let data = format!("{index}:{writer}").into_bytes();
    NewEntry {
        leaf: leaf_hash(&data),
        data,
        payloads: Vec::new(),
        time_ns: 1,
    }
}

/// Every entry's index matches what it says, and indices run 0..n without a gap.
fn assert_contiguous(db: &Db) -> u64 {
    let mut c = db.admin();
    let rows = c
        .query("SELECT idx, data FROM entries ORDER BY idx", &[])
        .unwrap();
    for (i, r) in rows.iter().enumerate() {
        let idx: i64 = r.get(0);
        assert_eq!(idx as usize, i, "a hole or a duplicate at {i}");
        let data: Vec<u8> = r.get(1);
        let text = String::from_utf8(data).unwrap();
        assert!(
            text.starts_with(&format!("{idx}:")),
            "entry {idx} says {text}"
        );
    }
    let next: i64 = c
        .query_one("SELECT next_index FROM log_sequence", &[])
        .unwrap()
        .get(0);
    assert_eq!(next as usize, rows.len());
    rows.len() as u64
}

#[test]
fn the_schema_is_created_once_and_a_newer_one_is_refused() {
    let Some(db) = Db::new("schema") else { return };
    let mut a = PgLog::connect(&db.url, "a", Bounds::default()).unwrap();
    assert_eq!(a.migrate().unwrap(), SCHEMA_VERSION);
    // Again, and from another replica: nothing to do.
    assert_eq!(a.migrate().unwrap(), SCHEMA_VERSION);
    let mut b = PgLog::connect(&db.url, "b", Bounds::default()).unwrap();
    assert_eq!(b.migrate().unwrap(), SCHEMA_VERSION);
    db.admin()
        .execute(
            "UPDATE custody_schema SET version = $1",
            &[&(SCHEMA_VERSION + 1)],
        )
        .unwrap();
    let e = b.migrate().unwrap_err();
    assert!(matches!(e, PgError::NewerSchema { .. }), "{e}");
    assert!(
        e.to_string().contains("newer than this custody knows"),
        "{e}"
    );
    // A wrong password is not printed.
    let e = PgLog::connect(
        "postgres://custody:hunter2@127.0.0.1:1/x",
        "c",
        Bounds::default(),
    )
    .err()
    .unwrap();
    assert!(!e.to_string().contains("hunter2"), "{e}");
}

#[test]
fn concurrent_replicas_get_contiguous_indices_and_each_entry_names_its_own() {
    let Some(db) = Db::new("concurrent") else {
        return;
    };
    db.replica("setup");
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let url = db.url.clone();
            std::thread::spawn(move || {
                let name = format!("r{}-w{w}", w % 2);
                let mut log = PgLog::connect(&url, &name, Bounds::default()).unwrap();
                let mut mine = Vec::new();
                for batch in 0..25 {
                    let n = 1 + (w + batch) % 7;
                    let first = log.append(n, &mut |i, _| entry(i, &name)).unwrap();
                    mine.extend(first..first + n as u64);
                }
                (name, mine)
            })
        })
        .collect();
    let mut all = Vec::new();
    for w in writers {
        let (name, mine) = w.join().unwrap();
        // Each writer's indices hold its own entries.
        let mut c = db.admin();
        for i in &mine {
            let data: Vec<u8> = c
                .query_one("SELECT data FROM entries WHERE idx = $1", &[&(*i as i64)])
                .unwrap()
                .get(0);
            assert_eq!(String::from_utf8(data).unwrap(), format!("{i}:{name}"));
        }
        all.extend(mine);
    }
    let n = assert_contiguous(&db);
    all.sort_unstable();
    assert_eq!(all, (0..n).collect::<Vec<_>>());
}

#[test]
fn a_writer_killed_inside_its_transaction_leaves_no_hole() {
    let Some(db) = Db::new("killed") else { return };
    let mut a = db.replica("a");
    a.append(3, &mut |i, _| entry(i, "a")).unwrap();
    // Replica b takes the sequence and is killed (its backend terminated) before committing.
    let mut b = db.replica("b");
    let pid = b.backend_pid().unwrap();
    let url = db.url.clone();
    let killer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        let mut admin = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        admin
            .execute("SELECT pg_terminate_backend($1)", &[&pid])
            .unwrap();
    });
    let result = b.append(5, &mut |i, _| {
        // Slow encoding: the kill lands while the sequence row is locked.
        std::thread::sleep(Duration::from_millis(100));
        entry(i, "b")
    });
    killer.join().unwrap();
    assert!(
        result.is_err(),
        "the killed batch must not be reported committed"
    );
    // a continues right after its own entries: b's indices vanished with its transaction.
    let first = a.append(2, &mut |i, _| entry(i, "a")).unwrap();
    assert_eq!(first, 3);
    assert_eq!(assert_contiguous(&db), 5);
}

#[test]
fn a_stalled_writer_holds_the_log_no_longer_than_the_bounds() {
    let Some(db) = Db::new("stalled") else { return };
    db.replica("setup");
    // A replica that takes the sequence lock and stops (as SIGSTOP would stop it).
    let short = Bounds {
        lock_timeout: Duration::from_millis(300),
        statement_timeout: Duration::from_secs(5),
        idle_in_transaction: Duration::from_secs(1),
    };
    let mut stalled = postgres::Client::connect(&db.url, postgres::NoTls).unwrap();
    stalled
        .batch_execute(
            "SET idle_in_transaction_session_timeout = 1000; BEGIN; \
             SELECT next_index FROM log_sequence WHERE id FOR UPDATE",
        )
        .unwrap();
    let mut a = PgLog::connect(&db.url, "a", short).unwrap();
    let t = Instant::now();
    let e = a.append(1, &mut |i, _| entry(i, "a")).unwrap_err();
    assert!(matches!(e, PgError::LockTimeout { .. }), "{e}");
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    assert!(e.to_string().contains("lock_timeout"), "{e}");
    // The stalled transaction is ended by PostgreSQL; the log moves on.
    std::thread::sleep(Duration::from_millis(1500));
    let first = a.append(1, &mut |i, _| entry(i, "a")).unwrap();
    assert_eq!(first, 0);
    assert_eq!(assert_contiguous(&db), 1);
}

#[test]
fn one_steward_at_a_time_and_the_head_moves_only_by_compare_and_swap() {
    let Some(db) = Db::new("steward") else { return };
    let mut a = db.replica("a");
    let mut b = db.replica("b");
    assert!(a.lease().unwrap(), "the first steward gets the lease");
    assert!(!b.lease().unwrap(), "while it is held, nobody else");
    a.append(300, &mut |i, _| entry(i, "a")).unwrap();
    let h0 = a.head().unwrap();
    assert_eq!(h0.size, 0);
    let h1 = a.integrate(&h0).unwrap().expect("integrated");
    assert_eq!(h1.size, 300);
    // The same root as the tree of those entries computed anew.
    let mut tree = CompactRange::new();
    for i in 0..300 {
        tree.append(entry(i, "a").leaf, |_| {});
    }
    assert_eq!(h1.root, tree.root());
    assert_eq!(a.head().unwrap(), h1);
    // A paused steward (b, holding the old head) cannot move the head again from it.
    a.append(10, &mut |i, _| entry(i, "a")).unwrap();
    let h2 = a.integrate(&h1).unwrap().expect("integrated");
    assert_eq!(h2.size, 310);
    assert_eq!(
        b.integrate(&h1).unwrap(),
        None,
        "a stale steward must not move the head"
    );
    assert_eq!(b.integrate(&h0).unwrap(), None);
    assert_eq!(a.head().unwrap(), h2);
    // A checkpoint is stored only for the head's tree, and never beside another of its size.
    assert!(
        !a.put_checkpoint(&h1, "old note", 1).unwrap(),
        "not the head any more"
    );
    assert!(a.put_checkpoint(&h2, "note of 310", 2).unwrap());
    assert!(
        a.put_checkpoint(&h2, "note of 310", 2).unwrap(),
        "the same note again is fine"
    );
    assert!(!b.put_checkpoint(&h2, "another note of 310", 3).unwrap());
    // The lease passes on when its holder's connection ends.
    drop(a);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !b.lease().unwrap() {
        assert!(Instant::now() < deadline, "the lease was not released");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_stored_node_that_differs_from_the_entries_is_caught() {
    let Some(db) = Db::new("changed") else { return };
    let mut a = db.replica("a");
    a.append(600, &mut |i, _| entry(i, "a")).unwrap();
    let empty = a.head().unwrap();
    a.integrate(&empty).unwrap().expect("integrated");
    // Someone with write access to the database rewrites a stored interior node.
    db.admin()
        .execute(
            "UPDATE nodes SET hash = $1 WHERE level = 8 AND idx = 0",
            &[&vec![7u8; 32]],
        )
        .unwrap();
    // A steward integrating those entries again (a stale one) computes the node anew and
    // finds the stored one differs: an alarm, not a silent skip.
    match db.replica("b").integrate(&empty) {
        Err(PgError::Inconsistent(why)) => assert!(why.contains("differ"), "{why}"),
        other => panic!("expected an inconsistency, got {other:?}"),
    }
}

/// A real entry (version 2, a heartbeat) for `index`.
fn real_entry(index: u64) -> NewEntry {
    let e = tlog::Entry {
        index,
        kind: tlog::entry::Kind::Heartbeat,
        direction: tlog::entry::Direction::Gateway,
        time_ns: 1_700_000_000_000_000_000 + index,
        endpoint: "".into(),
        session: "".into(),
        id: "".into(),
        method: "".into(),
        target: "".into(),
        caller: "{}".into(),
        request: None,
        detail: "{}".into(),
        message: Vec::new().into(),
        version: tlog::entry::V2,
        commitments: Vec::new(),
    };
    let data = e.encode();
    NewEntry {
        leaf: leaf_hash(&data),
        data,
        payloads: Vec::new(),
        time_ns: e.time_ns,
    }
}

fn custody(args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_custody"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn custody_verify_db_checks_the_shared_log_and_names_a_changed_entry() {
    let Some(db) = Db::new("verify") else { return };
    let mut a = db.replica("a");
    let mut b = db.replica("b");
    a.append(40, &mut |i, _| real_entry(i)).unwrap();
    b.append(25, &mut |i, _| real_entry(i)).unwrap();
    // The steward integrates and stores a signed checkpoint of the head.
    let signer = tlog::Signer::new("custody.test/pg", [9u8; 32]).unwrap();
    let key = signer.verifier().to_key_string();
    let h0 = a.head().unwrap();
    let head = a.integrate(&h0).unwrap().unwrap();
    let note = tlog::Checkpoint {
        origin: signer.name().to_string(),
        size: head.size,
        root: head.root,
        extensions: Vec::new(),
    }
    .sign(&signer)
    .encode();
    assert!(a.put_checkpoint(&head, &note, 1).unwrap());
    let (ok, out, err) = custody(&["verify", "--db", &db.url, "--key", &key, "--json"]);
    assert!(ok, "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["entries"], 65, "{v}");
    // Without --key: refused with the reason.
    let (ok, _, err) = custody(&["verify", "--db", &db.url]);
    assert!(!ok && err.contains("needs --key"), "{err}");
    // An entry rewritten in the database (its stored leaf too): caught, by index.
    let forged = real_entry(12);
    let mut forged_data = forged.data.clone();
    let last = forged_data.len() - 2;
    forged_data[last] = b'!';
    db.admin()
        .execute(
            "UPDATE entries SET data = $1, leaf = $2 WHERE idx = 12",
            &[&forged_data, &leaf_hash(&forged_data).0.to_vec()],
        )
        .unwrap();
    let (ok, out, err) = custody(&["verify", "--db", &db.url, "--key", &key, "--json"]);
    assert!(!ok, "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["ok"], false, "{v}");
    // The rewritten entry still hashes to its stored leaf, but the tree no longer matches the
    // signed checkpoint: the check names where it stops matching.
    assert!(v["problem"].as_str().unwrap().contains("checkpoint"), "{v}");
}

fn audit_config(dir: &std::path::Path) -> custody::config::AuditConfig {
    let text = format!(
        "[server]\ndata_dir = \"{}\"\n[audit]\norigin = \"custody.test/shared\"\ncheckpoint_interval = \"200ms\"\n[auth]\nanonymous = true\n\
         [endpoints.e.upstream]\ntransport = \"http\"\nurl = \"http://127.0.0.1:9/mcp\"\n",
        dir.display()
    );
    custody::config::Config::parse(&text, "t.toml")
        .unwrap()
        .audit
}

#[test]
fn two_audit_logs_on_one_database_write_one_log_that_verifies() {
    use custody::audit::{Audit, Draft, Kind};
    use custody::store::postgres::PgStore;
    let Some(db) = Db::new("replicas") else {
        return;
    };
    let key = [11u8; 32];
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let url = db.url.clone();
    let indices = rt.block_on(async move {
        let mut audits = Vec::new();
        let mut dirs = Vec::new();
        for name in ["replica-a", "replica-b"] {
            let dir = tempfile::tempdir().unwrap();
            // Opened from async code, as the gateway opens its log.
            let signer = tlog::Signer::new("custody.test/shared", key).unwrap();
            let seal = signer.derive_secret(custody::store::postgres::ENTRY_SEAL);
            let store = PgStore::connect(&url, name, seal).unwrap();
            let opened =
                Audit::with_store(store, signer, true, dir.path(), &audit_config(dir.path()))
                    .unwrap();
            audits.push(opened.audit);
            dirs.push(dir);
        }
        // Both replicas append at once, from many tasks: rounds of one replica wait on the
        // other's lock, and must then see what it committed.
        let tasks: Vec<_> = (0..2000)
            .map(|n| {
                let a = audits[n % 2].clone();
                tokio::spawn(async move {
                    a.append(Draft::gateway(
                        Kind::Heartbeat,
                        "",
                        format!("{{\"n\":{n}}}"),
                    ))
                    .await
                    .unwrap()
                    .index
                })
            })
            .collect();
        let mut indices = Vec::new();
        for t in tasks {
            indices.push(t.await.unwrap());
        }
        for a in &audits {
            a.checkpoint().await.unwrap();
        }
        for a in &audits {
            a.close().await;
        }
        indices
    });
    let mut indices = indices;
    indices.sort_unstable();
    indices.dedup();
    assert_eq!(indices.len(), 2000, "every append got an index of its own");
    let n = db.contiguous_entries();
    assert!(n >= 2000, "{n}");
    let mut c = db.admin();
    let replicas: i64 = c
        .query_one("SELECT count(DISTINCT replica) FROM entries", &[])
        .unwrap()
        .get(0);
    assert_eq!(replicas, 2, "both replicas wrote");
    let key_string = tlog::Signer::new("custody.test/shared", key)
        .unwrap()
        .verifier()
        .to_key_string();
    let (ok, out, err) = custody(&["verify", "--db", &db.url, "--key", &key_string, "--json"]);
    assert!(ok, "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["entries"], n, "{v}");
    assert!(v["checkpoints"].as_u64().unwrap() >= 1, "{v}");
}

#[test]
fn a_replica_whose_connection_is_terminated_connects_again_and_the_log_stays_whole() {
    use custody::audit::{Audit, Draft, Kind};
    use custody::store::postgres::PgStore;
    let Some(db) = Db::new("reconnect") else {
        return;
    };
    let key = [12u8; 32];
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let url = db.url.clone();
    let audit = rt.block_on(async {
        let signer = tlog::Signer::new("custody.test/shared", key).unwrap();
        let seal = signer.derive_secret(custody::store::postgres::ENTRY_SEAL);
        let store = PgStore::connect(&url, "replica-a", seal).unwrap();
        Audit::with_store(store, signer, true, dir.path(), &audit_config(dir.path()))
            .unwrap()
            .audit
    });
    let append = |n: u64| {
        rt.block_on(audit.append(Draft::gateway(
            Kind::Heartbeat,
            "",
            format!("{{\"n\":{n}}}"),
        )))
    };
    for n in 0..10 {
        append(n).unwrap();
    }
    // The replica's backend is terminated (as a failover or an operator would).
    let terminated: i64 = db
        .admin()
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = 'custody replica-a' AND datname = current_database()",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(terminated, 1);
    // A round on the lost connection fails (and is not acknowledged); the next one connects
    // again.
    let mut ok = 0;
    for n in 10..20 {
        if append(n).is_ok() {
            ok += 1;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        ok >= 8,
        "only {ok} of 10 appends after the termination succeeded"
    );
    rt.block_on(async {
        audit.checkpoint().await.unwrap();
        audit.close().await;
    });
    let n: i64 = db
        .admin()
        .query_one("SELECT count(*) FROM entries", &[])
        .unwrap()
        .get(0);
    let key_string = tlog::Signer::new("custody.test/shared", key)
        .unwrap()
        .verifier()
        .to_key_string();
    let (verified, out, err) =
        custody(&["verify", "--db", &db.url, "--key", &key_string, "--json"]);
    assert!(verified, "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["entries"], n, "{v}");
}

#[test]
fn an_entry_the_database_alone_wrote_is_not_integrated() {
    use custody::audit::{Audit, Draft, Kind};
    use custody::store::postgres::{ENTRY_SEAL, PgStore};
    let Some(db) = Db::new("unsealed") else {
        return;
    };
    let key = [13u8; 32];
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let url = db.url.clone();
    let open = |name: &str, dir: &std::path::Path| {
        let signer = tlog::Signer::new("custody.test/shared", key).unwrap();
        let store = PgStore::connect(&url, name, signer.derive_secret(ENTRY_SEAL)).unwrap();
        rt.block_on(async { Audit::with_store(store, signer, true, dir, &audit_config(dir)) })
            .unwrap()
            .audit
    };
    let a = open("replica-a", dir_a.path());
    let b = open("replica-b", dir_b.path());
    let append = |audit: &Audit, n: u32| {
        rt.block_on(audit.append(Draft::gateway(
            Kind::Heartbeat,
            "",
            format!("{{\"n\":{n}}}"),
        )))
    };
    for n in 0..5 {
        append(&a, n).unwrap();
        append(&b, n).unwrap();
    }
    // Someone with only the database appends a row, as a replica would, but without the key.
    let mut admin = db.admin();
    let next: i64 = admin
        .query_one("SELECT next_index FROM log_sequence", &[])
        .unwrap()
        .get(0);
    admin
        .execute(
            "INSERT INTO entries (idx, leaf, data, time_ns, replica, seal) VALUES ($1, $2, $3, 0, 'replica-a', $4)",
            &[&next, &vec![7u8; 32], &b"forged".to_vec(), &vec![0u8; 32]],
        )
        .unwrap();
    admin
        .execute("UPDATE log_sequence SET next_index = $1", &[&(next + 1)])
        .unwrap();
    let refused = append(&b, 99).expect_err("a round over a forged row must not commit");
    assert!(refused.to_string().contains("not sealed"), "{refused}");
    // Nothing was written past the forged row, and no checkpoint covers it.
    let max: i64 = admin
        .query_one("SELECT max(idx) FROM entries", &[])
        .unwrap()
        .get(0);
    assert_eq!(max, next, "no entry was committed after the forged one");
    let covered: i64 = admin
        .query_one("SELECT coalesce(max(size), 0) FROM checkpoints", &[])
        .unwrap()
        .get(0);
    assert!(
        covered <= next,
        "a checkpoint covers the forged row ({covered})"
    );
    rt.block_on(async {
        a.close().await;
        b.close().await;
    });
}
