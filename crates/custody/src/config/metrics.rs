//! `[metrics]`: where `/metrics` is served and who may read it.

use std::net::SocketAddr;

use serde::Deserialize;
use sha2::Digest;

use super::{ConfigError, Resolver};

/// `[metrics]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMetrics {
    /// Serve `GET /metrics` (Prometheus text format). Default `true`.
    pub enabled: Option<bool>,
    /// A listener of its own for `/metrics`, `/healthz` and `/readyz` (`host:port`), which
    /// stays up while the gateway drains. Default: none, they are served on `server.listen`.
    pub listen: Option<String>,
    /// A bearer token scrapers must send, by reference only (`${env:NAME}` or
    /// `${file:PATH}`), at least 16 characters. Default: none, `/metrics` is open.
    pub token: Option<String>,
}

/// `[metrics]`, validated.
#[derive(Debug, Clone)]
pub struct MetricsConfig {
    pub enabled: bool,
    pub listen: Option<SocketAddr>,
    /// SHA-256 of the bearer token scrapers must send; the token itself is not kept.
    pub token_sha256: Option<[u8; 32]>,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: None,
            token_sha256: None,
        }
    }
}

/// The shortest token accepted.
pub const MIN_TOKEN_CHARS: usize = 16;

impl Resolver<'_> {
    pub(super) fn metrics(&self, raw: RawMetrics) -> Result<MetricsConfig, ConfigError> {
        let listen = raw
            .listen
            .as_deref()
            .map(|text| {
                text.parse::<SocketAddr>().map_err(|_| {
                    self.err(
                        "metrics.listen",
                        format!(
                            "{text:?} is not an address; write host:port, e.g. \"0.0.0.0:9464\""
                        ),
                    )
                })
            })
            .transpose()?;
        let token_sha256 = match raw.token.as_deref() {
            None => None,
            Some(text) => {
                let token = self.secret_by_reference("metrics.token", "token", text)?;
                if token.chars().count() < MIN_TOKEN_CHARS {
                    return Err(self.err(
                        "metrics.token",
                        format!("the token it names is shorter than {MIN_TOKEN_CHARS} characters; use a random one (`openssl rand -hex 16`)"),
                    ));
                }
                Some(sha2::Sha256::digest(token.as_bytes()).into())
            }
        };
        Ok(MetricsConfig {
            enabled: raw.enabled.unwrap_or(true),
            listen,
            token_sha256,
        })
    }
}
