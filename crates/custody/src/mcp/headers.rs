//! The request headers a stateless (2026-07-28) POST mirrors from its body, and their checks
//! (SEP-2243). A gateway routes and decides on these values, so it must not trust a header that
//! disagrees with the body it forwards.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use http::HeaderMap;
use serde_json::Value;

use super::message::Message;

pub const MCP_METHOD: &str = "mcp-method";
pub const MCP_NAME: &str = "mcp-name";
pub const MCP_PROTOCOL_VERSION: &str = "mcp-protocol-version";
pub const MCP_SESSION_ID: &str = "mcp-session-id";
pub const MCP_PARAM_PREFIX: &str = "mcp-param-";
pub const LAST_EVENT_ID: &str = "last-event-id";

/// A header that is missing, malformed or disagrees with the body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("the {0} header is required")]
    Missing(String),
    #[error("the {header} header {found:?} does not match the body's {expected:?}")]
    Mismatch {
        header: String,
        found: String,
        expected: String,
    },
    #[error("the {0} header is not valid: {1}")]
    Invalid(String, &'static str),
}

/// A header value with optional whitespace trimmed (RFC 9110 §5.5).
pub fn get<'a>(headers: &'a HeaderMap, name: &str) -> Option<Result<&'a str, HeaderError>> {
    headers.get(name).map(|v| {
        v.to_str()
            .map(str::trim)
            .map_err(|_| HeaderError::Invalid(name.to_string(), "not visible ASCII"))
    })
}

/// Decodes the `=?base64?…?=` sentinel form; any other value is literal.
///
/// # Errors
/// Invalid Base64 or a value that is not UTF-8 once decoded.
pub fn decode_value(value: &str) -> Result<String, &'static str> {
    match value
        .strip_prefix("=?base64?")
        .and_then(|rest| rest.strip_suffix("?="))
    {
        Some(b64) => {
            let bytes = STANDARD.decode(b64).map_err(|_| "invalid Base64")?;
            String::from_utf8(bytes).map_err(|_| "Base64 value is not UTF-8")
        }
        None => Ok(value.to_string()),
    }
}

/// One `x-mcp-header` annotation of a tool: the header suffix and the argument path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamHeader {
    pub suffix: String,
    pub path: Vec<String>,
}

/// Checks `Mcp-Method`, `Mcp-Name`, `MCP-Protocol-Version` against the body, and every
/// `Mcp-Param-*` header for a valid encoding and, where the tool's annotations are known,
/// against its argument.
///
/// # Errors
/// The first [`HeaderError`] found.
pub fn check_mirrored(
    headers: &HeaderMap,
    msg: &Message,
    params: &[ParamHeader],
) -> Result<(), HeaderError> {
    let method = msg.method().unwrap_or("");
    let found =
        get(headers, MCP_METHOD).ok_or_else(|| HeaderError::Missing("Mcp-Method".into()))??;
    if found != method {
        return Err(HeaderError::Mismatch {
            header: "Mcp-Method".into(),
            found: found.into(),
            expected: method.into(),
        });
    }
    if let Some(name) = msg
        .target_name()
        .filter(|_| matches!(method, "tools/call" | "resources/read" | "prompts/get"))
    {
        let raw =
            get(headers, MCP_NAME).ok_or_else(|| HeaderError::Missing("Mcp-Name".into()))??;
        let decoded = decode_value(raw).map_err(|e| HeaderError::Invalid("Mcp-Name".into(), e))?;
        if decoded != name {
            return Err(HeaderError::Mismatch {
                header: "Mcp-Name".into(),
                found: decoded,
                expected: name.into(),
            });
        }
    }
    if let Some(body_version) = msg.meta_protocol_version() {
        let found = get(headers, MCP_PROTOCOL_VERSION)
            .ok_or_else(|| HeaderError::Missing("MCP-Protocol-Version".into()))??;
        if found != body_version {
            return Err(HeaderError::Mismatch {
                header: "MCP-Protocol-Version".into(),
                found: found.into(),
                expected: body_version.into(),
            });
        }
    }
    for (name, value) in headers {
        if let Some(suffix) = name.as_str().strip_prefix(MCP_PARAM_PREFIX) {
            let text = value.to_str().map_err(|_| {
                HeaderError::Invalid(format!("Mcp-Param-{suffix}"), "not visible ASCII")
            })?;
            decode_value(text.trim())
                .map_err(|e| HeaderError::Invalid(format!("Mcp-Param-{suffix}"), e))?;
        }
    }
    let args = if params.is_empty() {
        None
    } else {
        msg.params().and_then(|p| p.get("arguments"))
    };
    for p in params {
        let body = args
            .and_then(|a| lookup(a, &p.path))
            .filter(|v| !v.is_null());
        let header_name = format!("{MCP_PARAM_PREFIX}{}", p.suffix.to_ascii_lowercase());
        let header = get(headers, &header_name);
        match (body, header) {
            (None, _) => {}
            (Some(_), None) => return Err(HeaderError::Missing(format!("Mcp-Param-{}", p.suffix))),
            (Some(body), Some(header)) => {
                let display = format!("Mcp-Param-{}", p.suffix);
                let decoded =
                    decode_value(header?).map_err(|e| HeaderError::Invalid(display.clone(), e))?;
                let expected = match body {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                let same = decoded == expected
                    || (body.is_number() && decoded.parse::<f64>().ok() == body.as_f64());
                if !same {
                    return Err(HeaderError::Mismatch {
                        header: display,
                        found: decoded,
                        expected,
                    });
                }
            }
        }
    }
    Ok(())
}

fn lookup<'a>(value: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(value, |v, key| v.get(key))
}

/// A header value for `text`: itself when it is visible ASCII without surrounding spaces, else
/// the `=?base64?…?=` form.
pub fn encode_value(text: &str) -> String {
    let plain = !text.is_empty()
        && text.bytes().all(|b| (0x20..0x7f).contains(&b))
        && text.trim() == text
        && !text.starts_with("=?");
    if plain {
        text.to_string()
    } else {
        format!("=?base64?{}?=", STANDARD.encode(text.as_bytes()))
    }
}

/// The headers a client of the stateless generation mirrors from a request's body (what
/// [`check_mirrored`] checks): `Mcp-Method`, `Mcp-Name`, `MCP-Protocol-Version` and the
/// `Mcp-Param-*` of the tool's `x-mcp-header` arguments.
pub fn mirror(msg: &Message, params: &[ParamHeader]) -> Vec<(http::HeaderName, http::HeaderValue)> {
    let mut out = Vec::new();
    let mut push = |name: &str, value: &str| {
        if let (Ok(n), Ok(v)) = (
            http::HeaderName::from_bytes(name.as_bytes()),
            http::HeaderValue::from_str(value),
        ) {
            out.push((n, v));
        }
    };
    let method = msg.method().unwrap_or("");
    push(MCP_METHOD, method);
    if let Some(name) = msg
        .target_name()
        .filter(|_| matches!(method, "tools/call" | "resources/read" | "prompts/get"))
    {
        push(MCP_NAME, &encode_value(name));
    }
    if let Some(v) = msg.meta_protocol_version() {
        push(MCP_PROTOCOL_VERSION, v);
    }
    let args = msg.params().and_then(|p| p.get("arguments"));
    for p in params {
        if let Some(v) = args
            .and_then(|a| lookup(a, &p.path))
            .filter(|v| !v.is_null())
        {
            let text = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            push(
                &format!("{MCP_PARAM_PREFIX}{}", p.suffix.to_ascii_lowercase()),
                &encode_value(&text),
            );
        }
    }
    out
}

/// The `x-mcp-header` annotations of a tool's input schema (statically reachable properties).
pub fn param_headers(input_schema: &Value) -> Vec<ParamHeader> {
    fn walk(schema: &Value, path: &mut Vec<String>, out: &mut Vec<ParamHeader>) {
        let Some(props) = schema.get("properties").and_then(Value::as_object) else {
            return;
        };
        for (key, prop) in props {
            path.push(key.clone());
            if let Some(suffix) = prop.get("x-mcp-header").and_then(Value::as_str) {
                out.push(ParamHeader {
                    suffix: suffix.to_string(),
                    path: path.clone(),
                });
            }
            walk(prop, path, out);
            path.pop();
        }
    }
    let mut out = Vec::new();
    walk(input_schema, &mut Vec::new(), &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn mirrored_headers_pass_the_check() {
        let m = msg(
            json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
            "name": "déployer", "arguments": {"region": "eu-west-1", "count": 3, "note": " padded "},
            "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28"}}}),
        );
        let params = param_headers(&json!({"properties": {
            "region": {"type": "string", "x-mcp-header": "Region"},
            "count": {"type": "number", "x-mcp-header": "Count"},
            "note": {"type": "string", "x-mcp-header": "Note"}}}));
        let mut h = HeaderMap::new();
        for (k, v) in mirror(&m, &params) {
            h.insert(k, v);
        }
        assert_eq!(h.get("mcp-name").unwrap(), "=?base64?ZMOpcGxveWVy?=");
        assert_eq!(h.get("mcp-param-region").unwrap(), "eu-west-1");
        check_mirrored(&h, &m, &params).unwrap();
    }

    fn msg(v: Value) -> Message {
        Message::from_value(v).unwrap()
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    fn call(name: &str) -> Message {
        msg(
            json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":name,"arguments":{"region":"eu","n":42},
            "_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}),
        )
    }

    #[test]
    fn method_and_name_must_match() {
        let m = call("t");
        let ok = headers(&[
            ("mcp-method", "tools/call"),
            ("mcp-name", "  t "),
            ("mcp-protocol-version", "2026-07-28"),
        ]);
        assert_eq!(check_mirrored(&ok, &m, &[]), Ok(()));
        let h = headers(&[("mcp-name", "t"), ("mcp-protocol-version", "2026-07-28")]);
        assert_eq!(
            check_mirrored(&h, &m, &[]),
            Err(HeaderError::Missing("Mcp-Method".into()))
        );
        let h = headers(&[
            ("mcp-method", "TOOLS/CALL"),
            ("mcp-name", "t"),
            ("mcp-protocol-version", "2026-07-28"),
        ]);
        assert!(matches!(
            check_mirrored(&h, &m, &[]),
            Err(HeaderError::Mismatch { .. })
        ));
        let h = headers(&[
            ("mcp-method", "tools/call"),
            ("mcp-protocol-version", "2026-07-28"),
        ]);
        assert_eq!(
            check_mirrored(&h, &m, &[]),
            Err(HeaderError::Missing("Mcp-Name".into()))
        );
        let h = headers(&[
            ("mcp-method", "tools/call"),
            ("mcp-name", "other"),
            ("mcp-protocol-version", "2026-07-28"),
        ]);
        assert!(
            matches!(check_mirrored(&h, &m, &[]), Err(HeaderError::Mismatch { header, .. }) if header == "Mcp-Name")
        );
        let h = headers(&[
            ("mcp-method", "tools/call"),
            ("mcp-name", "t"),
            ("mcp-protocol-version", "2025-11-25"),
        ]);
        assert!(
            matches!(check_mirrored(&h, &m, &[]), Err(HeaderError::Mismatch { header, .. }) if header == "MCP-Protocol-Version")
        );
    }

    #[test]
    fn base64_names_are_decoded() {
        let m = call("héllo");
        let h = headers(&[
            ("mcp-method", "tools/call"),
            ("mcp-name", "=?base64?aMOpbGxv?="),
            ("mcp-protocol-version", "2026-07-28"),
        ]);
        assert_eq!(check_mirrored(&h, &m, &[]), Ok(()));
        let h = headers(&[
            ("mcp-method", "tools/call"),
            ("mcp-name", "=?base64?aMOpbGx?="),
            ("mcp-protocol-version", "2026-07-28"),
        ]);
        assert!(matches!(
            check_mirrored(&h, &m, &[]),
            Err(HeaderError::Invalid(..))
        ));
    }

    #[test]
    fn param_headers_are_checked() {
        let m = call("t");
        let params = param_headers(&json!({"type":"object","properties":{
            "region":{"type":"string","x-mcp-header":"Region"},
            "n":{"type":"integer","x-mcp-header":"N"},
            "q":{"type":"string"}}}));
        assert_eq!(params.len(), 2);
        let base = [
            ("mcp-method", "tools/call"),
            ("mcp-name", "t"),
            ("mcp-protocol-version", "2026-07-28"),
        ];
        let with = |extra: &[(&str, &str)]| {
            let mut all = base.to_vec();
            all.extend_from_slice(extra);
            headers(&all)
        };
        assert_eq!(
            check_mirrored(
                &with(&[("mcp-param-region", "eu"), ("mcp-param-n", "42")]),
                &m,
                &params
            ),
            Ok(())
        );
        assert_eq!(
            check_mirrored(
                &with(&[
                    ("mcp-param-region", "=?base64?ZXU=?="),
                    ("mcp-param-n", "42.0")
                ]),
                &m,
                &params
            ),
            Ok(())
        );
        assert!(
            matches!(check_mirrored(&with(&[("mcp-param-n", "42")]), &m, &params), Err(HeaderError::Missing(n)) if n == "Mcp-Param-Region")
        );
        assert!(matches!(
            check_mirrored(
                &with(&[("mcp-param-region", "us"), ("mcp-param-n", "42")]),
                &m,
                &params
            ),
            Err(HeaderError::Mismatch { .. })
        ));
        assert!(matches!(
            check_mirrored(&with(&[("mcp-param-other", "=?base64?!!?=")]), &m, &[]),
            Err(HeaderError::Invalid(..))
        ));
    }
}
