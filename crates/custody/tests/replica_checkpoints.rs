//! What a replica that is not the steward publishes: the steward's checkpoint from the shared
//! log, with only the signature lines it can vouch for. A cosignature line written into the
//! database by someone without a witness's key is not published as one.
//!
//! Needs PostgreSQL (see `pg_common`).

mod common;
mod pg_common;

use std::time::{Duration, Instant};

use common::call_receipt;
use pg_common::{Db, Replicas, config, logs, start, terminate};

/// The checkpoint the replica at `base` publishes.
async fn published(base: &str) -> String {
    reqwest::get(format!("{base}/api/v1/log/checkpoint"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The size a checkpoint note signs.
fn size_of(note: &str) -> u64 {
    note.lines()
        .nth(1)
        .and_then(|l| l.parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_cosignature_only_the_database_holds_is_not_published() {
    let Some(db) = Db::new("replica_cosignatures") else {
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let key = root.path().join("log.key");
    // An upstream that is not there: each call still records its request and its failure.
    let upstream = "http://127.0.0.1:9/mcp";
    let configs = [
        config(root.path(), "r0", &db.url, &key, upstream),
        config(root.path(), "r1", &db.url, &key, upstream),
    ];
    let rt = pg_common::runtime();
    // r0 starts first and holds the steward's lease.
    let (r0, base0) = start(&configs[0]).unwrap();
    let mut procs = Replicas(vec![r0]);
    let (r1, base1) = start(&configs[1]).unwrap();
    procs.push(r1);
    terminate(&mut procs[1]);
    rt.block_on(async {
        for _ in 0..3 {
            call_receipt(&base0).await;
        }
    });
    // The steward signs everything the log holds.
    let started = Instant::now();
    let (size, note) = loop {
        let size = db.contiguous_entries();
        let stored: Option<(i64, String)> = db
            .admin()
            .query_opt(
                "SELECT size, note FROM checkpoints ORDER BY size DESC LIMIT 1",
                &[],
            )
            .unwrap()
            .map(|r| (r.get(0), r.get(1)));
        if let Some((s, note)) = stored.filter(|(s, _)| *s == size) {
            break (s, note);
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no checkpoint of the whole log\n{}",
            logs(&configs)
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    // A cosignature line in the right shape, from a witness nobody configured.
    let forged = format!(
        "{note}\u{2014} witness.example/forged {}\n",
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
    );
    let changed = db
        .admin()
        .execute(
            "UPDATE checkpoints SET note = $1 WHERE size = $2",
            &[&forged, &size],
        )
        .unwrap();
    assert_eq!(changed, 1);
    // r1, started again while the steward is paused (it keeps its lease, and signs nothing
    // newer), publishes the stored checkpoint: its signature checks, the forged line is not
    // published.
    let steward = nix::unistd::Pid::from_raw(procs[0].id() as i32);
    nix::sys::signal::kill(steward, nix::sys::signal::Signal::SIGSTOP).unwrap();
    let (r1, base1_again) = start(&configs[1]).unwrap();
    procs[1] = r1;
    assert_ne!(base1, base1_again);
    let note = rt.block_on(async {
        let started = Instant::now();
        loop {
            let note = published(&base1_again).await;
            if size_of(&note) >= u64::try_from(size).unwrap() {
                return note;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "r1 never published size {size}: {note}\n{}",
                logs(&configs)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    nix::sys::signal::kill(steward, nix::sys::signal::Signal::SIGCONT).unwrap();
    assert_eq!(size_of(&note), u64::try_from(size).unwrap(), "{note}");
    assert!(!note.contains("witness.example"), "{note}");
    assert!(note.contains("custody.test/replicas"), "{note}");
    let log = std::fs::read_to_string(configs[1].with_file_name("stderr.log")).unwrap();
    assert!(log.contains("published without them"), "{log}");
    for p in procs.iter_mut() {
        terminate(p);
    }
}

/// In required mode a replica that is not the steward publishes the steward's stored
/// checkpoint only once its cosignatures meet the quorum: the steward stores each checkpoint
/// before its witnesses answer, so the database holds withheld ones too.
#[test]
fn a_replica_publishes_no_checkpoint_its_witnesses_withheld() {
    use std::os::unix::fs::OpenOptionsExt;
    let Some(db) = Db::new("replica_withheld") else {
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let signer = tlog::Signer::new("custody.test/replicas", rand::random::<[u8; 32]>()).unwrap();
    let key = root.path().join("log.key");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&key)
        .unwrap();
    std::io::Write::write_all(&mut f, format!("{}\n", signer.to_key_string()).as_bytes()).unwrap();
    // The one witness the quorum needs is not there: every checkpoint is withheld.
    let witness =
        tlog::cosignature::CosignatureSigner::new("w.witness.example", rand::random::<[u8; 32]>())
            .unwrap();
    let policy = root.path().join("witnesses.policy");
    std::fs::write(
        &policy,
        format!(
            "log {}\nwitness w {} http://127.0.0.1:9/\nquorum w\n",
            signer.verifier().to_key_string(),
            witness.verifier().to_key_string()
        ),
    )
    .unwrap();
    let rest = format!(
        "[auth]\nanonymous = true\n[endpoints.f.upstream]\ntransport = \"http\"\nurl = \"http://127.0.0.1:9/mcp\"\n\
         [witness]\npolicy = \"{}\"\nmode = \"required\"\nmax_lag = \"60s\"\ntimeout = \"1s\"\n",
        policy.display()
    );
    let configs = [
        pg_common::config_with(root.path(), "r0", &db.url, &key, &rest),
        pg_common::config_with(root.path(), "r1", &db.url, &key, &rest),
    ];
    let rt = pg_common::runtime();
    let (r0, base0) = start(&configs[0]).unwrap();
    let mut procs = Replicas(vec![r0]);
    let (r1, base1) = start(&configs[1]).unwrap();
    procs.push(r1);
    rt.block_on(async {
        for _ in 0..3 {
            call_receipt(&base0).await;
        }
    });
    // The steward signs and stores checkpoints of the log; none meets the quorum.
    let started = Instant::now();
    loop {
        let stored: i64 = db
            .admin()
            .query_one("SELECT coalesce(max(size), 0) FROM checkpoints", &[])
            .unwrap()
            .get(0);
        if stored >= 3 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the steward stored no checkpoint\n{}",
            logs(&configs)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Give r1 several checkpoint intervals to follow the steward: it publishes none of them.
    std::thread::sleep(Duration::from_secs(1));
    for base in [&base0, &base1] {
        let note = rt.block_on(published(base));
        assert!(
            size_of(&note) == 0,
            "{base} published {note}\n{}",
            logs(&configs)
        );
    }
    for p in procs.iter_mut() {
        terminate(p);
    }
}
