//! Masking: what the client receives and what the audit log stores, with sensitive values
//! replaced. Two sets per endpoint: the client set (`mask_client`) and the audit set
//! (`mask_audit`), applied on top of the client set, so the log never holds what the client
//! was spared. JSONPath rules (RFC 9535) with an action each, built-in secret detectors, and
//! the upstream credentials the gateway holds, scrubbed by value in both copies always.
//!
//! Every masking leaves a mark (the JSON pointer and the rule or detector that fired, never the
//! value), which the audit entry carries as its masking report.

pub mod detect;
pub mod key;

use std::fmt::Write as _;

use serde_json::{Value, json};
use serde_json_path::JsonPath;

pub use key::MaskKey;

/// Members of a JSON-RPC message that masking never changes.
const ENVELOPE: [&str; 3] = ["jsonrpc", "id", "method"];

/// What replaces a redacted value.
pub const REDACTED: &str = "[masked]";
/// What replaces a credential the gateway holds.
pub const CREDENTIAL: &str = crate::credentials::MARKER;

/// What a rule does to the values it selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Replace with [`REDACTED`].
    Redact,
    /// Replace with `hmac-sha256:<keyid>:<hex>` of the value: equal values stay linkable.
    Hmac,
    /// Keep the last N characters.
    Partial(usize),
}

/// A JSONPath rule.
#[derive(Debug, Clone)]
pub struct PathRule {
    /// The path as written, for reports.
    pub source: String,
    pub path: JsonPath,
    pub action: Action,
}

/// One copy's rules.
#[derive(Debug, Clone, Default)]
pub struct RuleSet {
    pub paths: Vec<PathRule>,
    /// Rules on upstream response headers: lower-case name and action.
    pub headers: Vec<(String, Action)>,
    /// Which detectors run, by index in [`detect::names`].
    pub detectors: [bool; 8],
}

impl RuleSet {
    fn pass(&self) -> Pass<'_> {
        Pass {
            paths: [&self.paths, &[]],
            detectors: self.detectors,
        }
    }
}

/// What one masking pass runs: path rules (of one or two rule sets, in order) and detectors.
#[derive(Clone, Copy)]
struct Pass<'a> {
    paths: [&'a [PathRule]; 2],
    detectors: [bool; 8],
}

impl Pass<'_> {
    fn detects(&self) -> bool {
        self.detectors.iter().any(|d| *d)
    }
}

/// What was masked where: a JSON pointer (`/(json)` steps into JSON inside a string) and the
/// rule or detector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mark {
    pub path: String,
    pub by: String,
}

/// The masking report for an audit entry.
pub fn report(marks: &[Mark]) -> Value {
    Value::Array(
        marks
            .iter()
            .map(|m| json!({ "path": m.path, "by": m.by }))
            .collect(),
    )
}

/// An endpoint's masking.
#[derive(Debug, Clone, Default)]
pub struct Masker {
    pub client: RuleSet,
    pub audit: RuleSet,
    /// Values of the upstream credentials the gateway holds (header values, environment, OAuth
    /// tokens), kept current by the endpoint's credentials.
    pub credentials: crate::credentials::Scrub,
    pub key: Option<std::sync::Arc<MaskKey>>,
    /// Where what this masker masks for the log is counted.
    pub metrics: Option<std::sync::Arc<crate::metrics::EndpointMetrics>>,
}

/// The copies of one message.
pub struct Copies {
    /// What the client receives, when it differs from the original.
    pub client: Option<Value>,
    /// What the log stores, when it differs from the original.
    pub audit: Option<Value>,
    pub marks: Vec<Mark>,
}

impl Masker {
    /// Masks a message for the log only (it goes to the upstream, or it is the client's own):
    /// the client set and the audit set. `None` when nothing was masked.
    pub fn audit_copy(&self, original: &Value) -> Option<(Value, Vec<Mark>)> {
        let mut span = crate::telemetry::child("mask");
        let mut v = original.clone();
        let mut marks = Vec::new();
        if self.audit_adds_detectors() {
            self.apply(self.both(), &mut v, "", &mut marks);
        } else {
            self.apply(self.client.pass(), &mut v, "", &mut marks);
            if !self.audit.paths.is_empty() {
                self.apply(self.audit_paths(), &mut v, "", &mut marks);
            }
        }
        self.count(&marks);
        if let Some(s) = &mut span {
            s.set(
                "custody.mask.values",
                i64::try_from(marks.len()).unwrap_or(i64::MAX),
            );
        }
        (!marks.is_empty()).then_some((v, marks))
    }

    fn count(&self, marks: &[Mark]) {
        if let (Some(m), false) = (&self.metrics, marks.is_empty()) {
            m.masked(marks);
        }
    }

    /// Masks a message on its way to the client: the client copy, and the audit copy (the
    /// client set and the audit set). `marks` report the audit copy, which masks everything
    /// the client copy does.
    pub fn copies(&self, original: &Value) -> Copies {
        let _span = crate::telemetry::child("mask");
        let mut client = original.clone();
        let mut client_marks = Vec::new();
        self.apply(self.client.pass(), &mut client, "", &mut client_marks);
        if self.audit_adds_detectors() {
            // The audit copy is made from the original, not from the client copy: a redaction
            // in the client copy may have cut the start off a secret only an audit detector
            // knows (`secret: -----BEGIN ... PRIVATE KEY-----` with `password_pair` for the
            // client and `private_key` for the log); every detector must see whole text.
            let mut audit = original.clone();
            let mut marks = Vec::new();
            self.apply(self.both(), &mut audit, "", &mut marks);
            self.count(&marks);
            return Copies {
                client: (!client_marks.is_empty()).then_some(client),
                audit: (!marks.is_empty()).then_some(audit),
                marks,
            };
        }
        // No detector of its own: the audit set's path rules on top of the client copy (the
        // client's detectors have seen whole text already).
        let mut marks = client_marks;
        let client_count = marks.len();
        let audit = if self.audit.paths.is_empty() {
            None
        } else {
            let mut a = client.clone();
            self.apply(self.audit_paths(), &mut a, "", &mut marks);
            (marks.len() > client_count).then_some(a)
        };
        let client = (client_count > 0).then_some(client);
        self.count(&marks);
        Copies {
            audit: audit.or_else(|| client.clone()),
            client,
            marks,
        }
    }

    /// Scrubs only the credentials the gateway holds from `value`, found at `pointer` of a
    /// message (so members named like the JSON-RPC envelope are not skipped): what an approver
    /// sees of the arguments a held call will send. The count of values scrubbed.
    pub fn credentials_only(&self, value: &Value, pointer: &str) -> (Value, usize) {
        let mut v = value.clone();
        let mut marks = Vec::new();
        let nothing = Pass {
            paths: [&[], &[]],
            detectors: [false; 8],
        };
        self.apply(nothing, &mut v, pointer, &mut marks);
        (v, marks.len())
    }

    /// Masks a text the gateway builds from what an upstream or a token endpoint said, on its
    /// way to the client (an error message): the credentials, and the client set's detectors,
    /// as in the client copy. Returns how many values were masked.
    pub fn scrub_text(&self, text: &mut String) -> usize {
        let mut marks = Vec::new();
        self.scrub(self.client.pass(), text, "", &mut marks);
        marks.len()
    }

    /// Masks an HTTP upstream's response headers, which only the log records: the header rules
    /// of both sets, then credentials and the detectors of either set on the other values.
    pub fn headers(&self, headers: &mut serde_json::Map<String, Value>) -> Vec<Mark> {
        let mut marks = Vec::new();
        let scan = Pass {
            paths: [&[], &[]],
            detectors: self.both().detectors,
        };
        for (name, value) in headers.iter_mut() {
            let pointer = format!("/upstream_headers/{name}");
            let rule = self
                .client
                .headers
                .iter()
                .chain(&self.audit.headers)
                .find(|(n, _)| n == name);
            if let Some((n, action)) = rule {
                *value = Value::String(self.act(*action, value));
                marks.push(Mark {
                    path: pointer,
                    by: format!("header rule {n}"),
                });
            } else if let Value::String(s) = value {
                self.scrub(scan, s, &pointer, &mut marks);
            }
        }
        self.count(&marks);
        marks
    }

    /// Does the audit set enable a detector the client set does not?
    fn audit_adds_detectors(&self) -> bool {
        self.audit
            .detectors
            .iter()
            .zip(self.client.detectors)
            .any(|(a, c)| *a && !c)
    }

    /// The audit set's path rules alone (and credential scrubbing).
    fn audit_paths(&self) -> Pass<'_> {
        Pass {
            paths: [&self.audit.paths, &[]],
            detectors: [false; 8],
        }
    }

    /// The client set then the audit set: path rules of both in that order, and every detector
    /// either enables, in one scan.
    fn both(&self) -> Pass<'_> {
        let mut detectors = self.audit.detectors;
        for (d, c) in detectors.iter_mut().zip(self.client.detectors) {
            *d = *d || c;
        }
        Pass {
            paths: [&self.client.paths, &self.audit.paths],
            detectors,
        }
    }

    fn act(&self, action: Action, node: &Value) -> String {
        let text = match node {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        match action {
            Action::Redact => REDACTED.to_string(),
            Action::Hmac => match &self.key {
                Some(k) => k.tag(&text),
                None => REDACTED.to_string(),
            },
            Action::Partial(n) => {
                let count = text.chars().count();
                if count <= n {
                    REDACTED.to_string()
                } else {
                    let kept: String = text.chars().skip(count - n).collect();
                    format!("****{kept}")
                }
            }
        }
    }

    /// Applies `set` (and credential scrubbing) to `v`; `base` prefixes the reported paths.
    fn apply(&self, set: Pass<'_>, v: &mut Value, base: &str, marks: &mut Vec<Mark>) {
        for rule in set.paths.into_iter().flatten() {
            let pointers: Vec<String> = rule
                .path
                .query_located(v)
                .locations()
                .map(|l| l.to_json_pointer())
                .collect();
            for p in pointers {
                // The JSON-RPC envelope stays: a masked id could not be matched to its request.
                if base.is_empty() && ENVELOPE.iter().any(|e| p == format!("/{e}")) {
                    continue;
                }
                if let Some(node) = v.pointer_mut(&p) {
                    if node.as_str().is_some_and(is_marker) {
                        continue;
                    }
                    *node = Value::String(self.act(rule.action, node));
                    marks.push(Mark {
                        path: format!("{base}{p}"),
                        by: format!("rule {}", rule.source),
                    });
                }
            }
        }
        let mut pointer = base.to_string();
        self.walk(set, v, &mut pointer, marks);
    }

    fn walk(&self, set: Pass<'_>, v: &mut Value, pointer: &mut String, marks: &mut Vec<Mark>) {
        match v {
            Value::String(s) => {
                let t = s.trim_start();
                if (t.starts_with('{') || t.starts_with('['))
                    && let Ok(mut inner @ (Value::Object(_) | Value::Array(_))) =
                        serde_json::from_str::<Value>(s)
                {
                    let before = marks.len();
                    self.apply(set, &mut inner, &format!("{pointer}/(json)"), marks);
                    if marks.len() > before {
                        *s = inner.to_string();
                    }
                    return;
                }
                self.scrub(set, s, pointer, marks);
            }
            Value::Array(items) => {
                for (i, item) in items.iter_mut().enumerate() {
                    let len = pointer.len();
                    let _ = write!(pointer, "/{i}");
                    self.walk(set, item, pointer, marks);
                    pointer.truncate(len);
                }
            }
            Value::Object(map) => {
                let root = pointer.is_empty();
                for (k, item) in map.iter_mut() {
                    if root && ENVELOPE.contains(&k.as_str()) {
                        continue;
                    }
                    let len = pointer.len();
                    pointer.push('/');
                    if k.contains(['~', '/']) {
                        pointer.push_str(&k.replace('~', "~0").replace('/', "~1"));
                    } else {
                        pointer.push_str(k);
                    }
                    self.walk(set, item, pointer, marks);
                    pointer.truncate(len);
                }
            }
            Value::Number(_) => Self::card_number(set, v, pointer, marks),
            _ => {}
        }
    }

    fn scrub(&self, set: Pass<'_>, s: &mut String, pointer: &str, marks: &mut Vec<Mark>) {
        for _ in 0..self.credentials.redact(s) {
            marks.push(Mark {
                path: pointer.to_string(),
                by: "credential".into(),
            });
        }
        if !set.detects() {
            return;
        }
        let found = detect::scan(s, &set.detectors);
        if found.is_empty() {
            return;
        }
        let mut out = String::with_capacity(s.len());
        let mut at = 0;
        for f in &found {
            out.push_str(&s[at..f.start]);
            out.push_str("[custody:");
            out.push_str(f.detector);
            out.push(']');
            at = f.end;
            // One redaction, reported under every detector whose match it covers.
            marks.extend(f.by.iter().map(|d| Mark {
                path: pointer.to_string(),
                by: format!("detector {d}"),
            }));
        }
        out.push_str(&s[at..]);
        *s = out;
    }

    /// A JSON number that is a card number (13 to 19 digits, see [`detect::is_card_number`])
    /// becomes the string `[custody:card_number]`: the copy changes the value's type, since
    /// no number can stand for a redaction.
    fn card_number(set: Pass<'_>, v: &mut Value, pointer: &str, marks: &mut Vec<Mark>) {
        if !set.detectors[detect::CARD_NUMBER] {
            return;
        }
        let Value::Number(n) = v else { return };
        // 13 to 19 digits fit in a u64; negative numbers and fractions are no card numbers.
        let Some(u) = n.as_u64().filter(|u| *u >= 1_000_000_000_000) else {
            return;
        };
        if detect::is_card_number(&u.to_string()) {
            *v = Value::String("[custody:card_number]".into());
            marks.push(Mark {
                path: pointer.to_string(),
                by: "detector card_number".into(),
            });
        }
    }
}

/// Is this one of the markers masking leaves (so it is not masked twice)?
fn is_marker(s: &str) -> bool {
    s == REDACTED
        || s == CREDENTIAL
        || s.starts_with("hmac-sha256:")
        || (s.starts_with("[custody:") && s.ends_with(']'))
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod properties;
