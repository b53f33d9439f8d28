//! The page handlers: each signs the session in, asks the API's functions, renders.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Form, Path, Query, State};
use axum::response::{Html, IntoResponse, Response};
use base64::Engine as _;
use http::{HeaderMap, StatusCode, Uri};
use serde::Deserialize;
use serde_json::{Value, json};

use super::super::App;
use super::super::explorer as api;
use super::{signed_in, state, viewer};
use crate::approval::Verb;
use crate::ui::pages::{self as render, Viewer};

/// The message of an API error answer (`{"error": "..."}`).
pub(super) async fn api_error(resp: Response) -> String {
    let status = resp.status();
    let body = axum::body::to_bytes(resp.into_body(), 64 * 1024)
        .await
        .unwrap_or_default();
    serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_string))
        .unwrap_or_else(|| format!("the gateway answered {status}"))
}

/// An API error answer as a page, with its status.
pub(super) async fn from_api(viewer: Option<&Viewer<'_>>, resp: Response) -> Response {
    let status = resp.status();
    let message = api_error(resp).await;
    (
        status,
        Html(render::error(viewer, status.as_u16(), &message).into_string()),
    )
        .into_response()
}

fn page(markup: maud::Markup) -> Response {
    Html(markup.into_string()).into_response()
}

/// Where the browser is, to come back to after signing in.
fn here(uri: &Uri) -> String {
    uri.path_and_query()
        .map_or_else(|| uri.path().to_string(), |p| p.as_str().to_string())
}

/// Filters from the query, without the empty fields a form sends.
fn filters(pairs: Vec<(String, String)>) -> Vec<(String, String)> {
    pairs.into_iter().filter(|(_, v)| !v.is_empty()).collect()
}

macro_rules! signed_in_or_return {
    ($app:expr, $headers:expr, $peer:expr, $uri:expr) => {
        match signed_in(&$app, &$headers, $peer, &here(&$uri)).await {
            Ok(s) => s,
            Err(r) => return r,
        }
    };
}

pub async fn runs(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    uri: Uri,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Response {
    let (session, who) = signed_in_or_return!(app, headers, peer, uri);
    let v = viewer(&session, &who);
    let scope = app.explorer.scope_of(&who, app.relay.policy.as_deref());
    let f = filters(pairs);
    match api::find_runs(&app, &who, &scope, f.clone()).await {
        Ok(runs) => page(render::runs(&v, &f, &runs)),
        Err(resp) => from_api(Some(&v), resp).await,
    }
}

pub async fn timeline(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    uri: Uri,
    Path(run): Path<String>,
) -> Response {
    let (session, who) = signed_in_or_return!(app, headers, peer, uri);
    let v = viewer(&session, &who);
    let scope = app.explorer.scope_of(&who, app.relay.policy.as_deref());
    match api::find_timeline(&app, &who, &scope, &run).await {
        Ok(calls) => page(render::timeline(&v, &run, &calls)),
        Err(resp) => from_api(Some(&v), resp).await,
    }
}

pub async fn entries(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    uri: Uri,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Response {
    let (session, who) = signed_in_or_return!(app, headers, peer, uri);
    let v = viewer(&session, &who);
    let scope = app.explorer.scope_of(&who, app.relay.policy.as_deref());
    let f = filters(pairs);
    let mut asked = f.clone();
    if !asked.iter().any(|(k, _)| k == "limit") {
        asked.push(("limit".into(), "100".into()));
    }
    match api::find_entries(&app, &who, &scope, asked).await {
        Ok((items, next)) => page(render::entries(&v, &f, &items, next.as_deref())),
        Err(resp) => from_api(Some(&v), resp).await,
    }
}

pub async fn entry(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    uri: Uri,
    Path(index): Path<String>,
) -> Response {
    let (session, who) = signed_in_or_return!(app, headers, peer, uri);
    let v = viewer(&session, &who);
    let scope = app.explorer.scope_of(&who, app.relay.policy.as_deref());
    match api::find_entry(&app, &who, &scope, &index).await {
        Ok(found) => {
            let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
            // A version-1 entry holds its message: its bytes are a payload, for those who may
            // see payloads only.
            let verifiable = found.payloads || found.entry["version"] == 2;
            let bytes = verifiable.then(|| b64(&found.bytes));
            let payloads: Vec<render::RawPayload> = found
                .stored
                .iter()
                .map(|(slot, opening, data)| render::RawPayload {
                    slot: *slot,
                    opening: hex::encode(opening),
                    data: b64(data),
                })
                .collect();
            page(render::entry(
                &v,
                &found.entry,
                bytes.as_deref(),
                &payloads,
                found.proof.as_deref(),
                app.relay.audit.origin(),
            ))
        }
        Err(resp) => from_api(Some(&v), resp).await,
    }
}

#[derive(Deserialize)]
pub struct Flash {
    done: Option<String>,
}

pub async fn approvals(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    uri: Uri,
    Query(q): Query<Flash>,
) -> Response {
    let (session, who) = signed_in_or_return!(app, headers, peer, uri);
    let v = viewer(&session, &who);
    let list: Vec<Value> = app
        .relay
        .approvals
        .list_json(&who, false)
        .await
        .into_iter()
        .filter(|a| a["state"] == "pending")
        .collect();
    // The note after a decision names an approval and its state, nothing else: a link with
    // other text does not put words on the page.
    let done = q.done.as_deref().filter(|d| {
        d.strip_prefix("Approval ")
            .and_then(|r| r.split_once(" is now "))
            .is_some_and(|(id, state)| {
                id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                    && state
                        .strip_suffix('.')
                        .is_some_and(|s| s.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
            })
    });
    page(render::approvals(&v, &list, done))
}

#[derive(Deserialize)]
pub struct DecideForm {
    csrf: String,
    reason: String,
    arguments_sha256: Option<String>,
}

/// Approve or deny from the page: the form's token must be the session's, a reason is
/// required, and the decision applies only to the arguments the approver was shown.
pub async fn decide(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    uri: Uri,
    Path((id, verb)): Path<(String, String)>,
    Form(f): Form<DecideForm>,
) -> Response {
    if !super::same_origin(&app, &headers) {
        return super::cross_site();
    }
    let (session, who) = signed_in_or_return!(app, headers, peer, uri);
    let v = viewer(&session, &who);
    let fail = |status: StatusCode, message: String| {
        (
            status,
            Html(render::error(Some(&v), status.as_u16(), &message).into_string()),
        )
            .into_response()
    };
    if f.csrf != session.csrf {
        return fail(
            StatusCode::FORBIDDEN,
            "this form was not sent from this sign-in's page (its form token does not match); reload the approvals page and decide there".into(),
        );
    }
    let verb = match verb.as_str() {
        "approve" => Verb::Approve,
        "deny" => Verb::Deny,
        other => {
            return fail(
                StatusCode::NOT_FOUND,
                format!("no action {other:?}: approve or deny"),
            );
        }
    };
    let reason = f.reason.trim();
    if reason.is_empty() {
        return fail(
            StatusCode::BAD_REQUEST,
            "give a reason: it is recorded in the log with your decision".into(),
        );
    }
    let digest = f.arguments_sha256.as_deref().filter(|d| !d.is_empty());
    match app
        .relay
        .approvals
        .decide(&id, &who, verb, Some(reason.to_string()), digest)
        .await
    {
        Ok(p) => {
            let done = format!(
                "Approval {} is now {}.",
                id,
                p.to_json()["state"].as_str().unwrap_or("decided")
            );
            super::see_other(&format!("/ui/approvals?done={}", render::enc(&done)))
        }
        Err(e) => {
            tracing::info!(approval = %id, who = %who.name, "approval decision refused: {e}");
            fail(e.status(), e.to_string())
        }
    }
}

/// The log's health as the page shows it.
fn health_json(app: &App) -> Value {
    let audit = &app.relay.audit;
    let report = audit.health();
    let checkpoint = audit.latest_checkpoint().map(|cp| {
        let age_s = crate::audit::now_ns().saturating_sub(cp.signed_ns) / 1_000_000_000;
        let cosignatures = cp
            .note
            .split_once("\n\n")
            .map_or(0, |(_, sigs)| sigs.lines().filter(|l| !l.is_empty()).count().saturating_sub(1));
        json!({ "size": cp.size, "signed_ns": cp.signed_ns, "age_s": age_s, "cosignatures": cosignatures })
    });
    let scrub = audit.last_scrub().map(|s| {
        json!({ "finished_ns": s.finished_ns, "took_ms": s.took_ms, "entries": s.entries, "problem": s.problem })
    });
    let exports: Vec<Value> = state(app)
        .exports
        .status()
        .into_iter()
        .map(|s| json!({ "name": s.name, "cursor": s.cursor, "head": s.head, "last_error": s.last_error }))
        .collect();
    json!({
        "ready": report.ready,
        "reasons": report.reasons,
        "origin": audit.origin(),
        "verifier_key": audit.verifier().to_key_string(),
        "size": audit.head().size,
        "checkpoint": checkpoint,
        "scrub": scrub,
        "witnesses": audit.witnesses().map(|w| json!(w)),
        "exports": exports,
    })
}

pub async fn health(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let (session, who) = signed_in_or_return!(app, headers, peer, uri);
    let v = viewer(&session, &who);
    let mut h = health_json(&app);
    // Sinks' errors name files and collectors: the operator's business, and auditors'.
    let scope = app.explorer.scope_of(&who, app.relay.policy.as_deref());
    if !matches!(scope, crate::explorer::Scope::All) {
        h["exports"] = json!([]);
        if let Some(s) = h["scrub"].as_object_mut() {
            s.remove("problem");
        }
    }
    page(render::health(&v, &h))
}
