//! Finding the session a request names, here or carried on from another replica of a shared
//! log, and ending sessions once, whichever replica ends them (see [`session::shared`]).

use super::session::shared::{Carried, MAX_UPSTREAM_ID, Standing, Token, owner_digest};
use super::*;

/// How a session's end went.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Ending {
    /// This replica ended it upstream and recorded it.
    Ended,
    /// Another replica closed it first: nothing to do here.
    NotHere,
}

impl Relay {
    /// The session `token` names for `caller`: one held here, or a shared one another replica
    /// opened, taken on here. `take`: out of the table (DELETE).
    pub(super) async fn find_session(
        &self,
        ep: &Arc<Endpoint>,
        caller: &Caller,
        token: &str,
        take: bool,
    ) -> Result<Arc<Session>, RelayError> {
        let binding = &caller.principal.binding;
        let found = if take {
            ep.sessions.remove_owned(token, binding)
        } else {
            ep.sessions.get(token, binding)
        };
        if let Some(session) = found {
            return Ok(session);
        }
        match (Token::parse(token), &self.shared) {
            (Some(Token::Sealed { id, sealed }), Some(_)) => {
                let session = self.carry_on(ep, caller, id, sealed, token).await?;
                if take {
                    ep.sessions.remove(&session.id);
                }
                Ok(session)
            }
            (Some(Token::On { replica, .. }), Some(shared)) if replica != shared.replica() => {
                Err(RelayError::SessionNotFound(format!(
                    " here: it lives on replica {replica}, with its upstream process; a load balancer must send every request carrying this Mcp-Session-Id to the replica that opened it (docs/deploy.md, \"High availability\")"
                )))
            }
            _ => Err(RelayError::SessionNotFound(String::new())),
        }
    }

    /// Takes on here a shared session another replica opened (or this one, before a restart),
    /// when its token opens for this endpoint and caller and the replicas say it is open.
    async fn carry_on(
        &self,
        ep: &Arc<Endpoint>,
        caller: &Caller,
        id: &str,
        sealed: &str,
        token: &str,
    ) -> Result<Arc<Session>, RelayError> {
        let not_found = || RelayError::SessionNotFound(String::new());
        let (Some(shared), Upstream::Http(_)) = (&self.shared, &ep.upstream) else {
            return Err(not_found());
        };
        // Sealed for another endpoint or caller, altered, or not by this log's replicas: as
        // unknown as any other id.
        let Carried {
            upstream, version, ..
        } = shared
            .open(&ep.name, id, sealed)
            .filter(|c| c.owner == owner_digest(&caller.principal.binding))
            .ok_or_else(not_found)?;
        let upstream = match upstream.map(|u| HeaderValue::from_str(&u)) {
            None => None,
            Some(Ok(v)) => Some(v),
            Some(Err(_)) => return Err(not_found()),
        };
        let (endpoint, sid, idle) = (ep.name.to_string(), id.to_string(), self.session_idle);
        let standing = {
            let shared = shared.clone();
            tokio::task::spawn_blocking(move || shared.standing(&endpoint, &sid, idle))
                .await
                .map_err(|e| e.to_string())
                .and_then(|r| r)
                .map_err(|e| unavailable(ep, &e))?
        };
        match standing {
            Standing::Open => {}
            Standing::Closed(reason) => {
                return Err(RelayError::SessionNotFound(format!(
                    " (it was closed: {reason})"
                )));
            }
            Standing::Idle => {
                // Unused everywhere, and maybe held by no replica any more: closed here, once.
                let session = super::session::Session::detached(
                    id.into(),
                    token.into(),
                    SessionUpstream::Http { session: upstream },
                    &version,
                    caller.principal.clone(),
                );
                if let Err(e) = self.end_session(ep, &session, "idle", true).await {
                    tracing::error!(endpoint = %ep.name, session = %id, "couldn't record the session's end: {e}");
                }
                return Err(RelayError::SessionNotFound(
                    " (no replica used it within the idle timeout)".into(),
                ));
            }
            Standing::Unknown => return Err(not_found()),
        }
        let (places, _) = self.session_places(ep, caller)?;
        tracing::debug!(endpoint = %ep.name, session = %id, "carrying on a session another replica opened");
        Ok(ep.sessions.insert(
            id.into(),
            token.into(),
            SessionUpstream::Http { session: upstream },
            &version,
            caller.principal.clone(),
            places,
        ))
    }

    /// The token the client of new session `sid` is given: its id, or between replicas the
    /// id with what another replica needs sealed to it, once the session's row is written.
    pub(super) async fn share_session(
        &self,
        ep: &Arc<Endpoint>,
        sid: &Arc<str>,
        upstream: Option<&HeaderValue>,
        version: &str,
        caller: &Caller,
    ) -> Result<Arc<str>, RelayError> {
        let Some(shared) = &self.shared else {
            return Ok(sid.clone());
        };
        let upstream = match upstream.map(HeaderValue::to_str) {
            None => None,
            Some(Ok(v)) if v.len() <= MAX_UPSTREAM_ID => Some(v.to_string()),
            Some(Ok(_)) => {
                let e = UpstreamError::Protocol(format!(
                    "its Mcp-Session-Id is longer than {MAX_UPSTREAM_ID} bytes, more than replicas carry"
                ));
                return Err(RelayError::upstream(&ep.name, &ep.mask, e));
            }
            Some(Err(_)) => {
                let e = UpstreamError::Protocol(
                    "its Mcp-Session-Id is not visible ASCII, as the protocol requires".into(),
                );
                return Err(RelayError::upstream(&ep.name, &ep.mask, e));
            }
        };
        let carried = Carried {
            owner: owner_digest(&caller.principal.binding),
            upstream,
            version: version.to_string(),
        };
        let token = shared.seal(&ep.name, sid, &carried);
        let (shared, endpoint, id) = (shared.clone(), ep.name.to_string(), sid.to_string());
        tokio::task::spawn_blocking(move || shared.opened(&endpoint, &id))
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r)
            .map_err(|e| unavailable(ep, &e))?;
        Ok(token.into())
    }

    /// A shared session whose opening could not be recorded: closed in the shared table, so
    /// no replica takes it on.
    pub(super) async fn unshare_session(&self, ep: &Arc<Endpoint>, sid: &str) {
        if let Some(shared) = &self.shared {
            let (shared, endpoint, id) = (shared.clone(), ep.name.to_string(), sid.to_string());
            let closed = tokio::task::spawn_blocking(move || {
                shared.close(&endpoint, &id, "its opening could not be recorded")
            })
            .await;
            if !matches!(closed, Ok(Ok(_))) {
                tracing::error!(endpoint = %ep.name, session = %sid, "a session whose opening was not recorded stays open in the shared session table until it is idle");
            }
        }
    }

    /// The refusal of a request whose session was not found (or could not be taken on).
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn session_refused(
        &self,
        ep: &Arc<Endpoint>,
        caller: &Caller,
        headers: &HeaderMap,
        error: RelayError,
        incoming: Option<&Message>,
        raw: Option<Bytes>,
        http_method: &'static str,
    ) -> Outcome {
        if let RelayError::Limit(_) = error {
            let at = At {
                endpoint: &ep.name,
                address: &caller.address,
                http_method,
                session: session_header(headers),
            };
            let method = incoming.and_then(Message::method);
            let id = incoming.and_then(Message::id).cloned();
            return self.limited(&at, &caller.principal, method, error, id);
        }
        self.refuse(ep, &caller.principal, headers, error, incoming, raw)
            .await
    }

    /// The session a GET or DELETE names (taken out of the table for DELETE), or the refusal.
    pub(super) async fn named_session(
        &self,
        ep: &Arc<Endpoint>,
        caller: &Caller,
        headers: &HeaderMap,
        method: &'static str,
        take: bool,
    ) -> Result<Arc<Session>, Outcome> {
        let Some(sid) = headers.get(headers::MCP_SESSION_ID) else {
            return Err(self
                .refuse(
                    ep,
                    &caller.principal,
                    headers,
                    RelayError::MethodNotAllowed(method),
                    None,
                    None,
                )
                .await);
        };
        let found = match sid.to_str() {
            Ok(sid) => self.find_session(ep, caller, sid, take).await,
            Err(_) => Err(RelayError::SessionNotFound(String::new())),
        };
        match found {
            Ok(session) => Ok(session),
            Err(e) => Err(self
                .session_refused(ep, caller, headers, e, None, None, method)
                .await),
        }
    }

    /// A DELETE: ends a session here and upstream.
    pub async fn delete(
        &self,
        ep: &Arc<Endpoint>,
        caller: &Caller,
        headers: &HeaderMap,
    ) -> Outcome {
        let session = match self
            .named_session(ep, caller, headers, "DELETE", true)
            .await
        {
            Ok(s) => s,
            Err(refused) => return refused,
        };
        match self
            .end_session(ep, &session, "deleted by the client", true)
            .await
        {
            Ok(Ending::Ended) => Outcome::Status(StatusCode::OK),
            Ok(Ending::NotHere) => error_outcome(
                RelayError::SessionNotFound(" (another replica closed it)".into()),
                None,
                None,
            ),
            Err(e) => error_outcome(e, None, None),
        }
    }

    /// Ends a session the gateway closes itself (idle, shutdown), recording why.
    pub(super) async fn close(&self, ep: &Arc<Endpoint>, session: &Session, reason: &str) {
        if let Err(e) = self.end_session(ep, session, reason, true).await {
            tracing::error!(endpoint = %ep.name, session = %session.id, "couldn't record the session's end: {e}");
        }
    }

    /// The upstream said a session no longer exists: it is gone here, and recorded once.
    pub(super) async fn upstream_ended(&self, ep: &Arc<Endpoint>, session: &Session) {
        ep.sessions.remove(&session.id);
        if let Err(e) = self
            .end_session(ep, session, "the upstream ended it", false)
            .await
        {
            tracing::error!(endpoint = %ep.name, session = %session.id, "couldn't record the session's end: {e}");
        }
    }

    /// Ends `session` (already out of the table) upstream and records `session_closed`, once
    /// across replicas: a shared session is ended by the replica that closes its row.
    /// `upstream`: whether the upstream is told (not when it ended the session itself).
    pub(super) async fn end_session(
        &self,
        ep: &Arc<Endpoint>,
        session: &Session,
        reason: &str,
        upstream: bool,
    ) -> Result<Ending, RelayError> {
        if let (Some(shared), true) = (&self.shared, session.is_shared()) {
            let (shared, endpoint, id, why) = (
                shared.clone(),
                ep.name.to_string(),
                session.id.to_string(),
                reason.to_string(),
            );
            let claimed = tokio::task::spawn_blocking(move || shared.close(&endpoint, &id, &why))
                .await
                .map_err(|e| e.to_string())
                .and_then(|r| r);
            match claimed {
                Ok(true) => {}
                Ok(false) => return Ok(Ending::NotHere),
                // A client's DELETE, the upstream's end or the gateway's stop takes effect all
                // the same.
                Err(e) => {
                    tracing::error!(endpoint = %ep.name, session = %session.id, "the shared session table could not record the session's end ({e}); ending it anyway");
                }
            }
        }
        self.ended(ep, session, reason, upstream).await?;
        Ok(Ending::Ended)
    }

    /// Ends `session` upstream (`upstream`) and records why.
    pub(super) async fn ended(
        &self,
        ep: &Arc<Endpoint>,
        session: &Session,
        reason: &str,
        upstream: bool,
    ) -> Result<(), RelayError> {
        if upstream {
            ep.close_session(session).await;
        }
        let scope = self.scope(ep, Some(session.id.clone()), &session.owner);
        scope
            .event(EntryKind::SessionClosed, json!({ "reason": reason }))
            .await?;
        Ok(())
    }

    /// Closes the sessions idle here: a shared one only when no replica used it within the
    /// timeout (one it used last stays until then; one another replica uses goes from here).
    pub(super) async fn close_idle(&self, ep: &Arc<Endpoint>, idle: Duration) {
        let (shared, own): (Vec<_>, Vec<_>) = ep
            .sessions
            .take_idle(idle)
            .into_iter()
            .partition(|s| s.is_shared() && self.shared.is_some());
        let mut closing = own;
        if let (Some(table), false) = (&self.shared, shared.is_empty()) {
            let (table, endpoint) = (table.clone(), ep.name.to_string());
            let ids: Vec<String> = shared.iter().map(|s| s.id.to_string()).collect();
            let grace = self.reap_interval() * 2 + Duration::from_secs(2);
            let decided = tokio::task::spawn_blocking(move || {
                let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
                table.close_idle(&endpoint, &ids, idle, grace)
            })
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r);
            match decided {
                Ok(d) => {
                    for s in shared {
                        if d.closed.iter().any(|c| **c == *s.id) {
                            closing.push(s);
                        } else if d.kept.iter().any(|k| **k == *s.id) {
                            ep.sessions.restore(s);
                        }
                    }
                }
                // Unsure whether another replica uses them: kept, and asked again next time.
                Err(e) => {
                    tracing::warn!(endpoint = %ep.name, "idle shared sessions kept: the shared session table could not be read: {e}");
                    for s in shared {
                        ep.sessions.restore(s);
                    }
                }
            }
        }
        for session in closing {
            tracing::info!(endpoint = %ep.name, session = %session.id, "closing idle session");
            if let Err(e) = self.ended(ep, &session, "idle", true).await {
                tracing::error!(endpoint = %ep.name, session = %session.id, "couldn't record the session's end: {e}");
            }
        }
    }
}

/// The shared session table could not be read: the detail goes to the operator's log, the
/// client is told to retry.
fn unavailable(ep: &Endpoint, detail: &str) -> RelayError {
    tracing::error!(endpoint = %ep.name, "the shared session table: {detail}");
    RelayError::SessionsUnavailable("the log database did not answer".into())
}
