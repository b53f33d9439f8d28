//! The stateless generation (2026-07-28): every POST stands alone, carries its version and
//! the client's capabilities in `_meta`, and mirrors its method and target in headers.

use super::*;

impl Relay {
    pub(super) async fn stateless_post(
        self: &Arc<Self>,
        ep: &Arc<Endpoint>,
        caller: &Caller,
        headers: &HeaderMap,
        version_header: Option<String>,
        msg: Message,
    ) -> Outcome {
        let id = msg.id().cloned();
        if let Err(e) = headers::check_mirrored(headers, &msg, &ep.param_headers(&msg)) {
            return self
                .refuse(ep, &caller.principal, headers, e.into(), Some(&msg), None)
                .await;
        }
        if msg.is_request()
            && let Err(e) = check_request_meta(&msg)
        {
            let e = match e {
                RelayError::UnsupportedVersion { requested, .. } => {
                    self.unsupported(ep, &requested).await
                }
                e => e,
            };
            return self
                .refuse(ep, &caller.principal, headers, e, Some(&msg), None)
                .await;
        }
        let version = version_header
            .clone()
            .or_else(|| msg.meta_protocol_version().map(str::to_string))
            .unwrap_or_default();
        let decision = self.authorize(ep, caller, &msg, &version);
        if let Some(d) = decision.as_ref().filter(|d| d.verdict == Verdict::Deny) {
            return self.deny(ep, caller, &msg, d, None, "").await;
        }
        // A process of the pool may speak older versions too and answer what 2026-07-28 removed
        // as if it were a session's: answer those as a 2026-07-28 server does. (An HTTP
        // upstream answers them itself.)
        if let (Upstream::Stdio(_), Some(method)) = (&ep.upstream, msg.method())
            && msg.is_request()
            && version::REMOVED_IN_STATELESS.contains(&method)
        {
            let e = RelayError::RemovedMethod(method.to_string());
            return self
                .refuse(ep, &caller.principal, headers, e, Some(&msg), None)
                .await;
        }
        // A retry of a call parked for its client's input: its state is checked before it is
        // recorded as forwarded.
        if let Err(e) = self.check_retry(ep, &caller.principal, &msg) {
            return self
                .refuse(ep, &caller.principal, headers, e, Some(&msg), None)
                .await;
        }
        let filter = self.list_filter(caller, &[&msg], &version);
        let scope = self.scope(ep, None, &caller.principal);
        let recorded = match self.record_client(&scope, &msg, decision.as_ref()).await {
            Ok(a) => a,
            Err(e) => return error_outcome(e, id, None),
        };
        if let Some(d) = decision.filter(|d| d.verdict == Verdict::NeedsApproval) {
            // A granted list is filtered like any other.
            let (ep2, headers, principal) = (ep.clone(), headers.clone(), caller.principal.clone());
            return self
                .hold(
                    ep,
                    caller,
                    hold::Held {
                        scope,
                        session: None,
                        msg,
                        decision: &d,
                        recorded,
                        version,
                    },
                    move |relay, msg, scope| async move {
                        relay
                            .stateless_send(
                                &ep2,
                                &principal,
                                &headers,
                                version_header,
                                msg,
                                recorded,
                                scope,
                                filter,
                            )
                            .await
                    },
                )
                .await;
        }
        self.stateless_send(
            ep,
            &caller.principal,
            headers,
            version_header,
            msg,
            recorded,
            scope,
            filter,
        )
        .await
    }

    /// Forwards a recorded stateless message to the upstream and renders the answer.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn stateless_send(
        &self,
        ep: &Arc<Endpoint>,
        principal: &Principal,
        headers: &HeaderMap,
        version_header: Option<String>,
        msg: Message,
        recorded: Appended,
        scope: Scope,
        filter: Option<ListFilter>,
    ) -> Outcome {
        let id = msg.id().cloned();
        let requests: Vec<(Value, Appended)> = id
            .clone()
            .filter(|_| msg.is_request())
            .map(|i| (i, recorded))
            .into_iter()
            .collect();
        let watch = match msg.method() {
            Some("tools/list") => Watch::ToolsList,
            Some("server/discover") => Watch::Discover,
            _ => Watch::Nothing,
        };
        let long_lived = msg.method() == Some("subscriptions/listen");
        match &ep.upstream {
            Upstream::Http(up) => {
                let out = Outbound {
                    session: None,
                    version: version_header.as_deref(),
                    headers,
                };
                let sent = std::time::Instant::now();
                match up.post(out, msg.to_bytes()).await {
                    Ok((reply, _, recorded)) => {
                        let mut ctx = self.ctx(ep, requests, None, scope).since(sent);
                        ctx.watch = watch;
                        ctx.long_lived = long_lived;
                        ctx.filter = filter;
                        ctx.upstream_headers = std::sync::Mutex::new(Some(recorded));
                        render(reply, ctx).await
                    }
                    Err(e) => {
                        let ctx = self.ctx(ep, requests, None, scope).since(sent);
                        fail(&ctx, RelayError::upstream(&ep.name, &ep.mask, e), id).await
                    }
                }
            }
            Upstream::Stdio(up) => {
                if !msg.is_request() {
                    // Stateless HTTP clients cancel by closing the stream; there is nothing to
                    // pass on for a notification without a session.
                    return Outcome::Accepted { session: None };
                }
                if mrtr::is_retry(&msg) {
                    return self.resume(ep, principal, msg, recorded, scope).await;
                }
                let events = match up.pooled() {
                    // A call whose process may ask its client for input: such requests come
                    // on its stream, to be translated (multi round-trip requests).
                    Ok(child) if mrtr::takes_input(&msg) => {
                        let asking = mrtr::Asking {
                            ep: ep.clone(),
                            child: child.clone(),
                            scope: scope.clone(),
                            who: mrtr::who(&principal.binding),
                            req: mrtr::request_digest(msg.method().unwrap_or(""), msg.params()),
                            client_id: id.clone().unwrap_or(Value::Null),
                            original_id: id.clone().unwrap_or(Value::Null),
                            capabilities: mrtr::capabilities(&msg),
                            progress: mrtr::Progress::AsIs,
                        };
                        child
                            .request_asking(msg)
                            .await
                            .map(|events| mrtr::intercept(events, asking))
                    }
                    Ok(child) => child.request(msg, true).await,
                    Err(e) => Err(e),
                };
                let mut ctx = self.ctx(ep, requests, None, scope);
                match events {
                    Ok(events) => {
                        ctx.watch = watch;
                        ctx.long_lived = long_lived;
                        ctx.stateless_status = true;
                        ctx.filter = filter;
                        render_first(events, ctx).await
                    }
                    Err(e) => fail(&ctx, RelayError::upstream(&ep.name, &ep.mask, e), id).await,
                }
            }
        }
    }
}

/// A stateless request must say, in `_meta`, which version it speaks and what the client can
/// do; the gateway relies on both and refuses a request that omits them.
pub(super) fn check_request_meta(msg: &Message) -> Result<(), RelayError> {
    let Some(meta) = msg.meta_head() else {
        return Err(RelayError::InvalidMeta(
            "a 2026-07-28 request must carry params._meta with the protocol version and client capabilities",
        ));
    };
    let Some(v) = meta.protocol_version.as_deref() else {
        return Err(RelayError::InvalidMeta(
            "params._meta is missing io.modelcontextprotocol/protocolVersion",
        ));
    };
    if !meta.client_capabilities_is_object {
        return Err(RelayError::InvalidMeta(
            "params._meta is missing io.modelcontextprotocol/clientCapabilities",
        ));
    }
    if version::generation(v) != Some(Generation::Stateless) {
        return Err(RelayError::UnsupportedVersion {
            requested: v.to_string(),
            supported: Vec::new(),
        });
    }
    Ok(())
}
