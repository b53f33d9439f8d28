//! The parts of a compact JWS (RFC 7515) token, decoded but not yet trusted.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::error::AuthError;

/// The longest token looked at; CI tokens are 1-2 KiB.
pub const MAX_TOKEN: usize = 16 * 1024;

/// A token split at its dots.
pub struct Compact<'a> {
    /// `header.payload`, the bytes the signature covers.
    pub signing_input: &'a str,
    pub signature: &'a str,
    pub header: Header,
    pub claims: Map<String, Value>,
}

/// The JOSE header fields custody reads.
#[derive(Debug, Deserialize)]
pub struct Header {
    pub alg: String,
    #[serde(default)]
    pub kid: Option<String>,
    /// Critical extensions: none are understood, so any makes the token unacceptable.
    #[serde(default)]
    pub crit: Option<Value>,
}

impl<'a> Compact<'a> {
    /// Splits and decodes `token`.
    ///
    /// # Errors
    /// [`AuthError::Malformed`] saying which part is wrong.
    pub fn parse(token: &'a str) -> Result<Self, AuthError> {
        if token.len() > MAX_TOKEN {
            return Err(AuthError::Malformed("longer than 16 KiB"));
        }
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(AuthError::Malformed(
                "a JWT has three base64url parts separated by dots",
            ));
        };
        if h.is_empty() || p.is_empty() {
            return Err(AuthError::Malformed("the header or payload part is empty"));
        }
        let header_bytes = URL_SAFE_NO_PAD
            .decode(h)
            .map_err(|_| AuthError::Malformed("the header is not base64url"))?;
        let header: Header = serde_json::from_slice(&header_bytes)
            .map_err(|_| AuthError::Malformed("the header is not a JSON object with an alg"))?;
        if header.crit.is_some() {
            return Err(AuthError::Malformed(
                "the header lists critical extensions (crit), which custody does not support",
            ));
        }
        let payload = URL_SAFE_NO_PAD
            .decode(p)
            .map_err(|_| AuthError::Malformed("the payload is not base64url"))?;
        let claims: Map<String, Value> = serde_json::from_slice(&payload)
            .map_err(|_| AuthError::Malformed("the payload is not a JSON object"))?;
        Ok(Self {
            signing_input: &token[..h.len() + 1 + p.len()],
            signature: s,
            header,
            claims,
        })
    }

    /// A string claim.
    pub fn str_claim(&self, name: &str) -> Option<&str> {
        self.claims.get(name).and_then(Value::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        URL_SAFE_NO_PAD.encode(s)
    }

    #[test]
    fn splits_a_token() {
        let t = format!(
            "{}.{}.sig",
            b64(r#"{"alg":"RS256","kid":"k1"}"#),
            b64(r#"{"iss":"x"}"#)
        );
        let c = Compact::parse(&t).unwrap();
        assert_eq!(c.header.alg, "RS256");
        assert_eq!(c.header.kid.as_deref(), Some("k1"));
        assert_eq!(c.str_claim("iss"), Some("x"));
        assert_eq!(c.signature, "sig");
        assert_eq!(c.signing_input.len(), t.len() - 4);
    }

    #[test]
    fn names_the_malformed_part() {
        let msg = |t: &str| Compact::parse(t).err().unwrap().to_string();
        assert!(msg("abc").contains("three base64url parts"));
        assert!(msg("a.b.c.d").contains("three base64url parts"));
        assert!(msg("..x").contains("empty"));
        assert!(msg("!!.e30.x").contains("header is not base64url"));
        assert!(msg(&format!("{}.e30.x", b64("[1]"))).contains("header is not a JSON object"));
        let h = b64(r#"{"alg":"RS256"}"#);
        assert!(msg(&format!("{h}.!!.x")).contains("payload is not base64url"));
        assert!(msg(&format!("{h}.{}.x", b64("7"))).contains("payload is not a JSON object"));
        let crit = b64(r#"{"alg":"RS256","crit":["b64"]}"#);
        assert!(msg(&format!("{crit}.e30.x")).contains("crit"));
        assert!(msg(&"a".repeat(MAX_TOKEN + 1)).contains("16 KiB"));
    }

    proptest::proptest! {
        #[test]
        fn any_text_is_parsed_or_refused_never_a_panic(
            h in ".{0,40}", p in ".{0,60}", sig in "[A-Za-z0-9_.-]{0,20}"
        ) {
            let t = format!("{}.{}.{sig}", URL_SAFE_NO_PAD.encode(&h), URL_SAFE_NO_PAD.encode(&p));
            let _ = Compact::parse(&t);
            let _ = Compact::parse(&h);
        }
    }
}
