//! Who is calling: verifies the bearer token of every request (a CI job's OIDC token or a
//! static token) and turns it into a [`Principal`], or refuses with a specific reason.
//!
//! OIDC issuers' keys are fetched by discovery and cached ([`jwks`]); a verified token is
//! remembered by its SHA-256 until it expires ([`cache`]), so a job's repeated calls skip the
//! signature check.

mod cache;
mod error;
pub(crate) mod fetch;
mod jwks;
mod jwt;
mod oidc;
mod principal;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::{HeaderMap, header};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

pub use error::{AuthError, CLAIM_MAX, Refused, clip};
pub use principal::{Principal, PrincipalKind, unverified};

use cache::{TokenCache, Verified};
use fetch::Fetcher;
use jwt::Compact;
use oidc::{Issuer, KeyMatch};

use crate::config::AuthConfig;

/// How custody's static tokens begin.
pub const STATIC_PREFIX: &str = "cst_";

/// Verifies callers.
pub struct Identity {
    issuers: Vec<Arc<Issuer>>,
    by_issuer: HashMap<String, usize>,
    statics: HashMap<[u8; 32], Arc<Principal>>,
    anonymous: Option<Arc<Principal>>,
    cache: TokenCache,
}

/// A new static token: the prefix and 256 random bits, base64url.
pub fn new_static_token() -> String {
    format!(
        "{STATIC_PREFIX}{}",
        URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
    )
}

/// The SHA-256 of a token, as configured in `[[auth.static]]`.
pub fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Identity {
    pub fn new(config: &AuthConfig) -> Self {
        let fetcher = Fetcher::default();
        let issuers: Vec<Arc<Issuer>> = config
            .oidc
            .iter()
            .map(|o| Arc::new(Issuer::new(o.clone(), fetcher.clone())))
            .collect();
        let by_issuer = issuers
            .iter()
            .enumerate()
            .map(|(i, iss)| (iss.config.issuer.clone(), i))
            .collect();
        let statics = config
            .static_tokens
            .iter()
            .map(|t| (t.sha256, Arc::new(Principal::static_token(&t.name))))
            .collect();
        Self {
            issuers,
            by_issuer,
            statics,
            anonymous: config.anonymous.then(|| Arc::new(Principal::anonymous())),
            cache: TokenCache::new(config.token_cache_size),
        }
    }

    /// The configured issuers' `iss` values.
    pub fn issuers(&self) -> impl Iterator<Item = &str> {
        self.issuers.iter().map(|i| i.config.issuer.as_str())
    }

    /// Loads every issuer's keys once (waiting at most for the fetch timeout), warning about
    /// the ones that fail, then keeps them fresh in the background until `stop`.
    pub async fn start(&self, stop: &CancellationToken) -> Vec<tokio::task::JoinHandle<()>> {
        let loads = self.issuers.iter().map(|i| async move {
            let set = i.keys.refresh(true).await;
            report(i, set.fetched.is_some(), None);
        });
        futures_util::future::join_all(loads).await;
        self.issuers
            .iter()
            .map(|i| tokio::spawn(keep_keys(i.clone(), stop.clone())))
            .collect()
    }

    /// Who sent these headers.
    ///
    /// # Errors
    /// [`Refused`]: the reason, with the token's unverified issuer and subject when it has them
    /// (each clipped to [`CLAIM_MAX`] bytes).
    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<Arc<Principal>, Refused> {
        let Some(value) = authorization(headers)? else {
            return self.anonymous.clone().ok_or(AuthError::NoToken.into());
        };
        let token = bearer(value)?;
        let hash = token_hash(token);
        if let Some(p) = self.statics.get(&hash) {
            return Ok(p.clone());
        }
        if token.starts_with(STATIC_PREFIX) {
            return Err(AuthError::UnknownStatic.into());
        }
        let now = unix_now();
        if let Some(p) = self.cached(&hash, now) {
            return Ok(p);
        }
        let compact = Compact::parse(token)?;
        let refused = |error: AuthError| Refused {
            error,
            issuer: compact.str_claim("iss").map(clip),
            subject: compact.str_claim("sub").map(clip),
        };
        let (index, checked) = self.verify(&compact, now).await.map_err(refused)?;
        let principal = Arc::new(checked.principal);
        self.cache.insert(
            hash,
            Verified {
                principal: principal.clone(),
                until: checked.until,
                issuer: index,
                kid: checked.kid,
            },
            now,
        );
        Ok(principal)
    }

    /// The principal of these headers when it is known without parsing or verifying a token: a
    /// static token, a token verified before and still cached, or no token where anonymous
    /// callers are allowed. `None` for anything else, including what a full check would refuse.
    /// Costs one SHA-256 of the token and a map lookup.
    pub fn known(&self, headers: &HeaderMap) -> Option<Arc<Principal>> {
        let Some(value) = authorization(headers).ok()? else {
            return self.anonymous.clone();
        };
        let hash = token_hash(bearer(value).ok()?);
        if let Some(p) = self.statics.get(&hash) {
            return Some(p.clone());
        }
        self.cached(&hash, unix_now())
    }

    /// A cached verification of the token with this hash, if its key is still published.
    fn cached(&self, hash: &[u8; 32], now: u64) -> Option<Arc<Principal>> {
        let v = self.cache.get(hash, now)?;
        let still_published = match &v.kid {
            Some(kid) => self.issuers[v.issuer].keys.current().has(kid),
            None => true,
        };
        if still_published {
            Some(v.principal)
        } else {
            self.cache.remove(hash);
            None
        }
    }

    async fn verify(
        &self,
        token: &Compact<'_>,
        now: u64,
    ) -> Result<(usize, oidc::Checked), AuthError> {
        let alg = token.header.alg.as_str();
        if alg.eq_ignore_ascii_case("none") {
            return Err(AuthError::AlgNone);
        }
        if alg.get(..2).is_some_and(|p| p.eq_ignore_ascii_case("HS")) {
            return Err(AuthError::Hmac(clip(alg)));
        }
        let iss = token.str_claim("iss").ok_or(AuthError::NoIssuer)?;
        let Some(&index) = self.by_issuer.get(iss) else {
            return Err(AuthError::UnknownIssuer(clip(iss), self.near(iss)));
        };
        let issuer = &self.issuers[index];
        let alg = issuer.algorithm(alg)?;
        match issuer.signature(token, alg).await {
            Ok(()) => {}
            Err(
                e @ (AuthError::UnknownKid { .. }
                | AuthError::NoUsableKey { .. }
                | AuthError::BadSignature(_)),
            ) => {
                return Err(self.signed_elsewhere(index, token, alg).unwrap_or(e));
            }
            Err(e) => return Err(e),
        }
        let (principal, until) = issuer.claims(&token.claims, now)?;
        Ok((
            index,
            oidc::Checked {
                principal,
                until,
                kid: token.header.kid.clone(),
            },
        ))
    }

    /// A token that names one issuer but verifies with another's key.
    fn signed_elsewhere(
        &self,
        claimed: usize,
        token: &Compact<'_>,
        alg: jsonwebtoken::Algorithm,
    ) -> Option<AuthError> {
        self.issuers
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != claimed)
            .find(|(_, other)| {
                matches!(
                    Issuer::check_signature(&other.keys.current(), token, alg),
                    KeyMatch::Verified
                )
            })
            .map(|(_, other)| AuthError::WrongIssuer {
                claimed: self.issuers[claimed].config.issuer.clone(),
                actual: other.config.issuer.clone(),
            })
    }

    /// A hint when `iss` differs from a configured issuer only by case or a trailing slash.
    fn near(&self, iss: &str) -> String {
        let norm = |s: &str| s.trim_end_matches('/').to_ascii_lowercase();
        self.issuers()
            .find(|c| norm(c) == norm(iss))
            .map(|c| format!(" (did you mean {c:?}? issuers must match exactly)"))
            .unwrap_or_default()
    }

    /// Tokens remembered as verified.
    pub fn cached_tokens(&self) -> usize {
        self.cache.len()
    }
}

/// The one `Authorization` header, if any.
///
/// # Errors
/// [`AuthError::TwoAuthorizations`]: which one counts would be a guess (HTTP/1.1 forbids
/// repeating it; proxies differ on which they pass on).
fn authorization(headers: &HeaderMap) -> Result<Option<&http::HeaderValue>, AuthError> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let first = values.next();
    if values.next().is_some() {
        return Err(AuthError::TwoAuthorizations);
    }
    Ok(first)
}

/// The token of a `Bearer` credential.
fn bearer(value: &http::HeaderValue) -> Result<&str, AuthError> {
    let text = value.to_str().map_err(|_| AuthError::NotBearer)?;
    let token = match text.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
        _ => return Err(AuthError::NotBearer),
    };
    if token.is_empty() {
        return Err(AuthError::NoToken);
    }
    Ok(token)
}

fn report(issuer: &Issuer, ok: bool, retry: Option<Duration>) {
    let iss = &issuer.config.issuer;
    if ok {
        let n = issuer.keys.current().keys.len();
        tracing::info!(issuer = %iss, keys = n, "loaded the issuer's signing keys");
    } else {
        let why = issuer.keys.last_error().unwrap_or_default();
        match retry {
            Some(after) => tracing::warn!(
                issuer = %iss,
                "couldn't load the issuer's signing keys: {why}; tokens from it are refused until they load; retrying in {}",
                humantime::format_duration(after)
            ),
            None => tracing::warn!(
                issuer = %iss,
                "couldn't load the issuer's signing keys at start-up: {why}; tokens from it are refused until they load; retrying in the background"
            ),
        }
    }
}

/// Refreshes an issuer's keys: every `jwks_max_age` while they load, with backoff (1 s doubling
/// to 60 s) while they do not. Failed refreshes keep the keys already held.
async fn keep_keys(issuer: Arc<Issuer>, stop: CancellationToken) {
    let mut backoff = Duration::from_secs(1);
    loop {
        let failing = issuer.keys.last_error().is_some();
        let wait = if failing {
            let w = backoff;
            backoff = (backoff * 2).min(Duration::from_secs(60));
            w
        } else {
            backoff = Duration::from_secs(1);
            let age = issuer
                .keys
                .current()
                .fetched
                .map_or(Duration::ZERO, |t| t.elapsed());
            issuer.config.jwks_max_age.saturating_sub(age)
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = stop.cancelled() => return,
        }
        let had = issuer.keys.last_error().is_none();
        let set = issuer.keys.refresh(true).await;
        let ok = issuer.keys.last_error().is_none();
        if ok != had || !ok {
            report(
                &issuer,
                ok && set.fetched.is_some(),
                (!ok).then_some(backoff),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::StaticToken;

    fn identity(anonymous: bool) -> Identity {
        Identity::new(&AuthConfig {
            anonymous,
            static_tokens: vec![StaticToken {
                name: "alice".into(),
                sha256: token_hash("cst_alice"),
            }],
            ..AuthConfig::anonymous()
        })
    }

    async fn refuse(id: &Identity, authorization: Option<&[u8]>) -> String {
        let mut h = HeaderMap::new();
        if let Some(a) = authorization {
            h.insert(
                header::AUTHORIZATION,
                http::HeaderValue::from_bytes(a).unwrap(),
            );
        }
        match id.authenticate(&h).await {
            Ok(p) => panic!("accepted as {}", p.name),
            Err(r) => r.error.reason().to_string(),
        }
    }

    fn jwt(header: &str, claims: &str) -> String {
        format!(
            "Bearer {}.{}.c2ln",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(claims)
        )
    }

    #[tokio::test]
    async fn headers_are_read_without_panicking_on_odd_input() {
        let id = identity(false);
        assert_eq!(refuse(&id, None).await, "no_token");
        assert_eq!(refuse(&id, Some(b"Bearer")).await, "not_bearer");
        assert_eq!(refuse(&id, Some(b"Bearer   ")).await, "no_token");
        assert_eq!(refuse(&id, Some(b"Basic YTpi")).await, "not_bearer");
        assert_eq!(refuse(&id, Some(b"Bearer \xff\xfe")).await, "not_bearer");
        assert_eq!(
            refuse(&id, Some(b"Bearer cst_bob")).await,
            "unknown_static_token"
        );
        let multibyte = jwt(r#"{"alg":"\u00e9\u00e9"}"#, r#"{"iss":"x"}"#);
        assert_eq!(
            refuse(&id, Some(multibyte.as_bytes())).await,
            "unknown_issuer"
        );
        let e = jwt(r#"{"alg":"\u00e9"}"#, "{}");
        assert_eq!(refuse(&id, Some(e.as_bytes())).await, "no_issuer");
        let none = jwt(r#"{"alg":"NONE"}"#, "{}");
        assert_eq!(refuse(&id, Some(none.as_bytes())).await, "alg_none");
        let hs = jwt(r#"{"alg":"hs512"}"#, "{}");
        assert_eq!(refuse(&id, Some(hs.as_bytes())).await, "alg_hmac");
        let config = crate::config::Config::parse(
            "[[auth.oidc]]\nissuer = \"https://issuer.example\"\naudiences = [\"c\"]\n[endpoints.a.upstream]\ntransport = \"stdio\"\ncommand = \"x\"\n",
            "t.toml",
        )
        .unwrap();
        let oidc = Identity::new(&config.auth);
        let near = jwt(r#"{"alg":"RS256"}"#, r#"{"iss":"https://Issuer.example/"}"#);
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, near.parse().unwrap());
        let refused = oidc.authenticate(&h).await.unwrap_err();
        assert!(
            refused
                .error
                .to_string()
                .contains("did you mean \"https://issuer.example\"?"),
            "{}",
            refused.error
        );
        assert_eq!(refused.issuer.as_deref(), Some("https://Issuer.example/"));
    }

    #[tokio::test]
    async fn static_and_anonymous_principals() {
        let id = identity(true);
        let mut h = HeaderMap::new();
        assert_eq!(
            id.authenticate(&h).await.unwrap().kind,
            PrincipalKind::Anonymous
        );
        h.insert(header::AUTHORIZATION, "bearer cst_alice".parse().unwrap());
        let p = id.authenticate(&h).await.unwrap();
        assert_eq!((p.kind, p.name.as_str()), (PrincipalKind::Static, "alice"));
        assert!(!p.audit.contains("cst_alice"));
        let closed = identity(false);
        assert_eq!(refuse(&closed, None).await, "no_token");
    }
}
