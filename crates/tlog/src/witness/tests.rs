use super::*;
use crate::note::Note;

/// tlog-witness §add-checkpoint, the example request body verbatim.
const EXAMPLE_REQUEST: &str = "old 20852014
PlRNCrwHpqhGrupue0L7gxbjbMiKA9temvuZZDDpkaw=
jrJZDmY8Y7SyJE0MWLpLozkIVMSMZcD5kvuKxPC3swk=
5+pKlUdi2LeF/BcMHBn+Ku6yhPGNCswZZD1X/6QgPd8=
/6WVhPs2CwSsb5rYBH5cjHV/wSmA79abXAwhXw3Kj/0=

example.com/behind-the-sofa
20852163
CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=

\u{2014} example.com/behind-the-sofa Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN7u5/Zhcyv2q1gGzGku9nTo+zyWE+xeMcTOAYQ8=
\u{2014} example.com/behind-the-sofa opLqBQsREYCgu6xQkYQwJr9fo45a62DN9EdmHXnZdXNqlcVGlCum2Wks+49/V6267UEjw6QUXTS5Rovnzv++qbSzm9Q=
";

/// tlog-witness §add-checkpoint, the example response body verbatim.
const EXAMPLE_RESPONSE: &str = "\u{2014} witness.example/w1 CMp+6LWBU0anHGH5aNDTJkH/gj79sG+T6+iP2ThYN5krrDJbR1HDnucjL39QsZTSvVjyQLrdk3DXDqI5G2HgLatVs0pWh6Up69HVOw==
\u{2014} witness.example/w1 I7rEps0pvK2UqkS2gSpVUDhrhVtQV9lgF6pRrWAvjJHjyWpW7VcE3SiOlVlbQNt64vWhO+DlkL0+UfzuOBMh9ChdMkP1vi/lCAsmlw==
\u{2014} witness.example/w2 AWui8Sk55XjYLOijihBjhqEH6nS1ndDymE0a+6idX7pLcnoB+dhnz0854aLZgrrKbYKA7nC3HNJhm/kWl7oJlqU3rXXvpysAdyP3wQ==
";

#[test]
fn the_specs_example_request() {
    let req = AddCheckpoint::parse(EXAMPLE_REQUEST.as_bytes()).unwrap();
    assert_eq!(req.old, 20_852_014);
    assert_eq!(req.proof.len(), 4);
    assert_eq!(
        B64.encode(req.proof[3].0),
        "/6WVhPs2CwSsb5rYBH5cjHV/wSmA79abXAwhXw3Kj/0="
    );
    let note = Note::parse(req.checkpoint.as_bytes()).unwrap();
    assert_eq!(note.signatures.len(), 2);
    assert!(
        note.text
            .starts_with("example.com/behind-the-sofa\n20852163\n")
    );
    assert_eq!(req.encode(), EXAMPLE_REQUEST);
}

#[test]
fn old_zero_without_proof_round_trips() {
    let req = AddCheckpoint {
        old: 0,
        proof: vec![],
        checkpoint: "o\n0\nx\n\n\u{2014} o AAAAAAA=\n".into(),
    };
    let text = req.encode();
    assert!(text.starts_with("old 0\n\no\n"));
    assert_eq!(AddCheckpoint::parse(text.as_bytes()).unwrap(), req);
}

#[test]
fn malformed_requests_name_their_line() {
    let h = "PlRNCrwHpqhGrupue0L7gxbjbMiKA9temvuZZDDpkaw=";
    let cp = "o\n1\nx\n";
    let cases: Vec<(String, Option<usize>, &str)> = vec![
        (String::new(), Some(1), "must start with"),
        ("old 5".into(), Some(1), "must start with"),
        (format!("old -1\n\n{cp}"), Some(1), "old <size>"),
        (format!("old 01\n\n{cp}"), Some(1), "leading zeros"),
        (format!("old  1\n\n{cp}"), Some(1), "old <size>"),
        (format!("Old 1\n\n{cp}"), Some(1), "old <size>"),
        (
            format!("old 18446744073709551616\n\n{cp}"),
            Some(1),
            "old <size>",
        ),
        (
            format!("old 1\nnot base64!\n\n{cp}"),
            Some(2),
            "SHA-256 hash in base64",
        ),
        (
            format!("old 1\n{h}\nAAAA\n\n{cp}"),
            Some(3),
            "SHA-256 hash in base64",
        ),
        (format!("old 1\n{h}\n"), Some(3), "no empty line"),
        (format!("old 1\n{h}\n\n"), Some(4), "no checkpoint"),
        (
            format!("old 1\n{}\n{cp}", format!("{h}\n").repeat(64)),
            Some(65),
            "more than 63",
        ),
    ];
    for (body, line, needle) in cases {
        let e = AddCheckpoint::parse(body.as_bytes()).expect_err(&body);
        assert_eq!(e.line, line, "{body:?}: {e}");
        assert!(e.message.contains(needle), "{body:?}: {e}");
    }
    // 63 lines are allowed.
    let ok = format!("old 1\n{}\n{cp}", format!("{h}\n").repeat(63));
    assert_eq!(AddCheckpoint::parse(ok.as_bytes()).unwrap().proof.len(), 63);
    let e = AddCheckpoint::parse(b"old 1\n\n\xff\n").unwrap_err();
    assert_eq!((e.line, e.message), (None, "the body is not UTF-8"));
    let e = AddCheckpoint::parse(&vec![b'a'; MAX_ADD_CHECKPOINT_BYTES + 1]).unwrap_err();
    assert_eq!(e.line, None);
    assert!(e.message.contains("larger"));
}

#[test]
fn size_bodies() {
    assert_eq!(encode_size(20_852_014), "20852014\n");
    assert_eq!(parse_size(b"20852014\n"), Some(20_852_014));
    assert_eq!(parse_size(b"0\n"), Some(0));
    for bad in [
        &b""[..],
        b"5",
        b"05\n",
        b"5\n\n",
        b" 5\n",
        b"abc\n",
        b"-5\n",
        b"\xff\n",
    ] {
        assert_eq!(parse_size(bad), None, "{bad:?}");
    }
}

#[test]
fn the_specs_example_response() {
    let lines = parse_cosignature_lines(EXAMPLE_RESPONSE.as_bytes()).unwrap();
    let names: Vec<&str> = lines.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "witness.example/w1",
            "witness.example/w1",
            "witness.example/w2"
        ]
    );
    assert_eq!(encode_cosignature_lines(&lines), EXAMPLE_RESPONSE);
}

#[test]
fn malformed_responses() {
    assert_eq!(parse_cosignature_lines(b""), Err(ResponseError::Empty));
    assert_eq!(
        parse_cosignature_lines(EXAMPLE_RESPONSE.trim_end().as_bytes()),
        Err(ResponseError::Unterminated)
    );
    assert_eq!(
        parse_cosignature_lines(b"\xff\n"),
        Err(ResponseError::NotUtf8)
    );
    assert!(matches!(
        parse_cosignature_lines(b"<html>oops</html>\n"),
        Err(ResponseError::Line { line: 1, .. })
    ));
    let with_cr = EXAMPLE_RESPONSE.replace('\n', "\r\n");
    assert!(matches!(
        parse_cosignature_lines(with_cr.as_bytes()),
        Err(ResponseError::Line {
            line: 1,
            source: NoteError::ControlCharacter
        })
    ));
    let many = "\u{2014} w AAAAAAA=\n".repeat(MAX_SIGNATURES + 1);
    assert_eq!(
        parse_cosignature_lines(many.as_bytes()),
        Err(ResponseError::TooMany)
    );
    assert_eq!(
        parse_cosignature_lines(&vec![b'a'; MAX_COSIGNATURE_RESPONSE_BYTES + 1]),
        Err(ResponseError::TooLarge)
    );
}

#[test]
fn origin_hash_is_lowercase_hex_sha256() {
    assert_eq!(
        origin_hash("example.com/behind-the-sofa"),
        "5fd2dc0beb4ce54da5050cf6d5c75248b023abad441c3cecde3976fbe9da4fe4"
    );
}
