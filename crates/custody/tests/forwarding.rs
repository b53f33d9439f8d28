//! What crosses the gateway besides the message: headers in, headers out, and shutdown.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::HeaderMap;
use common::*;
use serde_json::json;

/// An HTTP upstream that records the headers of every request and answers `tools/list`.
async fn recording_upstream() -> (String, Arc<Mutex<Vec<HeaderMap>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    let app = axum::Router::new().route(
        "/mcp",
        axum::routing::post(move |headers: HeaderMap, body: String| {
            let record = record.clone();
            async move {
                record.lock().unwrap().push(headers);
                let req: serde_json::Value = serde_json::from_str(&body).unwrap();
                let reply = json!({"jsonrpc": "2.0", "id": req["id"], "result": {"tools": []}});
                let mut resp =
                    axum::response::Response::new(axum::body::Body::from(reply.to_string()));
                resp.headers_mut()
                    .insert("content-type", "application/json".parse().unwrap());
                resp.headers_mut()
                    .insert("mcp-session-id", "upstream-secret-session".parse().unwrap());
                resp
            }
        }),
    );
    (serve_router(app).await, seen)
}

#[tokio::test]
async fn caller_credentials_and_hop_by_hop_headers_stay_at_the_gateway() {
    let (url, seen) = recording_upstream().await;
    let token = "cst_ci-token-must-not-leak";
    let gw = Gateway::start(
        "",
        &format!(
            "[[auth.static]]\nname = \"ci\"\nsha256 = \"{}\"\n{}",
            hex::encode(custody::identity::token_hash(token)),
            http_upstream(
                "rec",
                &url,
                "headers = { \"X-Api-Key\" = \"upstream-key\" }",
            )
        ),
    )
    .await;
    let c = gw.client("rec").stateless();
    let body = c.request_body("tools/list", json!({}));
    let a = Client::send(
        c.with_mirrored(c.post_builder(), &body)
            .header("authorization", format!("Bearer {token}"))
            .header("cookie", "session=abc")
            .header("connection", "keep-alive, x-hop")
            .header("x-hop", "hop-by-hop by Connection")
            .header("proxy-authorization", "Basic abc")
            .header(
                "traceparent",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            )
            .header("x-api-key", "client-tries-to-override")
            .body(body.to_string()),
    )
    .await;
    assert_eq!(a.status, 200, "{a:#?}");
    assert!(
        a.header("mcp-session-id").is_none(),
        "the upstream's session id never reaches a client"
    );
    let h = seen.lock().unwrap()[0].clone();
    for banned in [
        "authorization",
        "cookie",
        "x-hop",
        "proxy-authorization",
        "origin",
    ] {
        assert!(h.get(banned).is_none(), "{banned} was forwarded: {h:?}");
    }
    assert_eq!(
        h["x-api-key"], "upstream-key",
        "the configured credential wins"
    );
    assert_eq!(h.get_all("x-api-key").iter().count(), 1);
    assert_eq!(
        h["traceparent"],
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    );
    assert_eq!(h["mcp-method"], "tools/list");
    assert_eq!(h["mcp-protocol-version"], STATELESS_VERSION);
    gw.shutdown().await;
}

#[tokio::test]
async fn upstream_session_ids_are_mapped_not_exposed() {
    let url = fixture_http().await;
    let gw = Gateway::start("", &http_upstream("f", &url, "")).await;
    let mut a = gw.client("f");
    let mut b = gw.client("f");
    a.initialize().await;
    b.initialize().await;
    assert_ne!(a.session, b.session);
    // Each gateway session maps to its own upstream session: deleting one leaves the other.
    assert_eq!(a.delete().await, 200);
    let r = b.call("tools/list", json!({})).await;
    assert_eq!(r.status, 200, "{r:#?}");
    gw.shutdown().await;
}

#[tokio::test]
async fn graceful_shutdown_lets_calls_finish_and_stops_processes() {
    let gw = Gateway::start(
        "shutdown_grace = \"5s\"",
        &format!(
            "[endpoints.demo.upstream]\ntransport = \"stdio\"\ncommand = \"{}\"\nargs = [\"demo-server\"]\n",
            custody_bin()
        ),
    )
    .await;
    let mut c = gw.client("demo");
    c.initialize().await;
    let slow = {
        let c = c.clone();
        tokio::spawn(async move {
            c.call(
                "tools/call",
                json!({"name": "countdown", "arguments": {"n": 5}}),
            )
            .await
        })
    };
    tokio::time::sleep(Duration::from_millis(150)).await;
    let addr = gw.addr;
    let running = gw.running.unwrap();
    let relay = running.relay.clone();
    let stopped = tokio::spawn(running.shutdown());
    let answer = slow.await.unwrap();
    assert_eq!(
        answer.response()["result"]["content"][0]["text"],
        "liftoff",
        "the call in flight finished: {answer:#?}"
    );
    tokio::time::timeout(Duration::from_secs(10), stopped)
        .await
        .unwrap()
        .unwrap();
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "no longer accepting"
    );
    for ep in relay.endpoints() {
        assert_eq!(ep.session_count(), 0, "sessions closed");
    }
}

#[tokio::test]
async fn shutdown_does_not_wait_for_idle_streams() {
    let url = fixture_http().await;
    let gw = Gateway::start("shutdown_grace = \"30s\"", &http_upstream("f", &url, "")).await;
    let mut c = gw.client("f");
    c.initialize().await;
    let get = c
        .http
        .get(&c.url)
        .header("accept", "text/event-stream")
        .header("mcp-session-id", c.session.clone().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(get.status(), 200);
    let started = std::time::Instant::now();
    gw.shutdown().await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "an open GET stream held shutdown for {:?}",
        started.elapsed()
    );
    drop(get);
}
