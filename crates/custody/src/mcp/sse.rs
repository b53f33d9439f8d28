//! Server-sent events (the `text/event-stream` framing of Streamable HTTP): writing them to
//! clients, and reading them from upstreams with a bound on each event ([`decode`]).

pub mod decode;

use bytes::{BufMut, Bytes, BytesMut};

use super::upstream::Event;

/// Encodes one event. JSON from `serde_json` has no raw newlines, so data is one `data:` line.
pub fn encode(event: &Event) -> Bytes {
    let data = event.message.as_ref().map(super::Message::to_bytes);
    let mut out = BytesMut::with_capacity(data.as_ref().map_or(0, Bytes::len) + 32);
    if let Some(id) = &event.id {
        // An id with a line break would end the field early; such ids are not relayed.
        if !id.contains(['\n', '\r']) {
            out.put_slice(b"id: ");
            out.put_slice(id.as_bytes());
            out.put_u8(b'\n');
        }
    }
    if let Some(retry) = event.retry {
        out.put_slice(format!("retry: {retry}\n").as_bytes());
    }
    out.put_slice(b"data: ");
    if let Some(data) = data {
        out.put_slice(&data);
    }
    out.put_slice(b"\n\n");
    out.freeze()
}

/// A comment line that keeps idle connections open through intermediaries.
pub const KEEP_ALIVE: &[u8] = b": keep-alive\n\n";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mcp::Message;
    use serde_json::json;

    #[test]
    fn encodes_id_retry_and_data() {
        let m = Message::from_value(json!({"jsonrpc":"2.0","method":"x"})).unwrap();
        let e = Event {
            id: Some("7".into()),
            retry: Some(500),
            message: Some(m),
        };
        assert_eq!(
            &encode(&e)[..],
            b"id: 7\nretry: 500\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"x\"}\n\n"
        );
        let priming = Event {
            id: Some("1_0".into()),
            retry: None,
            message: None,
        };
        assert_eq!(&encode(&priming)[..], b"id: 1_0\ndata: \n\n");
    }
}
