//! OAuth 2.0 Protected Resource Metadata (RFC 9728) for each endpoint, and the
//! `WWW-Authenticate` challenge that points clients to it.

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde_json::json;

use super::Shared;

/// Where metadata documents live: `/.well-known/oauth-protected-resource` followed by the
/// resource's path (RFC 9728 section 3.1).
pub const WELL_KNOWN: &str = "/.well-known/oauth-protected-resource";

/// The gateway's base URL as the client sees it: `server.public_url`, else `http://` and the
/// request's `Host` (already checked against `server.allowed_hosts`).
pub fn base_url(public_url: Option<&str>, headers: &HeaderMap) -> String {
    if let Some(u) = public_url {
        return u.to_string();
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_graphic()))
        .unwrap_or("localhost");
    format!("http://{host}")
}

/// `WWW-Authenticate` for a 401: the metadata URL, `invalid_token` and the reason, made safe
/// for a quoted string (RFC 6750 section 3).
pub fn challenge(metadata_url: &str, description: &str) -> HeaderValue {
    let clean = |s: &str, max: usize| -> String {
        s.chars()
            .take(max)
            .map(|c| match c {
                '"' => '\'',
                '\\' => '/',
                c if (' '..='~').contains(&c) => c,
                _ => '?',
            })
            .collect()
    };
    let value = format!(
        "Bearer resource_metadata=\"{}\", error=\"invalid_token\", error_description=\"{}\"",
        clean(metadata_url, 512),
        clean(description, 400)
    );
    HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static("Bearer"))
}

/// The metadata URL of endpoint `name`.
pub fn url_for(base: &str, name: &str) -> String {
    format!("{base}{WELL_KNOWN}/mcp/{name}")
}

/// `GET /.well-known/oauth-protected-resource/mcp/{endpoint}`
pub async fn endpoint(
    State(app): Shared,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    if app.relay.endpoint(&name).is_err() {
        let err = json!({ "error": format!("no endpoint named {name:?}") });
        return (StatusCode::NOT_FOUND, axum::Json(err)).into_response();
    }
    let base = base_url(app.public_url.as_deref(), &headers);
    document(&app, format!("{base}/mcp/{name}"), Some(&name))
}

/// `GET /.well-known/oauth-protected-resource`: the gateway as a whole.
pub async fn root(State(app): Shared, headers: HeaderMap) -> Response {
    let base = base_url(app.public_url.as_deref(), &headers);
    document(&app, base, None)
}

fn document(app: &super::App, resource: String, endpoint: Option<&str>) -> Response {
    let servers: Vec<&str> = app.identity.issuers().collect();
    let mut doc = json!({
        "resource": resource,
        "bearer_methods_supported": ["header"],
        "resource_name": match endpoint {
            Some(e) => format!("custody MCP endpoint {e}"),
            None => "custody MCP gateway".into(),
        },
    });
    if !servers.is_empty() {
        doc["authorization_servers"] = json!(servers);
    }
    let mut resp = axum::Json(doc).into_response();
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_are_valid_header_values_whatever_the_reason_says() {
        let v = challenge(
            "http://127.0.0.1:1/.well-known/oauth-protected-resource/mcp/a",
            "issuer \"x\\y\" \u{1F600}\nend",
        );
        let s = v.to_str().unwrap();
        assert!(s.starts_with("Bearer resource_metadata=\"http://127.0.0.1:1/"));
        assert!(s.contains("error=\"invalid_token\""));
        assert!(
            s.contains("error_description=\"issuer 'x/y' ??end\""),
            "{s}"
        );
    }

    #[test]
    fn base_url_prefers_the_configured_one() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("gw:8080"));
        assert_eq!(base_url(None, &h), "http://gw:8080");
        assert_eq!(base_url(Some("https://c.example"), &h), "https://c.example");
        assert_eq!(
            url_for("http://gw", "demo"),
            "http://gw/.well-known/oauth-protected-resource/mcp/demo"
        );
    }
}
