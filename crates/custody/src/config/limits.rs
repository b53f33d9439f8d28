//! `[limits]`, `[endpoints.NAME.limits]` and the connection keys of `[server]`: what an
//! outsider may make the gateway spend. Raw types (as written) and validated ones, with their
//! defaults; `docs/configuration.md` mirrors every key.

use std::time::Duration;

use serde::Deserialize;

use super::raw::RawServer;
use super::{ConfigError, Resolver, UpstreamConfig};
use crate::limits::ConnLimits;

/// `[limits]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    /// Requests refused before authentication (bad or missing credentials, a refused `Host` or
    /// `Origin`) one client address may cause per second, on average. Past it (and its burst)
    /// the address's requests are answered 429 unread, except those with a token already
    /// verified. IPv6 addresses count by /64. Default 5.
    pub address_refusals_per_second: Option<u32>,
    /// Such refusals an address may cause at once before the rate applies. Default 20.
    pub address_refusal_burst: Option<u32>,
    /// Client addresses remembered for the rate above; past it, new addresses share one
    /// budget. Default 65536.
    pub tracked_addresses: Option<usize>,
    /// Requests per second one principal may send, on average. Default 100.
    pub principal_requests_per_second: Option<u32>,
    /// Requests one principal may send at once before the rate applies. Default 200.
    pub principal_request_burst: Option<u32>,
    /// Requests of one principal in progress at once (streams and held calls included).
    /// Default 64.
    pub principal_concurrent_requests: Option<u64>,
    /// Sessions one principal may hold open, across endpoints. Default 32.
    pub principal_sessions: Option<u64>,
    /// Principals remembered for the rate above; past it, new principals share one budget.
    /// Default 65536.
    pub tracked_principals: Option<usize>,
    /// Distinct refusal records (per address or principal, reason and endpoint) written per
    /// second; refusals past it are summed into one record per reason. Default 8.
    pub refusal_records_per_second: Option<usize>,
}

/// `[endpoints.NAME.limits]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEndpointLimits {
    /// Sessions open at once on this endpoint. Default 64.
    pub sessions: Option<u64>,
    /// Upstream processes at once (stdio endpoints: one per session plus the stateless pool).
    /// Default 64.
    pub processes: Option<u64>,
}

/// `[limits]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitsConfig {
    pub address_refusals_per_second: u32,
    pub address_refusal_burst: u32,
    pub tracked_addresses: usize,
    pub principal_requests_per_second: u32,
    pub principal_request_burst: u32,
    pub principal_concurrent_requests: u64,
    pub principal_sessions: u64,
    pub tracked_principals: usize,
    pub refusal_records_per_second: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            address_refusals_per_second: 5,
            address_refusal_burst: 20,
            tracked_addresses: 65_536,
            principal_requests_per_second: 100,
            principal_request_burst: 200,
            principal_concurrent_requests: 64,
            principal_sessions: 32,
            tracked_principals: 65_536,
            refusal_records_per_second: 8,
        }
    }
}

/// `[endpoints.NAME.limits]`, validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EndpointLimits {
    pub sessions: u64,
    pub processes: u64,
}

impl Default for EndpointLimits {
    fn default() -> Self {
        Self {
            sessions: 64,
            processes: 64,
        }
    }
}

/// The `[server]` keys about connections and request heads, validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerLimits {
    pub connections: ConnLimits,
    /// Largest request head (request line and headers) answered with more than a 431.
    pub max_header_bytes: usize,
    /// Most header fields in a request.
    pub max_headers: usize,
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            connections: ConnLimits {
                max: 1024,
                idle_timeout: Duration::from_secs(60),
                header_read_timeout: Duration::from_secs(10),
            },
            max_header_bytes: 16 * 1024,
            max_headers: 100,
        }
    }
}

fn within<T: PartialOrd + std::fmt::Display + Copy>(
    r: &Resolver<'_>,
    key: &str,
    value: Option<T>,
    default: T,
    (lo, hi): (T, T),
    why: &str,
) -> Result<T, ConfigError> {
    let v = value.unwrap_or(default);
    if v < lo || v > hi {
        return Err(r.err(key, format!("must be between {lo} and {hi}{why}")));
    }
    Ok(v)
}

fn duration_within(
    r: &Resolver<'_>,
    key: &str,
    value: Option<Duration>,
    default: Duration,
    (lo, hi): (Duration, Duration),
) -> Result<Duration, ConfigError> {
    let v = value.unwrap_or(default);
    if v < lo || v > hi {
        return Err(r.err(
            key,
            format!(
                "must be between {} and {}",
                humantime::format_duration(lo),
                humantime::format_duration(hi)
            ),
        ));
    }
    Ok(v)
}

impl Resolver<'_> {
    pub(super) fn limits(&self, raw: RawLimits) -> Result<LimitsConfig, ConfigError> {
        let d = LimitsConfig::default();
        let million = 1_000_000;
        let tracked = (1024, 10_000_000);
        let tracked_why = " (memory: about 100 bytes each)";
        Ok(LimitsConfig {
            address_refusals_per_second: within(
                self,
                "limits.address_refusals_per_second",
                raw.address_refusals_per_second,
                d.address_refusals_per_second,
                (1, million),
                "",
            )?,
            address_refusal_burst: within(
                self,
                "limits.address_refusal_burst",
                raw.address_refusal_burst,
                d.address_refusal_burst,
                (1, million),
                "",
            )?,
            tracked_addresses: within(
                self,
                "limits.tracked_addresses",
                raw.tracked_addresses,
                d.tracked_addresses,
                tracked,
                tracked_why,
            )?,
            principal_requests_per_second: within(
                self,
                "limits.principal_requests_per_second",
                raw.principal_requests_per_second,
                d.principal_requests_per_second,
                (1, million),
                "",
            )?,
            principal_request_burst: within(
                self,
                "limits.principal_request_burst",
                raw.principal_request_burst,
                d.principal_request_burst,
                (1, million),
                "",
            )?,
            principal_concurrent_requests: within(
                self,
                "limits.principal_concurrent_requests",
                raw.principal_concurrent_requests,
                d.principal_concurrent_requests,
                (1, 100_000),
                "",
            )?,
            principal_sessions: within(
                self,
                "limits.principal_sessions",
                raw.principal_sessions,
                d.principal_sessions,
                (1, 100_000),
                "",
            )?,
            tracked_principals: within(
                self,
                "limits.tracked_principals",
                raw.tracked_principals,
                d.tracked_principals,
                tracked,
                tracked_why,
            )?,
            refusal_records_per_second: within(
                self,
                "limits.refusal_records_per_second",
                raw.refusal_records_per_second,
                d.refusal_records_per_second,
                (1, 1000),
                " (each is a log entry of up to about 2 KB)",
            )?,
        })
    }

    pub(super) fn endpoint_limits(
        &self,
        key: &str,
        raw: Option<RawEndpointLimits>,
        upstream: &UpstreamConfig,
    ) -> Result<EndpointLimits, ConfigError> {
        let raw = raw.unwrap_or_default();
        let d = EndpointLimits::default();
        let sessions = within(
            self,
            &format!("{key}.sessions"),
            raw.sessions,
            d.sessions,
            (1, 100_000),
            "",
        )?;
        let processes = match upstream {
            UpstreamConfig::Http(_) if raw.processes.is_some() => {
                return Err(self.err(
                    &format!("{key}.processes"),
                    "only stdio endpoints run processes; remove it (sessions bounds this endpoint)",
                ));
            }
            UpstreamConfig::Http(_) => d.processes,
            UpstreamConfig::Stdio(s) => {
                let p = within(
                    self,
                    &format!("{key}.processes"),
                    raw.processes,
                    d.processes,
                    (1, 4096),
                    "",
                )?;
                if p < s.pool_size as u64 {
                    return Err(self.err(
                        &format!("{key}.processes"),
                        format!(
                            "is {p}, fewer than upstream.pool_size ({}): the stateless pool alone needs that many",
                            s.pool_size
                        ),
                    ));
                }
                p
            }
        };
        Ok(EndpointLimits {
            sessions,
            processes,
        })
    }

    /// The `[server]` keys about connections and request heads.
    pub(super) fn server_limits(&self, raw: &RawServer) -> Result<ServerLimits, ConfigError> {
        let d = ServerLimits::default();
        Ok(ServerLimits {
            connections: ConnLimits {
                max: within(
                    self,
                    "server.max_connections",
                    raw.max_connections,
                    d.connections.max,
                    (16, 1_000_000),
                    " (each connection holds a file descriptor)",
                )?,
                idle_timeout: duration_within(
                    self,
                    "server.idle_timeout",
                    raw.idle_timeout,
                    d.connections.idle_timeout,
                    (Duration::from_millis(100), Duration::from_secs(3600)),
                )?,
                header_read_timeout: duration_within(
                    self,
                    "server.header_read_timeout",
                    raw.header_read_timeout,
                    d.connections.header_read_timeout,
                    (Duration::from_millis(100), Duration::from_secs(300)),
                )?,
            },
            max_header_bytes: within(
                self,
                "server.max_header_bytes",
                raw.max_header_bytes,
                d.max_header_bytes,
                (1024, 1024 * 1024),
                "",
            )?,
            max_headers: within(
                self,
                "server.max_headers",
                raw.max_headers,
                d.max_headers,
                (8, 1000),
                "",
            )?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Config, ConfigError};
    use super::*;

    const AUTH: &str = "[auth]\nanonymous = true\n";
    const STDIO: &str = "[endpoints.fs.upstream]\ntransport = \"stdio\"\ncommand = \"node\"\n";
    const HTTP: &str =
        "[endpoints.api.upstream]\ntransport = \"http\"\nurl = \"http://127.0.0.1:1/mcp\"\n";

    fn err(text: &str) -> String {
        let e: ConfigError = Config::parse(text, "custody.toml").expect_err("should be refused");
        e.to_string()
    }

    #[test]
    fn defaults_apply_without_the_tables() {
        let c = Config::parse(&format!("{AUTH}{STDIO}"), "custody.toml").unwrap();
        assert_eq!(c.limits, LimitsConfig::default());
        assert_eq!(c.server.limits, ServerLimits::default());
        assert_eq!(c.endpoints[0].limits, EndpointLimits::default());
        let c = Config::parse(
            &format!(
                "[server]\nmax_connections = 100\nidle_timeout = \"5s\"\nheader_read_timeout = \"2s\"\nmax_header_bytes = 4096\nmax_headers = 20\n[limits]\nprincipal_sessions = 3\nrefusal_records_per_second = 4\n{AUTH}{STDIO}[endpoints.fs.limits]\nsessions = 5\nprocesses = 7\n"
            ),
            "custody.toml",
        )
        .unwrap();
        assert_eq!(c.server.limits.connections.max, 100);
        assert_eq!(
            c.server.limits.connections.header_read_timeout,
            Duration::from_secs(2)
        );
        assert_eq!(
            (
                c.server.limits.max_header_bytes,
                c.server.limits.max_headers
            ),
            (4096, 20)
        );
        assert_eq!(
            (
                c.limits.principal_sessions,
                c.limits.refusal_records_per_second
            ),
            (3, 4)
        );
        assert_eq!(
            c.endpoints[0].limits,
            EndpointLimits {
                sessions: 5,
                processes: 7
            }
        );
    }

    #[test]
    fn every_bad_value_names_its_key_and_range() {
        for (text, expected) in [
            (
                format!("[limits]\naddress_refusal_burst = 0\n{AUTH}{STDIO}"),
                "custody.toml:2:1: `limits.address_refusal_burst`: must be between 1 and 1000000",
            ),
            (
                format!("[limits]\ntracked_addresses = 10\n{AUTH}{STDIO}"),
                "`limits.tracked_addresses`: must be between 1024 and 10000000 (memory",
            ),
            (
                format!("[limits]\nrefusal_records_per_second = 5000\n{AUTH}{STDIO}"),
                "`limits.refusal_records_per_second`: must be between 1 and 1000",
            ),
            (
                format!("[limits]\nper_address = 1\n{AUTH}{STDIO}"),
                "unknown field `per_address`",
            ),
            (
                format!("[server]\nmax_connections = 3\n{AUTH}{STDIO}"),
                "`server.max_connections`: must be between 16 and 1000000",
            ),
            (
                format!("[server]\nheader_read_timeout = \"10ms\"\n{AUTH}{STDIO}"),
                "`server.header_read_timeout`: must be between 100ms and 5m",
            ),
            (
                format!("[server]\nmax_header_bytes = 100\n{AUTH}{STDIO}"),
                "`server.max_header_bytes`: must be between 1024 and 1048576",
            ),
            (
                format!("{AUTH}{STDIO}[endpoints.fs.limits]\nprocesses = 1\n"),
                "`endpoints.fs.limits.processes`: is 1, fewer than upstream.pool_size (2)",
            ),
            (
                format!("{AUTH}{HTTP}[endpoints.api.limits]\nprocesses = 4\n"),
                "`endpoints.api.limits.processes`: only stdio endpoints run processes",
            ),
            (
                format!("{AUTH}{STDIO}[endpoints.fs.limits]\nsessions = 0\n"),
                "`endpoints.fs.limits.sessions`: must be between 1 and 100000",
            ),
        ] {
            let e = err(&text);
            assert!(e.contains(expected), "{e}\nshould contain {expected}");
        }
    }
}
