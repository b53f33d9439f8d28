//! OAuth 2.0 client credentials (RFC 6749 §4.4) for an HTTP upstream: the gateway asks the
//! token endpoint for an access token with its client id and secret, caches it, and asks again
//! before it expires (at 80% of its lifetime, and at least 30 s before the end). Concurrent
//! calls wait for one request.

use std::sync::{PoisonError, RwLock};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http::{HeaderValue, Request, StatusCode, Uri, header};
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::Value;

use crate::config::{OAuthAuth, OAuthConfig, SecretRef};

const TIMEOUT: Duration = Duration::from_secs(10);
/// Used when the token endpoint does not say how long a token lasts.
const DEFAULT_LIFETIME: Duration = Duration::from_secs(300);

struct Token {
    header: HeaderValue,
    raw: String,
    expires: Instant,
    refresh_at: Instant,
}

pub struct OAuth {
    endpoint: String,
    token_url: Uri,
    client_id: SecretRef,
    client_secret: SecretRef,
    /// The resolved client id and secret.
    client: RwLock<(String, String)>,
    scope: Option<String>,
    audience: Option<String>,
    auth: OAuthAuth,
    token: tokio::sync::Mutex<Option<Token>>,
    /// The tokens handed out most recently (current and previous), for scrubbing.
    recent: RwLock<Vec<String>>,
    http: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl OAuth {
    /// # Errors
    /// The client id or secret cannot be resolved.
    pub fn new(endpoint: &str, cfg: &OAuthConfig) -> Result<Self, String> {
        let o = Self {
            endpoint: endpoint.to_string(),
            token_url: cfg.token_url.clone(),
            client_id: cfg.client_id.clone(),
            client_secret: cfg.client_secret.clone(),
            client: RwLock::new((String::new(), String::new())),
            scope: cfg.scope.clone(),
            audience: cfg.audience.clone(),
            auth: cfg.auth,
            token: tokio::sync::Mutex::new(None),
            recent: RwLock::new(Vec::new()),
            http: crate::net::client(Duration::from_secs(5)),
        };
        o.reload()?;
        Ok(o)
    }

    /// Resolves the client id and secret again.
    ///
    /// # Errors
    /// A reference that cannot be resolved (the values in force stay).
    pub fn reload(&self) -> Result<(), String> {
        let at = |what: &str, e: String| format!("endpoint {:?}, oauth {what}: {e}", self.endpoint);
        let id = self.client_id.resolve().map_err(|e| at("client_id", e))?;
        let secret = self
            .client_secret
            .resolve()
            .map_err(|e| at("client_secret", e))?;
        *self.client.write().unwrap_or_else(PoisonError::into_inner) = (id, secret);
        Ok(())
    }

    /// The client secret (as written, and in its Basic form) and recent tokens: what the
    /// masker must scrub.
    pub fn secrets(&self) -> Vec<String> {
        let mut out = self
            .recent
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let (id, secret) = self
            .client
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        out.push(basic_credentials(&id, &secret));
        out.push(secret);
        out
    }

    /// `text` with the client secret and the tokens replaced: what a token endpoint says is
    /// quoted in errors and the gateway's log.
    fn scrubbed(&self, text: &str) -> String {
        crate::credentials::Scrub::from(self.secrets()).redacted(text)
    }

    /// A token's `Authorization` value, and whether it was fetched just now.
    ///
    /// # Errors
    /// The token endpoint failed and no unexpired token is at hand.
    pub async fn bearer(&self) -> Result<(HeaderValue, bool), String> {
        let mut held = self.token.lock().await;
        let now = Instant::now();
        if let Some(t) = held.as_ref()
            && now < t.refresh_at
        {
            return Ok((t.header.clone(), false));
        }
        match self.fetch().await {
            Ok(t) => {
                let header = t.header.clone();
                {
                    let mut recent = self.recent.write().unwrap_or_else(PoisonError::into_inner);
                    recent.push(t.raw.clone());
                    if recent.len() > 2 {
                        recent.remove(0);
                    }
                }
                tracing::debug!(endpoint = %self.endpoint, "fetched an OAuth token for the upstream");
                *held = Some(t);
                Ok((header, true))
            }
            Err(e) => match held.as_ref() {
                // Still valid: use it and try again on the next call.
                Some(t) if now < t.expires => {
                    tracing::warn!(endpoint = %self.endpoint, "couldn't refresh the upstream's OAuth token, using the current one until it expires: {e}");
                    Ok((t.header.clone(), false))
                }
                _ => Err(e),
            },
        }
    }

    async fn fetch(&self) -> Result<Token, String> {
        let url = &self.token_url;
        let req = self.token_request()?;
        self.exchange(url, req).await
    }

    /// The token request: form and client authentication (built before any await: the form
    /// serializer is not `Send`).
    fn token_request(&self) -> Result<Request<Full<Bytes>>, String> {
        let url = &self.token_url;
        let (id, secret) = self
            .client
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let mut form = url::form_urlencoded::Serializer::new(String::new());
        form.append_pair("grant_type", "client_credentials");
        if let Some(s) = &self.scope {
            form.append_pair("scope", s);
        }
        if let Some(a) = &self.audience {
            form.append_pair("audience", a);
        }
        let mut req = Request::post(url.clone())
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::ACCEPT, "application/json")
            .header(
                header::USER_AGENT,
                concat!("custody/", env!("CARGO_PKG_VERSION")),
            );
        match self.auth {
            OAuthAuth::Basic => {
                let basic = basic_credentials(&id, &secret);
                req = req.header(header::AUTHORIZATION, format!("Basic {basic}"));
            }
            OAuthAuth::Post => {
                form.append_pair("client_id", &id);
                form.append_pair("client_secret", &secret);
            }
        }
        req.body(Full::new(Bytes::from(form.finish())))
            .map_err(|e| format!("couldn't build the token request: {e}"))
    }

    async fn exchange(&self, url: &Uri, req: Request<Full<Bytes>>) -> Result<Token, String> {
        let exchange = async {
            let what = format!("the OAuth token endpoint {url}");
            let (status, body) = crate::net::exchange(&self.http, req, &what, 64 * 1024).await?;
            let json: Value = serde_json::from_slice(&body).map_err(|_| {
                format!("the OAuth token endpoint {url} answered {status} without JSON")
            })?;
            if status != StatusCode::OK {
                // RFC 6749 §5.2: `error` and `error_description` say why; never echo the rest.
                let error = json.get("error").and_then(Value::as_str).unwrap_or("?");
                let description = json
                    .get("error_description")
                    .and_then(Value::as_str)
                    .map(|d| format!(": {d}"))
                    .unwrap_or_default();
                // Both are the endpoint's words, and may echo what it was sent.
                return Err(self.scrubbed(&format!(
                    "the OAuth token endpoint {url} refused the client credentials ({status}, {error}{description})"
                )));
            }
            Ok(json)
        };
        let json = tokio::time::timeout(TIMEOUT, exchange)
            .await
            .map_err(|_| {
                format!(
                    "the OAuth token endpoint {url} did not answer within {}s",
                    TIMEOUT.as_secs()
                )
            })??;
        let raw = json
            .get("access_token")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                format!("the OAuth token endpoint {url} answered without an access_token")
            })?
            .to_string();
        if let Some(kind) = json.get("token_type").and_then(Value::as_str)
            && !kind.eq_ignore_ascii_case("bearer")
        {
            return Err(format!(
                "the OAuth token endpoint {url} issued a {kind:?} token; only bearer tokens are supported"
            ));
        }
        let lifetime = json
            .get("expires_in")
            .and_then(Value::as_u64)
            .map_or(DEFAULT_LIFETIME, Duration::from_secs);
        let header = HeaderValue::from_str(&format!("Bearer {raw}")).map_err(|_| {
            format!("the OAuth token endpoint {url} issued a token that is not a header value")
        })?;
        let now = Instant::now();
        let early = (lifetime / 5).max(Duration::from_secs(30)).min(lifetime);
        Ok(Token {
            header,
            raw,
            expires: now + lifetime,
            refresh_at: now + lifetime - early,
        })
    }
}

/// The client credentials of HTTP Basic authentication (RFC 6749 §2.3.1: each form-encoded,
/// then joined by `:` and Base64-encoded).
fn basic_credentials(id: &str, secret: &str) -> String {
    let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    STANDARD.encode(format!("{}:{}", enc(id), enc(secret)))
}
