use super::*;

fn lim(max_depth: usize) -> Limits {
    Limits {
        max_depth,
        max_batch: 64,
    }
}

#[test]
fn classifies_shapes() {
    let parse = |s: &str| Message::parse(Bytes::from(s.to_owned()), lim(64)).map(|m| m.kind());
    assert_eq!(
        parse(r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#).unwrap(),
        Kind::Request
    );
    assert_eq!(
        parse(r#"{"jsonrpc":"2.0","method":"n"}"#).unwrap(),
        Kind::Notification
    );
    assert_eq!(
        parse(r#"{"jsonrpc":"2.0","id":"a","result":{}}"#).unwrap(),
        Kind::Response
    );
    assert_eq!(
        parse(r#"{"jsonrpc":"2.0","id":1,"error":{"code":1,"message":"m"}}"#).unwrap(),
        Kind::Error
    );
    assert!(matches!(
        parse(r#"{"id":1,"method":"x"}"#),
        Err(ParseError::NotJsonRpc(_))
    ));
    assert!(matches!(parse(r#"[1]"#), Err(ParseError::Shape(_))));
    assert!(matches!(
        parse(r#"{"jsonrpc":"2.0","method":"x","params":{"_meta":7}}"#),
        Err(ParseError::Shape(_))
    ));
    assert!(matches!(
        parse(r#"{"jsonrpc":"2.0","id":1.5,"method":"x"}"#),
        Err(ParseError::NotJsonRpc(_))
    ));
    assert!(matches!(parse("{"), Err(ParseError::Json(_))));
}

#[test]
fn depth_limit_counts_only_structure() {
    let deep = format!("{}{}", "[".repeat(65), "]".repeat(65));
    assert!(matches!(
        check(deep.as_bytes(), lim(64)),
        Err(ParseError::Strict(Violation {
            problem: Problem::TooDeep(64),
            ..
        }))
    ));
    let ok = format!("{}{}", "[".repeat(64), "]".repeat(64));
    assert!(check(ok.as_bytes(), lim(64)).is_ok());
    let in_string = format!("\"{}\\\"{}\"", "[".repeat(100), "{".repeat(100));
    assert!(check(in_string.as_bytes(), lim(2)).is_ok());
}

#[test]
fn the_deepest_message_allowed_has_one_reading() {
    // server.max_json_depth is at most 120: within serde's own recursion limit, so the
    // head, the value and the scan agree.
    let depth = 120;
    let text = format!(
        "{{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"x\",\"params\":{}1{}}}",
        "[".repeat(depth - 1),
        "]".repeat(depth - 1)
    );
    let m = Message::parse(Bytes::from(text), lim(depth)).unwrap();
    assert!(m.value().get("params").is_some());
}

#[test]
fn batches_share_the_body_and_are_bounded() {
    let text = br#"[{"jsonrpc":"2.0","id":1,"method":"a"}, {"jsonrpc":"2.0","method":"b"}]"#;
    let body = Bytes::from_static(text);
    let Body::Batch(ms, raw) = Body::parse(body.clone(), lim(64)).unwrap() else {
        panic!("a batch")
    };
    assert_eq!(raw, body);
    assert_eq!(&ms[1].to_bytes()[..], br#"{"jsonrpc":"2.0","method":"b"}"#);
    assert_eq!(
        ms[0].to_bytes().as_ptr(),
        body[1..].as_ptr(),
        "a batch's messages are slices of the body, not copies"
    );
    let three = Bytes::from_static(br#"[{"jsonrpc":"2.0","method":"a"},{"jsonrpc":"2.0","method":"a"},{"jsonrpc":"2.0","method":"a"}]"#);
    let two = Limits {
        max_depth: 64,
        max_batch: 2,
    };
    let err = Body::parse(three, two).unwrap_err();
    assert!(
        matches!(
            &err,
            ParseError::Strict(Violation {
                problem: Problem::BatchTooLong(2),
                ..
            })
        ),
        "{err}"
    );
    assert!(err.to_string().contains("more than 2 messages"), "{err}");
}

#[test]
fn unchanged_messages_keep_their_bytes() {
    let text = r#"{"jsonrpc":"2.0",  "id":1, "method":"x", "params":{"b":1,"a":2}}"#;
    let mut m = Message::parse(Bytes::from_static(text.as_bytes()), lim(64)).unwrap();
    assert_eq!(m.to_bytes(), text.as_bytes());
    m.edit(|v| v["id"] = json!(2));
    assert_eq!(
        m.to_bytes(),
        r#"{"jsonrpc":"2.0","id":2,"method":"x","params":{"b":1,"a":2}}"#.as_bytes()
    );
}

#[test]
fn result_meta_is_spliced_or_merged() {
    let add = |text: &'static str| {
        let mut m = Message::parse(Bytes::from_static(text.as_bytes()), lim(64)).unwrap();
        m.add_result_meta("k", &json!({"i": 1}));
        let v: Value = serde_json::from_slice(&m.to_bytes()).unwrap();
        assert_eq!(v["result"]["_meta"]["k"]["i"], 1, "{text}");
        v
    };
    let v = add(r#"{"jsonrpc":"2.0","id":1,"result":{"content":[]}}"#);
    assert_eq!(v["result"]["content"], json!([]));
    let mut empty = Message::parse(
        Bytes::from_static(br#"{"jsonrpc":"2.0","id":1,"result":{ }}"#),
        lim(64),
    )
    .unwrap();
    empty.add_result_meta("k", &json!(1));
    assert_eq!(
        &empty.to_bytes()[..],
        br#"{"jsonrpc":"2.0","id":1,"result":{ }}"#,
        "an empty result stays empty"
    );
    let v = add(r#"{"jsonrpc":"2.0","id":1,"result":{"_meta":{"other":true},"x":1}}"#);
    assert_eq!(
        v["result"]["_meta"]["other"], true,
        "an existing _meta is kept"
    );
    assert_eq!(v["result"]["x"], 1);
    add(r#"{"result":{"a":"}{\"_meta\""},"id":"s","jsonrpc":"2.0"}"#);
    let mut err = Message::parse(
        Bytes::from_static(br#"{"jsonrpc":"2.0","id":1,"error":{"code":1,"message":"m"}}"#),
        lim(64),
    )
    .unwrap();
    err.add_result_meta("k", &json!(1));
    assert!(
        !String::from_utf8_lossy(&err.to_bytes()).contains("_meta"),
        "errors carry no receipt"
    );
}

#[test]
fn batches() {
    let b = Body::parse(
        Bytes::from_static(br#"[{"jsonrpc":"2.0","method":"a"}]"#),
        lim(64),
    )
    .unwrap();
    assert!(matches!(b, Body::Batch(v, _) if v.len() == 1));
    assert!(matches!(
        Body::parse(Bytes::from_static(b"[]"), lim(64)),
        Err(ParseError::EmptyBatch)
    ));
}

#[test]
fn target_names() {
    let m = Message::from_value(
        json!({"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"u://x"}}),
    )
    .unwrap();
    assert_eq!(m.target_name(), Some("u://x"));
    let m = Message::from_value(json!({"jsonrpc":"2.0","id":1,"method":"tools/list"})).unwrap();
    assert_eq!(m.target_name(), None);
}

mod never_panics {
    use proptest::prelude::*;

    use super::*;

    fn lim(max_depth: usize) -> Limits {
        Limits {
            max_depth,
            max_batch: 64,
        }
    }

    fn jsonish() -> impl Strategy<Value = String> {
        // Fragments of JSON-RPC in random order: more likely than random bytes to get deep.
        let parts = prop::sample::select(vec![
            "{",
            "}",
            "[",
            "]",
            ",",
            ":",
            "\"jsonrpc\"",
            "\"2.0\"",
            "\"id\"",
            "\"method\"",
            "\"params\"",
            "\"result\"",
            "\"error\"",
            "\"_meta\"",
            "\"name\"",
            "\"uri\"",
            "1",
            "-1",
            "1.5",
            "null",
            "true",
            "\"x\"",
            "\"\\u00e9\"",
            "\"\\\"\"",
            " ",
            "\"io.modelcontextprotocol/protocolVersion\"",
        ]);
        prop::collection::vec(parts, 0..60).prop_map(|v| v.concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn parsing_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            let _ = check(&bytes, lim(8));
            if let Ok(Body::Single(m)) = Body::parse(Bytes::from(bytes), lim(64)) {
                let _ = (m.id(), m.method(), m.target_name(), m.meta_protocol_version(), m.value());
            }
        }

        #[test]
        fn parsing_jsonish_text(text in jsonish()) {
            match Body::parse(Bytes::from(text.clone()), lim(16)) {
                Ok(Body::Single(mut m)) => {
                    let _ = (m.id(), m.method(), m.target_name(), m.meta_protocol_version());
                    m.add_result_meta("k", &serde_json::json!(1));
                    let again: Result<Value, _> = serde_json::from_slice(&m.to_bytes());
                    prop_assert!(again.is_ok(), "a receipt keeps the message valid JSON: {text}");
                }
                Ok(Body::Batch(..)) | Err(_) => {}
            }
        }
    }
}
