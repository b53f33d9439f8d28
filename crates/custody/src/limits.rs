//! Every bound an outsider can push against: refusals per client address, requests per second
//! and at once per principal, sessions per principal and per endpoint, processes per endpoint,
//! connections, header size and time, and the log entries refusals may cause.
//!
//! This module knows the bounds, not what they bound: it counts, keys and times, and says which
//! bound was hit ([`Exceeded`]); the relay and the HTTP server decide what a refusal looks like.
//! Every keyed table here has a fixed most number of keys, so an attacker with many addresses or
//! identities cannot grow memory without bound.
//!
//! The parts:
//! * [`rate`]: GCRA rate limits, alone or keyed (bounded key count, shared overflow bucket).
//! * [`gauge`]: counts of things held (sessions, processes, requests in flight) with a cap,
//!   released by dropping a [`Permit`].
//! * [`tally`]: refusals counted per key and window, so a flood becomes one summary per key
//!   and second rather than one record per refusal.
//! * [`conns`]: the connection table: a cap, idle eviction, idle and header timeouts.

pub mod conns;
pub mod gauge;
pub mod rate;
pub mod tally;
#[cfg(test)]
mod tests;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use conns::{ConnLimits, Connections};
pub use gauge::{Gauge, KeyedGauge, Permit};
pub use rate::{KeyedRate, Rate};
pub use tally::Tally;

use crate::config::LimitsConfig;

/// A bound. Its [`name`](Limit::name) is what a refusal says (`limit` in the JSON-RPC error's
/// data), its [`key`](Limit::key) the configuration key that sets it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Limit {
    /// Refused credentials (and other refusals before authentication) per client address.
    AddressRefusals,
    /// Requests per second of one principal.
    PrincipalRate,
    /// Requests of one principal in progress at once.
    PrincipalConcurrent,
    /// Sessions one principal holds open.
    PrincipalSessions,
    /// Sessions open on one endpoint.
    EndpointSessions,
    /// Upstream processes running for one stdio endpoint.
    EndpointProcesses,
    /// Client connections open at once.
    Connections,
    /// Bytes of one request's head (request line and headers).
    HeaderBytes,
    /// Header fields of one request.
    HeaderCount,
    /// Time to send a request's headers.
    HeaderTime,
}

impl Limit {
    /// The name a refusal carries.
    pub fn name(self) -> &'static str {
        match self {
            Limit::AddressRefusals => "address.refusals",
            Limit::PrincipalRate => "principal.requests_per_second",
            Limit::PrincipalConcurrent => "principal.concurrent_requests",
            Limit::PrincipalSessions => "principal.sessions",
            Limit::EndpointSessions => "endpoint.sessions",
            Limit::EndpointProcesses => "endpoint.processes",
            Limit::Connections => "server.connections",
            Limit::HeaderBytes => "server.header_bytes",
            Limit::HeaderCount => "server.headers",
            Limit::HeaderTime => "server.header_read_timeout",
        }
    }

    /// The configuration key that sets it.
    pub fn key(self) -> &'static str {
        match self {
            Limit::AddressRefusals => "limits.address_refusals_per_second",
            Limit::PrincipalRate => "limits.principal_requests_per_second",
            Limit::PrincipalConcurrent => "limits.principal_concurrent_requests",
            Limit::PrincipalSessions => "limits.principal_sessions",
            Limit::EndpointSessions => "endpoints.NAME.limits.sessions",
            Limit::EndpointProcesses => "endpoints.NAME.limits.processes",
            Limit::Connections => "server.max_connections",
            Limit::HeaderBytes => "server.max_header_bytes",
            Limit::HeaderCount => "server.max_headers",
            Limit::HeaderTime => "server.header_read_timeout",
        }
    }

    /// What was counted, for the message.
    fn what(self, max: u64) -> String {
        match self {
            Limit::AddressRefusals => format!(
                "this address had more than {max} requests refused (bad credentials or headers) in a burst; requests from it are refused unread until the rate falls"
            ),
            Limit::PrincipalRate => {
                format!("this caller sent more than {max} requests a second (with its burst)")
            }
            Limit::PrincipalConcurrent => {
                format!("this caller already has {max} requests in progress")
            }
            Limit::PrincipalSessions => format!(
                "this caller already holds {max} sessions; end one (DELETE) or let one expire"
            ),
            Limit::EndpointSessions => {
                format!("this endpoint already has {max} sessions open; retry when one ends")
            }
            Limit::EndpointProcesses => format!(
                "this endpoint already runs {max} upstream processes; retry when a session ends"
            ),
            Limit::Connections => {
                format!("the gateway already holds {max} connections, none of them idle")
            }
            Limit::HeaderBytes => format!("the request's headers are larger than {max} bytes"),
            Limit::HeaderCount => format!("the request has more than {max} header fields"),
            Limit::HeaderTime => format!("the request's headers took longer than {max} s"),
        }
    }
}

/// A bound was hit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exceeded {
    pub limit: Limit,
    /// The bound's value.
    pub max: u64,
    /// When the caller may try again, where that is known.
    pub retry_after: Option<Duration>,
}

impl Exceeded {
    pub fn new(limit: Limit, max: u64) -> Self {
        Self {
            limit,
            max,
            retry_after: None,
        }
    }

    /// `Retry-After` in whole seconds, at least 1.
    pub fn retry_after_secs(&self) -> u64 {
        self.retry_after
            .map_or(1, |d| d.as_secs() + u64::from(d.subsec_nanos() > 0))
            .max(1)
    }
}

impl std::fmt::Display for Exceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "limit {} reached: {} ({}); retry in {} s",
            self.limit.name(),
            self.limit.what(self.max),
            self.limit.key(),
            self.retry_after_secs()
        )
    }
}

impl std::error::Error for Exceeded {}

/// The key an address is limited by: IPv4 addresses one by one, IPv6 by their /64 (one host
/// usually holds a whole /64), IPv4-mapped IPv6 as IPv4.
pub fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// The gateway-wide bounds, built once from `[limits]`.
pub struct Limiter {
    /// Refusals before authentication, per address key.
    pub addresses: KeyedRate<IpAddr>,
    /// Requests per principal (keyed by its session binding).
    pub principal_rate: KeyedRate<Arc<str>>,
    /// Requests in progress per principal.
    pub principal_concurrent: Arc<KeyedGauge>,
    /// Sessions per principal.
    pub principal_sessions: Arc<KeyedGauge>,
    /// Distinct refusal records per second (the rest are summed per reason).
    pub refusal_records: usize,
}

impl Limiter {
    pub fn new(config: &LimitsConfig) -> Self {
        let epoch = Instant::now();
        Self {
            addresses: KeyedRate::new(
                Limit::AddressRefusals,
                Rate::new(
                    config.address_refusals_per_second,
                    config.address_refusal_burst,
                ),
                config.tracked_addresses,
                epoch,
            ),
            principal_rate: KeyedRate::new(
                Limit::PrincipalRate,
                Rate::new(
                    config.principal_requests_per_second,
                    config.principal_request_burst,
                ),
                config.tracked_principals,
                epoch,
            ),
            principal_concurrent: KeyedGauge::new(
                Limit::PrincipalConcurrent,
                config.principal_concurrent_requests,
            ),
            principal_sessions: KeyedGauge::new(
                Limit::PrincipalSessions,
                config.principal_sessions,
            ),
            refusal_records: config.refusal_records_per_second,
        }
    }
}
