//! MCP protocol versions and the two generations.

/// Versions that use `initialize` and sessions.
pub const SESSION_VERSIONS: &[&str] = &["2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"];
/// Versions that are stateless (per-request `_meta`, no sessions).
pub const STATELESS_VERSIONS: &[&str] = &["2026-07-28"];
/// Assumed when a session-based client sends no `MCP-Protocol-Version` header (spec: 2025-06-18).
pub const DEFAULT_SESSION_VERSION: &str = "2025-03-26";
/// The last version that allowed JSON-RPC batches.
pub const BATCH_VERSION: &str = "2025-03-26";

/// Methods the stateless generation removed: a 2026-07-28 server answers them 404 / -32601.
pub const REMOVED_IN_STATELESS: &[&str] = &[
    "initialize",
    "ping",
    "logging/setLevel",
    "resources/subscribe",
    "resources/unsubscribe",
];

/// `_meta` keys of the stateless generation.
pub const META_PROTOCOL_VERSION: &str = "io.modelcontextprotocol/protocolVersion";
pub const META_SUBSCRIPTION_ID: &str = "io.modelcontextprotocol/subscriptionId";
pub const META_CLIENT_CAPABILITIES: &str = "io.modelcontextprotocol/clientCapabilities";
pub const META_CLIENT_INFO: &str = "io.modelcontextprotocol/clientInfo";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Generation {
    /// 2024-11-05 … 2025-11-25.
    Session,
    /// 2026-07-28 and later.
    Stateless,
}

/// The generation of a known version; `None` for a version the gateway does not speak.
pub fn generation(version: &str) -> Option<Generation> {
    if SESSION_VERSIONS.contains(&version) {
        Some(Generation::Session)
    } else if STATELESS_VERSIONS.contains(&version) {
        Some(Generation::Stateless)
    } else {
        None
    }
}

/// Every version the gateway relays, newest first.
pub fn supported() -> Vec<&'static str> {
    STATELESS_VERSIONS
        .iter()
        .rev()
        .chain(SESSION_VERSIONS.iter().rev())
        .copied()
        .collect()
}
