//! custody's log entry: what the gateway saw, who sent it, and when.
//!
//! Version 2 (every new log) keeps the header in the tree and each payload (the masked message,
//! the recorded upstream headers) *beside* it, as a salted commitment (see [`crate::payload`]):
//! the encoded entry stays under [`MAX_HEADER_BYTES`] (so the log can be published as C2SP
//! tlog-tiles, whose entries are at most 65,535 bytes), and a payload can be erased without
//! changing a leaf. Version 1 (logs created before) holds the message itself.
//!
//! The encoding is canonical by construction (fixed-width integers, length-prefixed fields, no
//! optional padding, nothing after the last field): bytes that decode re-encode to themselves,
//! so a verifier hashes the stored bytes and never re-serialises.
//!
//! ```text
//! u8  version = 1
//! u64 index            position in the log (an entry names its own place)
//! u8  kind
//! u8  direction        0 gateway, 1 client → upstream, 2 upstream → client
//! u64 time_ns          when the gateway saw it (Unix time, nanoseconds)
//! str endpoint
//! str session          "" when none
//! str id               the JSON-RPC id as JSON text, "" when none
//! str method           "" when none
//! str target           params.name or params.uri of tools/call, prompts/get, resources/read
//! str caller           JSON text describing who sent it
//! u8  has_request + u64 request   (a response names its request's index)
//! str detail           JSON object text, kind-specific
//! bytes message        (v1) the JSON-RPC message as it crossed the gateway
//! u8  count            (v2) payload commitments, then each:
//!     u8 slot, u64 length, [32] commitment
//! ```
//! All integers are big-endian; `str` and `bytes` are a u32 length and that many bytes
//! (`str` is UTF-8).

use std::borrow::Cow;

/// The largest encoded entry accepted by [`Entry::decode`].
pub const MAX_ENTRY_BYTES: usize = 64 * 1024 * 1024;
/// The largest encoded version-2 entry (its header): a larger one is refused where it is made.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;
/// Where an encoded entry's index starts (after its version byte): an entry encoded before
/// its index is known gets it with [`set_index`].
pub const INDEX_OFFSET: usize = 1;

/// Writes `index` into an encoded entry (one made with any index). `false` when `encoded` is
/// too short to be an entry.
pub fn set_index(encoded: &mut [u8], index: u64) -> bool {
    match encoded.get_mut(INDEX_OFFSET..INDEX_OFFSET + 8) {
        Some(at) => {
            at.copy_from_slice(&index.to_be_bytes());
            true
        }
        None => false,
    }
}

/// The entry versions.
pub const V1: u8 = 1;
pub const V2: u8 = 2;

/// What an entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Kind {
    Request = 1,
    Notification = 2,
    /// A `result` response.
    Response = 3,
    /// An `error` response, from the upstream or the gateway.
    Error = 4,
    /// Input the gateway refused before relaying it.
    Rejected = 5,
    SessionOpened = 6,
    SessionClosed = 7,
    GatewayStarted = 8,
    GatewayStopped = 9,
    ConfigChanged = 10,
    KeyChanged = 11,
    /// Written when the log is idle so checkpoints keep proving it is alive.
    Heartbeat = 12,
    /// A request refused for its credentials.
    AuthFailure = 13,
    /// A call policy holds for a person's approval; `request` names the held request.
    ApprovalRequested = 14,
    /// An approver approved a held call (one vote; `detail` says whether it released the call).
    ApprovalGranted = 15,
    /// An approver denied a held call.
    ApprovalDenied = 16,
    /// Nobody decided before the approval's expiry.
    ApprovalExpired = 17,
    /// The client went away or cancelled while its call waited.
    ApprovalCancelled = 18,
    /// The gateway stopped (or restarted) while a call waited.
    ApprovalAbandoned = 19,
    /// A notification (webhook) about an approval could not be delivered.
    NotificationFailed = 20,
    /// The gateway found its own record in doubt (a scrub that found stored entries no longer
    /// matching a signed checkpoint, a store that diverged from the tree in memory, a witness
    /// that saw another tree); `detail` says which and what was found.
    Alarm = 21,
    /// The first entry of a log started after another log's data was lost: `detail` names the
    /// old log's origin and last signed checkpoint, so the chain of custody has no silent gap.
    Predecessor = 22,
    /// Payloads of earlier entries were erased (by a person, or by retention): `detail` names
    /// the entries (`indices`, or `before` for a retention batch), the reason and who.
    PayloadErased = 23,
    /// A read through the explorer API: who looked at what, in aggregate per request.
    LogRead = 24,
}

impl Kind {
    pub fn from_u8(b: u8) -> Option<Self> {
        use Kind::*;
        Some(match b {
            1 => Request,
            2 => Notification,
            3 => Response,
            4 => Error,
            5 => Rejected,
            6 => SessionOpened,
            7 => SessionClosed,
            8 => GatewayStarted,
            9 => GatewayStopped,
            10 => ConfigChanged,
            11 => KeyChanged,
            12 => Heartbeat,
            13 => AuthFailure,
            14 => ApprovalRequested,
            15 => ApprovalGranted,
            16 => ApprovalDenied,
            17 => ApprovalExpired,
            18 => ApprovalCancelled,
            19 => ApprovalAbandoned,
            20 => NotificationFailed,
            21 => Alarm,
            22 => Predecessor,
            23 => PayloadErased,
            24 => LogRead,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        use Kind::*;
        match self {
            Request => "request",
            Notification => "notification",
            Response => "response",
            Error => "error",
            Rejected => "rejected",
            SessionOpened => "session_opened",
            SessionClosed => "session_closed",
            GatewayStarted => "gateway_started",
            GatewayStopped => "gateway_stopped",
            ConfigChanged => "config_changed",
            KeyChanged => "key_changed",
            Heartbeat => "heartbeat",
            AuthFailure => "auth_failure",
            ApprovalRequested => "approval_requested",
            ApprovalGranted => "approval_granted",
            ApprovalDenied => "approval_denied",
            ApprovalExpired => "approval_expired",
            ApprovalCancelled => "approval_cancelled",
            ApprovalAbandoned => "approval_abandoned",
            NotificationFailed => "notification_failed",
            Alarm => "alarm",
            Predecessor => "predecessor",
            PayloadErased => "payload_erased",
            LogRead => "log_read",
        }
    }

    /// Does this kind answer a request (and so name the request's index)?
    pub fn answers(self) -> bool {
        matches!(self, Kind::Response | Kind::Error)
    }

    /// Is this an event in the life of a held call (and so names the held request's index)?
    pub fn is_approval(self) -> bool {
        matches!(
            self,
            Kind::ApprovalRequested
                | Kind::ApprovalGranted
                | Kind::ApprovalDenied
                | Kind::ApprovalExpired
                | Kind::ApprovalCancelled
                | Kind::ApprovalAbandoned
                | Kind::NotificationFailed
        )
    }
}

/// Which way a message crossed the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Direction {
    /// An event of the gateway itself.
    Gateway = 0,
    ClientToUpstream = 1,
    UpstreamToClient = 2,
}

impl Direction {
    pub fn from_u8(b: u8) -> Option<Self> {
        Some(match b {
            0 => Direction::Gateway,
            1 => Direction::ClientToUpstream,
            2 => Direction::UpstreamToClient,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Direction::Gateway => "gateway",
            Direction::ClientToUpstream => "client_to_upstream",
            Direction::UpstreamToClient => "upstream_to_client",
        }
    }
}

/// One log entry. Borrowed when decoded, owned when built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry<'a> {
    pub index: u64,
    pub kind: Kind,
    pub direction: Direction,
    pub time_ns: u64,
    pub endpoint: Cow<'a, str>,
    pub session: Cow<'a, str>,
    pub id: Cow<'a, str>,
    pub method: Cow<'a, str>,
    pub target: Cow<'a, str>,
    pub caller: Cow<'a, str>,
    pub request: Option<u64>,
    pub detail: Cow<'a, str>,
    /// Version 1: the message itself. Version 2: empty (the payloads are committed to).
    pub message: Cow<'a, [u8]>,
    /// [`V1`] or [`V2`].
    pub version: u8,
    /// Version 2: the commitments to the entry's payloads, in slot order.
    pub commitments: Vec<crate::payload::Commitment>,
}

/// Why bytes are not an entry.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("the entry is larger than {MAX_ENTRY_BYTES} bytes")]
    TooLarge,
    #[error("unknown entry version {0}")]
    Version(u8),
    #[error("the entry ends inside its {0} field")]
    Truncated(&'static str),
    #[error("unknown entry kind {0}")]
    Kind(u8),
    #[error("unknown direction {0}")]
    Direction(u8),
    #[error("the {0} field is not UTF-8")]
    NotUtf8(&'static str),
    #[error("the request flag is {0}, not 0 or 1")]
    Flag(u8),
    #[error("{0} bytes follow the last field")]
    Trailing(usize),
    #[error("a version-2 entry is larger than {MAX_HEADER_BYTES} bytes")]
    HeaderTooLarge,
    #[error("payload slot {0} is out of order or repeated")]
    Slot(u8),
}

struct Reader<'a> {
    b: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], DecodeError> {
        if self.b.len() < n {
            return Err(DecodeError::Truncated(field));
        }
        let (head, rest) = self.b.split_at(n);
        self.b = rest;
        Ok(head)
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        Ok(self.take(1, field)?[0])
    }

    fn u64(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        let b = self.take(8, field)?;
        Ok(u64::from_be_bytes(b.try_into().unwrap_or_default()))
    }

    fn bytes(&mut self, field: &'static str) -> Result<&'a [u8], DecodeError> {
        let len = self.take(4, field)?;
        let len = u32::from_be_bytes(len.try_into().unwrap_or_default()) as usize;
        self.take(len, field)
    }

    fn str(&mut self, field: &'static str) -> Result<Cow<'a, str>, DecodeError> {
        let b = self.bytes(field)?;
        std::str::from_utf8(b)
            .map(Cow::Borrowed)
            .map_err(|_| DecodeError::NotUtf8(field))
    }
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    let len = u32::try_from(b.len()).expect("entry fields are bounded far below 4 GiB");
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(b);
}

impl<'a> Entry<'a> {
    /// Decodes an entry, borrowing from `b`.
    ///
    /// # Errors
    /// [`DecodeError`] naming the field that is wrong.
    pub fn decode(b: &'a [u8]) -> Result<Self, DecodeError> {
        if b.len() > MAX_ENTRY_BYTES {
            return Err(DecodeError::TooLarge);
        }
        let mut r = Reader { b };
        let version = r.u8("version")?;
        if version != V1 && version != V2 {
            return Err(DecodeError::Version(version));
        }
        if version == V2 && b.len() > MAX_HEADER_BYTES {
            return Err(DecodeError::HeaderTooLarge);
        }
        let index = r.u64("index")?;
        let kind = r.u8("kind")?;
        let kind = Kind::from_u8(kind).ok_or(DecodeError::Kind(kind))?;
        let direction = r.u8("direction")?;
        let direction = Direction::from_u8(direction).ok_or(DecodeError::Direction(direction))?;
        let time_ns = r.u64("time")?;
        let endpoint = r.str("endpoint")?;
        let session = r.str("session")?;
        let id = r.str("id")?;
        let method = r.str("method")?;
        let target = r.str("target")?;
        let caller = r.str("caller")?;
        let request = match r.u8("request flag")? {
            0 => None,
            1 => Some(r.u64("request")?),
            f => return Err(DecodeError::Flag(f)),
        };
        let detail = r.str("detail")?;
        let mut commitments = Vec::new();
        let message = if version == V1 {
            Cow::Borrowed(r.bytes("message")?)
        } else {
            let count = r.u8("payload count")?;
            for _ in 0..count {
                let slot = r.u8("payload slot")?;
                if commitments
                    .last()
                    .is_some_and(|c: &crate::payload::Commitment| c.slot >= slot)
                {
                    return Err(DecodeError::Slot(slot));
                }
                let length = r.u64("payload length")?;
                let hash = r.take(32, "payload commitment")?;
                commitments.push(crate::payload::Commitment {
                    slot,
                    length,
                    hash: crate::hash::Hash::from_slice(hash)
                        .ok_or(DecodeError::Truncated("payload commitment"))?,
                });
            }
            Cow::Borrowed(&[][..])
        };
        if !r.b.is_empty() {
            return Err(DecodeError::Trailing(r.b.len()));
        }
        Ok(Self {
            index,
            kind,
            direction,
            time_ns,
            endpoint,
            session,
            id,
            method,
            target,
            caller,
            request,
            detail,
            message,
            version,
            commitments,
        })
    }

    /// The canonical bytes.
    pub fn encode(&self) -> Vec<u8> {
        let strings = [
            &self.endpoint,
            &self.session,
            &self.id,
            &self.method,
            &self.target,
            &self.caller,
            &self.detail,
        ];
        let len = 1
            + 8
            + 1
            + 1
            + 8
            + 1
            + 8
            + strings.iter().map(|s| 4 + s.len()).sum::<usize>()
            + 4
            + self.message.len()
            + 1
            + self.commitments.len() * 41;
        let mut out = Vec::with_capacity(len);
        out.push(self.version);
        out.extend_from_slice(&self.index.to_be_bytes());
        out.push(self.kind as u8);
        out.push(self.direction as u8);
        out.extend_from_slice(&self.time_ns.to_be_bytes());
        put_bytes(&mut out, self.endpoint.as_bytes());
        put_bytes(&mut out, self.session.as_bytes());
        put_bytes(&mut out, self.id.as_bytes());
        put_bytes(&mut out, self.method.as_bytes());
        put_bytes(&mut out, self.target.as_bytes());
        put_bytes(&mut out, self.caller.as_bytes());
        match self.request {
            None => out.push(0),
            Some(i) => {
                out.push(1);
                out.extend_from_slice(&i.to_be_bytes());
            }
        }
        put_bytes(&mut out, self.detail.as_bytes());
        if self.version == V1 {
            put_bytes(&mut out, &self.message);
        } else {
            let count = u8::try_from(self.commitments.len()).expect("at most 255 payloads");
            out.push(count);
            for c in &self.commitments {
                out.push(c.slot);
                out.extend_from_slice(&c.length.to_be_bytes());
                out.extend_from_slice(&c.hash.0);
            }
        }
        out
    }

    pub fn into_owned(self) -> Entry<'static> {
        Entry {
            index: self.index,
            kind: self.kind,
            direction: self.direction,
            time_ns: self.time_ns,
            endpoint: Cow::Owned(self.endpoint.into_owned()),
            session: Cow::Owned(self.session.into_owned()),
            id: Cow::Owned(self.id.into_owned()),
            method: Cow::Owned(self.method.into_owned()),
            target: Cow::Owned(self.target.into_owned()),
            caller: Cow::Owned(self.caller.into_owned()),
            request: self.request,
            detail: Cow::Owned(self.detail.into_owned()),
            message: Cow::Owned(self.message.into_owned()),
            version: self.version,
            commitments: self.commitments,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Entry<'static> {
        Entry {
            index: 7,
            kind: Kind::Response,
            direction: Direction::UpstreamToClient,
            time_ns: 1_795_000_000_123_456_789,
            endpoint: "demo".into(),
            session: "abc".into(),
            id: "1".into(),
            method: String::new().into(),
            target: String::new().into(),
            caller: "{\"kind\":\"anonymous\"}".into(),
            request: Some(6),
            detail: "{}".into(),
            message: Cow::Owned(b"{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}".to_vec()),
            version: V1,
            commitments: Vec::new(),
        }
    }

    #[test]
    fn round_trips_canonically() {
        let e = sample();
        let bytes = e.encode();
        let back = Entry::decode(&bytes).unwrap();
        assert_eq!(back, e);
        assert_eq!(back.encode(), bytes);
    }

    #[test]
    fn an_index_set_later_is_the_index_encoded() {
        let mut e = sample();
        let mut bytes = e.encode();
        assert!(set_index(&mut bytes, 123_456));
        e.index = 123_456;
        assert_eq!(bytes, e.encode());
        assert_eq!(Entry::decode(&bytes).unwrap().index, 123_456);
        assert!(!set_index(&mut bytes[..5], 1), "too short for an index");
    }

    #[test]
    fn every_malformation_is_named() {
        let bytes = sample().encode();
        let mut v3 = bytes.clone();
        v3[0] = 3;
        assert_eq!(Entry::decode(&v3), Err(DecodeError::Version(3)));
        let mut kind = bytes.clone();
        kind[9] = 99;
        assert_eq!(Entry::decode(&kind), Err(DecodeError::Kind(99)));
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert_eq!(Entry::decode(&trailing), Err(DecodeError::Trailing(1)));
        for cut in 0..bytes.len() {
            assert!(
                Entry::decode(&bytes[..cut]).is_err(),
                "a prefix of {cut} bytes decoded"
            );
        }
    }
}
