use sha2::{Digest, Sha256};

use super::*;

fn decode_in(text: &[u8], limit: usize, piece: usize) -> Vec<Item> {
    let mut d = Decoder::new(limit);
    let mut out = VecDeque::new();
    for chunk in text.chunks(piece) {
        d.push(chunk, &mut out);
    }
    d.finish(&mut out);
    out.into_iter().collect()
}

/// Decodes whole and in every piece size up to 7: a chunk boundary must not change anything.
fn decode(text: &[u8], limit: usize) -> Vec<Item> {
    let whole = decode_in(text, limit, text.len().max(1));
    for piece in 1..8 {
        assert_eq!(decode_in(text, limit, piece), whole, "pieces of {piece}");
    }
    whole
}

fn event(id: Option<&str>, retry: Option<u64>, data: Option<&str>) -> Item {
    Item::Event {
        id: id.map(str::to_string),
        retry,
        data: data.map(|d| Bytes::copy_from_slice(d.as_bytes())),
    }
}

#[test]
fn frames_events_as_the_standard_says() {
    let text = b": comment\r\nid: 7\r\nretry: 500\r\ndata: {\"a\":1}\r\n\r\ndata:x\rdata: y\r\rdata\n\nid\ndata: z\nevent: ignored\nunknown: 1\n\n: only a comment\n\n";
    assert_eq!(
        decode(text, 1024),
        vec![
            event(Some("7"), Some(500), Some("{\"a\":1}")),
            event(None, None, Some("x\ny")),
            event(None, None, Some("")),
            event(Some(""), None, Some("z")),
        ]
    );
    // A priming event: an id and empty data.
    assert_eq!(
        decode(b"id: 1_0\ndata: \n\n", 64),
        vec![event(Some("1_0"), None, Some(""))]
    );
    // Only the first space after the colon is dropped; bad retry values are ignored.
    assert_eq!(
        decode(b"data:  two\nretry: 5s\n\n", 64),
        vec![event(None, None, Some(" two"))]
    );
    // An event the body does not finish is dropped.
    assert_eq!(decode(b"data: partial\n", 64), vec![]);
}

#[test]
fn an_event_over_the_limit_is_counted_and_hashed_not_kept() {
    let big = "x".repeat(5000);
    let text = format!("data: {{\"id\":9,\"a\":\"{big}\"}}\n\ndata: after\n\n");
    let items = decode(text.as_bytes(), 1000);
    let data = format!("{{\"id\":9,\"a\":\"{big}\"}}");
    let Item::Oversized(o) = &items[0] else {
        panic!("{items:?}")
    };
    assert_eq!(o.bytes, data.len() as u64);
    assert!(o.whole);
    assert_eq!(o.sha256, <[u8; 32]>::from(Sha256::digest(data.as_bytes())));
    assert_eq!(o.limit, 1000);
    assert_eq!(o.id, Some(serde_json::json!(9)));
    assert_eq!(
        items[1],
        event(None, None, Some("after")),
        "the stream goes on"
    );
    // Exactly at the limit is fine; one byte more is not.
    let at = "y".repeat(1000);
    assert_eq!(
        decode(format!("data: {at}\n\n").as_bytes(), 1000),
        vec![event(None, None, Some(&at))]
    );
    assert!(matches!(
        decode(format!("data: {at}\ndata:\n\n").as_bytes(), 1000)[..],
        [Item::Oversized(_)]
    ));
}

#[test]
fn memory_stays_bounded_while_an_event_grows() {
    let mut d = Decoder::new(1000);
    let mut out = VecDeque::new();
    d.push(b"data: ", &mut out);
    for _ in 0..10_000 {
        d.push(&[b'z'; 1000], &mut out);
        assert!(d.data.capacity() <= 2048, "{}", d.data.capacity());
    }
    d.push(b"\n\n", &mut out);
    let Some(Item::Oversized(o)) = out.pop_front() else {
        panic!("oversized")
    };
    assert_eq!(o.bytes, 10_000_000);
    // Cut off mid-event: reported as not read to its end.
    d.push(b"data: ", &mut out);
    d.push(&[b'z'; 5000], &mut out);
    d.finish(&mut out);
    assert!(matches!(
        out.pop_front(),
        Some(Item::Oversized(Oversized {
            whole: false,
            bytes: 5000,
            ..
        }))
    ));
}

#[test]
fn long_ids_and_comments_are_not_kept() {
    let long_id = "i".repeat(MAX_ID + 1);
    let comment = ":".repeat(100_000);
    let text = format!("{comment}\nid: {long_id}\ndata: d\n\n");
    assert_eq!(
        decode(text.as_bytes(), 64),
        vec![event(None, None, Some("d"))]
    );
}
