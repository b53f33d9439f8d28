//! A pipeline run, end to end: a simulated GitHub Actions job (the two environment variables,
//! and a loopback token service that behaves like GitHub's and issues real signed tokens with
//! the GitHub claim set) runs an MCP client through `custody connect` to the gateway, which
//! injects credentials only it holds (a header by file reference and an OAuth
//! client-credentials token) on the way to the upstream.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use common::*;
use custody_test_issuer::TestIssuer;
use serde_json::{Value, json};
use tlog::entry::Kind;

const API_KEY: &str = "upstream-api-key-7f3c9a2e51d04b88";
const CLIENT_SECRET: &str = "oauth-client-secret-c0ffee5eed";
const REQUEST_TOKEN: &str = "gha-request-token-not-an-oidc-token";
/// What the leaky upstream replaces with its API key in any answer.
const LEAK: &str = "PLEASE_LEAK_THE_KEY";

#[derive(Default)]
struct Seen {
    /// Seconds the issued job tokens live (default: the test issuer's five minutes).
    lifetime: Option<u64>,
    /// Headers of every request the upstream got.
    upstream: Vec<HashMap<String, String>>,
    /// Every OIDC token the token service issued.
    job_tokens: Vec<String>,
    /// Every OAuth token the token endpoint issued.
    oauth_tokens: Vec<String>,
}

/// GitHub's OIDC token service: `GET ?audience=` with the request token as bearer.
async fn github_token_service(
    State((issuer, seen)): State<(Arc<TestIssuer>, Arc<Mutex<Seen>>)>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Result<axum::Json<Value>, StatusCode> {
    if headers.get("authorization").and_then(|v| v.to_str().ok())
        != Some(&format!("Bearer {REQUEST_TOKEN}"))
    {
        return Err(StatusCode::UNAUTHORIZED);
    }
    assert_eq!(q.get("api-version").map(String::as_str), Some("2.0"));
    let audience = q.get("audience").cloned().unwrap_or_default();
    let claims = issuer.claims(
        "repo:acme/api:ref:refs/heads/main",
        &json!({
            "aud": audience,
            "repository": "acme/api", "repository_owner": "acme", "repository_id": "1296269",
            "ref": "refs/heads/main", "ref_type": "branch", "sha": "5d8f1e2a9c",
            "workflow": "deploy", "workflow_ref": "acme/api/.github/workflows/deploy.yml@refs/heads/main",
            "job_workflow_ref": "acme/api/.github/workflows/deploy.yml@refs/heads/main",
            "run_id": "8123456789", "run_attempt": "1", "run_number": "42",
            "actor": "octocat", "actor_id": "583231", "event_name": "push", "environment": "production",
            "runner_environment": "github-hosted",
        }),
    );
    let mut claims = claims;
    if let Some(l) = seen.lock().unwrap().lifetime {
        claims["exp"] = json!(custody_test_issuer::now() + l);
    }
    let token = issuer.token("rsa-1", &claims);
    seen.lock().unwrap().job_tokens.push(token.clone());
    Ok(axum::Json(json!({ "count": 1, "value": token })))
}

/// Serves [`github_token_service`] on loopback; returns what GitHub puts in
/// `ACTIONS_ID_TOKEN_REQUEST_URL`.
async fn serve_github_token_service(issuer: Arc<TestIssuer>, seen: Arc<Mutex<Seen>>) -> String {
    serve_router(
        axum::Router::new()
            .route("/token", axum::routing::get(github_token_service))
            .with_state((issuer, seen)),
    )
    .await
    .replace("/mcp", "/token?api-version=2.0")
}

/// An OAuth token endpoint (client credentials, HTTP Basic).
async fn oauth_token(
    State(seen): State<Arc<Mutex<Seen>>>,
    headers: HeaderMap,
    body: String,
) -> Result<axum::Json<Value>, (StatusCode, axum::Json<Value>)> {
    use base64::Engine as _;
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD
            .encode(format!("custody-gateway:{CLIENT_SECRET}"))
    );
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(expected.as_str())
        || !body.contains("grant_type=client_credentials")
        || !body.contains("scope=mcp")
    {
        return Err((
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({"error": "invalid_client"})),
        ));
    }
    let token = format!(
        "oauth-access-{}",
        seen.lock().unwrap().oauth_tokens.len() + 1000
    );
    seen.lock().unwrap().oauth_tokens.push(token.clone());
    Ok(axum::Json(
        json!({"access_token": token, "token_type": "Bearer", "expires_in": 3600}),
    ))
}

/// The demo MCP server behind a guard that wants both credentials, records every request's
/// headers, and leaks its API key into any answer that asks for it.
async fn upstream(seen: Arc<Mutex<Seen>>) -> String {
    let engine = custody_mcp_server::Engine::new(custody_mcp_server::Catalog::Demo);
    let mcp = custody_mcp_server::http::router(engine, "/mcp");
    let app =
        mcp.layer(axum::middleware::from_fn(
            move |req: axum::extract::Request, next: axum::middleware::Next| {
                let seen = seen.clone();
                async move {
                    let headers: HashMap<String, String> = req
                        .headers()
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
                        .collect();
                    let authorized =
                        headers.get("x-api-key").map(String::as_str) == Some(API_KEY)
                            && seen.lock().unwrap().oauth_tokens.iter().any(|t| {
                                headers.get("authorization") == Some(&format!("Bearer {t}"))
                            });
                    seen.lock().unwrap().upstream.push(headers);
                    if !authorized {
                        return StatusCode::UNAUTHORIZED.into_response();
                    }
                    let is_get = req.method() == axum::http::Method::GET;
                    let resp = next.run(req).await;
                    if is_get {
                        // The session's own stream stays open: passed on as it comes.
                        return resp;
                    }
                    let (parts, body) = resp.into_parts();
                    let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap();
                    let text = String::from_utf8_lossy(&bytes).replace(LEAK, API_KEY);
                    let mut parts = parts;
                    parts.headers.remove("content-length");
                    axum::response::Response::from_parts(parts, axum::body::Body::from(text))
                }
            },
        ));
    serve_router(app).await
}

use axum::response::IntoResponse;

/// The job: `custody connect` with the GitHub Actions variables, driven over its stdio.
struct Job {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    lines: std::sync::mpsc::Receiver<String>,
    output: Vec<String>,
}

impl Job {
    fn start(url: &str, env: &[(&str, String)]) -> Self {
        let mut cmd = Command::new(custody_bin());
        cmd.args(["connect", url, "--audience", "custody"])
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            stdin,
            lines,
            output: Vec::new(),
        }
    }

    fn send(&mut self, msg: &Value) {
        writeln!(self.stdin, "{msg}").unwrap();
        self.stdin.flush().unwrap();
    }

    /// Sends a request and returns its answer (other lines before it are kept in `output`).
    fn call(&mut self, id: u64, method: &str, params: Value) -> Value {
        self.send(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}));
        let started = Instant::now();
        loop {
            let line = self
                .lines
                .recv_timeout(Duration::from_secs(20).saturating_sub(started.elapsed()))
                .unwrap_or_else(|_| panic!("no answer to {method}; got {:?}", self.output));
            self.output.push(line.clone());
            let v: Value = serde_json::from_str(&line).unwrap();
            if v["id"] == id {
                return v;
            }
        }
    }

    /// Waits for a line that is a message with `method` (already read ones count).
    fn wait_for_method(&mut self, method: &str) -> Value {
        let is = |line: &str| {
            serde_json::from_str::<Value>(line)
                .ok()
                .filter(|v| v["method"] == method)
        };
        if let Some(v) = self.output.iter().find_map(|l| is(l)) {
            return v;
        }
        let started = Instant::now();
        loop {
            let line = self
                .lines
                .recv_timeout(Duration::from_secs(10).saturating_sub(started.elapsed()))
                .unwrap_or_else(|_| panic!("no {method}; got {:?}", self.output));
            self.output.push(line.clone());
            if let Some(v) = is(&line) {
                return v;
            }
        }
    }

    fn finish(mut self) -> (std::process::ExitStatus, Vec<String>, String) {
        drop(self.stdin);
        let status = self.child.wait().unwrap();
        while let Ok(l) = self.lines.recv_timeout(Duration::from_millis(200)) {
            self.output.push(l);
        }
        let mut err = String::new();
        std::io::Read::read_to_string(&mut self.child.stderr.take().unwrap(), &mut err).unwrap();
        (status, self.output, err)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_github_actions_job_calls_tools_through_custody_connect_and_leaves_proof() {
    let seen: Arc<Mutex<Seen>> = Arc::default();
    let issuer = Arc::new(TestIssuer::start().await);
    let token_service = serve_github_token_service(issuer.clone(), seen.clone()).await;
    let oauth = serve_router(
        axum::Router::new()
            .route("/oauth/token", axum::routing::post(oauth_token))
            .with_state(seen.clone()),
    )
    .await
    .replace("/mcp", "/oauth/token");
    let upstream_url = upstream(seen.clone()).await;

    let secrets = tempfile::tempdir().unwrap();
    std::fs::write(secrets.path().join("api-key"), format!("{API_KEY}\n")).unwrap();
    std::fs::write(secrets.path().join("client-secret"), CLIENT_SECRET).unwrap();
    let policy = secrets.path().join("ci.cedar");
    std::fs::write(
        &policy,
        "@id(\"acme-main\")\npermit(principal, action, resource in Endpoint::\"deploy\")\n\
         when { principal.repository_owner == \"acme\" && principal.ref == \"refs/heads/main\" };\n",
    )
    .unwrap();
    let gw = Gateway::start(
        "",
        &format!(
            "[[auth.oidc]]\npreset = \"github-actions\"\nissuer = \"{}\"\naudiences = [\"custody\"]\n\
             [policy]\nfiles = [\"{}\"]\n\
             [endpoints.deploy.upstream]\ntransport = \"http\"\nurl = \"{upstream_url}\"\n\
             headers = {{ X-Api-Key = \"${{file:{}}}\" }}\n\
             [endpoints.deploy.upstream.oauth]\ntoken_url = \"{oauth}\"\nclient_id = \"custody-gateway\"\n\
             client_secret = \"${{file:{}}}\"\nscope = \"mcp\"\n",
            issuer.url,
            policy.display(),
            secrets.path().join("api-key").display(),
            secrets.path().join("client-secret").display(),
        ),
    )
    .await;
    let env = [
        ("ACTIONS_ID_TOKEN_REQUEST_URL", token_service.clone()),
        ("ACTIONS_ID_TOKEN_REQUEST_TOKEN", REQUEST_TOKEN.to_string()),
        ("GITHUB_REPOSITORY", "acme/api".to_string()),
    ];
    let mut job = Job::start(&gw.url("deploy"), &env);
    let init = job.call(
        1,
        "initialize",
        json!({"protocolVersion": "2025-11-25", "capabilities": {},
               "clientInfo": {"name": "pipeline", "version": "1"}}),
    );
    assert_eq!(init["result"]["protocolVersion"], "2025-11-25", "{init}");
    job.send(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
    let tools = job.call(2, "tools/list", json!({}));
    assert!(
        tools["result"]["tools"].as_array().unwrap().len() >= 5,
        "{tools}"
    );
    let echo = job.call(
        3,
        "tools/call",
        json!({"name": "echo", "arguments": {"text": format!("key: {LEAK}")}}),
    );
    let text = echo["result"]["content"][0]["text"].as_str().unwrap();
    assert_eq!(
        text, "key: [custody:credential]",
        "the key the upstream leaked is scrubbed"
    );
    let sum = job.call(
        4,
        "tools/call",
        json!({"name": "add", "arguments": {"a": 20, "b": 22}}),
    );
    assert_eq!(sum["result"]["structuredContent"]["sum"], 42.0, "{sum}");
    let receipt = sum["result"]["_meta"]["dev.custody/receipt"].clone();
    let (status, output, stderr) = job.finish();
    assert!(status.success(), "{stderr}");

    // The upstream saw the injected credentials on every request, never the job's token.
    let seen = {
        let s = seen.lock().unwrap();
        Seen {
            lifetime: s.lifetime,
            upstream: s.upstream.clone(),
            job_tokens: s.job_tokens.clone(),
            oauth_tokens: s.oauth_tokens.clone(),
        }
    };
    assert!(!seen.upstream.is_empty());
    assert_eq!(
        seen.job_tokens.len(),
        1,
        "one token for the job's short run"
    );
    for headers in &seen.upstream {
        assert_eq!(headers.get("x-api-key").map(String::as_str), Some(API_KEY));
        assert_eq!(
            headers.get("authorization"),
            Some(&format!("Bearer {}", seen.oauth_tokens[0]))
        );
        for v in headers.values() {
            for t in &seen.job_tokens {
                assert!(
                    !v.contains(t.as_str()),
                    "the job's token reached the upstream"
                );
            }
        }
    }
    // Nothing the job can read holds an upstream credential.
    let readable: String = output.join("\n")
        + &stderr
        + &env
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<String>();
    for secret in [API_KEY, CLIENT_SECRET, seen.oauth_tokens[0].as_str()] {
        assert!(!readable.contains(secret), "the job could read {secret}");
    }

    // A receipt of the job's call verifies offline with only the verifier key.
    let base = format!("http://{}", gw.addr);
    let http = reqwest::Client::new();
    let index = receipt["response"]["index"].as_u64().unwrap();
    let started = Instant::now();
    let proof = loop {
        let r = http
            .get(format!("{base}/api/v1/log/proof?index={index}"))
            .send()
            .await
            .unwrap();
        if r.status() == 200 {
            break r.text().await.unwrap();
        }
        assert!(started.elapsed() < Duration::from_secs(10));
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let key = http
        .get(format!("{base}/api/v1/log/key"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let dir = gw.shutdown().await;
    let proof_file = dir.path().join("receipt.tlog-proof");
    std::fs::write(&proof_file, proof).unwrap();
    let out = Command::new(custody_bin())
        .args(["receipt", "verify", "--key", key.trim(), "--leaf"])
        .arg(receipt["response"]["leaf"].as_str().unwrap())
        .arg(&proof_file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The log holds every message with the run's claims, and verifies.
    let log = entries(dir.path());
    let messages: Vec<_> = log
        .iter()
        .filter(|e| matches!(e.kind, Kind::Request | Kind::Response | Kind::Notification))
        .collect();
    assert!(messages.len() >= 7, "{}", messages.len());
    for e in &messages {
        let caller: Value = serde_json::from_str(&e.caller).unwrap();
        assert_eq!(caller["claims"]["repository"], "acme/api", "{caller}");
        assert_eq!(caller["claims"]["run_id"], "8123456789", "{caller}");
        assert_eq!(caller["claims"]["sha"], "5d8f1e2a9c", "{caller}");
        let text = format!("{} {}", String::from_utf8_lossy(&e.message), e.detail);
        for secret in [API_KEY, CLIENT_SECRET, seen.oauth_tokens[0].as_str()] {
            assert!(!text.contains(secret), "the log holds {secret}");
        }
    }
    assert_log_verifies(dir.path());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_fails_loudly_without_a_token_with_a_refused_one_and_without_a_gateway() {
    let issuer = TestIssuer::start().await;
    let gw = Gateway::start(
        "",
        &format!(
            "[[auth.oidc]]\npreset = \"gitlab\"\nissuer = \"{}\"\naudiences = [\"custody\"]\n{}{}",
            issuer.url,
            stdio_fixture("f", ""),
            http_upstream("h", &fixture_http().await, "")
        ),
    )
    .await;
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "ci", "version": "1"}}});

    // No token anywhere: it says where it looked, before serving anything.
    let (status, _, err) = Job::start(&gw.url("f"), &[]).finish();
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(
        err.contains("no token: $CUSTODY_TOKEN is not set") && err.contains("id-token: write"),
        "{err}"
    );

    // A GitLab id_token in CUSTODY_TOKEN works...
    let good = issuer.token(
        "rsa-1",
        &issuer.claims(
            "project_path:acme/api:ref_type:branch:ref:main",
            &json!({"project_path": "acme/api", "namespace_path": "acme", "ref": "main",
                    "ref_type": "branch", "pipeline_id": "991"}),
        ),
    );
    let mut job = Job::start(&gw.url("h"), &[("CUSTODY_TOKEN", good.clone())]);
    let answer = job.call(1, "initialize", init["params"].clone());
    assert!(answer.get("result").is_some(), "{answer}");
    // What the server sends outside any request reaches the client through the session's
    // own stream, which connect opens once the client is initialized.
    job.send(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
    let changed = job.call(
        2,
        "tools/call",
        json!({"name": "test_trigger_tool_change", "arguments": {}}),
    );
    assert!(changed.get("result").is_some(), "{changed}");
    job.wait_for_method("notifications/tools/list_changed");
    let (status, _, err) = job.finish();
    assert!(status.success(), "{err}");
    // The stateless generation: no initialize; connect mirrors the headers the body implies.
    let meta = json!({"io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {}});
    let mut job = Job::start(&gw.url("f"), &[("CUSTODY_TOKEN", good)]);
    let listed = job.call(1, "tools/list", json!({"_meta": meta}));
    assert!(listed["result"]["tools"].as_array().is_some(), "{listed}");
    let called = job.call(
        2,
        "tools/call",
        json!({"name": "test_simple_text", "arguments": {}, "_meta": meta}),
    );
    assert!(
        called["result"]["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("simple text"),
        "{called}"
    );
    let (status, _, err) = job.finish();
    assert!(status.success(), "{err}");

    // ...one for another audience is refused: the request is answered, and the process ends
    // non-zero with the gateway's reason.
    let wrong = issuer.token(
        "rsa-1",
        &issuer.claims("project_path:acme/api", &json!({"aud": "someone-else"})),
    );
    let mut job = Job::start(&gw.url("f"), &[("CUSTODY_TOKEN", wrong)]);
    let answer = job.call(1, "initialize", init["params"].clone());
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("the gateway refused the token"),
        "{answer}"
    );
    let (status, _, err) = job.finish();
    assert_eq!(status.code(), Some(2));
    assert!(
        err.contains("refused the token from $CUSTODY_TOKEN") && err.contains("audience"),
        "{err}"
    );

    // No gateway at all.
    let url = closed_port().await;
    let mut job = Job::start(&url, &[("CUSTODY_TOKEN", "cst_static".to_string())]);
    let answer = job.call(1, "initialize", init["params"].clone());
    assert!(answer.get("error").is_some(), "{answer}");
    let (status, _, err) = job.finish();
    assert_eq!(status.code(), Some(2));
    assert!(
        err.contains(&format!("couldn't reach the gateway at {url}")),
        "{err}"
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_fetches_a_fresh_github_token_before_the_old_one_expires() {
    let seen: Arc<Mutex<Seen>> = Arc::default();
    // 61 s tokens: renewed a minute before they expire, so after one second.
    seen.lock().unwrap().lifetime = Some(61);
    let issuer = Arc::new(TestIssuer::start().await);
    let token_service = serve_github_token_service(issuer.clone(), seen.clone()).await;
    let gw = Gateway::start(
        "",
        &format!(
            "[[auth.oidc]]\npreset = \"github-actions\"\nissuer = \"{}\"\naudiences = [\"custody\"]\n{}",
            issuer.url,
            stdio_fixture("f", "")
        ),
    )
    .await;
    let env = [
        ("ACTIONS_ID_TOKEN_REQUEST_URL", token_service),
        ("ACTIONS_ID_TOKEN_REQUEST_TOKEN", REQUEST_TOKEN.to_string()),
    ];
    let mut job = Job::start(&gw.url("f"), &env);
    let init = job.call(
        1,
        "initialize",
        json!({"protocolVersion": "2025-11-25", "capabilities": {},
               "clientInfo": {"name": "pipeline", "version": "1"}}),
    );
    assert!(init.get("result").is_some(), "{init}");
    job.send(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
    assert_eq!(seen.lock().unwrap().job_tokens.len(), 1);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let listed = job.call(2, "tools/list", json!({}));
    assert!(listed.get("result").is_some(), "{listed}");
    let (status, _, err) = job.finish();
    assert!(status.success(), "{err}");
    let tokens = seen.lock().unwrap().job_tokens.clone();
    assert!(
        tokens.len() >= 2,
        "a fresh token was fetched: {}",
        tokens.len()
    );
    // Both tokens belong to the same job, so the session continued with the fresh one.
    let dir = gw.shutdown().await;
    let requests = entries(dir.path())
        .iter()
        .filter(|e| e.kind == Kind::Request)
        .count();
    assert_eq!(requests, 2, "initialize and tools/list, in one session");
}
