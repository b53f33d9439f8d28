//! Bounds on every message an endpoint relays, in either direction: its size, the length of a
//! JSON-RPC batch, and JSON nesting. `[server]` sets the defaults, `[endpoints.NAME]` may
//! override size and batch length.

/// Default `max_message_bytes`: 4 MiB.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;
/// Default `max_batch`.
pub const DEFAULT_MAX_BATCH: usize = 64;
/// Room in a log entry for everything but the message: the indexed fields, the caller and the
/// detail (policy decision, masking report, upstream headers).
const ENTRY_HEADROOM: usize = 1024 * 1024;
/// The largest `max_message_bytes` accepted: a message must fit in one log entry that
/// `custody verify` accepts, with its fields.
pub const MAX_MESSAGE_BYTES: usize = tlog::entry::MAX_ENTRY_BYTES - ENTRY_HEADROOM;
/// The smallest `max_message_bytes` accepted: an `initialize` answer must fit.
const MIN_MESSAGE_BYTES: usize = 1024;
/// The longest `max_batch` accepted.
const MAX_BATCH: usize = 10_000;

/// The bounds in force for one endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageLimits {
    /// Largest message in bytes: a request body, a JSON answer, one SSE event's data, one
    /// stdio line.
    pub max_message_bytes: usize,
    /// Most messages in a JSON-RPC batch.
    pub max_batch: usize,
    /// Deepest JSON nesting.
    pub max_json_depth: usize,
}

impl MessageLimits {
    /// The bounds a JSON scan enforces.
    pub fn json(&self) -> crate::mcp::message::Limits {
        crate::mcp::message::Limits {
            max_depth: self.max_json_depth,
            max_batch: self.max_batch,
        }
    }
}

impl Default for MessageLimits {
    fn default() -> Self {
        Self {
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            max_batch: DEFAULT_MAX_BATCH,
            max_json_depth: 64,
        }
    }
}

/// Checks a `max_message_bytes` value; the error is the message for its key.
pub fn message_bytes(v: u64) -> Result<usize, String> {
    match usize::try_from(v) {
        Ok(n) if (MIN_MESSAGE_BYTES..=MAX_MESSAGE_BYTES).contains(&n) => Ok(n),
        _ => Err(format!(
            "{v} is out of range: must be between {MIN_MESSAGE_BYTES} and {MAX_MESSAGE_BYTES} bytes (a message must fit in one log entry, whose limit is {} bytes)",
            tlog::entry::MAX_ENTRY_BYTES
        )),
    }
}

/// Checks a `max_batch` value.
pub fn batch(v: usize) -> Result<usize, String> {
    if (1..=MAX_BATCH).contains(&v) {
        Ok(v)
    } else {
        Err(format!(
            "{v} is out of range: must be between 1 and {MAX_BATCH}"
        ))
    }
}
