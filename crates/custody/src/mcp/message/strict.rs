//! One reading per message: a strict scan of JSON text that runs before anything else reads it.
//!
//! Parsers disagree about JSON that RFC 8259 leaves open: a member name that appears twice
//! (serde keeps the last copy, others the first), strings that are not UTF-8 or hold a lone
//! UTF-16 surrogate (`"\ud800"`: some replace it, some refuse, serde skips it unchecked where it
//! ignores a value), and numbers beyond what a reader holds exactly (serde turns
//! `18446744073709551616` into a float, Python keeps the integer). Policy, approvers and the log
//! read a message through serde; the upstream may use anything. So a message is accepted only
//! if every reader must agree on it:
//!
//! * no object has two members whose names are equal once escapes are decoded
//!   (`"a"` and `"\u0061"` collide);
//! * every string is UTF-8 and every `\u` escape of a surrogate is half of a pair;
//! * an integer literal (no fraction, no exponent) lies in `-2^63 ..= 2^64-1` (what `i64` and
//!   `u64` hold, so serde keeps it exact and Cedar's `Long` or the masker sees the same digits);
//!   any other number is a finite `f64` (`1e400` is refused; `1e-400` reads as 0 everywhere);
//! * nesting stays within the configured depth.
//!
//! One pass over the bytes; nothing is allocated but the stack of member names of the open
//! objects (borrowed from the input unless they contain escapes), plus a hash set for an object
//! with many members. On success it costs nothing more; on failure it names the JSON path.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;

/// An object with more members than this checks names through a hash set instead of a scan.
const LINEAR_KEYS: usize = 16;
/// A member name longer than this is shortened in error messages.
const SHOWN_KEY: usize = 64;

/// Why a message has no single reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Problem {
    /// A member name appears twice in one object.
    RepeatedMember,
    /// A string is not UTF-8.
    InvalidUtf8,
    /// A `\u` escape encodes half a surrogate pair.
    LoneSurrogate,
    /// An integer literal outside `-2^63 ..= 2^64-1`.
    IntegerRange,
    /// A number that is not a finite 64-bit float.
    NumberRange,
    /// Nested deeper than the limit.
    TooDeep(usize),
    /// A top-level array (a batch) with more elements than the limit.
    BatchTooLong(usize),
    /// Not JSON (the caller asks serde for the words).
    Syntax,
}

impl Problem {
    /// A short name for machines (`error.data.reason`).
    pub fn reason(self) -> &'static str {
        match self {
            Problem::RepeatedMember => "repeated_member",
            Problem::InvalidUtf8 => "invalid_utf8",
            Problem::LoneSurrogate => "lone_surrogate",
            Problem::IntegerRange => "integer_out_of_range",
            Problem::NumberRange => "number_out_of_range",
            Problem::TooDeep(_) => "too_deep",
            Problem::BatchTooLong(_) => "batch_too_long",
            Problem::Syntax => "syntax",
        }
    }
}

/// What the scan found and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub problem: Problem,
    /// The JSON path of the offending value or member (`params.arguments.environment`,
    /// `[2].id`); empty for the top level.
    pub path: String,
    /// Byte offset in the input.
    pub offset: usize,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = if self.path.is_empty() {
            "the top level".to_string()
        } else {
            self.path.clone()
        };
        match self.problem {
            Problem::RepeatedMember => write!(
                f,
                "the member {at} appears more than once in its object; parsers disagree on which copy counts, so the message is refused"
            ),
            Problem::InvalidUtf8 => write!(f, "the string at {at} is not valid UTF-8"),
            Problem::LoneSurrogate => write!(
                f,
                "the string at {at} has a \\u escape of a lone UTF-16 surrogate, which is not a character"
            ),
            Problem::IntegerRange => write!(
                f,
                "the integer at {at} is outside -2^63..2^64-1, the range policy and masking read exactly"
            ),
            Problem::NumberRange => write!(f, "the number at {at} is too large for a 64-bit float"),
            Problem::TooDeep(max) => write!(
                f,
                "the JSON is nested deeper than the limit of {max} levels (at {at})"
            ),
            Problem::BatchTooLong(max) => write!(
                f,
                "the JSON-RPC batch has more than {max} messages, the limit (max_batch)"
            ),
            Problem::Syntax => write!(f, "invalid JSON at byte {}", self.offset),
        }
    }
}

/// The bounds a scan enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Deepest nesting of arrays and objects.
    pub max_depth: usize,
    /// Most elements of a top-level array (a JSON-RPC batch).
    pub max_batch: usize,
}

/// Scans `bytes` as one JSON text.
///
/// # Errors
/// The first [`Violation`], with its path.
pub fn scan(bytes: &[u8], limits: Limits) -> Result<(), Violation> {
    let mut s = Scanner {
        b: bytes,
        i: 0,
        limits,
        keys: Vec::new(),
    };
    let fail = |e: Fail, s: &Scanner<'_>| Violation {
        problem: e.problem,
        path: render(&e.path),
        offset: s.i,
    };
    s.ws();
    if let Err(e) = s.value(0) {
        return Err(fail(e, &s));
    }
    s.ws();
    if s.i != s.b.len() {
        return Err(fail(Fail::new(Problem::Syntax), &s));
    }
    Ok(())
}

/// One segment of a path, collected while an error unwinds.
enum Seg {
    Key(String),
    Index(usize),
}

struct Fail {
    problem: Problem,
    /// Innermost first.
    path: Vec<Seg>,
}

impl Fail {
    fn new(problem: Problem) -> Self {
        Self {
            problem,
            path: Vec::new(),
        }
    }

    fn within(mut self, seg: Seg) -> Self {
        self.path.push(seg);
        self
    }
}

fn render(path: &[Seg]) -> String {
    let mut out = String::new();
    for seg in path.iter().rev() {
        match seg {
            Seg::Index(i) => {
                out.push('[');
                out.push_str(&i.to_string());
                out.push(']');
            }
            Seg::Key(k) => {
                let plain = k
                    .bytes()
                    .next()
                    .is_some_and(|c| c.is_ascii_alphabetic() || c == b'_')
                    && k.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_');
                if plain {
                    if !out.is_empty() {
                        out.push('.');
                    }
                    out.push_str(k);
                } else {
                    let mut end = k.len().min(SHOWN_KEY);
                    while !k.is_char_boundary(end) {
                        end -= 1;
                    }
                    let shown = if end < k.len() {
                        format!("{}…", &k[..end])
                    } else {
                        k.clone()
                    };
                    out.push('[');
                    out.push_str(&serde_json::Value::String(shown).to_string());
                    out.push(']');
                }
            }
        }
    }
    out
}

struct Scanner<'a> {
    b: &'a [u8],
    i: usize,
    limits: Limits,
    /// Member names of the objects still open, outermost first.
    keys: Vec<Cow<'a, str>>,
}

impl<'a> Scanner<'a> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.i += 1;
        }
    }

    fn expect(&mut self, c: u8) -> Result<(), Fail> {
        if self.peek() == Some(c) {
            self.i += 1;
            Ok(())
        } else {
            Err(Fail::new(Problem::Syntax))
        }
    }

    fn value(&mut self, depth: usize) -> Result<(), Fail> {
        match self.peek() {
            Some(b'{') => self.object(depth + 1),
            Some(b'[') => self.array(depth + 1),
            Some(b'"') => self.string().map(|_| ()),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(b't') => self.literal(b"true"),
            Some(b'f') => self.literal(b"false"),
            Some(b'n') => self.literal(b"null"),
            _ => Err(Fail::new(Problem::Syntax)),
        }
    }

    fn literal(&mut self, word: &[u8]) -> Result<(), Fail> {
        if self.b[self.i..].starts_with(word) {
            self.i += word.len();
            Ok(())
        } else {
            Err(Fail::new(Problem::Syntax))
        }
    }

    fn object(&mut self, depth: usize) -> Result<(), Fail> {
        if depth > self.limits.max_depth {
            return Err(Fail::new(Problem::TooDeep(self.limits.max_depth)));
        }
        self.i += 1;
        self.ws();
        if self.peek() == Some(b'}') {
            self.i += 1;
            return Ok(());
        }
        let start = self.keys.len();
        let mut many: Option<HashSet<Cow<'a, str>>> = None;
        let result = loop {
            if self.peek() != Some(b'"') {
                break Err(Fail::new(Problem::Syntax));
            }
            let key = match self.string() {
                Ok(k) => k,
                Err(e) => break Err(e),
            };
            let repeated = match &mut many {
                Some(set) => !set.insert(key.clone()),
                None => {
                    let seen = self.keys[start..].contains(&key);
                    if !seen && self.keys.len() - start >= LINEAR_KEYS {
                        let mut set: HashSet<Cow<'a, str>> = self.keys.drain(start..).collect();
                        set.insert(key.clone());
                        many = Some(set);
                    }
                    seen
                }
            };
            if repeated {
                break Err(Fail::new(Problem::RepeatedMember).within(Seg::Key(key.into_owned())));
            }
            self.ws();
            if let Err(e) = self.expect(b':') {
                break Err(e);
            }
            self.ws();
            if let Err(e) = self.value(depth) {
                break Err(e.within(Seg::Key(key.into_owned())));
            }
            if many.is_none() {
                self.keys.push(key);
            }
            self.ws();
            match self.peek() {
                Some(b',') => {
                    self.i += 1;
                    self.ws();
                }
                Some(b'}') => {
                    self.i += 1;
                    break Ok(());
                }
                _ => break Err(Fail::new(Problem::Syntax)),
            }
        };
        self.keys.truncate(start);
        result
    }

    fn array(&mut self, depth: usize) -> Result<(), Fail> {
        if depth > self.limits.max_depth {
            return Err(Fail::new(Problem::TooDeep(self.limits.max_depth)));
        }
        self.i += 1;
        self.ws();
        if self.peek() == Some(b']') {
            self.i += 1;
            return Ok(());
        }
        let mut index = 0usize;
        loop {
            if depth == 1 && index >= self.limits.max_batch {
                return Err(Fail::new(Problem::BatchTooLong(self.limits.max_batch)));
            }
            self.value(depth).map_err(|e| e.within(Seg::Index(index)))?;
            self.ws();
            match self.peek() {
                Some(b',') => {
                    self.i += 1;
                    self.ws();
                    index += 1;
                }
                Some(b']') => {
                    self.i += 1;
                    return Ok(());
                }
                _ => return Err(Fail::new(Problem::Syntax)),
            }
        }
    }

    /// A string at `self.i` (the opening quote): validated, and decoded only when it has
    /// escapes. Returns its text.
    fn string(&mut self) -> Result<Cow<'a, str>, Fail> {
        self.i += 1;
        let start = self.i;
        let mut escaped = false;
        loop {
            // Plain bytes first: the common case is a run without quotes, escapes or controls.
            let rest = &self.b[self.i..];
            let run =
                memchr::memchr2(b'"', b'\\', rest).ok_or_else(|| Fail::new(Problem::Syntax))?;
            // Control characters must be escaped inside strings.
            if rest[..run].iter().any(|&c| c < 0x20) {
                return Err(Fail::new(Problem::Syntax));
            }
            self.i += run;
            match self.b[self.i] {
                b'"' => break,
                b'\\' => {
                    escaped = true;
                    self.escape()?;
                }
                _ => return Err(Fail::new(Problem::Syntax)),
            }
        }
        let raw = &self.b[start..self.i];
        self.i += 1;
        let text = std::str::from_utf8(raw).map_err(|_| Fail::new(Problem::InvalidUtf8))?;
        if !escaped {
            return Ok(Cow::Borrowed(text));
        }
        // Valid escapes and UTF-8 were checked above, so serde decodes what was scanned.
        serde_json::from_slice::<String>(&self.b[start - 1..self.i])
            .map(Cow::Owned)
            .map_err(|_| Fail::new(Problem::Syntax))
    }

    /// An escape at `self.i` (the backslash); leaves `self.i` after it.
    fn escape(&mut self) -> Result<(), Fail> {
        match self.b.get(self.i + 1) {
            Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => {
                self.i += 2;
                Ok(())
            }
            Some(b'u') => {
                let unit = self.hex4(self.i + 2)?;
                self.i += 6;
                match unit {
                    0xD800..=0xDBFF => {
                        // A high surrogate must be followed by an escaped low one.
                        let low = if self.b.get(self.i) == Some(&b'\\')
                            && self.b.get(self.i + 1) == Some(&b'u')
                        {
                            self.hex4(self.i + 2)?
                        } else {
                            return Err(Fail::new(Problem::LoneSurrogate));
                        };
                        if !(0xDC00..=0xDFFF).contains(&low) {
                            return Err(Fail::new(Problem::LoneSurrogate));
                        }
                        self.i += 6;
                        Ok(())
                    }
                    0xDC00..=0xDFFF => Err(Fail::new(Problem::LoneSurrogate)),
                    _ => Ok(()),
                }
            }
            _ => Err(Fail::new(Problem::Syntax)),
        }
    }

    fn hex4(&self, at: usize) -> Result<u16, Fail> {
        let digits = self
            .b
            .get(at..at + 4)
            .ok_or_else(|| Fail::new(Problem::Syntax))?;
        let mut v = 0u16;
        for &d in digits {
            let n = match d {
                b'0'..=b'9' => d - b'0',
                b'a'..=b'f' => d - b'a' + 10,
                b'A'..=b'F' => d - b'A' + 10,
                _ => return Err(Fail::new(Problem::Syntax)),
            };
            v = v << 4 | u16::from(n);
        }
        Ok(v)
    }

    fn digits(&mut self) -> usize {
        let n = self.b[self.i..]
            .iter()
            .take_while(|c| c.is_ascii_digit())
            .count();
        self.i += n;
        n
    }

    fn number(&mut self) -> Result<(), Fail> {
        let start = self.i;
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        let int_digits = match self.peek() {
            Some(b'0') => {
                self.i += 1;
                1
            }
            Some(b'1'..=b'9') => self.digits(),
            _ => return Err(Fail::new(Problem::Syntax)),
        };
        let mut integer = true;
        let mut exp_digits = 0;
        if self.peek() == Some(b'.') {
            self.i += 1;
            if self.digits() == 0 {
                return Err(Fail::new(Problem::Syntax));
            }
            integer = false;
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.i += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.i += 1;
            }
            exp_digits = self.digits();
            if exp_digits == 0 {
                return Err(Fail::new(Problem::Syntax));
            }
            integer = false;
        }
        // Below 10^300 a float is finite whatever its digits: only a long integer part or a
        // three-digit exponent needs a real parse.
        if !integer && int_digits <= 200 && exp_digits <= 2 {
            return Ok(());
        }
        let text =
            std::str::from_utf8(&self.b[start..self.i]).map_err(|_| Fail::new(Problem::Syntax))?;
        if integer {
            // Up to 18 digits always fit; longer ones are checked.
            if text.len() > 18 && text.parse::<i64>().is_err() && text.parse::<u64>().is_err() {
                return Err(Fail::new(Problem::IntegerRange));
            }
        } else if !text.parse::<f64>().is_ok_and(f64::is_finite) {
            return Err(Fail::new(Problem::NumberRange));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
