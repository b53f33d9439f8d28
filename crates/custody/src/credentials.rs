//! The upstream credentials only the gateway holds: header values (HTTP upstreams) and
//! environment values (stdio upstreams), written in the config or named by reference
//! (`${env:NAME}`, `${file:PATH}`), and OAuth 2.0 client-credentials tokens for HTTP upstreams.
//!
//! References are resolved at start-up (where a missing one stops the gateway) and again on
//! SIGHUP ([`Credentials::reload`]; a reference that fails then keeps the values in force).
//! Every value, and every token fetched, is handed to the masker ([`Scrub`]) so it is scrubbed
//! from what clients receive and what the log stores.

mod oauth;

use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError, RwLock};

use http::{HeaderName, HeaderValue};

pub use oauth::OAuth;

use crate::config::{SecretRef, UpstreamConfig};

/// Values shorter than this are not scrubbed by value: they would mask ordinary text.
pub const MIN_SCRUB_LEN: usize = 8;

/// What replaces a credential the gateway holds, wherever it appears.
pub const MARKER: &str = "[custody:credential]";

/// The secret values the masker replaces wherever they appear, longest first. Shared between
/// an endpoint's credentials (which update it) and its masker (which reads it per message).
#[derive(Debug, Default, Clone)]
pub struct Scrub(Arc<RwLock<Arc<Vec<String>>>>);

impl Scrub {
    pub fn get(&self) -> Arc<Vec<String>> {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Replaces every value in `text` with [`MARKER`]; returns how many values were found.
    pub fn redact(&self, text: &mut String) -> usize {
        let mut found = 0;
        for c in self.get().iter() {
            if text.len() >= c.len() && text.contains(c.as_str()) {
                *text = text.replace(c.as_str(), MARKER);
                found += 1;
            }
        }
        found
    }

    /// `text` with every value replaced by [`MARKER`].
    pub fn redacted(&self, text: &str) -> String {
        let mut t = text.to_string();
        self.redact(&mut t);
        t
    }

    fn set(&self, values: Vec<String>) {
        let mut values: Vec<String> = values
            .into_iter()
            .filter(|v| v.len() >= MIN_SCRUB_LEN)
            .collect();
        // Longest first, so a credential containing another is replaced whole.
        values.sort_by_key(|v| std::cmp::Reverse(v.len()));
        values.dedup();
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(values);
    }
}

impl From<Vec<String>> for Scrub {
    fn from(values: Vec<String>) -> Self {
        let s = Scrub::default();
        s.set(values);
        s
    }
}

/// The resolved values in force.
#[derive(Debug, Default)]
pub struct Resolved {
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub env: BTreeMap<String, String>,
    /// Every secret of this set, to scrub: whole values, what each reference in them resolved
    /// to, and the credentials of an `<auth-scheme> <credentials>` header value (an upstream
    /// may echo the token without its `Bearer `).
    secrets: Vec<String>,
}

enum Sources {
    Http(Vec<(HeaderName, SecretRef)>),
    Stdio(BTreeMap<String, SecretRef>),
}

/// One endpoint's upstream credentials.
pub struct Credentials {
    endpoint: String,
    sources: Sources,
    current: RwLock<Arc<Resolved>>,
    /// Credentials the upstream's URL carries (userinfo, query values, references), resolved
    /// once at start-up.
    url: Vec<String>,
    oauth: Option<OAuth>,
    scrub: Scrub,
    /// The values a reload replaced: still scrubbed, since an upstream may echo an old key.
    retired: std::sync::Mutex<Vec<String>>,
}

impl Credentials {
    /// Resolves `upstream`'s references for endpoint `endpoint`.
    ///
    /// # Errors
    /// The first reference that cannot be resolved, naming the endpoint and the reference.
    pub fn new(endpoint: &str, upstream: &UpstreamConfig) -> Result<Arc<Self>, String> {
        let (sources, oauth, url) = match upstream {
            UpstreamConfig::Http(h) => (
                Sources::Http(h.headers.clone()),
                h.oauth
                    .as_ref()
                    .map(|o| OAuth::new(endpoint, o))
                    .transpose()?,
                h.url.secrets().to_vec(),
            ),
            UpstreamConfig::Stdio(s) => (Sources::Stdio(s.env.clone()), None, Vec::new()),
        };
        let resolved = resolve(endpoint, &sources)?;
        let creds = Arc::new(Self {
            endpoint: endpoint.to_string(),
            sources,
            current: RwLock::new(Arc::new(resolved)),
            url,
            oauth,
            scrub: Scrub::default(),
            retired: std::sync::Mutex::new(Vec::new()),
        });
        creds.rescrub();
        Ok(creds)
    }

    /// The values in force.
    pub fn current(&self) -> Arc<Resolved> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// What the masker scrubs for this endpoint.
    pub fn scrub(&self) -> Scrub {
        self.scrub.clone()
    }

    /// Does this endpoint name any secret by reference (so a reload can change it)?
    pub fn has_references(&self) -> bool {
        match &self.sources {
            Sources::Http(h) => h.iter().any(|(_, r)| r.has_references()) || self.oauth.is_some(),
            Sources::Stdio(e) => e.values().any(SecretRef::has_references),
        }
    }

    /// Resolves every reference again. A failure keeps the values in force.
    ///
    /// # Errors
    /// The reference that failed, naming the endpoint.
    pub fn reload(&self) -> Result<(), String> {
        let resolved = resolve(&self.endpoint, &self.sources)?;
        if let Some(o) = &self.oauth {
            o.reload()?;
        }
        let old = std::mem::replace(
            &mut *self.current.write().unwrap_or_else(PoisonError::into_inner),
            Arc::new(resolved),
        );
        *self.retired.lock().unwrap_or_else(PoisonError::into_inner) = values(&old);
        self.rescrub();
        Ok(())
    }

    /// The `Authorization` value of an OAuth upstream: a cached token, or a new one when it is
    /// near its expiry. `None` without OAuth.
    ///
    /// # Errors
    /// The token endpoint could not be reached or refused (the message names it).
    pub async fn bearer(&self) -> Result<Option<HeaderValue>, String> {
        let Some(o) = &self.oauth else {
            return Ok(None);
        };
        let (value, fresh) = o.bearer().await?;
        if fresh {
            self.rescrub();
        }
        Ok(Some(value))
    }

    fn rescrub(&self) {
        let mut all = values(&self.current());
        all.extend(self.url.iter().cloned());
        all.extend(
            self.retired
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .iter()
                .cloned(),
        );
        if let Some(o) = &self.oauth {
            all.extend(o.secrets());
        }
        self.scrub.set(all);
    }
}

/// The secret values of a resolved set.
fn values(r: &Resolved) -> Vec<String> {
    r.secrets.clone()
}

/// A value and its referenced parts, with the credentials of `<auth-scheme> <credentials>`.
fn secrets_of(value: &str, parts: Vec<String>, out: &mut Vec<String>) {
    out.push(value.to_string());
    out.extend(parts);
    if let Some((scheme, credentials)) = value.split_once(' ')
        && !scheme.is_empty()
        && !scheme.contains(['=', ','])
        && !credentials.trim().is_empty()
    {
        out.push(credentials.trim().to_string());
    }
}

fn resolve(endpoint: &str, sources: &Sources) -> Result<Resolved, String> {
    let at = |what: &str, e: String| format!("endpoint {endpoint:?}, {what}: {e}");
    let mut secrets = Vec::new();
    match sources {
        Sources::Http(headers) => {
            let headers = headers
                .iter()
                .map(|(name, r)| {
                    let (v, parts) = r
                        .resolve_parts()
                        .map_err(|e| at(&format!("header {name}"), e))?;
                    let value = HeaderValue::from_str(&v).map_err(|_| {
                        at(
                            &format!("header {name}"),
                            "the resolved value has characters not allowed in a header".into(),
                        )
                    })?;
                    secrets_of(&v, parts, &mut secrets);
                    Ok((name.clone(), value))
                })
                .collect::<Result<Vec<_>, String>>()?;
            Ok(Resolved {
                headers,
                env: BTreeMap::new(),
                secrets,
            })
        }
        Sources::Stdio(env) => {
            let env = env
                .iter()
                .map(|(k, r)| {
                    let (v, parts) = r.resolve_parts().map_err(|e| at(&format!("env {k}"), e))?;
                    secrets.push(v.clone());
                    secrets.extend(parts);
                    Ok((k.clone(), v))
                })
                .collect::<Result<BTreeMap<_, _>, String>>()?;
            Ok(Resolved {
                headers: Vec::new(),
                env,
                secrets,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_header_scrubs_its_value_its_references_and_its_token() {
        let mut out = Vec::new();
        secrets_of("Bearer tok-123456789", vec![], &mut out);
        assert_eq!(out, ["Bearer tok-123456789", "tok-123456789"]);
        let mut out = Vec::new();
        secrets_of("key=a b", vec!["part-value".into()], &mut out);
        assert_eq!(out, ["key=a b", "part-value"], "not an auth scheme");
    }

    #[test]
    fn scrub_replaces_longest_values_first() {
        let s = Scrub::from(vec![
            "abcdefgh".into(),
            "abcdefgh-longer".into(),
            "short".into(),
        ]);
        assert_eq!(s.redacted("x abcdefgh-longer y"), format!("x {MARKER} y"));
        assert_eq!(s.redacted("short abcdefgh"), format!("short {MARKER}"));
    }
}
