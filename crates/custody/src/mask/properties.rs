//! Properties of masking: whatever the message and wherever a secret is planted (in text, in
//! JSON inside text, glued to another secret's prefix, as the value of a `password=` pair, as a
//! JSON number), no copy keeps it.

use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;

const CREDENTIAL_VALUE: &str = "upstream-Secret-9f8e7d6c";

/// A secret to plant: its text, the detector that must find it (`None`: the credential), and
/// the parts of it that must not survive in any copy (a partly masked secret is a leak).
struct Secret {
    text: String,
    detector: Option<usize>,
    parts: Vec<String>,
}

fn secret(text: impl Into<String>, detector: Option<usize>, parts: &[&str]) -> Secret {
    Secret {
        text: text.into(),
        detector,
        parts: parts.iter().map(|p| (*p).to_string()).collect(),
    }
}

/// The credential, and one of each detector's kind.
fn secrets() -> Vec<Secret> {
    let gh = "Zx9Q".repeat(9);
    vec![
        secret(CREDENTIAL_VALUE, None, &[CREDENTIAL_VALUE]),
        secret("AKIAIOSFODNN7EXAMPLE", Some(0), &["IOSFODNN7EXAMPLE"]),
        secret(format!("ghp_{gh}"), Some(1), &[&gh]),
        secret(
            "glpat-AbCdEfGhIjKlMnOpQrSt",
            Some(2),
            &["AbCdEfGhIjKlMnOpQrSt"],
        ),
        secret(
            "xoxb-1234567890-AbCdEfGhIj",
            Some(3),
            &["1234567890", "AbCdEfGhIj"],
        ),
        secret(
            "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.SflKxwRJSMeKKF2QT4fw",
            Some(4),
            &[
                "eyJhbGciOiJIUzI1NiJ9",
                "eyJzdWIiOiIxMjM0In0",
                "SflKxwRJSMeKKF2QT4fw",
            ],
        ),
        secret(
            "-----BEGIN RSA PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END RSA PRIVATE KEY-----",
            Some(5),
            &["MIIEvQIBADANBgkqhkiG9w0BAQEFAASC"],
        ),
        secret("4111 1111 1111 1111", Some(7), &["1111 1111 1111"]),
        secret("5500-0000-0000-0004", Some(7), &["0000-0000-0004"]),
    ]
}

/// How a secret is written into a string: alone, as the value of a pair another detector
/// (`password_pair`) matches the start of, glued behind another detector's prefix.
fn form(secret: &str, how: usize) -> String {
    match how % 4 {
        0 => format!("x {secret} y"),
        1 => format!("secret: {secret}"),
        2 => format!("token={secret}&next=1"),
        _ => format!("see xoxb-{secret} end"),
    }
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        "[a-z ]{0,12}".prop_map(Value::String),
    ]
}

fn tree() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(4, 32, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,8}", inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Puts `planted` into a string somewhere in `v` (creating one if there is none), maybe
/// inside JSON text.
fn plant(v: &mut Value, planted: &str, choice: usize, as_json_text: bool) {
    let planted = if as_json_text {
        json!({ "inner": [format!("see {planted} here")] }).to_string()
    } else {
        planted.to_string()
    };
    let mut strings: Vec<String> = Vec::new();
    collect(v, &mut String::new(), &mut strings, true);
    if strings.is_empty() {
        *v = json!({ "planted": planted });
        return;
    }
    let target = strings[choice % strings.len()].clone();
    if let Some(Value::String(s)) = v.pointer_mut(&target) {
        s.push(' ');
        s.push_str(&planted);
    }
}

/// Puts a number somewhere in `v`: in place of a value, or as a new member or item.
fn plant_number(v: &mut Value, number: u64, choice: usize) {
    let mut places: Vec<String> = Vec::new();
    collect(v, &mut String::new(), &mut places, false);
    let target = places
        .get(choice % places.len().max(1))
        .cloned()
        .unwrap_or_default();
    match v.pointer_mut(&target) {
        Some(Value::Object(m)) => {
            m.insert("card".into(), json!(number));
        }
        Some(Value::Array(a)) => a.push(json!(number)),
        Some(other) if !target.is_empty() => *other = json!(number),
        _ => *v = json!({ "card": number }),
    }
}

/// JSON pointers of the strings in `v` (`strings`), or of every value.
fn collect(v: &Value, at: &mut String, out: &mut Vec<String>, strings: bool) {
    if !strings || v.is_string() {
        out.push(at.clone());
    }
    match v {
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                let len = at.len();
                at.push_str(&format!("/{i}"));
                collect(x, at, out, strings);
                at.truncate(len);
            }
        }
        Value::Object(m) => {
            for (k, x) in m {
                let len = at.len();
                at.push_str(&format!("/{k}"));
                collect(x, at, out, strings);
                at.truncate(len);
            }
        }
        _ => {}
    }
}

/// Every detector in the audit set; the client set runs those `client` enables.
fn masker(client: [bool; 8]) -> Masker {
    Masker {
        client: RuleSet {
            paths: Vec::new(),
            headers: Vec::new(),
            detectors: client,
        },
        audit: RuleSet {
            paths: Vec::new(),
            headers: Vec::new(),
            detectors: [true; 8],
        },
        credentials: vec![CREDENTIAL_VALUE.to_string()].into(),
        key: None,
        metrics: None,
    }
}

/// Wraps a body as each kind of message a copy can hold.
fn as_message(kind: usize, body: Value) -> Value {
    match kind % 4 {
        0 => {
            json!({"jsonrpc": "2.0", "id": 1, "result": {"content": [{"type": "text", "text": "ok"}], "structuredContent": body}})
        }
        1 => {
            json!({"jsonrpc": "2.0", "id": 1, "error": {"code": -32000, "message": "failed", "data": body}})
        }
        2 => {
            json!({"jsonrpc": "2.0", "method": "notifications/message", "params": {"level": "info", "data": body}})
        }
        _ => {
            json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "t", "arguments": body}})
        }
    }
}

/// The first part of `s` a copy still holds, as JSON escapes it.
fn survivor<'a>(s: &'a Secret, copy: &str) -> Option<&'a str> {
    s.parts
        .iter()
        .find(|p| {
            let escaped = serde_json::to_string(p).unwrap();
            copy.contains(escaped.trim_matches('"'))
        })
        .map(String::as_str)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn no_planted_secret_survives_in_upstream_headers(
        names in prop::collection::btree_set("x-[a-z]{1,10}", 1..6),
        values in prop::collection::vec("[a-zA-Z0-9 ;=,]{0,20}", 6),
        which in 0usize..9,
        how in 0usize..4,
        at in 0usize..6,
    ) {
        let s = &secrets()[which];
        let planted = form(&s.text.replace('\n', " "), how);
        let names: Vec<String> = names.into_iter().collect();
        let mut headers = serde_json::Map::new();
        for (i, n) in names.iter().enumerate() {
            let mut v = values[i].clone();
            if i == at % names.len() {
                v = format!("{v} {planted} end");
            }
            headers.insert(n.clone(), Value::String(v));
        }
        let marks = masker([true; 8]).headers(&mut headers);
        let text = Value::Object(headers).to_string();
        // PEM blocks cannot be header values (no newlines); their single-line form is not
        // a PEM block, so only the other secrets are asserted.
        if s.detector != Some(5) {
            prop_assert!(survivor(s, &text).is_none(), "{:?} survived in {text}", s.text);
            prop_assert!(!marks.is_empty());
        }
    }

    #[test]
    fn no_planted_secret_survives_in_either_copy(
        body in tree(),
        which in 0usize..9,
        how in 0usize..4,
        choice in 0usize..64,
        as_json_text in any::<bool>(),
        kind in 0usize..4,
        also_error_message in any::<bool>(),
        client in any::<[bool; 8]>(),
    ) {
        let s = &secrets()[which];
        let mut body = body;
        plant(&mut body, &form(&s.text, how), choice, as_json_text);
        let mut msg = as_message(kind, body);
        if also_error_message && kind % 4 == 1 {
            msg["error"]["message"] = json!(format!("upstream said {}", form(&s.text, how)));
        }
        let m = masker(client);
        let copies = m.copies(&msg);
        let client_copy = copies.client.clone().unwrap_or_else(|| msg.clone()).to_string();
        let audit = copies.audit.clone().unwrap_or_else(|| msg.clone()).to_string();
        // The client copy loses what the client set detects (whatever else it does not), and
        // the credential always; the audit copy loses everything.
        if s.detector.is_none_or(|d| client[d]) {
            prop_assert!(survivor(s, &client_copy).is_none(), "{:?} survived in the client copy {client_copy}", s.text);
        }
        prop_assert!(survivor(s, &audit).is_none(), "{:?} survived in the audit copy {audit}", s.text);
        let (log_only, _) = m.audit_copy(&msg).unwrap_or((msg.clone(), Vec::new()));
        prop_assert!(survivor(s, &log_only.to_string()).is_none());
        prop_assert!(!copies.marks.is_empty());
        let report = report(&copies.marks).to_string();
        prop_assert!(survivor(s, &report).is_none(), "the report holds the value");
    }

    #[test]
    fn no_card_number_survives_as_a_json_number(
        body in tree(),
        card in prop::sample::select(vec![
            4_111_111_111_111_111_u64,
            5_500_000_000_000_004,
            378_282_246_310_005,
            6_011_111_111_111_117,
            4_222_222_222_222,
        ]),
        choice in 0usize..64,
        kind in 0usize..4,
    ) {
        let mut body = body;
        plant_number(&mut body, card, choice);
        let msg = as_message(kind, body);
        let m = masker([false; 8]);
        let copies = m.copies(&msg);
        prop_assert!(copies.client.is_none(), "the client set detects nothing here");
        let audit = copies.audit.clone().unwrap().to_string();
        prop_assert!(!audit.contains(&card.to_string()), "{card} survived in {audit}");
        prop_assert!(audit.contains("\"[custody:card_number]\""));
        let (log_only, marks) = m.audit_copy(&msg).unwrap();
        prop_assert!(!log_only.to_string().contains(&card.to_string()));
        prop_assert!(marks.iter().any(|k| k.by == "detector card_number"));
    }
}

#[test]
fn a_card_number_as_a_json_number_becomes_a_redaction_and_other_numbers_stay() {
    let m = masker([true; 8]);
    let msg = json!({"jsonrpc": "2.0", "id": 4_111_111_111_111_111_u64, "result": {
        "pan": 4_111_111_111_111_111_u64,
        "order": 1_234_567_890_123_452_u64,
        "amount": 12.5,
        "items": [5_500_000_000_000_004_u64, -4_111_111_111_111_111_i64],
    }});
    let client = m.copies(&msg).client.unwrap();
    assert_eq!(
        client["id"], 4_111_111_111_111_111_u64,
        "the envelope stays"
    );
    assert_eq!(client["result"]["pan"], "[custody:card_number]");
    assert_eq!(
        client["result"]["order"], 1_234_567_890_123_452_u64,
        "Luhn-valid, but no card network's prefix"
    );
    assert_eq!(client["result"]["amount"], 12.5);
    assert_eq!(client["result"]["items"][0], "[custody:card_number]");
    assert_eq!(client["result"]["items"][1], -4_111_111_111_111_111_i64);
}
