//! The digest an approval binds a call's arguments to.

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// The SHA-256 of `arguments` in canonical form (object keys sorted, no whitespace), hex.
/// Absent arguments digest as `{}`.
pub fn digest(arguments: Option<&Value>) -> String {
    let mut text = String::new();
    canonical(arguments.unwrap_or(&json!({})), &mut text);
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// Appends `v` in canonical form: object keys sorted, no whitespace. Equal JSON values, however
/// written, give equal text.
pub(crate) fn canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                canonical(&m[k], out);
            }
            out.push('}');
        }
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical(x, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}
