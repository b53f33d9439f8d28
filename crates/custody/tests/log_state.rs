//! Issue 13, class 1: the log's state does not live in SQLite alone. Each test is an attack by
//! someone who can write the data directory but does not hold the log key, and checks the
//! specific way it fails.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;
use rusqlite::{Connection, params};
use serde_json::{Value, json};
use tlog::entry::Kind;

fn config_text(dir: &Path, extra: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n[auth]\nanonymous = true\n{extra}\n{}",
        dir.display(),
        stdio_fixture("f", "")
    )
}

/// Starts a gateway on `dir`; the error message when it refuses.
async fn start(dir: &Path, extra: &str) -> Result<custody::http::Running, String> {
    let config = custody::config::Config::parse(&config_text(dir, extra), "t.toml").unwrap();
    custody::http::start(&config)
        .await
        .map_err(|e| e.to_string())
}

/// A log with a session's worth of traffic, shut down cleanly.
async fn some_log() -> tempfile::TempDir {
    let gw = Gateway::start("", &stdio_fixture("f", "")).await;
    let mut c = gw.client("f");
    c.initialize().await;
    for _ in 0..3 {
        c.call(
            "tools/call",
            json!({"name": "test_simple_text", "arguments": {}}),
        )
        .await;
    }
    assert_eq!(c.delete().await, 200);
    let dir = gw.shutdown().await;
    assert_log_verifies(dir.path());
    dir
}

fn verify(dir: &Path, extra: &[&str]) -> (bool, String, String) {
    let out = Command::new(custody_bin())
        .arg("verify")
        .arg("--data")
        .arg(dir)
        .args(extra)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Rewrites entry `index` as an attacker without the key would: new bytes, a recomputed leaf
/// hash and recomputed interior nodes, so the database is consistent with itself.
fn rewrite_entry(dir: &Path, index: usize) {
    let mut log = entries(dir);
    log[index].detail = "{\"rewritten\":true}".into();
    let db = Connection::open(dir.join("log.sqlite")).unwrap();
    db.execute_batch("DELETE FROM entries; DELETE FROM nodes;")
        .unwrap();
    let mut range = tlog::CompactRange::new();
    for e in &log {
        let bytes = e.encode();
        let leaf = tlog::leaf_hash(&bytes);
        range.append(leaf, |n| {
            if n.level >= 8 {
                db.execute(
                    "INSERT INTO nodes (level, idx, hash) VALUES (?1, ?2, ?3)",
                    params![n.level, n.index as i64, n.hash.0.to_vec()],
                )
                .unwrap();
            }
        });
        db.execute(
            "INSERT INTO entries (idx, leaf, data) VALUES (?1, ?2, ?3)",
            params![e.index as i64, leaf.0.to_vec(), bytes],
        )
        .unwrap();
    }
}

#[tokio::test]
async fn a_rewritten_history_with_emptied_checkpoints_is_refused_at_start() {
    let dir = some_log().await;
    rewrite_entry(dir.path(), 3);
    let db = Connection::open(dir.path().join("log.sqlite")).unwrap();
    db.execute_batch("DELETE FROM checkpoints;").unwrap();
    drop(db);
    let err = start(dir.path(), "")
        .await
        .err()
        .expect("started on a rewritten log");
    assert!(
        err.contains("log.head") && err.contains("no longer matches the checkpoint"),
        "names the file that still holds the truth: {err}"
    );
    // Without the head file, checkpoints.jsonl still holds it, and the leaves are rehashed.
    std::fs::remove_file(dir.path().join("log.head")).unwrap();
    let err = start(dir.path(), "")
        .await
        .err()
        .expect("started on a rewritten log");
    assert!(
        err.contains("checkpoints.jsonl") && err.contains("fold to root"),
        "{err}"
    );
    let (ok, _, err) = verify(dir.path(), &[]);
    assert!(!ok && err.contains("checkpoints.jsonl"), "{err}");
}

#[tokio::test]
async fn a_deleted_or_emptied_database_does_not_start_a_fresh_log() {
    let dir = some_log().await;
    let size = entries(dir.path()).len();
    std::fs::copy(
        dir.path().join("log.sqlite"),
        dir.path().join("kept.sqlite"),
    )
    .unwrap();
    std::fs::remove_file(dir.path().join("log.sqlite")).unwrap();
    let err = start(dir.path(), "")
        .await
        .err()
        .expect("started a fresh log");
    assert!(
        err.contains("holds 0 entries")
            && err.contains(&format!("signed at size {size}"))
            && err.contains("custody keygen --origin NEW --predecessor"),
        "{err}"
    );
    assert!(
        !dir.path().join("log.sqlite").exists(),
        "the refusal leaves no empty database for the next start to accept"
    );
    let (ok, _, err) = verify(dir.path(), &[]);
    assert!(!ok && err.contains("was deleted"), "{err}");

    // Emptied instead of deleted.
    std::fs::copy(
        dir.path().join("kept.sqlite"),
        dir.path().join("log.sqlite"),
    )
    .unwrap();
    let db = Connection::open(dir.path().join("log.sqlite")).unwrap();
    db.execute_batch("DELETE FROM entries; DELETE FROM nodes; DELETE FROM checkpoints;")
        .unwrap();
    drop(db);
    let err = start(dir.path(), "")
        .await
        .err()
        .expect("started on an emptied log");
    assert!(err.contains("holds 0 entries"), "{err}");

    // Restored, it starts again and continues the same log.
    std::fs::copy(
        dir.path().join("kept.sqlite"),
        dir.path().join("log.sqlite"),
    )
    .unwrap();
    let running = start(dir.path(), "").await.unwrap();
    running.shutdown().await;
    assert_log_verifies(dir.path());
}

#[tokio::test]
async fn a_head_file_that_is_garbage_or_signed_by_another_key_is_refused() {
    let dir = some_log().await;
    let head = dir.path().join("log.head");
    let good = std::fs::read_to_string(&head).unwrap();
    std::fs::write(&head, "garbage").unwrap();
    let err = start(dir.path(), "").await.err().unwrap();
    assert!(
        err.contains("log.head") && err.contains("not JSON"),
        "{err}"
    );

    let other = tlog::Signer::new("someone.else/log", [9; 32]).unwrap();
    let forged = tlog::Checkpoint {
        origin: "someone.else/log".into(),
        size: 1,
        root: tlog::leaf_hash(b"x"),
        extensions: vec![],
    }
    .sign(&other)
    .encode();
    let mut v: Value = serde_json::from_str(&good).unwrap();
    v["note"] = json!(forged);
    v["size"] = json!(1);
    std::fs::write(&head, v.to_string()).unwrap();
    let err = start(dir.path(), "").await.err().unwrap();
    assert!(
        err.contains("log.head is not a checkpoint this log signed"),
        "{err}"
    );
}

#[tokio::test]
async fn a_torn_last_line_of_checkpoints_jsonl_is_cut_and_the_log_goes_on() {
    let dir = some_log().await;
    let path = dir.path().join("checkpoints.jsonl");
    let mut text = std::fs::read_to_string(&path).unwrap();
    let lines = text.lines().count();
    text.push_str("{\"size\":99,\"TORN");
    std::fs::write(&path, text).unwrap();
    let running = start(dir.path(), "").await.unwrap();
    running.shutdown().await;
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.ends_with('\n') && !text.contains("TORN"), "{text}");
    assert!(text.lines().count() > lines);
    assert_log_verifies(dir.path());
}

#[tokio::test]
async fn a_corrupted_wal_that_drops_checkpointed_entries_is_refused() {
    let work = tempfile::tempdir().unwrap();
    let (mut child, base) = serve_in(work.path(), &stdio_fixture("f", ""));
    let client = Client::new(format!("{base}/mcp/f")).stateless();
    for _ in 0..20 {
        client
            .call(
                "tools/call",
                json!({"name": "test_simple_text", "arguments": {}}),
            )
            .await;
    }
    // Wait for a checkpoint that covers them, then crash: the WAL still holds the frames.
    let data = work.path().join("data");
    let size = entries(&data).len() as u64;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let head: Value =
            serde_json::from_str(&std::fs::read_to_string(data.join("log.head")).unwrap()).unwrap();
        if head["size"].as_u64().unwrap() >= size {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no checkpoint");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let wal = data.join("log.sqlite-wal");
    let mut bytes = std::fs::read(&wal).unwrap();
    assert!(bytes.len() > 4096, "the WAL holds the recent commits");
    // Damage a frame in the middle: SQLite drops it and every frame after it.
    let at = bytes.len() / 2;
    for b in &mut bytes[at..at + 64] {
        *b ^= 0xff;
    }
    std::fs::write(&wal, bytes).unwrap();
    let out = Command::new(custody_bin())
        .args(["serve", "--config"])
        .arg(work.path().join("custody.toml"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("entries were lost or removed") || err.contains("no longer matches"),
        "{err}"
    );
}

#[tokio::test]
async fn a_second_gateway_on_the_same_directory_refuses_naming_the_first() {
    let work = tempfile::tempdir().unwrap();
    let (mut first, _) = serve_in(work.path(), &stdio_fixture("f", ""));
    let out = Command::new(custody_bin())
        .args(["serve", "--config"])
        .arg(work.path().join("custody.toml"))
        .output()
        .unwrap();
    first.kill().unwrap();
    first.wait().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("is in use by another custody process")
            && err.contains(&format!("pid {}", first.id())),
        "{err}"
    );
}

#[tokio::test]
async fn a_checkpoint_that_cannot_be_written_fails_closed_and_recovers() {
    let gw = Gateway::start("", &stdio_fixture("f", "")).await;
    let readyz = format!("http://{}/readyz", gw.addr);
    let c = gw.client("f").stateless();
    let ok = c
        .call(
            "tools/call",
            json!({"name": "test_simple_text", "arguments": {}}),
        )
        .await;
    assert!(ok.response()["result"].is_object());
    // A directory where the file should be: every append to it fails.
    let path = gw.data.path().join("checkpoints.jsonl");
    std::fs::rename(&path, gw.data.path().join("kept.jsonl")).unwrap();
    std::fs::create_dir(&path).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let refused = loop {
        let a = c
            .call(
                "tools/call",
                json!({"name": "test_simple_text", "arguments": {}}),
            )
            .await;
        if a.response()["error"]["code"] == -32015 {
            break a;
        }
        assert!(std::time::Instant::now() < deadline, "never failed closed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        refused
            .error_message()
            .contains("checkpoint could not be made durable"),
        "{}",
        refused.error_message()
    );
    let r = reqwest::get(&readyz).await.unwrap();
    assert_eq!(r.status(), 503);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["reasons"][0]
            .as_str()
            .unwrap()
            .contains("checkpoints.jsonl"),
        "{body}"
    );
    // The operator fixes it: the next checkpoint goes through and calls flow again.
    std::fs::remove_dir(&path).unwrap();
    std::fs::rename(gw.data.path().join("kept.jsonl"), &path).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while reqwest::get(&readyz).await.unwrap().status() != 200 {
        assert!(std::time::Instant::now() < deadline, "never recovered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let again = c
        .call(
            "tools/call",
            json!({"name": "test_simple_text", "arguments": {}}),
        )
        .await;
    assert!(
        again.response()["result"].is_object(),
        "{:?}",
        again.response()
    );
    let dir = gw.shutdown().await;
    assert_log_verifies(dir.path());
}

#[tokio::test]
async fn the_scrub_finds_an_entry_changed_under_a_running_gateway() {
    let gw = Gateway::start(
        "",
        &format!(
            "[audit]\nscrub_interval = \"1s\"\n{}",
            stdio_fixture("f", "")
        ),
    )
    .await;
    let readyz = format!("http://{}/readyz", gw.addr);
    let c = gw.client("f").stateless();
    c.call(
        "tools/call",
        json!({"name": "test_simple_text", "arguments": {}}),
    )
    .await;
    assert_eq!(reqwest::get(&readyz).await.unwrap().status(), 200);
    // Wait for a checkpoint covering the call, then change an old entry's bytes behind the
    // gateway's back (the leaf hash stays: only a rehash finds it).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let db = Connection::open(gw.data.path().join("log.sqlite")).unwrap();
    let data: Vec<u8> = db
        .query_row("SELECT data FROM entries WHERE idx = 2", [], |r| r.get(0))
        .unwrap();
    let mut changed = data.clone();
    let last = changed.len() - 1;
    changed[last] ^= 1;
    db.execute(
        "UPDATE entries SET data = ?1 WHERE idx = 2",
        params![changed],
    )
    .unwrap();
    drop(db);
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let body: Value = loop {
        let r = reqwest::get(&readyz).await.unwrap();
        if r.status() == 503 {
            break r.json().await.unwrap();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the scrub never noticed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let reason = body["reasons"][0].as_str().unwrap();
    assert!(
        reason.contains("scrub") && reason.contains("entry 2"),
        "{reason}"
    );
    let alarm = entries(gw.data.path())
        .into_iter()
        .find(|e| e.kind == Kind::Alarm)
        .expect("the alarm is recorded");
    let detail: Value = serde_json::from_str(&alarm.detail).unwrap();
    assert_eq!(detail["alarm"], "scrub");
    assert!(detail["problem"].as_str().unwrap().contains("entry 2"));
    // Calls still work: the tree in memory is intact and keeps being signed.
    let a = c
        .call(
            "tools/call",
            json!({"name": "test_simple_text", "arguments": {}}),
        )
        .await;
    assert!(a.response()["result"].is_object());
    gw.shutdown().await;
}

#[tokio::test]
async fn verify_checks_the_files_beside_the_database_and_accepts_a_proof_as_trusted() {
    let dir = some_log().await;
    let (ok, out, err) = verify(dir.path(), &[]);
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("checked against")
            && out.contains("in checkpoints.jsonl")
            && out.contains("log.head"),
        "says what it checked against: {out}"
    );
    // A proof from the API, kept by a client, is a trusted checkpoint plus an entry.
    let gw = Gateway::start_in(dir, "", &stdio_fixture("f", "")).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let proof = reqwest::get(format!("http://{}/api/v1/log/proof?index=3", gw.addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let dir = gw.shutdown().await;
    let file = dir.path().join("proof.txt");
    std::fs::write(&file, &proof).unwrap();
    let (ok, out, err) = verify(dir.path(), &["--trusted", file.to_str().unwrap()]);
    assert!(ok, "a proof of an intact log is no alarm: {out}{err}");
    assert!(out.contains("trusted"), "{out}");
    // The entry the proof names changed (hashes recomputed, checkpoints re-made by nobody):
    // the proof catches it even with the files beside the database removed.
    rewrite_entry(dir.path(), 3);
    let db = Connection::open(dir.path().join("log.sqlite")).unwrap();
    db.execute_batch("DELETE FROM checkpoints;").unwrap();
    drop(db);
    std::fs::remove_file(dir.path().join("checkpoints.jsonl")).unwrap();
    std::fs::remove_file(dir.path().join("log.head")).unwrap();
    let (ok, _, err) = verify(dir.path(), &["--trusted", file.to_str().unwrap()]);
    assert!(!ok, "the proof catches the rewrite");
    assert!(err.contains("entry 3") && err.contains("proof"), "{err}");
    // A proof file that does not verify is a failure with its reason, not a crash.
    std::fs::write(&file, proof.replace("index 3", "index 4")).unwrap();
    let (ok, _, err) = verify(dir.path(), &["--trusted", file.to_str().unwrap()]);
    assert!(!ok && err.contains("does not verify"), "{err}");
}

#[tokio::test]
async fn a_new_log_after_data_loss_names_the_lost_one_first() {
    let old = some_log().await;
    let new = tempfile::tempdir().unwrap();
    let key = new.path().join("log.key");
    let predecessor = old.path().join("checkpoints.jsonl");
    // The old log's own origin cannot follow itself.
    let old_key = std::fs::read_to_string(old.path().join("log.key")).unwrap();
    let old_origin = tlog::Signer::from_key_string(&old_key)
        .unwrap()
        .name()
        .to_string();
    let out = Command::new(custody_bin())
        .args(["keygen", "--origin", &old_origin, "--out"])
        .arg(new.path().join("same.key"))
        .arg("--predecessor")
        .arg(&predecessor)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("checkpoint of this very log"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(custody_bin())
        .args(["keygen", "--origin", "ci.example/custody-2", "--out"])
        .arg(&key)
        .arg("--predecessor")
        .arg(&predecessor)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("[audit] predecessor"),
        "{stdout}"
    );
    let extra = format!(
        "[audit]\nkey_file = \"{}\"\npredecessor = \"{}\"\n",
        key.display(),
        predecessor.display()
    );
    let running = start(new.path(), &extra).await.unwrap();
    running.shutdown().await;
    let log = entries(new.path());
    assert_eq!(log[0].kind, Kind::Predecessor);
    let detail: Value = serde_json::from_str(&log[0].detail).unwrap();
    assert_eq!(detail["origin"], old_origin);
    assert_eq!(log[1].kind, Kind::GatewayStarted);
    assert_log_verifies(new.path());
}
