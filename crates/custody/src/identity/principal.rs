//! Who made a call, as the rest of the gateway sees it.

use std::sync::Arc;

use serde_json::{Map, Value, json};

/// How the caller proved who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrincipalKind {
    /// A verified OIDC token (a CI job).
    Oidc,
    /// A static token from `[[auth.static]]`.
    Static,
    /// No token, where `auth.anonymous = true` allows it.
    Anonymous,
}

impl PrincipalKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PrincipalKind::Oidc => "oidc",
            PrincipalKind::Static => "static",
            PrincipalKind::Anonymous => "anonymous",
        }
    }
}

/// A verified caller.
#[derive(Debug)]
pub struct Principal {
    pub kind: PrincipalKind,
    /// The token's `iss`, for OIDC principals.
    pub issuer: Option<String>,
    /// The token's `sub`, or the static token's name.
    pub subject: String,
    /// The display name rendered from the issuer's template.
    pub name: String,
    /// The kept claims.
    pub claims: Map<String, Value>,
    /// The `caller` field of every audit entry this principal causes, as JSON text.
    pub audit: Arc<str>,
    /// What a session is bound to: the same value means the same principal, whatever token it
    /// presents.
    pub binding: Arc<str>,
}

impl Principal {
    /// A principal from an OIDC token: `binding` holds the claims that must stay the same for
    /// a session to continue with a fresh token.
    pub fn oidc(
        issuer: &str,
        subject: String,
        name: String,
        claims: Map<String, Value>,
        binding: &[(&str, Option<&Value>)],
    ) -> Self {
        let audit = json!({
            "kind": "oidc",
            "verified": true,
            "issuer": issuer,
            "subject": subject,
            "name": name,
            "claims": claims,
        })
        .to_string();
        let mut key = json!(["oidc", issuer, subject]);
        if let Some(list) = key.as_array_mut() {
            for (claim, value) in binding {
                list.push(json!([claim, value]));
            }
        }
        Self {
            kind: PrincipalKind::Oidc,
            issuer: Some(issuer.to_string()),
            subject,
            name,
            claims,
            audit: audit.into(),
            binding: key.to_string().into(),
        }
    }

    /// The principal of a static token.
    pub fn static_token(name: &str) -> Self {
        let audit = json!({
            "kind": "static",
            "verified": true,
            "subject": name,
            "name": name,
        })
        .to_string();
        Self {
            kind: PrincipalKind::Static,
            issuer: None,
            subject: name.to_string(),
            name: name.to_string(),
            claims: Map::new(),
            audit: audit.into(),
            binding: json!(["static", name]).to_string().into(),
        }
    }

    /// The caller without a token.
    pub fn anonymous() -> Self {
        Self {
            kind: PrincipalKind::Anonymous,
            issuer: None,
            subject: String::new(),
            name: "anonymous".into(),
            claims: Map::new(),
            audit: crate::audit::ANONYMOUS.into(),
            binding: "[\"anonymous\"]".into(),
        }
    }

    /// The gateway itself, as the caller of the requests it makes of an upstream on its own
    /// behalf (asking `server/discover` which versions the upstream speaks). It has no rights:
    /// it is never authorized, and approvals treat it as anonymous.
    pub fn gateway() -> Self {
        Self {
            kind: PrincipalKind::Anonymous,
            issuer: None,
            subject: String::new(),
            name: "gateway".into(),
            claims: Map::new(),
            audit: crate::audit::GATEWAY.into(),
            binding: "[\"gateway\"]".into(),
        }
    }
}

/// The `caller` of an `auth_failure` entry: what the token claimed, marked unverified.
pub fn unverified(issuer: Option<&str>, subject: Option<&str>) -> String {
    json!({
        "kind": "unverified",
        "verified": false,
        "issuer": issuer,
        "subject": subject,
    })
    .to_string()
}
