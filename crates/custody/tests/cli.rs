//! The `custody` binary as a user runs it.

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_default_serves_the_demo_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(custody_bin())
        .args(["serve", "--listen", "127.0.0.1:0"])
        .current_dir(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let base = first
        .strip_prefix("custody listening on ")
        .unwrap_or_else(|| panic!("unexpected first line: {first}"))
        .to_string();
    let audit_line = lines.next().unwrap().unwrap();
    assert!(
        audit_line.contains("audit log") && audit_line.contains("custody-data/log.sqlite"),
        "{audit_line}"
    );
    let key_line = lines.next().unwrap().unwrap();
    let key = key_line
        .trim()
        .strip_prefix("verifier key")
        .unwrap()
        .trim()
        .to_string();
    assert!(tlog::Verifier::from_key_string(&key).is_ok(), "{key_line}");
    let token_line = lines.next().unwrap().unwrap();
    let token = token_line
        .trim()
        .strip_prefix("dev token")
        .and_then(|t| t.split_whitespace().next())
        .unwrap_or_else(|| panic!("no dev token: {token_line}"))
        .to_string();
    assert!(token.starts_with("cst_"), "{token_line}");
    let approver_line = lines.next().unwrap().unwrap();
    let approver = approver_line
        .trim()
        .strip_prefix("approver token")
        .and_then(|t| t.split_whitespace().next())
        .unwrap_or_else(|| panic!("no approver token: {approver_line}"));
    assert!(
        approver.starts_with("cst_") && approver != token,
        "{approver_line}"
    );
    let endpoint_line = lines.next().unwrap().unwrap();
    assert!(endpoint_line.contains("/mcp/demo"), "{endpoint_line}");

    let nobody = Client::new(format!("{base}/mcp/demo"));
    let refused = nobody.call("tools/list", json!({})).await;
    assert_eq!(
        refused.status, 401,
        "the embedded default is not open: {refused:#?}"
    );
    let mut c = Client::new(format!("{base}/mcp/demo")).with_token(&token);
    c.initialize().await;
    let a = c
        .call(
            "tools/call",
            json!({"name": "echo", "arguments": {"text": "hello custody"}}),
        )
        .await;
    assert_eq!(
        a.response()["result"]["content"][0]["text"],
        "hello custody"
    );
    let s = c.clone().stateless();
    let a = s
        .call(
            "tools/call",
            json!({"name": "add", "arguments": {"a": 2, "b": 40}}),
        )
        .await;
    assert_eq!(
        a.response()["result"]["structuredContent"]["sum"],
        42.0,
        "{a:#?}"
    );

    // The embedded demo policy permits everything but holds `deploy` for an approval, which
    // the approver token gives through the CLI while the call waits.
    let held = {
        let s = s.clone();
        tokio::spawn(async move {
            s.call(
                "tools/call",
                json!({"name": "deploy", "arguments": {"service": "api", "version": "1.0.0", "environment": "staging"}}),
            )
            .await
        })
    };
    let approvals = |args: &[&str]| {
        let out = Command::new(custody_bin())
            .arg("approvals")
            .args(args)
            .args(["--gateway", &base])
            .env("CUSTODY_TOKEN", approver)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let started = Instant::now();
    let id = loop {
        let (ok, out, err) = approvals(&["list", "--json"]);
        assert!(ok, "{err}");
        let listed: serde_json::Value = serde_json::from_str(&out).unwrap();
        if let Some(a) = listed["approvals"].as_array().and_then(|a| a.first()) {
            assert_eq!(a["target"], "deploy", "{a}");
            assert_eq!(a["requester"]["name"], "dev", "{a}");
            assert_eq!(a["policies"], json!(["demo-deploy-needs-approval"]), "{a}");
            break a["id"].as_str().unwrap().to_string();
        }
        assert!(started.elapsed() < Duration::from_secs(10), "nothing held");
        std::thread::sleep(Duration::from_millis(100));
    };
    let (ok, out, err) = approvals(&["show", &id]);
    assert!(
        ok && out.contains("deploy") && out.contains("\"environment\": \"staging\""),
        "{out}{err}"
    );
    let (ok, out, err) = approvals(&["approve", &id, "--reason", "release 1.0.0"]);
    assert!(ok, "{err}");
    assert!(out.contains("released"), "{out}");
    let released = held.await.unwrap();
    assert!(
        released.response()["result"]["content"][0]["text"]
            .as_str()
            .unwrap()
            .starts_with("deployed api 1.0.0 to staging"),
        "{released:#?}"
    );

    let data = dir.path().join("custody-data");
    let mode = std::fs::metadata(&data).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "the data directory is private");
    let token_file = data.join("dev-token");
    let mode = std::fs::metadata(&token_file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the dev token is private");
    assert_eq!(std::fs::read_to_string(&token_file).unwrap().trim(), token);

    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "custody did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
}

#[test]
fn check_config_reports_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("custody.toml");
    std::fs::write(
        &path,
        "[server]\nlisten = \"127.0.0.1:1\"\n\n[endpoints.api.upstream]\ntransport = \"http\"\nurl = \"http://h/mcp\"\nretries = 3\n",
    )
    .unwrap();
    let out = Command::new(custody_bin())
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("custody.toml:7:1"), "{err}");
    assert!(err.contains("endpoints.api.upstream"), "{err}");
    assert!(err.contains("unknown field `retries`"), "{err}");

    std::fs::write(
        &path,
        "[auth]\nanonymous = true\n[endpoints.api.upstream]\ntransport = \"http\"\nurl = \"http://h/mcp\"\n",
    )
    .unwrap();
    let out = Command::new(custody_bin())
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok (1 endpoint)"));
}

#[test]
fn missing_config_file_is_a_clear_error() {
    let out = Command::new(custody_bin())
        .args(["serve", "--config", "/nonexistent/custody.toml"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("/nonexistent/custody.toml: cannot read the file"),
        "{err}"
    );
}

#[tokio::test]
async fn keygen_makes_a_key_the_gateway_uses() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("keys/ci.key");
    let out = Command::new(custody_bin())
        .args(["keygen", "--origin", "ci.example.com/custody", "--out"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8_lossy(&out.stdout);
    let verifier = std::fs::read_to_string(dir.path().join("keys/ci.key.pub")).unwrap();
    assert!(printed.contains(verifier.trim()), "{printed}");
    assert!(verifier.starts_with("ci.example.com/custody+"));
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let again = Command::new(custody_bin())
        .args(["keygen", "--origin", "x/y", "--out"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(!again.status.success(), "keygen never overwrites a key");
    let bad = Command::new(custody_bin())
        .args(["keygen", "--origin", "has space", "--out"])
        .arg(dir.path().join("other.key"))
        .output()
        .unwrap();
    assert!(!bad.status.success());

    let gw = Gateway::start(
        "",
        &format!(
            "[audit]\nkey_file = \"{}\"\n{}",
            key.display(),
            stdio_fixture("f", "")
        ),
    )
    .await;
    let running = gw.running.as_ref().unwrap();
    assert_eq!(
        running.relay.audit.verifier().to_key_string(),
        verifier.trim()
    );
    assert_eq!(running.relay.audit.origin(), "ci.example.com/custody");
    gw.shutdown().await;
}

#[test]
fn sighup_without_a_policy_leaves_the_gateway_running() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, _) = serve_in(dir.path(), &stdio_fixture("f", ""));
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        child.try_wait().unwrap().is_none(),
        "SIGHUP ended the gateway"
    );
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
}

/// The example deployment (examples/custody.toml and its policies) is valid as written, given
/// its secrets: the environment variables it names, and its files where the container mounts
/// them (mapped here onto a temporary directory).
#[test]
fn the_example_deployment_config_and_policies_check() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let dir = tempfile::tempdir().unwrap();
    let secrets = dir.path().join("secrets");
    std::fs::create_dir(&secrets).unwrap();
    for f in ["deploy_api_key", "deploy_oauth_secret"] {
        std::fs::write(secrets.join(f), "example-secret-value\n").unwrap();
    }
    let text = std::fs::read_to_string(root.join("examples/custody.toml"))
        .unwrap()
        .replace("/run/secrets/", &format!("{}/", secrets.display()));
    let config = root.join("examples/custody.checked.toml");
    std::fs::write(&config, text).unwrap();
    let run = |args: &[&str]| {
        Command::new(custody_bin())
            .args(args)
            .arg(&config)
            .env(
                "SLACK_APPROVALS_WEBHOOK",
                "https://hooks.slack.com/services/T0/B0/example",
            )
            .env("INCIDENTS_HOOK_TOKEN", "example-incidents-token")
            .env(
                "CUSTOMERS_DATABASE_URL",
                "postgres://customers@db/customers",
            )
            .output()
            .unwrap()
    };
    let checked = run(&["check-config", "--config"]);
    let policy = run(&["policy", "check", "--config"]);
    let _ = std::fs::remove_file(&config);
    assert!(
        checked.status.success(),
        "{}",
        String::from_utf8_lossy(&checked.stderr)
    );
    assert!(String::from_utf8_lossy(&checked.stdout).contains("ok (2 endpoints)"));
    assert!(
        policy.status.success(),
        "{}{}",
        String::from_utf8_lossy(&policy.stdout),
        String::from_utf8_lossy(&policy.stderr)
    );
}
