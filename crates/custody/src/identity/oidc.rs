//! Verifying a JWT from one configured OIDC issuer: algorithm, key, signature, time,
//! audience and required claims, in that order, each failure with its own reason.

use std::time::Duration;

use jsonwebtoken::Algorithm;
use serde_json::{Map, Value};

use super::error::AuthError;
use super::fetch::Fetcher;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::jwks::{KeyCache, KeySet, Source};
use super::jwt::Compact;
use super::principal::Principal;
use crate::config::OidcConfig;

/// A configured issuer and its keys.
pub struct Issuer {
    pub config: OidcConfig,
    pub keys: KeyCache,
    allowed: String,
}

/// A verified token.
pub struct Checked {
    pub principal: Principal,
    /// Unix seconds until which the token stays acceptable (`exp` plus skew).
    pub until: u64,
    pub kid: Option<String>,
}

/// What a signature check found.
pub enum KeyMatch {
    Verified,
    /// No key with the token's `kid` (or, without a `kid`, none fits the algorithm).
    NoKey,
    BadSignature,
}

impl Issuer {
    pub fn new(config: OidcConfig, fetcher: Fetcher) -> Self {
        let source = match &config.jwks_uri {
            Some(u) => Source::Jwks(u.clone()),
            None => Source::Discovery {
                issuer: config.issuer.clone(),
            },
        };
        let allowed = config
            .algorithms
            .iter()
            .map(|a| format!("{a:?}"))
            .collect::<Vec<_>>()
            .join(", ");
        Self {
            keys: KeyCache::new(source, fetcher, config.jwks_min_refresh),
            config,
            allowed,
        }
    }

    /// Checks that `alg` is allowed here.
    ///
    /// # Errors
    /// [`AuthError::AlgNotAllowed`].
    pub fn algorithm(&self, alg: &str) -> Result<Algorithm, AuthError> {
        alg.parse::<Algorithm>()
            .ok()
            .filter(|a| self.config.algorithms.contains(a))
            .ok_or_else(|| AuthError::AlgNotAllowed {
                alg: super::clip(alg),
                issuer: self.config.issuer.clone(),
                allowed: self.allowed.clone(),
            })
    }

    /// Checks the signature against the keys of `set`.
    pub fn check_signature(set: &KeySet, token: &Compact<'_>, alg: Algorithm) -> KeyMatch {
        let Ok(signature) = URL_SAFE_NO_PAD.decode(token.signature) else {
            return KeyMatch::BadSignature;
        };
        let kid = token.header.kid.as_deref();
        let candidates = set
            .keys
            .iter()
            .filter(|k| kid.is_none_or(|kid| k.kid.as_deref() == Some(kid)));
        let mut found = false;
        for key in candidates {
            if !key.fits(alg) {
                continue;
            }
            found = true;
            if key.verify(alg, token.signing_input.as_bytes(), &signature) {
                return KeyMatch::Verified;
            }
        }
        if found {
            KeyMatch::BadSignature
        } else {
            KeyMatch::NoKey
        }
    }

    /// Finds the key and checks the signature, refreshing the keys once (rate-limited) when
    /// the token names a key not held.
    ///
    /// # Errors
    /// No key, the issuer's keys cannot be had, or a bad signature.
    pub async fn signature(&self, token: &Compact<'_>, alg: Algorithm) -> Result<(), AuthError> {
        let mut set = self.keys.current();
        if set.fetched.is_none() {
            set = self.keys.refresh(false).await;
        }
        let mut refreshed = false;
        loop {
            if set.fetched.is_none() {
                return Err(AuthError::KeysUnavailable {
                    issuer: self.config.issuer.clone(),
                    reason: self
                        .keys
                        .last_error()
                        .unwrap_or_else(|| "they have not been fetched yet".into()),
                });
            }
            match Self::check_signature(&set, token, alg) {
                KeyMatch::Verified => return Ok(()),
                KeyMatch::BadSignature => {
                    return Err(AuthError::BadSignature(self.config.issuer.clone()));
                }
                KeyMatch::NoKey if !refreshed => {
                    refreshed = true;
                    set = self.keys.refresh(false).await;
                }
                KeyMatch::NoKey => {
                    return Err(match &token.header.kid {
                        Some(kid) => AuthError::UnknownKid {
                            kid: super::clip(kid),
                            issuer: self.config.issuer.clone(),
                        },
                        None => AuthError::NoUsableKey {
                            issuer: self.config.issuer.clone(),
                            alg: format!("{alg:?}"),
                        },
                    });
                }
            }
        }
    }

    /// Checks the claims of a token whose signature has been verified, and builds its
    /// principal.
    ///
    /// # Errors
    /// The first claim that is missing, out of time, or not accepted.
    pub fn claims(
        &self,
        claims: &Map<String, Value>,
        now: u64,
    ) -> Result<(Principal, u64), AuthError> {
        let skew = self.config.clock_skew.as_secs();
        let exp = claims
            .get("exp")
            .and_then(seconds)
            .ok_or(AuthError::NoExpiry)?;
        if now > exp.saturating_add(skew) {
            return Err(AuthError::Expired(Duration::from_secs(now - exp)));
        }
        if let Some(nbf) = claims.get("nbf").and_then(seconds)
            && nbf > now.saturating_add(skew)
        {
            return Err(AuthError::NotYetValid(Duration::from_secs(nbf - now)));
        }
        if let Some(iat) = claims.get("iat").and_then(seconds)
            && iat > now.saturating_add(skew)
        {
            return Err(AuthError::IssuedInFuture(Duration::from_secs(iat - now)));
        }
        let accepted = |a: &str| self.config.audiences.iter().any(|x| x == a);
        match claims.get("aud") {
            Some(Value::String(a)) if accepted(a) => {}
            Some(Value::Array(list)) if list.iter().any(|a| a.as_str().is_some_and(accepted)) => {}
            Some(other) => return Err(AuthError::WrongAudience(shorten(other))),
            None => return Err(AuthError::WrongAudience("a token without aud".into())),
        }
        let subject = match claims.get("sub") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            _ => return Err(AuthError::NoSubject),
        };
        for (claim, values) in &self.config.required_claims {
            match claims.get(claim) {
                None | Some(Value::Null) => return Err(AuthError::ClaimMissing(claim.clone())),
                Some(v) if values.contains(v) => {}
                Some(v) => {
                    return Err(AuthError::ClaimMismatch {
                        claim: claim.clone(),
                        actual: shorten(v),
                    });
                }
            }
        }
        let mut kept = Map::new();
        for c in &self.config.claims {
            if let Some(v) = claims.get(c) {
                kept.insert(c.clone(), v.clone());
            }
        }
        let name = self.config.name.render(claims);
        let binding: Vec<(&str, Option<&Value>)> = self
            .config
            .session_binding
            .iter()
            .map(|c| (c.as_str(), claims.get(c)))
            .collect();
        let principal = Principal::oidc(&self.config.issuer, subject, name, kept, &binding);
        Ok((principal, exp.saturating_add(skew)))
    }
}

/// A NumericDate: whole seconds, or a fraction (rounded down).
fn seconds(v: &Value) -> Option<u64> {
    v.as_u64().or_else(|| {
        v.as_f64()
            .filter(|f| f.is_finite() && *f >= 0.0)
            .map(|f| f as u64)
    })
}

/// A claim value for an error message: JSON, cut to 80 characters.
fn shorten(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() <= 80 {
        s
    } else {
        let cut: String = s.chars().take(77).collect();
        format!("{cut}...")
    }
}
