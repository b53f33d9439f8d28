//! Session-based sessions of HTTP upstreams shared by the replicas of a shared log, so that a
//! load balancer may send a session's requests to any replica.
//!
//! What a replica needs to carry a session on travels with the client, sealed: the
//! `Mcp-Session-Id` the gateway gives is `<id>.<sealed>`, where `<sealed>` is AES-256-GCM under
//! a key every replica derives from the log's signing key, binding the endpoint and the id, and
//! holding a digest of the owner's binding, the upstream's own session id and the protocol
//! version asked for. The upstream's id stays unreadable to the client; a token cannot be moved to another
//! endpoint or another caller, nor forged without the key (which the database does not hold).
//!
//! Whether a session is still open is shared state, in the `sessions` table: the replica that
//! opens a session adds its row; a replica seeing a token first checks that row (closed, or
//! idle longer than the timeout everywhere: not found); each replica writes when it last used
//! its sessions and drops the ones another replica closed (every reap); a DELETE, the
//! upstream's end or the idle timeout closes a session once, by whichever replica claims the
//! row, and only that replica ends it upstream and records `session_closed`.
//!
//! Stdio sessions live with their process, on one replica: their id names it (`<id>@<replica>`),
//! and another replica refuses it saying where it lives.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::store::postgres::Link;

/// The longest sealed part read or given (a real one is under 300 characters: the owner is a
/// digest, and an upstream's session id longer than [`MAX_UPSTREAM_ID`] is refused).
const MAX_SEALED: usize = 2048;
/// The longest upstream session id a shared session carries.
pub const MAX_UPSTREAM_ID: usize = 1024;
/// Sessions known closed or unknown, remembered so that a client replaying such tokens costs
/// no query (at most this many, each for [`REMEMBER`]).
const REMEMBERED: usize = 4096;
const REMEMBER: Duration = Duration::from_secs(60);
/// What a client may be told of why a session closed: the reasons replicas write. Anything
/// else in the table (written by someone else) is told as "closed".
const REASONS: [&str; 5] = [
    "deleted by the client",
    "the upstream ended it",
    "idle",
    "the gateway stopped",
    "its opening could not be recorded",
];
/// How long a closed session's row is kept (long past any replica's next look).
const KEEP_CLOSED_SECS: f64 = 3600.0;

/// What a client's `Mcp-Session-Id` says, by its shape.
#[derive(Debug, PartialEq, Eq)]
pub enum Token<'a> {
    /// `<id>`: a session of this gateway alone.
    Local(&'a str),
    /// `<id>.<sealed>`: an HTTP-upstream session any replica may carry on.
    Sealed { id: &'a str, sealed: &'a str },
    /// `<id>@<replica>`: a stdio session living on that replica.
    On { id: &'a str, replica: &'a str },
}

impl<'a> Token<'a> {
    /// Reads a token; `None` for anything the gateway never issues.
    pub fn parse(token: &'a str) -> Option<Self> {
        let id = token.get(..32)?;
        if !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let rest = &token[32..];
        if rest.is_empty() {
            Some(Self::Local(id))
        } else if let Some(sealed) = rest.strip_prefix('.') {
            (!sealed.is_empty() && sealed.len() <= MAX_SEALED)
                .then_some(Self::Sealed { id, sealed })
        } else {
            let replica = rest.strip_prefix('@')?;
            let named = !replica.is_empty()
                && replica.len() <= 63
                && replica
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
            named.then_some(Self::On { id, replica })
        }
    }

    /// The session's id, as the log records it.
    pub fn id(&self) -> &'a str {
        match self {
            Self::Local(id) | Self::Sealed { id, .. } | Self::On { id, .. } => id,
        }
    }
}

/// What a sealed token carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Carried {
    /// A digest of the owner's binding ([`owner_digest`]): only the same principal may use
    /// the session.
    #[serde(rename = "o")]
    pub owner: String,
    /// The upstream's `Mcp-Session-Id`, if it gave one.
    #[serde(rename = "u")]
    pub upstream: Option<String>,
    /// The protocol version the client asked for in `initialize`.
    #[serde(rename = "v")]
    pub version: String,
}

/// Whether a session is open, as the replicas together know it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Standing {
    Open,
    /// Closed, with the reason recorded.
    Closed(String),
    /// Unused everywhere for longer than the idle timeout.
    Idle,
    /// No replica opened it (or its row was removed long after it closed).
    Unknown,
}

/// What became of sessions idle on this replica.
#[derive(Debug, Default)]
pub struct Idle {
    /// Closed by this replica: it ends them upstream and records them.
    pub closed: Vec<String>,
    /// Still open, and last used here: this replica keeps them.
    pub kept: Vec<String>,
}

/// The digest of a principal's binding a token carries (the binding itself may be long: it
/// holds the claims a session is bound to).
pub fn owner_digest(binding: &str) -> String {
    use sha2::Digest as _;
    URL_SAFE_NO_PAD.encode(Sha256::digest(binding.as_bytes()))
}

/// This replica's side of the shared sessions.
pub struct Shared {
    key: LessSafeKey,
    replica: String,
    link: Link,
    /// Sessions found closed or unknown lately, with when (bounded: [`REMEMBERED`]).
    gone: std::sync::Mutex<std::collections::HashMap<String, (std::time::Instant, Standing)>>,
}

impl Shared {
    /// `secret`: the replicas' shared secret (derived from the log's signing key); the sealing
    /// key is derived from it for this purpose alone.
    pub fn new(url: &str, replica: &str, secret: &[u8; 32]) -> Self {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret)
            .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        mac.update(b"custody: session tokens shared by replicas v1");
        let derived = mac.finalize().into_bytes();
        let key = UnboundKey::new(&AES_256_GCM, &derived)
            .unwrap_or_else(|_| unreachable!("a 32-byte key for AES-256"));
        Self {
            key: LessSafeKey::new(key),
            replica: replica.to_string(),
            link: Link::new(url, format!("custody {replica} sessions")),
            gone: std::sync::Mutex::new(std::collections::HashMap::new()),
        }
    }

    /// What was remembered of session `key` (endpoint and id), if lately.
    fn remembered(&self, key: &str) -> Option<Standing> {
        let gone = self
            .gone
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        gone.get(key)
            .filter(|(at, _)| at.elapsed() < REMEMBER)
            .map(|(_, s)| s.clone())
    }

    fn remember(&self, key: String, standing: &Standing) {
        let mut gone = self
            .gone
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if gone.len() >= REMEMBERED {
            gone.retain(|_, (at, _)| at.elapsed() < REMEMBER);
            if gone.len() >= REMEMBERED {
                gone.clear();
            }
        }
        gone.insert(key, (std::time::Instant::now(), standing.clone()));
    }

    pub fn replica(&self) -> &str {
        &self.replica
    }

    fn aad(endpoint: &str, id: &str) -> String {
        format!("custody session v1\n{endpoint}\n{id}")
    }

    /// The token a client is given for session `id` of `endpoint`.
    pub fn seal(&self, endpoint: &str, id: &str, carried: &Carried) -> String {
        let mut buf = serde_json::to_vec(carried).unwrap_or_default();
        let nonce: [u8; NONCE_LEN] = rand::random();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(Self::aad(endpoint, id).as_bytes()),
                &mut buf,
            )
            .unwrap_or_else(|_| unreachable!("a few hundred bytes fit AES-GCM"));
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buf);
        format!("{id}.{}", URL_SAFE_NO_PAD.encode(out))
    }

    /// What a sealed token of `endpoint` carries; `None` when it was not sealed for this
    /// endpoint and id by a replica of this log, or was altered.
    pub fn open(&self, endpoint: &str, id: &str, sealed: &str) -> Option<Carried> {
        let raw = URL_SAFE_NO_PAD.decode(sealed).ok()?;
        if raw.len() <= NONCE_LEN {
            return None;
        }
        let (nonce, ct) = raw.split_at(NONCE_LEN);
        let mut ct = ct.to_vec();
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let plain = self
            .key
            .open_in_place(
                nonce,
                Aad::from(Self::aad(endpoint, id).as_bytes()),
                &mut ct,
            )
            .ok()?;
        serde_json::from_slice(plain).ok()
    }

    /// Adds the row of a session this replica opened. Blocking.
    ///
    /// # Errors
    /// The database failed.
    pub fn opened(&self, endpoint: &str, id: &str) -> Result<(), String> {
        self.link.with(|c| {
            c.execute(
                "INSERT INTO sessions (endpoint, id, opened_by, used_by) VALUES ($1, $2, $3, $3) \
                 ON CONFLICT DO NOTHING",
                &[&endpoint, &id, &self.replica],
            )
            .map(drop)
        })
    }

    /// Whether session `id` is open and was used by some replica within `idle`; if it is,
    /// this replica's use (it takes the session on now) is written at once. Blocking.
    ///
    /// # Errors
    /// The database failed.
    pub fn standing(&self, endpoint: &str, id: &str, idle: Duration) -> Result<Standing, String> {
        let key = format!("{endpoint}\n{id}");
        if let Some(known) = self.remembered(&key) {
            return Ok(known);
        }
        let row = self.link.with(|c| {
            c.query_opt(
                "WITH used AS (UPDATE sessions SET last_used = now(), used_by = $4 \
                     WHERE endpoint = $1 AND id = $2 AND closed IS NULL \
                     AND last_used >= now() - make_interval(secs => $3) RETURNING 1) \
                 SELECT reason, closed IS NOT NULL, last_used < now() - make_interval(secs => $3), \
                     EXISTS (SELECT 1 FROM used) \
                 FROM sessions WHERE endpoint = $1 AND id = $2",
                &[&endpoint, &id, &idle.as_secs_f64(), &self.replica],
            )
        })?;
        let standing = match row {
            None => Standing::Unknown,
            // Taken on only when this statement wrote the use: a row closed by another
            // replica while it ran is not (the select reads the statement's snapshot).
            Some(r) if r.get::<_, bool>(3) => Standing::Open,
            Some(r) if r.get::<_, bool>(1) => {
                let reason = r.get::<_, Option<String>>(0).unwrap_or_default();
                Standing::Closed(
                    REASONS
                        .iter()
                        .find(|k| **k == reason)
                        .map_or("closed", |k| *k)
                        .to_string(),
                )
            }
            Some(r) if r.get::<_, bool>(2) => Standing::Idle,
            Some(_) => Standing::Closed("closed by another replica".into()),
        };
        if matches!(standing, Standing::Closed(_) | Standing::Unknown) {
            self.remember(key, &standing);
        }
        Ok(standing)
    }

    /// Closes session `id` unless some replica closed it already. `true`: this replica closed
    /// it, and ends it upstream and records it. Blocking.
    ///
    /// # Errors
    /// The database failed.
    pub fn close(&self, endpoint: &str, id: &str, reason: &str) -> Result<bool, String> {
        self.link.with(|c| {
            Ok(c.execute(
                "UPDATE sessions SET closed = now(), reason = $3 \
                 WHERE endpoint = $1 AND id = $2 AND closed IS NULL",
                &[&endpoint, &id, &reason],
            )? == 1)
        })
    }

    /// Closes those of `ids` (idle here) that no replica used within `idle` plus `grace` (the
    /// longest a use stays unwritten: two reaps). Returns the ones
    /// this replica closed (it ends them upstream and records them) and the ones still open
    /// that this replica used last (it keeps its copy, and closes them when they are idle
    /// everywhere); the rest another replica closed or uses. Blocking.
    ///
    /// # Errors
    /// The database failed.
    pub fn close_idle(
        &self,
        endpoint: &str,
        ids: &[&str],
        idle: Duration,
        grace: Duration,
    ) -> Result<Idle, String> {
        // A use another replica has not written yet is at most `grace` old.
        let idle = idle + grace;
        let rows = self.link.with(|c| {
            c.query(
                "WITH idle AS (UPDATE sessions s SET closed = now(), reason = 'idle' \
                     FROM unnest($2::text[]) AS u(id) \
                     WHERE s.endpoint = $1 AND s.id = u.id AND s.closed IS NULL \
                     AND s.last_used < now() - make_interval(secs => $3) RETURNING s.id) \
                 SELECT s.id, EXISTS (SELECT 1 FROM idle i WHERE i.id = s.id), \
                     s.closed IS NULL AND s.used_by = $4 \
                 FROM sessions s JOIN unnest($2::text[]) AS u(id) ON s.endpoint = $1 AND s.id = u.id",
                &[&endpoint, &ids, &idle.as_secs_f64(), &self.replica],
            )
        })?;
        let mut out = Idle::default();
        for r in rows {
            let id: String = r.get(0);
            if r.get::<_, bool>(1) {
                out.closed.push(id);
            } else if r.get::<_, bool>(2) {
                out.kept.push(id);
            }
        }
        Ok(out)
    }

    /// Writes when this replica last used `used` (endpoint, id, seconds ago) since its last
    /// look (the time of the use, not of the look: the idle timeout counts from it), and returns
    /// the sessions any replica closed within `window` (this one included), so that copies
    /// held here are dropped. Removes rows long closed or long unused. Blocking.
    ///
    /// # Errors
    /// The database failed.
    pub fn sync(
        &self,
        used: &[(String, String, u64)],
        window: Duration,
        forget_after: Duration,
    ) -> Result<Vec<(String, String)>, String> {
        let eps: Vec<&str> = used.iter().map(|u| u.0.as_str()).collect();
        let ids: Vec<&str> = used.iter().map(|u| u.1.as_str()).collect();
        #[allow(clippy::cast_precision_loss)]
        let ages: Vec<f64> = used.iter().map(|u| u.2 as f64).collect();
        self.link.with(|c| {
            let mut tx = c.transaction()?;
            if !eps.is_empty() {
                tx.execute(
                    "UPDATE sessions s \
                     SET last_used = now() - make_interval(secs => u.age), used_by = $4 \
                     FROM unnest($1::text[], $2::text[], $3::float8[]) AS u(endpoint, id, age) \
                     WHERE s.endpoint = u.endpoint AND s.id = u.id AND s.closed IS NULL \
                     AND s.last_used <= now() - make_interval(secs => u.age)",
                    &[&eps, &ids, &ages, &self.replica],
                )?;
            }
            tx.execute(
                "DELETE FROM sessions WHERE closed < now() - make_interval(secs => $1) \
                 OR last_used < now() - make_interval(secs => $2)",
                &[&KEEP_CLOSED_SECS, &forget_after.as_secs_f64()],
            )?;
            let closed = tx
                .query(
                    "SELECT endpoint, id FROM sessions \
                     WHERE closed IS NOT NULL AND closed > now() - make_interval(secs => $1)",
                    &[&window.as_secs_f64()],
                )?
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect();
            tx.commit()?;
            Ok(closed)
        })
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.link.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared() -> Shared {
        Shared::new("postgres://unused/", "r0", &[7; 32])
    }

    fn carried() -> Carried {
        Carried {
            owner: owner_digest("binding-of-alice"),
            upstream: Some("upstream-secret-session".into()),
            version: "2025-06-18".into(),
        }
    }

    const ID: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn a_sealed_token_opens_only_for_its_endpoint_and_id() {
        let s = shared();
        let token = s.seal("ep", ID, &carried());
        let Some(Token::Sealed { id, sealed }) = Token::parse(&token) else {
            panic!("{token} is not a sealed token")
        };
        assert_eq!(id, ID);
        assert!(!token.contains("upstream-secret-session"));
        assert!(!token.contains("alice"));
        assert!(token.len() < 300, "{token}");
        assert_eq!(s.open("ep", ID, sealed), Some(carried()));
        assert_eq!(s.open("other", ID, sealed), None, "another endpoint");
        let other_id = "f".repeat(32);
        assert_eq!(s.open("ep", &other_id, sealed), None, "another id");
        let stranger = Shared::new("postgres://unused/", "r0", &[8; 32]);
        assert_eq!(stranger.open("ep", ID, sealed), None, "another log's key");
    }

    #[test]
    fn an_altered_token_does_not_open() {
        let s = shared();
        let token = s.seal("ep", ID, &carried());
        let sealed = &token[33..];
        for i in 0..sealed.len() {
            let mut b = sealed.as_bytes().to_vec();
            b[i] = if b[i] == b'A' { b'B' } else { b'A' };
            let altered = String::from_utf8(b).unwrap_or_default();
            assert_eq!(s.open("ep", ID, &altered), None, "byte {i} changed");
        }
        assert_eq!(s.open("ep", ID, &sealed[..sealed.len() - 1]), None);
        assert_eq!(s.open("ep", ID, "AAAA"), None);
        assert_eq!(s.open("ep", ID, "not base64 !"), None);
    }

    #[test]
    fn tokens_are_read_by_their_shape() {
        assert_eq!(Token::parse(ID), Some(Token::Local(ID)));
        let on = format!("{ID}@gateway-1");
        assert_eq!(
            Token::parse(&on),
            Some(Token::On {
                id: ID,
                replica: "gateway-1"
            })
        );
        assert_eq!(Token::parse("short"), None);
        assert_eq!(Token::parse(&"g".repeat(32)), None);
        assert_eq!(Token::parse(&format!("{ID}.")), None);
        assert_eq!(Token::parse(&format!("{ID}@")), None);
        assert_eq!(Token::parse(&format!("{ID}#x")), None);
        assert_eq!(
            Token::parse(&format!("{ID}@a b")),
            None,
            "not a replica's name"
        );
        assert_eq!(Token::parse(&format!("{ID}@<script>")), None);
        assert_eq!(Token::parse(&format!("{ID}.{}", "A".repeat(3000))), None);
        // Two sealings of the same session differ (a fresh nonce each).
        let s = shared();
        assert_ne!(s.seal("ep", ID, &carried()), s.seal("ep", ID, &carried()));
    }
}
