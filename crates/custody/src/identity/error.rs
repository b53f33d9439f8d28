//! Why a caller was not authenticated, in words for the person whose job failed.

use std::time::Duration;

/// A refused credential. `Display` is the `error_description` the client gets: specific, and
/// never containing the token.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AuthError {
    #[error(
        "no bearer token: send `Authorization: Bearer <token>` with a CI OIDC token or a custody static token"
    )]
    NoToken,
    #[error("the Authorization header must be `Bearer <token>`")]
    NotBearer,
    #[error(
        "two Authorization headers: send exactly one `Authorization: Bearer <token>` (which one counts would be a guess)"
    )]
    TwoAuthorizations,
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    #[error("unknown static token: no [[auth.static]] entry has this token's hash")]
    UnknownStatic,
    #[error("alg \"none\" is never accepted: an unsigned token proves nothing about who sent it")]
    AlgNone,
    #[error(
        "alg {0:?} is never accepted: HMAC tokens can be forged by anyone holding the issuer's public key"
    )]
    Hmac(String),
    #[error("alg {alg:?} is not allowed for issuer {issuer:?} (allowed: {allowed})")]
    AlgNotAllowed {
        alg: String,
        issuer: String,
        allowed: String,
    },
    #[error("the token has no iss claim")]
    NoIssuer,
    #[error("tokens from issuer {0:?} are not accepted: no [[auth.oidc]] entry has this issuer{1}")]
    UnknownIssuer(String, String),
    #[error(
        "wrong issuer: the token claims issuer {claimed:?} but is signed with a key of {actual:?}"
    )]
    WrongIssuer { claimed: String, actual: String },
    #[error("unknown key id {kid:?}: issuer {issuer:?} does not publish it, even after a refresh")]
    UnknownKid { kid: String, issuer: String },
    #[error("issuer {issuer:?} publishes no key usable with alg {alg}")]
    NoUsableKey { issuer: String, alg: String },
    #[error("the keys of issuer {issuer:?} are unavailable: {reason}; try again shortly")]
    KeysUnavailable { issuer: String, reason: String },
    #[error("bad signature: the token was not signed by a key of issuer {0:?}")]
    BadSignature(String),
    #[error("the token has no exp claim; only tokens that expire are accepted")]
    NoExpiry,
    #[error("the token expired {} ago", humantime::format_duration(*.0))]
    Expired(Duration),
    #[error("the token is not valid yet (nbf is {} from now)", humantime::format_duration(*.0))]
    NotYetValid(Duration),
    #[error("the token was issued in the future (iat is {} from now); check the clocks", humantime::format_duration(*.0))]
    IssuedInFuture(Duration),
    #[error(
        "wrong audience: {0} is not an audience this gateway accepts; request the token for the audience in [[auth.oidc]] audiences"
    )]
    WrongAudience(String),
    #[error("the token has no sub claim")]
    NoSubject,
    #[error("required claim {0:?} is missing")]
    ClaimMissing(String),
    #[error("required claim {claim:?} is {actual}, which is not accepted")]
    ClaimMismatch { claim: String, actual: String },
}

impl AuthError {
    /// The caller may retry the same token soon: the gateway, not the token, is the problem.
    pub fn is_temporary(&self) -> bool {
        matches!(self, AuthError::KeysUnavailable { .. })
    }

    /// Is the request malformed (HTTP 400) rather than its credential refused (401)?
    pub fn is_bad_request(&self) -> bool {
        matches!(self, AuthError::TwoAuthorizations)
    }

    /// A short stable name for logs and the audit entry.
    pub fn reason(&self) -> &'static str {
        match self {
            AuthError::NoToken => "no_token",
            AuthError::NotBearer => "not_bearer",
            AuthError::TwoAuthorizations => "two_authorizations",
            AuthError::Malformed(_) => "malformed",
            AuthError::UnknownStatic => "unknown_static_token",
            AuthError::AlgNone => "alg_none",
            AuthError::Hmac(_) => "alg_hmac",
            AuthError::AlgNotAllowed { .. } => "alg_not_allowed",
            AuthError::NoIssuer => "no_issuer",
            AuthError::UnknownIssuer(..) => "unknown_issuer",
            AuthError::WrongIssuer { .. } => "wrong_issuer",
            AuthError::UnknownKid { .. } => "unknown_kid",
            AuthError::NoUsableKey { .. } => "no_usable_key",
            AuthError::KeysUnavailable { .. } => "keys_unavailable",
            AuthError::BadSignature(_) => "bad_signature",
            AuthError::NoExpiry => "no_expiry",
            AuthError::Expired(_) => "expired",
            AuthError::NotYetValid(_) => "not_yet_valid",
            AuthError::IssuedInFuture(_) => "issued_in_future",
            AuthError::WrongAudience(_) => "wrong_audience",
            AuthError::NoSubject => "no_subject",
            AuthError::ClaimMissing(_) => "claim_missing",
            AuthError::ClaimMismatch { .. } => "claim_mismatch",
        }
    }
}

/// The most bytes of one claim copied from a token that was not verified (into an error, the
/// log, a challenge): a forged token can make them as long as the header allows.
pub const CLAIM_MAX: usize = 256;

/// A claim of an unverified token, clipped to [`CLAIM_MAX`] bytes (at a character boundary,
/// with `…` where it was cut).
pub fn clip(s: &str) -> String {
    if s.len() <= CLAIM_MAX {
        return s.to_string();
    }
    let mut end = CLAIM_MAX - '…'.len_utf8();
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// A refusal with what the token said about itself, unverified, for the audit entry.
#[derive(Debug, Clone)]
pub struct Refused {
    pub error: AuthError,
    pub issuer: Option<String>,
    pub subject: Option<String>,
}

impl From<AuthError> for Refused {
    fn from(error: AuthError) -> Self {
        Self {
            error,
            issuer: None,
            subject: None,
        }
    }
}
