//! `[audit]`: the log's durability, key, checkpoints, scrub, retention, erasers and tiles.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::raw::RawAudit;
use super::*;

/// Whether an entry is on stable storage before its message moves on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    Fsync,
    /// Benchmarks only.
    None,
}

#[derive(Debug, Clone)]
pub struct AuditConfig {
    pub durability: Durability,
    pub origin: Option<String>,
    pub key_file: PathBuf,
    pub checkpoint_interval: Duration,
    pub heartbeat_interval: Duration,
    /// How often the whole stored log is verified again in the background; `None`: never.
    pub scrub_interval: Option<Duration>,
    /// Payloads older than this are erased in recorded batches; `None`: kept for good.
    pub retention: Option<Duration>,
    /// Principal names that may erase payloads through the API.
    pub erasers: Vec<String>,
    /// Where the log is served as tiles (`/log`).
    pub tiles_prefix: String,
    /// Whether the tiles are readable without a token.
    pub tiles_public: bool,
    /// Whether `tiles_public` was set in the file (else its default applies).
    pub tiles_public_set: bool,
    /// A new log's predecessor: a file holding the last checkpoint of the log it follows.
    pub predecessor: Option<PathBuf>,
    /// The log replicas share in PostgreSQL; `None`: the embedded log in the data directory.
    pub store: Option<SharedStore>,
}

/// `[audit] store = "postgres://..."`: the log in PostgreSQL, and this replica's name there.
#[derive(Clone)]
pub struct SharedStore {
    /// The connection URL, resolved (never printed: it may hold a password).
    pub url: String,
    pub replica: String,
}

impl std::fmt::Debug for SharedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedStore")
            .field("replica", &self.replica)
            .finish_non_exhaustive()
    }
}

impl AuditConfig {
    /// Where the log is stored.
    pub fn location(&self, data_dir: &Path) -> crate::store::Location {
        match &self.store {
            Some(s) => crate::store::Location::Postgres(s.url.as_str().into()),
            None => crate::store::Location::dir(data_dir),
        }
    }
}

/// The host's name, where the system says it.
fn host_name() -> Option<String> {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
}

impl Resolver<'_> {
    pub(super) fn audit(&self, raw: RawAudit, data_dir: &Path) -> Result<AuditConfig, ConfigError> {
        let durability = match raw.durability.as_deref() {
            None | Some("fsync") => Durability::Fsync,
            Some("none") => Durability::None,
            Some(other) => {
                return Err(self.err(
                    "audit.durability",
                    format!(
                        "{other:?} is not a durability; use \"fsync\" or \"none\" (benchmarks only)"
                    ),
                ));
            }
        };
        if let Some(origin) = &raw.origin
            && tlog::note::check_key_name(origin).is_err()
        {
            return Err(self.err(
                    "audit.origin",
                    format!("{origin:?} cannot name a log: use a non-empty name without spaces or '+', like \"ci.example.com/custody\""),
                ));
        }
        let checkpoint_interval = raw.checkpoint_interval.unwrap_or(Duration::from_secs(1));
        if checkpoint_interval < Duration::from_millis(10) {
            return Err(self.err("audit.checkpoint_interval", "must be at least 10ms"));
        }
        let heartbeat_interval = raw.heartbeat_interval.unwrap_or(Duration::from_secs(60));
        if heartbeat_interval < checkpoint_interval {
            return Err(self.err(
                "audit.heartbeat_interval",
                "must not be shorter than checkpoint_interval",
            ));
        }
        let scrub_interval = match raw.scrub_interval {
            None => Some(Duration::from_secs(24 * 60 * 60)),
            Some(d) if d.is_zero() => None,
            Some(d) if d < Duration::from_secs(1) => {
                return Err(self.err(
                    "audit.scrub_interval",
                    "must be at least 1s (or \"0s\" to turn the scrub off)",
                ));
            }
            Some(d) => Some(d),
        };
        if let Some(r) = raw.retention
            && r < Duration::from_secs(60 * 60)
        {
            return Err(self.err(
                "audit.retention",
                "must be at least 1h (payloads younger than that are still being read by calls and approvals); leave it out to keep payloads",
            ));
        }
        for (i, name) in raw.erasers.iter().enumerate() {
            if name.trim().is_empty() {
                return Err(self.err(
                    &format!("audit.erasers.{i}"),
                    "must name a principal (a static token's name or an OIDC principal's name)",
                ));
            }
        }
        let tiles_prefix = raw.tiles_prefix.unwrap_or_else(|| "/log".into());
        let reserved = ["/mcp", "/api", "/.well-known", "/healthz", "/readyz"];
        if !tiles_prefix.starts_with('/')
            || tiles_prefix.len() < 2
            || tiles_prefix.ends_with('/')
            || !tiles_prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"/-_.".contains(&b))
            || tiles_prefix.contains("//")
            || reserved
                .iter()
                .any(|r| tiles_prefix == *r || tiles_prefix.starts_with(&format!("{r}/")))
        {
            return Err(self.err(
                "audit.tiles_prefix",
                format!("{tiles_prefix:?} cannot serve the tiles: use a path like \"/log\" (a leading /, no trailing /, letters, digits, - _ . /, not under /mcp, /api or /.well-known)"),
            ));
        }
        let store = match raw.store {
            None => {
                if raw.replica.is_some() {
                    return Err(self.err(
                        "audit.replica",
                        "names a replica of a shared log: set audit.store to the PostgreSQL URL too, or leave it out",
                    ));
                }
                None
            }
            Some(text) => Some(self.shared_store(&text, raw.replica)?),
        };
        if store.is_some() {
            if raw.retention.is_some() {
                return Err(self.err(
                    "audit.retention",
                    "erasing payloads is not available on the PostgreSQL log yet; leave retention out, or use the embedded log",
                ));
            }
            if !raw.erasers.is_empty() {
                return Err(self.err(
                    "audit.erasers",
                    "erasing payloads is not available on the PostgreSQL log yet; leave erasers out, or use the embedded log",
                ));
            }
        }
        Ok(AuditConfig {
            store,
            tiles_prefix,
            tiles_public: raw.tiles_public.unwrap_or(true),
            tiles_public_set: raw.tiles_public.is_some(),
            durability,
            origin: raw.origin,
            key_file: raw.key_file.unwrap_or_else(|| data_dir.join("log.key")),
            checkpoint_interval,
            heartbeat_interval,
            scrub_interval,
            retention: raw.retention,
            erasers: raw.erasers,
            predecessor: raw.predecessor,
        })
    }
}

impl Resolver<'_> {
    fn shared_store(
        &self,
        text: &str,
        replica: Option<String>,
    ) -> Result<SharedStore, ConfigError> {
        let (r, url) = self.secret("audit.store", None, text)?;
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(self.err(
                "audit.store",
                "is not a PostgreSQL URL: use \"postgres://user@host:5432/database\" (leave it out for the embedded log in the data directory)",
            ));
        }
        let parsed: postgres::Config = url.parse().map_err(|e| {
            self.err(
                "audit.store",
                format!("is not a PostgreSQL URL this custody can use: {e}"),
            )
        })?;
        if parsed.get_password().is_some() && !r.has_references() {
            return Err(self.err(
                "audit.store",
                "holds a password: name the URL by reference, \"${env:NAME}\" or \"${file:PATH}\", so it stays out of the configuration",
            ));
        }
        let replica = match replica {
            Some(r) => r,
            None => host_name().ok_or_else(|| {
                self.err(
                    "audit.replica",
                    "the host's name cannot be read: name this replica (audit.replica = \"gateway-1\")",
                )
            })?,
        };
        if replica.is_empty()
            || replica.len() > 63
            || !replica
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            return Err(self.err(
                "audit.replica",
                format!("{replica:?} cannot name a replica: use 1 to 63 letters, digits, - _ ."),
            ));
        }
        Ok(SharedStore { url, replica })
    }
}
