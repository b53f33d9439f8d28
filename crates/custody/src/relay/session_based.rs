//! The session-based generation (2025-03-26 … 2025-11-25): `initialize` opens a gateway session
//! mapped to an upstream session or a process of its own; POSTs, the session's GET stream and
//! DELETE follow it.

use super::*;

impl Relay {
    pub(super) async fn initialize(
        &self,
        ep: &Arc<Endpoint>,
        caller: &Caller,
        headers: &HeaderMap,
        version_header: Option<String>,
        msg: Message,
    ) -> Outcome {
        let id = msg.id().cloned();
        let requested = msg
            .params()
            .and_then(|p| p.get("protocolVersion"))
            .and_then(Value::as_str)
            .unwrap_or(version::DEFAULT_SESSION_VERSION)
            .to_string();
        let decision = self.authorize(ep, caller, &msg, &requested);
        if let Some(d) = decision.as_ref().filter(|d| d.verdict != Verdict::Allow) {
            return self
                .deny(ep, caller, &msg, d, None, "initialize cannot wait for one")
                .await;
        }
        // The caps first: a refused open is counted, not recorded as a handshake.
        let (places, process) = match self.session_places(ep, caller) {
            Ok(p) => p,
            Err(e) => {
                let at = At {
                    endpoint: &ep.name,
                    address: &caller.address,
                    http_method: "POST",
                    session: None,
                };
                return self.limited(&at, &caller.principal, Some("initialize"), e, id);
            }
        };
        // The session id exists before the handshake so that both of its entries carry it; the
        // session itself exists only if the upstream accepts.
        let sid = session::new_id();
        let scope = self.scope(ep, Some(sid.clone()), &caller.principal);
        let recorded = match self.record_client(&scope, &msg, decision.as_ref()).await {
            Ok(a) => a,
            Err(e) => return error_outcome(e, id, None),
        };
        let requests: Vec<(Value, Appended)> =
            id.clone().map(|i| (i, recorded)).into_iter().collect();
        match &ep.upstream {
            Upstream::Http(up) => {
                let out = Outbound {
                    session: None,
                    version: version_header.as_deref(),
                    headers,
                };
                let sent = std::time::Instant::now();
                let (reply, upstream_sid, recorded) = match up.post(out, msg.to_bytes()).await {
                    Ok(r) => r,
                    Err(e) => {
                        let ctx = self.ctx(ep, requests, None, scope).since(sent);
                        return fail(&ctx, RelayError::upstream(&ep.name, &ep.mask, e), id).await;
                    }
                };
                let opened = matches!(&reply, Reply::Stream(_))
                    || matches!(&reply, Reply::Message(m) if m.kind() == Kind::Response);
                let session = if opened {
                    let token = match self
                        .share_session(ep, &sid, upstream_sid.as_ref(), &requested, caller)
                        .await
                    {
                        Ok(t) => t,
                        Err(e) => {
                            ep.end_upstream_session(upstream_sid.as_ref(), &requested)
                                .await;
                            let ctx = self.ctx(ep, requests, None, scope).since(sent);
                            return fail(&ctx, e, id).await;
                        }
                    };
                    if let Err(e) = scope
                        .event(
                            EntryKind::SessionOpened,
                            json!({ "protocol_version": requested }),
                        )
                        .await
                    {
                        self.unshare_session(ep, &sid).await;
                        ep.end_upstream_session(upstream_sid.as_ref(), &requested)
                            .await;
                        return error_outcome(e, id, None);
                    }
                    Some(ep.sessions.insert(
                        sid,
                        token,
                        SessionUpstream::Http {
                            session: upstream_sid,
                        },
                        &requested,
                        caller.principal.clone(),
                        places,
                    ))
                } else {
                    None
                };
                let mut ctx = self.ctx(ep, requests, session, scope).since(sent);
                ctx.watch = Watch::Initialize;
                ctx.upstream_headers = std::sync::Mutex::new(Some(recorded));
                render(reply, ctx).await
            }
            Upstream::Stdio(up) => {
                let child = match up.spawn(process.unwrap_or_default()) {
                    Ok(c) => c,
                    Err(e) => {
                        let ctx = self.ctx(ep, requests, None, scope);
                        return fail(&ctx, RelayError::upstream(&ep.name, &ep.mask, e), id).await;
                    }
                };
                let events = match child.request(msg, false).await {
                    Ok(s) => s,
                    Err(e) => {
                        child.stop().await;
                        let ctx = self.ctx(ep, requests, None, scope);
                        return fail(&ctx, RelayError::upstream(&ep.name, &ep.mask, e), id).await;
                    }
                };
                // Between replicas, its id names the replica its process lives on.
                let token = match &self.shared {
                    Some(shared) => format!("{sid}@{}", shared.replica()).into(),
                    None => sid.clone(),
                };
                let session = ep.sessions.insert(
                    sid,
                    token,
                    SessionUpstream::Stdio(child.clone()),
                    &requested,
                    caller.principal.clone(),
                    places,
                );
                let mut ctx = self.ctx(ep, requests, Some(session.clone()), scope.clone());
                ctx.watch = Watch::Initialize;
                let outcome = render_first(events, ctx).await;
                // A failed handshake leaves no session behind.
                let failed = match &outcome {
                    Outcome::Json { body, .. } => serde_json::from_slice::<Value>(body)
                        .map_or(true, |v| v.get("error").is_some()),
                    Outcome::Error { .. } => true,
                    _ => false,
                };
                if failed {
                    ep.sessions.remove(&session.id);
                    child.stop().await;
                    return match outcome {
                        Outcome::Json { status, body, .. } => Outcome::Json {
                            status,
                            body,
                            session: None,
                        },
                        Outcome::Error { error, id, .. } => Outcome::Error {
                            error,
                            id,
                            session: None,
                        },
                        other => other,
                    };
                }
                if let Err(e) = scope
                    .event(
                        EntryKind::SessionOpened,
                        json!({ "protocol_version": requested }),
                    )
                    .await
                {
                    ep.sessions.remove(&session.id);
                    child.stop().await;
                    return error_outcome(e, id, None);
                }
                outcome
            }
        }
    }

    pub(super) async fn session_post(
        self: &Arc<Self>,
        ep: &Arc<Endpoint>,
        caller: &Caller,
        session: Arc<Session>,
        headers: &HeaderMap,
        version_header: Option<String>,
        body: Body,
    ) -> Outcome {
        let version = version_header.unwrap_or_else(|| session.version());
        let scope = self.scope(ep, Some(session.id.clone()), &caller.principal);
        let messages = match body {
            Body::Single(m) => vec![m],
            Body::Batch(ms, raw) => {
                if session.version() != BATCH_VERSION {
                    return self
                        .refuse(
                            ep,
                            &caller.principal,
                            headers,
                            RelayError::BatchNotAllowed(session.version()),
                            None,
                            Some(raw),
                        )
                        .await;
                }
                ms
            }
        };
        let is_batch = messages.len() > 1;
        let single_id = single_request_id(&messages);
        // Policy first: a batch with a request policy does not allow is refused whole.
        let decisions: Vec<Option<Decision>> = messages
            .iter()
            .map(|m| self.authorize(ep, caller, m, &version))
            .collect();
        let refused = |verdict: Verdict| {
            messages
                .iter()
                .zip(&decisions)
                .find_map(|(m, d)| d.as_ref().filter(|d| d.verdict == verdict).map(|d| (m, d)))
        };
        if let Some((m, d)) = refused(Verdict::Deny) {
            return self.deny(ep, caller, m, d, Some(&session), "").await;
        }
        if is_batch && let Some((m, d)) = refused(Verdict::NeedsApproval) {
            return self
                .deny(
                    ep,
                    caller,
                    m,
                    d,
                    Some(&session),
                    "a call that needs approval must be sent on its own, not in a JSON-RPC batch",
                )
                .await;
        }
        // A client cancelling a call it is waiting on ends that call's approval.
        for m in &messages {
            if m.method() == Some("notifications/cancelled")
                && let Some(rid) = m.params().and_then(|p| p.get("requestId"))
            {
                self.approvals
                    .cancel_request(&ep.name, &session.id, &rid.to_string())
                    .await;
            }
        }
        let filter = self.list_filter(caller, &messages.iter().collect::<Vec<_>>(), &version);
        // Write-ahead: every message is recorded before any is forwarded.
        let mut requests = Vec::new();
        for (m, d) in messages.iter().zip(&decisions) {
            match self.record_client(&scope, m, d.as_ref()).await {
                Ok(a) => {
                    if let (true, Some(id)) = (m.is_request(), m.id()) {
                        requests.push((id.clone(), a));
                    }
                }
                Err(e) => return error_outcome(e, single_id, Some(session.token.clone())),
            }
        }
        if let Some(d) = decisions
            .first()
            .and_then(Option::as_ref)
            .filter(|d| d.verdict == Verdict::NeedsApproval)
            && let [(_, recorded)] = requests[..]
        {
            let (ep2, session2, headers) = (ep.clone(), session.clone(), headers.clone());
            let msg = messages
                .into_iter()
                .next()
                .unwrap_or_else(|| unreachable!());
            return self
                .hold(
                    ep,
                    caller,
                    hold::Held {
                        scope,
                        session: Some(session.clone()),
                        msg,
                        decision: d,
                        recorded,
                        version: version.clone(),
                    },
                    move |relay, msg, scope| async move {
                        let requests = msg
                            .id()
                            .cloned()
                            .map(|i| (i, recorded))
                            .into_iter()
                            .collect();
                        relay
                            .session_send(
                                &ep2,
                                session2,
                                &headers,
                                version,
                                vec![msg],
                                requests,
                                scope,
                                filter,
                            )
                            .await
                    },
                )
                .await;
        }
        self.session_send(
            ep, session, headers, version, messages, requests, scope, filter,
        )
        .await
    }

    /// Forwards recorded messages of a session to its upstream and renders the answer.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn session_send(
        &self,
        ep: &Arc<Endpoint>,
        session: Arc<Session>,
        headers: &HeaderMap,
        version: String,
        messages: Vec<Message>,
        requests: Vec<(Value, Appended)>,
        scope: Scope,
        filter: Option<ListFilter>,
    ) -> Outcome {
        let single_id = single_request_id(&messages);
        let is_batch = messages.len() > 1;
        let watch = if !is_batch && messages[0].method() == Some("tools/list") {
            Watch::ToolsList
        } else {
            Watch::Nothing
        };
        match (&ep.upstream, &session.upstream) {
            (
                Upstream::Http(up),
                SessionUpstream::Http {
                    session: upstream_sid,
                },
            ) => {
                let out = Outbound {
                    session: upstream_sid.as_ref(),
                    version: Some(&version),
                    headers,
                };
                let body = if is_batch {
                    // The messages as they are (each its own bytes unless the gateway changed
                    // it), without building a document.
                    let parts: Vec<Bytes> = messages.iter().map(Message::to_bytes).collect();
                    let mut out = Vec::with_capacity(
                        parts.iter().map(Bytes::len).sum::<usize>() + parts.len() + 1,
                    );
                    out.push(b'[');
                    for (i, part) in parts.iter().enumerate() {
                        if i > 0 {
                            out.push(b',');
                        }
                        out.extend_from_slice(part);
                    }
                    out.push(b']');
                    Bytes::from(out)
                } else {
                    messages[0].to_bytes()
                };
                let sent = std::time::Instant::now();
                match up.post(out, body).await {
                    Ok((reply, _, recorded)) => {
                        let mut ctx = self.ctx(ep, requests, Some(session), scope).since(sent);
                        ctx.watch = watch;
                        ctx.filter = filter;
                        ctx.upstream_headers = std::sync::Mutex::new(Some(recorded));
                        render(reply, ctx).await
                    }
                    Err(UpstreamError::SessionGone) => {
                        self.upstream_ended(ep, &session).await;
                        let ctx = self.ctx(ep, requests, None, scope);
                        let error = RelayError::SessionNotFound(" (the upstream ended it)".into());
                        match single_id {
                            Some(id) => fail(&ctx, error, Some(id)).await,
                            None => error_outcome(error, None, None),
                        }
                    }
                    Err(e) => {
                        let ctx = self.ctx(ep, requests, Some(session), scope).since(sent);
                        fail(&ctx, RelayError::upstream(&ep.name, &ep.mask, e), single_id).await
                    }
                }
            }
            (_, SessionUpstream::Stdio(child)) => {
                if !child.is_alive() {
                    ep.sessions.remove(&session.id);
                    child.stop().await;
                    let _ = scope
                        .event(
                            EntryKind::SessionClosed,
                            json!({ "reason": "its upstream process exited" }),
                        )
                        .await;
                    let ctx = self.ctx(ep, requests, None, scope);
                    let error =
                        RelayError::SessionNotFound(" (its upstream process exited)".into());
                    return match single_id {
                        Some(id) => fail(&ctx, error, Some(id)).await,
                        None => error_outcome(error, None, None),
                    };
                }
                let mut streams = Vec::new();
                for m in messages {
                    let result = if m.is_request() {
                        child.request(m, false).await.map(Some)
                    } else {
                        child.send(m).await.map(|()| None)
                    };
                    match result {
                        Ok(Some(s)) => streams.push(s),
                        Ok(None) => {}
                        Err(e) => {
                            let ctx = self.ctx(ep, requests, Some(session), scope);
                            return fail(
                                &ctx,
                                RelayError::upstream(&ep.name, &ep.mask, e),
                                single_id,
                            )
                            .await;
                        }
                    }
                }
                if streams.is_empty() {
                    return Outcome::Accepted {
                        session: Some(session.token.clone()),
                    };
                }
                let events = futures_util::stream::select_all(streams);
                let mut ctx = self.ctx(ep, requests, Some(session), scope);
                ctx.watch = watch;
                ctx.filter = filter;
                render_first(Box::pin(events), ctx).await
            }
            (Upstream::Stdio(_), SessionUpstream::Http { .. }) => {
                unreachable!("sessions are created by their endpoint's own upstream kind")
            }
        }
    }

    /// A GET: the standalone server stream of a session.
    pub async fn get(&self, ep: &Arc<Endpoint>, caller: &Caller, headers: &HeaderMap) -> Outcome {
        let session = match self.named_session(ep, caller, headers, "GET", false).await {
            Ok(s) => s,
            Err(refused) => return refused,
        };
        let scope = self.scope(ep, Some(session.id.clone()), &caller.principal);
        let mut ctx = self.ctx(ep, Vec::new(), Some(session.clone()), scope.clone());
        ctx.long_lived = true;
        match (&ep.upstream, &session.upstream) {
            (
                Upstream::Http(up),
                SessionUpstream::Http {
                    session: upstream_sid,
                },
            ) => {
                let version = headers::get(headers, MCP_PROTOCOL_VERSION)
                    .and_then(Result::ok)
                    .map(str::to_string)
                    .unwrap_or_else(|| session.version());
                let out = Outbound {
                    session: upstream_sid.as_ref(),
                    version: Some(&version),
                    headers,
                };
                // The client resumes after an event id the gateway issued; the upstream gets
                // its own id for that event back.
                let last_event = match headers.get(headers::LAST_EVENT_ID) {
                    None => None,
                    Some(v) => match v
                        .to_str()
                        .ok()
                        .and_then(|id| session.events.upstream(id))
                        .and_then(|id| HeaderValue::from_str(&id).ok())
                    {
                        Some(upstream_id) => Some(upstream_id),
                        None => {
                            let error = RelayError::UnknownEventId(
                                String::from_utf8_lossy(v.as_bytes())
                                    .chars()
                                    .take(64)
                                    .collect(),
                            );
                            return self
                                .refuse(ep, &caller.principal, headers, error, None, None)
                                .await;
                        }
                    },
                };
                match up.get(out, last_event.as_ref()).await {
                    Ok((reply, recorded)) => {
                        ctx.upstream_headers = std::sync::Mutex::new(Some(recorded));
                        render(reply, ctx).await
                    }
                    Err(UpstreamError::SessionGone) => {
                        self.upstream_ended(ep, &session).await;
                        error_outcome(
                            RelayError::SessionNotFound(" (the upstream ended it)".into()),
                            None,
                            None,
                        )
                    }
                    Err(UpstreamError::Status(status, _)) => Outcome::Status(
                        StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY),
                    ),
                    Err(e) => {
                        error_outcome(RelayError::upstream(&ep.name, &ep.mask, e), None, None)
                    }
                }
            }
            (_, SessionUpstream::Stdio(child)) => match child.standalone() {
                Ok(events) => render(Reply::Stream(events), ctx).await,
                Err(e) => error_outcome(RelayError::upstream(&ep.name, &ep.mask, e), None, None),
            },
            (Upstream::Stdio(_), SessionUpstream::Http { .. }) => {
                unreachable!("sessions are created by their endpoint's own upstream kind")
            }
        }
    }
}
