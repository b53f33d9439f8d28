//! Identity end to end, against the project's own OIDC issuer on loopback: every way a token
//! is refused (each with its reason and an `auth_failure` entry), every algorithm accepted,
//! GitHub Actions claims in the log, key rotation and refresh, an issuer that is down or
//! broken, session binding, static tokens and RFC 9728 metadata.

mod common;

use std::time::{Duration, Instant};

use common::*;
use custody_test_issuer::{Key, Mode, TestIssuer, now};
use serde_json::{Value, json};
use tlog::entry::Kind;

/// The claims a GitHub Actions job's token carries (what `ACTIONS_ID_TOKEN_REQUEST_URL`
/// returns, apart from iss/aud/iat/nbf/exp/jti).
fn github_claims(repository: &str, run_id: &str) -> Value {
    let owner = repository.split('/').next().unwrap();
    json!({
        "sub": format!("repo:{repository}:ref:refs/heads/main"),
        "ref": "refs/heads/main",
        "sha": "5d8f1e2a9c7b3f4e6a1d0c9b8a7f6e5d4c3b2a19",
        "repository": repository,
        "repository_owner": owner,
        "repository_owner_id": "5124",
        "repository_id": "820004",
        "repository_visibility": "private",
        "run_id": run_id,
        "run_number": "77",
        "run_attempt": "1",
        "runner_environment": "github-hosted",
        "actor": "octocat",
        "actor_id": "583231",
        "workflow": "deploy",
        "workflow_ref": format!("{repository}/.github/workflows/deploy.yml@refs/heads/main"),
        "workflow_sha": "5d8f1e2a9c7b3f4e6a1d0c9b8a7f6e5d4c3b2a19",
        "job_workflow_ref": format!("{repository}/.github/workflows/deploy.yml@refs/heads/main"),
        "job_workflow_sha": "5d8f1e2a9c7b3f4e6a1d0c9b8a7f6e5d4c3b2a19",
        "head_ref": "",
        "base_ref": "",
        "event_name": "push",
        "ref_type": "branch",
        "ref_protected": "true",
        "environment": "production",
    })
}

fn oidc(issuer: &TestIssuer, extra: &str) -> String {
    format!(
        "[[auth.oidc]]\nissuer = \"{}\"\naudiences = [\"custody\"]\nalgorithms = [\"RS256\", \"ES256\", \"EdDSA\"]\n{extra}\n",
        issuer.url
    )
}

/// A gateway accepting `issuer`'s tokens (with `extra` settings) in front of the fixture `f`.
async fn oidc_gateway(issuer: &TestIssuer, extra: &str) -> Gateway {
    Gateway::start(
        "",
        &format!("{}{}", oidc(issuer, extra), stdio_fixture("f", "")),
    )
    .await
}

fn github(issuer: &TestIssuer, extra: &str) -> String {
    format!(
        "[[auth.oidc]]\npreset = \"github-actions\"\nissuer = \"{}\"\naudiences = [\"custody\"]\n{extra}\n",
        issuer.url
    )
}

async fn tools_list(gw: &Gateway, token: Option<&str>) -> Answer {
    let mut c = gw.client("f").stateless();
    c.token = token.map(str::to_string);
    c.call("tools/list", json!({})).await
}

/// A 401 with the challenge and JSON-RPC error custody promises; returns the description.
fn assert_refused(a: &Answer, gw: &Gateway, reason: &str) -> String {
    assert_eq!(a.status, 401, "{reason}: {a:#?}");
    let challenge = a
        .header("www-authenticate")
        .unwrap_or_else(|| panic!("{a:#?}"));
    let metadata = format!(
        "Bearer resource_metadata=\"http://{}/.well-known/oauth-protected-resource/mcp/f\"",
        gw.addr
    );
    assert!(challenge.starts_with(&metadata), "{challenge}");
    assert!(challenge.contains("error=\"invalid_token\""), "{challenge}");
    let description = challenge
        .split("error_description=\"")
        .nth(1)
        .and_then(|d| d.strip_suffix('"'))
        .unwrap_or_else(|| panic!("no description: {challenge}"))
        .to_string();
    let body = &a.messages[0];
    assert_eq!(body["id"], Value::Null);
    assert_eq!(body["error"]["code"], -32004, "{body}");
    assert_eq!(body["error"]["data"]["reason"], reason, "{body}");
    description
}

#[tokio::test]
async fn every_bad_token_is_refused_with_its_own_reason_and_recorded() {
    let issuer = TestIssuer::start().await;
    let other = TestIssuer::start().await;
    let stranger = TestIssuer::start().await;
    let gw = Gateway::start(
        "",
        &format!(
            "{}{}{}",
            oidc(
                &issuer,
                "[auth.oidc.required_claims]\nrepository_owner = [\"acme\", \"acme-labs\"]"
            ),
            oidc(&other, "").replace("\"RS256\", \"ES256\", \"EdDSA\"", "\"RS256\""),
            stdio_fixture("f", "")
        ),
    )
    .await;
    let good = |sub: &str, extra: Value| {
        let mut extra = extra;
        if extra.get("repository_owner").is_none() {
            extra["repository_owner"] = json!("acme");
        }
        issuer.claims(sub, &extra)
    };
    let valid = issuer.token("rsa-1", &good("ok", json!({})));
    assert_eq!(tools_list(&gw, Some(&valid)).await.status, 200);

    let tampered = {
        let parts: Vec<&str> = valid.split('.').collect();
        let other_payload = issuer.token("rsa-1", &good("admin", json!({})));
        let forged_payload = other_payload.split('.').nth(1).unwrap().to_string();
        format!("{}.{}.{}", parts[0], forged_payload, parts[2])
    };
    let now = now();
    let cases: Vec<(&str, Option<String>, &str, &str)> = vec![
        ("no token", None, "no_token", "no bearer token"),
        (
            "basic auth",
            Some("Basic dXNlcjpwYXNz".into()),
            "not_bearer",
            "must be `Bearer <token>`",
        ),
        (
            "malformed",
            Some("Bearer abc.def".into()),
            "malformed",
            "three base64url parts",
        ),
        (
            "bad signature",
            Some(format!("Bearer {tampered}")),
            "bad_signature",
            "not signed by a key of issuer",
        ),
        (
            "alg none",
            Some(format!(
                "Bearer {}",
                issuer.forge_none(&good("n", json!({})))
            )),
            "alg_none",
            "alg 'none' is never accepted",
        ),
        (
            "hs256 with the public key",
            Some(format!(
                "Bearer {}",
                issuer.forge_hs256("rsa-1", &good("h", json!({})))
            )),
            "alg_hmac",
            "HMAC tokens can be forged",
        ),
        (
            "unknown kid",
            Some(format!(
                "Bearer {}",
                Key::rsa("ghost").sign(&good("g", json!({})))
            )),
            "unknown_kid",
            "unknown key id 'ghost'",
        ),
        (
            "expired",
            Some(format!(
                "Bearer {}",
                issuer.token(
                    "rsa-1",
                    &good(
                        "e",
                        json!({"iat": now - 900, "nbf": now - 900, "exp": now - 600})
                    )
                )
            )),
            "expired",
            "the token expired 10m",
        ),
        (
            "not yet valid",
            Some(format!(
                "Bearer {}",
                issuer.token("rsa-1", &good("y", json!({"nbf": now + 600})))
            )),
            "not_yet_valid",
            "not valid yet",
        ),
        (
            "issued in the future",
            Some(format!(
                "Bearer {}",
                issuer.token("rsa-1", &good("f", json!({"iat": now + 600})))
            )),
            "issued_in_future",
            "issued in the future",
        ),
        (
            "no exp",
            Some(format!(
                "Bearer {}",
                issuer.token("rsa-1", &good("x", json!({"exp": null})))
            )),
            "no_expiry",
            "no exp claim",
        ),
        (
            "wrong issuer",
            Some(format!(
                "Bearer {}",
                issuer.token("rsa-1", &good("w", json!({"iss": other.url})))
            )),
            "wrong_issuer",
            "is signed with a key of",
        ),
        (
            "wrong audience",
            Some(format!(
                "Bearer {}",
                issuer.token("rsa-1", &good("a", json!({"aud": ["sts.amazonaws.com"]})))
            )),
            "wrong_audience",
            "['sts.amazonaws.com'] is not an audience",
        ),
        (
            "required claim missing",
            Some(format!(
                "Bearer {}",
                issuer.token(
                    "rsa-1",
                    &good("m", json!({"repository_owner": null, "x": 1}))
                )
            )),
            "claim_missing",
            "required claim 'repository_owner' is missing",
        ),
        (
            "required claim different",
            Some(format!(
                "Bearer {}",
                issuer.token("rsa-1", &good("d", json!({"repository_owner": "evil"})))
            )),
            "claim_mismatch",
            "required claim 'repository_owner' is 'evil'",
        ),
        (
            "issuer not configured",
            Some(format!(
                "Bearer {}",
                stranger.token("rsa-1", &stranger.claims("s", &json!({})))
            )),
            "unknown_issuer",
            "no [[auth.oidc]] entry has this issuer",
        ),
        (
            "alg not allowed for the issuer",
            Some(format!(
                "Bearer {}",
                other.token("ec-1", &other.claims("es", &json!({})))
            )),
            "alg_not_allowed",
            "alg 'ES256' is not allowed",
        ),
        (
            "unknown static token",
            Some("Bearer cst_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".into()),
            "unknown_static_token",
            "no [[auth.static]] entry",
        ),
        (
            "no subject",
            Some(format!(
                "Bearer {}",
                issuer.token("rsa-1", &good("", json!({"sub": null})))
            )),
            "no_subject",
            "no sub claim",
        ),
    ];
    // "required claim missing" sets repository_owner to null after `good` fills it in.
    let mut tokens = Vec::new();
    for (name, auth, reason, expected) in &cases {
        let c = gw.client("f").stateless();
        let body = c.request_body("tools/list", json!({}));
        let mut b = c.with_mirrored(c.post_builder(), &body);
        if let Some(a) = auth {
            b = b.header("authorization", a);
            tokens.push(
                a.trim_start_matches("Bearer ")
                    .trim_start_matches("Basic ")
                    .to_string(),
            );
        }
        let a = Client::send(b.body(body.to_string())).await;
        let description = assert_refused(&a, &gw, reason);
        assert!(
            description.contains(expected),
            "{name}: {description:?} should say {expected:?}"
        );
    }
    let dir = gw.shutdown().await;
    let log = entries(dir.path());
    let failures: Vec<_> = log.iter().filter(|e| e.kind == Kind::AuthFailure).collect();
    assert_eq!(
        failures.len(),
        cases.len(),
        "one auth_failure entry per refusal"
    );
    for (e, (name, _, reason, _)) in failures.iter().zip(&cases) {
        let caller: Value = serde_json::from_str(&e.caller).unwrap();
        assert_eq!(caller["kind"], "unverified", "{name}");
        assert_eq!(caller["verified"], false, "{name}");
        let detail: Value = serde_json::from_str(&e.detail).unwrap();
        assert_eq!(detail["reason"], *reason, "{name}");
        assert_eq!(detail["status"], 401, "{name}");
        assert_eq!(detail["http_method"], "POST", "{name}");
        assert_eq!(e.endpoint, "f");
        assert!(
            e.message.is_empty(),
            "{name}: an unauthenticated body is not stored"
        );
    }
    // The token's own (unverified) issuer and subject are kept, never the token.
    let expired = failures[7];
    let caller: Value = serde_json::from_str(&expired.caller).unwrap();
    assert_eq!(caller["issuer"], issuer.url);
    assert_eq!(caller["subject"], "e");
    let wrong = failures[11];
    let caller: Value = serde_json::from_str(&wrong.caller).unwrap();
    assert_eq!(
        caller["issuer"], other.url,
        "the claimed issuer, marked unverified"
    );
    for e in &log {
        let text = format!(
            "{}{}{}",
            e.caller,
            e.detail,
            String::from_utf8_lossy(&e.message)
        );
        for t in &tokens {
            if t.len() > 20 {
                assert!(
                    !text.contains(t.as_str()),
                    "entry {} holds a token",
                    e.index
                );
                let signature = t.rsplit('.').next().unwrap();
                if signature.len() > 20 {
                    assert!(
                        !text.contains(signature),
                        "entry {} holds a signature",
                        e.index
                    );
                }
            }
        }
    }
}

#[tokio::test]
async fn rs256_es256_and_eddsa_tokens_are_accepted_and_their_principal_is_logged() {
    let issuer = TestIssuer::start().await;
    let gw = Gateway::start(
        "",
        &format!(
            "{}{}",
            oidc(
                &issuer,
                "claims = [\"repository\", \"ref\"]\nname = \"{repository}@{ref}\""
            ),
            stdio_fixture("f", "")
        ),
    )
    .await;
    for kid in ["rsa-1", "ec-1", "ed-1"] {
        let claims = issuer.claims(
            &format!("sub-{kid}"),
            &json!({"repository": "acme/api", "ref": "refs/heads/main", "secret_claim": "kept out"}),
        );
        let a = tools_list(&gw, Some(&issuer.token(kid, &claims))).await;
        assert_eq!(a.status, 200, "{kid}: {a:#?}");
        assert!(a.response()["result"]["tools"].is_array(), "{kid}");
    }
    let dir = gw.shutdown().await;
    let log = entries(dir.path());
    for kid in ["rsa-1", "ec-1", "ed-1"] {
        let request = log
            .iter()
            .find(|e| e.kind == Kind::Request && e.caller.contains(&format!("sub-{kid}")))
            .unwrap_or_else(|| panic!("no request entry for {kid}"));
        let caller: Value = serde_json::from_str(&request.caller).unwrap();
        assert_eq!(
            caller,
            json!({
                "kind": "oidc", "verified": true, "issuer": issuer.url,
                "subject": format!("sub-{kid}"), "name": "acme/api@refs/heads/main",
                "claims": {"repository": "acme/api", "ref": "refs/heads/main"},
            })
        );
        let response = log
            .iter()
            .find(|e| e.kind == Kind::Response && e.request == Some(request.index))
            .unwrap();
        assert_eq!(
            response.caller, request.caller,
            "responses carry the principal too"
        );
    }
}

#[tokio::test]
async fn github_actions_claims_land_in_the_log() {
    let issuer = TestIssuer::start().await;
    let gw = Gateway::start(
        "",
        &format!(
            "{}{}",
            github(
                &issuer,
                "[auth.oidc.required_claims]\nrepository_owner = \"acme\""
            ),
            stdio_fixture("f", "")
        ),
    )
    .await;
    let claims = issuer.claims("", &github_claims("acme/api", "9001"));
    let mut c = gw.client("f").with_token(&issuer.token("rsa-1", &claims));
    c.initialize().await;
    let a = c
        .call(
            "tools/call",
            json!({"name": "test_simple_text", "arguments": {}}),
        )
        .await;
    assert_eq!(a.status, 200, "{a:#?}");
    let dir = gw.shutdown().await;
    let log = entries(dir.path());
    let call = log
        .iter()
        .find(|e| e.kind == Kind::Request && e.target == "test_simple_text")
        .unwrap();
    let caller: Value = serde_json::from_str(&call.caller).unwrap();
    assert_eq!(caller["issuer"], issuer.url);
    assert_eq!(caller["subject"], "repo:acme/api:ref:refs/heads/main");
    assert_eq!(caller["name"], "acme/api@refs/heads/main");
    for claim in [
        "repository",
        "ref",
        "sha",
        "workflow_ref",
        "job_workflow_ref",
        "run_id",
        "run_attempt",
        "actor",
        "environment",
        "event_name",
    ] {
        assert_eq!(
            caller["claims"][claim], claims[claim],
            "claim {claim} in {caller}"
        );
    }
    assert!(
        caller["claims"].get("jti").is_none() && caller["claims"].get("exp").is_none(),
        "only the preset's claims are kept: {caller}"
    );
    let opened = log.iter().find(|e| e.kind == Kind::SessionOpened).unwrap();
    assert_eq!(
        opened.caller, call.caller,
        "the session's events name its principal"
    );
}

#[tokio::test]
async fn keys_rotate_without_a_restart_and_retired_keys_stop_working() {
    let issuer = TestIssuer::start().await;
    let gw = oidc_gateway(&issuer, "jwks_min_refresh = \"1s\"").await;
    let old = issuer.token("rsa-1", &issuer.claims("old", &json!({})));
    assert_eq!(tools_list(&gw, Some(&old)).await.status, 200);
    let fetched = issuer.jwks_fetches();

    // A new key appears; tokens signed with it work at once, after one fetch.
    issuer.publish(Key::rsa("rsa-2"));
    let new = issuer.token("rsa-2", &issuer.claims("new", &json!({})));
    assert_eq!(tools_list(&gw, Some(&new)).await.status, 200);
    assert_eq!(issuer.jwks_fetches(), fetched + 1);

    // The old key is retired; once the gateway has seen that, even a cached token of the old
    // key is refused.
    issuer.retire("rsa-1");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    issuer.publish(Key::ec("ec-2"));
    let newer = issuer.token("ec-2", &issuer.claims("newer", &json!({})));
    assert_eq!(tools_list(&gw, Some(&newer)).await.status, 200);
    let a = tools_list(&gw, Some(&old)).await;
    let d = assert_refused(&a, &gw, "unknown_kid");
    assert!(d.contains("rsa-1"), "{d}");
    gw.shutdown().await;
}

#[tokio::test]
async fn an_unknown_kid_causes_one_fetch_for_all_callers_and_refreshes_are_rate_limited() {
    let issuer = TestIssuer::start().await;
    let gw = oidc_gateway(&issuer, "jwks_min_refresh = \"30s\"").await;
    let fetched = issuer.jwks_fetches();
    issuer.publish(Key::ec("ec-new"));
    let calls = (0..16).map(|i| {
        let token = issuer.token("ec-new", &issuer.claims(&format!("job-{i}"), &json!({})));
        let gw = &gw;
        async move { tools_list(gw, Some(&token)).await.status }
    });
    let statuses = futures_util::future::join_all(calls).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(issuer.jwks_fetches(), fetched + 1, "16 callers, one fetch");

    // Within jwks_min_refresh of that fetch, unknown kids are refused without fetching again.
    for i in 0..5 {
        let t = Key::rsa(&format!("ghost-{i}")).sign(&issuer.claims("g", &json!({})));
        assert_refused(&tools_list(&gw, Some(&t)).await, &gw, "unknown_kid");
    }
    assert_eq!(
        issuer.jwks_fetches(),
        fetched + 1,
        "no stampede on the issuer"
    );
    gw.shutdown().await;
}

/// Polls until a call with `token` succeeds; returns how long it took.
async fn until_accepted(gw: &Gateway, token: &str, limit: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let a = tools_list(gw, Some(token)).await;
        if a.status == 200 {
            return started.elapsed();
        }
        assert!(started.elapsed() < limit, "still refused: {a:#?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn an_issuer_down_at_start_up_is_retried_and_calls_say_why_they_fail() {
    let issuer = TestIssuer::start().await;
    issuer.stop();
    let gw = oidc_gateway(&issuer, "").await;
    let token = issuer.token("rsa-1", &issuer.claims("early", &json!({})));
    let a = tools_list(&gw, Some(&token)).await;
    assert_eq!(a.status, 503, "{a:#?}");
    assert_eq!(a.header("retry-after"), Some("5"));
    let body = &a.messages[0];
    assert_eq!(body["error"]["data"]["reason"], "keys_unavailable");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("are unavailable") && message.contains("couldn't reach"),
        "{message}"
    );
    // A static-token or anonymous caller is unaffected; the gateway serves on.
    issuer.restart().await;
    until_accepted(&gw, &token, Duration::from_secs(10)).await;
    let dir = gw.shutdown().await;
    let log = entries(dir.path());
    let failure = log.iter().find(|e| e.kind == Kind::AuthFailure).unwrap();
    let detail: Value = serde_json::from_str(&failure.detail).unwrap();
    assert_eq!(detail["status"], 503);
    assert_eq!(detail["reason"], "keys_unavailable");
}

#[tokio::test]
async fn a_jwks_that_is_garbage_at_start_up_is_retried() {
    let issuer = TestIssuer::start().await;
    issuer.set_mode(Mode::Garbage);
    let gw = oidc_gateway(&issuer, "").await;
    let token = issuer.token("ec-1", &issuer.claims("early", &json!({})));
    let a = tools_list(&gw, Some(&token)).await;
    assert_eq!(a.status, 503, "{a:#?}");
    let message = a.messages[0]["error"]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(message.contains("did not return JSON"), "{message}");
    issuer.set_mode(Mode::Normal);
    until_accepted(&gw, &token, Duration::from_secs(10)).await;
    gw.shutdown().await;
}

#[tokio::test]
async fn cached_keys_keep_verifying_while_the_issuer_is_unreachable() {
    let issuer = TestIssuer::start().await;
    let gw = oidc_gateway(&issuer, "jwks_max_age = \"1s\"\njwks_min_refresh = \"1s\"").await;
    issuer.set_mode(Mode::Failing);
    // Past jwks_max_age: the background refresh fails, the keys held stay in use.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for i in 0..3 {
        let fresh = issuer.token(
            "rsa-1",
            &issuer.claims(&format!("while-down-{i}"), &json!({})),
        );
        assert_eq!(tools_list(&gw, Some(&fresh)).await.status, 200);
    }
    issuer.stop();
    let fresh = issuer.token("ed-1", &issuer.claims("while-gone", &json!({})));
    assert_eq!(tools_list(&gw, Some(&fresh)).await.status, 200);
    gw.shutdown().await;
}

#[tokio::test]
async fn a_session_belongs_to_the_principal_that_opened_it() {
    let issuer = TestIssuer::start().await;
    let gw = Gateway::start(
        "",
        &format!("{}{}", github(&issuer, ""), stdio_fixture("f", "")),
    )
    .await;
    let token_for = |repo: &str, run: &str| {
        issuer.token("rsa-1", &issuer.claims("", &github_claims(repo, run)))
    };
    let mut owner = gw.client("f").with_token(&token_for("acme/api", "100"));
    owner.initialize().await;
    let sid = owner.session.clone().unwrap();

    // Another repository, another run of the same workflow: neither can use the session.
    for (repo, run) in [("evil/fork", "100"), ("acme/api", "101")] {
        let mut intruder = gw.client("f").with_token(&token_for(repo, run));
        intruder.session = Some(sid.clone());
        let a = intruder.call("tools/list", json!({})).await;
        assert_eq!(a.status, 404, "{repo} run {run}: {a:#?}");
        assert_eq!(a.error_code(), -32001);
        let get = intruder
            .authed(intruder.http.get(&intruder.url))
            .header("accept", "text/event-stream")
            .header("mcp-session-id", &sid)
            .send()
            .await
            .unwrap();
        assert_eq!(get.status(), 404, "{repo}: GET");
        assert_eq!(intruder.delete().await, 404, "{repo}: DELETE");
    }

    // The owner, with a fresh token minutes later (same job, new iat/exp/jti), continues.
    let mut fresh = github_claims("acme/api", "100");
    fresh["iat"] = json!(now() + 30);
    fresh["nbf"] = json!(now() + 30);
    fresh["exp"] = json!(now() + 330);
    let renewed = issuer.token("rsa-1", &issuer.claims("", &fresh));
    owner.token = Some(renewed);
    let a = owner
        .call(
            "tools/call",
            json!({"name": "test_simple_text", "arguments": {}}),
        )
        .await;
    assert_eq!(a.status, 200, "{a:#?}");
    assert_eq!(owner.delete().await, 200);
    gw.shutdown().await;
}

#[tokio::test]
async fn static_tokens_from_the_cli_are_accepted_and_named_in_the_log() {
    let out = std::process::Command::new(custody_bin())
        .args(["token", "create", "alice"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let mut lines = text.lines();
    let token = lines.next().unwrap().to_string();
    assert!(token.starts_with("cst_") && token.len() > 40, "{text}");
    let config: String = lines
        .filter(|l| !l.starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        !config.contains(&token),
        "the config holds the hash, not the token"
    );
    let gw = Gateway::start("", &format!("{config}\n{}", stdio_fixture("f", ""))).await;
    assert_eq!(tools_list(&gw, Some(&token)).await.status, 200);
    let mut wrong = token.clone();
    wrong.pop();
    wrong.push(if token.ends_with('A') { 'B' } else { 'A' });
    assert_refused(
        &tools_list(&gw, Some(&wrong)).await,
        &gw,
        "unknown_static_token",
    );
    let dir = gw.shutdown().await;
    let log = entries(dir.path());
    let request = log.iter().find(|e| e.kind == Kind::Request).unwrap();
    let caller: Value = serde_json::from_str(&request.caller).unwrap();
    assert_eq!(
        caller,
        json!({"kind": "static", "verified": true, "subject": "alice", "name": "alice"})
    );
}

#[tokio::test]
async fn protected_resource_metadata_tells_clients_how_to_authenticate() {
    let issuer = TestIssuer::start().await;
    let gw = oidc_gateway(&issuer, "").await;
    let http = reqwest::Client::new();
    let doc: Value = http
        .get(format!(
            "http://{}/.well-known/oauth-protected-resource/mcp/f",
            gw.addr
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(doc["resource"], format!("http://{}/mcp/f", gw.addr));
    assert_eq!(doc["authorization_servers"], json!([issuer.url]));
    assert_eq!(doc["bearer_methods_supported"], json!(["header"]));
    let missing = http
        .get(format!(
            "http://{}/.well-known/oauth-protected-resource/mcp/nope",
            gw.addr
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    gw.shutdown().await;

    let gw = Gateway::start(
        "public_url = \"https://custody.example.com/\"\nallowed_hosts = [\"custody.example.com\", \"127.0.0.1\"]",
        &format!("{}{}", oidc(&issuer, ""), stdio_fixture("f", "")),
    )
    .await;
    let a = tools_list(&gw, None).await;
    let challenge = a.header("www-authenticate").unwrap();
    assert!(
        challenge.starts_with("Bearer resource_metadata=\"https://custody.example.com/.well-known/oauth-protected-resource/mcp/f\""),
        "{challenge}"
    );
    let doc: Value = http
        .get(format!(
            "http://{}/.well-known/oauth-protected-resource/mcp/f",
            gw.addr
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(doc["resource"], "https://custody.example.com/mcp/f");
    gw.shutdown().await;
}

#[tokio::test]
async fn anonymous_calls_need_anonymous_true_and_a_sent_token_is_still_checked() {
    let issuer = TestIssuer::start().await;
    let gw = Gateway::start(
        "",
        &format!(
            "[auth]\nanonymous = true\n{}{}",
            oidc(&issuer, ""),
            stdio_fixture("f", "")
        ),
    )
    .await;
    assert_eq!(tools_list(&gw, None).await.status, 200);
    let expired = issuer.token("rsa-1", &issuer.claims("x", &json!({"exp": now() - 3600})));
    assert_refused(&tools_list(&gw, Some(&expired)).await, &gw, "expired");
    gw.shutdown().await;
}
