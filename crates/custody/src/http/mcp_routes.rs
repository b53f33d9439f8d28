//! The MCP routes: admitting a request (address gate, token, limits), reading its body, handing
//! it to the relay, and turning the relay's outcome into the response.

use super::*;

pub(super) async fn not_found(method: Method, uri: Uri) -> Response {
    let err = serde_json::json!({
        "error": format!("no route for {method} {}; MCP endpoints are at /mcp/{{endpoint}}", uri.path())
    });
    (StatusCode::NOT_FOUND, axum::Json(err)).into_response()
}

pub(super) fn unrecorded(error: RelayError) -> Outcome {
    Outcome::Error {
        error,
        id: None,
        session: None,
    }
}

/// What every MCP request goes through before its method's own handling: the endpoint, the
/// address's refusal budget, the `Host`/`Origin` guard, the caller's token, and the principal's
/// rate and concurrency. Refusals before authentication are counted, not recorded one by one.
/// The permit holds the principal's place among its requests in progress. A refusal comes with
/// its outcome label (`metrics::labels::OUTCOMES`).
async fn admit(
    app: &App,
    name: &str,
    uri: &Uri,
    headers: &HeaderMap,
    method: &Method,
    peer: SocketAddr,
) -> Result<(Arc<Endpoint>, Caller, Permit, Option<Span>), (Response, usize)> {
    use crate::metrics::labels::outcome as label;
    let ep = app
        .relay
        .endpoint(name)
        .map_err(|e| (respond(name, unrecorded(e)), label::NOT_FOUND))?;
    let address = peer.to_string();
    let at = At {
        endpoint: &ep.name,
        address: &address,
        http_method: method.as_str(),
        session: crate::relay::session_header(headers),
    };
    // Traced: the token's check (a known token's lookup, or its verification) is a span.
    let auth_started = app.telemetry.as_ref().map(|_| std::time::SystemTime::now());
    let known = match gate_address(app, headers, peer) {
        Ok(known) => known,
        Err(error) => {
            app.relay.refusals.unauthenticated(&at, &error);
            let mut resp = respond(name, unrecorded(error));
            // A client refused this way has no use for its connection; closing it costs a
            // flood a handshake per request.
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            return Err((resp, label::LIMITED));
        }
    };
    if let Err(error) = app.guard.check(uri, headers) {
        app.limiter.addresses.charge(address_key(peer.ip()));
        app.relay.refusals.unauthenticated(&at, &error);
        return Err((respond(name, unrecorded(error)), label::FORBIDDEN));
    }
    let principal = match known {
        Some(p) => p,
        None => authenticate(app, &ep, headers, &at, peer)
            .await
            .map_err(|resp| (resp, label::UNAUTHORIZED))?,
    };
    let auth_span = auth_started.map(|t0| (t0, std::time::SystemTime::now()));
    let caller = Caller { principal, address };
    let at = At {
        endpoint: &ep.name,
        address: &caller.address,
        http_method: method.as_str(),
        session: crate::relay::session_header(headers),
    };
    let limited = |e| {
        let outcome = app
            .relay
            .limited(&at, &caller.principal, None, RelayError::Limit(e), None);
        (respond(name, outcome), label::LIMITED)
    };
    if let Err(e) = app.limiter.principal_rate.take(&caller.principal.binding) {
        return Err(limited(e));
    }
    let permit = match app
        .limiter
        .principal_concurrent
        .acquire(&caller.principal.binding)
    {
        Ok(p) => p,
        Err(e) => return Err(limited(e)),
    };
    Ok((ep, caller, permit, auth_span))
}

/// When a step began and ended, for a span made once its parent exists.
type Span = (std::time::SystemTime, std::time::SystemTime);

/// The request's server span, when traced: its parent from `params._meta` or the headers, its
/// name and attributes from the message, authentication as its first child.
fn server_span(
    app: &App,
    ep: &Endpoint,
    headers: &HeaderMap,
    body: &Body,
    started: std::time::SystemTime,
    auth: Option<Span>,
) -> Option<opentelemetry::Context> {
    let t = app.telemetry.as_ref()?;
    let version = headers
        .get(crate::mcp::headers::MCP_PROTOCOL_VERSION)
        .and_then(|v| v.to_str().ok());
    let session = crate::relay::session_header(headers);
    let (parent, name, attributes) = match body {
        Body::Single(m) => (
            t.parent(headers, m.params().and_then(|p| p.get("_meta"))),
            crate::telemetry::mcp::span_name(m),
            crate::telemetry::mcp::attributes(m, version, session.as_deref(), &ep.name),
        ),
        Body::Batch(..) => (
            t.parent(headers, None),
            "batch".to_string(),
            vec![opentelemetry::KeyValue::new(
                "custody.endpoint",
                ep.name.to_string(),
            )],
        ),
    };
    let cx = t.server(&parent, name, started, attributes);
    if let Some((a, b)) = auth {
        t.finished(&cx, "authenticate", a, b);
    }
    Some(cx)
}

/// Holds `permit` until the response's body has been sent (or dropped); a stream is counted
/// for `/metrics` then too, anything else now.
fn holding(resp: Response, permit: Permit, observed: observe::Observed) -> Response {
    if observed.streaming {
        resp.map(|b| AxumBody::new(serve::Guarded::new(b, (permit, observed))))
    } else {
        drop(observed);
        resp.map(|b| AxumBody::new(serve::Guarded::new(b, permit)))
    }
}

pub(super) async fn mcp_post(
    State(app): Shared,
    Path(name): Path<String>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
) -> Response {
    let started = Instant::now();
    let wall = app.telemetry.as_ref().map(|_| std::time::SystemTime::now());
    // Taking the request whole avoids copying its headers into extractors.
    let (parts, body) = request.into_parts();
    let headers = parts.headers;
    // Identity before the body: an unauthenticated caller cannot make the gateway read it.
    let (ep, caller, permit, auth) =
        match admit(&app, &name, &parts.uri, &headers, &parts.method, peer).await {
            Ok(admitted) => admitted,
            Err((resp, outcome)) => {
                let unread = crate::metrics::labels::method::UNKNOWN;
                return observe::refused(&app.relay, &name, unread, outcome, started, resp);
            }
        };
    let checked = async {
        guard::post_media(&headers).map_err(|e| (e, None))?;
        let bytes = read_body(body, &headers, ep.messages.max_message_bytes)
            .await
            .map_err(|e| (e, None))?;
        Body::parse(bytes.clone(), ep.messages.json()).map_err(|e| (e.into(), Some(bytes)))
    }
    .await;
    let mut traced = None;
    let (outcome, labels) = match checked {
        Ok(body) => {
            let labels = observe::labels(&ep, &body);
            let cx = wall.and_then(|w| server_span(&app, &ep, &headers, &body, w, auth));
            let outcome = match &cx {
                Some(cx) => {
                    use crate::telemetry::FutureExt as _;
                    let outcome = app
                        .relay
                        .post(&ep, &caller, &headers, body)
                        .with_context(cx.clone())
                        .await;
                    traced_stream(outcome, cx)
                }
                None => app.relay.post(&ep, &caller, &headers, body).await,
            };
            traced = cx;
            (outcome, labels)
        }
        Err((error, raw)) => {
            let outcome = app
                .relay
                .refuse(&ep, &caller.principal, &headers, error, None, raw)
                .await;
            (outcome, (crate::metrics::labels::method::UNKNOWN, None))
        }
    };
    let mut observed = observe::Observed::new(ep, labels, started, &outcome);
    observed.trace = traced;
    holding(respond(&name, outcome), permit, observed)
}

/// A streamed answer is read (and its messages recorded) as the client reads it: in the
/// request's trace context.
fn traced_stream(outcome: Outcome, cx: &opentelemetry::Context) -> Outcome {
    use crate::telemetry::FutureExt as _;
    match outcome {
        Outcome::Stream { events, session } => Outcome::Stream {
            events: events.with_context(cx.clone()).boxed(),
            session,
        },
        other => other,
    }
}

pub(super) async fn mcp_get(
    State(app): Shared,
    Path(name): Path<String>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let started = Instant::now();
    let labels = (crate::metrics::labels::method::GET, None);
    let (ep, caller, permit, _) = match admit(&app, &name, &uri, &headers, &Method::GET, peer).await
    {
        Ok(admitted) => admitted,
        Err((resp, outcome)) => {
            return observe::refused(&app.relay, &name, labels.0, outcome, started, resp);
        }
    };
    let outcome = match guard::get_media(&headers) {
        Ok(()) => app.relay.get(&ep, &caller, &headers).await,
        Err(error) => {
            app.relay
                .refuse(&ep, &caller.principal, &headers, error, None, None)
                .await
        }
    };
    let observed = observe::Observed::new(ep, labels, started, &outcome);
    holding(respond(&name, outcome), permit, observed)
}

pub(super) async fn mcp_delete(
    State(app): Shared,
    Path(name): Path<String>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let started = Instant::now();
    let labels = (crate::metrics::labels::method::DELETE, None);
    let (ep, caller, permit, _) =
        match admit(&app, &name, &uri, &headers, &Method::DELETE, peer).await {
            Ok(admitted) => admitted,
            Err((resp, outcome)) => {
                return observe::refused(&app.relay, &name, labels.0, outcome, started, resp);
            }
        };
    let outcome = app.relay.delete(&ep, &caller, &headers).await;
    let observed = observe::Observed::new(ep, labels, started, &outcome);
    holding(respond(&name, outcome), permit, observed)
}

/// Reads the body up to `max` bytes; a declared length over the limit is refused unread.
async fn read_body(body: AxumBody, headers: &HeaderMap, max: usize) -> Result<Bytes, RelayError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Err(RelayError::TooLarge(max));
    }
    match Limited::new(body, max).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(RelayError::TooLarge(max))
        }
        Err(e) => Err(RelayError::BodyRead(e.to_string())),
    }
}

fn with_session(mut resp: Response, session: Option<&str>) -> Response {
    if let Some(v) = session.and_then(|s| HeaderValue::from_str(s).ok()) {
        resp.headers_mut().insert(MCP_SESSION_ID, v);
    }
    resp
}

fn json(status: StatusCode, body: Bytes) -> Response {
    let mut resp = Response::new(AxumBody::from(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

pub(super) fn respond(endpoint: &str, outcome: Outcome) -> Response {
    match outcome {
        Outcome::Accepted { session } => {
            with_session(StatusCode::ACCEPTED.into_response(), session.as_deref())
        }
        Outcome::Json {
            status,
            body,
            session,
        } => with_session(json(status, body), session.as_deref()),
        Outcome::Passthrough {
            status,
            content_type,
            body,
            session,
        } => {
            let mut resp = json(status, body);
            if let Some(ct) = content_type {
                resp.headers_mut().insert(header::CONTENT_TYPE, ct);
            }
            with_session(resp, session.as_deref())
        }
        Outcome::Stream { events, session } => {
            let body = AxumBody::from_stream(events.map(Ok::<_, Infallible>));
            let mut resp = Response::new(body);
            let h = resp.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/event-stream"),
            );
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            h.insert("x-accel-buffering", HeaderValue::from_static("no"));
            with_session(resp, session.as_deref())
        }
        Outcome::Status(status) => status.into_response(),
        Outcome::Error { error, id, session } => {
            let status = if error.answers_request() && id.is_some() {
                StatusCode::OK
            } else {
                error.status()
            };
            if matches!(error, RelayError::Upstream { .. }) {
                tracing::warn!(endpoint, "{error}");
            } else {
                tracing::info!(endpoint, status = status.as_u16(), "refused: {error}");
            }
            let body = Bytes::from(error.to_json(id.as_ref()).to_string());
            let mut resp = with_session(json(status, body), session.as_deref());
            if let Some(secs) = error.retry_after() {
                resp.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(secs));
            }
            resp
        }
    }
}
