//! The `requestState` the gateway gives a stateless client with an `input_required` result,
//! and its checks when the client retries.
//!
//! The spec (2026-07-28, basic/patterns/mrtr, "Server Requirements") makes `requestState`
//! attacker-controlled input: a server whose state steers what it does MUST protect its
//! integrity and reject state that fails verification, and SHOULD bind it to the
//! authenticated principal, a short expiry and the originating request (method and a digest of
//! its parameters). Here the state names a call parked on a process, so all of that applies:
//!
//! ```text
//! custody-mrtr-v1:<base64url(claims JSON)>.<base64url(HMAC-SHA256(key, "custody-mrtr-v1:" ‖ base64url(claims)))>
//! ```
//!
//! The key is random, held only by this gateway process (parked calls do not survive it
//! either), and shared by its endpoints, so that state presented to the wrong endpoint is told
//! apart from state that was altered. The claims are readable by the client (it learns its own
//! endpoint, a hash of its identity, and when the state expires); they are not secret, only
//! unforgeable.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::approval::canonical;

/// What every `requestState` this gateway issues starts with. Any other `requestState` is the
/// upstream's own (a process may answer `input_required` itself) and goes to it untouched.
pub const PREFIX: &str = "custody-mrtr-v1:";

/// The longest `requestState` read: the gateway's are a few hundred bytes.
const MAX_LEN: usize = 2048;

/// The gateway's key for sealing `requestState`.
pub struct StateKey([u8; 32]);

impl StateKey {
    pub fn random() -> Self {
        Self(rand::random())
    }

    #[cfg(test)]
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    fn mac(&self, body: &str) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(PREFIX.as_bytes());
        mac.update(body.as_bytes());
        mac
    }
}

/// What a `requestState` binds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The endpoint whose process asked.
    pub ep: String,
    /// [`who`] of the caller it was issued to.
    pub who: String,
    /// [`request_digest`] of the request it answered.
    pub req: String,
    /// Expiry, Unix milliseconds.
    pub exp: u64,
    /// The parked call it resumes.
    pub park: String,
    /// The `inputRequests` key the retry must answer.
    pub key: String,
}

/// Seals `claims` into a `requestState`.
pub fn seal(key: &StateKey, claims: &Claims) -> String {
    let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap_or_default());
    let tag = URL_SAFE_NO_PAD.encode(key.mac(&body).finalize().into_bytes());
    format!("{PREFIX}{body}.{tag}")
}

/// Is this `requestState` one of the gateway's (by its prefix)?
pub fn is_ours(state: &Value) -> bool {
    state.as_str().is_some_and(|s| s.starts_with(PREFIX))
}

/// What a `requestState` must match on the retry.
pub struct Expect<'a> {
    pub endpoint: &'a str,
    pub who: &'a str,
    pub req: &'a str,
    /// Unix milliseconds.
    pub now: u64,
}

/// Opens and checks a `requestState`: integrity first (nothing in it is believed before),
/// then endpoint, caller, request and expiry, each with its own error.
///
/// # Errors
/// The [`StateError`] naming the first check that failed.
pub fn open(key: &StateKey, state: &Value, expect: &Expect<'_>) -> Result<Claims, StateError> {
    let text = state.as_str().ok_or(StateError::Malformed)?;
    if text.len() > MAX_LEN {
        return Err(StateError::Malformed);
    }
    let rest = text.strip_prefix(PREFIX).ok_or(StateError::Malformed)?;
    let (body, tag) = rest.split_once('.').ok_or(StateError::Malformed)?;
    let tag = URL_SAFE_NO_PAD
        .decode(tag)
        .map_err(|_| StateError::Malformed)?;
    key.mac(body)
        .verify_slice(&tag)
        .map_err(|_| StateError::Tampered)?;
    // Sealed by this gateway, so well formed; a failure here is a bug, and still refused.
    let claims: Claims = URL_SAFE_NO_PAD
        .decode(body)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or(StateError::Malformed)?;
    if claims.ep != expect.endpoint {
        return Err(StateError::OtherEndpoint {
            issued: claims.ep,
            here: expect.endpoint.to_string(),
        });
    }
    if claims.who != expect.who {
        return Err(StateError::OtherPrincipal);
    }
    if claims.req != expect.req {
        return Err(StateError::OtherRequest);
    }
    if expect.now >= claims.exp {
        return Err(StateError::Expired {
            ago_ms: expect.now - claims.exp,
        });
    }
    Ok(claims)
}

/// Why a retry's `requestState` (or `inputResponses`) is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    #[error(
        "requestState is not in the form this gateway issues; send it back exactly as received"
    )]
    Malformed,
    #[error(
        "requestState failed its integrity check: it was changed after the gateway issued it, or another gateway issued it; send it back exactly as received, or call again without inputResponses and requestState"
    )]
    Tampered,
    #[error(
        "requestState was issued by endpoint {issued:?}, not {here:?}; retry on the endpoint that asked for the input"
    )]
    OtherEndpoint { issued: String, here: String },
    #[error(
        "requestState was issued to another caller; only the caller the input was asked of can answer it"
    )]
    OtherPrincipal,
    #[error(
        "requestState was issued for a different request: the method or params (apart from _meta, inputResponses and requestState) differ from the call answered with input_required; retry that same call"
    )]
    OtherRequest,
    #[error(
        "requestState expired {}s ago: the input was not given within the endpoint's input_timeout, and the call waiting for it was dropped; call again without inputResponses and requestState",
        .ago_ms / 1000
    )]
    Expired { ago_ms: u64 },
    #[error(
        "requestState names a call this gateway no longer holds (it was answered already, or the gateway restarted); call again without inputResponses and requestState"
    )]
    Unknown,
    #[error("invalid inputResponses: {0}")]
    InputResponses(String),
}

impl StateError {
    /// `error.data.reason`.
    pub fn reason(&self) -> &'static str {
        match self {
            StateError::Malformed => "malformed",
            StateError::Tampered => "tampered",
            StateError::OtherEndpoint { .. } => "other_endpoint",
            StateError::OtherPrincipal => "other_principal",
            StateError::OtherRequest => "other_request",
            StateError::Expired { .. } => "expired",
            StateError::Unknown => "unknown",
            StateError::InputResponses(_) => "input_responses",
        }
    }

    /// The parameter at fault.
    pub fn param(&self) -> &'static str {
        match self {
            StateError::InputResponses(_) => "inputResponses",
            _ => "requestState",
        }
    }
}

/// A caller's identity as the state binds it: a hash of what binds a session to a principal
/// (the state is readable by the client and need not carry claims).
pub fn who(binding: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"custody-mrtr-who\n");
    h.update(binding.as_bytes());
    hex::encode(h.finalize())
}

/// A digest of a request as the retry must repeat it: its method and its params without
/// `_meta` (per request: version, capabilities, progress token), `inputResponses` and
/// `requestState` (what the retry adds), with object members in sorted order so that a client
/// that re-serialises the params in another order still matches.
pub fn request_digest(method: &str, params: Option<&Value>) -> String {
    let mut text = String::with_capacity(256);
    text.push_str(method);
    text.push('\n');
    match params.and_then(Value::as_object) {
        Some(map) => {
            let mut kept = serde_json::Map::new();
            for (k, v) in map {
                if !matches!(k.as_str(), "_meta" | "inputResponses" | "requestState") {
                    kept.insert(k.clone(), v.clone());
                }
            }
            canonical(&Value::Object(kept), &mut text);
        }
        None => canonical(params.unwrap_or(&Value::Null), &mut text),
    }
    hex::encode(Sha256::digest(text.as_bytes()))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn claims() -> Claims {
        Claims {
            ep: "files".into(),
            who: who("[\"alice\"]"),
            req: request_digest(
                "tools/call",
                Some(&json!({"name": "t", "arguments": {"a": 1}})),
            ),
            exp: 10_000,
            park: "ab".repeat(16),
            key: "elicitation".into(),
        }
    }

    fn expect<'a>(c: &'a Claims, now: u64) -> Expect<'a> {
        Expect {
            endpoint: &c.ep,
            who: &c.who,
            req: &c.req,
            now,
        }
    }

    #[test]
    fn a_sealed_state_opens_to_its_claims() {
        let key = StateKey::from_bytes([7; 32]);
        let c = claims();
        let state = json!(seal(&key, &c));
        assert!(is_ours(&state));
        assert_eq!(open(&key, &state, &expect(&c, 9_999)), Ok(c));
    }

    #[test]
    fn each_bad_state_gets_its_own_error() {
        let key = StateKey::from_bytes([7; 32]);
        let c = claims();
        let sealed = seal(&key, &c);
        let e = |state: Value, exp: &Expect<'_>| open(&key, &state, exp).unwrap_err();
        assert_eq!(e(json!(7), &expect(&c, 0)), StateError::Malformed);
        assert_eq!(
            e(json!("custody-mrtr-v1:nodot"), &expect(&c, 0)),
            StateError::Malformed
        );
        assert_eq!(
            e(json!("x".repeat(MAX_LEN + 1)), &expect(&c, 0)),
            StateError::Malformed
        );
        // One character of the claims changed: the tag no longer matches.
        let mut tampered = sealed.clone().into_bytes();
        let at = PREFIX.len() + 3;
        tampered[at] = if tampered[at] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(tampered).unwrap();
        assert_eq!(e(json!(tampered), &expect(&c, 0)), StateError::Tampered);
        // Claims re-sealed with another key (another gateway).
        let other = seal(&StateKey::from_bytes([8; 32]), &c);
        assert_eq!(e(json!(other), &expect(&c, 0)), StateError::Tampered);
        let state = json!(sealed);
        let mut x = expect(&c, 0);
        x.endpoint = "other";
        assert_eq!(
            e(state.clone(), &x),
            StateError::OtherEndpoint {
                issued: "files".into(),
                here: "other".into()
            }
        );
        let bob = who("[\"bob\"]");
        let mut x = expect(&c, 0);
        x.who = &bob;
        assert_eq!(e(state.clone(), &x), StateError::OtherPrincipal);
        let req = request_digest(
            "tools/call",
            Some(&json!({"name": "t", "arguments": {"a": 2}})),
        );
        let mut x = expect(&c, 0);
        x.req = &req;
        assert_eq!(e(state.clone(), &x), StateError::OtherRequest);
        assert_eq!(
            e(state, &expect(&c, 12_500)),
            StateError::Expired { ago_ms: 2_500 }
        );
    }

    #[test]
    fn the_digest_ignores_what_a_retry_adds_and_member_order() {
        let first = json!({"name": "t", "arguments": {"a": 1, "b": [1, {"y": 2, "x": 1}]},
            "_meta": {"progressToken": 1}});
        let retry = json!({"arguments": {"b": [1, {"x": 1, "y": 2}], "a": 1}, "name": "t",
            "inputResponses": {"k": {}}, "requestState": "s", "_meta": {"progressToken": 2}});
        assert_eq!(
            request_digest("tools/call", Some(&first)),
            request_digest("tools/call", Some(&retry))
        );
        assert_ne!(
            request_digest("tools/call", Some(&first)),
            request_digest("prompts/get", Some(&first))
        );
        let changed = json!({"name": "t", "arguments": {"a": 1, "b": [{"y": 2, "x": 1}, 1]}});
        assert_ne!(
            request_digest("tools/call", Some(&first)),
            request_digest("tools/call", Some(&changed))
        );
    }
}
