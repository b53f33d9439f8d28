//! Stateless (2026-07-28) POST handling: the mirrored-header checks of SEP-2243 and the
//! per-request JSON or SSE response.

use std::sync::Arc;

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::Value;
use tokio::sync::mpsc;

use super::{
    AbortOnDrop, AppState, error_response, header_str, is_final, json_response, plain_error,
    sse_event, sse_response, status_for,
};
use crate::engine::{Engine, Outbox, Outgoing, unsupported_version};
use crate::rpc::{self, RpcError, Shape, code};

/// Checks the headers a stateless POST mirrors from its body (SEP-2243).
fn check_mirrored_headers(
    engine: &Engine,
    headers: &HeaderMap,
    msg: &Value,
) -> Result<(), RpcError> {
    let mismatch = |m: String| RpcError::bad_request(code::HEADER_MISMATCH, m);
    let method = rpc::method(msg);
    match header_str(headers, "mcp-method").map(str::trim) {
        None => return Err(mismatch("missing Mcp-Method header".into())),
        Some(h) if h != method => {
            return Err(mismatch(format!(
                "Mcp-Method header {h:?} does not match body method {method:?}"
            )));
        }
        Some(_) => {}
    }
    let name = match method {
        "tools/call" | "prompts/get" => msg.pointer("/params/name").and_then(Value::as_str),
        "resources/read" => msg.pointer("/params/uri").and_then(Value::as_str),
        _ => None,
    };
    if let Some(name) = name {
        match header_str(headers, "mcp-name").map(str::trim) {
            None => return Err(mismatch("missing Mcp-Name header".into())),
            Some(h) => {
                let decoded = decode_header_value(h)
                    .ok_or_else(|| mismatch("Mcp-Name is not valid Base64".into()))?;
                if decoded != name {
                    return Err(mismatch(format!(
                        "Mcp-Name header {decoded:?} does not match body {name:?}"
                    )));
                }
            }
        }
    }
    let body_version = msg
        .pointer("/params/_meta/io.modelcontextprotocol~1protocolVersion")
        .and_then(Value::as_str);
    if let (Some(h), Some(b)) = (
        header_str(headers, "mcp-protocol-version").map(str::trim),
        body_version,
    ) && h != b
    {
        return Err(mismatch(format!(
            "MCP-Protocol-Version header {h:?} does not match _meta {b:?}"
        )));
    }
    if method == "tools/call" {
        let tool = msg
            .pointer("/params/name")
            .and_then(Value::as_str)
            .unwrap_or("");
        for (suffix, arg) in engine.catalog().header_params(tool) {
            let body = msg
                .pointer(&format!("/params/arguments/{arg}"))
                .filter(|v| !v.is_null());
            let header = header_str(headers, &format!("mcp-param-{suffix}")).map(str::trim);
            match (body, header) {
                (None, _) => {}
                (Some(_), None) => {
                    return Err(mismatch(format!("missing Mcp-Param-{suffix} header")));
                }
                (Some(b), Some(h)) => {
                    let decoded = decode_header_value(h).ok_or_else(|| {
                        mismatch(format!("Mcp-Param-{suffix} is not valid Base64"))
                    })?;
                    let expected = match b {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    if decoded != expected {
                        return Err(mismatch(format!(
                            "Mcp-Param-{suffix} does not match argument {arg}"
                        )));
                    }
                }
            }
        }
    }
    Ok(())
}

/// Decodes the `=?base64?...?=` sentinel form; other values are literal.
fn decode_header_value(v: &str) -> Option<String> {
    match v
        .strip_prefix("=?base64?")
        .and_then(|r| r.strip_suffix("?="))
    {
        Some(b64) => STANDARD
            .decode(b64)
            .ok()
            .and_then(|b| String::from_utf8(b).ok()),
        None => Some(v.to_string()),
    }
}

pub(super) async fn stateless_post(
    app: &Arc<AppState>,
    headers: &HeaderMap,
    msg: Value,
) -> Response {
    let id = msg.get("id").cloned().unwrap_or(Value::Null);
    if rpc::shape(&msg) != Shape::Request {
        // Stateless clients send no notifications over HTTP; accept and ignore any.
        return StatusCode::ACCEPTED.into_response();
    }
    let header_version = header_str(headers, "mcp-protocol-version").map(str::trim);
    let checked = match header_version {
        Some(v) if !crate::all_versions().contains(&v) => Err(unsupported_version(v)),
        _ => Ok(()),
    };
    if let Err(e) = checked
        .and_then(|()| check_mirrored_headers(&app.engine, headers, &msg))
        .and_then(|()| app.engine.check_stateless(&msg))
    {
        return error_response(
            StatusCode::from_u16(e.http_status).unwrap_or(StatusCode::BAD_REQUEST),
            &e,
            &id,
        );
    }
    let (out, mut rx) = Outbox::channel();
    let Some(abort) = app.engine.receive(None, msg, out) else {
        return plain_error(
            StatusCode::BAD_REQUEST,
            code::INVALID_REQUEST,
            "not a request",
        );
    };
    let guard = AbortOnDrop(abort);
    let Some(first) = rx.recv().await else {
        return plain_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            code::INTERNAL_ERROR,
            "request produced no answer",
        );
    };
    if let Outgoing::Message { message, .. } = &first
        && is_final(message, &id)
    {
        return json_response(message, status_for(message, true), None);
    }
    let (tx, live_rx) = mpsc::channel(64);
    tokio::spawn(async move {
        let mut next = Some(first);
        while let Some(item) = match next.take() {
            Some(item) => Some(item),
            None => rx.recv().await,
        } {
            if let Outgoing::Message { message, .. } = item {
                let done = is_final(&message, &id);
                if tx
                    .send(sse_event(None, None, &message.to_string()))
                    .await
                    .is_err()
                    || done
                {
                    break;
                }
            }
        }
    });
    sse_response(live_rx, None, Some(guard))
}
