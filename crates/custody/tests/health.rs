//! Health (issue 19): `/readyz` turns 503 with every reason when the log cannot be written,
//! its store does not answer or its checkpoint goes stale, and while the gateway drains (on the
//! operator listener, which stays up); logs carry no colour codes when stderr is not a
//! terminal.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::*;
use serde_json::{Value, json};

fn simple_text() -> Value {
    json!({"name": "test_simple_text", "arguments": {}})
}

/// An MCP server over HTTP that answers every request after `delay`.
async fn slow_upstream(delay: Duration) -> String {
    let app = axum::Router::new().route(
        "/mcp",
        axum::routing::post(move |body: axum::Json<Value>| async move {
            tokio::time::sleep(delay).await;
            axum::Json(
                json!({"jsonrpc": "2.0", "id": body.0["id"].clone(), "result": {"content": []}}),
            )
        }),
    );
    serve_router(app).await
}

#[tokio::test]
async fn not_ready_while_draining() {
    let upstream = slow_upstream(Duration::from_secs(2)).await;
    let mut gw = Gateway::start(
        "shutdown_grace = \"10s\"",
        &format!(
            "[metrics]\nlisten = \"127.0.0.1:0\"\n{}",
            http_upstream("slow", &upstream, "")
        ),
    )
    .await;
    let running = gw.running.take().unwrap();
    let ops = running.metrics_addr.unwrap();
    let readyz = format!("http://{ops}/readyz");
    assert_eq!(reqwest::get(&readyz).await.unwrap().status(), 200);
    let c = gw.client("slow").stateless();
    let call = tokio::spawn(async move { c.call("tools/call", simple_text()).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    running.stop_token().cancel();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let r = reqwest::get(&readyz).await.unwrap();
    assert_eq!(r.status(), 503);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["reasons"][0]
            .as_str()
            .unwrap()
            .contains("shutting down"),
        "{body}"
    );
    // The call in flight still finishes.
    let answer = call.await.unwrap();
    assert!(
        answer.response()["result"].is_object(),
        "{:?}",
        answer.response()
    );
    running.wait().await;
}

/// A store whose commits and reads fail while `broken` is set.
#[derive(Clone, Default)]
struct Breakable {
    broken: Arc<AtomicBool>,
    state: Arc<std::sync::Mutex<tlog::CompactRange>>,
}

impl custody::store::Store for Breakable {
    fn append(
        &mut self,
        _: u64,
        _: &[custody::store::Row],
        _: &[tlog::compact::Node],
        state: &tlog::CompactRange,
    ) -> Result<(), custody::store::StoreError> {
        if self.broken.load(Ordering::SeqCst) {
            return Err(custody::store::StoreError::Inconsistent(
                "disk I/O error (injected)".into(),
            ));
        }
        *self.state.lock().unwrap() = state.clone();
        Ok(())
    }

    fn state(&mut self) -> Result<tlog::CompactRange, custody::store::StoreError> {
        Ok(self.state.lock().unwrap().clone())
    }

    fn put_checkpoint(
        &mut self,
        _: &custody::store::StoredCheckpoint,
    ) -> Result<(), custody::store::StoreError> {
        Ok(())
    }

    fn latest_checkpoint(
        &mut self,
    ) -> Result<Option<custody::store::StoredCheckpoint>, custody::store::StoreError> {
        if self.broken.load(Ordering::SeqCst) {
            return Err(custody::store::StoreError::Inconsistent(
                "the database is locked (injected)".into(),
            ));
        }
        Ok(None)
    }

    fn entry_version(&mut self) -> Result<Option<u8>, custody::store::StoreError> {
        Ok(Some(tlog::entry::V2))
    }

    fn set_entry_version(&mut self, _: u8) -> Result<(), custody::store::StoreError> {
        Ok(())
    }

    fn scan(
        &mut self,
        from: u64,
        to: u64,
        _: bool,
        _: &mut custody::store::ScanFn<'_>,
    ) -> Result<(), custody::store::StoreError> {
        match from..to {
            r if r.is_empty() => Ok(()),
            _ => Err(custody::store::StoreError::NotFound(from)),
        }
    }
}

#[tokio::test]
async fn readyz_says_why_when_the_log_cannot_be_written() {
    let data = tempfile::tempdir().unwrap();
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n[auth]\nanonymous = true\n[audit]\ncheckpoint_interval = \"100ms\"\nheartbeat_interval = \"500ms\"\nscrub_interval = \"0s\"\n{}",
        data.path().display(),
        stdio_fixture("f", "")
    );
    let config = custody::config::Config::parse(&text, "t.toml").unwrap();
    custody::data_dir::prepare(&config.server.data_dir).unwrap();
    let store = Breakable::default();
    let signer = tlog::Signer::new("test/metrics", [9; 32]).unwrap();
    let opened =
        custody::audit::Audit::with_store(store.clone(), signer, true, data.path(), &config.audit)
            .unwrap();
    let running = custody::http::start_with(&config, opened).await.unwrap();
    let readyz = format!("http://{}/readyz", running.addr);
    assert_eq!(reqwest::get(&readyz).await.unwrap().status(), 200);
    store.broken.store(true, Ordering::SeqCst);
    let c = Client::new(format!("http://{}/mcp/f", running.addr)).stateless();
    let refused = c.call("tools/call", simple_text()).await;
    assert_eq!(
        refused.response()["error"]["code"],
        -32015,
        "{:?}",
        refused.response()
    );
    // Not writable, the store does not answer, and (no entry, so no checkpoint) soon stale.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let reasons = loop {
        let r = reqwest::get(&readyz).await.unwrap();
        assert_eq!(r.status(), 503);
        let body: Value = r.json().await.unwrap();
        let reasons: Vec<String> = body["reasons"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_str().unwrap().to_string())
            .collect();
        if reasons.iter().any(|r| r.contains("latest checkpoint")) {
            break reasons;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never stale: {reasons:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let all = reasons.join("\n");
    assert!(
        all.contains("not writable") && all.contains("disk I/O error"),
        "{all}"
    );
    assert!(
        all.contains("store does not answer") && all.contains("database is locked"),
        "{all}"
    );
    let text = scrape(running.addr).await;
    assert!(
        sample(
            &text,
            "custody_audit_appends_total",
            &[("outcome", "failed")]
        )
        .unwrap()
            >= 1.0
    );
    let unavailable = sample(
        &text,
        "custody_requests_total",
        &[
            ("endpoint", "f"),
            ("method", "tools/call"),
            ("outcome", "audit_unavailable"),
        ],
    );
    assert_eq!(unavailable, Some(1.0), "{text}");
    // The store recovers: so does readiness.
    store.broken.store(false, Ordering::SeqCst);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while reqwest::get(&readyz).await.unwrap().status() != 200 {
        assert!(std::time::Instant::now() < deadline, "never ready again");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    running.shutdown().await;
}

#[test]
fn logs_carry_no_colour_codes_when_stderr_is_not_a_terminal() {
    use std::io::{BufRead, BufReader, Read};
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("custody.toml");
    // An anonymous gateway warns at start: there is something on stderr to look at.
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n[auth]\nanonymous = true\n{}",
            dir.path().join("data").display(),
            stdio_fixture("f", "")
        ),
    )
    .unwrap();
    let mut child = Command::new(custody_bin())
        .args(["serve", "--config"])
        .arg(&config)
        .env_remove("NO_COLOR")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let first = BufReader::new(child.stdout.take().unwrap())
        .lines()
        .next()
        .unwrap()
        .unwrap();
    assert!(first.starts_with("custody listening on"), "{first}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap()),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    child.wait().unwrap();
    assert!(err.contains("INFO") || err.contains("WARN"), "{err}");
    assert!(!err.contains('\u{1b}'), "colour codes in a pipe: {err:?}");
}
