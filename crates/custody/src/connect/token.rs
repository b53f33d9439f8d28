//! Where `custody connect` gets the job's own identity: GitHub Actions' OIDC token service
//! (when `ACTIONS_ID_TOKEN_REQUEST_URL` and `ACTIONS_ID_TOKEN_REQUEST_TOKEN` are set), or a token
//! in an environment variable or a file (GitLab's `id_tokens`, a static token). A JWT is
//! replaced before it expires: fetched again from GitHub, or read again from its file.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http::{Request, header};
use http_body_util::Empty;
use serde_json::Value;

/// A token is replaced when it has less than this left.
const RENEW_BEFORE: Duration = Duration::from_secs(60);

/// Where the token comes from.
#[derive(Debug, Clone)]
pub enum Source {
    /// GitHub Actions' token service, for this audience.
    GitHub {
        request_url: String,
        request_token: String,
        audience: String,
    },
    /// An environment variable (read once: a job's environment does not change).
    Env(String),
    /// A file, read again when its token nears expiry.
    File(PathBuf),
}

impl Source {
    /// GitHub Actions when its two variables are set, else `--token-file`, else the variable
    /// `token_env`.
    pub fn detect(audience: &str, token_env: &str, token_file: Option<PathBuf>) -> Self {
        let var = |n: &str| std::env::var(n).ok().filter(|v| !v.is_empty());
        match (
            var("ACTIONS_ID_TOKEN_REQUEST_URL"),
            var("ACTIONS_ID_TOKEN_REQUEST_TOKEN"),
        ) {
            (Some(request_url), Some(request_token)) => Source::GitHub {
                request_url,
                request_token,
                audience: audience.to_string(),
            },
            _ => match token_file {
                Some(f) => Source::File(f),
                None => Source::Env(token_env.to_string()),
            },
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Source::GitHub { audience, .. } => {
                format!("the GitHub Actions OIDC token (audience {audience:?})")
            }
            Source::Env(n) => format!("${n}"),
            Source::File(p) => p.display().to_string(),
        }
    }
}

/// A token and when to replace it.
pub struct Token {
    pub value: String,
    renew_at: Option<SystemTime>,
}

impl Token {
    pub fn needs_renewal(&self) -> bool {
        self.renew_at.is_some_and(|t| SystemTime::now() >= t)
    }
}

/// The `exp` of a JWT, read without verifying it (the gateway verifies).
fn expiry(token: &str) -> Option<SystemTime> {
    let payload = token.split('.').nth(1)?;
    let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()?;
    let exp = claims.get("exp")?.as_u64()?;
    Some(UNIX_EPOCH + Duration::from_secs(exp))
}

/// Gets a token from `source`.
///
/// # Errors
/// What failed, in a sentence for the job's log (never the token).
pub async fn fetch(source: &Source) -> Result<Token, String> {
    let value = match source {
        Source::Env(name) => std::env::var(name)
            .ok()
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
            .ok_or_else(|| {
                format!(
                    "no token: ${name} is not set, and this is not a GitHub Actions job with `permissions: id-token: write` (ACTIONS_ID_TOKEN_REQUEST_URL is not set); give the token in ${name} or --token-file"
                )
            })?,
        Source::File(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("couldn't read the token file {}: {e}", path.display()))?;
            let t = text.lines().next().unwrap_or("").trim().to_string();
            if t.is_empty() {
                return Err(format!("the token file {} is empty", path.display()));
            }
            t
        }
        Source::GitHub {
            request_url,
            request_token,
            audience,
        } => github(request_url, request_token, audience).await?,
    };
    let renew_at = expiry(&value).map(|exp| exp.checked_sub(RENEW_BEFORE).unwrap_or(exp));
    Ok(Token { value, renew_at })
}

/// Asks GitHub's token service for an OIDC token for `audience`.
async fn github(request_url: &str, request_token: &str, audience: &str) -> Result<String, String> {
    let sep = if request_url.contains('?') { '&' } else { '?' };
    let aud: String = url::form_urlencoded::byte_serialize(audience.as_bytes()).collect();
    let url = format!("{request_url}{sep}audience={aud}");
    let uri: http::Uri = url
        .parse()
        .map_err(|_| "ACTIONS_ID_TOKEN_REQUEST_URL is not a URL".to_string())?;
    let req = Request::get(uri)
        .header(header::AUTHORIZATION, format!("Bearer {request_token}"))
        .header(header::ACCEPT, "application/json")
        .header(
            header::USER_AGENT,
            concat!("custody/", env!("CARGO_PKG_VERSION")),
        )
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("couldn't build the token request: {e}"))?;
    let client = crate::net::client::<Empty<Bytes>>(Duration::from_secs(10));
    let ask = async {
        let (status, body) =
            crate::net::exchange(&client, req, "GitHub's OIDC token service", 64 * 1024).await?;
        if !status.is_success() {
            return Err(format!(
                "GitHub's OIDC token service answered {status}; does the job have `permissions: id-token: write`?"
            ));
        }
        let v: Value = serde_json::from_slice(&body)
            .map_err(|_| "GitHub's OIDC token service did not answer JSON".to_string())?;
        v.get("value")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .map(str::to_string)
            .ok_or_else(|| "GitHub's OIDC token answer has no `value`".to_string())
    };
    tokio::time::timeout(Duration::from_secs(30), ask)
        .await
        .map_err(|_| "GitHub's OIDC token service did not answer within 30s".to_string())?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_jwt_is_renewed_a_minute_before_it_expires_and_an_opaque_token_never() {
        let exp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 30;
        let payload = URL_SAFE_NO_PAD.encode(format!("{{\"exp\":{exp}}}"));
        let jwt = format!("e30.{payload}.c2ln");
        let t = Token {
            renew_at: expiry(&jwt).map(|e| e - RENEW_BEFORE),
            value: jwt,
        };
        assert!(t.needs_renewal(), "30 s left is under a minute");
        let opaque = Token {
            renew_at: expiry("cst_abc"),
            value: "cst_abc".into(),
        };
        assert!(!opaque.needs_renewal());
    }
}
