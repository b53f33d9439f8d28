//! Checks every MCP request passes before its body is read: DNS-rebinding protection (`Host`,
//! `Origin`), media types, and the size limit.

use http::{HeaderMap, Uri, header};

use crate::config::{OriginPattern, ServerConfig, split_host_port};
use crate::relay::RelayError;

/// The allowed `Host` and `Origin` values.
#[derive(Debug, Clone)]
pub struct Guard {
    hosts: Vec<(String, Option<String>)>,
    origins: Vec<OriginPattern>,
}

impl Guard {
    pub fn new(server: &ServerConfig) -> Self {
        let hosts = server
            .allowed_hosts
            .iter()
            .map(|h| {
                let (name, port) = split_host_port(h);
                (name.to_ascii_lowercase(), port.map(str::to_string))
            })
            .collect();
        Self {
            hosts,
            origins: server.allowed_origins.clone(),
        }
    }

    /// Rejects a request whose `Host` (or HTTP/2 authority) or `Origin` is not allowed.
    ///
    /// # Errors
    /// [`RelayError::HostNotAllowed`] or [`RelayError::OriginNotAllowed`] (HTTP 403).
    pub fn check(&self, uri: &Uri, headers: &HeaderMap) -> Result<(), RelayError> {
        let host = headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .or_else(|| uri.authority().map(http::uri::Authority::as_str));
        if let Some(host) = host {
            let (name, port) = split_host_port(host);
            let ok = self.hosts.iter().any(|(n, p)| {
                n.eq_ignore_ascii_case(name) && p.as_deref().is_none_or(|p| Some(p) == port)
            });
            if !ok {
                return Err(RelayError::HostNotAllowed(host.to_string()));
            }
        }
        if let Some(origin) = headers.get(header::ORIGIN) {
            let text = origin.to_str().unwrap_or("");
            if !self.origins.iter().any(|p| p.matches(text)) {
                return Err(RelayError::OriginNotAllowed(text.to_string()));
            }
        }
        Ok(())
    }
}

fn media_type(headers: &HeaderMap, name: header::HeaderName) -> Vec<String> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .collect()
}

/// A POST must send JSON and accept both JSON and SSE.
///
/// # Errors
/// 415 for the content type, 406 for `Accept`.
pub fn post_media(headers: &HeaderMap) -> Result<(), RelayError> {
    let ct = media_type(headers, header::CONTENT_TYPE);
    if ct.first().map(String::as_str) != Some("application/json") {
        let got = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("none");
        return Err(RelayError::UnsupportedMediaType(got.to_string()));
    }
    let accept = media_type(headers, header::ACCEPT);
    let json = accept
        .iter()
        .any(|a| a == "application/json" || a == "application/*" || a == "*/*");
    let sse = accept
        .iter()
        .any(|a| a == "text/event-stream" || a == "text/*" || a == "*/*");
    if !(json && sse) {
        return Err(RelayError::NotAcceptable(
            "both application/json and text/event-stream",
        ));
    }
    Ok(())
}

/// A GET opens an event stream.
///
/// # Errors
/// 406 when `Accept` does not allow `text/event-stream`.
pub fn get_media(headers: &HeaderMap) -> Result<(), RelayError> {
    let accept = media_type(headers, header::ACCEPT);
    if !accept
        .iter()
        .any(|a| a == "text/event-stream" || a == "text/*" || a == "*/*")
    {
        return Err(RelayError::NotAcceptable("text/event-stream"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn guard() -> Guard {
        Guard::new(&Config::embedded("/x".into()).server)
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn loopback_hosts_pass_and_others_fail() {
        let g = guard();
        let uri = Uri::from_static("/mcp/demo");
        assert!(
            g.check(&uri, &headers(&[("host", "127.0.0.1:8080")]))
                .is_ok()
        );
        assert!(g.check(&uri, &headers(&[("host", "localhost")])).is_ok());
        assert!(g.check(&uri, &headers(&[("host", "[::1]:9")])).is_ok());
        assert!(matches!(
            g.check(&uri, &headers(&[("host", "evil.example.com")])),
            Err(RelayError::HostNotAllowed(_))
        ));
        assert!(matches!(
            g.check(
                &uri,
                &headers(&[
                    ("host", "localhost:8080"),
                    ("origin", "http://evil.example.com")
                ])
            ),
            Err(RelayError::OriginNotAllowed(_))
        ));
        assert!(
            g.check(
                &uri,
                &headers(&[
                    ("host", "localhost:8080"),
                    ("origin", "http://localhost:3000")
                ])
            )
            .is_ok()
        );
    }

    #[test]
    fn media_types() {
        let ok = headers(&[
            ("content-type", "application/json; charset=utf-8"),
            ("accept", "application/json, text/event-stream"),
        ]);
        assert!(post_media(&ok).is_ok());
        let bad_ct = headers(&[
            ("content-type", "text/plain"),
            ("accept", "application/json, text/event-stream"),
        ]);
        assert!(matches!(
            post_media(&bad_ct),
            Err(RelayError::UnsupportedMediaType(_))
        ));
        let bad_accept = headers(&[
            ("content-type", "application/json"),
            ("accept", "application/json"),
        ]);
        assert!(matches!(
            post_media(&bad_accept),
            Err(RelayError::NotAcceptable(_))
        ));
        let none = headers(&[("content-type", "application/json")]);
        assert!(matches!(
            post_media(&none),
            Err(RelayError::NotAcceptable(_))
        ));
        assert!(get_media(&headers(&[("accept", "text/event-stream")])).is_ok());
        assert!(get_media(&headers(&[("accept", "application/json")])).is_err());
    }
}
