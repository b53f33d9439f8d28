//! The audit log end to end: every message recorded, receipts that verify offline, `custody
//! verify` on real logs (intact, tampered in every way, across restarts, after a crash).

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;
use rusqlite::{Connection, params};
use serde_json::{Value, json};
use tlog::entry::{Direction, Entry, Kind};

async fn gateway() -> Gateway {
    Gateway::start("", &stdio_fixture("f", "")).await
}

/// `custody verify` on a data directory: (success, stdout, stderr).
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

/// Runs a session with a plain call and a streamed one, then shuts down.
async fn some_traffic() -> tempfile::TempDir {
    let gw = gateway().await;
    let mut c = gw.client("f");
    c.initialize().await;
    c.call(
        "tools/call",
        json!({"name": "test_simple_text", "arguments": {}}),
    )
    .await;
    c.call("tools/call", json!({"name": "test_tool_with_progress", "arguments": {}, "_meta": {"progressToken": "p"}}))
        .await;
    assert_eq!(c.delete().await, 200);
    gw.shutdown().await
}

#[tokio::test]
async fn every_message_is_recorded_with_its_context() {
    let dir = some_traffic().await;
    let log = entries(dir.path());
    let kinds: Vec<(Kind, Direction)> = log.iter().map(|e| (e.kind, e.direction)).collect();
    assert_eq!(
        kinds.first(),
        Some(&(Kind::GatewayStarted, Direction::Gateway))
    );
    assert_eq!(
        kinds.last(),
        Some(&(Kind::GatewayStopped, Direction::Gateway))
    );
    let count = |k: Kind, d: Direction| kinds.iter().filter(|x| **x == (k, d)).count();
    assert_eq!(
        count(Kind::Request, Direction::ClientToUpstream),
        3,
        "initialize and two calls: {kinds:?}"
    );
    assert_eq!(count(Kind::Response, Direction::UpstreamToClient), 3);
    assert_eq!(
        count(Kind::Notification, Direction::ClientToUpstream),
        1,
        "initialized"
    );
    assert_eq!(
        count(Kind::Notification, Direction::UpstreamToClient),
        3,
        "three progress notifications"
    );
    assert_eq!(count(Kind::SessionOpened, Direction::Gateway), 1);
    assert_eq!(count(Kind::SessionClosed, Direction::Gateway), 1);
    // Every response names its request, which came first and carries the same id and session.
    for (i, e) in log.iter().enumerate() {
        assert_eq!(e.index, i as u64);
        if e.kind == Kind::Response {
            let r = &log[e.request.unwrap() as usize];
            assert_eq!(
                (r.kind, &r.id, &r.session),
                (Kind::Request, &e.id, &e.session),
                "entry {i}"
            );
            assert!(r.index < e.index);
        }
    }
    let call = log.iter().find(|e| e.target == "test_simple_text").unwrap();
    assert_eq!(call.method, "tools/call");
    assert_eq!(call.endpoint, "f");
    assert_eq!(call.caller, "{\"kind\":\"anonymous\"}");
    let msg: Value = serde_json::from_slice(&call.message).unwrap();
    assert_eq!(
        msg["params"]["name"], "test_simple_text",
        "the message is stored whole"
    );
    let (ok, out, err) = verify(dir.path(), &[]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("custody verify: OK"), "{out}");
}

#[tokio::test]
async fn receipts_verify_offline_with_only_the_verifier_key() {
    let gw = Gateway::start(
        "",
        &format!(
            "[audit]\ncheckpoint_interval = \"50ms\"\n{}",
            stdio_fixture("f", "")
        ),
    )
    .await;
    let c = gw.client("f").stateless();
    let a = c
        .call(
            "tools/call",
            json!({"name": "test_simple_text", "arguments": {}}),
        )
        .await;
    let receipt = a.response()["result"]["_meta"]["dev.custody/receipt"].clone();
    let log = receipt["log"].as_str().unwrap().to_string();
    let response_index = receipt["response"]["index"].as_u64().unwrap();
    let response_leaf = receipt["response"]["leaf"].as_str().unwrap().to_string();
    assert_eq!(
        receipt["request"]["index"].as_u64().unwrap() + 1,
        response_index,
        "{receipt}"
    );

    tokio::time::sleep(Duration::from_millis(300)).await;
    let http = reqwest::Client::new();
    let base = format!("http://{}", gw.addr);
    let key = http
        .get(format!("{base}/api/v1/log/key"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(key.starts_with(&format!("{log}+")), "{key}");
    let cp = http
        .get(format!("{base}/api/v1/log/checkpoint"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(cp.starts_with(&format!("{log}\n")), "{cp}");
    let proof = http
        .get(format!("{base}/api/v1/log/proof?index={response_index}"))
        .send()
        .await
        .unwrap();
    assert_eq!(proof.status(), 200);
    let proof = proof.text().await.unwrap();
    let file = gw.data.path().join("receipt.tlog-proof");
    std::fs::write(&file, &proof).unwrap();
    let run = |leaf: &str| {
        Command::new(custody_bin())
            .args(["receipt", "verify", "--key", key.trim(), "--leaf", leaf])
            .arg(&file)
            .output()
            .unwrap()
    };
    let out = run(&response_leaf);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("entry {response_index}")));
    let out = run(&"0".repeat(64));
    assert!(
        !out.status.success(),
        "a receipt for another leaf must not verify"
    );
    let tampered = proof.replacen("index ", "index 1", 1);
    std::fs::write(&file, tampered).unwrap();
    let out = run(&response_leaf);
    assert!(!out.status.success());

    let missing = http
        .get(format!("{base}/api/v1/log/proof?index=999999"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    let bad = http
        .get(format!("{base}/api/v1/log/proof?index=x"))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    gw.shutdown().await;
}

#[tokio::test]
async fn refused_input_is_recorded() {
    let gw = gateway().await;
    let c = gw.client("f").stateless();
    let body = c.request_body(
        "tools/call",
        json!({"name": "test_simple_text", "arguments": {}}),
    );
    let a = Client::send(
        c.post_builder()
            .header("mcp-method", "tools/call")
            .header("mcp-name", "other")
            .body(body.to_string()),
    )
    .await;
    assert_eq!(a.status, 400);
    let bad = Client::send(c.post_builder().body("{not json")).await;
    assert_eq!(bad.status, 400);
    let dir = gw.shutdown().await;
    let rejected: Vec<Entry> = entries(dir.path())
        .into_iter()
        .filter(|e| e.kind == Kind::Rejected)
        .collect();
    assert_eq!(rejected.len(), 2, "{rejected:#?}");
    assert_eq!(rejected[0].target, "test_simple_text");
    let detail: Value = serde_json::from_str(&rejected[0].detail).unwrap();
    assert_eq!(detail["error"]["code"], -32020);
    assert_eq!(detail["status"], 400);
    assert_eq!(
        &rejected[1].message[..],
        b"{not json",
        "even unparseable input is kept"
    );
    assert!(verify(dir.path(), &[]).0);
}

/// Changes the stored log with SQL, as an operator with database access could.
fn tamper(dir: &Path, sql: &str) {
    let db = Connection::open(dir.join("log.sqlite")).unwrap();
    db.execute_batch(sql).unwrap();
}

async fn fresh_log() -> tempfile::TempDir {
    let dir = some_traffic().await;
    assert!(verify(dir.path(), &[]).0);
    dir
}

#[tokio::test]
async fn tampering_is_detected_with_a_precise_message() {
    // A changed byte in a stored entry.
    let dir = fresh_log().await;
    let db = Connection::open(dir.path().join("log.sqlite")).unwrap();
    let mut data: Vec<u8> = db
        .query_row("SELECT data FROM entries WHERE idx = 4", [], |r| r.get(0))
        .unwrap();
    // A byte of the header (the first key of its first JSON field, past the fixed-size
    // version, index, kind, direction and time), not of a payload commitment: with the leaf
    // recomputed below, the signed root is what catches it.
    let at = 19
        + data[19..]
            .windows(2)
            .position(|w| w == b"{\"")
            .expect("the entry holds JSON")
        + 2;
    data[at] ^= 0x20;
    db.execute("UPDATE entries SET data = ?1 WHERE idx = 4", params![data])
        .unwrap();
    drop(db);
    let (ok, _, err) = verify(dir.path(), &[]);
    assert!(!ok);
    assert!(
        err.contains("entry 4: its bytes do not hash to the leaf hash stored with it"),
        "{err}"
    );

    // The same change with the stored leaf hash recomputed to match.
    let db = Connection::open(dir.path().join("log.sqlite")).unwrap();
    db.execute(
        "UPDATE entries SET leaf = ?1 WHERE idx = 4",
        params![tlog::leaf_hash(&data).0.to_vec()],
    )
    .unwrap();
    drop(db);
    let (ok, _, err) = verify(dir.path(), &[]);
    assert!(!ok);
    assert!(err.contains("do not hash to the root signed by"), "{err}");

    // A deleted entry.
    let dir = fresh_log().await;
    tamper(dir.path(), "DELETE FROM entries WHERE idx = 3");
    let (ok, _, err) = verify(dir.path(), &[]);
    assert!(!ok);
    assert!(
        err.contains("entry 3: missing") && err.contains("deleted"),
        "{err}"
    );

    // Two entries swapped.
    let dir = fresh_log().await;
    tamper(
        dir.path(),
        "UPDATE entries SET idx = -1 WHERE idx = 5; UPDATE entries SET idx = 5 WHERE idx = 6; UPDATE entries SET idx = 6 WHERE idx = -1;",
    );
    let (ok, _, err) = verify(dir.path(), &[]);
    assert!(!ok);
    assert!(
        err.contains("entry 5: it is entry 6 of the log") && err.contains("reordered"),
        "{err}"
    );

    // A truncated tail (the tree state rolled back too).
    let dir = fresh_log().await;
    tamper(
        dir.path(),
        "DELETE FROM entries WHERE idx >= (SELECT max(idx) - 1 FROM entries)",
    );
    let (ok, _, err) = verify(dir.path(), &[]);
    assert!(!ok);
    assert!(err.contains("the tail was removed"), "{err}");

    // An inserted entry (everything after it renumbered).
    let dir = fresh_log().await;
    let db = Connection::open(dir.path().join("log.sqlite")).unwrap();
    let n: i64 = db
        .query_row("SELECT count(*) FROM entries", [], |r| r.get(0))
        .unwrap();
    for i in (2..n).rev() {
        db.execute(
            "UPDATE entries SET idx = idx + 1 WHERE idx = ?1",
            params![i],
        )
        .unwrap();
        // The payloads move with their entries, as a careful forger would move them.
        db.execute(
            "UPDATE payloads SET id = id + 4 WHERE id >> 2 = ?1",
            params![i],
        )
        .unwrap();
    }
    db.execute(
        "INSERT INTO payloads SELECT 8 + (id & 3), time_ns, opening, data FROM payloads WHERE id >> 2 = 1",
        [],
    )
    .unwrap();
    let mut forged = entries(dir.path())[1].clone();
    forged.index = 2;
    forged.detail = "{\"forged\":true}".into();
    let bytes = forged.encode();
    db.execute(
        "INSERT INTO entries (idx, leaf, data) VALUES (2, ?1, ?2)",
        params![tlog::leaf_hash(&bytes).0.to_vec(), bytes],
    )
    .unwrap();
    drop(db);
    let (ok, _, err) = verify(dir.path(), &[]);
    assert!(!ok);
    assert!(err.contains("entry 3: it is entry 2 of the log"), "{err}");

    // A replaced checkpoint signature.
    let dir = fresh_log().await;
    let db = Connection::open(dir.path().join("log.sqlite")).unwrap();
    let note: String = db
        .query_row(
            "SELECT note FROM checkpoints ORDER BY size DESC LIMIT 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let (body, sig) = note.rsplit_once(' ').unwrap();
    let mut sig: Vec<char> = sig.chars().collect();
    sig[10] = if sig[10] == 'A' { 'B' } else { 'A' };
    let forged: String = format!("{body} {}", sig.into_iter().collect::<String>());
    db.execute(
        "UPDATE checkpoints SET note = ?1 WHERE note = ?2",
        params![forged, note],
    )
    .unwrap();
    drop(db);
    let (ok, _, err) = verify(dir.path(), &[]);
    assert!(!ok);
    assert!(
        err.contains("is not a valid checkpoint of this log") && err.contains("does not verify"),
        "{err}"
    );
}

#[tokio::test]
async fn a_log_reforged_with_the_real_key_fails_against_a_trusted_checkpoint() {
    let dir = fresh_log().await;
    let trusted = dir.path().join("trusted.jsonl");
    std::fs::copy(dir.path().join("checkpoints.jsonl"), &trusted).unwrap();

    // The operator holds the key: rewrites an entry, rebuilds every hash and re-signs.
    let key = std::fs::read_to_string(dir.path().join("log.key")).unwrap();
    let signer = tlog::Signer::from_key_string(&key).unwrap();
    let mut log = entries(dir.path());
    log[3].detail = "{\"rewritten\":true}".into();
    let db = Connection::open(dir.path().join("log.sqlite")).unwrap();
    db.execute_batch("DELETE FROM entries; DELETE FROM checkpoints; DELETE FROM nodes;")
        .unwrap();
    let mut range = tlog::CompactRange::new();
    for e in &log {
        let bytes = e.encode();
        let leaf = tlog::leaf_hash(&bytes);
        range.append(leaf, |_| {});
        db.execute(
            "INSERT INTO entries (idx, leaf, data) VALUES (?1, ?2, ?3)",
            params![e.index as i64, leaf.0.to_vec(), bytes],
        )
        .unwrap();
    }
    let note = tlog::Checkpoint {
        origin: signer.name().into(),
        size: range.size(),
        root: range.root(),
        extensions: vec![],
    }
    .sign(&signer)
    .encode();
    db.execute(
        "INSERT INTO checkpoints (size, note, signed_ns) VALUES (?1, ?2, 0)",
        params![range.size() as i64, note],
    )
    .unwrap();
    drop(db);

    let (ok, _, err) = verify(dir.path(), &[]);
    assert!(!ok, "the checkpoints kept beside the database catch it");
    assert!(
        err.contains("checkpoints.jsonl") && err.contains("forked"),
        "{err}"
    );
    // An operator who also removes the files beside the database leaves a log that is
    // consistent on its own; only a checkpoint kept elsewhere catches it then.
    std::fs::remove_file(dir.path().join("checkpoints.jsonl")).unwrap();
    std::fs::remove_file(dir.path().join("log.head")).unwrap();
    let (ok, out, err) = verify(dir.path(), &[]);
    assert!(
        ok,
        "on its own, the re-forged log is self-consistent: {out}{err}"
    );
    let (ok, _, err) = verify(dir.path(), &["--trusted", trusted.to_str().unwrap()]);
    assert!(!ok, "a checkpoint kept elsewhere catches it");
    assert!(
        err.contains("forked") || err.contains("trusted checkpoint"),
        "{err}"
    );
    let (ok, out, _) = verify(
        dir.path(),
        &["--trusted", trusted.to_str().unwrap(), "--json"],
    );
    assert!(!ok);
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["ok"], false);
}

#[tokio::test]
async fn restarts_continue_the_same_log() {
    let dir = some_traffic().await;
    let before = entries(dir.path()).len();
    let gw = Gateway::start_in(dir, "", &stdio_fixture("f", "")).await;
    let c = gw.client("f").stateless();
    let a = c
        .call(
            "tools/call",
            json!({"name": "test_simple_text", "arguments": {}}),
        )
        .await;
    let idx = a.response()["result"]["_meta"]["dev.custody/receipt"]["response"]["index"]
        .as_u64()
        .unwrap();
    assert!(
        idx as usize > before,
        "indexes continue after a restart: {idx} vs {before}"
    );
    let dir = gw.shutdown().await;
    let (ok, out, err) = verify(dir.path(), &[]);
    assert!(ok, "{out}{err}");
    let log = entries(dir.path());
    assert_eq!(
        log.iter()
            .filter(|e| e.kind == Kind::GatewayStarted)
            .count(),
        2
    );
}

#[tokio::test]
async fn durability_none_is_recorded() {
    let gw = Gateway::start(
        "",
        &format!("[audit]\ndurability = \"none\"\n{}", stdio_fixture("f", "")),
    )
    .await;
    let dir = gw.shutdown().await;
    let started = entries(dir.path())
        .into_iter()
        .find(|e| e.kind == Kind::GatewayStarted)
        .unwrap();
    let detail: Value = serde_json::from_str(&started.detail).unwrap();
    assert_eq!(detail["durability"], "none");
}

#[tokio::test]
async fn a_gateway_refuses_to_extend_a_log_that_no_longer_matches_its_checkpoints() {
    let dir = fresh_log().await;
    tamper(
        dir.path(),
        "DELETE FROM entries WHERE idx >= (SELECT max(idx) - 2 FROM entries)",
    );
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n[auth]\nanonymous = true\n{}",
        dir.path().display(),
        stdio_fixture("f", "")
    );
    let config = custody::config::Config::parse(&text, "t.toml").unwrap();
    let err = match custody::http::start(&config).await {
        Ok(_) => panic!("the gateway started on a truncated log"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("holds 11 entries")
            && err.contains("signed at size 14")
            && err.contains("log.head")
            && err.contains("entries were lost or removed"),
        "{err}"
    );
}

#[tokio::test]
async fn an_idle_log_keeps_signing_over_heartbeats() {
    let gw = Gateway::start(
        "",
        &format!(
            "[audit]\ncheckpoint_interval = \"50ms\"\nheartbeat_interval = \"200ms\"\n{}",
            stdio_fixture("f", "")
        ),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(900)).await;
    let latest = gw
        .running
        .as_ref()
        .unwrap()
        .relay
        .audit
        .latest_checkpoint()
        .unwrap();
    let dir = gw.shutdown().await;
    let log = entries(dir.path());
    let beats = log.iter().filter(|e| e.kind == Kind::Heartbeat).count();
    assert!(
        beats >= 2,
        "{beats} heartbeats in {:?}",
        log.iter().map(|e| e.kind).collect::<Vec<_>>()
    );
    assert!(
        latest.size >= 3,
        "checkpoints follow the heartbeats: {}",
        latest.size
    );
    let lines = std::fs::read_to_string(dir.path().join("checkpoints.jsonl")).unwrap();
    assert!(
        lines.lines().count() >= 3,
        "every checkpoint is appended to checkpoints.jsonl"
    );
    assert!(verify(dir.path(), &[]).0);
}
