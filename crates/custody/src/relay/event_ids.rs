//! The SSE event ids a session's client sees. An upstream's `id:` values are its own (they can
//! carry anything: a stream number, a cursor, a secret), so they are never relayed: the gateway
//! issues ids of its own, a random per-session prefix and a counter, and remembers which
//! upstream id each stands for, so that a `Last-Event-ID` on a GET resumes upstream where the
//! client left off.
//!
//! The map is bounded ([`KEEP`] ids a session, the oldest forgotten first); an upstream id
//! longer than [`MAX_ID`] bytes is not relayed at all (the event goes without an id).

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, PoisonError};

/// Event ids remembered per session: a client resumes after one of its last few events.
pub const KEEP: usize = 256;
/// The longest upstream event id the gateway keeps.
pub const MAX_ID: usize = 256;

pub struct EventIds {
    /// 64 random bits, hex: ids of different sessions (and gateway runs) never collide.
    prefix: String,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    next: u64,
    /// Gateway id → upstream id.
    upstream: HashMap<String, String>,
    /// Gateway ids, oldest first.
    order: VecDeque<String>,
}

impl Default for EventIds {
    fn default() -> Self {
        Self {
            prefix: hex::encode(rand::random::<[u8; 8]>()),
            inner: Mutex::new(Inner::default()),
        }
    }
}

impl EventIds {
    /// The id the client sees for the upstream's event id `upstream`; `None` when that id is
    /// too long to keep (the event is relayed without an id).
    pub fn issue(&self, upstream: String) -> Option<String> {
        if upstream.len() > MAX_ID || upstream.contains(['\n', '\r']) {
            return None;
        }
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner.next += 1;
        let ours = format!("{}-{}", self.prefix, inner.next);
        if inner.order.len() >= KEEP
            && let Some(old) = inner.order.pop_front()
        {
            inner.upstream.remove(&old);
        }
        inner.order.push_back(ours.clone());
        inner.upstream.insert(ours.clone(), upstream);
        Some(ours)
    }

    /// The upstream's event id for an id the gateway issued on this session, if it still
    /// remembers it.
    pub fn upstream(&self, ours: &str) -> Option<String> {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .upstream
            .get(ours)
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_the_gateways_and_map_back_until_forgotten() {
        let ids = EventIds::default();
        let first = ids.issue("stream-1_0".into()).unwrap();
        assert!(!first.contains("stream"), "{first}");
        assert_eq!(ids.upstream(&first).as_deref(), Some("stream-1_0"));
        assert_eq!(
            ids.upstream("stream-1_0"),
            None,
            "upstream ids mean nothing here"
        );
        for i in 0..KEEP {
            ids.issue(format!("s_{i}")).unwrap();
        }
        assert_eq!(ids.upstream(&first), None, "the oldest is forgotten");
        let other = EventIds::default();
        assert_ne!(other.issue("x".into()), ids.issue("x".into()));
        assert_eq!(ids.issue("x".repeat(MAX_ID + 1)), None);
    }
}
