//! Issue 13, class 4: a flood cannot fill the disk or starve callers. Each test reproduces an
//! attack that worked on the gateway before `limits`: forged tokens writing a 20 KB entry each,
//! one token opening 500 sessions (500 processes), two `Authorization` headers, a principal
//! calling without pause. Connection-level floods are in `connections.rs`.

mod common;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::*;
use custody_test_issuer::TestIssuer;
use serde_json::{Value, json};
use tlog::entry::Kind;

fn oidc(issuer: &TestIssuer) -> String {
    format!(
        "[[auth.oidc]]\nissuer = \"{}\"\naudiences = [\"custody\"]\n",
        issuer.url
    )
}

/// Bytes of the refusal entries of a log (what a flood adds; the real caller's own calls are
/// recorded too).
fn refusal_bytes(dir: &std::path::Path) -> u64 {
    let db = rusqlite::Connection::open(dir.join("log.sqlite")).unwrap();
    let mut stmt = db.prepare("SELECT data FROM entries").unwrap();
    stmt.query_map([], |r| r.get::<_, Vec<u8>>(0))
        .unwrap()
        .map(|d| d.unwrap())
        .filter(|d| {
            matches!(
                tlog::Entry::decode(d).unwrap().kind,
                Kind::AuthFailure | Kind::Rejected
            )
        })
        .map(|d| d.len() as u64)
        .sum()
}

/// The refusal entries of a log: (kind, detail).
fn refusals(dir: &std::path::Path) -> Vec<(Kind, Value, String)> {
    entries(dir)
        .iter()
        .filter(|e| matches!(e.kind, Kind::AuthFailure | Kind::Rejected))
        .map(|e| {
            (
                e.kind,
                serde_json::from_str(&e.detail).unwrap(),
                e.caller.to_string(),
            )
        })
        .collect()
}

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
}

/// The forged tokens of the flood, as long as the default head limit allows: unknown issuers
/// and subjects of kilobytes, `alg: none`, garbage.
fn forged(n: u64) -> String {
    let long = "x".repeat(5000);
    match n % 3 {
        0 => format!(
            "{}.{}.c2ln",
            b64(r#"{"alg":"RS256","kid":"k"}"#),
            b64(&format!(
                r#"{{"iss":"https://{n}.{long}","sub":"{long}","aud":"custody","exp":9999999999}}"#
            ))
        ),
        1 => format!(
            "{}.{}.",
            b64(r#"{"alg":"none"}"#),
            b64(&format!(r#"{{"iss":"x","sub":"{long}"}}"#))
        ),
        _ => format!("not-a-jwt-{n}-{long}"),
    }
}

#[tokio::test]
async fn a_forged_token_flood_adds_a_bounded_summary_to_the_log_and_real_callers_keep_working() {
    let issuer = TestIssuer::start().await;
    let gw = Gateway::start("", &format!("{}{}", oidc(&issuer), stdio_fixture("f", ""))).await;
    let legit_token = issuer.token("rsa-1", &issuer.claims("legit", &json!({})));
    let legit = gw.client("f").stateless().with_token(&legit_token);
    assert_eq!(legit.call("tools/list", json!({})).await.status, 200);
    let before = refusal_bytes(gw.data.path());

    // The flood: 16 addresses of the loopback range, two connections each, forged tokens as
    // fast as they go, for a bounded time.
    let flood_for = Duration::from_secs(4);
    let stop = Arc::new(AtomicBool::new(false));
    let refused: Arc<HashMap<u16, AtomicU64>> = Arc::new(
        [400, 401, 429, 503]
            .into_iter()
            .map(|s| (s, AtomicU64::new(0)))
            .collect(),
    );
    let mut flooders = Vec::new();
    for a in 0..16u8 {
        let local: IpAddr = format!("127.0.0.{}", a + 2).parse().unwrap();
        let http = reqwest::Client::builder()
            .local_address(local)
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        for c in 0..2u64 {
            let (http, url, stop, refused) =
                (http.clone(), gw.url("f"), stop.clone(), refused.clone());
            flooders.push(tokio::spawn(async move {
                let mut n = u64::from(a) * 1_000_000 + c * 100_000;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let sent = http
                        .post(&url)
                        .header("authorization", format!("Bearer {}", forged(n)))
                        .header("content-type", "application/json")
                        .header("accept", "application/json, text/event-stream")
                        .body("{}")
                        .send()
                        .await;
                    if let Ok(resp) = sent {
                        let status = resp.status().as_u16();
                        refused
                            .get(&status)
                            .unwrap_or_else(|| panic!("flood answered {status}"))
                            .fetch_add(1, Ordering::Relaxed);
                    }
                }
            }));
        }
    }
    // Meanwhile a real job calls, from its own address and from one the flood uses (its
    // token was verified before, so the flooded address does not lock it out).
    let started = Instant::now();
    let shared = reqwest::Client::builder()
        .local_address("127.0.0.2".parse::<IpAddr>().unwrap())
        .build()
        .unwrap();
    let mut from_shared = legit.clone();
    from_shared.http = shared;
    let mut calls = 0;
    while started.elapsed() < flood_for {
        let a = legit.call("tools/list", json!({})).await;
        assert_eq!(
            a.status, 200,
            "a real caller is served during the flood: {a:#?}"
        );
        let b = from_shared.call("tools/list", json!({})).await;
        assert_eq!(
            b.status, 200,
            "and from an address it shares with the flood: {b:#?}"
        );
        calls += 2;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for f in flooders {
        f.await.unwrap();
    }
    let elapsed = started.elapsed();
    let count = |s: u16| refused[&s].load(Ordering::Relaxed);
    let total = count(401) + count(429);
    assert!(total > 200, "the flood made {total} requests only");
    assert_eq!(
        count(400) + count(503),
        0,
        "only 401 and 429 answer a forged token"
    );
    assert!(count(429) > 0, "past the burst, addresses are answered 429");
    // Latency under flood is the bench's to measure (`custody-bench flood`): here the flood,
    // the gateway and this caller share one test runtime.
    assert!(calls >= 4, "{calls} calls in {elapsed:?}");
    eprintln!(
        "flood: {total} refusals ({} answered 429), {calls} real calls in {elapsed:?}",
        count(429)
    );

    let dir = gw.shutdown().await;
    let added = refusal_bytes(dir.path()) - before;
    // The issue's bound: at most 2 MB a minute of the worst flood.
    let budget = 2_000_000 * elapsed.as_millis() as u64 / 60_000;
    assert!(
        added <= budget,
        "{total} refusals in {elapsed:?} added {added} bytes to the log (budget {budget})"
    );
    // Complete: every refusal is counted in some entry.
    let records = refusals(dir.path());
    let counted: u64 = records
        .iter()
        .map(|(_, d, _)| d["count"].as_u64().unwrap())
        .sum();
    assert_eq!(
        counted, total,
        "every refusal answered is counted in the log"
    );
    // Bounded per address and reason: at most one entry a second (plus the edges).
    let mut per_key: HashMap<(String, String), u64> = HashMap::new();
    for (kind, d, caller) in &records {
        if d.get("folded").is_none() {
            *per_key
                .entry((
                    d["address"].as_str().unwrap().into(),
                    d["reason"].to_string(),
                ))
                .or_default() += 1;
        }
        if *kind == Kind::AuthFailure {
            let c: Value = serde_json::from_str(caller).unwrap();
            for claim in ["issuer", "subject"] {
                let len = c[claim].as_str().map_or(0, str::len);
                assert!(
                    len <= 256,
                    "an unverified {claim} of {len} bytes was copied"
                );
            }
        }
    }
    let windows = elapsed.as_secs() + 3;
    for (key, n) in per_key {
        assert!(n <= windows, "{key:?}: {n} entries in {elapsed:?}");
    }
}

#[tokio::test]
async fn an_address_past_its_refusal_budget_is_answered_429_unread_but_known_tokens_pass() {
    let issuer = TestIssuer::start().await;
    let gw = Gateway::start(
        "",
        &format!(
            "{}[limits]\naddress_refusals_per_second = 1\naddress_refusal_burst = 3\n{}",
            oidc(&issuer),
            stdio_fixture("f", "")
        ),
    )
    .await;
    let cached = issuer.token("rsa-1", &issuer.claims("cached", &json!({})));
    let client = gw.client("f").stateless();
    assert_eq!(
        client
            .clone()
            .with_token(&cached)
            .call("tools/list", json!({}))
            .await
            .status,
        200
    );
    for _ in 0..3 {
        let a = client
            .clone()
            .with_token("garbage")
            .call("tools/list", json!({}))
            .await;
        assert_eq!(a.status, 401);
    }
    let a = client
        .clone()
        .with_token("garbage")
        .call("tools/list", json!({}))
        .await;
    assert_eq!(a.status, 429, "{a:#?}");
    assert_eq!(a.header("retry-after"), Some("1"));
    assert_eq!(a.header("connection"), Some("close"));
    assert_eq!(a.response()["error"]["code"], -32040);
    assert_eq!(a.response()["error"]["data"]["limit"], "address.refusals");
    // A token verified before still passes; a new one waits for the budget.
    let ok = client
        .clone()
        .with_token(&cached)
        .call("tools/list", json!({}))
        .await;
    assert_eq!(ok.status, 200);
    let fresh = issuer.token("rsa-1", &issuer.claims("fresh", &json!({})));
    let waits = client
        .clone()
        .with_token(&fresh)
        .call("tools/list", json!({}))
        .await;
    assert_eq!(waits.status, 429);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let later = client
        .clone()
        .with_token(&fresh)
        .call("tools/list", json!({}))
        .await;
    assert_eq!(later.status, 200, "the budget refills: {later:#?}");
    let dir = gw.shutdown().await;
    let limited: u64 = refusals(dir.path())
        .iter()
        .filter(|(_, d, _)| d["reason"] == "address.refusals")
        .map(|(_, d, _)| d["count"].as_u64().unwrap())
        .sum();
    assert_eq!(limited, 2, "each 429 is counted");
}

async fn open_sessions(gw: &Gateway, token: &str, n: usize) -> (usize, HashMap<String, usize>) {
    let mut opened = 0;
    let mut limits: HashMap<String, usize> = HashMap::new();
    for _ in 0..n {
        let c = gw.client("f").with_token(token);
        let body = c.request_body(
            "initialize",
            json!({"protocolVersion": SESSION_VERSION, "capabilities": {},
                   "clientInfo": {"name": "flood", "version": "0"}}),
        );
        let a = c.post(&body).await;
        if a.status == 200 {
            opened += 1;
            continue;
        }
        assert!(matches!(a.status, 429 | 503), "{a:#?}");
        assert!(a.header("retry-after").is_some());
        let e = &a.response()["error"];
        assert_eq!(e["code"], -32040);
        assert_eq!(
            a.response()["id"],
            body["id"],
            "the refusal answers the initialize"
        );
        *limits
            .entry(e["data"]["limit"].as_str().unwrap().into())
            .or_default() += 1;
    }
    (opened, limits)
}

fn static_token(name: &str) -> (String, String) {
    let token = format!("cst_{name}_0123456789abcdef0123456789abcdef");
    let hash = custody::identity::token_hash(&token);
    (
        token,
        format!(
            "[[auth.static]]\nname = \"{name}\"\nsha256 = \"{}\"\n",
            hex(&hash)
        ),
    )
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[tokio::test]
async fn five_hundred_session_opens_by_one_token_stop_at_the_principal_cap() {
    let (token, auth) = static_token("ci");
    let gw = Gateway::start(
        "",
        &format!(
            "{auth}[limits]\nprincipal_requests_per_second = 100000\nprincipal_request_burst = 100000\n{}",
            stdio_fixture("f", "")
        ),
    )
    .await;
    let (opened, limits) = open_sessions(&gw, &token, 500).await;
    assert_eq!(opened, 32, "the default principal.sessions");
    assert_eq!(
        limits,
        HashMap::from([("principal.sessions".to_string(), 468)])
    );
    let ep = gw.running.as_ref().unwrap().relay.endpoint("f").unwrap();
    assert_eq!(
        ep.process_count(),
        32,
        "one process per session, none for the refused"
    );
    assert_eq!(ep.session_count(), 32);
    let dir = gw.shutdown().await;
    let counted: u64 = refusals(dir.path())
        .iter()
        .filter(|(k, d, _)| *k == Kind::Rejected && d["reason"] == "principal.sessions")
        .map(|(_, d, _)| d["count"].as_u64().unwrap())
        .sum();
    assert_eq!(counted, 468, "every refused open is counted");
}

#[tokio::test]
async fn an_endpoint_runs_at_most_its_process_cap_whoever_asks() {
    let (token, auth) = static_token("ci");
    let gw = Gateway::start(
        "",
        &format!(
            "{auth}[limits]\nprincipal_sessions = 1000\nprincipal_requests_per_second = 100000\nprincipal_request_burst = 100000\n{}[endpoints.f.limits]\nprocesses = 6\nsessions = 10\n",
            stdio_fixture("f", "")
        ),
    )
    .await;
    let (opened, limits) = open_sessions(&gw, &token, 40).await;
    assert_eq!(opened, 6);
    assert_eq!(
        limits,
        HashMap::from([("endpoint.processes".to_string(), 34)])
    );
    let ep = gw.running.as_ref().unwrap().relay.endpoint("f").unwrap();
    assert_eq!(ep.process_count(), 6);
    // The stateless pool makes do with no room: with none running, it is refused by name.
    let a = gw
        .client("f")
        .stateless()
        .with_token(&token)
        .call("tools/list", json!({}))
        .await;
    assert_eq!(
        a.response()["error"]["data"]["limit"],
        "endpoint.processes",
        "{a:#?}"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn a_principal_past_its_rate_or_concurrency_is_refused_by_name() {
    let (token, auth) = static_token("ci");
    let gw = Gateway::start(
        "",
        &format!(
            "{auth}[limits]\nprincipal_requests_per_second = 1\nprincipal_request_burst = 4\nprincipal_concurrent_requests = 1\n{}",
            stdio_fixture("f", "")
        ),
    )
    .await;
    let mut c = gw.client("f").with_token(&token);
    c.initialize().await; // two requests of the burst of four
    // A GET stream holds the principal's one place while it is open.
    let stream = c
        .authed(c.http.get(&c.url))
        .header("accept", "text/event-stream")
        .header("mcp-session-id", c.session.clone().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    let busy = c.call("tools/list", json!({})).await; // the fourth
    assert_eq!(busy.status, 429, "{busy:#?}");
    assert_eq!(
        busy.response()["error"]["data"]["limit"],
        "principal.concurrent_requests"
    );
    drop(stream);
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Four calls at once: the burst is spent (a place refills each second).
    let mut fast = Vec::new();
    for _ in 0..4 {
        fast.push(c.call("tools/list", json!({})).await);
    }
    let limited = fast
        .iter()
        .find(|a| a.status == 429)
        .unwrap_or_else(|| panic!("never limited: {fast:#?}"));
    assert_eq!(
        limited.response()["error"]["data"]["limit"],
        "principal.requests_per_second"
    );
    assert!(limited.header("retry-after").is_some());
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(c.call("tools/list", json!({})).await.status, 200);
    let dir = gw.shutdown().await;
    let reasons: Vec<String> = refusals(dir.path())
        .iter()
        .map(|(_, d, c)| {
            assert!(c.contains("\"static\""), "recorded with the principal: {c}");
            d["reason"].as_str().unwrap().to_string()
        })
        .collect();
    assert!(
        reasons.contains(&"principal.concurrent_requests".into()),
        "{reasons:?}"
    );
    assert!(
        reasons.contains(&"principal.requests_per_second".into()),
        "{reasons:?}"
    );
}

#[tokio::test]
async fn two_authorization_headers_are_a_400_not_the_first_one() {
    let (token, auth) = static_token("ci");
    let gw = Gateway::start("", &format!("{auth}{}", stdio_fixture("f", ""))).await;
    let c = gw.client("f").stateless();
    let body = c.request_body("tools/list", json!({}));
    let b = c
        .with_mirrored(c.post_builder(), &body)
        .header("authorization", format!("Bearer {token}"))
        .header("authorization", "Bearer cst_someone_else");
    let a = Client::send(b.body(body.to_string())).await;
    assert_eq!(a.status, 400, "{a:#?}");
    assert_eq!(
        a.response()["error"]["data"]["reason"],
        "two_authorizations"
    );
    assert!(a.error_message().contains("two Authorization headers"));
    assert!(a.header("www-authenticate").is_none());
    gw.shutdown().await;
}
