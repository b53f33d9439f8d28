//! An issuer's signing keys: found by OIDC discovery, fetched from its JWKS, cached, and
//! refreshed when a token names a key not yet seen. One fetch at a time per issuer; callers
//! that arrive during a fetch wait for it instead of starting their own; forced refreshes are
//! rate-limited; a failed refresh keeps the keys already held.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::Algorithm;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, PublicKeyUse};
use serde_json::Value;

use super::fetch::Fetcher;

/// One usable public key.
#[derive(Debug)]
pub struct Key {
    pub kid: Option<String>,
    /// The only algorithm this key may be used with, when the JWKS says.
    pub alg: Option<Algorithm>,
    public: Public,
}

/// The key material, in the form `ring` verifies with.
#[derive(Debug)]
enum Public {
    Rsa { n: Vec<u8>, e: Vec<u8> },
    P256(Vec<u8>),
    P384(Vec<u8>),
    Ed25519(Vec<u8>),
}

impl Key {
    /// Can this key check a signature made with `alg`?
    pub fn fits(&self, alg: Algorithm) -> bool {
        if self.alg.is_some_and(|a| a != alg) {
            return false;
        }
        matches!(
            (&self.public, alg),
            (
                Public::Rsa { .. },
                Algorithm::RS256
                    | Algorithm::RS384
                    | Algorithm::RS512
                    | Algorithm::PS256
                    | Algorithm::PS384
                    | Algorithm::PS512
            ) | (Public::P256(_), Algorithm::ES256)
                | (Public::P384(_), Algorithm::ES384)
                | (Public::Ed25519(_), Algorithm::EdDSA)
        )
    }

    /// Checks `signature` over `message` made with `alg` (which must fit this key).
    pub fn verify(&self, alg: Algorithm, message: &[u8], signature: &[u8]) -> bool {
        use ring::signature as sig;
        let checked = match (&self.public, alg) {
            (Public::Rsa { n, e }, _) => {
                let params = match alg {
                    Algorithm::RS256 => &sig::RSA_PKCS1_2048_8192_SHA256,
                    Algorithm::RS384 => &sig::RSA_PKCS1_2048_8192_SHA384,
                    Algorithm::RS512 => &sig::RSA_PKCS1_2048_8192_SHA512,
                    Algorithm::PS256 => &sig::RSA_PSS_2048_8192_SHA256,
                    Algorithm::PS384 => &sig::RSA_PSS_2048_8192_SHA384,
                    Algorithm::PS512 => &sig::RSA_PSS_2048_8192_SHA512,
                    _ => return false,
                };
                sig::RsaPublicKeyComponents { n, e }.verify(params, message, signature)
            }
            (Public::P256(point), Algorithm::ES256) => {
                sig::UnparsedPublicKey::new(&sig::ECDSA_P256_SHA256_FIXED, point)
                    .verify(message, signature)
            }
            (Public::P384(point), Algorithm::ES384) => {
                sig::UnparsedPublicKey::new(&sig::ECDSA_P384_SHA384_FIXED, point)
                    .verify(message, signature)
            }
            (Public::Ed25519(x), Algorithm::EdDSA) => {
                sig::UnparsedPublicKey::new(&sig::ED25519, x).verify(message, signature)
            }
            _ => return false,
        };
        checked.is_ok()
    }

    /// Reads one JWK, or says why it cannot verify signatures here.
    fn from_jwk(value: Value) -> Result<Self, String> {
        let jwk: Jwk = serde_json::from_value(value).map_err(|e| format!("not a JWK: {e}"))?;
        if matches!(jwk.common.public_key_use, Some(ref u) if *u != PublicKeyUse::Signature) {
            return Err("its use is not \"sig\"".into());
        }
        let bytes = |field: &str, b64: &str| {
            URL_SAFE_NO_PAD
                .decode(b64)
                .map_err(|_| format!("its {field} is not base64url"))
        };
        let public = match &jwk.algorithm {
            AlgorithmParameters::RSA(p) => {
                let n = bytes("n", &p.n)?;
                let bits = n.iter().skip_while(|b| **b == 0).count() * 8;
                if bits < 2048 {
                    return Err(format!(
                        "an RSA key of about {bits} bits is too weak (at least 2048)"
                    ));
                }
                Public::Rsa {
                    n,
                    e: bytes("e", &p.e)?,
                }
            }
            AlgorithmParameters::EllipticCurve(p) => {
                let mut point = vec![4u8];
                point.extend(bytes("x", &p.x)?);
                point.extend(bytes("y", &p.y)?);
                match p.curve {
                    EllipticCurve::P256 if point.len() == 65 => Public::P256(point),
                    EllipticCurve::P384 if point.len() == 97 => Public::P384(point),
                    EllipticCurve::P256 | EllipticCurve::P384 => {
                        return Err("its x and y do not fit its curve".into());
                    }
                    _ => return Err("unsupported curve".into()),
                }
            }
            AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
                Public::Ed25519(bytes("x", &p.x)?)
            }
            AlgorithmParameters::OctetKey(_) => {
                return Err("a symmetric key (kty oct) is never used".into());
            }
            _ => return Err("unsupported key type".into()),
        };
        let alg = match jwk.common.key_algorithm {
            None => None,
            Some(a) => Some(Algorithm::try_from(a).map_err(|_| format!("unsupported alg {a}"))?),
        };
        let key = Self {
            kid: jwk.common.key_id,
            alg,
            public,
        };
        if let Some(a) = alg
            && !key.fits(a)
        {
            return Err(format!("its alg {a:?} does not fit its key type"));
        }
        Ok(key)
    }
}

/// The keys held for an issuer.
#[derive(Default)]
pub struct KeySet {
    pub keys: Vec<Key>,
    /// When they were fetched; `None` until the first fetch succeeds.
    pub fetched: Option<Instant>,
}

impl KeySet {
    /// Parses a JWKS document; keys that cannot be used are skipped with a warning.
    ///
    /// # Errors
    /// The document is not a JWKS, or holds no usable key.
    pub fn parse(doc: Value, url: &str) -> Result<Vec<Key>, String> {
        let Some(Value::Array(list)) = doc.get("keys").cloned() else {
            return Err(format!("{url} is not a JWKS: it has no \"keys\" array"));
        };
        let mut keys = Vec::new();
        for (i, value) in list.into_iter().enumerate() {
            let kid = value.get("kid").and_then(Value::as_str).map(str::to_string);
            match Key::from_jwk(value) {
                Ok(k) => keys.push(k),
                Err(why) => {
                    tracing::warn!(jwks = url, key = i, kid, "skipping a key: {why}");
                }
            }
        }
        if keys.is_empty() {
            return Err(format!("{url} holds no usable signing key"));
        }
        Ok(keys)
    }

    pub fn has(&self, kid: &str) -> bool {
        self.keys.iter().any(|k| k.kid.as_deref() == Some(kid))
    }
}

/// Where an issuer's keys are.
#[derive(Clone)]
pub enum Source {
    /// `{issuer}/.well-known/openid-configuration`, then its `jwks_uri`.
    Discovery { issuer: String },
    /// A configured `jwks_uri`.
    Jwks(String),
}

struct Attempt {
    /// The last fetch a token caused (an unknown `kid`): these are rate-limited.
    on_demand: Option<Instant>,
    error: Option<String>,
}

/// The cached keys of one issuer.
pub struct KeyCache {
    source: Source,
    fetcher: Fetcher,
    set: RwLock<Arc<KeySet>>,
    /// Counts finished fetch attempts, so a caller that waited for another's fetch can tell.
    attempts: AtomicU64,
    last: Mutex<Attempt>,
    /// Held while fetching: one fetch at a time.
    fetching: tokio::sync::Mutex<()>,
    min_refresh: Duration,
}

impl KeyCache {
    pub fn new(source: Source, fetcher: Fetcher, min_refresh: Duration) -> Self {
        Self {
            source,
            fetcher,
            set: RwLock::new(Arc::new(KeySet::default())),
            attempts: AtomicU64::new(0),
            last: Mutex::new(Attempt {
                on_demand: None,
                error: None,
            }),
            fetching: tokio::sync::Mutex::new(()),
            min_refresh,
        }
    }

    /// The keys held now.
    pub fn current(&self) -> Arc<KeySet> {
        self.set
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Why the last fetch failed, if it did.
    pub fn last_error(&self) -> Option<String> {
        self.last
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .error
            .clone()
    }

    /// Fetches the keys unless another caller's fetch finished while this one waited, or (for
    /// a fetch a token causes, `forced` false) the last such fetch was less than `min_refresh`
    /// ago. Returns the keys held afterwards.
    pub async fn refresh(&self, forced: bool) -> Arc<KeySet> {
        let seen = self.attempts.load(Ordering::Acquire);
        let _guard = self.fetching.lock().await;
        if self.attempts.load(Ordering::Acquire) != seen {
            return self.current();
        }
        if !forced {
            let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
            if last
                .on_demand
                .is_some_and(|t| t.elapsed() < self.min_refresh)
            {
                return self.current();
            }
            last.on_demand = Some(Instant::now());
        }
        let result = self.fetch().await;
        let error = match result {
            Ok(keys) => {
                let set = Arc::new(KeySet {
                    keys,
                    fetched: Some(Instant::now()),
                });
                *self.set.write().unwrap_or_else(PoisonError::into_inner) = set;
                None
            }
            Err(e) => Some(e),
        };
        self.last
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .error = error;
        self.attempts.fetch_add(1, Ordering::AcqRel);
        self.current()
    }

    async fn fetch(&self) -> Result<Vec<Key>, String> {
        let url = match &self.source {
            Source::Jwks(u) => u.clone(),
            Source::Discovery { issuer } => self.discover(issuer).await?,
        };
        let doc = self.fetcher.json(&url).await?;
        KeySet::parse(doc, &url)
    }

    async fn discover(&self, issuer: &str) -> Result<String, String> {
        let url = format!(
            "{}/.well-known/openid-configuration",
            issuer.trim_end_matches('/')
        );
        let doc = self.fetcher.json(&url).await?;
        match doc.get("issuer").and_then(Value::as_str) {
            Some(i) if i == issuer => {}
            Some(i) => {
                return Err(format!(
                    "{url} names issuer {i:?}, not {issuer:?}: the discovery document must name the configured issuer exactly"
                ));
            }
            None => return Err(format!("{url} has no \"issuer\"")),
        }
        let Some(jwks) = doc.get("jwks_uri").and_then(Value::as_str) else {
            return Err(format!("{url} has no \"jwks_uri\""));
        };
        if !crate::config::is_fetchable(jwks) {
            return Err(format!(
                "{url} points to keys at {jwks:?}, which is not https:// (or http:// to this machine)"
            ));
        }
        Ok(jwks.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn b64(n: usize, byte: u8) -> String {
        URL_SAFE_NO_PAD.encode(vec![byte; n])
    }

    #[test]
    fn unusable_keys_are_skipped_and_a_set_without_usable_keys_is_an_error() {
        let doc = json!({"keys": [
            {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"},
            {"kty": "RSA", "n": b64(128, 0xc1), "e": "AQAB", "kid": "rsa-1024"},
            {"kty": "RSA", "n": b64(256, 0xc1), "e": "AQAB", "kid": "enc", "use": "enc"},
            {"kty": "EC", "crv": "P-256", "x": b64(31, 1), "y": b64(32, 2), "kid": "short"},
            {"kty": "EC", "crv": "P-256", "x": b64(32, 1), "y": b64(32, 2), "kid": "rs-alg", "alg": "RS256"},
            {"kty": "RSA", "n": b64(256, 0xc1), "e": "AQAB", "kid": "good-rsa", "alg": "RS256"},
            {"kty": "EC", "crv": "P-256", "x": b64(32, 1), "y": b64(32, 2), "kid": "good-ec"},
        ]});
        let keys = KeySet::parse(doc, "test").unwrap();
        let kids: Vec<_> = keys.iter().filter_map(|k| k.kid.as_deref()).collect();
        assert_eq!(kids, ["good-rsa", "good-ec"]);
        assert!(keys[0].fits(Algorithm::RS256) && !keys[0].fits(Algorithm::PS256));
        assert!(keys[1].fits(Algorithm::ES256) && !keys[1].fits(Algorithm::RS256));

        let none = json!({"keys": [{"kty": "oct", "k": "c2VjcmV0"}]});
        assert!(
            KeySet::parse(none, "u")
                .unwrap_err()
                .contains("no usable signing key")
        );
        let garbage = json!({"issuer": "x"});
        assert!(
            KeySet::parse(garbage, "u")
                .unwrap_err()
                .contains("not a JWKS")
        );
    }
}
