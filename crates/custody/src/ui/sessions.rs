//! Who is signed in to the web page: a random cookie names a session kept in memory, which
//! holds the bearer token it was made with. Every page authenticates that token again (through
//! the identity cache), so a session ends when its token expires or is no longer accepted, and
//! at the latest after `[ui] session_ttl`. Sessions are bounded in number.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

/// The session cookie's name.
pub const COOKIE: &str = "custody_ui";
/// The most sessions kept; the one closest to expiry goes first when full.
const MAX_SESSIONS: usize = 10_000;
/// The most sessions one principal keeps; its oldest goes first.
const MAX_PER_OWNER: usize = 16;
/// The most sign-ins with the OIDC provider under way at once.
const MAX_PENDING: usize = 1_000;
/// How long a sign-in with the OIDC provider may take.
const PENDING_TTL: Duration = Duration::from_secs(600);

/// A signed-in browser.
#[derive(Clone)]
pub struct Session {
    /// The bearer token the session acts with. Never shown, logged or recorded.
    pub token: Arc<str>,
    /// The value every form must carry back (`csrf`), so another site cannot post for it.
    pub csrf: String,
    pub expires: Instant,
    /// Who signed in (the principal's binding): bounds the sessions one principal holds.
    owner: Arc<str>,
}

/// A sign-in with the OIDC provider under way: what the callback must match.
#[derive(Clone)]
pub struct Pending {
    pub code_verifier: String,
    pub nonce: String,
    /// Where to go once signed in (a path under `/ui/`).
    pub next: String,
    /// The value of the browser's binding cookie, so a callback from another browser fails.
    pub browser: String,
    created: Instant,
}

/// The sessions and the sign-ins under way.
pub struct Sessions {
    ttl: Duration,
    live: Mutex<HashMap<[u8; 32], Session>>,
    pending: Mutex<HashMap<String, Pending>>,
}

/// A random value for a cookie, a state or a verifier: 32 bytes, base64url.
pub fn random() -> String {
    URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
}

fn key(cookie: &str) -> [u8; 32] {
    Sha256::digest(cookie.as_bytes()).into()
}

impl Sessions {
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            live: Mutex::new(HashMap::new()),
            pending: Mutex::new(HashMap::new()),
        }
    }

    /// How long a session lasts at most.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Starts a session for `owner` acting with `token`; returns the cookie value and the
    /// session. One principal keeps at most 16 sessions, so no token can crowd out others'.
    pub fn create(&self, token: &str, owner: &str) -> (String, Session) {
        let cookie = random();
        let now = Instant::now();
        let session = Session {
            token: Arc::from(token),
            csrf: random(),
            expires: now + self.ttl,
            owner: Arc::from(owner),
        };
        let mut live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
        if live.len() >= MAX_SESSIONS {
            live.retain(|_, s| s.expires > now);
        }
        let mine: Vec<([u8; 32], Instant)> = live
            .iter()
            .filter(|(_, s)| *s.owner == *owner)
            .map(|(k, s)| (*k, s.expires))
            .collect();
        if mine.len() >= MAX_PER_OWNER
            && let Some((oldest, _)) = mine.iter().min_by_key(|(_, e)| *e)
        {
            live.remove(oldest);
        }
        if live.len() >= MAX_SESSIONS
            && let Some(oldest) = live.iter().min_by_key(|(_, s)| s.expires).map(|(k, _)| *k)
        {
            live.remove(&oldest);
        }
        live.insert(key(&cookie), session.clone());
        (cookie, session)
    }

    /// The live session a cookie names.
    pub fn get(&self, cookie: &str) -> Option<Session> {
        let mut live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
        let k = key(cookie);
        match live.get(&k) {
            Some(s) if s.expires > Instant::now() => Some(s.clone()),
            Some(_) => {
                live.remove(&k);
                None
            }
            None => None,
        }
    }

    /// Ends the session a cookie names.
    pub fn end(&self, cookie: &str) {
        self.live
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&key(cookie));
    }

    /// Remembers a sign-in under way; returns its `state`.
    pub fn begin(
        &self,
        code_verifier: String,
        nonce: String,
        next: String,
        browser: String,
    ) -> String {
        let now = Instant::now();
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        pending.retain(|_, p| now.duration_since(p.created) < PENDING_TTL);
        // Full (someone starting sign-ins they never finish): the oldest goes, so a flood
        // costs a person at most a second try, never a refusal.
        if pending.len() >= MAX_PENDING
            && let Some(oldest) = pending
                .iter()
                .min_by_key(|(_, p)| p.created)
                .map(|(k, _)| k.clone())
        {
            pending.remove(&oldest);
        }
        let state = random();
        pending.insert(
            state.clone(),
            Pending {
                code_verifier,
                nonce,
                next,
                browser,
                created: now,
            },
        );
        state
    }

    /// Takes the sign-in `state` names (once: a second callback with it finds nothing).
    pub fn finish(&self, state: &str) -> Option<Pending> {
        let p = self
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(state)?;
        (p.created.elapsed() < PENDING_TTL).then_some(p)
    }

    /// How many sessions are live (for tests and metrics).
    pub fn len(&self) -> usize {
        self.live
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_is_found_by_its_cookie_only_and_ends() {
        let s = Sessions::new(Duration::from_secs(60));
        let (cookie, session) = s.create("tok", "p");
        assert_eq!(&*s.get(&cookie).expect("live").token, "tok");
        assert_ne!(session.csrf, cookie);
        assert!(s.get("not-a-cookie").is_none());
        s.end(&cookie);
        assert!(s.get(&cookie).is_none());
    }

    #[test]
    fn an_expired_session_is_gone() {
        let s = Sessions::new(Duration::from_millis(1));
        let (cookie, _) = s.create("tok", "p");
        std::thread::sleep(Duration::from_millis(5));
        assert!(s.get(&cookie).is_none());
        assert!(s.is_empty());
    }

    #[test]
    fn one_principal_cannot_crowd_out_the_others() {
        let s = Sessions::new(Duration::from_secs(60));
        let (theirs, _) = s.create("approver", "approver");
        let mine: Vec<String> = (0..100).map(|_| s.create("job", "job").0).collect();
        assert!(s.get(&theirs).is_some());
        assert_eq!(s.len(), 1 + MAX_PER_OWNER);
        assert!(s.get(&mine[0]).is_none(), "the job's oldest went");
        assert!(s.get(&mine[99]).is_some());
    }

    #[test]
    fn a_flood_of_sign_ins_evicts_the_oldest_never_refuses() {
        let s = Sessions::new(Duration::from_secs(60));
        let first = s.begin("v".into(), "n".into(), "/ui/".into(), "b".into());
        for _ in 0..MAX_PENDING {
            s.begin("x".into(), "x".into(), "/ui/".into(), "x".into());
        }
        let last = s.begin("v2".into(), "n".into(), "/ui/".into(), "b".into());
        assert!(s.finish(&first).is_none());
        assert_eq!(
            s.finish(&last)
                .expect("a new sign-in always starts")
                .code_verifier,
            "v2"
        );
    }

    #[test]
    fn a_sign_in_state_is_taken_once() {
        let s = Sessions::new(Duration::from_secs(60));
        let state = s.begin("v".into(), "n".into(), "/ui/".into(), "b".into());
        assert_eq!(s.finish(&state).expect("pending").code_verifier, "v");
        assert!(s.finish(&state).is_none(), "a state is single use");
    }
}
