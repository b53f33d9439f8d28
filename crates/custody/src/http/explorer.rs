//! `/api/v1/entries`, `/api/v1/runs`: the explorer's API. Every route needs a bearer token;
//! auditors (`[explorer] auditors`) see every entry with its masked payloads, anyone else only
//! the entries of its own CI run (or its own entries), headers only. Every read is recorded as
//! a `log_read` entry: who, which route, the filters and how many entries it returned.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, Method, StatusCode};
use serde_json::{Map, Value, json};

use super::App;
use crate::audit::{AuditError, Draft, Kind};
use crate::explorer::{Filter, Order, QueryError, Scope, query, view};
use crate::identity::Principal;

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

fn scope_name(s: &Scope) -> &'static str {
    match s {
        Scope::All => "auditor",
        Scope::Endpoints(_) => "endpoint auditor",
        Scope::Run { .. } => "own run",
        Scope::Pipeline { .. } => "own pipeline",
        Scope::Subject { .. } => "own entries",
    }
}

/// The caller and what it may see, or the answer to give.
pub(super) async fn caller(
    app: &App,
    headers: &HeaderMap,
    peer: SocketAddr,
) -> Result<(Arc<Principal>, Scope), Response> {
    let p = super::approvals::who(app, headers, &Method::GET, peer, "explorer").await?;
    let scope = app.explorer.scope_of(&p, app.relay.policy.as_deref());
    Ok((p, scope))
}

/// Records a read; `Err` is the 503 to answer instead of what was read (fail closed: a read
/// that cannot be recorded is not served).
async fn record(
    app: &App,
    who: &Principal,
    scope: &Scope,
    route: &str,
    what: Value,
) -> Result<(), Response> {
    let mut detail = json!({ "route": route, "scope": scope_name(scope) });
    if let (Some(d), Some(w)) = (detail.as_object_mut(), what.as_object()) {
        d.extend(w.clone());
    }
    let mut draft = Draft::gateway(Kind::LogRead, "", detail.to_string());
    draft.caller = who.audit.clone();
    match app.relay.audit.append(draft).await {
        Ok(_) => Ok(()),
        Err(e) => {
            tracing::error!("couldn't record a read of the log: {e}");
            Err(error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "this read could not be recorded in the audit log, so it is not served: {e}"
                ),
            ))
        }
    }
}

/// Runs `f` on the explorer's index (caught up to the log's head) in a blocking thread.
async fn on_index<T: Send + 'static>(
    app: &App,
    f: impl FnOnce(&mut crate::explorer::Open) -> Result<T, QueryError> + Send + 'static,
) -> Result<T, Response> {
    let size = app.relay.audit.head().size;
    let explorer = app.explorer.clone();
    match tokio::task::spawn_blocking(move || explorer.with(size, f)).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(QueryError::Bad(why))) => Err(error(StatusCode::BAD_REQUEST, why)),
        Ok(Err(e)) => {
            tracing::error!("the explorer could not read: {e}");
            Err(error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
        }
        Err(e) => Err(error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())),
    }
}

/// Query parameters split into the filter and the page's own (`order`, `cursor`, `limit`).
struct Params {
    filter: Filter,
    order: Order,
    cursor: Option<String>,
    limit: u32,
    echo: Map<String, Value>,
}

/// The parameters, or why they are refused (a 400).
fn params(pairs: Vec<(String, String)>) -> Result<Params, String> {
    let bad = |m: String| m;
    let mut filter = Map::new();
    let (mut order, mut cursor, mut limit) = (Order::Newest, None, 100u32);
    for (k, v) in pairs {
        match k.as_str() {
            "order" => {
                order = match v.as_str() {
                    "newest" => Order::Newest,
                    "oldest" => Order::Oldest,
                    _ => return Err(bad(format!("order={v:?}: use newest or oldest"))),
                }
            }
            "cursor" => cursor = Some(v),
            "limit" => {
                limit = v.parse().map_err(|_| {
                    bad(format!(
                        "limit={v:?} is not a number (1 to {})",
                        query::MAX_LIMIT
                    ))
                })?;
            }
            "masked" | "errors" => {
                let b = match v.as_str() {
                    "true" | "1" => true,
                    "false" | "0" => false,
                    _ => return Err(bad(format!("{k}={v:?}: use true or false"))),
                };
                filter.insert(k, json!(b));
            }
            _ => {
                if filter.insert(k.clone(), json!(v)).is_some() {
                    return Err(bad(format!("{k} is given twice; give each filter once")));
                }
            }
        }
    }
    let echo = filter.clone();
    let filter: Filter = serde_json::from_value(Value::Object(filter)).map_err(|e| {
        bad(format!(
            "{e}: the filters are since, until, principal, repository, workflow, run, actor, ref, environment, project, pipeline, endpoint, session, method, tool, kind, decision, approval, masked, errors"
        ))
    })?;
    Ok(Params {
        filter,
        order,
        cursor,
        limit,
        echo,
    })
}

/// A page of entries `scope` may see: the entries and the next page's cursor. The read is
/// recorded.
pub(super) async fn find_entries(
    app: &App,
    who: &Principal,
    scope: &Scope,
    pairs: Vec<(String, String)>,
) -> Result<(Vec<Value>, Option<String>), Response> {
    let p = params(pairs).map_err(|why| error(StatusCode::BAD_REQUEST, why))?;
    let payloads = scope.sees_payloads();
    let s = scope.clone();
    let (items, next, echo) = on_index(app, move |open| {
        let page = query::entries(
            &open.index,
            &s,
            &p.filter,
            p.order,
            p.cursor.as_deref(),
            p.limit,
        )?;
        Ok((
            view::page(open, &page.indices, payloads)?,
            page.next,
            p.echo,
        ))
    })
    .await?;
    let what = json!({ "filters": echo, "returned": items.len() });
    record(app, who, scope, "/api/v1/entries", what).await?;
    Ok((items, next))
}

/// `GET /api/v1/entries?FILTERS&order=newest|oldest&cursor=C&limit=N`
pub async fn entries(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Response {
    let (who, scope) = match caller(&app, &headers, peer).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    match find_entries(&app, &who, &scope, pairs).await {
        Ok((items, next)) => Json(json!({ "entries": items, "next": next })).into_response(),
        Err(r) => r,
    }
}

/// The runs `scope` may see whose entries pass the filters. The read is recorded.
pub(super) async fn find_runs(
    app: &App,
    who: &Principal,
    scope: &Scope,
    pairs: Vec<(String, String)>,
) -> Result<Vec<Value>, Response> {
    let p = params(pairs).map_err(|why| error(StatusCode::BAD_REQUEST, why))?;
    let s = scope.clone();
    let (runs, echo) = on_index(app, move |open| {
        Ok((query::runs(&open.index, &s, &p.filter, p.limit)?, p.echo))
    })
    .await?;
    let what = json!({ "filters": echo, "returned": runs.len() });
    record(app, who, scope, "/api/v1/runs", what).await?;
    Ok(runs.iter().map(|r| json!(r)).collect())
}

/// `GET /api/v1/runs?FILTERS&limit=N`
pub async fn runs(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Response {
    let (who, scope) = match caller(&app, &headers, peer).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    match find_runs(&app, &who, &scope, pairs).await {
        Ok(runs) => Json(json!({ "runs": runs })).into_response(),
        Err(r) => r,
    }
}

/// Run `run`'s timeline as `scope` may see it; 403 for another's run, 404 for none. The read
/// is recorded.
pub(super) async fn find_timeline(
    app: &App,
    who: &Principal,
    scope: &Scope,
    run: &str,
) -> Result<Vec<Value>, Response> {
    let payloads = scope.sees_payloads();
    let (s, r) = (scope.clone(), run.to_string());
    let found = on_index(app, move |open| {
        let indices = query::run_entries(&open.index, &s, &r, crate::explorer::TIMELINE_CAP)?;
        if indices.is_empty() {
            return Ok(Err(query::run_exists(&open.index, &r)?));
        }
        Ok(Ok(view::timeline(&open.log, &indices, payloads)?))
    })
    .await?;
    match found {
        Ok(calls) => {
            let what = json!({ "run": run, "returned": calls.len() });
            record(app, who, scope, "/api/v1/runs/{id}/timeline", what).await?;
            Ok(calls)
        }
        Err(refused) => {
            let what = json!({ "run": run, "refused": refused, "returned": 0 });
            record(app, who, scope, "/api/v1/runs/{id}/timeline", what).await?;
            Err(if refused {
                error(
                    StatusCode::FORBIDDEN,
                    format!(
                        "{} may not read run {run:?}: only auditors ([explorer] auditors) may read other runs' entries",
                        who.name
                    ),
                )
            } else {
                error(
                    StatusCode::NOT_FOUND,
                    format!("no entries of run {run:?} in the log"),
                )
            })
        }
    }
}

/// `GET /api/v1/runs/{id}/timeline`
pub async fn timeline(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(run): Path<String>,
) -> Response {
    let (who, scope) = match caller(&app, &headers, peer).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    match find_timeline(&app, &who, &scope, &run).await {
        Ok(calls) => Json(json!({ "run": run, "calls": calls })).into_response(),
        Err(r) => r,
    }
}

/// One entry as the explorer shows it.
pub(super) struct Found {
    pub entry: Value,
    /// The encoded entry, exactly as hashed into the tree.
    pub bytes: Vec<u8>,
    /// Its stored payloads with their openings, for whoever sees payloads.
    pub stored: Vec<crate::store::StoredPayload>,
    /// Its receipt (C2SP tlog-proof) in the latest checkpoint, once one covers it.
    pub proof: Option<String>,
    pub checkpoint: Option<String>,
    pub payloads: bool,
}

/// Entry `index` (text from the path) as `scope` may see it, with its receipt. The read is
/// recorded.
pub(super) async fn find_entry(
    app: &App,
    who: &Principal,
    scope: &Scope,
    index: &str,
) -> Result<Found, Response> {
    let Ok(idx) = index.parse::<u64>() else {
        return Err(error(
            StatusCode::BAD_REQUEST,
            format!("{index:?} is not an entry index (a non-negative integer)"),
        ));
    };
    let payloads = scope.sees_payloads();
    let s = scope.clone();
    let found = on_index(app, move |open| {
        match query::visible(&open.index, &s, idx)? {
            Some(true) => {
                let e = view::entry(&open.log, idx, payloads)?;
                let (_, bytes) = crate::store::LogReader::entry(&open.log, idx)
                    .map_err(crate::explorer::index::IndexError::from)?;
                let stored = if payloads {
                    crate::store::LogReader::payloads(&open.log, idx)
                        .map_err(crate::explorer::index::IndexError::from)?
                } else {
                    Vec::new()
                };
                Ok(Some(Some((e, bytes, stored))))
            }
            Some(false) => Ok(Some(None)),
            None => Ok(None),
        }
    })
    .await?;
    let (entry, bytes, stored) = match found {
        Some(Some(e)) => e,
        Some(None) => {
            let what = json!({ "index": idx, "refused": true, "returned": 0 });
            record(app, who, scope, "/api/v1/entries/{index}", what).await?;
            return Err(error(
                StatusCode::FORBIDDEN,
                format!(
                    "{} may not read entry {idx}: it is not one of its run's entries, and only auditors ([explorer] auditors) may read others",
                    who.name
                ),
            ));
        }
        None => {
            return Err(error(
                StatusCode::NOT_FOUND,
                format!("there is no entry {idx} in the log"),
            ));
        }
    };
    let audit = &app.relay.audit;
    let checkpoint = audit.latest_checkpoint().map(|c| c.note);
    let proof = match audit.proof(idx, None).await {
        Ok(p) => Some(p),
        Err(AuditError::NotYetCheckpointed { .. }) => None,
        Err(e) => {
            return Err(error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the entry's inclusion proof could not be made: {e}"),
            ));
        }
    };
    let what = json!({ "index": idx, "returned": 1 });
    record(app, who, scope, "/api/v1/entries/{index}", what).await?;
    Ok(Found {
        entry,
        bytes,
        stored,
        proof,
        checkpoint,
        payloads,
    })
}

/// `GET /api/v1/entries/{index}`: the entry (with its payloads for auditors), its inclusion
/// proof in the latest checkpoint, and that checkpoint.
pub async fn entry(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(index): Path<String>,
) -> Response {
    let (who, scope) = match caller(&app, &headers, peer).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    match find_entry(&app, &who, &scope, &index).await {
        Ok(f) => Json(json!({
            "entry": f.entry,
            "payloads": if f.payloads { "masked" } else { "withheld" },
            "proof": f.proof,
            "checkpoint": f.checkpoint,
        }))
        .into_response(),
        Err(r) => r,
    }
}
