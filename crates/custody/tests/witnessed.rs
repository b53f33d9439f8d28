//! Issue 14 end to end: a gateway whose checkpoints two built-in witnesses cosign, and each
//! tamper test failing in the way the issue names: a history rewritten and re-signed with the
//! real key, a gateway restored from an old backup, a witness that is down (best effort and
//! required), a job's evidence checked weeks later.

mod common;
mod witness_common;

use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};
use witness_common::{Log, TestWitness};

const ORIGIN: &str = "ci.example.com/witnessed";
const JOB_TOKEN: &str = "cst_job-token-for-the-evidence-test";

struct Setup {
    log: Log,
    key: String,
    _a: TestWitness,
    b: TestWitness,
    policy: std::path::PathBuf,
    work: tempfile::TempDir,
}

/// Two witnesses accepting a log whose key is written where a gateway will find it.
async fn setup() -> Setup {
    let signer = tlog::Signer::new(ORIGIN, rand::random::<[u8; 32]>()).unwrap();
    let key = signer.to_key_string();
    let log = Log::with_key(&key);
    let a = TestWitness::start("a.witness.example", &log).await;
    let b = TestWitness::start("b.witness.example", &log).await;
    let work = tempfile::tempdir().unwrap();
    let policy = work.path().join("policy.txt");
    std::fs::write(
        &policy,
        format!(
            "log {}\nwitness a {} {}\nwitness b {} {}\ngroup both all a b\nquorum both\n",
            signer.verifier().to_key_string(),
            a.vkey,
            a.url,
            b.vkey,
            b.url
        ),
    )
    .unwrap();
    Setup {
        log,
        key,
        _a: a,
        b,
        policy,
        work,
    }
}

fn write_key(dir: &Path, key: &str) {
    std::fs::create_dir_all(dir).unwrap();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(dir.join("log.key"))
        .unwrap();
    use std::io::Write;
    writeln!(f, "{key}").unwrap();
}

fn witness_table(policy: &Path, mode: &str, max_lag: &str) -> String {
    format!(
        "[witness]\npolicy = \"{}\"\nmode = \"{mode}\"\nmax_lag = \"{max_lag}\"\ntimeout = \"1s\"\n",
        policy.display()
    )
}

async fn start(data: tempfile::TempDir, table: &str) -> Result<Gateway, String> {
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n[auth]\nanonymous = true\n[[auth.static]]\nname = \"job\"\nsha256 = \"{}\"\n[audit]\ncheckpoint_interval = \"200ms\"\n{table}\n{}",
        data.path().display(),
        hex::encode(custody::identity::token_hash(JOB_TOKEN)),
        stdio_fixture("f", "")
    );
    let config = custody::config::Config::parse(&text, "t.toml").map_err(|e| e.to_string())?;
    match custody::http::start(&config).await {
        Ok(running) => Ok(Gateway {
            addr: running.addr,
            running: Some(running),
            data,
        }),
        Err(e) => Err(e.to_string()),
    }
}

async fn call(gw: &Gateway) -> Value {
    gw.client("f")
        .stateless()
        .call(
            "tools/call",
            json!({"name": "test_simple_text", "arguments": {}}),
        )
        .await
        .response()
        .clone()
}

/// The gateway's `/metrics`.
async fn scrape(gw: &Gateway) -> String {
    reqwest::get(format!("http://{}/metrics", gw.addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Waits until the published checkpoint covers `size` entries; returns its note.
async fn published(gw: &Gateway, size: u64) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = reqwest::get(format!("http://{}/api/v1/log/checkpoint", gw.addr))
            .await
            .unwrap();
        if r.status() == 200 {
            let note = r.text().await.unwrap();
            let n = tlog::Note::parse(note.as_bytes()).unwrap();
            let cp = tlog::Checkpoint::from_text(&n.text).unwrap();
            if cp.size >= size {
                return note;
            }
        }
        assert!(Instant::now() < deadline, "no checkpoint covering {size}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn verify(args: &[&str]) -> (bool, String) {
    let out = Command::new(custody_bin())
        .arg("verify")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// A job's calls through `custody connect --evidence`, as a CI step would make them.
fn job_with_evidence(url: &str, evidence: &Path) {
    let mut child = Command::new(custody_bin())
        .args(["connect", url, "--evidence"])
        .arg(evidence)
        .env("CUSTODY_TOKEN", JOB_TOKEN)
        .env_remove("ACTIONS_ID_TOKEN_REQUEST_URL")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let stdin = child.stdin.as_mut().unwrap();
        for (id, name) in [(1, "test_simple_text"), (2, "test_simple_text")] {
            let m = json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":{"name":name,"arguments":{},
                "_meta":{"io.modelcontextprotocol/protocolVersion":STATELESS_VERSION,
                "io.modelcontextprotocol/clientCapabilities":{},"io.modelcontextprotocol/clientInfo":{"name":"job","version":"1"}}}});
            writeln!(stdin, "{m}").unwrap();
        }
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "connect: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answers = String::from_utf8_lossy(&out.stdout);
    assert_eq!(answers.lines().count(), 2, "{answers}");
}

#[tokio::test]
async fn checkpoints_are_published_with_both_cosignatures_and_a_jobs_evidence_holds() {
    let s = setup().await;
    let data = tempfile::tempdir().unwrap();
    write_key(data.path(), &s.key);
    let gw = start(data, &witness_table(&s.policy, "required", "5s"))
        .await
        .unwrap();
    let answer = call(&gw).await;
    let receipt = &answer["result"]["_meta"]["dev.custody/receipt"];
    let index = receipt["response"]["index"].as_u64().unwrap();
    assert_eq!(receipt["covered_by"]["min_size"], index + 1);
    let note = published(&gw, index + 1).await;
    let policy = tlog::policy::Policy::parse(&std::fs::read(&s.policy).unwrap()).unwrap();
    let check = policy.check(&tlog::Note::parse(note.as_bytes()).unwrap());
    assert!(check.met, "both witnesses cosigned: {note}");
    // /metrics counts each witness's cosignatures; no alarm.
    let metrics = scrape(&gw).await;
    for w in ["a", "b"] {
        let cosigned =
            format!("custody_witness_outcomes_total{{witness=\"{w}\",outcome=\"cosigned\"}} ");
        assert!(
            metrics.lines().any(|l| l.starts_with(&cosigned)),
            "{metrics}"
        );
        assert!(
            metrics.contains(&format!("custody_witness_alarm{{witness=\"{w}\"}} 0")),
            "{metrics}"
        );
    }
    // The proof a client fetches carries the cosigned checkpoint and verifies offline.
    let proof = reqwest::get(format!("http://{}/api/v1/log/proof?index={index}", gw.addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let file = s.work.path().join("call.proof");
    std::fs::write(&file, proof).unwrap();
    let out = Command::new(custody_bin())
        .args([
            "receipt",
            "verify",
            "--key",
            &s.log.verifier().to_key_string(),
        ])
        .arg("--witness-policy")
        .arg(&s.policy)
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The witnesses' state is in the API.
    let w: Value = reqwest::get(format!("http://{}/api/v1/log/witnesses", gw.addr))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(w["witnesses"]["mode"], "required");
    assert!(w["witnesses"]["last_quorum"]["size"].as_u64().unwrap() > index);
    assert!(w["alarm"].is_null());
    // A consistency proof over the API.
    let c: Value = reqwest::get(format!(
        "http://{}/api/v1/log/consistency?from=1&to={}",
        gw.addr,
        index + 1
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert!(!c["proof"].as_array().unwrap().is_empty(), "{c}");
    let bad = reqwest::get(format!(
        "http://{}/api/v1/log/consistency?from=5&to=2",
        gw.addr
    ))
    .await
    .unwrap();
    assert_eq!(bad.status(), 400);

    // A job keeps its evidence; an auditor checks it against the running gateway.
    let evidence = s.work.path().join("evidence.json");
    {
        let (url, evidence) = (gw.url("f"), evidence.clone());
        tokio::task::spawn_blocking(move || job_with_evidence(&url, &evidence))
            .await
            .unwrap();
    }
    let ev: Value = serde_json::from_str(&std::fs::read_to_string(&evidence).unwrap()).unwrap();
    assert_eq!(
        ev["entries"].as_array().unwrap().len(),
        4,
        "two requests, two answers"
    );
    let key = s.log.verifier().to_key_string();
    let base = format!("http://{}", gw.addr);
    let args: Vec<String> = [
        "--evidence",
        evidence.to_str().unwrap(),
        "--gateway",
        &base,
        "--key",
        &key,
        "--witness-policy",
        s.policy.to_str().unwrap(),
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    // The gateway serves on this test's runtime: the blocking CLI runs beside it.
    let (ok, out) = tokio::task::spawn_blocking(move || {
        verify(&args.iter().map(String::as_str).collect::<Vec<_>>())
    })
    .await
    .unwrap();
    assert!(ok && out.contains("every record is still there"), "{out}");
    let dir = gw.shutdown().await;
    let (ok, out) = verify(&[
        "--evidence",
        evidence.to_str().unwrap(),
        "--data",
        dir.path().to_str().unwrap(),
        "--key",
        &key,
    ]);
    assert!(ok, "{out}");
    let (ok, out) = verify(&[
        "--data",
        dir.path().to_str().unwrap(),
        "--key",
        &key,
        "--witness-policy",
        s.policy.to_str().unwrap(),
    ]);
    assert!(ok, "{out}");

    // The operator rewrites the job's call and re-signs everything with the real key.
    let forged = rewrite_and_resign(
        dir.path(),
        &s.key,
        ev["entries"][0]["index"].as_u64().unwrap(),
    );
    let (ok, out) = verify(&[
        "--evidence",
        evidence.to_str().unwrap(),
        "--data",
        dir.path().to_str().unwrap(),
        "--key",
        &key,
    ]);
    assert!(
        !ok && (out.contains("was rewritten") || out.contains("changed after the job ran")),
        "the evidence proves it offline: {out}"
    );
    let (ok, out) = verify(&[
        "--data",
        dir.path().to_str().unwrap(),
        "--key",
        &key,
        "--witness-policy",
        s.policy.to_str().unwrap(),
    ]);
    assert!(!ok && out.contains("not cosigned"), "{out}");
    // The re-signed log goes back to its witnesses: every one refuses it, and the gateway
    // raises the fork alarm and does not start.
    let err = start(dir, &witness_table(&s.policy, "required", "5s"))
        .await
        .err()
        .expect("a rewritten log started");
    assert!(err.contains("FORK") || err.contains("alarm"), "{err}");
    assert_eq!(forged, ORIGIN);
}

/// Rewrites entry `index` (its detail) and every hash after it, and re-signs one checkpoint of
/// the whole log with the real key, replacing every record of the old ones.
fn rewrite_and_resign(dir: &Path, key: &str, index: u64) -> String {
    use rusqlite::{Connection, params};
    let signer = tlog::Signer::from_key_string(key).unwrap();
    let mut log = entries(dir);
    log[index as usize].detail = "{\"rewritten\":true}".into();
    let db = Connection::open(dir.join("log.sqlite")).unwrap();
    db.execute_batch("DELETE FROM entries; DELETE FROM nodes; DELETE FROM checkpoints;")
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
    use base64::Engine as _;
    let line = json!({"size": range.size(), "signed_ns": 0, "note": note});
    std::fs::write(dir.join("checkpoints.jsonl"), format!("{line}\n")).unwrap();
    let head = json!({"size": range.size(), "signed_ns": 0,
        "range": base64::engine::general_purpose::STANDARD.encode(range.to_bytes()), "note": note});
    std::fs::write(dir.join("log.head"), format!("{head}\n")).unwrap();
    signer.name().to_string()
}

#[tokio::test]
async fn a_gateway_restored_from_an_old_backup_is_refused_by_its_witnesses() {
    let s = setup().await;
    let data = tempfile::tempdir().unwrap();
    write_key(data.path(), &s.key);
    let gw = start(data, &witness_table(&s.policy, "required", "5s"))
        .await
        .unwrap();
    call(&gw).await;
    let dir = gw.shutdown().await;
    let backup = tempfile::tempdir().unwrap();
    for f in ["log.sqlite", "log.head", "checkpoints.jsonl", "log.key"] {
        std::fs::copy(dir.path().join(f), backup.path().join(f)).unwrap();
    }
    // The log goes on and the witnesses cosign more of it...
    let gw = start(dir, &witness_table(&s.policy, "required", "5s"))
        .await
        .unwrap();
    for _ in 0..3 {
        call(&gw).await;
    }
    let size = gw.running.as_ref().unwrap().relay.audit.head().size;
    published(&gw, size).await;
    gw.shutdown().await;
    // ...then the old backup is restored: the witnesses refuse to go back.
    let err = start(backup, &witness_table(&s.policy, "required", "5s"))
        .await
        .err()
        .expect("an old backup started");
    assert!(err.contains("ROLLBACK"), "{err}");
}

#[tokio::test]
async fn a_witness_that_is_down_best_effort_goes_on_and_required_fails_closed_then_recovers() {
    let s = setup().await;
    // best_effort: calls go on, the lag is reported.
    let data = tempfile::tempdir().unwrap();
    write_key(data.path(), &s.key);
    let b_url = s.b.url.clone();
    let b_dir = s.b.stop().await;
    let gw = start(data, &witness_table(&s.policy, "best_effort", "1s"))
        .await
        .unwrap();
    for _ in 0..3 {
        assert!(call(&gw).await["result"].is_object());
        tokio::time::sleep(Duration::from_millis(600)).await;
    }
    let w: Value = reqwest::get(format!("http://{}/api/v1/log/witnesses", gw.addr))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(w["witnesses"]["lag_ms"].as_u64().unwrap() > 0, "{w}");
    // /metrics says the same: the lag, and which witness fails.
    let metrics = scrape(&gw).await;
    let value = |prefix: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(prefix))
            .unwrap_or_else(|| panic!("no {prefix}: {metrics}"))
            .trim()
            .parse()
            .unwrap()
    };
    assert!(value("custody_witness_lag_seconds ") > 0.0, "{metrics}");
    assert!(value("custody_witness_consecutive_failures{witness=\"b\"} ") >= 1.0);
    assert!(value("custody_witness_outcomes_total{witness=\"b\",outcome=\"unavailable\"} ") >= 1.0);
    assert_eq!(
        value("custody_witness_consecutive_failures{witness=\"a\"} "),
        0.0
    );
    let dir = gw.shutdown().await;

    // required: after max_lag, calls fail closed with -32016 and /readyz says why.
    let gw = start(dir, &witness_table(&s.policy, "required", "1s"))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let refused = loop {
        let a = call(&gw).await;
        if a["error"]["code"] == -32016 {
            break a;
        }
        assert!(Instant::now() < deadline, "never failed closed: {a}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let message = refused["error"]["message"].as_str().unwrap();
    assert!(message.contains("witness.max_lag"), "{message}");
    let r = reqwest::get(format!("http://{}/readyz", gw.addr))
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    // The witness comes back (same key and state, same address): calls flow again.
    let b = restart_at(b_dir, &s.log, &b_url).await;
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let a = call(&gw).await;
        if a["result"].is_object() {
            break;
        }
        assert!(Instant::now() < deadline, "never recovered: {a}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    gw.shutdown().await;
    drop(b);
}

/// Restarts a witness on its old address (its URL is in the policy).
async fn restart_at(dir: tempfile::TempDir, log: &Log, url: &str) -> TestWitness {
    let addr = url.trim_start_matches("http://").to_string();
    TestWitness::start_on(dir, log, &addr).await
}

/// The size a checkpoint note signs, and how many signature lines it carries.
fn size_and_signatures(note: &str) -> (u64, usize) {
    let n = tlog::Note::parse(note.as_bytes()).unwrap_or_else(|e| panic!("{e}: {note}"));
    let cp = tlog::Checkpoint::from_text(&n.text).unwrap();
    let signatures = note.lines().filter(|l| l.starts_with("\u{2014} ")).count();
    (cp.size, signatures)
}

/// A checkpoint the witnesses withheld is in the head file and the database (it anchors the
/// tree) but was never published: after a restart neither the API, the tiles nor an export
/// serve it; they serve the last checkpoint both witnesses cosigned.
#[tokio::test]
async fn a_withheld_checkpoint_stays_unpublished_across_a_restart() {
    let s = setup().await;
    let data = tempfile::tempdir().unwrap();
    write_key(data.path(), &s.key);
    let table = witness_table(&s.policy, "required", "60s");
    let gw = start(data, &table).await.unwrap();
    assert!(call(&gw).await["result"].is_object());
    let cosigned = published(&gw, 2).await;
    let (size, signatures) = size_and_signatures(&cosigned);
    assert_eq!(signatures, 3, "the log's and both witnesses': {cosigned}");
    // Witness b goes away: the quorum (both) cannot be met, later checkpoints are withheld.
    let _b = s.b.stop().await;
    let db = gw.data.path().join("log.sqlite");
    let deadline = Instant::now() + Duration::from_secs(20);
    while stored_max_of(&db) <= size {
        assert!(call(&gw).await["result"].is_object());
        assert!(
            Instant::now() < deadline,
            "no checkpoint was signed past {size}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let served = |gw: &Gateway, path: &'static str| {
        let url = format!("http://{}{path}", gw.addr);
        async move {
            let r = reqwest::Client::new()
                .get(url)
                .bearer_auth(JOB_TOKEN)
                .send()
                .await
                .unwrap();
            r.text().await.unwrap()
        }
    };
    assert_eq!(served(&gw, "/api/v1/log/checkpoint").await, cosigned);
    let dir = gw.shutdown().await;

    let gw = start(dir, &table).await.unwrap();
    for path in ["/api/v1/log/checkpoint", "/log/checkpoint"] {
        let note = served(&gw, path).await;
        assert_eq!(
            size_and_signatures(&note),
            (size, 3),
            "{path} after the restart: {note}"
        );
    }
    let dir = gw.shutdown().await;
    assert!(stored_max_of(&dir.path().join("log.sqlite")) > size);

    let out = tempfile::tempdir().unwrap();
    let exported = custody::tiles::export(dir.path(), out.path()).unwrap();
    assert_eq!(exported.size, size);
    let note = std::fs::read_to_string(out.path().join("checkpoint")).unwrap();
    assert_eq!(note, cosigned);
    // Without the checkpoints file (lost, or removed by hand) and with the quorum still
    // unreachable, nothing is served: never the withheld checkpoint the database holds.
    std::fs::remove_file(dir.path().join("checkpoints.jsonl")).unwrap();
    let gw = start(dir, &table).await.unwrap();
    let r = reqwest::get(format!("http://{}/api/v1/log/checkpoint", gw.addr))
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "{}", r.text().await.unwrap());
    gw.shutdown().await;
}

fn stored_max_of(db: &Path) -> u64 {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.query_row("SELECT max(size) FROM checkpoints", [], |r| {
        r.get::<_, i64>(0)
    })
    .unwrap() as u64
}
