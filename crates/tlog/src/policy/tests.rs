use super::*;
use crate::cosignature::CosignatureSigner;
use crate::note::Signer;

fn wkey(i: u8) -> String {
    CosignatureSigner::new(&format!("w{i}.example"), [i; 32])
        .unwrap()
        .verifier()
        .to_key_string()
}

fn lkey(i: u8) -> String {
    Signer::new(&format!("log{i}.example"), [100 + i; 32])
        .unwrap()
        .verifier()
        .to_key_string()
}

fn err(text: &str) -> PolicyError {
    Policy::parse(text.as_bytes()).expect_err(text)
}

/// The example of tlog-policy §Example policy, with keys.
fn example() -> String {
    format!(
        "log {}\n\nwitness X1 {}\nwitness X2 {}\nwitness X3 {}\ngroup X-witnesses 2 X1 X2 X3\n\n\
         witness Y1 {}\nwitness Y2 {}\nwitness Y3 {}\ngroup Y-witnesses any Y1 Y2 Y3\n\n\
         group X-and-Y all X-witnesses Y-witnesses\nquorum X-and-Y\n",
        lkey(1),
        wkey(1),
        wkey(2),
        wkey(3),
        wkey(4),
        wkey(5),
        wkey(6)
    )
}

#[test]
fn the_specs_example_policy() {
    let p = Policy::parse(example().as_bytes()).unwrap();
    assert_eq!(p.logs().len(), 1);
    assert_eq!(p.log("log1.example").unwrap().url, None);
    let names: Vec<&str> = p.witnesses().iter().map(|w| w.name.as_str()).collect();
    assert_eq!(names, ["X1", "X2", "X3", "Y1", "Y2", "Y3"]);
    // "at least two of the X-witnesses, and at least one of the Y-witnesses".
    let met = |set: &[usize]| p.quorum_met(|i| set.contains(&i));
    assert!(met(&[0, 1, 3]));
    assert!(met(&[0, 2, 5]));
    assert!(met(&[0, 1, 2, 3, 4, 5]));
    assert!(!met(&[0, 3, 4, 5]), "one X is not enough");
    assert!(!met(&[0, 1, 2]), "no Y");
    assert!(!met(&[]));
    assert_eq!(p.quorum_witnesses(), [0, 1, 2, 3, 4, 5]);
    assert_eq!(
        p.describe_quorum(),
        "X-and-Y (all of: X-witnesses (2 of: X1, X2, X3), Y-witnesses (1 of: Y1, Y2, Y3))"
    );
}

#[test]
fn quorum_none_single_witness_urls_comments_and_whitespace() {
    let p = Policy::parse(b"# nothing to witness\nquorum none\n").unwrap();
    assert!(p.quorum_is_none());
    assert!(p.quorum_met(|_| false));
    let text = format!(
        "  # a comment\n\t\nwitness\tA  {} http://127.0.0.1:1/w \nlog {} https://log.example/\nquorum A",
        wkey(1),
        lkey(1)
    );
    let p = Policy::parse(text.as_bytes()).unwrap();
    assert_eq!(
        p.witnesses()[0].url.as_deref(),
        Some("http://127.0.0.1:1/w")
    );
    assert_eq!(p.logs()[0].url.as_deref(), Some("https://log.example/"));
    assert!(p.quorum_met(|i| i == 0));
    assert!(!p.quorum_met(|_| false));
    // A witness outside the quorum does not count.
    let text = format!("witness A {}\nwitness B {}\nquorum A\n", wkey(1), wkey(2));
    let p = Policy::parse(text.as_bytes()).unwrap();
    assert!(!p.quorum_met(|i| i == 1));
    assert_eq!(p.quorum_witnesses(), [0]);
}

#[test]
fn check_counts_only_verified_cosignatures() {
    let text = format!(
        "witness A {}\nwitness B {}\ngroup both all A B\nquorum both\n",
        wkey(1),
        wkey(2)
    );
    let p = Policy::parse(text.as_bytes()).unwrap();
    let cp = "log.example\n5\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n";
    let a = CosignatureSigner::new("w1.example", [1; 32]).unwrap();
    let b = CosignatureSigner::new("w2.example", [2; 32]).unwrap();
    let good_a = a.sign(cp, 10).unwrap();
    let good_b = b.sign(cp, 11).unwrap();
    let note = |sigs: Vec<crate::note::NoteSignature>| Note {
        text: cp.into(),
        signatures: sigs,
    };
    let c = p.check(&note(vec![good_a.clone(), good_b.clone()]));
    assert!(c.met);
    assert_eq!(
        c.cosigners,
        [
            Cosigner {
                witness: 0,
                timestamp: 10
            },
            Cosigner {
                witness: 1,
                timestamp: 11
            }
        ]
    );
    // B's line is over another checkpoint: it does not count, and it is reported.
    let other = b
        .sign(
            "log.example\n6\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n",
            11,
        )
        .unwrap();
    let c = p.check(&note(vec![good_a.clone(), other]));
    assert!(!c.met);
    assert_eq!(c.cosigners.len(), 1);
    assert!(matches!(
        c.invalid.as_slice(),
        [(1, CosignatureError::BadSignature(_))]
    ));
    // Missing entirely: not met, nothing invalid.
    let c = p.check(&note(vec![good_a]));
    assert!(!c.met && c.invalid.is_empty());
}

#[test]
fn every_bad_line_names_its_line() {
    let w1 = wkey(1);
    let w2 = wkey(2);
    let l1 = lkey(1);
    let cases: Vec<(String, usize, &str)> = vec![
        ("quorum none\nwitnes A x\n".into(), 2, "unknown keyword"),
        ("log\nquorum none\n".into(), 1, "a log line is"),
        (
            format!("log {l1} url extra\nquorum none\n"),
            1,
            "a log line is",
        ),
        ("log not+a+key\nquorum none\n".into(), 1, "the log's key"),
        (format!("log {w1}\nquorum none\n"), 1, "the log's key"),
        (
            format!(
                "log {l1}\nlog {}\nquorum none\n",
                Signer::new("renamed.example", [101; 32])
                    .unwrap()
                    .verifier()
                    .to_key_string()
            ),
            2,
            "duplicate",
        ),
        ("witness A\nquorum none\n".into(), 1, "a witness line is"),
        (format!("witness A {l1}\nquorum A\n"), 1, "type 0x04"),
        (
            format!("witness A {w1}\nwitness A {w2}\nquorum A\n"),
            2,
            "already defined",
        ),
        (
            format!(
                "witness A {w1}\nwitness B {}\nquorum A\n",
                CosignatureSigner::new("other.name", [1; 32])
                    .unwrap()
                    .verifier()
                    .to_key_string()
            ),
            2,
            "same public key",
        ),
        (format!("witness none {w1}\nquorum none\n"), 1, "predefined"),
        (
            format!("witness A {w1}\ngroup A any A\nquorum A\n"),
            2,
            "already defined",
        ),
        (
            format!("witness A {w1}\ngroup G any A B\nquorum G\n"),
            2,
            "not defined on an earlier line",
        ),
        (
            format!("group G any A\nwitness A {w1}\nquorum G\n"),
            1,
            "not defined on an earlier line",
        ),
        (
            format!("witness A {w1}\ngroup G any A A\nquorum G\n"),
            2,
            "only once",
        ),
        (
            format!("witness A {w1}\nwitness B {w2}\ngroup G any A B\ngroup H any A\nquorum G\n"),
            4,
            "already a member of group G",
        ),
        (
            format!("witness A {w1}\ngroup G any none\nquorum G\n"),
            2,
            "cannot be a group member",
        ),
        (
            format!("witness A {w1}\ngroup G any\nquorum G\n"),
            2,
            "lists no members",
        ),
        (
            format!("witness A {w1}\ngroup G\nquorum G\n"),
            2,
            "a group line is",
        ),
        (
            format!("witness A {w1}\ngroup G 0 A\nquorum G\n"),
            2,
            "threshold",
        ),
        (
            format!("witness A {w1}\ngroup G 2 A\nquorum G\n"),
            2,
            "threshold",
        ),
        (
            format!("witness A {w1}\ngroup G 01 A\nquorum G\n"),
            2,
            "threshold",
        ),
        (
            format!("witness A {w1}\ngroup G -1 A\nquorum G\n"),
            2,
            "threshold",
        ),
        (
            format!("witness A {w1}\ngroup G most A\nquorum G\n"),
            2,
            "threshold",
        ),
        (
            format!("witness A {w1}\nquorum B\n"),
            2,
            "no witness or group of that name",
        ),
        (
            format!("quorum A\nwitness A {w1}\n"),
            1,
            "no witness or group of that name",
        ),
        (
            format!("witness A {w1}\nquorum A\nquorum none\n"),
            3,
            "a second quorum line",
        ),
        ("quorum\n".into(), 1, "a quorum line is"),
        ("quorum none extra\n".into(), 1, "a quorum line is"),
        ("quorum none\r\n".into(), 1, "carriage return"),
        (
            "# a \u{7} bell\nquorum none\n".into(),
            1,
            "control character",
        ),
    ];
    for (text, line, needle) in cases {
        let e = err(&text);
        assert_eq!(e.line, Some(line), "{text:?}: {e}");
        assert!(e.message.contains(needle), "{text:?}: {e}");
        assert!(e.to_string().starts_with(&format!("line {line}: ")));
    }
}

#[test]
fn whole_file_errors() {
    let e = err("# no quorum\n");
    assert_eq!(e.line, None);
    assert!(e.message.contains("no quorum line"), "{e}");
    let e = Policy::parse(&vec![b'#'; MAX_POLICY_BYTES + 1]).unwrap_err();
    assert!(e.message.contains("larger than"), "{e}");
    let e = Policy::parse(b"quorum none\n# \xff\xfe\n").unwrap_err();
    assert_eq!(e.line, Some(2));
    assert!(e.message.contains("UTF-8"), "{e}");
}

#[test]
fn names_are_opaque_bytes() {
    // A Kelvin sign is not the letter K (§Character set).
    let text = format!("witness \u{212a} {}\nquorum K\n", wkey(1));
    assert!(err(&text).message.contains("no witness or group"));
}

#[test]
fn item_limits() {
    let mut text = String::new();
    for i in 0..=MAX_ITEMS {
        let key = CosignatureSigner::new(
            "w",
            (u32::try_from(i).unwrap() + 1)
                .to_le_bytes()
                .repeat(8)
                .try_into()
                .unwrap(),
        )
        .unwrap()
        .verifier()
        .to_key_string();
        text.push_str(&format!("witness w{i} {key}\n"));
    }
    text.push_str("quorum w0\n");
    let e = err(&text);
    assert_eq!(e.line, Some(MAX_ITEMS + 1));
    assert!(e.message.contains("more than"), "{e}");
}
