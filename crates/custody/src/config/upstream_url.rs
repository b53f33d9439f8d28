//! An HTTP upstream's URL, which can carry credentials: a user and password
//! (`https://user:pass@host/`) and query values (`?api_key=...`), and any part the config names
//! by reference (`${env:...}`, `${file:...}`). All of them are credentials the gateway holds:
//! they are scrubbed from what clients and the log receive, and the URL is never printed in full
//! (its `Display` and `Debug` show [`UpstreamUrl::redacted`]).
//!
//! The user and password become an `Authorization: Basic` header (RFC 7617), as HTTP clients
//! do with them; the URL requests go to has no userinfo (RFC 9110 §4.2.4 forbids sending it).

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use http::{HeaderValue, Uri};
use percent_encoding::percent_decode_str;

/// What replaces a credential in the printed URL.
const HIDDEN: &str = "***";

#[derive(Clone)]
pub struct UpstreamUrl {
    /// Where requests go: the URL without userinfo.
    uri: Uri,
    /// `Basic <user:password>` from the userinfo, if there was one.
    basic: Option<HeaderValue>,
    /// The credentials it carries, as written and decoded.
    secrets: Vec<String>,
    redacted: String,
}

impl UpstreamUrl {
    /// Parses a resolved URL; `referenced` are the values its references resolved to.
    ///
    /// # Errors
    /// What is wrong with it, never quoting it (it may hold credentials).
    pub fn parse(text: &str, referenced: Vec<String>) -> Result<Self, String> {
        let url = url::Url::parse(text).map_err(|e| format!("is not a URL ({e})"))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err("must be an absolute http:// or https:// URL".into());
        }
        let mut secrets = referenced;
        let decode = |s: &str| percent_decode_str(s).decode_utf8_lossy().into_owned();
        let basic = if url.username().is_empty() && url.password().is_none() {
            None
        } else {
            let user = decode(url.username());
            let password = url.password().map(decode).unwrap_or_default();
            let encoded = STANDARD.encode(format!("{user}:{password}"));
            let header = HeaderValue::from_str(&format!("Basic {encoded}"))
                .map_err(|_| "its user and password do not make a header value".to_string())?;
            secrets.extend([
                url.username().to_string(),
                user.clone(),
                format!("{user}:{password}"),
                encoded,
            ]);
            if let Some(p) = url.password() {
                secrets.extend([p.to_string(), password]);
            }
            Some(header)
        };
        if let Some(query) = url.query() {
            for pair in query.split('&') {
                if let Some((_, value)) = pair.split_once('=') {
                    secrets.push(value.to_string());
                }
            }
            secrets.extend(url.query_pairs().map(|(_, v)| v.into_owned()));
        }
        secrets.retain(|s| !s.is_empty());
        secrets.sort();
        secrets.dedup();

        let mut bare = url.clone();
        // Cannot fail: the URL has a host (checked above).
        let _ = bare.set_username("");
        let _ = bare.set_password(None);
        let uri: Uri = bare
            .as_str()
            .parse()
            .map_err(|e| format!("is not a URL the HTTP client accepts ({e})"))?;
        let redacted = redact(&bare, basic.is_some(), &secrets);
        Ok(Self {
            uri,
            basic,
            secrets,
            redacted,
        })
    }

    /// Where requests go (no userinfo).
    pub fn uri(&self) -> &Uri {
        &self.uri
    }

    /// `Authorization: Basic` from the URL's user and password.
    pub fn basic_auth(&self) -> Option<&HeaderValue> {
        self.basic.as_ref()
    }

    /// Does the URL carry a user or password?
    pub fn has_userinfo(&self) -> bool {
        self.basic.is_some()
    }

    /// The credentials it carries (userinfo, query values, referenced parts), to scrub.
    pub fn secrets(&self) -> &[String] {
        &self.secrets
    }

    /// The URL as it may be printed: `https://***@host/path?key=***`.
    pub fn redacted(&self) -> &str {
        &self.redacted
    }
}

/// Scheme, host, port and path, `***@` for userinfo, query keys with `***` values, and any
/// referenced value left (in the path) replaced by `***`.
fn redact(bare: &url::Url, userinfo: bool, secrets: &[String]) -> String {
    let mut out = format!("{}://", bare.scheme());
    if userinfo {
        out.push_str(HIDDEN);
        out.push('@');
    }
    out.push_str(bare.host_str().unwrap_or("?"));
    if let Some(port) = bare.port() {
        out.push_str(&format!(":{port}"));
    }
    out.push_str(bare.path());
    if let Some(query) = bare.query() {
        out.push('?');
        let keys: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((k, _)) => format!("{k}={HIDDEN}"),
                None => pair.to_string(),
            })
            .collect();
        out.push_str(&keys.join("&"));
    }
    // Longest first, so a value containing another is hidden whole.
    let mut by_length: Vec<&String> = secrets.iter().filter(|s| s.len() >= 4).collect();
    by_length.sort_by_key(|s| std::cmp::Reverse(s.len()));
    let scheme_end = bare.scheme().len() + 3;
    let (head, tail) = out.split_at(scheme_end);
    let mut tail = tail.to_string();
    for s in by_length {
        tail = tail.replace(s.as_str(), HIDDEN);
    }
    format!("{head}{tail}")
}

impl fmt::Display for UpstreamUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted)
    }
}

impl fmt::Debug for UpstreamUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "UpstreamUrl({})", self.redacted)
    }
}

impl PartialEq<&str> for UpstreamUrl {
    /// Compares the URL requests go to (tests).
    fn eq(&self, other: &&str) -> bool {
        self.uri == *other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn userinfo_becomes_basic_auth_and_every_credential_is_hidden_when_printed() {
        let u = UpstreamUrl::parse(
            "https://ci-bot:p%40ss-w0rd-123@mcp.example.com:8443/v1/mcp?api_key=k3y-VALUE-9&v=2",
            Vec::new(),
        )
        .unwrap();
        assert_eq!(
            u.uri().to_string(),
            "https://mcp.example.com:8443/v1/mcp?api_key=k3y-VALUE-9&v=2",
            "requests go without userinfo"
        );
        assert_eq!(
            u.basic_auth().unwrap(),
            &format!("Basic {}", STANDARD.encode("ci-bot:p@ss-w0rd-123"))
        );
        assert_eq!(
            u.redacted(),
            "https://***@mcp.example.com:8443/v1/mcp?api_key=***&v=***"
        );
        assert_eq!(format!("{u}"), u.redacted());
        assert_eq!(format!("{u:?}"), format!("UpstreamUrl({})", u.redacted()));
        for s in ["p@ss-w0rd-123", "p%40ss-w0rd-123", "k3y-VALUE-9", "ci-bot"] {
            assert!(
                u.secrets().iter().any(|x| x == s),
                "{s} in {:?}",
                u.secrets()
            );
        }
    }

    #[test]
    fn referenced_parts_are_hidden_wherever_they_are() {
        let u = UpstreamUrl::parse(
            "https://hooks.example.com/T000/secret-path-token/mcp",
            vec!["secret-path-token".into()],
        )
        .unwrap();
        assert_eq!(u.redacted(), "https://hooks.example.com/T000/***/mcp");
        assert!(u.basic_auth().is_none());
    }

    #[test]
    fn errors_never_quote_the_url() {
        for bad in [
            "ftp://user:hunter2-secret@host/x",
            "not a url hunter2-secret",
            "/relative/hunter2-secret",
        ] {
            let e = UpstreamUrl::parse(bad, Vec::new()).unwrap_err();
            assert!(!e.contains("hunter2"), "{e}");
        }
    }
}
