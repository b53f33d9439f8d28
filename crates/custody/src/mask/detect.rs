//! Built-in secret detectors: one regular expression with a named group per detector, so a
//! text is scanned once whatever the number of detectors; card numbers are confirmed with the
//! Luhn check.

use std::sync::OnceLock;

use regex::Regex;

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

/// The detectors' names, in order.
pub fn names() -> impl Iterator<Item = &'static str> {
    DETECTORS.iter().map(|(n, _)| *n)
}

fn combined() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        let pattern = DETECTORS
            .iter()
            .map(|(name, p)| format!("(?P<{name}>{p})"))
            .collect::<Vec<_>>()
            .join("|");
        // The patterns are constants of this file; a test compiles them.
        Regex::new(&pattern).unwrap_or_else(|e| unreachable!("detector patterns: {e}"))
    })
}

fn luhn(digits: &str) -> bool {
    let mut sum = 0;
    let mut double = false;
    let mut count = 0;
    for c in digits.chars().rev().filter(char::is_ascii_digit) {
        let mut d = c.to_digit(10).unwrap_or(0);
        if double {
            d *= 2;
            if d > 9 {
                d -= 9;
            }
        }
        sum += d;
        double = !double;
        count += 1;
    }
    (13..=19).contains(&count) && sum % 10 == 0
}

/// The card numbers in a run of digits (with single spaces or dashes between groups): windows
/// of 13 to 19 digits that start and end at group boundaries and pass the Luhn check, longest
/// first, left to right. "1 4111 1111 1111 1111" holds one; so does a run of two cards.
fn cards(text: &str, start: usize, end: usize) -> Vec<Found> {
    let run = &text[start..end];
    // Each group's byte range in `text`.
    let mut groups: Vec<(usize, usize)> = Vec::new();
    let mut group_start = None;
    for (i, c) in run.char_indices() {
        match (c.is_ascii_digit(), group_start) {
            (true, None) => group_start = Some(i),
            (false, Some(g)) => {
                groups.push((start + g, start + i));
                group_start = None;
            }
            _ => {}
        }
    }
    if let Some(g) = group_start {
        groups.push((start + g, end));
    }
    let mut found = Vec::new();
    let mut g = 0;
    while g < groups.len() {
        let mut best = None;
        let mut digits = String::new();
        for (h, (a, b)) in groups.iter().enumerate().skip(g) {
            digits.push_str(&text[*a..*b]);
            if digits.len() > 19 {
                break;
            }
            if digits.len() >= 13 && luhn(&digits) {
                best = Some(h);
            }
        }
        match best {
            Some(h) => {
                found.push(Found {
                    start: groups[g].0,
                    end: groups[h].1,
                    detector: "card_number",
                });
                g = h + 1;
            }
            None => g += 1,
        }
    }
    found
}

/// A secret found in a text: the byte range to replace and the detector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub start: usize,
    pub end: usize,
    pub detector: &'static str,
}

/// Finds the secrets the `enabled` detectors (indexes into [`names`]) recognise in `text`.
pub fn scan(text: &str, enabled: &[bool; 8]) -> Vec<Found> {
    let re = combined();
    let mut found = Vec::new();
    // Finding is a DFA pass with no capture bookkeeping; only the (rare) matches are captured
    // to learn which detector fired.
    for m in re.find_iter(text) {
        let Some(caps) = re.captures_at(text, m.start()) else {
            continue;
        };
        for (i, (name, _)) in DETECTORS.iter().enumerate() {
            let Some(m) = caps.name(name) else {
                continue;
            };
            if !enabled[i] {
                break;
            }
            let (start, end) = if *name == "password_pair" {
                match caps.name("pp_value") {
                    Some(v) => (v.start(), v.end()),
                    None => break,
                }
            } else {
                (m.start(), m.end())
            };
            if *name == "card_number" {
                found.extend(cards(text, m.start(), m.end()));
                break;
            }
            found.push(Found {
                start,
                end,
                detector: name,
            });
            break;
        }
    }
    found
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
            (&*format!("token {gh}"), "github_token", gh.as_str()),
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
}
