//! `[auth]`: OIDC issuers, static tokens and whether anonymous calls are allowed, validated into
//! what `identity` runs on.

use std::collections::HashSet;
use std::time::Duration;

use jsonwebtoken::Algorithm;
use serde_json::Value;

use super::raw::{RawAuth, RawOidc, RawStaticToken};
use super::{ConfigError, Resolver};

/// Who may call.
#[derive(Debug, Clone, Default)]
pub struct AuthConfig {
    /// Calls without a token are accepted as the anonymous principal.
    pub anonymous: bool,
    pub oidc: Vec<OidcConfig>,
    pub static_tokens: Vec<StaticToken>,
    pub token_cache_size: usize,
}

impl AuthConfig {
    /// Anonymous calls only: for tests and benchmarks.
    pub fn anonymous() -> Self {
        Self {
            anonymous: true,
            token_cache_size: DEFAULT_TOKEN_CACHE,
            ..Self::default()
        }
    }
}

const DEFAULT_TOKEN_CACHE: usize = 10_000;

/// Which CI system an issuer is, for its defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preset {
    GithubActions,
    Gitlab,
    Generic,
}

impl Preset {
    pub fn as_str(self) -> &'static str {
        match self {
            Preset::GithubActions => "github-actions",
            Preset::Gitlab => "gitlab",
            Preset::Generic => "generic",
        }
    }

    fn issuer(self) -> Option<&'static str> {
        match self {
            Preset::GithubActions => Some("https://token.actions.githubusercontent.com"),
            Preset::Gitlab => Some("https://gitlab.com"),
            Preset::Generic => None,
        }
    }

    /// The claims kept on the principal by default.
    pub fn claims(self) -> &'static [&'static str] {
        match self {
            Preset::GithubActions => &[
                "repository",
                "repository_owner",
                "repository_id",
                "ref",
                "ref_type",
                "sha",
                "workflow",
                "workflow_ref",
                "job_workflow_ref",
                "run_id",
                "run_number",
                "run_attempt",
                "actor",
                "actor_id",
                "environment",
                "event_name",
                "runner_environment",
            ],
            Preset::Gitlab => &[
                "namespace_path",
                "project_path",
                "project_id",
                "pipeline_id",
                "pipeline_source",
                "job_id",
                "ref",
                "ref_type",
                "ref_protected",
                "sha",
                "user_login",
                "environment",
            ],
            Preset::Generic => &[],
        }
    }

    fn name(self) -> &'static str {
        match self {
            Preset::GithubActions => "{repository}@{ref}",
            Preset::Gitlab => "{project_path}@{ref}",
            Preset::Generic => "{sub}",
        }
    }

    fn session_binding(self) -> &'static [&'static str] {
        match self {
            Preset::GithubActions => &["run_id", "run_attempt"],
            Preset::Gitlab => &["pipeline_id"],
            Preset::Generic => &[],
        }
    }

    fn algorithms(self) -> &'static [Algorithm] {
        match self {
            Preset::GithubActions | Preset::Gitlab => &[Algorithm::RS256],
            Preset::Generic => &[Algorithm::RS256, Algorithm::ES256],
        }
    }
}

/// One `[[auth.oidc]]` issuer.
#[derive(Debug, Clone)]
pub struct OidcConfig {
    pub preset: Preset,
    /// Exactly as it appears in `iss`.
    pub issuer: String,
    pub audiences: Vec<String>,
    pub jwks_uri: Option<String>,
    pub algorithms: Vec<Algorithm>,
    pub clock_skew: Duration,
    /// Claim name and the values accepted (any of them).
    pub required_claims: Vec<(String, Vec<Value>)>,
    pub claims: Vec<String>,
    pub name: NameTemplate,
    /// Claims besides `iss` and `sub` a session stays bound to.
    pub session_binding: Vec<String>,
    pub jwks_min_refresh: Duration,
    pub jwks_max_age: Duration,
}

/// A static bearer token: its principal's name and the SHA-256 of the token.
#[derive(Debug, Clone)]
pub struct StaticToken {
    pub name: String,
    pub sha256: [u8; 32],
}

/// A principal name with `{claim}` placeholders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameTemplate {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Claim(String),
}

impl NameTemplate {
    /// Parses `text`; `{{` and `}}` stand for literal braces.
    ///
    /// # Errors
    /// A description of the first malformed placeholder.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut lit = String::new();
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    lit.push('{');
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                    lit.push('}');
                }
                '{' => {
                    let mut name = String::new();
                    loop {
                        match chars.next() {
                            Some('}') => break,
                            Some(c)
                                if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.') =>
                            {
                                name.push(c);
                            }
                            Some(c) => {
                                return Err(format!(
                                    "{c:?} cannot be part of a claim name in {{...}}"
                                ));
                            }
                            None => return Err("a '{' is never closed".into()),
                        }
                    }
                    if name.is_empty() {
                        return Err("'{}' names no claim".into());
                    }
                    if !lit.is_empty() {
                        parts.push(Part::Text(std::mem::take(&mut lit)));
                    }
                    parts.push(Part::Claim(name));
                }
                '}' => return Err("a '}' has no '{' (write '}}' for a literal brace)".into()),
                c => lit.push(c),
            }
        }
        if !lit.is_empty() {
            parts.push(Part::Text(lit));
        }
        Ok(Self { parts })
    }

    /// Fills the placeholders from `claims`; a missing claim renders as `?`.
    pub fn render(&self, claims: &serde_json::Map<String, Value>) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Claim(c) => match claims.get(c) {
                    Some(Value::String(s)) => out.push_str(s),
                    Some(Value::Null) | None => out.push('?'),
                    Some(other) => out.push_str(&other.to_string()),
                },
            }
        }
        out
    }
}

/// Is this URL acceptable for fetching keys: `https`, or `http` to this machine only.
pub fn is_fetchable(url: &str) -> bool {
    let Ok(u) = url::Url::parse(url) else {
        return false;
    };
    match u.scheme() {
        "https" => u.host().is_some(),
        "http" => match u.host() {
            Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            None => false,
        },
        _ => false,
    }
}

/// Parses an algorithm name for an OIDC issuer, refusing the ones that are never safe.
///
/// # Errors
/// Why `name` cannot be used.
pub fn parse_algorithm(name: &str) -> Result<Algorithm, String> {
    match name {
        "none" | "None" | "NONE" => Err(
            "\"none\" is never accepted: an unsigned token proves nothing about who sent it".into(),
        ),
        "HS256" | "HS384" | "HS512" => Err(format!(
            "{name} is never accepted for an OIDC issuer: HMAC needs a shared secret, and an issuer's keys are public, so anyone could sign"
        )),
        "RS256" => Ok(Algorithm::RS256),
        "RS384" => Ok(Algorithm::RS384),
        "RS512" => Ok(Algorithm::RS512),
        "PS256" => Ok(Algorithm::PS256),
        "PS384" => Ok(Algorithm::PS384),
        "PS512" => Ok(Algorithm::PS512),
        "ES256" => Ok(Algorithm::ES256),
        "ES384" => Ok(Algorithm::ES384),
        "EdDSA" => Ok(Algorithm::EdDSA),
        other => Err(format!(
            "{other:?} is not a supported JWS algorithm; use RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384 or EdDSA"
        )),
    }
}

impl Resolver<'_> {
    pub(super) fn auth(&self, raw: Option<RawAuth>) -> Result<AuthConfig, ConfigError> {
        let Some(raw) = raw else {
            return Err(self.err(
                "auth",
                "no [auth] section: say who may call. Add [[auth.oidc]] for CI tokens (preset = \"github-actions\" or \"gitlab\") or [[auth.static]] tokens (custody token create NAME), or set `anonymous = true` under [auth] to accept calls without a token (local testing only)",
            ));
        };
        let anonymous = raw.anonymous.unwrap_or(false);
        let mut issuers = HashSet::new();
        let oidc = raw
            .oidc
            .into_iter()
            .enumerate()
            .map(|(i, o)| {
                let c = self.oidc(i, o)?;
                if !issuers.insert(c.issuer.clone()) {
                    return Err(self.err(
                        &format!("auth.oidc.{i}.issuer"),
                        format!("issuer {:?} is configured twice", c.issuer),
                    ));
                }
                Ok(c)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut names = HashSet::new();
        let mut hashes = HashSet::new();
        let static_tokens = raw
            .static_tokens
            .into_iter()
            .enumerate()
            .map(|(i, t)| {
                let t = self.static_token(i, t)?;
                if !names.insert(t.name.clone()) {
                    return Err(self.err(
                        &format!("auth.static.{i}.name"),
                        format!("a static token named {:?} is configured twice", t.name),
                    ));
                }
                if !hashes.insert(t.sha256) {
                    return Err(self.err(
                        &format!("auth.static.{i}.sha256"),
                        "this hash is configured twice: one token would name two principals",
                    ));
                }
                Ok(t)
            })
            .collect::<Result<Vec<_>, _>>()?;
        if !anonymous && oidc.is_empty() && static_tokens.is_empty() {
            return Err(self.err(
                "auth",
                "[auth] accepts nobody: add [[auth.oidc]] or [[auth.static]] entries, or set anonymous = true (local testing only)",
            ));
        }
        Ok(AuthConfig {
            anonymous,
            oidc,
            static_tokens,
            token_cache_size: raw.token_cache_size.unwrap_or(DEFAULT_TOKEN_CACHE),
        })
    }

    fn oidc(&self, i: usize, raw: RawOidc) -> Result<OidcConfig, ConfigError> {
        let key = |k: &str| format!("auth.oidc.{i}.{k}");
        let preset = match raw.preset.as_deref() {
            Some("github-actions" | "github") => Preset::GithubActions,
            Some("gitlab") => Preset::Gitlab,
            None | Some("generic") => Preset::Generic,
            Some(other) => {
                return Err(self.err(
                    &key("preset"),
                    format!(
                        "{other:?} is not a preset; use \"github-actions\", \"gitlab\" or \"generic\""
                    ),
                ));
            }
        };
        let issuer = match (raw.issuer, preset.issuer()) {
            (Some(i), _) => i,
            (None, Some(i)) => i.to_string(),
            (None, None) => {
                return Err(self.err(
                    &format!("auth.oidc.{i}"),
                    "a generic issuer needs `issuer`: the exact `iss` of its tokens",
                ));
            }
        };
        if !is_fetchable(&issuer) {
            return Err(self.err(
                &key("issuer"),
                format!(
                    "{issuer:?} must be an https:// URL (http:// only for localhost): keys fetched in the clear could be swapped"
                ),
            ));
        }
        if let Some(uri) = &raw.jwks_uri
            && !is_fetchable(uri)
        {
            return Err(self.err(
                &key("jwks_uri"),
                format!("{uri:?} must be an https:// URL (http:// only for localhost)"),
            ));
        }
        if raw.audiences.is_empty() || raw.audiences.iter().any(String::is_empty) {
            return Err(self.err(
                &key("audiences"),
                "list at least one audience: the `aud` your jobs request for custody (GitHub: core.getIDToken(\"AUD\") or the `audience` query parameter; GitLab: id_tokens.NAME.aud)",
            ));
        }
        let algorithms = match raw.algorithms {
            None => preset.algorithms().to_vec(),
            Some(list) if list.is_empty() => {
                return Err(self.err(&key("algorithms"), "list at least one algorithm"));
            }
            Some(list) => list
                .iter()
                .enumerate()
                .map(|(j, a)| {
                    parse_algorithm(a)
                        .map_err(|m| self.err(&format!("auth.oidc.{i}.algorithms.{j}"), m))
                })
                .collect::<Result<Vec<_>, _>>()?,
        };
        let clock_skew = raw.clock_skew.unwrap_or(Duration::from_secs(60));
        if clock_skew > Duration::from_secs(600) {
            return Err(self.err(&key("clock_skew"), "must be at most 10m"));
        }
        let required_claims = raw
            .required_claims
            .into_iter()
            .map(|(claim, v)| {
                let ckey = format!("auth.oidc.{i}.required_claims.{claim}");
                let values = match v {
                    toml::Value::Array(list) if !list.is_empty() => list
                        .into_iter()
                        .map(|v| self.claim_value(&ckey, v))
                        .collect::<Result<Vec<_>, _>>()?,
                    toml::Value::Array(_) => {
                        return Err(self.err(&ckey, "an empty list accepts nothing"));
                    }
                    v => vec![self.claim_value(&ckey, v)?],
                };
                Ok((claim, values))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let claims = raw
            .claims
            .unwrap_or_else(|| preset.claims().iter().map(|c| (*c).to_string()).collect());
        let name_text = raw.name.as_deref().unwrap_or(preset.name());
        let name = NameTemplate::parse(name_text)
            .map_err(|m| self.err(&key("name"), format!("{name_text:?}: {m}")))?;
        let session_binding = raw.session_binding.unwrap_or_else(|| {
            preset
                .session_binding()
                .iter()
                .map(|c| (*c).to_string())
                .collect()
        });
        let jwks_min_refresh = raw.jwks_min_refresh.unwrap_or(Duration::from_secs(10));
        let jwks_max_age = raw.jwks_max_age.unwrap_or(Duration::from_secs(3600));
        if jwks_max_age < Duration::from_secs(1) || jwks_max_age < jwks_min_refresh {
            return Err(self.err(
                &key("jwks_max_age"),
                "must be at least 1s and not shorter than jwks_min_refresh",
            ));
        }
        Ok(OidcConfig {
            preset,
            issuer,
            audiences: raw.audiences,
            jwks_uri: raw.jwks_uri,
            algorithms,
            clock_skew,
            required_claims,
            claims,
            name,
            session_binding,
            jwks_min_refresh,
            jwks_max_age,
        })
    }

    fn claim_value(&self, key: &str, v: toml::Value) -> Result<Value, ConfigError> {
        match v {
            toml::Value::String(s) => Ok(Value::String(s)),
            toml::Value::Integer(n) => Ok(Value::from(n)),
            toml::Value::Boolean(b) => Ok(Value::Bool(b)),
            _ => Err(self.err(
                key,
                "a required claim is a string, integer or boolean, or a list of them",
            )),
        }
    }

    fn static_token(&self, i: usize, raw: RawStaticToken) -> Result<StaticToken, ConfigError> {
        let name = raw.name.trim();
        if name.is_empty() || name.len() > 128 || name.chars().any(char::is_control) {
            return Err(self.err(
                &format!("auth.static.{i}.name"),
                "must be 1-128 printable characters",
            ));
        }
        let mut sha256 = [0u8; 32];
        hex::decode_to_slice(raw.sha256.trim(), &mut sha256).map_err(|_| {
            self.err(
                &format!("auth.static.{i}.sha256"),
                "must be the token's SHA-256 as 64 hex digits (custody token create NAME prints it); never the token itself",
            )
        })?;
        Ok(StaticToken {
            name: name.to_string(),
            sha256,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_render_claims() {
        let t = NameTemplate::parse("{repository}@{ref} {{x}}").unwrap();
        let claims = serde_json::json!({"repository": "acme/api", "ref": "refs/heads/main"});
        let claims = claims.as_object().unwrap();
        assert_eq!(t.render(claims), "acme/api@refs/heads/main {x}");
        let t = NameTemplate::parse("{missing}-{n}").unwrap();
        let claims = serde_json::json!({"n": 7});
        assert_eq!(t.render(claims.as_object().unwrap()), "?-7");
    }

    #[test]
    fn bad_templates_are_explained() {
        assert!(
            NameTemplate::parse("{repo")
                .unwrap_err()
                .contains("never closed")
        );
        assert!(
            NameTemplate::parse("{}")
                .unwrap_err()
                .contains("names no claim")
        );
        assert!(NameTemplate::parse("a}").unwrap_err().contains("no '{'"));
        assert!(
            NameTemplate::parse("{a b}")
                .unwrap_err()
                .contains("claim name")
        );
    }

    #[test]
    fn unsafe_algorithms_are_refused() {
        assert!(
            parse_algorithm("none")
                .unwrap_err()
                .contains("never accepted")
        );
        assert!(parse_algorithm("HS256").unwrap_err().contains("HMAC"));
        assert!(
            parse_algorithm("XS1")
                .unwrap_err()
                .contains("not a supported")
        );
        assert_eq!(parse_algorithm("ES256").unwrap(), Algorithm::ES256);
    }

    #[test]
    fn key_urls_must_be_private_or_https() {
        assert!(is_fetchable("https://token.actions.githubusercontent.com"));
        assert!(is_fetchable("http://127.0.0.1:9000/"));
        assert!(is_fetchable("http://localhost:9000/"));
        assert!(!is_fetchable("http://issuer.example.com/"));
        assert!(!is_fetchable("ftp://127.0.0.1/"));
        assert!(!is_fetchable("not a url"));
    }
}
