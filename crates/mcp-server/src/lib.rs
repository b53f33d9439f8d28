//! A small MCP server used by custody for two things:
//!
//! - the built-in **demo** server behind the embedded default endpoint (`custody serve` with no
//!   config), a handful of tools that are useful to try the gateway with;
//! - the **conformance** fixtures named by the official MCP conformance suite, so that CI can
//!   compare the suite's results against this server directly and through the gateway.
//!
//! It speaks both protocol generations (session-based 2025-03-26 … 2025-11-25 with the
//! `initialize` handshake, and stateless 2026-07-28 with per-request `_meta`) over stdio and over
//! Streamable HTTP. Messages are plain [`serde_json::Value`]s; the gateway must never depend on
//! this crate's view of the protocol, and this crate knows nothing of the gateway.
//!
//! Out of scope: authorization, the deprecated HTTP+SSE transport, the tasks extension.

pub mod catalog;
pub mod engine;
pub mod http;
pub mod rpc;
pub mod stdio;

pub use catalog::Catalog;
pub use engine::Engine;

/// Protocol versions that use the `initialize` handshake and sessions, newest first.
pub const SESSION_VERSIONS: &[&str] = &["2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05"];
/// Protocol versions that are stateless (per-request `_meta`), newest first.
pub const STATELESS_VERSIONS: &[&str] = &["2026-07-28"];

/// `_meta` key names of the stateless generation.
pub mod meta {
    pub const PROTOCOL_VERSION: &str = "io.modelcontextprotocol/protocolVersion";
    pub const CLIENT_CAPABILITIES: &str = "io.modelcontextprotocol/clientCapabilities";
    pub const CLIENT_INFO: &str = "io.modelcontextprotocol/clientInfo";
    pub const SERVER_INFO: &str = "io.modelcontextprotocol/serverInfo";
    pub const LOG_LEVEL: &str = "io.modelcontextprotocol/logLevel";
    pub const SUBSCRIPTION_ID: &str = "io.modelcontextprotocol/subscriptionId";
}

/// Is `version` one this server speaks statelessly?
pub fn is_stateless_version(version: &str) -> bool {
    STATELESS_VERSIONS.contains(&version)
}

/// Every version this server accepts.
pub fn all_versions() -> Vec<&'static str> {
    STATELESS_VERSIONS
        .iter()
        .chain(SESSION_VERSIONS.iter())
        .copied()
        .collect()
}
