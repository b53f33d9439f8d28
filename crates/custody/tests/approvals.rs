//! Just-in-time approval, end to end: calls held on their event stream while approvers decide
//! through the API and the CLI; denial, expiry, self-approval, two approvers, argument binding,
//! cancellation, restarts and webhooks.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use custody::identity::{new_static_token, token_hash};
use serde_json::{Value, json};
use tlog::entry::Kind;

const POLICIES: &str = r#"
@id("everything")
permit(principal, action in [Action::"tools/call", Action::"list", Action::"other"], resource);

@id("staging-needs-approval")
@approval("required")
permit(principal, action == Action::"tools/call", resource)
when { resource.name == "deploy" && context.arguments.hasTag("environment") &&
       context.arguments.getTag("environment") == "staging" };

@id("production-needs-two")
@approval("required")
@min_approvals("2")
permit(principal, action == Action::"tools/call", resource)
when { resource.name == "deploy" && context.arguments.hasTag("environment") &&
       context.arguments.getTag("environment") == "production" };

@id("sre-approves-staging")
permit(principal, action == Action::"approve", resource)
when { principal.name == "sre" && context.arguments.hasTag("environment") &&
       context.arguments.getTag("environment") == "staging" };
"#;

/// Names of the static tokens every test gateway accepts. `alice` and `bob` are listed
/// approvers, `sre` approves staging by policy, `ci` and `carol` approve nothing.
const PEOPLE: [&str; 5] = ["ci", "alice", "bob", "sre", "carol"];

struct Setup {
    gw: Gateway,
    tokens: HashMap<&'static str, String>,
    _policy: tempfile::TempDir,
}

impl Setup {
    fn client(&self, who: &str) -> Client {
        self.gw
            .client("demo")
            .with_token(&self.tokens[who])
            .stateless()
    }

    fn api(&self, path: &str) -> String {
        format!("http://{}/api/v1/approvals{path}", self.gw.addr)
    }

    async fn get(&self, who: &str, path: &str) -> (u16, Value) {
        let resp = reqwest::Client::new()
            .get(self.api(path))
            .bearer_auth(&self.tokens[who])
            .send()
            .await
            .unwrap();
        (resp.status().as_u16(), resp.json().await.unwrap())
    }

    async fn decide(&self, who: &str, id: &str, verb: &str, body: Value) -> (u16, Value) {
        let resp = reqwest::Client::new()
            .post(self.api(&format!("/{id}/{verb}")))
            .bearer_auth(&self.tokens[who])
            .json(&body)
            .send()
            .await
            .unwrap();
        (resp.status().as_u16(), resp.json().await.unwrap())
    }

    /// Waits until `n` approvals are pending (as `alice` sees them) and returns them, oldest
    /// first.
    async fn pending(&self, n: usize) -> Vec<Value> {
        let started = Instant::now();
        loop {
            let (status, list) = self.get("alice", "").await;
            assert_eq!(status, 200, "{list}");
            let items = list["approvals"].as_array().unwrap().clone();
            if items.len() >= n {
                return items;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "expected {n} pending approvals, have {items:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn setup_with(approvals: &str) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("approvals.cedar");
    std::fs::write(&policy, POLICIES).unwrap();
    let mut tokens = HashMap::new();
    let mut statics = String::new();
    for name in PEOPLE {
        let token = new_static_token();
        statics.push_str(&format!(
            "[[auth.static]]\nname = \"{name}\"\nsha256 = \"{}\"\n",
            hex(&token_hash(&token))
        ));
        tokens.insert(name, token);
    }
    let gw = Gateway::start(
        "",
        &format!(
            "[auth]\n{statics}[policy]\nfiles = [\"{}\"]\n[approvals]\napprovers = [\"alice\", \"bob\"]\n{approvals}\n\
             [endpoints.demo.upstream]\ntransport = \"stdio\"\ncommand = \"{}\"\nargs = [\"demo-server\"]\n",
            policy.display(),
            custody_bin()
        ),
    )
    .await;
    Setup {
        gw,
        tokens,
        _policy: dir,
    }
}

/// The value of the first sample of the gateway's `/metrics` that starts with `prefix`.
async fn metric(s: &Setup, prefix: &str) -> f64 {
    let text = reqwest::get(format!("http://{}/metrics", s.gw.addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(prefix))
        .unwrap_or_else(|| panic!("no {prefix}in {text}"))
        .trim()
        .parse()
        .unwrap()
}

async fn setup() -> Setup {
    setup_with("keepalive = \"200ms\"\n").await
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn deploy(environment: &str, version: &str) -> Value {
    json!({"name": "deploy", "arguments": {"service": "api", "version": version, "environment": environment}})
}

/// Starts a held call in the background.
fn hold(client: &Client, params: Value) -> tokio::task::JoinHandle<Answer> {
    let client = client.clone();
    tokio::spawn(async move { client.call("tools/call", params).await })
}

fn detail(e: &tlog::Entry<'_>) -> Value {
    serde_json::from_str(&e.detail).unwrap()
}

fn caller_name(e: &tlog::Entry<'_>) -> String {
    serde_json::from_str::<Value>(&e.caller).unwrap()["name"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approved_call_is_released_and_a_denied_one_fails_with_the_approvers_reason() {
    let s = setup().await;
    let ci = s.client("ci");
    let approved = hold(&ci, deploy("staging", "1.0.0"));
    let first = s.pending(1).await.remove(0);
    assert_eq!(first["state"], "pending");
    assert_eq!(first["requester"]["name"], "ci");
    assert_eq!(first["endpoint"], "demo");
    assert_eq!(first["target"], "deploy");
    assert_eq!(first["arguments"]["environment"], "staging");
    assert_eq!(first["policies"], json!(["staging-needs-approval"]));
    assert_eq!(first["min_approvals"], 1);
    let id = first["id"].as_str().unwrap().to_string();
    assert_eq!(metric(&s, "custody_approvals_pending ").await, 1.0);
    // Someone who is no approver can neither see nor decide it; nobody anonymous can.
    let (status, list) = s.get("carol", "").await;
    assert_eq!(
        (status, list["approvals"].as_array().unwrap().len()),
        (200, 0)
    );
    let (status, body) = s.decide("carol", &id, "approve", json!({})).await;
    assert_eq!(status, 404, "{body}");
    let anonymous = reqwest::Client::new().get(s.api("")).send().await.unwrap();
    assert_eq!(anonymous.status().as_u16(), 401);
    // `sre` may approve staging by policy: it sees the call and releases it.
    let (status, body) = s
        .decide("sre", &id, "approve", json!({"reason": "ship it"}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["state"], "granted");
    let answer = approved.await.unwrap();
    assert!(answer.is_sse(), "{answer:#?}");
    assert!(
        answer.response()["result"]["content"][0]["text"]
            .as_str()
            .unwrap()
            .starts_with("deployed api 1.0.0 to staging"),
        "{answer:#?}"
    );
    // Deciding again changes nothing.
    let (status, body) = s
        .decide("alice", &id, "deny", json!({"reason": "late"}))
        .await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("already granted"),
        "{body}"
    );

    let denied = hold(&ci, deploy("staging", "2.0.0"));
    let second = s.pending(1).await.remove(0);
    let id2 = second["id"].as_str().unwrap().to_string();
    let (status, body) = s.decide("alice", &id2, "deny", json!({})).await;
    assert_eq!(status, 400, "a denial needs a reason: {body}");
    assert!(
        body["error"].as_str().unwrap().contains("needs a reason"),
        "{body}"
    );
    let (status, body) = s
        .decide(
            "alice",
            &id2,
            "deny",
            json!({"reason": "2.0.0 is not signed off"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let answer = denied.await.unwrap();
    let error = &answer.response()["error"];
    assert_eq!(error["code"], -32032, "{answer:#?}");
    assert_eq!(
        error["message"],
        format!(
            "denied by approver alice: 2.0.0 is not signed off (approval {id2}); the call was not forwarded"
        )
    );
    assert_eq!(error["data"]["approver"], "alice");
    // /metrics: nothing waits now; one approval was granted and one denied, each timed.
    assert_eq!(metric(&s, "custody_approvals_pending ").await, 0.0);
    for outcome in ["granted", "denied"] {
        let count = format!("custody_approval_wait_seconds_count{{outcome=\"{outcome}\"}} ");
        assert_eq!(metric(&s, &count).await, 1.0, "{outcome}");
    }
    let held = "custody_policy_decisions_total{endpoint=\"demo\",decision=\"needs_approval\"} ";
    assert!(metric(&s, held).await >= 2.0);

    let dir = s.gw.shutdown().await;
    let log = entries(dir.path());
    let request_of = |id: &str| {
        let requested = log
            .iter()
            .find(|e| e.kind == Kind::ApprovalRequested && detail(e)["approval"] == id)
            .unwrap();
        requested.request.unwrap()
    };
    // Granted: request, approval_requested, approval_granted by sre, then the response, all
    // linked to the request's entry.
    let r1 = request_of(&id);
    assert_eq!(log[r1 as usize].kind, Kind::Request);
    assert_eq!(
        detail(&log[r1 as usize])["policy"]["decision"],
        "needs_approval"
    );
    let granted = log
        .iter()
        .find(|e| e.kind == Kind::ApprovalGranted && e.request == Some(r1))
        .unwrap();
    assert_eq!(caller_name(granted), "sre");
    assert_eq!(detail(granted)["reason"], "ship it");
    assert_eq!(detail(granted)["released"], true);
    let response = log
        .iter()
        .position(|e| e.kind == Kind::Response && e.request == Some(r1))
        .unwrap();
    assert!(response > log.iter().position(|e| std::ptr::eq(e, granted)).unwrap());
    // Denied: approval_denied by alice with the reason, and the error answer.
    let r2 = request_of(&id2);
    let denial = log
        .iter()
        .find(|e| e.kind == Kind::ApprovalDenied && e.request == Some(r2))
        .unwrap();
    assert_eq!(caller_name(denial), "alice");
    assert_eq!(detail(denial)["reason"], "2.0.0 is not signed off");
    assert!(
        log.iter()
            .any(|e| e.kind == Kind::Error && e.request == Some(r2)),
        "the denial answers the request"
    );
    assert!(
        !log.iter()
            .any(|e| e.kind == Kind::Response && e.request == Some(r2)),
        "a denied call never reaches the upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nobody_approves_their_own_call_and_production_needs_two_distinct_approvers() {
    let s = setup().await;
    // alice is an approver, but not of her own call.
    let own = hold(&s.client("alice"), deploy("staging", "1.0.1"));
    let id = s.pending(1).await[0]["id"].as_str().unwrap().to_string();
    let (status, body) = s.decide("alice", &id, "approve", json!({})).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(
        body["error"],
        "alice asked for this call and cannot approve it; another approver must"
    );
    let (status, _) = s.decide("bob", &id, "approve", json!({})).await;
    assert_eq!(status, 200);
    assert!(own.await.unwrap().response().get("result").is_some());

    // This one in a session (protocol 2025-11-25): held and released the same way.
    let mut session = s.gw.client("demo").with_token(&s.tokens["ci"]);
    session.initialize().await;
    let prod = hold(&session, deploy("production", "1.0.1"));
    let pending = s.pending(1).await.remove(0);
    assert_eq!(pending["min_approvals"], 2);
    let id = pending["id"].as_str().unwrap().to_string();
    // sre's policy covers staging only.
    let (status, body) = s.decide("sre", &id, "approve", json!({})).await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = s
        .decide("alice", &id, "approve", json!({"reason": "one"}))
        .await;
    assert_eq!(
        (status, body["state"].as_str()),
        (200, Some("pending")),
        "{body}"
    );
    let (status, body) = s.decide("alice", &id, "approve", json!({})).await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("has already approved"),
        "{body}"
    );
    assert!(!prod.is_finished(), "one approval of two releases nothing");
    let (status, body) = s
        .decide("bob", &id, "approve", json!({"reason": "two"}))
        .await;
    assert_eq!(
        (status, body["state"].as_str()),
        (200, Some("granted")),
        "{body}"
    );
    assert_eq!(body["votes"].as_array().unwrap().len(), 2);
    let answer = prod.await.unwrap();
    assert!(
        answer.response()["result"]["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("to production"),
        "{answer:#?}"
    );
    let dir = s.gw.shutdown().await;
    let votes: Vec<(String, bool)> = entries(dir.path())
        .iter()
        .filter(|e| e.kind == Kind::ApprovalGranted && detail(e)["approval"] == id.as_str())
        .map(|e| (caller_name(e), detail(e)["released"].as_bool().unwrap()))
        .collect();
    assert_eq!(
        votes,
        [("alice".to_string(), false), ("bob".to_string(), true)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_releases_only_the_call_with_its_arguments() {
    let s = setup().await;
    let ci = s.client("ci");
    let one = hold(&ci, deploy("staging", "3.0.0"));
    s.pending(1).await;
    let two = hold(&ci, deploy("staging", "3.0.1"));
    let both = s.pending(2).await;
    let (a, b) = (&both[0], &both[1]);
    assert_eq!(a["arguments"]["version"], "3.0.0");
    assert_ne!(a["arguments_sha256"], b["arguments_sha256"]);
    let id_a = a["id"].as_str().unwrap();
    // Approving A with the digest the approver saw on B is refused: they differ.
    let (status, body) = s
        .decide(
            "alice",
            id_a,
            "approve",
            json!({"arguments_sha256": b["arguments_sha256"]}),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("arguments have SHA-256"),
        "{body}"
    );
    let (status, _) = s
        .decide(
            "alice",
            id_a,
            "approve",
            json!({"arguments_sha256": a["arguments_sha256"]}),
        )
        .await;
    assert_eq!(status, 200);
    let answer = one.await.unwrap();
    assert!(
        answer.response()["result"]["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("3.0.0"),
        "{answer:#?}"
    );
    // B is still waiting; the same call sent again waits for an approval of its own.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!two.is_finished());
    let again = hold(&ci, deploy("staging", "3.0.0"));
    let pending = s.pending(2).await;
    assert!(pending.iter().all(|p| p["id"] != id_a), "{pending:?}");
    for p in &pending {
        let (status, _) = s
            .decide(
                "bob",
                p["id"].as_str().unwrap(),
                "deny",
                json!({"reason": "not now"}),
            )
            .await;
        assert_eq!(status, 200);
    }
    assert_eq!(two.await.unwrap().error_code(), -32032);
    assert_eq!(again.await.unwrap().error_code(), -32032);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_nobody_decides_expires_with_progress_while_it_waits() {
    let s = setup_with("keepalive = \"200ms\"\ntimeout = \"1s\"\n").await;
    let ci = s.client("ci");
    let mut params = deploy("staging", "4.0.0");
    params["_meta"] = json!({"progressToken": "deploy-1"});
    let started = Instant::now();
    let answer = ci.call("tools/call", params).await;
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(900), "{waited:?}");
    let error = &answer.response()["error"];
    assert_eq!(error["code"], -32033, "{answer:#?}");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("expired: nobody approved the call within 1s"),
        "{answer:#?}"
    );
    let progress: Vec<&Value> = answer
        .messages
        .iter()
        .filter(|m| m["method"] == "notifications/progress")
        .collect();
    assert!(progress.len() >= 3, "{answer:#?}");
    for (i, p) in progress.iter().enumerate() {
        assert_eq!(p["params"]["progressToken"], "deploy-1");
        assert_eq!(p["params"]["progress"], i as u64 + 1, "progress increases");
    }
    assert!(
        answer.raw.contains(": waiting for approval "),
        "{}",
        answer.raw
    );
    let id = error["data"]["approval"].as_str().unwrap().to_string();
    let dir = s.gw.shutdown().await;
    let log = entries(dir.path());
    let expired = log
        .iter()
        .find(|e| e.kind == Kind::ApprovalExpired)
        .unwrap();
    assert_eq!(detail(expired)["approval"], id.as_str());
    // What the client was told while waiting is in the log too.
    let notes = log
        .iter()
        .filter(|e| e.kind == Kind::Notification && e.method == "notifications/progress")
        .count();
    assert_eq!(notes, progress.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaving_or_cancelling_ends_the_approval() {
    let s = setup().await;
    // A stateless client that closes its stream.
    let ci = s.client("ci");
    let body = ci.request_body("tools/call", deploy("staging", "5.0.0"));
    let resp = ci
        .with_mirrored(ci.post_builder(), &body)
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let id = s.pending(1).await[0]["id"].as_str().unwrap().to_string();
    drop(resp);
    let started = Instant::now();
    loop {
        let (_, shown) = s.get("alice", &format!("/{id}")).await;
        if shown["state"] == "cancelled" {
            assert_eq!(shown["reason"], "the client disconnected");
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(5), "{shown}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, body) = s.decide("alice", &id, "approve", json!({})).await;
    assert_eq!(status, 409, "{body}");

    // A session client that sends notifications/cancelled.
    let mut session = s.gw.client("demo").with_token(&s.tokens["ci"]);
    session.initialize().await;
    let body = session.request_body("tools/call", deploy("staging", "5.0.1"));
    let request_id = body["id"].clone();
    let held = {
        let session = session.clone();
        tokio::spawn(async move { session.post(&body).await })
    };
    let id2 = s.pending(1).await[0]["id"].as_str().unwrap().to_string();
    let ack = session
        .notify(
            "notifications/cancelled",
            json!({"requestId": request_id, "reason": "job cancelled"}),
        )
        .await;
    assert_eq!(ack.status, 202, "{ack:#?}");
    let answer = tokio::time::timeout(Duration::from_secs(5), held)
        .await
        .unwrap()
        .unwrap();
    assert!(
        answer.messages.iter().all(|m| m.get("id").is_none()),
        "a cancelled call gets no answer: {answer:#?}"
    );
    let (_, shown) = s.get("alice", &format!("/{id2}")).await;
    assert_eq!(shown["state"], "cancelled");
    assert_eq!(shown["reason"], "the client cancelled the request");
    let dir = s.gw.shutdown().await;
    let cancelled = entries(dir.path())
        .iter()
        .filter(|e| e.kind == Kind::ApprovalCancelled)
        .count();
    assert_eq!(cancelled, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_answers_waiting_calls_and_a_crash_is_recorded_at_the_next_start() {
    // A graceful stop answers the held call and records the approval as abandoned.
    let s = setup().await;
    let held = hold(&s.client("ci"), deploy("staging", "6.0.0"));
    s.pending(1).await;
    let dir = s.gw.shutdown().await;
    let answer = held.await.unwrap();
    assert_eq!(answer.error_code(), -32034, "{answer:#?}");
    let log = entries(dir.path());
    assert_eq!(
        log.iter()
            .filter(|e| e.kind == Kind::ApprovalAbandoned)
            .count(),
        1
    );

    // A gateway killed while a call waits: the next start records the approval abandoned,
    // once.
    let work = tempfile::tempdir().unwrap();
    let token = new_static_token();
    let config = format!(
        "[[auth.static]]\nname = \"ci\"\nsha256 = \"{}\"\n[policy]\nfiles = [\"{}\"]\n\
         [endpoints.demo.upstream]\ntransport = \"stdio\"\ncommand = \"{}\"\nargs = [\"demo-server\"]\n",
        hex(&token_hash(&token)),
        {
            let p = work.path().join("p.cedar");
            std::fs::write(&p, POLICIES).unwrap();
            p.display().to_string()
        },
        custody_bin()
    );
    let (mut child, base) = serve_in(work.path(), &config);
    let client = Client::new(format!("{base}/mcp/demo"))
        .with_token(&token)
        .stateless();
    let body = client.request_body("tools/call", deploy("staging", "6.0.1"));
    let resp = client
        .with_mirrored(client.post_builder(), &body)
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let mut events = EventReader::new(resp);
    let data = work.path().join("data");
    let started = Instant::now();
    while !entries(&data)
        .iter()
        .any(|e| e.kind == Kind::ApprovalRequested)
    {
        assert!(started.elapsed() < Duration::from_secs(10));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(
        events.next().await,
        None,
        "the stream ends with the process"
    );
    for _ in 0..2 {
        let (mut child, _) = serve_in(work.path(), &config);
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap()),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        assert!(child.wait().unwrap().success());
    }
    let log = entries(&data);
    let abandoned: Vec<_> = log
        .iter()
        .filter(|e| e.kind == Kind::ApprovalAbandoned)
        .collect();
    assert_eq!(abandoned.len(), 1, "recorded once, at the first restart");
    let requested = log
        .iter()
        .find(|e| e.kind == Kind::ApprovalRequested)
        .unwrap();
    assert_eq!(
        detail(abandoned[0])["approval"],
        detail(requested)["approval"]
    );
    assert_eq!(abandoned[0].request, requested.request);
    assert_log_verifies(&data);
}

/// A webhook receiver on loopback: records each POST's body; answers 500 to the first
/// `fail_first` requests of each path and always to `/broken`.
async fn receiver(fail_first: usize) -> (String, Arc<Mutex<Vec<(String, Value)>>>) {
    let got: Arc<Mutex<Vec<(String, Value)>>> = Arc::default();
    let seen: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let app = {
        let got = got.clone();
        axum::Router::new().route(
            "/{*path}",
            axum::routing::post(
                move |axum::extract::Path(path): axum::extract::Path<String>,
                      body: axum::Json<Value>| {
                    let got = got.clone();
                    let seen = seen.clone();
                    async move {
                        let n = {
                            let mut seen = seen.lock().unwrap();
                            let n = seen.entry(path.clone()).or_default();
                            *n += 1;
                            *n
                        };
                        if path == "broken" || n <= fail_first {
                            return http::StatusCode::INTERNAL_SERVER_ERROR;
                        }
                        got.lock().unwrap().push((path, body.0));
                        http::StatusCode::OK
                    }
                },
            ),
        )
    };
    let url = serve_router(app).await;
    (url.trim_end_matches("/mcp").to_string(), got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_get_both_payloads_with_retries_and_failures_are_recorded() {
    let (hooks, got) = receiver(1).await;
    let s = setup_with(&format!(
        "keepalive = \"200ms\"\n\
         [[approvals.webhooks]]\nurl = \"{hooks}/json-hook\"\nheaders = {{ Authorization = \"Bearer hook-secret\" }}\n\
         [[approvals.webhooks]]\nurl = \"{hooks}/slack-hook\"\nformat = \"slack\"\n\
         [[approvals.webhooks]]\nurl = \"{hooks}/broken\"\nattempts = 2\n"
    ))
    .await;
    let held = hold(&s.client("ci"), deploy("staging", "7.0.0"));
    let pending = s.pending(1).await.remove(0);
    let id = pending["id"].as_str().unwrap().to_string();
    // Both deliveries fail once, then succeed after the first backoff (1 s).
    let started = Instant::now();
    while got.lock().unwrap().len() < 2 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?}",
            got.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let delivered: HashMap<String, Value> = got.lock().unwrap().iter().cloned().collect();
    let generic = &delivered["json-hook"];
    assert_eq!(generic["type"], "approval_requested");
    assert_eq!(generic["approval"]["id"], id.as_str());
    assert_eq!(generic["approval"]["requester"]["name"], "ci");
    assert_eq!(generic["approval"]["target"], "deploy");
    assert_eq!(generic["approval"]["arguments"]["version"], "7.0.0");
    assert_eq!(
        generic["approval"]["arguments_sha256"],
        pending["arguments_sha256"]
    );
    assert_eq!(
        generic["approve_command"],
        format!("custody approvals approve {id}")
    );
    let slack = &delivered["slack-hook"];
    let text = slack["text"].as_str().unwrap();
    assert!(
        text.contains("Approval needed") && text.contains(&id) && text.contains("ci"),
        "{slack}"
    );
    let blocks = slack["blocks"].as_array().unwrap();
    assert_eq!(blocks[0]["type"], "section");
    assert!(
        blocks[1]["text"]["text"]
            .as_str()
            .unwrap()
            .contains("7.0.0"),
        "{slack}"
    );
    // The broken hook's failure is recorded after its attempts (one backoff later); delivery
    // never decides anything: the call still waits until someone approves.
    let started = Instant::now();
    while !entries(s.gw.data.path())
        .iter()
        .any(|e| e.kind == Kind::NotificationFailed)
    {
        assert!(started.elapsed() < Duration::from_secs(10));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!held.is_finished());
    let (status, _) = s.decide("bob", &id, "approve", json!({})).await;
    assert_eq!(status, 200);
    assert!(held.await.unwrap().response().get("result").is_some());
    let dir = s.gw.shutdown().await;
    let log = entries(dir.path());
    let failed: Vec<Value> = log
        .iter()
        .filter(|e| e.kind == Kind::NotificationFailed)
        .map(detail)
        .collect();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0]["approval"], id.as_str());
    assert_eq!(failed[0]["attempts"], 2);
    assert!(
        failed[0]["error"].as_str().unwrap().contains("500"),
        "{failed:?}"
    );
    // The webhook URL's path and its header are secrets: neither is in the log.
    let all: String = log
        .iter()
        .map(|e| format!("{} {}", e.detail, String::from_utf8_lossy(&e.message)))
        .collect();
    assert!(!all.contains("broken") && !all.contains("hook-secret"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_approves_a_ci_jobs_call_with_a_token_from_their_own_issuer() {
    use custody_test_issuer::TestIssuer;
    let github = TestIssuer::start().await;
    let people = TestIssuer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("p.cedar");
    std::fs::write(&policy, POLICIES).unwrap();
    let gw = Gateway::start(
        "",
        &format!(
            "[[auth.oidc]]\npreset = \"github-actions\"\nissuer = \"{}\"\naudiences = [\"custody\"]\n\
             [[auth.oidc]]\nissuer = \"{}\"\naudiences = [\"custody\"]\nclaims = [\"email\"]\nname = \"{{email}}\"\n\
             [policy]\nfiles = [\"{}\"]\n[approvals]\napprovers = [\"alice@example.com\"]\n\
             [endpoints.demo.upstream]\ntransport = \"stdio\"\ncommand = \"{}\"\nargs = [\"demo-server\"]\n",
            github.url,
            people.url,
            policy.display(),
            custody_bin()
        ),
    )
    .await;
    let job = github.token(
        "rsa-1",
        &github.claims(
            "repo:acme/api:ref:refs/heads/main",
            &json!({"repository": "acme/api", "repository_owner": "acme", "ref": "refs/heads/main",
                    "run_id": "77", "actor": "octocat"}),
        ),
    );
    let alice = people.token(
        "rsa-1",
        &people.claims("00u1alice", &json!({"email": "alice@example.com"})),
    );
    let held = hold(
        &gw.client("demo").with_token(&job).stateless(),
        deploy("staging", "8.0.0"),
    );
    let api = format!("http://{}/api/v1/approvals", gw.addr);
    let http = reqwest::Client::new();
    let started = Instant::now();
    let id = loop {
        let list: Value = http
            .get(&api)
            .bearer_auth(&alice)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if let Some(a) = list["approvals"].as_array().and_then(|a| a.first()) {
            assert_eq!(a["requester"]["claims"]["run_id"], "77", "{a}");
            break a["id"].as_str().unwrap().to_string();
        }
        assert!(started.elapsed() < Duration::from_secs(10), "{list}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // The job's own token approves nothing, its own call least of all.
    let refused = http
        .post(format!("{api}/{id}/approve"))
        .bearer_auth(&job)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status().as_u16(), 403);
    let granted = http
        .post(format!("{api}/{id}/approve"))
        .bearer_auth(&alice)
        .json(&json!({"reason": "CHG-42"}))
        .send()
        .await
        .unwrap();
    assert_eq!(granted.status().as_u16(), 200);
    assert!(held.await.unwrap().response().get("result").is_some());
    let dir = gw.shutdown().await;
    let log = entries(dir.path());
    let vote = log
        .iter()
        .find(|e| e.kind == Kind::ApprovalGranted)
        .unwrap();
    let approver: Value = serde_json::from_str(&vote.caller).unwrap();
    assert_eq!(approver["issuer"], people.url.as_str());
    assert_eq!(approver["subject"], "00u1alice");
    assert_eq!(approver["verified"], true);
    assert_eq!(approver["name"], "alice@example.com");
    assert!(
        !log.iter()
            .any(|e| String::from_utf8_lossy(&e.message).contains(&alice)
                || e.detail.contains(&alice)),
        "no token in the log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_is_asked_again_when_a_call_is_released() {
    let s = setup().await;
    let held = hold(&s.client("ci"), deploy("staging", "9.0.0"));
    let id = s.pending(1).await[0]["id"].as_str().unwrap().to_string();
    // While it waits, the policy changes to forbid deploys outright.
    std::fs::write(
        s._policy.path().join("approvals.cedar"),
        format!("{POLICIES}\n@id(\"freeze\")\nforbid(principal, action == Action::\"tools/call\", resource)\nwhen {{ resource.name == \"deploy\" }};\n"),
    )
    .unwrap();
    let started = Instant::now();
    while !entries(s.gw.data.path())
        .iter()
        .any(|e| e.kind == Kind::ConfigChanged)
    {
        assert!(started.elapsed() < Duration::from_secs(10), "no reload");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, body) = s.decide("alice", &id, "approve", json!({})).await;
    assert_eq!(status, 200, "{body}");
    let answer = held.await.unwrap();
    assert_eq!(answer.error_code(), -32030, "{answer:#?}");
    assert!(
        answer.error_message().contains("forbidden by freeze"),
        "{answer:#?}"
    );
    let dir = s.gw.shutdown().await;
    assert!(
        !entries(dir.path()).iter().any(|e| e.kind == Kind::Response
            && String::from_utf8_lossy(&e.message).contains("deployed api 9.0.0")),
        "the upstream never ran it"
    );
}
