//! An entry before the sequencer gives it its index, and its encoding in either entry version.

use std::sync::Arc;

use bytes::Bytes;

use super::{Direction, Erase, GATEWAY, Kind, Mark, now_ns};

/// An entry encoded and its payloads committed to, waiting for its index (see
/// [`Draft::seal`]).
pub(super) struct Sealed {
    /// The encoded entry with index 0: the sequencer writes the index in
    /// ([`tlog::entry::set_index`]).
    pub data: Vec<u8>,
    pub payloads: Vec<crate::store::Payload>,
    pub mark: Option<Mark>,
    pub time_ns: u64,
    pub erase: Option<Erase>,
}

/// An entry before the sequencer gives it its index.
#[derive(Debug, Clone)]
pub struct Draft {
    pub kind: Kind,
    pub direction: Direction,
    pub time_ns: u64,
    pub endpoint: Arc<str>,
    pub session: Option<Arc<str>>,
    /// The JSON-RPC id as JSON text.
    pub id: Option<String>,
    pub method: Option<String>,
    pub target: Option<String>,
    pub caller: Arc<str>,
    pub request: Option<u64>,
    /// A JSON object, kind-specific.
    pub detail: String,
    pub message: Bytes,
    /// Whether this entry opens or closes a pending approval (committed with it).
    pub mark: Option<Mark>,
    /// The upstream's recorded response headers (JSON, masked): a payload of their own in a
    /// version-2 log (in `detail` in a version-1 log).
    pub headers: Option<Bytes>,
    /// Payloads this entry erases, in the same transaction (`payload_erased` entries only).
    pub erase: Option<Erase>,
}

impl Draft {
    /// An event of the gateway itself.
    pub fn gateway(kind: Kind, endpoint: &str, detail: String) -> Self {
        Self {
            kind,
            direction: Direction::Gateway,
            time_ns: now_ns(),
            endpoint: endpoint.into(),
            session: None,
            id: None,
            method: None,
            target: None,
            caller: GATEWAY.into(),
            request: None,
            detail,
            message: Bytes::new(),
            mark: None,
            headers: None,
            erase: None,
        }
    }

    /// The payloads a version-2 entry commits to, in slot order (an empty message is none).
    pub(super) fn payloads(&self) -> impl Iterator<Item = (u8, &Bytes)> {
        [
            (
                tlog::payload::MESSAGE,
                Some(&self.message).filter(|m| !m.is_empty()),
            ),
            (tlog::payload::HEADERS, self.headers.as_ref()),
        ]
        .into_iter()
        .filter_map(|(slot, p)| p.map(|p| (slot, p)))
    }

    /// The size of the encoded entry in a log of `version`, at most a few bytes over (the
    /// request field is counted whether or not it is set). In version 2 it is the header's:
    /// the payloads are committed to, not held.
    pub fn encoded_len(&self, version: u8) -> usize {
        let mut strings = vec![
            self.endpoint.len(),
            self.session.as_deref().map_or(0, str::len),
            self.id.as_deref().map_or(0, str::len),
            self.method.as_deref().map_or(0, str::len),
            self.target.as_deref().map_or(0, str::len),
            self.caller.len(),
            self.detail.len().max(2),
        ];
        if version == tlog::entry::V1 {
            strings.push(self.message.len() + self.headers.as_ref().map_or(0, |h| h.len() + 24));
        }
        // version, index, kind, direction, time, request flag and index, a length per field.
        let fixed = 1 + 8 + 1 + 1 + 8 + 1 + 8 + strings.iter().map(|n| 4 + n).sum::<usize>();
        if version == tlog::entry::V1 {
            fixed
        } else {
            fixed + 1 + self.payloads().count() * 41
        }
    }

    /// Encodes the entry for a log of `version` without its index, and commits to its
    /// payloads: the work that does not depend on the order of entries, done by whoever
    /// appends (on all cores) so that the one sequencer thread only numbers, hashes and
    /// stores.
    pub(super) fn seal(&self, version: u8) -> Sealed {
        let (data, payloads) = self.encode(0, version);
        Sealed {
            data,
            payloads,
            mark: self.mark.clone(),
            time_ns: self.time_ns,
            erase: self.erase.clone(),
        }
    }

    /// The entry's bytes as a version-2 log's leaf (index 0), its payloads' commitments drawn
    /// and hashed: the work the entry format itself asks of every append, whatever stores it
    /// (what `custody-bench append` measures as the floor of an append's cost).
    pub fn leaf_bytes(&self) -> Vec<u8> {
        self.encode(0, tlog::entry::V2).0
    }

    /// The entry's bytes in a log of `version`, and (version 2) the payloads to store beside
    /// it, each with the random opening of its commitment.
    pub(super) fn encode(&self, index: u64, version: u8) -> (Vec<u8>, Vec<crate::store::Payload>) {
        use std::borrow::Cow::{Borrowed, Owned};
        let mut payloads = Vec::new();
        let mut commitments = Vec::new();
        let mut detail = Borrowed(if self.detail.is_empty() {
            "{}"
        } else {
            self.detail.as_str()
        });
        if version == tlog::entry::V2 {
            for (slot, data) in self.payloads() {
                let opening: [u8; 32] = rand::random();
                commitments.push(tlog::payload::Commitment {
                    slot,
                    length: data.len() as u64,
                    hash: tlog::payload::commit(&opening, data),
                });
                payloads.push(crate::store::Payload {
                    slot,
                    opening,
                    data: data.clone(),
                });
            }
        } else if let Some(h) = &self.headers {
            // A version-1 log keeps the headers in the detail, as it always did.
            let mut d: serde_json::Map<String, serde_json::Value> =
                serde_json::from_str(&detail).unwrap_or_default();
            if let Ok(v) = serde_json::from_slice(h) {
                d.insert("upstream_headers".into(), v);
            }
            detail = Owned(serde_json::Value::Object(d).to_string());
        }
        let bytes = tlog::Entry {
            index,
            kind: self.kind,
            direction: self.direction,
            time_ns: self.time_ns,
            endpoint: Borrowed(&self.endpoint),
            session: Borrowed(self.session.as_deref().unwrap_or("")),
            id: Borrowed(self.id.as_deref().unwrap_or("")),
            method: Borrowed(self.method.as_deref().unwrap_or("")),
            target: Borrowed(self.target.as_deref().unwrap_or("")),
            caller: Borrowed(&self.caller),
            request: self.request,
            detail,
            message: if version == tlog::entry::V1 {
                Borrowed(&self.message[..])
            } else {
                Borrowed(&[][..])
            },
            version,
            commitments,
        }
        .encode();
        (bytes, payloads)
    }
}
