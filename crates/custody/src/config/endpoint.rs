//! `[endpoints.NAME]`: each endpoint's upstream (HTTP or stdio), its credentials and limits.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use http::{HeaderName, HeaderValue, Uri};

use super::raw::{RawEndpoint, RawOAuth, RawUpstream};
use super::*;

#[derive(Debug, Clone)]
pub struct EndpointConfig {
    pub name: String,
    pub description: Option<String>,
    pub upstream: UpstreamConfig,
    /// What the client receives masked.
    pub mask_client: crate::mask::RuleSet,
    /// What the log stores masked, on top of `mask_client`.
    pub mask_audit: crate::mask::RuleSet,
    /// Caps on sessions and processes.
    pub limits: EndpointLimits,
    /// Bounds on each message.
    pub messages: MessageLimits,
}

#[derive(Debug, Clone)]
pub enum UpstreamConfig {
    Http(HttpUpstreamConfig),
    Stdio(StdioUpstreamConfig),
}

#[derive(Debug, Clone)]
pub struct HttpUpstreamConfig {
    /// May carry credentials (userinfo, query values, references): printed redacted only.
    pub url: UpstreamUrl,
    /// Header values, possibly by reference (resolved by `credentials`).
    pub headers: Vec<(HeaderName, SecretRef)>,
    pub oauth: Option<Box<OAuthConfig>>,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    pub stream_idle_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct StdioUpstreamConfig {
    pub command: PathBuf,
    pub args: Vec<String>,
    /// Environment values, possibly by reference (resolved by `credentials`).
    pub env: BTreeMap<String, SecretRef>,
    pub inherit_env: bool,
    pub cwd: Option<PathBuf>,
    pub pool_size: usize,
    pub idle_timeout: Duration,
    pub request_timeout: Duration,
    /// How long a call waits for a stateless client's retry with the input its process asked
    /// for (and how long the `requestState` the client holds is good for).
    pub input_timeout: Duration,
}

/// `[endpoints.NAME.upstream.oauth]`, validated.
#[derive(Debug, Clone)]
pub struct OAuthConfig {
    pub token_url: Uri,
    pub client_id: SecretRef,
    pub client_secret: SecretRef,
    pub scope: Option<String>,
    pub audience: Option<String>,
    pub auth: OAuthAuth,
}

/// How an OAuth client authenticates to the token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OAuthAuth {
    Basic,
    Post,
}

/// Headers the gateway owns on upstream requests.
fn is_reserved_upstream_header(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "host"
            | "content-length"
            | "content-type"
            | "accept"
            | "transfer-encoding"
            | "connection"
            | "mcp-session-id"
            | "mcp-protocol-version"
            | "mcp-method"
            | "mcp-name"
            | "last-event-id"
    )
}

impl Resolver<'_> {
    pub(super) fn oauth(
        &self,
        key: &str,
        endpoint: &str,
        raw: RawOAuth,
    ) -> Result<OAuthConfig, ConfigError> {
        if !auth::is_fetchable(&raw.token_url) {
            return Err(self.err(
                &format!("{key}.token_url"),
                format!(
                    "{:?} must be an https:// URL (http:// only to this machine): the client secret must not cross the network in the clear",
                    raw.token_url
                ),
            ));
        }
        let token_url: Uri = raw
            .token_url
            .parse()
            .map_err(|_| self.err(&format!("{key}.token_url"), "is not a URL"))?;
        let auth = match raw.auth.as_deref() {
            None | Some("basic") => OAuthAuth::Basic,
            Some("post") => OAuthAuth::Post,
            Some(other) => {
                return Err(self.err(
                    &format!("{key}.auth"),
                    format!("{other:?} is not a client authentication; use \"basic\" or \"post\""),
                ));
            }
        };
        let (client_secret, _) = self.secret(
            &format!("{key}.client_secret"),
            Some(endpoint),
            &raw.client_secret,
        )?;
        if !client_secret.has_references() {
            tracing::warn!(
                endpoint,
                "{key}.client_secret is written in the config file; name it by reference (${{env:NAME}} or ${{file:PATH}}) so the file holds no secret"
            );
        }
        Ok(OAuthConfig {
            token_url,
            client_id: self
                .secret(&format!("{key}.client_id"), Some(endpoint), &raw.client_id)?
                .0,
            client_secret,
            scope: raw.scope,
            audience: raw.audience,
            auth,
        })
    }

    pub(super) fn endpoint(
        &self,
        name: String,
        raw: RawEndpoint,
        defaults: MessageLimits,
    ) -> Result<EndpointConfig, ConfigError> {
        let key = format!("endpoints.{name}");
        let mut messages = defaults;
        if let Some(v) = raw.max_message_bytes {
            messages.max_message_bytes = messages::message_bytes(v)
                .map_err(|e| self.err(&format!("{key}.max_message_bytes"), e))?;
        }
        if let Some(v) = raw.max_batch {
            messages.max_batch =
                messages::batch(v).map_err(|e| self.err(&format!("{key}.max_batch"), e))?;
        }
        let valid_name = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            && !name.starts_with('.');
        if !valid_name {
            return Err(self.err(
                &key,
                format!("endpoint name {name:?} must be 1-64 characters of A-Z a-z 0-9 - _ . (it becomes the URL path /mcp/{name})"),
            ));
        }
        let ukey = format!("{key}.upstream");
        let name_of = name.clone();
        let upstream = match raw.upstream {
            RawUpstream::Http {
                url,
                headers,
                oauth,
                connect_timeout,
                request_timeout,
                stream_idle_timeout,
            } => {
                // The URL may carry credentials (userinfo, query values, references): errors
                // name the key, never the value.
                let url_key = format!("{ukey}.url");
                let (_, url_text, referenced) =
                    self.secret_parts(&url_key, Some(&name_of), &url)?;
                let url =
                    UpstreamUrl::parse(&url_text, referenced).map_err(|e| self.err(&url_key, e))?;
                let headers = headers
                    .into_iter()
                    .map(|(k, v)| {
                        let hkey = format!("{ukey}.headers.{k}");
                        let name = HeaderName::from_bytes(k.as_bytes())
                            .map_err(|_| self.err(&hkey, format!("{k:?} is not a header name")))?;
                        if is_reserved_upstream_header(&name) {
                            return Err(self.err(
                                &hkey,
                                format!("{k} is set by the gateway and cannot be configured"),
                            ));
                        }
                        let (value, resolved) = self.secret(&hkey, Some(&name_of), &v)?;
                        if HeaderValue::from_str(&resolved).is_err() {
                            return Err(
                                self.err(&hkey, "the value has characters not allowed in a header")
                            );
                        }
                        Ok((name, value))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                let oauth = oauth
                    .map(|o| {
                        self.oauth(&format!("{ukey}.oauth"), &name_of, o)
                            .map(Box::new)
                    })
                    .transpose()?;
                let authorization = headers
                    .iter()
                    .any(|(n, _)| n == http::header::AUTHORIZATION);
                if url.has_userinfo() && (oauth.is_some() || authorization) {
                    return Err(self.err(
                        &url_key,
                        "the URL carries a user and password (sent as Authorization: Basic) and the endpoint also sets Authorization (a header or oauth); keep one",
                    ));
                }
                UpstreamConfig::Http(HttpUpstreamConfig {
                    url,
                    headers,
                    oauth,
                    connect_timeout: connect_timeout.unwrap_or(Duration::from_secs(5)),
                    request_timeout: request_timeout.unwrap_or(Duration::from_secs(60)),
                    stream_idle_timeout: stream_idle_timeout.unwrap_or(Duration::from_secs(300)),
                })
            }
            RawUpstream::Stdio {
                command,
                args,
                env,
                inherit_env,
                cwd,
                pool_size,
                idle_timeout,
                request_timeout,
                input_timeout,
            } => {
                if command.trim().is_empty() {
                    return Err(self.err(&format!("{ukey}.command"), "must name a program"));
                }
                let pool_size = pool_size.unwrap_or(2);
                if !(1..=64).contains(&pool_size) {
                    return Err(self.err(&format!("{ukey}.pool_size"), "must be between 1 and 64"));
                }
                let input_timeout = input_timeout.unwrap_or(Duration::from_secs(60));
                if !(Duration::from_secs(1)..=Duration::from_secs(3600)).contains(&input_timeout) {
                    return Err(self.err(
                        &format!("{ukey}.input_timeout"),
                        "must be between 1s and 1h",
                    ));
                }
                if let Some(dir) = &cwd
                    && !dir.is_dir()
                {
                    return Err(self.err(
                        &format!("{ukey}.cwd"),
                        format!("{} is not a directory", dir.display()),
                    ));
                }
                let env = env
                    .into_iter()
                    .map(|(k, v)| {
                        let (value, _) =
                            self.secret(&format!("{ukey}.env.{k}"), Some(&name_of), &v)?;
                        Ok((k, value))
                    })
                    .collect::<Result<BTreeMap<_, _>, ConfigError>>()?;
                UpstreamConfig::Stdio(StdioUpstreamConfig {
                    command: PathBuf::from(command),
                    args,
                    env,
                    inherit_env: inherit_env.unwrap_or(false),
                    cwd,
                    pool_size,
                    idle_timeout: idle_timeout.unwrap_or(Duration::from_secs(600)),
                    request_timeout: request_timeout.unwrap_or(Duration::from_secs(60)),
                    input_timeout,
                })
            }
        };
        let mask_client = self.mask_rules(
            &format!("{key}.mask_client"),
            raw.mask_client,
            raw.detectors_client,
            &format!("{key}.detectors_client"),
            false,
        )?;
        let mask_audit = self.mask_rules(
            &format!("{key}.mask_audit"),
            raw.mask_audit,
            raw.detectors_audit,
            &format!("{key}.detectors_audit"),
            true,
        )?;
        let limits = self.endpoint_limits(&format!("{key}.limits"), raw.limits, &upstream)?;
        Ok(EndpointConfig {
            limits,
            name,
            description: raw.description,
            upstream,
            mask_client,
            mask_audit,
            messages,
        })
    }
}
