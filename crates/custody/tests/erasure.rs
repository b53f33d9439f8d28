//! Erasure and retention of payloads in a version-2 log: the tree, the headers and every proof
//! stay valid; `custody verify` lists what was erased and still catches a changed or deleted
//! payload; only erasers may erase, once, and every refusal is recorded.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use custody::identity::{new_static_token, token_hash};
use rusqlite::{Connection, params};
use serde_json::{Value, json};
use tlog::entry::Kind;

fn verify(dir: &Path) -> (bool, String, String) {
    let out = Command::new(custody_bin())
        .args(["verify", "--data"])
        .arg(dir)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

struct Setup {
    gw: Gateway,
    alice: String,
    mallory: String,
}

/// A gateway whose `alice` may erase and whose `mallory` may not; both may call.
async fn setup() -> Setup {
    let (alice, mallory) = (new_static_token(), new_static_token());
    let auth = format!(
        "[auth]\n[[auth.static]]\nname = \"alice\"\nsha256 = \"{}\"\n[[auth.static]]\nname = \"mallory\"\nsha256 = \"{}\"\n\
         [audit]\nerasers = [\"alice\"]\n",
        hex::encode(token_hash(&alice)),
        hex::encode(token_hash(&mallory)),
    );
    let gw = Gateway::start("", &format!("{auth}{}", stdio_fixture("f", ""))).await;
    Setup { gw, alice, mallory }
}

/// Makes a call with a recognisable argument; returns the index of its request entry.
async fn a_call(s: &Setup) -> u64 {
    let mut c = s.gw.client("f").with_token(&s.alice);
    c.initialize().await;
    let a = c
        .call(
            "tools/call",
            json!({"name": "test_simple_text", "arguments": {}, "_meta": {"note": "personal data of a data subject"}}),
        )
        .await;
    assert!(a.response()["result"].is_object(), "{:?}", a.messages);
    entries(s.gw.data.path())
        .iter()
        .find(|e| {
            e.kind == Kind::Request
                && e.method == "tools/call"
                && String::from_utf8_lossy(&e.message).contains("personal data")
        })
        .expect("the call was recorded")
        .index
}

async fn erase(s: &Setup, token: &str, index: &str, body: Value) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .post(format!(
            "http://{}/api/v1/log/entries/{index}/erase",
            s.gw.addr
        ))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn an_erased_payload_leaves_the_tree_valid_and_verify_lists_it() {
    let s = setup().await;
    let index = a_call(&s).await;

    // Refused: no reason, an index not in the log, an index that is not a number.
    let (status, body) = erase(&s, &s.alice, &index.to_string(), json!({"reason": "  "})).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("needs a reason"));
    let (status, body) = erase(&s, &s.alice, "999999", json!({"reason": "r"})).await;
    assert_eq!(status, 404, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("is not in the log")
    );
    let (status, _) = erase(&s, &s.alice, "x", json!({"reason": "r"})).await;
    assert_eq!(status, 400);
    // Entry 0 (gateway_started) has no payload.
    let (status, body) = erase(&s, &s.alice, "0", json!({"reason": "r"})).await;
    assert_eq!(status, 409, "{body}");
    assert!(body["error"].as_str().unwrap().contains("has no payload"));

    let (status, body) = erase(
        &s,
        &s.alice,
        &index.to_string(),
        json!({"reason": "GDPR art. 17 request #42"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let record = body["entry"].as_u64().unwrap();
    assert!(record > index);

    // Erasing twice is refused.
    let (status, body) = erase(&s, &s.alice, &index.to_string(), json!({"reason": "again"})).await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("already erased"),
        "{body}"
    );

    // The entry's proof still verifies against a checkpoint signed after the erasure.
    let dir = s.gw.shutdown().await;
    let log = entries(dir.path());
    assert!(
        log[index as usize].message.is_empty(),
        "the payload is gone"
    );
    assert_eq!(log[index as usize].method, "tools/call", "the header stays");
    let erased = &log[record as usize];
    assert_eq!(erased.kind, Kind::PayloadErased);
    let detail: Value = serde_json::from_str(&erased.detail).unwrap();
    assert_eq!(detail["indices"], json!([index]));
    assert_eq!(detail["reason"], "GDPR art. 17 request #42");
    assert_eq!(detail["commitments"][0]["slot"], 1);
    let caller: Value = serde_json::from_str(&erased.caller).unwrap();
    assert_eq!(caller["name"], "alice");
    let db = Connection::open(dir.path().join("log.sqlite")).unwrap();
    let left: i64 = db
        .query_row(
            "SELECT count(*) FROM payloads WHERE id >> 2 = ?1",
            params![index as i64],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(left, 0, "the payload and its opening are deleted");
    drop(db);

    let (ok, out, err) = verify(dir.path());
    assert!(ok, "{out}{err}");
    assert!(
        out.contains(&format!(
            "1 erased, each recorded by a payload_erased entry (entries {index})"
        )),
        "{out}"
    );

    // `custody log` shows the header, the commitment marked erased, no message.
    let out = Command::new(custody_bin())
        .args(["log", "--data"])
        .arg(dir.path())
        .args(["--from", &index.to_string(), "--limit", "1"])
        .output()
        .unwrap();
    let line: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(line["commitments"][0]["erased"], true, "{line}");
    assert_eq!(line["message"], Value::Null);
}

#[tokio::test]
async fn erasure_without_permission_is_refused_and_recorded() {
    let s = setup().await;
    let index = a_call(&s).await;
    let (status, body) = erase(
        &s,
        &s.mallory,
        &index.to_string(),
        json!({"reason": "cover my tracks"}),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("mallory may not erase payloads"),
        "{body}"
    );
    let (status, _) = erase(
        &s,
        "not-a-token",
        &index.to_string(),
        json!({"reason": "r"}),
    )
    .await;
    assert_eq!(status, 401);
    let dir = s.gw.shutdown().await;
    let log = entries(dir.path());
    assert!(
        !log[index as usize].message.is_empty(),
        "the payload is still there"
    );
    let refused = log
        .iter()
        .find(|e| e.kind == Kind::Rejected && e.detail.contains("payload erasure"))
        .expect("the refusal is recorded");
    assert!(refused.caller.contains("mallory"), "{}", refused.caller);
    assert!(log.iter().all(|e| e.kind != Kind::PayloadErased));
    assert!(verify(dir.path()).0);
}

#[tokio::test]
async fn a_changed_or_deleted_payload_is_caught() {
    let s = setup().await;
    let index = a_call(&s).await;
    let dir = s.gw.shutdown().await;
    let db = Connection::open(dir.path().join("log.sqlite")).unwrap();
    db.execute(
        "UPDATE payloads SET data = CAST(replace(CAST(data AS TEXT), 'personal', 'PERSONAL') AS BLOB) WHERE id = ?1 * 4 + 1",
        params![index as i64],
    )
    .unwrap();
    let (ok, out, err) = verify(dir.path());
    assert!(!ok, "{out}");
    assert!(
        err.contains(&format!(
            "entry {index}: its payload (slot 1) does not open its commitment"
        )),
        "{err}"
    );
    // Deleted, as an erasure would, but without the recorded entry an erasure makes.
    db.execute(
        "DELETE FROM payloads WHERE id >> 2 = ?1",
        params![index as i64],
    )
    .unwrap();
    let (ok, _, err) = verify(dir.path());
    assert!(!ok);
    assert!(
        err.contains(&format!("entry {index}:"))
            && err.contains("no payload_erased entry records its erasure"),
        "{err}"
    );
}

/// The config of a stopped test gateway, for the offline commands.
fn config_of(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("custody.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\ndata_dir = \"{}\"\n[auth]\nanonymous = true\n{}",
            dir.display(),
            stdio_fixture("f", "")
        ),
    )
    .unwrap();
    path
}

#[tokio::test]
async fn custody_log_erase_works_on_a_stopped_gateway_only() {
    let gw = Gateway::start("", &stdio_fixture("f", "")).await;
    let mut c = gw.client("f");
    c.initialize().await;
    c.call(
        "tools/call",
        json!({"name": "test_simple_text", "arguments": {}}),
    )
    .await;
    let index = entries(gw.data.path())
        .iter()
        .find(|e| e.kind == Kind::Request && e.method == "tools/call")
        .unwrap()
        .index;
    let config = config_of(gw.data.path());
    let run = move |config: std::path::PathBuf| {
        Command::new(custody_bin())
            .args(["log", "erase", "--config"])
            .arg(&config)
            .args(["--index", &index.to_string(), "--reason", "leaked token"])
            .output()
            .unwrap()
    };
    // While the gateway runs, the directory is in use: the CLI says to use the API.
    let c2 = config.clone();
    let out = tokio::task::spawn_blocking(move || run(c2)).await.unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("POST /api/v1/log/entries/"), "{err}");

    let dir = gw.shutdown().await;
    let out = run(config.clone());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains(&format!("erased the payloads of entry {index}"))
    );
    let out = run(config);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already erased"));
    let (ok, out, err) = verify(dir.path());
    assert!(ok, "{out}{err}");
    assert!(out.contains("1 erased"), "{out}");
    let erased = entries(dir.path());
    let record = erased
        .iter()
        .find(|e| e.kind == Kind::PayloadErased)
        .unwrap();
    assert!(record.caller.contains("operator"), "{}", record.caller);
}

#[tokio::test]
async fn retention_erases_expired_payloads_in_recorded_batches() {
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
    let dir = gw.shutdown().await;
    let with_payloads = |dir: &Path| -> i64 {
        Connection::open(dir.join("log.sqlite"))
            .unwrap()
            .query_row("SELECT count(DISTINCT id >> 2) FROM payloads", [], |r| {
                r.get(0)
            })
            .unwrap()
    };
    let before = with_payloads(dir.path());
    assert!(before >= 8, "{before}");

    let config = custody::config::Config::load(&config_of(dir.path())).unwrap();
    let opened = custody::audit::Audit::open(dir.path(), &config.audit).unwrap();
    let audit = opened.audit;
    let now = custody::audit::now_ns() + 1;
    let retention = std::time::Duration::from_secs(3600);
    let mut batches = Vec::new();
    while let Some((e, from, to)) = audit.erase_expired(now, 3, retention).await.unwrap() {
        batches.push((e.index, from, to));
    }
    assert!(batches.len() >= 3, "{batches:?}");
    audit.checkpoint().await.unwrap();
    audit.close().await;
    assert_eq!(with_payloads(dir.path()), 0);
    let log = entries(dir.path());
    for (record, from, to) in &batches {
        let e = &log[*record as usize];
        assert_eq!(e.kind, Kind::PayloadErased);
        let d: Value = serde_json::from_str(&e.detail).unwrap();
        assert_eq!(
            (d["from"].as_u64(), d["to"].as_u64()),
            (Some(*from), Some(*to))
        );
        assert!(d["reason"].as_str().unwrap().contains("retention"));
    }
    let (ok, out, err) = verify(dir.path());
    assert!(ok, "{out}{err}");
    assert!(out.contains(&format!("{before} erased")), "{out}");

    // Retention under an hour is refused with the reason.
    let text = format!(
        "[server]\ndata_dir = \"{}\"\n[auth]\nanonymous = true\n[audit]\nretention = \"30m\"\n{}",
        dir.path().display(),
        stdio_fixture("f", "")
    );
    let e = custody::config::Config::parse(&text, "t.toml")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("audit.retention") && e.contains("at least 1h"),
        "{e}"
    );
}

/// A `payload_erased` entry appended past the last signed checkpoint (by someone with the
/// database but not the key) does not explain a deleted payload.
#[tokio::test]
async fn an_unsigned_erasure_record_does_not_explain_a_deletion() {
    let gw = Gateway::start("", &stdio_fixture("f", "")).await;
    let mut c = gw.client("f");
    c.initialize().await;
    c.call(
        "tools/call",
        json!({"name": "test_simple_text", "arguments": {}}),
    )
    .await;
    let dir = gw.shutdown().await;
    let log = entries(dir.path());
    let victim = log
        .iter()
        .find(|e| e.kind == Kind::Request && e.method == "tools/call")
        .unwrap()
        .index;
    let n = log.len() as u64;
    let forged = tlog::Entry {
        index: n,
        kind: Kind::PayloadErased,
        direction: tlog::entry::Direction::Gateway,
        time_ns: custody::audit::now_ns(),
        endpoint: "".into(),
        session: "".into(),
        id: "".into(),
        method: "".into(),
        target: "".into(),
        caller: "{\"kind\":\"gateway\"}".into(),
        request: None,
        detail: format!("{{\"indices\":[{victim}],\"reason\":\"x\"}}").into(),
        message: (&[][..]).into(),
        version: tlog::entry::V2,
        commitments: Vec::new(),
    }
    .encode();
    let db = Connection::open(dir.path().join("log.sqlite")).unwrap();
    db.execute(
        "INSERT INTO entries (idx, leaf, data) VALUES (?1, ?2, ?3)",
        params![n as i64, tlog::leaf_hash(&forged).0.to_vec(), forged],
    )
    .unwrap();
    db.execute(
        "DELETE FROM payloads WHERE id >> 2 = ?1",
        params![victim as i64],
    )
    .unwrap();
    let (ok, out, err) = verify(dir.path());
    assert!(!ok, "{out}");
    assert!(
        err.contains(&format!("entry {victim}:"))
            && err.contains(&format!("payload_erased entry {n}"))
            && err.contains("not covered by a signed checkpoint"),
        "{err}"
    );
}

/// Retention goes by the entries' signed times: rewriting the payload rows' time column does
/// not make fresh payloads expire, and a range erasure explains only payloads older than the
/// time it names.
#[tokio::test]
async fn retention_cannot_be_steered_by_the_unsigned_time_column() {
    let gw = Gateway::start("", &stdio_fixture("f", "")).await;
    let mut c = gw.client("f");
    c.initialize().await;
    c.call(
        "tools/call",
        json!({"name": "test_simple_text", "arguments": {}}),
    )
    .await;
    let dir = gw.shutdown().await;
    let db = Connection::open(dir.path().join("log.sqlite")).unwrap();
    db.execute("UPDATE payloads SET time_ns = 0", []).unwrap();
    drop(db);
    let config = custody::config::Config::load(&config_of(dir.path())).unwrap();
    let audit = custody::audit::Audit::open(dir.path(), &config.audit)
        .unwrap()
        .audit;
    let an_hour_ago = custody::audit::now_ns() - 3_600_000_000_000;
    let erased = audit
        .erase_expired(an_hour_ago, 100, std::time::Duration::from_secs(3600))
        .await
        .unwrap();
    assert!(erased.is_none(), "nothing is an hour old: {erased:?}");

    // A range erasure (signed, but naming a time before every entry) explains nothing.
    let n = audit.head().size;
    let mut d = custody::audit::Draft::gateway(
        Kind::PayloadErased,
        "",
        json!({"from": 0, "to": n, "before_ns": 1, "reason": "test"}).to_string(),
    );
    d.erase = Some(custody::audit::Erase::Range {
        from: 0,
        to: n,
        before_ns: 1,
    });
    audit.append(d).await.unwrap();
    audit.checkpoint().await.unwrap();
    audit.close().await;
    let (ok, out, err) = verify(dir.path());
    assert!(!ok, "{out}");
    assert!(
        err.contains("made before 1") && err.contains("it was deleted"),
        "{err}"
    );
}

/// The entry version is a row nothing signs: set back to 1, the gateway refuses to extend a
/// version-2 log (messages would go into the tree, beyond erasure).
#[tokio::test]
async fn a_log_cannot_be_set_back_to_version_1() {
    let gw = Gateway::start("", &stdio_fixture("f", "")).await;
    let dir = gw.shutdown().await;
    let db = Connection::open(dir.path().join("log.sqlite")).unwrap();
    db.execute("DELETE FROM meta", []).unwrap();
    drop(db);
    let config = custody::config::Config::load(&config_of(dir.path())).unwrap();
    let err = custody::audit::Audit::open(dir.path(), &config.audit)
        .err()
        .expect("refused")
        .to_string();
    assert!(err.contains("the version was changed"), "{err}");
}
