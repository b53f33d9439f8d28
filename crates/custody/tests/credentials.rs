//! Upstream credentials by reference and OAuth client credentials: what the upstream receives,
//! reloads, refreshes, and the errors a missing reference or a refusing token endpoint give.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use common::*;
use serde_json::{Value, json};
use tlog::entry::Kind;

/// The conformance fixture behind a recorder of the headers each request carried.
async fn recording_upstream() -> (String, Arc<Mutex<Vec<HeaderMap>>>) {
    let seen: Arc<Mutex<Vec<HeaderMap>>> = Arc::default();
    let engine = custody_mcp_server::Engine::new(custody_mcp_server::Catalog::Conformance);
    let s = seen.clone();
    let app = custody_mcp_server::http::router(engine, "/mcp").layer(axum::middleware::from_fn(
        move |req: axum::extract::Request, next: axum::middleware::Next| {
            let s = s.clone();
            async move {
                s.lock().unwrap().push(req.headers().clone());
                next.run(req).await
            }
        },
    ));
    (serve_router(app).await, seen)
}

fn last(seen: &Arc<Mutex<Vec<HeaderMap>>>, name: &str) -> Option<String> {
    seen.lock()
        .unwrap()
        .last()
        .and_then(|h| h.get(name))
        .map(|v| v.to_str().unwrap().to_string())
}

async fn ping(gw: &Gateway) -> Answer {
    let a = gw
        .client("up")
        .stateless()
        .call("tools/list", json!({}))
        .await;
    assert!(
        a.messages.iter().any(|m| m.get("result").is_some()),
        "{a:#?}"
    );
    a
}

#[tokio::test]
async fn file_references_are_injected_and_reread_on_reload_and_a_bad_reload_keeps_them() {
    let (url, seen) = recording_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key");
    std::fs::write(&key, "first-secret-value-1\n").unwrap();
    let gw = Gateway::start(
        "",
        &http_upstream(
            "up",
            &url,
            &format!(
                "headers = {{ X-Api-Key = \"${{file:{}}}\", X-Team = \"platform\" }}",
                key.display()
            ),
        ),
    )
    .await;
    assert!(ping(&gw).await.response().get("result").is_some());
    assert_eq!(
        last(&seen, "x-api-key").as_deref(),
        Some("first-secret-value-1")
    );
    assert_eq!(last(&seen, "x-team").as_deref(), Some("platform"));

    std::fs::write(&key, "second-secret-value-2").unwrap();
    let relay = gw.running.as_ref().unwrap().relay.clone();
    relay.reload_credentials().await;
    ping(&gw).await;
    assert_eq!(
        last(&seen, "x-api-key").as_deref(),
        Some("second-secret-value-2")
    );
    // The replaced key stays scrubbed: an upstream may still echo it.
    let scrubbed = relay.endpoint("up").unwrap().mask.credentials.get();
    for v in ["first-secret-value-1", "second-secret-value-2"] {
        assert!(scrubbed.iter().any(|s| s == v), "{v} in {scrubbed:?}");
    }

    std::fs::remove_file(&key).unwrap();
    relay.reload_credentials().await;
    ping(&gw).await;
    assert_eq!(
        last(&seen, "x-api-key").as_deref(),
        Some("second-secret-value-2"),
        "a reference that fails keeps the value in force"
    );
    let dir_data = gw.shutdown().await;
    let reloads: Vec<Value> = entries(dir_data.path())
        .iter()
        .filter(|e| e.kind == Kind::ConfigChanged)
        .map(|e| serde_json::from_str(&e.detail).unwrap())
        .collect();
    assert_eq!(reloads.len(), 2, "{reloads:?}");
    assert_eq!(reloads[0]["credentials"]["reloaded"], true);
    assert_eq!(reloads[1]["credentials"]["reloaded"], false);
    let error = reloads[1]["credentials"]["error"].as_str().unwrap();
    assert!(
        error.starts_with("endpoint \"up\", header x-api-key: ${file:")
            && error.contains("cannot be read"),
        "{error}"
    );
    let all: String = entries(dir_data.path())
        .iter()
        .map(|e| format!("{}{}", e.detail, String::from_utf8_lossy(&e.message)))
        .collect();
    assert!(!all.contains("first-secret-value-1") && !all.contains("second-secret-value-2"));
}

#[test]
fn a_missing_reference_stops_the_start_naming_the_endpoint_and_the_reference() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("custody.toml");
    std::fs::write(
        &config,
        "[auth]\nanonymous = true\n\
         [endpoints.deploy.upstream]\ntransport = \"http\"\nurl = \"http://127.0.0.1:9/mcp\"\n\
         headers = { Authorization = \"Bearer ${env:CUSTODY_TEST_NEVER_SET_TOKEN}\" }\n\
         [endpoints.tools.upstream]\ntransport = \"stdio\"\ncommand = \"true\"\n\
         env = { API_KEY = \"${file:missing-key}\" }\n",
    )
    .unwrap();
    let out = std::process::Command::new(custody_bin())
        .args(["check-config", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("custody.toml:6:")
            && err.contains("`endpoints.deploy.upstream.headers.Authorization`")
            && err.contains(
                "endpoint \"deploy\": ${env:CUSTODY_TEST_NEVER_SET_TOKEN} is not set in the gateway's environment"
            ),
        "{err}"
    );
    std::fs::write(
        &config,
        std::fs::read_to_string(&config)
            .unwrap()
            .replace("${env:CUSTODY_TEST_NEVER_SET_TOKEN}", "literal"),
    )
    .unwrap();
    let out = std::process::Command::new(custody_bin())
        .args(["check-config", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("`endpoints.tools.upstream.env.API_KEY`")
            && err.contains("endpoint \"tools\": ${file:")
            && err.contains("missing-key} cannot be read"),
        "{err}"
    );
}

#[derive(Default)]
struct Issued {
    tokens: Vec<String>,
    refuse: bool,
}

async fn token_endpoint(
    axum::extract::State(state): axum::extract::State<Arc<Mutex<Issued>>>,
    headers: HeaderMap,
    body: String,
) -> (StatusCode, axum::Json<Value>) {
    let mut s = state.lock().unwrap();
    // client_secret_post: the credentials are in the form.
    let ok = body.contains("client_id=gw") && body.contains("client_secret=oauth-s3cret-xyz");
    if s.refuse || !ok || headers.contains_key("authorization") {
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"error": "invalid_client", "error_description": "unknown client"})),
        );
    }
    let token = format!("access-token-number-{}", s.tokens.len() + 1);
    s.tokens.push(token.clone());
    // Lives 32 s: refreshed 30 s before the end, so after about 2 s.
    (
        StatusCode::OK,
        axum::Json(json!({"access_token": token, "token_type": "bearer", "expires_in": 32})),
    )
}

/// Serves [`token_endpoint`] on loopback; returns its URL.
async fn serve_token_endpoint(issued: Arc<Mutex<Issued>>) -> String {
    serve_router(
        axum::Router::new()
            .route("/token", axum::routing::post(token_endpoint))
            .with_state(issued),
    )
    .await
    .replace("/mcp", "/token")
}

#[tokio::test]
async fn oauth_tokens_are_fetched_once_cached_refreshed_before_expiry_and_never_relayed() {
    let (url, seen) = recording_upstream().await;
    let issued: Arc<Mutex<Issued>> = Arc::default();
    let token_url = serve_token_endpoint(issued.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "oauth-s3cret-xyz").unwrap();
    let gw = Gateway::start(
        "",
        &http_upstream(
            "up",
            &url,
            &format!(
                "[endpoints.up.upstream.oauth]\ntoken_url = \"{token_url}\"\nclient_id = \"gw\"\n\
                 client_secret = \"${{file:{}}}\"\nauth = \"post\"\n",
                secret.display()
            ),
        ),
    )
    .await;
    for _ in 0..3 {
        assert!(ping(&gw).await.response().get("result").is_some());
    }
    assert_eq!(issued.lock().unwrap().tokens.len(), 1, "cached");
    assert_eq!(
        last(&seen, "authorization").as_deref(),
        Some("Bearer access-token-number-1")
    );
    tokio::time::sleep(Duration::from_millis(2300)).await;
    ping(&gw).await;
    assert_eq!(
        issued.lock().unwrap().tokens.len(),
        2,
        "refreshed before expiry"
    );
    assert_eq!(
        last(&seen, "authorization").as_deref(),
        Some("Bearer access-token-number-2")
    );
    // The token endpoint refusing while the token is still valid: the call goes on with it.
    issued.lock().unwrap().refuse = true;
    tokio::time::sleep(Duration::from_millis(2300)).await;
    assert!(ping(&gw).await.response().get("result").is_some());
    assert_eq!(
        last(&seen, "authorization").as_deref(),
        Some("Bearer access-token-number-2")
    );
    // The masker scrubs the tokens in use and the client secret wherever they appear.
    let ep = gw.running.as_ref().unwrap().relay.endpoint("up").unwrap();
    let scrubbed = ep.mask.credentials.get();
    for secret in [
        "access-token-number-1",
        "access-token-number-2",
        "oauth-s3cret-xyz",
    ] {
        assert!(
            scrubbed.iter().any(|s| s == secret),
            "{secret} in {scrubbed:?}"
        );
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn a_token_endpoint_that_refuses_fails_the_call_with_its_reason() {
    let (url, _) = recording_upstream().await;
    let issued: Arc<Mutex<Issued>> = Arc::new(Mutex::new(Issued {
        tokens: Vec::new(),
        refuse: true,
    }));
    let token_url = serve_token_endpoint(issued).await;
    let gw = Gateway::start(
        "",
        &http_upstream(
            "up",
            &url,
            &format!(
                "[endpoints.up.upstream.oauth]\ntoken_url = \"{token_url}\"\nclient_id = \"gw\"\n\
                 client_secret = \"wrong-secret-in-file\"\nauth = \"post\"\n"
            ),
        ),
    )
    .await;
    let a = gw
        .client("up")
        .stateless()
        .call("tools/list", json!({}))
        .await;
    assert_eq!(a.error_code(), -32010, "{a:#?}");
    let msg = a.error_message();
    assert!(
        msg.contains(
            "refused the client credentials (400 Bad Request, invalid_client: unknown client)"
        ),
        "{msg}"
    );
    assert!(!msg.contains("wrong-secret-in-file"));
    gw.shutdown().await;
}
