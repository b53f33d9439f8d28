//! An upstream message too large to relay or record: counted and hashed while it streams past,
//! never kept.

use std::fmt;

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::mcp::message::probe::IdProbe;

/// What is known of an upstream message over the endpoint's `max_message_bytes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Oversized {
    /// Its size in bytes (at least this many when `whole` is false).
    pub bytes: u64,
    /// Whether the message was read to its end (else the upstream stopped or timed out).
    pub whole: bool,
    /// SHA-256 of its bytes (of those read, when not `whole`).
    pub sha256: [u8; 32],
    /// The limit it broke.
    pub limit: usize,
    /// Its top-level `id`, when it could be read: the call it fails.
    pub id: Option<Value>,
}

impl Oversized {
    pub fn sha256_hex(&self) -> String {
        hex::encode(self.sha256)
    }

    /// `error.data` fields a client and the log get.
    pub fn to_json(&self) -> Value {
        serde_json::json!({
            "bytes": self.bytes,
            "whole": self.whole,
            "sha256": self.sha256_hex(),
            "limit": self.limit,
        })
    }
}

impl fmt::Display for Oversized {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the upstream sent a message of {}{} bytes (SHA-256 {}), over this endpoint's limit of {} bytes (max_message_bytes); it was not relayed or recorded",
            if self.whole { "" } else { "at least " },
            self.bytes,
            self.sha256_hex(),
            self.limit
        )
    }
}

/// Counts, hashes and probes for the id of a message that went over the limit, from its first
/// byte on, in constant memory.
pub struct Meter {
    sha: Sha256,
    bytes: u64,
    probe: IdProbe,
    limit: usize,
}

impl Meter {
    pub fn new(limit: usize) -> Self {
        Self {
            sha: Sha256::new(),
            bytes: 0,
            probe: IdProbe::default(),
            limit,
        }
    }

    pub fn feed(&mut self, chunk: &[u8]) {
        self.sha.update(chunk);
        self.probe.feed(chunk);
        self.bytes += chunk.len() as u64;
    }

    pub fn finish(self, whole: bool) -> Oversized {
        Oversized {
            bytes: self.bytes,
            whole,
            sha256: self.sha.finalize().into(),
            limit: self.limit,
            id: self.probe.id(),
        }
    }
}
