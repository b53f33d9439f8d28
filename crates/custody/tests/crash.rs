//! kill -9 during concurrent calls: after a restart the log verifies, and every call whose
//! client got an answer has both its entries in it.

mod common;

use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use rusqlite::{Connection, params};
use serde_json::{Value, json};

fn start(dir: &std::path::Path, upstream: &str) -> (Child, String) {
    serve_in(dir, &http_upstream("f", upstream, ""))
}

#[tokio::test]
async fn kill_9_loses_nothing_a_client_saw() {
    let upstream = fixture_http().await;
    let dir = tempfile::tempdir().unwrap();
    let (mut gw, base) = start(dir.path(), &upstream);

    let receipts = Arc::new(Mutex::new(Vec::<Value>::new()));
    let clients: Vec<_> = (0..16)
        .map(|_| {
            let c = Client::new(format!("{base}/mcp/f")).stateless();
            let receipts = receipts.clone();
            tokio::spawn(async move {
                loop {
                    let body = c.request_body(
                        "tools/call",
                        json!({"name": "test_simple_text", "arguments": {}}),
                    );
                    let sent = c
                        .with_mirrored(c.post_builder(), &body)
                        .body(body.to_string())
                        .send()
                        .await;
                    let Ok(resp) = sent else { return };
                    let Ok(v) = resp.json::<Value>().await else {
                        return;
                    };
                    if let Some(r) = v.pointer("/result/_meta/dev.custody~1receipt") {
                        receipts.lock().unwrap().push(r.clone());
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    gw.kill().unwrap(); // SIGKILL
    gw.wait().unwrap();
    for c in clients {
        let _ = c.await;
    }
    let seen = receipts.lock().unwrap().clone();
    assert!(seen.len() > 10, "the load ran: {} answers", seen.len());

    // The gateway restarts on the same log and serves.
    let (mut again, base) = start(dir.path(), &upstream);
    let c = Client::new(format!("{base}/mcp/f")).stateless();
    let a = c
        .call(
            "tools/call",
            json!({"name": "test_simple_text", "arguments": {}}),
        )
        .await;
    assert_eq!(a.status, 200, "{a:#?}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(again.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert!(again.wait().unwrap().success());

    let data = dir.path().join("data");
    let out = Command::new(custody_bin())
        .arg("verify")
        .arg("--data")
        .arg(&data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let db = Connection::open(data.join("log.sqlite")).unwrap();
    let leaf_at = |i: u64| -> Option<String> {
        db.query_row(
            "SELECT leaf FROM entries WHERE idx = ?1",
            params![i as i64],
            |r| r.get::<_, Vec<u8>>(0),
        )
        .ok()
        .map(hex::encode)
    };
    for r in &seen {
        for side in ["request", "response"] {
            let index = r[side]["index"].as_u64().unwrap();
            assert_eq!(
                leaf_at(index).as_deref(),
                r[side]["leaf"].as_str(),
                "the {side} entry {index} of an answered call is in the log"
            );
        }
    }
}
