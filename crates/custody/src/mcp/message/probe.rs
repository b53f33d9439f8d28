//! Finding which call a message belongs to when the message itself is refused: the top-level
//! `id` of JSON text that may be too large to keep or may not parse, read from a stream of
//! chunks in constant memory.
//!
//! Only a plainly written `"id"` member whose value is a number or a string without escapes is
//! found; an `id` that appears twice, or one written any other way, gives `None` (the message
//! cannot be attributed, and the caller treats it so).

use serde_json::Value;

/// The longest id value kept.
const MAX_ID: usize = 64;

/// Reads the top-level `id` of JSON text fed to it in pieces.
#[derive(Debug, Default)]
pub struct IdProbe {
    depth: u32,
    in_string: bool,
    escaped: bool,
    /// At depth 1: the next string is a member name.
    want_key: bool,
    /// Collecting a member name at depth 1 (`Some`), up to 3 bytes.
    key: Option<Vec<u8>>,
    /// The last member name at depth 1 was `id` and its `:` has not come yet.
    after_id_key: bool,
    /// Collecting the value of `id`.
    value: Option<Vec<u8>>,
    /// Escapes, nesting or length made the value unusable.
    spoiled: bool,
    found: Option<Vec<u8>>,
    /// `id` appeared more than once.
    repeated: bool,
}

impl IdProbe {
    pub fn feed(&mut self, chunk: &[u8]) {
        for &b in chunk {
            self.byte(b);
        }
    }

    fn byte(&mut self, b: u8) {
        if self.in_string {
            if self.escaped {
                self.escaped = false;
            } else if b == b'\\' {
                self.escaped = true;
                // An escaped name is not the plain `"id"`; an escaped value is not kept.
                if let Some(k) = &mut self.key {
                    k.extend_from_slice(&[0; 3]);
                }
                self.spoil_value();
                return;
            } else if b == b'"' {
                self.in_string = false;
                if let Some(k) = self.key.take() {
                    self.after_id_key = k == b"id";
                    return;
                }
            }
            if let Some(k) = &mut self.key {
                if k.len() < 3 {
                    k.push(b);
                }
            } else {
                self.push_value(b);
            }
            return;
        }
        if b.is_ascii_whitespace() {
            return;
        }
        if self.depth == 1 && self.value.is_some() && (b == b',' || b == b'}') {
            self.end_value();
        }
        match b {
            b'"' => {
                self.in_string = true;
                if self.depth == 1 && self.want_key {
                    self.want_key = false;
                    self.key = Some(Vec::new());
                    return;
                }
                self.push_value(b);
            }
            b':' if self.depth == 1 && self.after_id_key => {
                self.after_id_key = false;
                self.value = Some(Vec::new());
            }
            b'{' | b'[' => {
                self.depth += 1;
                if self.depth == 1 {
                    self.want_key = b == b'{';
                } else {
                    self.spoil_value();
                }
            }
            b'}' | b']' => self.depth = self.depth.saturating_sub(1),
            b',' if self.depth == 1 => self.want_key = true,
            _ => self.push_value(b),
        }
    }

    fn push_value(&mut self, b: u8) {
        if let Some(v) = &mut self.value {
            if v.len() < MAX_ID {
                v.push(b);
            } else {
                self.spoiled = true;
            }
        }
    }

    fn spoil_value(&mut self) {
        if self.value.is_some() {
            self.spoiled = true;
        }
    }

    fn end_value(&mut self) {
        let v = self.value.take().unwrap_or_default();
        if self.found.is_some() || self.repeated {
            self.repeated = true;
            self.found = None;
            return;
        }
        if !std::mem::take(&mut self.spoiled) {
            self.found = Some(v);
        } else {
            // A second `id` must still be noticed: remember that one was seen.
            self.found = Some(Vec::new());
        }
    }

    /// The `id`, when exactly one plain number or string `id` was seen at the top level.
    pub fn id(&self) -> Option<Value> {
        if self.repeated {
            return None;
        }
        let raw = self.found.as_deref().filter(|v| !v.is_empty())?;
        match serde_json::from_slice::<Value>(raw).ok()? {
            v @ (Value::Number(_) | Value::String(_)) => Some(v),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn probe(text: &str) -> Option<Value> {
        let mut p = IdProbe::default();
        // In pieces of 3 bytes: a chunk boundary may fall anywhere.
        for chunk in text.as_bytes().chunks(3) {
            p.feed(chunk);
        }
        p.id()
    }

    #[test]
    fn finds_the_top_level_id() {
        assert_eq!(
            probe(r#"{"jsonrpc":"2.0","id":17,"result":{}}"#),
            Some(json!(17))
        );
        assert_eq!(
            probe(r#"{"result":{"id":1,"x":[{"id":2}]}, "jsonrpc":"2.0", "id" : "a-1" }"#),
            Some(json!("a-1"))
        );
        assert_eq!(probe(r#"{"result":"\"id\":5","id":6}"#), Some(json!(6)));
        assert_eq!(
            probe(r#"{"jsonrpc":"2.0","id":3,"result":{"text":"xxxx"#),
            Some(json!(3)),
            "a truncated message still names its id"
        );
    }

    #[test]
    fn refuses_to_guess() {
        assert_eq!(probe(r#"{"id":1,"id":2,"result":{}}"#), None);
        assert_eq!(probe(r#"{"id":{"a":1},"result":{}}"#), None);
        assert_eq!(probe(r#"{"id":"a\"b","result":{}}"#), None);
        assert_eq!(probe(r#"{"\u0069d":1,"result":{}}"#), None);
        assert_eq!(probe(r#"{"result":{}}"#), None);
        assert_eq!(probe(r#"[{"id":1}]"#), None);
        assert_eq!(probe(r#"{"id":null}"#), None);
    }
}
