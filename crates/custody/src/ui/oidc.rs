//! Sign-in to the web page with the organisation's OIDC provider: the authorization code flow
//! with PKCE (RFC 7636, `S256`), a `state` bound to the browser and a `nonce` bound to the ID
//! token. The ID token the provider returns is then the session's bearer token, checked like
//! any other by the `[[auth.oidc]]` issuer it must also be.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use sha2::{Digest, Sha256};
use tokio::sync::OnceCell;

use crate::config::UiOidcConfig;

const TIMEOUT: Duration = Duration::from_secs(10);
/// The largest token endpoint answer read.
const MAX_ANSWER: usize = 256 * 1024;

/// The provider's endpoints, from its discovery document.
#[derive(Debug, Clone)]
struct Endpoints {
    authorization: String,
    token: String,
}

/// The OIDC provider people sign in with.
pub struct Provider {
    config: UiOidcConfig,
    endpoints: OnceCell<Endpoints>,
    fetcher: crate::identity::fetch::Fetcher,
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

/// The S256 challenge of a PKCE verifier.
pub fn challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

impl Provider {
    pub fn new(config: UiOidcConfig) -> Self {
        Self {
            config,
            endpoints: OnceCell::new(),
            fetcher: crate::identity::fetch::Fetcher::default(),
            client: crate::net::client(TIMEOUT),
        }
    }

    pub fn issuer(&self) -> &str {
        &self.config.issuer
    }

    async fn endpoints(&self) -> Result<&Endpoints, String> {
        self.endpoints
            .get_or_try_init(|| async {
                let url = format!(
                    "{}/.well-known/openid-configuration",
                    self.config.issuer.trim_end_matches('/')
                );
                let doc = self.fetcher.json(&url).await?;
                let field = |name: &str| -> Result<String, String> {
                    let v = doc[name].as_str().ok_or_else(|| {
                        format!("the provider's discovery document ({url}) has no {name}")
                    })?;
                    if !crate::config::is_fetchable(v) {
                        return Err(format!(
                            "the provider's {name} {v:?} is not https (http is accepted only for this machine)"
                        ));
                    }
                    Ok(v.to_string())
                };
                Ok(Endpoints {
                    authorization: field("authorization_endpoint")?,
                    token: field("token_endpoint")?,
                })
            })
            .await
    }

    /// Where to send the browser to sign in, for a sign-in with this `state`, `nonce` and PKCE
    /// `verifier`.
    ///
    /// # Errors
    /// The provider's discovery document cannot be read.
    pub async fn authorize_url(
        &self,
        state: &str,
        nonce: &str,
        verifier: &str,
    ) -> Result<String, String> {
        let e = self.endpoints().await?;
        let mut url = url::Url::parse(&e.authorization)
            .map_err(|err| format!("the provider's authorization_endpoint is not a URL: {err}"))?;
        url.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", &self.config.client_id)
            .append_pair("redirect_uri", &self.config.redirect_url)
            .append_pair("scope", &self.config.scopes.join(" "))
            .append_pair("state", state)
            .append_pair("nonce", nonce)
            .append_pair("code_challenge", &challenge(verifier))
            .append_pair("code_challenge_method", "S256");
        Ok(url.into())
    }

    /// Exchanges an authorization code (with its PKCE verifier) for the ID token.
    ///
    /// # Errors
    /// A sentence: the token endpoint could not be reached, refused the code, or answered
    /// without an ID token.
    pub async fn exchange(&self, code: &str, verifier: &str) -> Result<String, String> {
        let e = self.endpoints().await?;
        let body = {
            let mut form = url::form_urlencoded::Serializer::new(String::new());
            form.append_pair("grant_type", "authorization_code")
                .append_pair("code", code)
                .append_pair("redirect_uri", &self.config.redirect_url)
                .append_pair("client_id", &self.config.client_id)
                .append_pair("code_verifier", verifier);
            if let Some(secret) = &self.config.client_secret {
                form.append_pair("client_secret", secret);
            }
            form.finish()
        };
        let req = Request::post(&e.token)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::ACCEPT, "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|err| format!("couldn't build the token request: {err}"))?;
        let what = format!("the OIDC token endpoint {}", e.token);
        let (status, body) = tokio::time::timeout(
            TIMEOUT,
            crate::net::exchange(&self.client, req, &what, MAX_ANSWER),
        )
        .await
        .map_err(|_| format!("{what} did not answer within {}s", TIMEOUT.as_secs()))??;
        let json: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|err| format!("{what} answered {status} without JSON: {err}"))?;
        if status != StatusCode::OK {
            let why = json["error_description"]
                .as_str()
                .or(json["error"].as_str())
                .unwrap_or("no reason given");
            return Err(format!("{what} refused the sign-in ({status}): {why}"));
        }
        json["id_token"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| format!("{what} answered without an id_token"))
    }
}

/// The `nonce` claim of a compact JWT whose signature was already checked.
pub fn nonce_of(id_token: &str) -> Option<String> {
    let payload = id_token.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    v["nonce"].as_str().map(str::to_string)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_challenge_is_rfc_7636s_example() {
        // RFC 7636, appendix B.
        assert_eq!(
            super::challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }
}
