//! Built-in secret detectors. Each detector finds its matches on its own, so one detector's
//! match never hides another's: a `RegexSet` pass over the text says which detectors match at
//! all (the usual answer, none, costs that one pass), then each enabled detector that matched
//! finds its own spans, and overlapping spans are merged into one redaction. A disabled
//! detector is never run, so it cannot consume text either. Card numbers are confirmed with the
//! Luhn check and the card networks' prefixes and lengths ([`card`]).

mod card;

use std::sync::OnceLock;

use regex::{Regex, RegexSet};

pub use card::is_card_number;

/// Every detector: its name and its pattern. For `password_pair` only the `pp_value` group
/// (the value after `password=`) is masked.
const DETECTORS: [(&str, &str); 8] = [
    ("aws_access_key", r"\b(?:AKIA|ASIA|ABIA|ACCA)[0-9A-Z]{16}\b"),
    (
        "github_token",
        r"\b(?:gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{22,255})\b",
    ),
    (
        "gitlab_token",
        r"\bgl(?:pat|ptt|dt|rt|cbt|oas|ft|imt|soat)-[A-Za-z0-9_\-]{20,}",
    ),
    ("slack_token", r"\bxox[abposr]-[A-Za-z0-9\-]{10,}"),
    (
        "jwt",
        r"\beyJ[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}",
    ),
    (
        "private_key",
        r"-----BEGIN [A-Z ]*PRIVATE KEY-----(?s:.*?)-----END [A-Z ]*PRIVATE KEY-----",
    ),
    (
        "password_pair",
        r#"(?i:\b(?:password|passwd|pwd|secret|token|api_key|apikey|access_key)\s*[=:]\s*"?)(?P<pp_value>[^\s"'&,;}]{3,})"#,
    ),
    ("card_number", r"\b\d(?:[ \-]?\d){12,}\b"),
];

/// Index of `password_pair` in [`DETECTORS`].
const PASSWORD_PAIR: usize = 6;
/// Index of `card_number` in [`DETECTORS`].
pub const CARD_NUMBER: usize = 7;

/// The detectors' names, in order.
pub fn names() -> impl Iterator<Item = &'static str> {
    DETECTORS.iter().map(|(n, _)| *n)
}

struct Compiled {
    /// All patterns at once: which detectors match somewhere in a text.
    set: RegexSet,
    /// Each pattern on its own, to find its spans.
    each: Vec<Regex>,
}

fn compiled() -> &'static Compiled {
    static RE: OnceLock<Compiled> = OnceLock::new();
    RE.get_or_init(|| {
        // The patterns are constants of this file; a test compiles them.
        let set = RegexSet::new(DETECTORS.iter().map(|(_, p)| *p))
            .unwrap_or_else(|e| unreachable!("detector patterns: {e}"));
        let each = DETECTORS
            .iter()
            .map(|(_, p)| Regex::new(p).unwrap_or_else(|e| unreachable!("detector pattern: {e}")))
            .collect();
        Compiled { set, each }
    })
}

/// A redaction: a byte range of the text and the detectors whose matches make it up (merged
/// when they overlap).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub start: usize,
    pub end: usize,
    /// The detector named in the replacement: the one with the longest match in the range.
    pub detector: &'static str,
    /// Every detector with a match in the range, in [`names`] order.
    pub by: Vec<&'static str>,
}

/// One detector's match.
#[derive(Clone, Copy)]
struct Hit {
    start: usize,
    end: usize,
    detector: usize,
}

/// Finds the secrets the `enabled` detectors (indexes into [`names`]) recognise in `text`,
/// left to right, overlapping matches merged.
pub fn scan(text: &str, enabled: &[bool; 8]) -> Vec<Found> {
    if !enabled.iter().any(|e| *e) {
        return Vec::new();
    }
    let re = compiled();
    let matched = re.set.matches(text);
    if !matched.matched_any() {
        return Vec::new();
    }
    let mut hits = Vec::new();
    for i in matched.iter().filter(|i| enabled[*i]) {
        let each = &re.each[i];
        match i {
            PASSWORD_PAIR => {
                hits.extend(
                    each.captures_iter(text)
                        .filter_map(|c| c.name("pp_value"))
                        .map(|v| Hit {
                            start: v.start(),
                            end: v.end(),
                            detector: i,
                        }),
                );
            }
            CARD_NUMBER => {
                for m in each.find_iter(text) {
                    hits.extend(
                        card::in_run(text, m.start(), m.end()).map(|(start, end)| Hit {
                            start,
                            end,
                            detector: i,
                        }),
                    );
                }
            }
            _ => hits.extend(each.find_iter(text).map(|m| Hit {
                start: m.start(),
                end: m.end(),
                detector: i,
            })),
        }
    }
    merge(hits)
}

/// Merges overlapping hits into one redaction each (the union of their ranges).
fn merge(mut hits: Vec<Hit>) -> Vec<Found> {
    hits.sort_by_key(|h| (h.start, std::cmp::Reverse(h.end)));
    let mut out: Vec<Found> = Vec::new();
    // The longest hit of the redaction being built, which names it.
    let mut longest = 0;
    for h in hits {
        let name = DETECTORS[h.detector].0;
        match out.last_mut() {
            Some(f) if h.start < f.end => {
                f.end = f.end.max(h.end);
                if !f.by.contains(&name) {
                    f.by.push(name);
                }
                if h.end - h.start > longest {
                    longest = h.end - h.start;
                    f.detector = name;
                }
            }
            _ => {
                longest = h.end - h.start;
                out.push(Found {
                    start: h.start,
                    end: h.end,
                    detector: name,
                    by: vec![name],
                });
            }
        }
    }
    let order = |n: &&str| DETECTORS.iter().position(|(d, _)| d == n);
    for f in &mut out {
        f.by.sort_by_key(order);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn detected(text: &str) -> Vec<(&'static str, String)> {
        scan(text, &[true; 8])
            .into_iter()
            .map(|f| (f.detector, text[f.start..f.end].to_string()))
            .collect()
    }

    #[test]
    fn each_detector_finds_its_secret_and_not_lookalikes() {
        let gh = format!("ghp_{}", "a1B2".repeat(9));
        let cases = [
            (
                "key AKIAIOSFODNN7EXAMPLE here",
                "aws_access_key",
                "AKIAIOSFODNN7EXAMPLE",
            ),
            (&*format!("ref {gh}"), "github_token", gh.as_str()),
            (
                "glpat-abcdefghij0123456789xyz",
                "gitlab_token",
                "glpat-abcdefghij0123456789xyz",
            ),
            (
                "xoxb-123456789012-abcdefABCDEF",
                "slack_token",
                "xoxb-123456789012-abcdefABCDEF",
            ),
            (
                "Bearer eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJlX2hlcmU",
                "jwt",
                "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJlX2hlcmU",
            ),
            (
                "-----BEGIN RSA PRIVATE KEY-----\nMIIB\n-----END RSA PRIVATE KEY-----",
                "private_key",
                "-----BEGIN RSA PRIVATE KEY-----\nMIIB\n-----END RSA PRIVATE KEY-----",
            ),
            ("db password=hunter22 ok", "password_pair", "hunter22"),
            ("SECRET: \"s3cr3t-v4lue\"", "password_pair", "s3cr3t-v4lue"),
            (
                "card 4111 1111 1111 1111 ok",
                "card_number",
                "4111 1111 1111 1111",
            ),
            (
                "qty 1 4111 1111 1111 1111 ok",
                "card_number",
                "4111 1111 1111 1111",
            ),
            ("pan 4111111111111111.", "card_number", "4111111111111111"),
        ];
        for (text, detector, secret) in cases {
            assert_eq!(detected(text), [(detector, secret.to_string())], "{text}");
        }
        for clean in [
            "AKIA is a prefix",
            "order 4111 1111 1111 1112 (fails Luhn)",
            "order 1234 5678 9012 3452 (passes Luhn, no card network's prefix)",
            "ghp_short",
            "a password field",
            "eyJ only",
        ] {
            assert!(detected(clean).is_empty(), "{clean}: {:?}", detected(clean));
        }
    }

    #[test]
    fn disabled_detectors_do_not_fire() {
        let mut enabled = [true; 8];
        enabled[0] = false;
        assert!(scan("AKIAIOSFODNN7EXAMPLE", &enabled).is_empty());
    }

    /// Issue 13, class 6: one detector's match hid another's secret.
    #[test]
    fn overlapping_matches_are_merged_so_no_secret_is_left_behind() {
        let key = "-----BEGIN RSA PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END RSA PRIVATE KEY-----";
        let text = format!("secret: {key} done");
        let found = scan(&text, &[true; 8]);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(&text[found[0].start..found[0].end], key);
        assert_eq!(
            found[0].detector, "private_key",
            "the longest match names it"
        );
        assert_eq!(found[0].by, ["private_key", "password_pair"]);

        // A JWT glued to a Slack-looking prefix: the Slack match used to swallow the JWT's
        // head and leave its payload and signature.
        let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.SflKxwRJSMeKKF2QT4fw";
        let text = format!("x xoxb-{jwt} y");
        let found = scan(&text, &[true; 8]);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(&text[found[0].start..found[0].end], format!("xoxb-{jwt}"));
        assert_eq!(found[0].by, ["slack_token", "jwt"]);
    }

    /// Issue 13, class 6: a disabled detector's match hid what an enabled one finds.
    #[test]
    fn a_disabled_detector_consumes_nothing() {
        let gh = format!("ghp_{}", "Zx9Q".repeat(9));
        let text = format!("token={gh}");
        let mut only_github = [false; 8];
        only_github[1] = true;
        let found = scan(&text, &only_github);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(&text[found[0].start..found[0].end], gh);
        assert_eq!(found[0].by, ["github_token"]);

        let key = "-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----";
        let mut only_keys = [false; 8];
        only_keys[5] = true;
        let text = format!("password: {key}");
        let found = scan(&text, &only_keys);
        assert_eq!(&text[found[0].start..found[0].end], key);
    }

    #[test]
    fn separate_matches_stay_separate() {
        let text = "AKIAIOSFODNN7EXAMPLE and password=hunter22";
        let found = detected(text);
        assert_eq!(
            found,
            [
                ("aws_access_key", "AKIAIOSFODNN7EXAMPLE".to_string()),
                ("password_pair", "hunter22".to_string())
            ]
        );
    }
}
