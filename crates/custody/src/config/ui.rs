//! `[ui]`: the explorer's web page at `/ui/`, and how people sign in to it.

use std::time::Duration;

use serde::Deserialize;

use super::{ConfigError, Resolver};

/// `[ui]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUi {
    /// Serve the web page at `/ui/`. Default `true`.
    pub enabled: Option<bool>,
    /// How long a sign-in lasts at most (it also ends when the token it was made with
    /// expires). Default `8h`.
    #[serde(default, with = "humantime_serde")]
    pub session_ttl: Option<Duration>,
    /// Sign-in with the organisation's OIDC provider (authorization code with PKCE).
    pub oidc: Option<RawUiOidc>,
}

/// `[ui.oidc]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUiOidc {
    /// The provider's issuer URL. It must also be an `[[auth.oidc]]` issuer whose `audiences`
    /// include `client_id`: the ID token it returns is checked like any other token.
    pub issuer: String,
    /// The client id registered with the provider for custody.
    pub client_id: String,
    /// The client secret, by reference (`${env:NAME}`, `${file:PATH}`), for a confidential
    /// client. Default: none (a public client; PKCE protects the code either way).
    pub client_secret: Option<String>,
    /// Scopes asked for. Default `["openid", "profile", "email"]`.
    pub scopes: Option<Vec<String>>,
    /// Where the provider sends people back: `https://HOST/ui/auth/callback`. Default:
    /// `server.public_url` + `/ui/auth/callback`.
    pub redirect_url: Option<String>,
}

/// `[ui]`, validated.
#[derive(Debug, Clone)]
pub struct UiConfig {
    pub enabled: bool,
    pub session_ttl: Duration,
    pub oidc: Option<UiOidcConfig>,
}

impl Default for UiConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            session_ttl: DEFAULT_SESSION_TTL,
            oidc: None,
        }
    }
}

/// `[ui.oidc]`, validated.
#[derive(Clone)]
pub struct UiOidcConfig {
    pub issuer: String,
    pub client_id: String,
    /// Resolved; never printed.
    pub client_secret: Option<String>,
    pub scopes: Vec<String>,
    pub redirect_url: String,
}

impl std::fmt::Debug for UiOidcConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UiOidcConfig")
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field("client_secret", &self.client_secret.as_ref().map(|_| "***"))
            .field("scopes", &self.scopes)
            .field("redirect_url", &self.redirect_url)
            .finish()
    }
}

const DEFAULT_SESSION_TTL: Duration = Duration::from_secs(8 * 3600);
/// The longest sign-in accepted.
const MAX_SESSION_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

impl Resolver<'_> {
    pub(super) fn ui(
        &self,
        raw: RawUi,
        auth: &super::AuthConfig,
        public_url: Option<&str>,
    ) -> Result<UiConfig, ConfigError> {
        let session_ttl = raw.session_ttl.unwrap_or(DEFAULT_SESSION_TTL);
        if session_ttl.is_zero() || session_ttl > MAX_SESSION_TTL {
            return Err(self.err(
                "ui.session_ttl",
                "give a duration from 1s to 7d (e.g. \"8h\")",
            ));
        }
        let oidc = raw
            .oidc
            .map(|o| self.ui_oidc(o, auth, public_url))
            .transpose()?;
        Ok(UiConfig {
            enabled: raw.enabled.unwrap_or(true),
            session_ttl,
            oidc,
        })
    }

    fn ui_oidc(
        &self,
        raw: RawUiOidc,
        auth: &super::AuthConfig,
        public_url: Option<&str>,
    ) -> Result<UiOidcConfig, ConfigError> {
        if !super::is_fetchable(&raw.issuer) {
            return Err(self.err(
                "ui.oidc.issuer",
                format!(
                    "{:?} is not an https URL (http is accepted only for this machine)",
                    raw.issuer
                ),
            ));
        }
        if raw.client_id.trim().is_empty() {
            return Err(self.err("ui.oidc.client_id", "the client id must not be empty"));
        }
        let trusted = auth
            .oidc
            .iter()
            .any(|o| o.issuer == raw.issuer && o.audiences.contains(&raw.client_id));
        if !trusted {
            return Err(self.err(
                "ui.oidc.issuer",
                format!(
                    "{} must also be an [[auth.oidc]] issuer with {:?} among its audiences: the ID token people sign in with is checked as any other token",
                    raw.issuer, raw.client_id
                ),
            ));
        }
        let client_secret = raw
            .client_secret
            .as_deref()
            .map(|text| self.secret_by_reference("ui.oidc.client_secret", "secret", text))
            .transpose()?;
        let redirect_url = match (raw.redirect_url, public_url) {
            (Some(u), _) => u,
            (None, Some(base)) => format!("{}/ui/auth/callback", base.trim_end_matches('/')),
            (None, None) => {
                return Err(self.err(
                    "ui.oidc.redirect_url",
                    "set server.public_url or ui.oidc.redirect_url: the provider must know where to send people back",
                ));
            }
        };
        let parsed = url::Url::parse(&redirect_url).map_err(|e| {
            self.err(
                "ui.oidc.redirect_url",
                format!("{redirect_url:?} is not a URL: {e}"),
            )
        })?;
        if !super::is_fetchable(&redirect_url) || !parsed.path().ends_with("/ui/auth/callback") {
            return Err(self.err(
                "ui.oidc.redirect_url",
                format!(
                    "{redirect_url:?} must be an https URL (http only on this machine) ending in /ui/auth/callback"
                ),
            ));
        }
        let scopes = raw
            .scopes
            .unwrap_or_else(|| vec!["openid".into(), "profile".into(), "email".into()]);
        if !scopes.iter().any(|s| s == "openid") {
            return Err(self.err(
                "ui.oidc.scopes",
                "include \"openid\": sign-in needs the provider's ID token",
            ));
        }
        Ok(UiOidcConfig {
            issuer: raw.issuer,
            client_id: raw.client_id,
            client_secret,
            scopes,
            redirect_url,
        })
    }
}
