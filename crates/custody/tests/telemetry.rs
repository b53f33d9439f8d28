//! OpenTelemetry traces against an OTLP/HTTP receiver on loopback that decodes what arrives
//! with the `opentelemetry-proto` crate's generated protobuf types: the server span of each
//! call with the MCP semantic-convention attributes and the caller's parent (from
//! `params._meta.traceparent` or the HTTP header), the child spans (authentication, policy,
//! masking, audit append with the entry's index), the client span toward an HTTP upstream whose
//! `traceparent` the upstream receives, and no argument anywhere unless configured (then the
//! masked copy only).

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::http::HeaderMap;
use common::*;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;
use serde_json::{Value, json};

/// An OTLP/HTTP receiver: every span it was sent.
async fn receiver() -> (String, Arc<Mutex<Vec<Span>>>) {
    let spans = Arc::new(Mutex::new(Vec::new()));
    let keep = spans.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
            let keep = keep.clone();
            async move {
                assert_eq!(headers["content-type"], "application/x-protobuf");
                let req = ExportTraceServiceRequest::decode(body).expect("OTLP protobuf");
                for rs in req.resource_spans {
                    for ss in rs.scope_spans {
                        keep.lock().unwrap().extend(ss.spans);
                    }
                }
                (
                    [("content-type", "application/x-protobuf")],
                    Vec::<u8>::new(),
                )
            }
        }),
    );
    let url = serve_router(app).await;
    (url.replace("/mcp", "/v1/traces"), spans)
}

/// An HTTP MCP upstream that answers every request and keeps each request's headers.
async fn upstream() -> (String, Arc<Mutex<Vec<HeaderMap>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    let app = axum::Router::new().route(
        "/mcp",
        axum::routing::post(move |headers: HeaderMap, body: String| {
            let record = record.clone();
            async move {
                record.lock().unwrap().push(headers);
                let req: Value = serde_json::from_str(&body).unwrap();
                let result = if req["params"]["name"] == "fails" {
                    json!({"content": [{"type": "text", "text": "no"}], "isError": true})
                } else {
                    json!({"content": [{"type": "text", "text": "done"}]})
                };
                axum::Json(json!({"jsonrpc": "2.0", "id": req["id"], "result": result}))
            }
        }),
    );
    (serve_router(app).await, seen)
}

fn attr(span: &Span, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref()?.value.as_ref())
        .map(|v| match v {
            Any::StringValue(s) => s.clone(),
            Any::IntValue(i) => i.to_string(),
            Any::BoolValue(b) => b.to_string(),
            Any::DoubleValue(d) => d.to_string(),
            other => format!("{other:?}"),
        })
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Everything a span says, as text: its attributes and its events' attributes.
fn everything(span: &Span) -> String {
    let mut out = format!("{:?}", span.attributes);
    for e in &span.events {
        out.push_str(&format!("{} {:?}", e.name, e.attributes));
    }
    out
}

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT: &str = "00f067aa0ba902b7";

struct Traced {
    gw: Gateway,
    spans: Arc<Mutex<Vec<Span>>>,
    seen: Arc<Mutex<Vec<HeaderMap>>>,
}

async fn gateway(telemetry: &str) -> Traced {
    let (otlp, spans) = receiver().await;
    let (up, seen) = upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("p.cedar");
    std::fs::write(&policy, "permit(principal, action, resource);").unwrap();
    let gw = Gateway::start(
        "",
        &format!(
            "[telemetry]\nendpoint = \"{otlp}\"\n{telemetry}\n[policy]\nfiles = [\"{}\"]\n{}\
             [[endpoints.up.mask_audit]]\npath = \"$.params.arguments.secret\"\naction = \"redact\"\n",
            policy.display(),
            http_upstream("up", &up, ""),
        ),
    )
    .await;
    std::mem::forget(dir);
    Traced { gw, spans, seen }
}

async fn call(gw: &Gateway, params: Value, traceparent_header: Option<&str>) -> Answer {
    let c = gw.client("up").stateless();
    let body = c.request_body("tools/call", params);
    let mut b = c
        .with_mirrored(c.post_builder(), &body)
        .body(body.to_string());
    if let Some(tp) = traceparent_header {
        b = b.header("traceparent", tp);
    }
    Client::send(b).await
}

/// Spans by name, after the gateway stopped (its exporter flushes then).
async fn finish(t: Traced) -> (HashMap<String, Vec<Span>>, Vec<HeaderMap>) {
    let _dir = t.gw.shutdown().await;
    let mut by: HashMap<String, Vec<Span>> = HashMap::new();
    for s in t.spans.lock().unwrap().drain(..) {
        by.entry(s.name.clone()).or_default().push(s);
    }
    (by, t.seen.lock().unwrap().clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_is_a_server_span_under_the_callers_trace_with_its_steps_and_the_upstream_hop() {
    let t = gateway("").await;
    let tp = format!("00-{TRACE}-{PARENT}-01");
    let a = call(
        &t.gw,
        json!({"name": "deploy", "arguments": {"secret": "hunter2-do-not-trace"},
               "_meta": {"traceparent": tp}}),
        None,
    )
    .await;
    assert!(a.response().get("result").is_some(), "{:?}", a.response());
    let (spans, seen) = finish(t).await;
    let server = &spans["tools/call deploy"];
    let server = server.iter().find(|s| s.kind == 2).expect("a server span");
    // The caller's trace, from params._meta.
    assert_eq!(hex(&server.trace_id), TRACE);
    assert_eq!(hex(&server.parent_span_id), PARENT);
    assert_eq!(
        attr(server, "mcp.method.name").as_deref(),
        Some("tools/call")
    );
    assert_eq!(attr(server, "gen_ai.tool.name").as_deref(), Some("deploy"));
    assert_eq!(
        attr(server, "gen_ai.operation.name").as_deref(),
        Some("execute_tool")
    );
    assert!(attr(server, "jsonrpc.request.id").is_some());
    assert!(attr(server, "mcp.protocol.version").is_some());
    // A stateless call has no session.
    assert_eq!(attr(server, "mcp.session.id"), None);
    // The evidence: the request's and the answer's entries.
    let req: u64 = attr(server, "custody.entry.request")
        .unwrap()
        .parse()
        .unwrap();
    let ans: u64 = attr(server, "custody.entry.answer")
        .unwrap()
        .parse()
        .unwrap();
    assert!(ans > req);
    // Its steps, children of the server span.
    for step in ["authenticate", "policy", "audit append", "mask"] {
        let s = spans
            .get(step)
            .and_then(|v| v.iter().find(|s| s.parent_span_id == server.span_id))
            .unwrap_or_else(|| panic!("no {step} span under the server span: {:?}", spans.keys()));
        assert_eq!(s.trace_id, server.trace_id);
    }
    let appends: Vec<u64> = spans["audit append"]
        .iter()
        .filter(|s| s.parent_span_id == server.span_id)
        .map(|s| attr(s, "custody.entry.index").unwrap().parse().unwrap())
        .collect();
    assert!(
        appends.contains(&req) && appends.contains(&ans),
        "{appends:?}"
    );
    assert_eq!(
        attr(&spans["policy"][0], "custody.policy.decision").as_deref(),
        Some("allow")
    );
    // The upstream hop: a client span, whose context the upstream received.
    let client = spans["tools/call deploy"]
        .iter()
        .find(|s| s.kind == 3)
        .expect("a client span");
    assert_eq!(client.parent_span_id, server.span_id);
    let sent = seen
        .iter()
        .find_map(|h| h.get("traceparent"))
        .expect("the upstream got a traceparent")
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(sent, format!("00-{TRACE}-{}-01", hex(&client.span_id)));
    // No span says what the arguments were.
    for s in spans.values().flatten() {
        assert!(
            !everything(s).contains("hunter2"),
            "{}: {}",
            s.name,
            everything(s)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_header_is_the_parent_without_meta_and_errors_are_typed() {
    let t = gateway("").await;
    let tp = format!("00-{TRACE}-{PARENT}-01");
    let a = call(&t.gw, json!({"name": "fails", "arguments": {}}), Some(&tp)).await;
    assert!(a.response().get("result").is_some(), "{:?}", a.response());
    let (spans, _) = finish(t).await;
    let server = spans["tools/call fails"]
        .iter()
        .find(|s| s.kind == 2)
        .expect("a server span");
    assert_eq!(hex(&server.trace_id), TRACE);
    assert_eq!(hex(&server.parent_span_id), PARENT);
    assert_eq!(attr(server, "error.type").as_deref(), Some("tool_error"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payloads_on_spans_are_the_masked_copy_and_only_when_configured() {
    let t = gateway("payloads = \"masked\"").await;
    let a = call(
        &t.gw,
        json!({"name": "deploy", "arguments": {"secret": "hunter2-do-not-trace", "version": "1.2.3"}}),
        None,
    )
    .await;
    assert!(a.response().get("result").is_some(), "{:?}", a.response());
    let (spans, _) = finish(t).await;
    let bodies: Vec<String> = spans["audit append"]
        .iter()
        .flat_map(|s| s.events.iter())
        .filter(|e| e.name == "mcp.request.body")
        .map(|e| format!("{:?}", e.attributes))
        .collect();
    assert_eq!(bodies.len(), 1, "{spans:?}");
    assert!(bodies[0].contains("1.2.3"), "{}", bodies[0]);
    for s in spans.values().flatten() {
        assert!(
            !everything(s).contains("hunter2"),
            "{}: {}",
            s.name,
            everything(s)
        );
    }
}
