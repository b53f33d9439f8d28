//! The audit explorer against a real gateway: two CI runs (GitHub-style tokens from a test
//! issuer), an auditor and a nosy static token; filters, pagination, runs, timelines, who may
//! read what, reads recorded, and the CLI over a rebuilt index.

mod common;
mod explorer_world;
mod pg_common;

use std::time::{Duration, Instant};

use common::*;
use explorer_world::{World, traffic, world, world_on};
use pg_common::Db;
use serde_json::{Value, json};
use tlog::entry::Kind;

/// A database for the explorer on a log in PostgreSQL (`None`: no PostgreSQL here, skipped).
fn postgres(test: &str) -> Option<Db> {
    tokio::task::block_in_place(|| Db::new(test))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auditors_search_filter_page_and_follow_runs() {
    auditors_search(world().await).await;
}

/// The same searches with the log, and the explorer's index, in PostgreSQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auditors_search_the_index_in_postgresql() {
    let Some(db) = postgres("explorer_auditors") else {
        return;
    };
    auditors_search(world_on(Some(db)).await).await;
}

async fn auditors_search(w: World) {
    traffic(&w).await;

    // Filters: one repository's requests.
    let v = w
        .ok(
            &w.auditor,
            "/api/v1/entries?repository=acme/api&kind=request&order=oldest",
        )
        .await;
    let reqs = v["entries"].as_array().unwrap();
    let targets: Vec<&str> = reqs.iter().map(|e| e["target"].as_str().unwrap()).collect();
    assert_eq!(targets, ["echo", "echo", "echo", "add"], "{v}");
    for e in reqs {
        assert_eq!(e["caller"]["claims"]["repository"], "acme/api");
        assert_eq!(e["detail"]["policy"]["decision"], "allow");
        assert_eq!(e["leaf"].as_str().unwrap().len(), 64);
        // Paired with its answer, with the call's duration.
        let answer = &e["answered_by"];
        assert_eq!(answer["kind"], "response", "{e}");
        assert!(answer["index"].as_u64().unwrap() > e["index"].as_u64().unwrap());
        assert!(answer["duration_ms"].as_f64().unwrap() >= 0.0);
    }
    // Auditors see the masked payload: the text was replaced by its HMAC.
    let message = reqs[0]["message"].to_string();
    assert!(
        message.contains("tools/call") && !message.contains("\"one\""),
        "{message}"
    );

    // Denials.
    let v = w.ok(&w.auditor, "/api/v1/entries?decision=deny").await;
    let denied = v["entries"].as_array().unwrap();
    assert_eq!(denied.len(), 1, "{v}");
    assert_eq!(denied[0]["kind"], "rejected");
    assert_eq!(denied[0]["target"], "add");
    assert_eq!(denied[0]["caller"]["claims"]["repository"], "acme/web");
    assert_eq!(
        denied[0]["detail"]["policy"]["policies"],
        json!(["web-may-not-add"])
    );

    // Masked-only, one tool: the four echo requests.
    let v = w
        .ok(&w.auditor, "/api/v1/entries?tool=echo&masked=true")
        .await;
    let masked = v["entries"].as_array().unwrap();
    assert_eq!(masked.len(), 4, "{v}");
    assert!(
        masked
            .iter()
            .all(|e| e["kind"] == "request" && e["target"] == "echo")
    );
    // Errors only: the refusal.
    let v = w.ok(&w.auditor, "/api/v1/entries?errors=true&run=99").await;
    assert_eq!(v["entries"].as_array().unwrap().len(), 1, "{v}");
    // A time window: everything is within the last hour, nothing is in the future.
    let recent = w.all(&w.auditor, "since=1h&repository=acme/api", 500).await;
    assert!(recent.len() >= 8, "{recent:?}");
    let none = w.all(&w.auditor, "since=2999-01-01T00:00:00Z", 500).await;
    assert!(none.is_empty());

    // Pagination is stable: pages of 3 give what one page of 500 gives, newest first, and
    // oldest first is the same list reversed.
    let paged = w.all(&w.auditor, "repository=acme/api", 3).await;
    let whole = w.all(&w.auditor, "repository=acme/api", 500).await;
    assert_eq!(paged, whole);
    assert!(whole.windows(2).all(|p| p[0] > p[1]), "{whole:?}");
    let mut oldest = w
        .all(&w.auditor, "repository=acme/api&order=oldest", 2)
        .await;
    oldest.reverse();
    assert_eq!(oldest, whole);

    // Runs: both, with their counts.
    let v = w.ok(&w.auditor, "/api/v1/runs").await;
    let runs = v["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2, "{v}");
    let api = runs.iter().find(|r| r["repository"] == "acme/api").unwrap();
    let web = runs.iter().find(|r| r["repository"] == "acme/web").unwrap();
    assert_eq!(
        (api["run_id"].as_str(), api["calls"].as_u64()),
        (Some("4711"), Some(4))
    );
    assert_eq!(
        (api["denials"].as_u64(), api["errors"].as_u64()),
        (Some(0), Some(0))
    );
    assert_eq!(
        (web["denials"].as_u64(), web["errors"].as_u64()),
        (Some(1), Some(1))
    );
    assert!(api["first_ns"].as_u64() <= api["last_ns"].as_u64());
    // The per-run summary the index keeps agrees with grouping the entries (a time filter
    // takes the second way).
    let summary = w.ok(&w.auditor, "/api/v1/runs?repository=acme/web").await;
    let grouped = w
        .ok(&w.auditor, "/api/v1/runs?repository=acme/web&since=1h")
        .await;
    assert_eq!(summary, grouped);
    assert_eq!(summary["runs"][0], *web);

    // The timeline of a run, by its id: every call paired with its answer.
    let id = api["id"].as_str().unwrap();
    let v = w
        .ok(&w.auditor, &format!("/api/v1/runs/{id}/timeline"))
        .await;
    let calls = v["calls"].as_array().unwrap();
    assert_eq!(calls.len(), 4, "{v}");
    for c in calls {
        assert_eq!(c["status"], "ok", "{c}");
        assert_eq!(c["decision"], "allow");
        assert_eq!(c["policies"], json!(["everything"]));
        assert!(c["duration_ms"].as_f64().unwrap() >= 0.0);
        assert_eq!(c["answer"]["request"], c["request"]["index"]);
    }
    assert!(
        calls[0]["request_mask"]
            .as_array()
            .is_some_and(|m| !m.is_empty()),
        "{}",
        calls[0]
    );
    assert!(calls[3].get("request_mask").is_none());
    // By the GitHub run id too; the refused call of the other run is an item of its own.
    let v = w.ok(&w.auditor, "/api/v1/runs/99/timeline").await;
    let statuses: Vec<&str> = v["calls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["ok", "refused"], "{v}");

    // An entry, with its proof and checkpoint once one covers it.
    let idx = reqs[0]["index"].as_u64().unwrap();
    let started = Instant::now();
    let v = loop {
        let v = w.ok(&w.auditor, &format!("/api/v1/entries/{idx}")).await;
        if !v["proof"].is_null() {
            break v;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "{v}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(v["entry"]["index"], idx);
    assert_eq!(v["payloads"], "masked");
    assert!(
        v["proof"]
            .as_str()
            .unwrap()
            .starts_with("c2sp.org/tlog-proof@v1"),
        "{v}"
    );
    assert!(v["checkpoint"].as_str().unwrap().contains('\u{2014}'));

    // Bad input, each with its own error.
    for (q, says) in [
        ("decision=maybe", "not a policy decision"),
        ("since=yesterday", "neither an RFC 3339 time"),
        ("limit=0", "out of range"),
        ("limit=501", "out of range"),
        ("colour=red", "unknown field"),
        ("kind=requests", "not an entry kind"),
        ("order=sideways", "use newest or oldest"),
        ("cursor=zzz", "not a cursor"),
        ("masked=maybe", "use true or false"),
    ] {
        let (status, v) = w.get(&w.auditor, &format!("/api/v1/entries?{q}")).await;
        assert_eq!(status, 400, "{q}: {v}");
        assert!(v["error"].as_str().unwrap().contains(says), "{q}: {v}");
    }
    let (status, _) = w.get(&w.auditor, "/api/v1/entries/nope").await;
    assert_eq!(status, 400);
    let (status, _) = w.get(&w.auditor, "/api/v1/entries/999999").await;
    assert_eq!(status, 404);
    let (status, _) = w.get(&w.auditor, "/api/v1/runs/123456/timeline").await;
    assert_eq!(status, 404);
    let resp = reqwest::Client::new()
        .get(format!("http://{}/api/v1/entries", w.gw.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);

    // On PostgreSQL the index is there, not beside the data directory.
    if let Some(db) = &w.db {
        let rows: i64 = tokio::task::block_in_place(|| {
            db.admin()
                .query_one("SELECT count(*) FROM custody_explorer.rows", &[])
                .unwrap()
                .get(0)
        });
        assert!(rows > 20, "{rows} rows in the shared index");
        assert!(!w.gw.data.path().join("index.sqlite").exists());
    }
    // Every read was recorded, with who looked and what they got.
    let embedded = w.db.is_none();
    let (log, dir) = w.finish().await;
    let reads: Vec<Value> = log
        .iter()
        .filter(|e| e.kind == Kind::LogRead)
        .map(|e| {
            let caller: Value = serde_json::from_str(&e.caller).unwrap();
            assert_eq!(caller["name"], "ines");
            serde_json::from_str(&e.detail).unwrap()
        })
        .collect();
    let denials = reads
        .iter()
        .find(|d| d["filters"]["decision"] == "deny")
        .expect("the read of denials is recorded");
    assert_eq!(denials["route"], "/api/v1/entries");
    assert_eq!(denials["returned"], 1);
    assert_eq!(denials["scope"], "auditor");
    assert!(
        reads
            .iter()
            .any(|d| d["route"] == "/api/v1/runs/{id}/timeline" && d["returned"] == 4)
    );
    if embedded {
        assert_log_verifies(dir.path());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ci_job_reads_only_its_own_run() {
    ci_job_reads(world().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ci_job_reads_only_its_own_run_from_the_index_in_postgresql() {
    let Some(db) = postgres("explorer_ci_job") else {
        return;
    };
    ci_job_reads(world_on(Some(db)).await).await;
}

async fn ci_job_reads(w: World) {
    traffic(&w).await;
    // Everything the job sees is its own run's, and headers only.
    let v = w.ok(&w.api_job, "/api/v1/entries?limit=500").await;
    let seen = v["entries"].as_array().unwrap();
    assert!(seen.len() >= 8, "{v}");
    for e in seen {
        if e["kind"] == "log_read" {
            continue;
        }
        let claims = &e["caller"]["claims"];
        let own = claims["repository"] == "acme/api" && claims["run_id"] == "4711";
        assert!(own || e["request"].is_u64(), "{e}");
        assert!(e["message"].is_null(), "payloads are withheld: {e}");
        assert!(
            e["commitments"]
                .as_array()
                .unwrap()
                .iter()
                .all(|c| c["withheld"] == true)
        );
    }
    // Asking for the other run's entries finds nothing (the filter is within its scope).
    let v = w
        .ok(&w.api_job, "/api/v1/entries?repository=acme/web")
        .await;
    assert_eq!(v["entries"], json!([]));
    // Its runs: only its own.
    let v = w.ok(&w.api_job, "/api/v1/runs").await;
    let runs = v["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 1, "{v}");
    assert_eq!(runs[0]["run_id"], "4711");
    // Its own timeline, yes; the other run's timeline and entries: 403.
    let v = w.ok(&w.api_job, "/api/v1/runs/4711/timeline").await;
    assert_eq!(v["calls"].as_array().unwrap().len(), 4);
    let (status, v) = w.get(&w.api_job, "/api/v1/runs/99/timeline").await;
    assert_eq!(status, 403, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("may not read run \"99\""),
        "{v}"
    );
    let web = w
        .ok(&w.auditor, "/api/v1/entries?run=99&kind=request")
        .await;
    let other = web["entries"][0]["index"].as_u64().unwrap();
    let (status, v) = w.get(&w.api_job, &format!("/api/v1/entries/{other}")).await;
    assert_eq!(status, 403, "{v}");
    let own = seen.iter().find(|e| e["kind"] == "request").unwrap()["index"]
        .as_u64()
        .unwrap();
    let v = w.ok(&w.api_job, &format!("/api/v1/entries/{own}")).await;
    assert_eq!(v["payloads"], "withheld");
    // A principal with no run sees only what it caused itself: its own reads.
    let v = w.ok(&w.nosy, "/api/v1/entries?limit=500").await;
    assert!(
        v["entries"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["kind"] == "log_read"),
        "{v}"
    );
    let (status, _) = w.get(&w.nosy, "/api/v1/runs/4711/timeline").await;
    assert_eq!(status, 403);
    // The refusals are recorded too.
    let (log, _dir) = w.finish().await;
    let refused: Vec<Value> = log
        .iter()
        .filter(|e| e.kind == Kind::LogRead)
        .map(|e| serde_json::from_str::<Value>(&e.detail).unwrap())
        .filter(|d| d["refused"] == true)
        .collect();
    assert_eq!(refused.len(), 3, "{refused:?}");
}

fn custody(args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(custody_bin())
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_filters_reindexes_and_reads_through_the_gateway() {
    let w = world().await;
    traffic(&w).await;
    // Through the gateway's API with the auditor's token.
    let gateway = format!("http://{}", w.gw.addr);
    let (auditor, addr_dir) = (w.auditor.clone(), w.gw.data.path().to_path_buf());
    let remote = tokio::task::spawn_blocking(move || {
        let out = std::process::Command::new(custody_bin())
            .args([
                "log",
                "--gateway",
                &gateway,
                "--token-env",
                "EXPLORER_TOKEN",
                "--decision",
                "deny",
                "--format",
                "jsonl",
            ])
            .env("EXPLORER_TOKEN", &auditor)
            .output()
            .unwrap();
        let _ = addr_dir;
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .unwrap();
    assert!(remote.0, "{}", remote.2);
    let lines: Vec<Value> = remote
        .1
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1, "{}", remote.1);
    assert_eq!(lines[0]["target"], "add");

    let dir = w.gw.shutdown().await;
    let data = dir.path().to_str().unwrap();
    // The gateway kept the index as the log grew, its cursor on disk: everything up to the
    // calls (the last read and the stop come after it).
    let size = entries(dir.path()).len() as i64;
    let cursor = || -> i64 {
        rusqlite::Connection::open(dir.path().join("index.sqlite"))
            .unwrap()
            .query_row("SELECT value FROM meta WHERE key = 'cursor'", [], |r| {
                r.get(0)
            })
            .unwrap()
    };
    let kept = cursor();
    assert!(kept >= 12 && kept < size, "cursor {kept}, log {size}");
    let query = [
        "log", "--data", data, "--repo", "acme/api", "--since", "1h", "--oldest", "--format",
        "jsonl",
    ];
    let (ok, before, err) = custody(&query);
    assert!(ok, "{err}");
    // The CLI brought it up to the end of the log.
    assert_eq!(cursor(), size);
    let (ok, tools, err) = custody(&[
        "log", "--data", data, "--tool", "add", "--kind", "request", "--format", "jsonl",
    ]);
    assert!(ok, "{err}");
    // The refused `add` is a `rejected` entry, not a request.
    assert_eq!(tools.lines().count(), 1, "{tools}");
    // Rebuilt from scratch (also after the index file is deleted), the answers are the same.
    let (ok, said, err) = custody(&["log", "reindex", "--data", data]);
    assert!(
        ok && said.contains("rebuilt the search index"),
        "{said}{err}"
    );
    let (_, after, _) = custody(&query);
    assert_eq!(before, after);
    std::fs::remove_file(dir.path().join("index.sqlite")).unwrap();
    let (_, rebuilt, _) = custody(&query);
    assert_eq!(before, rebuilt);
    // The timeline and the table.
    let (ok, timeline, err) = custody(&[
        "log", "timeline", "4711", "--data", data, "--format", "jsonl",
    ]);
    assert!(ok, "{err}");
    assert_eq!(timeline.lines().count(), 4, "{timeline}");
    let (ok, table, err) = custody(&[
        "log", "timeline", "4711", "--data", data, "--format", "table",
    ]);
    assert!(ok, "{err}");
    assert!(
        table.starts_with("TIME (UTC)") && table.contains(" ms") && table.contains("echo"),
        "{table}"
    );
    let (ok, table, _) = custody(&[
        "log", "--data", data, "--run", "4711", "--kind", "request", "--format", "table",
    ]);
    assert!(
        ok && table.contains("response #") && table.contains("after"),
        "{table}"
    );
    // CSV for spreadsheets: a header, one row per entry, the same entries as JSON lines.
    let (ok, csv, err) = custody(&[
        "log", "--data", data, "--repo", "acme/api", "--kind", "request", "--format", "csv",
    ]);
    assert!(ok, "{err}");
    let rows: Vec<&str> = csv.lines().collect();
    assert!(
        rows[0].starts_with("\"time_utc\",\"index\",\"kind\",\"endpoint\","),
        "{csv}"
    );
    assert_eq!(rows.len(), 1 + 4, "{csv}");
    assert!(
        rows[1..]
            .iter()
            .all(|r| r.contains("\"request\",\"demo\"") && r.contains("acme/api")),
        "{csv}"
    );
    // OCSF events of the run: each call (request and answer) one API Activity (class 6003).
    let (ok, ocsf, err) = custody(&[
        "log", "timeline", "4711", "--data", data, "--format", "ocsf",
    ]);
    assert!(ok, "{err}");
    let events: Vec<Value> = ocsf
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.len(), 4, "{ocsf}");
    assert!(
        events.iter().all(|e| e["class_uid"] == 6003
            && e["unmapped"]["ci_claims"]["run_id"] == "4711"
            && e["end_time"].as_u64() >= e["start_time"].as_u64()),
        "{ocsf}"
    );
    // OCSF needs the entries' bytes: not from a gateway's API.
    let (ok, _, err) = custody(&["log", "--gateway", "http://127.0.0.1:9", "--format", "ocsf"]);
    assert!(
        !ok && err.contains("--format ocsf reads a local data directory"),
        "{err}"
    );
    // Bad input says what is wrong.
    let (ok, _, err) = custody(&["log", "--data", data, "--decision", "maybe"]);
    assert!(!ok && err.contains("not a policy decision"), "{err}");
    let (ok, _, err) = custody(&["log", "timeline", "31337", "--data", data]);
    assert!(!ok && err.contains("no entries of run \"31337\""), "{err}");
}

#[test]
fn the_embedded_defaults_approver_is_an_auditor() {
    let config = custody::config::Config::embedded(std::path::PathBuf::from(custody_bin()));
    assert_eq!(
        config.explorer.auditors,
        [custody::config::EMBEDDED_APPROVER]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cedar_audit_permit_makes_an_auditor_of_its_endpoints() {
    let w = world().await;
    traffic(&w).await;
    // edna may audit the demo endpoint: every run's entries there, with payloads…
    let v = w
        .ok(&w.edna, "/api/v1/entries?kind=request&limit=500")
        .await;
    let seen = v["entries"].as_array().unwrap();
    assert_eq!(seen.len(), 5, "{v}");
    assert!(
        seen.iter()
            .all(|e| e["endpoint"] == "demo" && e["message"].is_object())
    );
    let v = w.ok(&w.edna, "/api/v1/runs").await;
    assert_eq!(v["runs"].as_array().unwrap().len(), 2, "{v}");
    // …but not the gateway's own entries, which belong to no endpoint.
    let v = w.ok(&w.edna, "/api/v1/entries?kind=gateway_started").await;
    assert_eq!(v["entries"], json!([]));
    let v = w
        .ok(&w.auditor, "/api/v1/entries?kind=gateway_started")
        .await;
    assert_eq!(v["entries"].as_array().unwrap().len(), 1);
    let started = v["entries"][0]["index"].as_u64().unwrap();
    let (status, _) = w.get(&w.edna, &format!("/api/v1/entries/{started}")).await;
    assert_eq!(status, 403);
    let dir = w.gw.shutdown().await;
    let scopes: Vec<Value> = entries(dir.path())
        .iter()
        .filter(|e| e.kind == Kind::LogRead && e.caller.contains("edna"))
        .map(|e| serde_json::from_str::<Value>(&e.detail).unwrap()["scope"].clone())
        .collect();
    assert!(
        !scopes.is_empty() && scopes.iter().all(|s| s == "endpoint auditor"),
        "{scopes:?}"
    );
}
