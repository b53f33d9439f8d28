//! `[[export]]`: OCSF events and entries streamed to a file and an HTTP collector as entries
//! commit, at least once, resuming from a durable cursor after a restart, through a collector's
//! failures.

mod common;

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::post;
use common::*;
use serde_json::{Value, json};

fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

async fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !f() {
        assert!(Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A collector that answers 503 to its first two batches, then takes them.
async fn collector() -> (String, Arc<Mutex<Vec<Value>>>, Arc<Mutex<Vec<String>>>) {
    let got = Arc::new(Mutex::new(Vec::new()));
    let auth = Arc::new(Mutex::new(Vec::new()));
    let calls = Arc::new(Mutex::new(0u32));
    let (g, a) = (got.clone(), auth.clone());
    let app = Router::new().route(
        "/services/collector/event",
        post(move |headers: http::HeaderMap, body: String| {
            let (g, a, calls) = (g.clone(), a.clone(), calls.clone());
            async move {
                let mut n = calls.lock().unwrap();
                *n += 1;
                if *n <= 2 {
                    return (http::StatusCode::SERVICE_UNAVAILABLE, "busy");
                }
                a.lock().unwrap().push(
                    headers
                        .get("authorization")
                        .map(|v| v.to_str().unwrap().to_string())
                        .unwrap_or_default(),
                );
                for l in body.lines() {
                    g.lock().unwrap().push(serde_json::from_str(l).unwrap());
                }
                (http::StatusCode::OK, "{\"text\":\"Success\",\"code\":0}")
            }
        }),
    );
    // The router answers at any path; the sink posts to the URL it is given.
    let base = serve_router(app).await;
    let base = base.trim_end_matches("/mcp");
    (format!("{base}/services/collector/event"), got, auth)
}

fn sinks(dir: &Path, url: &str) -> String {
    format!(
        "[[export]]\nname = \"siem-file\"\nfile = \"{}\"\n\
         [[export]]\nname = \"entries\"\nformat = \"entries\"\nfile = \"{}\"\n\
         [[export]]\nname = \"hec\"\nurl = \"{url}\"\nheaders = {{ Authorization = \"Splunk ${{env:CUSTODY_TEST_HEC}}\" }}\n",
        dir.join("ocsf.jsonl").display(),
        dir.join("entries.jsonl").display(),
    )
}

#[tokio::test]
async fn calls_reach_the_file_and_the_collector_as_ocsf_at_least_once_across_a_restart() {
    // SAFETY: set before any gateway thread reads the environment.
    unsafe { std::env::set_var("CUSTODY_TEST_HEC", "hec-token-123") };
    let out = tempfile::tempdir().unwrap();
    let (url, got, auth) = collector().await;
    let endpoints = format!("{}{}", sinks(out.path(), &url), stdio_fixture("f", ""));
    let gw = Gateway::start("", &endpoints).await;
    let mut c = gw.client("f");
    c.initialize().await;
    c.call(
        "tools/call",
        json!({"name": "test_simple_text", "arguments": {}}),
    )
    .await;
    // Refused input: a Failure event.
    let refused = c
        .post(&json!({"jsonrpc": "1.0", "id": 9, "method": "tools/list"}))
        .await;
    assert_eq!(refused.status, 400);
    let ocsf = out.path().join("ocsf.jsonl");
    wait_until("the call reaches the file", || {
        lines(&ocsf)
            .iter()
            .any(|e| e["api"]["operation"] == "tools/call")
    })
    .await;
    wait_until("the collector takes the batch after two 503s", || {
        got.lock()
            .unwrap()
            .iter()
            .any(|e| e["event"]["api"]["operation"] == "tools/call")
    })
    .await;
    assert_eq!(auth.lock().unwrap()[0], "Splunk hec-token-123");

    let events = lines(&ocsf);
    let call = events
        .iter()
        .find(|e| e["api"]["operation"] == "tools/call")
        .unwrap();
    assert_eq!(call["class_uid"], 6003);
    assert_eq!(call["type_uid"], 600399);
    assert_eq!(call["status"], "Success");
    assert_eq!(call["metadata"]["version"], "1.5.0");
    assert_eq!(call["api"]["service"]["name"], "f");
    assert!(call["duration"].is_u64());
    assert_eq!(call["resources"][0]["name"], "test_simple_text");
    // The evidence link is the answer's entry: its index and leaf hash.
    let index = call["metadata"]["sequence"].as_u64().unwrap();
    let db = rusqlite::Connection::open(gw.data.path().join("log.sqlite")).unwrap();
    let leaf: Vec<u8> = db
        .query_row(
            "SELECT leaf FROM entries WHERE idx = ?1",
            [index as i64],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(call["metadata"]["uid"], hex::encode(leaf));
    assert!(
        events
            .iter()
            .any(|e| e["status"] == "Failure" && e["unmapped"]["entry_kind"] == "rejected"),
        "{events:?}"
    );
    // Every entry, as `custody log` prints them.
    let entries_file = out.path().join("entries.jsonl");
    wait_until("every entry reaches the entries file", || {
        lines(&entries_file).len() as u64 > index
    })
    .await;
    let first = &lines(&entries_file)[0];
    assert_eq!(first["kind"], "gateway_started");

    // A restart resumes from the cursor: nothing sent twice but what was in flight.
    let data = gw.shutdown().await;
    let before = lines(&ocsf).len();
    let gw = Gateway::start_in(data, "", &endpoints).await;
    let mut c = gw.client("f");
    c.initialize().await;
    c.call(
        "tools/call",
        json!({"name": "test_simple_text", "arguments": {}}),
    )
    .await;
    wait_until("the new call reaches the file", || {
        lines(&ocsf)
            .iter()
            .filter(|e| e["api"]["operation"] == "tools/call")
            .count()
            == 2
    })
    .await;
    let after = lines(&ocsf);
    assert!(after.len() > before);
    let seqs: Vec<u64> = after
        .iter()
        .map(|e| e["metadata"]["sequence"].as_u64().unwrap())
        .collect();
    let unique: HashSet<u64> = seqs.iter().copied().collect();
    assert_eq!(unique.len(), seqs.len(), "no event exported twice");
    gw.shutdown().await;
}

#[test]
fn a_bad_export_is_refused_with_the_reason() {
    for (bad, want) in [
        ("[[export]]\nfile = \"x\"\n", "needs a name"),
        ("[[export]]\nname = \"a\"\n", "exactly one of file"),
        (
            "[[export]]\nname = \"a\"\nfile = \"x\"\nurl = \"http://h\"\n",
            "exactly one of file",
        ),
        (
            "[[export]]\nname = \"a\"\nfile = \"x\"\nformat = \"cef\"\n",
            "is not a format",
        ),
        (
            "[[export]]\nname = \"a\"\nurl = \"ftp://h\"\n",
            "http:// or https://",
        ),
        (
            "[[export]]\nname = \"a\"\nfile = \"x\"\n[[export]]\nname = \"a\"\nfile = \"y\"\n",
            "two [[export]] sinks are named",
        ),
    ] {
        let text = format!(
            "[server]\ndata_dir = \"/tmp/x\"\n[auth]\nanonymous = true\n{bad}{}",
            stdio_fixture("f", "")
        );
        let e = custody::config::Config::parse(&text, "t.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains(want), "{bad}: {e}");
    }
}
