//! `[server]`: the listener, allowed hosts and origins, message limits, session timeouts.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::raw::RawServer;
use super::*;

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// The gateway's URL as clients reach it (no trailing slash), when configured.
    pub public_url: Option<String>,
    pub data_dir: PathBuf,
    pub allowed_hosts: Vec<String>,
    pub allowed_origins: Vec<OriginPattern>,
    /// The defaults of every endpoint's [`MessageLimits`].
    pub messages: MessageLimits,
    pub session_idle_timeout: Duration,
    /// The idle timeout of sessions that hold a stdio process of their own.
    pub stdio_session_idle_timeout: Duration,
    pub shutdown_grace: Duration,
    pub worker_threads: usize,
    /// Connections, request heads.
    pub limits: ServerLimits,
}

/// An allowed `Origin`: scheme and host must match; the port may be `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginPattern {
    pub scheme: String,
    pub host: String,
    /// `None` matches any port.
    pub port: Option<u16>,
}

impl OriginPattern {
    pub(super) fn parse(s: &str) -> Option<Self> {
        let (scheme, rest) = s.split_once("://")?;
        let (host, port) = split_host_port(rest.trim_end_matches('/'));
        let port = match port {
            Some("*") => None,
            Some(p) => Some(p.parse().ok()?),
            None => Some(if scheme == "https" { 443 } else { 80 }),
        };
        if host.is_empty() || !matches!(scheme, "http" | "https") {
            return None;
        }
        Some(Self {
            scheme: scheme.to_ascii_lowercase(),
            host: host.to_ascii_lowercase(),
            port,
        })
    }

    /// Does an `Origin` header value match this pattern?
    pub fn matches(&self, origin: &str) -> bool {
        let Some((scheme, rest)) = origin.split_once("://") else {
            return false;
        };
        let (host, port) = split_host_port(rest);
        let port = match port {
            Some(p) => match p.parse::<u16>() {
                Ok(p) => p,
                Err(_) => return false,
            },
            None if scheme.eq_ignore_ascii_case("https") => 443,
            None => 80,
        };
        scheme.eq_ignore_ascii_case(&self.scheme)
            && host.eq_ignore_ascii_case(&self.host)
            && self.port.is_none_or(|p| p == port)
    }
}

/// Splits `host[:port]`, keeping IPv6 brackets on the host.
pub fn split_host_port(s: &str) -> (&str, Option<&str>) {
    if s.starts_with('[') {
        match s.find(']') {
            Some(end) => {
                let host = &s[..=end];
                let port = s[end + 1..].strip_prefix(':');
                (host, port)
            }
            None => (s, None),
        }
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    }
}

impl Resolver<'_> {
    pub(super) fn server(&self, raw: RawServer) -> Result<ServerConfig, ConfigError> {
        let limits = self.server_limits(&raw)?;
        let listen_text = raw.listen.as_deref().unwrap_or(DEFAULT_LISTEN);
        let listen: SocketAddr = listen_text.parse().map_err(|_| {
            self.err(
                "server.listen",
                format!(
                    "{listen_text:?} is not an address; write host:port, e.g. \"127.0.0.1:8080\""
                ),
            )
        })?;
        let loopback_names = ["localhost", "127.0.0.1", "[::1]"];
        let allowed_hosts = match raw.allowed_hosts {
            Some(hosts) => {
                if hosts.is_empty() {
                    return Err(self.err("server.allowed_hosts", "must list at least one host"));
                }
                hosts.into_iter().map(|h| h.to_ascii_lowercase()).collect()
            }
            None if listen.ip().is_loopback() => {
                loopback_names.iter().map(|s| s.to_string()).collect()
            }
            None => {
                return Err(self.err(
                    "server.allowed_hosts",
                    format!(
                        "listening on {listen} (not loopback) needs allowed_hosts: the Host names clients use to reach the gateway"
                    ),
                ));
            }
        };
        let allowed_origins = match raw.allowed_origins {
            Some(list) => list
                .iter()
                .enumerate()
                .map(|(i, o)| {
                    OriginPattern::parse(o).ok_or_else(|| {
                        self.err(
                            &format!("server.allowed_origins.{i}"),
                            format!(
                                "{o:?} is not an origin; write scheme://host[:port], port may be *"
                            ),
                        )
                    })
                })
                .collect::<Result<Vec<_>, _>>()?,
            None => loopback_names
                .iter()
                .filter_map(|h| OriginPattern::parse(&format!("http://{h}:*")))
                .collect(),
        };
        let max_message_bytes = match (raw.max_message_bytes, raw.max_body_bytes) {
            (Some(_), Some(_)) => {
                return Err(self.err(
                    "server.max_body_bytes",
                    "is the former name of server.max_message_bytes; set only max_message_bytes",
                ));
            }
            (Some(v), None) => {
                messages::message_bytes(v).map_err(|e| self.err("server.max_message_bytes", e))?
            }
            (None, Some(v)) => {
                messages::message_bytes(v).map_err(|e| self.err("server.max_body_bytes", e))?
            }
            (None, None) => messages::DEFAULT_MAX_MESSAGE_BYTES,
        };
        let max_batch = match raw.max_batch {
            Some(v) => messages::batch(v).map_err(|e| self.err("server.max_batch", e))?,
            None => messages::DEFAULT_MAX_BATCH,
        };
        let max_json_depth = raw.max_json_depth.unwrap_or(64);
        // serde_json reads at most 127 levels: a deeper message would parse for one reader and
        // not for another.
        if !(8..=120).contains(&max_json_depth) {
            return Err(self.err("server.max_json_depth", "must be between 8 and 120"));
        }
        let public_url = match raw.public_url {
            Some(u) => {
                let parsed = url::Url::parse(&u).ok().filter(|p| {
                    matches!(p.scheme(), "http" | "https")
                        && p.host().is_some()
                        && p.query().is_none()
                });
                if parsed.is_none() {
                    return Err(self.err(
                        "server.public_url",
                        format!("{u:?} must be an absolute http:// or https:// URL, like \"https://custody.example.com\""),
                    ));
                }
                Some(u.trim_end_matches('/').to_string())
            }
            None => None,
        };
        Ok(ServerConfig {
            listen,
            public_url,
            data_dir: raw
                .data_dir
                .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
            allowed_hosts,
            allowed_origins,
            messages: MessageLimits {
                max_message_bytes,
                max_batch,
                max_json_depth,
            },
            session_idle_timeout: raw
                .session_idle_timeout
                .unwrap_or(Duration::from_secs(30 * 60)),
            stdio_session_idle_timeout: match raw.stdio_session_idle_timeout {
                Some(d) if d < Duration::from_secs(1) => {
                    return Err(
                        self.err("server.stdio_session_idle_timeout", "must be at least 1s")
                    );
                }
                Some(d) => d,
                None => Duration::from_secs(5 * 60),
            },
            shutdown_grace: raw.shutdown_grace.unwrap_or(Duration::from_secs(10)),
            worker_threads: match raw.worker_threads {
                Some(0) => {
                    return Err(self.err("server.worker_threads", "must be at least 1"));
                }
                Some(n) => n,
                // The cores this process may use (its cgroup's CPU quota included).
                None => std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
            },
            limits,
        })
    }
}
