//! Refusals a flood can cause, recorded in aggregate: refused credentials and other refusals
//! before authentication, and limits an authenticated caller runs into. Each is counted under
//! (endpoint, entry kind, who, reason) for one second; a task writes one entry per key and
//! second, with the count, the first refusal's details, and the address or principal. So the
//! record is complete (every refusal is counted) and bounded (at most
//! `limits.refusal_records_per_second` keys a second, the rest summed per reason: see
//! [`crate::limits::tally`]).
//!
//! The refusal is answered at once; its entry follows within a second (and on shutdown). What
//! is refused moves nothing upstream, so there is nothing to hold back until it is durable.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::error::RelayError;
use crate::audit::{Audit, Direction, Draft, Kind, now_ns};
use crate::identity::{Principal, Refused, clip, unverified};
use crate::limits::tally::{Counted, Tally};

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    endpoint: Arc<str>,
    kind: Kind,
    /// The address (before authentication) or the principal's binding; `None` once folded.
    who: Option<Arc<str>>,
    reason: &'static str,
}

fn fold(k: &Key) -> Key {
    Key {
        who: None,
        ..k.clone()
    }
}

/// What the first refusal of a key looked like.
struct Sample {
    time_ns: u64,
    caller: Arc<str>,
    session: Option<Arc<str>>,
    method: Option<String>,
    http_method: String,
    address: String,
    status: u16,
    error: Value,
}

/// The refusals of the current second.
pub struct Refusals {
    audit: Arc<Audit>,
    tally: Tally<Key, Sample>,
    metrics: Arc<crate::metrics::Metrics>,
}

/// Who was refused and from where.
pub struct At<'a> {
    pub endpoint: &'a Arc<str>,
    /// The client's address (`ip:port`).
    pub address: &'a str,
    pub http_method: &'a str,
    pub session: Option<Arc<str>>,
}

impl Refusals {
    pub fn new(audit: Arc<Audit>, max_keys: usize, metrics: Arc<crate::metrics::Metrics>) -> Self {
        Self {
            audit,
            tally: Tally::new(max_keys, fold),
            metrics,
        }
    }

    /// Counts a refusal by a limit for `/metrics`.
    fn count_limit(&self, at: &At<'_>, error: &RelayError) {
        if let RelayError::Limit(e) = error {
            self.metrics.limit(at.endpoint, e.limit.name());
        }
    }

    /// A refused credential.
    pub fn auth_failure(&self, at: &At<'_>, refused: &Refused, error: &RelayError) {
        self.metrics
            .auth_failure(at.endpoint, refused.error.reason());
        let key = Key {
            endpoint: at.endpoint.clone(),
            kind: Kind::AuthFailure,
            who: Some(address_key(at.address)),
            reason: refused.error.reason(),
        };
        self.tally.add(key, || Sample {
            time_ns: now_ns(),
            caller: unverified(refused.issuer.as_deref(), refused.subject.as_deref()).into(),
            session: at.session.clone(),
            method: None,
            http_method: at.http_method.to_string(),
            address: at.address.to_string(),
            status: error.status().as_u16(),
            // The description quotes what the token claimed: clipped like the claims.
            error: Value::String(clip_long(&refused.error.to_string())),
        });
    }

    /// Any other refusal before authentication (`Host`, `Origin`, headers, the address's own
    /// limit).
    pub fn unauthenticated(&self, at: &At<'_>, error: &RelayError) {
        self.count_limit(at, error);
        let key = Key {
            endpoint: at.endpoint.clone(),
            kind: Kind::Rejected,
            who: Some(address_key(at.address)),
            reason: reason(error),
        };
        self.tally.add(key, || Sample {
            time_ns: now_ns(),
            caller: crate::audit::ANONYMOUS.into(),
            session: at.session.clone(),
            method: None,
            http_method: at.http_method.to_string(),
            address: at.address.to_string(),
            status: error.status().as_u16(),
            error: error.to_json(None)["error"].take(),
        });
    }

    /// A limit an authenticated caller ran into; `method` is the JSON-RPC method, if known.
    pub fn limited(&self, at: &At<'_>, who: &Principal, method: Option<&str>, error: &RelayError) {
        self.count_limit(at, error);
        let key = Key {
            endpoint: at.endpoint.clone(),
            kind: Kind::Rejected,
            who: Some(who.binding.clone()),
            reason: reason(error),
        };
        self.tally.add(key, || Sample {
            time_ns: now_ns(),
            caller: who.audit.clone(),
            session: at.session.clone(),
            method: method.map(str::to_string),
            http_method: at.http_method.to_string(),
            address: at.address.to_string(),
            status: error.status().as_u16(),
            error: error.to_json(None)["error"].take(),
        });
    }

    /// Writes one entry per key counted since the last flush.
    pub async fn flush(&self) {
        let counted = self.tally.drain();
        if counted.is_empty() {
            return;
        }
        let appends = counted.into_iter().map(|c| self.audit.append(draft(c)));
        for result in futures_util::future::join_all(appends).await {
            if let Err(e) = result {
                tracing::error!("couldn't record refused requests: {e}");
            }
        }
    }

    /// Flushes every second until `stop` (the caller flushes once more when nothing can be
    /// refused any longer).
    pub fn spawn_flusher(self: &Arc<Self>, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => this.flush().await,
                    () = stop.cancelled() => break,
                }
            }
        })
    }
}

/// What refusals before authentication are counted by: the address as `limits` keys it (IPv6
/// by /64).
fn address_key(address: &str) -> Arc<str> {
    match address.parse::<std::net::SocketAddr>() {
        Ok(a) => crate::limits::address_key(a.ip()).to_string().into(),
        Err(_) => address.into(),
    }
}

/// The reason a refusal is counted under.
fn reason(error: &RelayError) -> &'static str {
    match error {
        RelayError::Limit(e) => e.limit.name(),
        RelayError::HostNotAllowed(_) => "host_not_allowed",
        RelayError::OriginNotAllowed(_) => "origin_not_allowed",
        RelayError::Unauthorized(e) => e.reason(),
        _ => "refused",
    }
}

/// An error text that may quote several clipped claims: at most four claims' worth.
fn clip_long(s: &str) -> String {
    if s.len() <= 4 * crate::identity::CLAIM_MAX {
        return s.to_string();
    }
    let mut end = 4 * crate::identity::CLAIM_MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

fn draft(c: Counted<Key, Sample>) -> Draft {
    let s = c.sample;
    let mut detail = json!({
        "status": s.status,
        "reason": c.key.reason,
        "error": s.error,
        "http_method": s.http_method,
        "count": c.count,
        "window_s": 1,
    });
    detail["address"] = json!(s.address);
    if c.folded {
        // The caller and address are the first refusal's; the count is of any address.
        detail["folded"] = json!(
            "refusals of any address or caller past limits.refusal_records_per_second distinct records this second, summed under their reason; caller and address are the first one's"
        );
    }
    Draft {
        kind: c.key.kind,
        direction: Direction::ClientToUpstream,
        time_ns: s.time_ns,
        endpoint: c.key.endpoint,
        session: s.session,
        id: None,
        method: s.method.map(|m| clip(&m)),
        target: None,
        caller: s.caller,
        request: None,
        detail: detail.to_string(),
        message: bytes::Bytes::new(),
        mark: None,
        headers: None,
        erase: None,
    }
}
