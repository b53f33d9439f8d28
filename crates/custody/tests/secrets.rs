//! Issue 13, class 5: secrets the gateway holds never reach the client. Each test plays an
//! attacker: an upstream (or token endpoint, or process) that echoes what the gateway gave it,
//! and a CI client reading the errors, the event ids and the gateway's own output.

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use axum::http::{HeaderMap, StatusCode, Uri};
use common::*;
use serde_json::{Value, json};

const TOKEN: &str = "injected-bearer-token-0001";
const URL_PASSWORD: &str = "url-password-0002";
const URL_KEY: &str = "url-api-key-0003";
const OAUTH_SECRET: &str = "oauth-client-secret-0004";
const STDIO_SECRET: &str = "stdio-env-secret-0005";
const ALL: [&str; 5] = [TOKEN, URL_PASSWORD, URL_KEY, OAUTH_SECRET, STDIO_SECRET];

/// An upstream that fails every POST with HTTP 500 and a body that echoes what it was sent:
/// the credentials of `Authorization` (Bearer or Basic, decoded) and the query.
async fn echoing_upstream(seen: Arc<Mutex<Vec<String>>>) -> String {
    let app = axum::Router::new().route(
        "/mcp",
        axum::routing::post(move |headers: HeaderMap, uri: Uri| {
            let seen = seen.clone();
            async move {
                use base64::Engine as _;
                let auth = headers
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                let said = match auth.split_once(' ') {
                    Some(("Basic", b)) => String::from_utf8(
                        base64::engine::general_purpose::STANDARD.decode(b).unwrap(),
                    )
                    .unwrap(),
                    Some((_, t)) => t.to_string(),
                    None => String::new(),
                };
                seen.lock().unwrap().push(said.clone());
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!(
                        "rejected credentials {said} for query {}",
                        uri.query().unwrap_or("")
                    ),
                )
            }
        }),
    );
    serve_router(app).await
}

/// A token endpoint whose `error_description` echoes the client secret it was sent.
async fn echoing_token_endpoint() -> String {
    let app = axum::Router::new().route(
        "/token",
        axum::routing::post(|body: String| async move {
            let secret = url::form_urlencoded::parse(body.as_bytes())
                .find(|(k, _)| k == "client_secret")
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default();
            (
                StatusCode::UNAUTHORIZED,
                axum::Json(json!({"error": "invalid_client",
                    "error_description": format!("client secret {secret} is not valid")})),
            )
        }),
    );
    serve_router(app).await.replace("/mcp", "/token")
}

fn assert_clean(what: &str, text: &str) {
    for s in ALL {
        assert!(!text.contains(s), "{what} holds {s}:\n{text}");
    }
}

/// An HTTP upstream echoing the injected bearer token in a 500 body, one echoing the user,
/// password and API key of its URL, a token endpoint echoing the client secret in its
/// `error_description`, and a process that prints its environment secret on stderr and as a
/// line that is not JSON-RPC. The CI client's errors, the audit log and the gateway's own log
/// hold `[custody:credential]`, never a secret; the banner prints the URL redacted.
#[tokio::test]
async fn credentials_echoed_by_upstreams_reach_neither_the_client_nor_any_log() {
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let up = echoing_upstream(seen.clone()).await;
    let token_url = echoing_token_endpoint().await;
    let dir = tempfile::tempdir().unwrap();
    for (file, value) in [
        ("token", TOKEN),
        ("pw", URL_PASSWORD),
        ("key", URL_KEY),
        ("oauth", OAUTH_SECRET),
        ("stdio", STDIO_SECRET),
    ] {
        std::fs::write(dir.path().join(file), value).unwrap();
    }
    let host = up.trim_start_matches("http://").trim_end_matches("/mcp");
    let endpoints = format!(
        r#"[endpoints.api.upstream]
transport = "http"
url = "{up}"
headers = {{ Authorization = "Bearer ${{file:token}}" }}

[endpoints.byurl.upstream]
transport = "http"
url = "http://ci-bot:${{file:pw}}@{host}/mcp?api_key=${{file:key}}"

[endpoints.oauth.upstream]
transport = "http"
url = "{up}"
[endpoints.oauth.upstream.oauth]
token_url = "{token_url}"
client_id = "gw"
client_secret = "${{file:oauth}}"
auth = "post"

[endpoints.tools.upstream]
transport = "stdio"
command = "sh"
args = ["-c", "echo \"starting with key $API_KEY\" >&2; read line; echo \"not json: $API_KEY\"; sleep 5"]
env = {{ API_KEY = "${{file:stdio}}" }}
"#
    );
    let config = dir.path().join("custody.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n[auth]\nanonymous = true\n{endpoints}",
            dir.path().join("data").display(),
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.path().join("gateway.log")).unwrap();
    let mut child = Command::new(custody_bin())
        .args(["serve", "--config"])
        .arg(&config)
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut banner = String::new();
    loop {
        let mut line = String::new();
        if stdout.read_line(&mut line).unwrap() == 0 {
            break;
        }
        banner.push_str(&line);
        if line.contains("endpoint tools") {
            break;
        }
    }
    let base = banner
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("custody listening on "))
        .unwrap_or_else(|| panic!("{banner}"))
        .to_string();
    assert_clean("the banner", &banner);
    assert!(
        banner.contains(&format!("http://***@{host}/mcp?api_key=***")),
        "{banner}"
    );

    let mut errors = Vec::new();
    for (endpoint, code) in [
        ("api", -32010),
        ("byurl", -32010),
        ("oauth", -32010),
        ("tools", -32012),
    ] {
        let a = Client::new(format!("{base}/mcp/{endpoint}"))
            .stateless()
            .call("tools/list", json!({}))
            .await;
        assert_eq!(a.error_code(), code, "{endpoint}: {a:#?}");
        let message = a.error_message();
        assert_clean(endpoint, &a.raw);
        assert!(
            message.contains("[custody:credential]"),
            "{endpoint}: {message}"
        );
        errors.push(message);
    }
    assert!(
        seen.lock()
            .unwrap()
            .iter()
            .any(|s| s == &format!("ci-bot:{URL_PASSWORD}")),
        "the URL's user and password go as Basic authentication"
    );

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap()),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    child.wait().unwrap();
    let log = std::fs::read_to_string(dir.path().join("gateway.log")).unwrap();
    assert_clean("the gateway's log", &log);
    assert!(
        log.contains("starting with key [custody:credential]"),
        "stderr is logged, scrubbed:\n{log}"
    );
    let data = dir.path().join("data");
    let recorded: String = entries(&data)
        .iter()
        .map(|e| format!("{} {}\n", e.detail, String::from_utf8_lossy(&e.message)))
        .collect();
    assert_clean("the audit log", &recorded);
    assert_log_verifies(&data);
}

/// An upstream whose error answer is a JSON body (relayed with its status) echoing the token:
/// the client gets the body's client copy.
#[tokio::test]
async fn a_json_error_body_is_relayed_scrubbed() {
    let app = axum::Router::new().route(
        "/mcp",
        axum::routing::post(|headers: HeaderMap| async move {
            let auth = headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            (
                StatusCode::UNAUTHORIZED,
                axum::Json(json!({"detail": format!("bad credentials: {auth}")})),
            )
        }),
    );
    let up = serve_router(app).await;
    let gw = Gateway::start(
        "",
        &http_upstream(
            "api",
            &up,
            &format!("headers = {{ Authorization = \"Bearer {TOKEN}\" }}"),
        ),
    )
    .await;
    let a = gw
        .client("api")
        .stateless()
        .call("tools/list", json!({}))
        .await;
    assert_eq!(a.status, 401, "{a:#?}");
    assert_clean("the relayed body", &a.raw);
    assert_eq!(
        a.messages[0]["detail"],
        "bad credentials: [custody:credential]"
    );
    gw.shutdown().await;
}

/// An upstream whose SSE event ids carry a secret-looking value: the client sees the
/// gateway's own ids, and resuming with one of them reaches the upstream as the upstream's id.
#[tokio::test]
async fn the_client_never_sees_the_upstreams_event_ids_and_resumes_with_the_gateways() {
    let last_seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let seen = last_seen.clone();
    let sse = |id: &str, data: Value| format!("id: {id}\ndata: {data}\n\n");
    let app = axum::Router::new().route(
        "/mcp",
        axum::routing::post(move |body: axum::Json<Value>| async move {
            let id = body.0["id"].clone();
            let result = match body.0["method"].as_str() {
                Some("initialize") => json!({"protocolVersion": SESSION_VERSION,
                    "capabilities": {}, "serverInfo": {"name": "ids", "version": "0"}}),
                _ => json!({"tools": []}),
            };
            if id.is_null() {
                return (StatusCode::ACCEPTED, [("content-type", "text/plain")], String::new());
            }
            let text = format!(
                "{}{}",
                sse("cursor-AKIAIOSFODNN7EXAMPLE-0", json!("")).replace("data: \"\"", "data: "),
                sse(
                    "cursor-AKIAIOSFODNN7EXAMPLE-1",
                    json!({"jsonrpc": "2.0", "id": id, "result": result})
                )
            );
            (
                StatusCode::OK,
                [("content-type", "text/event-stream")],
                text,
            )
        })
        .get(move |headers: HeaderMap| {
            let seen = seen.clone();
            async move {
                let last = headers
                    .get("last-event-id")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string();
                seen.lock().unwrap().push(last);
                (
                    StatusCode::OK,
                    [("content-type", "text/event-stream")],
                    "id: cursor-AKIAIOSFODNN7EXAMPLE-2\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/tools/list_changed\"}\n\n",
                )
            }
        }),
    );
    let up = serve_router(app).await;
    let gw = Gateway::start("", &http_upstream("ids", &up, "")).await;
    let mut c = gw.client("ids");
    c.initialize().await;
    let a = c.call("tools/list", json!({})).await;
    assert!(a.is_sse(), "{a:#?}");
    assert!(!a.raw.contains("cursor"), "{}", a.raw);
    assert!(!a.raw.contains("AKIA"), "{}", a.raw);
    let ids: Vec<String> = parse_sse(&a.raw)
        .into_iter()
        .filter_map(|(i, _)| i)
        .collect();
    assert_eq!(ids.len(), 2, "{}", a.raw);
    assert_ne!(ids[0], ids[1]);

    // Resuming after the gateway's id of the upstream's event 1.
    let get = |last: &str| {
        c.authed(c.http.get(&c.url))
            .header("accept", "text/event-stream")
            .header("mcp-session-id", c.session.clone().unwrap())
            .header("last-event-id", last)
    };
    let resp = get(&ids[1]).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut events = EventReader::new(resp);
    assert_eq!(
        events.next().await.unwrap()["method"],
        "notifications/tools/list_changed"
    );
    assert_eq!(
        last_seen.lock().unwrap().as_slice(),
        ["cursor-AKIAIOSFODNN7EXAMPLE-1"],
        "the upstream gets its own id back"
    );

    // An id the gateway never issued (such as the upstream's own) is refused.
    let refused = collect(get("cursor-AKIAIOSFODNN7EXAMPLE-1").send().await.unwrap()).await;
    assert_eq!(refused.status, 400, "{refused:#?}");
    assert_eq!(refused.error_code(), -32000);
    assert!(
        refused
            .error_message()
            .contains("is not an event id this gateway issued"),
        "{refused:#?}"
    );
    assert_eq!(last_seen.lock().unwrap().len(), 1, "not forwarded");
    gw.shutdown().await;
}

/// Resumption end to end with the conformance server's `test_reconnection` (it closes its
/// stream mid-call; the result arrives on the resumed stream): it works with the gateway's ids.
#[tokio::test]
async fn a_stream_closed_mid_call_resumes_through_the_gateway() {
    let up = fixture_http().await;
    let gw = Gateway::start("", &http_upstream("conf", &up, "")).await;
    let mut c = gw.client("conf");
    c.initialize().await;
    let a = c
        .call(
            "tools/call",
            json!({"name": "test_reconnection", "arguments": {}}),
        )
        .await;
    let ids: Vec<String> = parse_sse(&a.raw)
        .into_iter()
        .filter_map(|(i, _)| i)
        .collect();
    let last = ids.last().unwrap_or_else(|| panic!("no event id: {a:#?}"));
    assert!(
        !last.contains('_'),
        "not the upstream's `stream_seq` id: {last}"
    );
    let resp = c
        .authed(c.http.get(&c.url))
        .header("accept", "text/event-stream")
        .header("mcp-session-id", c.session.clone().unwrap())
        .header("last-event-id", last)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let result = EventReader::new(resp).next().await.unwrap();
    assert!(
        result["result"]["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("reconnected"),
        "{result}"
    );
    gw.shutdown().await;
}

/// A data directory others can read is tightened to 0700 before anything is written to it;
/// the verifier key is 0644.
#[test]
fn an_open_data_directory_is_tightened_and_the_verifier_key_is_public() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (mut child, _) = serve_in(dir.path(), &stdio_fixture("demo", ""));
    child.kill().unwrap();
    child.wait().unwrap();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&data.join("log.key")), 0o600);
    assert_eq!(mode(&data.join("log.key.pub")), 0o644);
}
