use super::*;

const LIMITS: Limits = Limits {
    max_depth: 64,
    max_batch: 64,
};

fn refused(text: &[u8]) -> Violation {
    match scan(text, LIMITS) {
        Ok(()) => panic!("accepted: {}", String::from_utf8_lossy(text)),
        Err(v) => v,
    }
}

fn at(text: &str, problem: Problem, path: &str) {
    let v = refused(text.as_bytes());
    assert_eq!((v.problem, v.path.as_str()), (problem, path), "{text}");
}

#[test]
fn accepts_ordinary_json() {
    for ok in [
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x","arguments":{"a":[1,-2,3.5e-3,true,false,null,"\u00e9\n"]}}}"#,
        r#" [ {} , [] , "" , 0 , -0 , 1E4 ] "#,
        r#"{"a":{"a":{"a":1}},"b":[{"a":1},{"a":2}]}"#,
        r#""\ud83d\ude00 and 😀""#,
        "9223372036854775807",
        "-9223372036854775808",
        "18446744073709551615",
        "1.7976931348623157e308",
        "1e-400",
        "123456789012345678",
    ] {
        assert_eq!(scan(ok.as_bytes(), LIMITS), Ok(()), "{ok}");
    }
}

#[test]
fn repeated_member_names_are_refused_with_their_path() {
    at(
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"deploy","arguments":{"environment":"production","environment":"staging"}}}"#,
        Problem::RepeatedMember,
        "params.arguments.environment",
    );
    at(r#"{"id":1,"id":2}"#, Problem::RepeatedMember, "id");
    // Equal once escapes are decoded.
    at(r#"{"a":1,"\u0061":2}"#, Problem::RepeatedMember, "a");
    at(r#"{"é":1,"\u00e9":2}"#, Problem::RepeatedMember, r#"["é"]"#);
    at(
        r#"[{"a":1},{"b":{"c":[0,{"x":1,"x":1}]}}]"#,
        Problem::RepeatedMember,
        "[1].b.c[1].x",
    );
    at(
        r#"{"_meta":{"io.modelcontextprotocol/protocolVersion":"a","io.modelcontextprotocol/protocolVersion":"b"}}"#,
        Problem::RepeatedMember,
        r#"_meta["io.modelcontextprotocol/protocolVersion"]"#,
    );
    // The same name in different objects is fine.
    assert_eq!(scan(br#"{"a":{"a":1},"b":{"a":2}}"#, LIMITS), Ok(()));
}

#[test]
fn repeated_names_among_many_members_are_found() {
    let mut members: Vec<String> = (0..1000).map(|i| format!("\"k{i}\":{i}")).collect();
    let text = format!("{{{}}}", members.join(","));
    assert_eq!(scan(text.as_bytes(), LIMITS), Ok(()));
    members.push("\"k\\u0035\":0".into());
    let text = format!("{{{}}}", members.join(","));
    assert_eq!(refused(text.as_bytes()).path, "k5");
    // Past the linear part, with nested objects in between.
    let text = format!(
        "{{{},\"k17\":{{\"k17\":1}},\"k3\":{{}}}}",
        (0..20)
            .map(|i| format!("\"k{i}\":{{}}"))
            .collect::<Vec<_>>()
            .join(",")
    );
    assert_eq!(refused(text.as_bytes()).path, "k17");
}

#[test]
fn strings_must_be_utf8_without_lone_surrogates() {
    let v = refused(b"{\"a\":{\"b\":\"\xff\"}}");
    assert_eq!((v.problem, v.path.as_str()), (Problem::InvalidUtf8, "a.b"));
    let v = refused(b"{\"\xc3\":1}");
    assert_eq!(v.problem, Problem::InvalidUtf8);
    at(r#"{"a":"\ud800"}"#, Problem::LoneSurrogate, "a");
    at(r#"{"a":"\ud800x"}"#, Problem::LoneSurrogate, "a");
    at(r#"{"a":"\ud800\u0041"}"#, Problem::LoneSurrogate, "a");
    at(r#"{"a":["\udc00"]}"#, Problem::LoneSurrogate, "a[0]");
    at(r#"{"\udfff":1}"#, Problem::LoneSurrogate, "");
}

#[test]
fn numbers_must_be_exact() {
    at(
        r#"{"amount":18446744073709551616}"#,
        Problem::IntegerRange,
        "amount",
    );
    at(
        r#"{"a":[-9223372036854775809]}"#,
        Problem::IntegerRange,
        "a[0]",
    );
    at(r#"{"a":1e400}"#, Problem::NumberRange, "a");
    at(r#"{"a":-1.5E+309}"#, Problem::NumberRange, "a");
}

#[test]
fn syntax_errors_and_depth() {
    for bad in [
        "",
        "{",
        "[1,]",
        "{\"a\"}",
        "{\"a\":1,}",
        "01",
        "1.",
        "-",
        "1e",
        "tru",
        "\"a",
        "\"\t\"",
        "\"\\x\"",
        "\"\\u12\"",
        "{} {}",
        "nul",
        "[1 2]",
        "{1:2}",
    ] {
        assert_eq!(refused(bad.as_bytes()).problem, Problem::Syntax, "{bad:?}");
    }
    let deep = format!("{{\"a\":{}{}}}", "[".repeat(64), "]".repeat(64));
    let v = refused(deep.as_bytes());
    assert_eq!(v.problem, Problem::TooDeep(64));
    assert!(v.path.starts_with("a[0][0]"), "{}", v.path);
}

#[test]
fn batches_are_bounded_while_scanning() {
    let two = Limits {
        max_depth: 8,
        max_batch: 2,
    };
    assert_eq!(scan(b"[1,2]", two), Ok(()));
    assert_eq!(
        scan(b"[1,2,3]", two).map_err(|v| v.problem),
        Err(Problem::BatchTooLong(2))
    );
    // Only the top level is a batch.
    assert_eq!(scan(b"[[1,2,3]]", two), Ok(()));
}

#[test]
fn long_names_are_shortened_in_paths() {
    let name = "x-".repeat(100);
    let text = format!("{{\"{name}\":1,\"{name}\":2}}");
    let v = refused(text.as_bytes());
    assert!(v.path.len() < 80, "{}", v.path);
    assert!(v.path.ends_with("…\"]"), "{}", v.path);
}

/// A reference reading: serde, noting whether any object repeats a (decoded) member name.
struct Reference {
    repeated: bool,
}

impl<'de> serde::Deserialize<'de> for Reference {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Reference;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("JSON")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut m: A,
            ) -> Result<Reference, A::Error> {
                let mut seen = HashSet::new();
                let mut repeated = false;
                while let Some(k) = m.next_key::<String>()? {
                    repeated |= !seen.insert(k);
                    repeated |= m.next_value::<Reference>()?.repeated;
                }
                Ok(Reference { repeated })
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut s: A,
            ) -> Result<Reference, A::Error> {
                let mut repeated = false;
                while let Some(r) = s.next_element::<Reference>()? {
                    repeated |= r.repeated;
                }
                Ok(Reference { repeated })
            }
            fn visit_str<E>(self, _: &str) -> Result<Reference, E> {
                Ok(Reference { repeated: false })
            }
            fn visit_bool<E>(self, _: bool) -> Result<Reference, E> {
                Ok(Reference { repeated: false })
            }
            fn visit_i64<E>(self, _: i64) -> Result<Reference, E> {
                Ok(Reference { repeated: false })
            }
            fn visit_u64<E>(self, _: u64) -> Result<Reference, E> {
                Ok(Reference { repeated: false })
            }
            fn visit_f64<E>(self, _: f64) -> Result<Reference, E> {
                Ok(Reference { repeated: false })
            }
            fn visit_unit<E>(self) -> Result<Reference, E> {
                Ok(Reference { repeated: false })
            }
        }
        d.deserialize_any(V)
    }
}

mod agrees_with_serde {
    use proptest::prelude::*;

    use super::*;

    fn jsonish() -> impl Strategy<Value = String> {
        let parts = prop::sample::select(vec![
            "{",
            "}",
            "[",
            "]",
            ",",
            ":",
            "\"a\"",
            "\"\\u0061\"",
            "\"b\"",
            "\"\\ud83d\\ude00\"",
            "\"\\ud800\"",
            "\"é\"",
            "1",
            "-0",
            "1.5e3",
            "1e400",
            "18446744073709551615",
            "18446744073709551616",
            "-9223372036854775809",
            "null",
            "true",
            " ",
        ]);
        prop::collection::vec(parts, 0..40).prop_map(|v| v.concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]

        /// What the scan accepts, serde reads, with no repeated names; a repeated name the scan
        /// reports is one serde sees too.
        #[test]
        fn scan_and_serde_agree(text in jsonish()) {
            let reference = serde_json::from_str::<Reference>(&text);
            match scan(text.as_bytes(), LIMITS) {
                Ok(()) => {
                    prop_assert!(serde_json::from_str::<serde_json::Value>(&text).is_ok(), "{text}");
                    prop_assert!(!reference.unwrap().repeated, "{text}");
                }
                Err(v) if v.problem == Problem::RepeatedMember => {
                    prop_assert!(reference.map_or(true, |r| r.repeated), "{text}");
                }
                Err(v) if v.problem == Problem::Syntax => {
                    prop_assert!(serde_json::from_str::<serde::de::IgnoredAny>(&text).is_err(), "{text}");
                }
                Err(_) => {}
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            let _ = scan(&bytes, LIMITS);
        }
    }
}
