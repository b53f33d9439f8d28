//! The gateway's own sessions for session-based clients (2025-03-26 … 2025-11-25).
//!
//! The gateway mints its own unguessable session ids and maps each to its upstream session: an
//! upstream `Mcp-Session-Id` (HTTP) or a process of its own (stdio). Clients never see the
//! upstream's id. Between replicas of a shared log, the id a client holds carries more
//! ([`shared`]); the log records the session's id alone.

pub mod shared;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use http::HeaderValue;

use crate::identity::Principal;
use crate::limits::Permit;
use crate::mcp::upstream::stdio::Child;

/// Where a session lives upstream.
pub enum SessionUpstream {
    Http { session: Option<HeaderValue> },
    Stdio(Arc<Child>),
}

pub struct Session {
    /// The session's id, as the log records it.
    pub id: Arc<str>,
    /// The `Mcp-Session-Id` its client holds: the id, or more between replicas
    /// ([`shared::Token`]).
    pub token: Arc<str>,
    /// The principal that opened it; only the same principal may use it.
    pub owner: Arc<Principal>,
    pub upstream: SessionUpstream,
    /// The protocol version the client asked for in `initialize`, then the one the upstream
    /// agreed to once its answer has been seen.
    version: Mutex<String>,
    /// Seconds since the table's epoch of the last use.
    last_used: AtomicU64,
    /// The SSE event ids its client sees, and the upstream's each stands for.
    pub events: super::event_ids::EventIds,
    /// Its places in its owner's and its endpoint's session counts, given back when the last
    /// reference to the session goes.
    _places: Permit,
}

impl Session {
    /// A session in no table (one another replica left, being closed here).
    pub fn detached(
        id: Arc<str>,
        token: Arc<str>,
        upstream: SessionUpstream,
        version: &str,
        owner: Arc<Principal>,
    ) -> Self {
        Self {
            id,
            token,
            owner,
            upstream,
            version: Mutex::new(version.to_string()),
            last_used: AtomicU64::new(0),
            events: super::event_ids::EventIds::default(),
            _places: Permit::default(),
        }
    }

    pub fn version(&self) -> String {
        self.version
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Whether replicas share it: another may carry it on, so one closes it only through the
    /// shared table.
    pub fn is_shared(&self) -> bool {
        matches!(
            shared::Token::parse(&self.token),
            Some(shared::Token::Sealed { .. })
        )
    }

    pub fn set_version(&self, v: &str) {
        *self
            .version
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = v.to_string();
    }
}

/// The session table of one endpoint.
pub struct Sessions {
    map: RwLock<HashMap<Arc<str>, Arc<Session>>>,
    epoch: Instant,
    /// When the sessions used since were last reported to the other replicas (seconds since
    /// the epoch).
    reported: AtomicU64,
}

impl Default for Sessions {
    fn default() -> Self {
        Self {
            map: RwLock::new(HashMap::new()),
            epoch: Instant::now(),
            reported: AtomicU64::new(0),
        }
    }
}

/// A new session id: 128 random bits from the OS-seeded CSPRNG, as 32 hex characters.
pub fn new_id() -> Arc<str> {
    hex::encode(rand::random::<[u8; 16]>()).into()
}

impl Sessions {
    fn now(&self) -> u64 {
        self.epoch.elapsed().as_secs()
    }

    /// Adds a session under `id` (from [`new_id`]), held by its client as `token`.
    pub fn insert(
        &self,
        id: Arc<str>,
        token: Arc<str>,
        upstream: SessionUpstream,
        version: &str,
        owner: Arc<Principal>,
        places: Permit,
    ) -> Arc<Session> {
        let session = Arc::new(Session {
            id,
            token,
            owner,
            upstream,
            version: Mutex::new(version.to_string()),
            last_used: AtomicU64::new(self.now()),
            events: super::event_ids::EventIds::default(),
            _places: places,
        });
        // Two requests taking on the same shared session at once: the first copy stays (with
        // its event ids); the second's places are given back.
        self.write()
            .entry(session.id.clone())
            .or_insert(session)
            .clone()
    }

    /// Looks up the session its client holds as `token`, of the principal bound as `binding`,
    /// and marks it used. Another principal's session is not found, exactly as if it did not
    /// exist; nor is a token other than the one the session's client was given.
    pub fn get(&self, token: &str, binding: &str) -> Option<Arc<Session>> {
        let id = shared::Token::parse(token)?.id();
        let session = self
            .map
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(id)
            .filter(|s| *s.owner.binding == *binding && *s.token == *token)
            .cloned()?;
        session.last_used.store(self.now(), Ordering::Relaxed);
        Some(session)
    }

    /// Takes out the session held as `token` of the principal bound as `binding`.
    pub fn remove_owned(&self, token: &str, binding: &str) -> Option<Arc<Session>> {
        let id = shared::Token::parse(token)?.id();
        let mut map = self.write();
        if map
            .get(id)
            .is_some_and(|s| *s.owner.binding == *binding && *s.token == *token)
        {
            map.remove(id)
        } else {
            None
        }
    }

    /// Puts back a session taken out as idle that stays open.
    pub fn restore(&self, session: Arc<Session>) {
        self.write().entry(session.id.clone()).or_insert(session);
    }

    pub fn remove(&self, id: &str) -> Option<Arc<Session>> {
        self.write().remove(id)
    }

    /// Removes and returns the sessions unused for `idle`. A session a request is using (its
    /// handler holds it: a call in flight, an initialize waiting for a slow process, an open
    /// stream) is not idle, however long that takes; its idle time starts again from now.
    pub fn take_idle(&self, idle: Duration) -> Vec<Arc<Session>> {
        let now = self.now();
        let mut map = self.write();
        let expired: Vec<Arc<str>> = map
            .iter()
            .filter(|(_, s)| {
                if Arc::strong_count(s) > 1 {
                    s.last_used.store(now, Ordering::Relaxed);
                    return false;
                }
                now.saturating_sub(s.last_used.load(Ordering::Relaxed)) >= idle.as_secs()
            })
            .map(|(k, _)| k.clone())
            .collect();
        expired.iter().filter_map(|k| map.remove(k)).collect()
    }

    /// The shared sessions used since their use was last reported, with how many seconds ago
    /// each was last used (the other replicas are told, so that none of them closes them as
    /// idle), and the time to pass to [`Sessions::reported`] once they have been.
    pub fn unreported(&self) -> (Vec<(Arc<str>, u64)>, u64) {
        let now = self.now();
        let since = self.reported.load(Ordering::Relaxed);
        let used = self
            .map
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .filter(|s| s.is_shared())
            .filter_map(|s| {
                let used = s.last_used.load(Ordering::Relaxed);
                (used >= since).then(|| (s.id.clone(), now.saturating_sub(used)))
            })
            .collect();
        (used, now)
    }

    /// The uses [`Sessions::unreported`] returned at `now` reached the other replicas.
    pub fn reported(&self, now: u64) {
        self.reported.fetch_max(now, Ordering::Relaxed);
    }

    pub fn drain(&self) -> Vec<Arc<Session>> {
        self.write().drain().map(|(_, s)| s).collect()
    }

    pub fn len(&self) -> usize {
        self.map
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<Arc<str>, Arc<Session>>> {
        self.map
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_opaque() {
        let a = new_id();
        let b = new_id();
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
    }

    #[test]
    fn idle_sessions_expire() {
        let s = Sessions::default();
        let owner = Arc::new(Principal::anonymous());
        let id = new_id();
        let kept = s.insert(
            id.clone(),
            id,
            SessionUpstream::Http { session: None },
            "2025-11-25",
            owner.clone(),
            Permit::default(),
        );
        assert!(s.get(&kept.id, &owner.binding).is_some());
        assert!(s.take_idle(Duration::from_secs(60)).is_empty());
        // While a request holds it, it is not idle.
        assert!(s.take_idle(Duration::ZERO).is_empty());
        let id = kept.id.clone();
        drop(kept);
        let gone = s.take_idle(Duration::ZERO);
        assert_eq!(gone.len(), 1);
        assert!(s.get(&id, &owner.binding).is_none());
    }

    #[test]
    fn a_session_is_found_only_by_the_token_its_client_holds() {
        let s = Sessions::default();
        let owner = Arc::new(Principal::static_token("alice"));
        let id = new_id();
        let token: Arc<str> = format!("{id}.c2VhbGVk").into();
        s.insert(
            id.clone(),
            token.clone(),
            SessionUpstream::Http { session: None },
            "2025-11-25",
            owner.clone(),
            Permit::default(),
        );
        assert!(s.get(&token, &owner.binding).is_some());
        assert!(s.get(&id, &owner.binding).is_none(), "the bare id");
        assert!(s.get(&format!("{id}.b3RoZXI"), &owner.binding).is_none());
        assert!(s.get(&format!("{id}@r0"), &owner.binding).is_none());
        assert!(s.remove_owned(&id, &owner.binding).is_none());
        assert!(s.get(&token, &owner.binding).unwrap().is_shared());
        assert!(s.remove_owned(&token, &owner.binding).is_some());
    }

    #[test]
    fn a_session_is_found_only_by_its_owner() {
        let s = Sessions::default();
        let alice = Arc::new(Principal::static_token("alice"));
        let bob = Principal::static_token("bob");
        let new = new_id();
        let id = s
            .insert(
                new.clone(),
                new,
                SessionUpstream::Http { session: None },
                "2025-11-25",
                alice.clone(),
                Permit::default(),
            )
            .id
            .clone();
        assert!(s.get(&id, &bob.binding).is_none());
        assert!(s.remove_owned(&id, &bob.binding).is_none());
        assert_eq!(s.len(), 1, "a stranger's DELETE leaves the session alone");
        let again = Principal::static_token("alice");
        assert!(s.get(&id, &again.binding).is_some());
        assert!(s.remove_owned(&id, &again.binding).is_some());
    }
}
