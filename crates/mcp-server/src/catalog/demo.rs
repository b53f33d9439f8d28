//! The built-in demo server behind `custody serve`'s embedded default endpoint.
//!
//! The tools are chosen to show what the gateway does with real traffic: `lookup_customer`
//! returns fields worth masking, `deploy` is the kind of call one wants a human to approve,
//! `countdown` streams progress.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::{text_result, tool};
use crate::engine::Ctx;
use crate::rpc::{RpcError, code};

pub const INSTRUCTIONS: &str = "custody's demo server: echo, add, sha256, now, lookup_customer, deploy and countdown. Nothing here touches a real system.";

pub fn tools() -> Vec<Value> {
    vec![
        tool(
            "echo",
            "Returns the text it is given",
            json!({ "type": "object", "properties": { "text": { "type": "string" } }, "required": ["text"] }),
        ),
        tool(
            "add",
            "Adds two numbers",
            json!({ "type": "object", "properties": { "a": { "type": "number" }, "b": { "type": "number" } },
                    "required": ["a", "b"] }),
        ),
        tool(
            "sha256",
            "SHA-256 of a text, in hex",
            json!({ "type": "object", "properties": { "text": { "type": "string" } }, "required": ["text"] }),
        ),
        tool(
            "now",
            "The server's current time (UTC, RFC 3339)",
            json!({ "type": "object", "properties": {} }),
        ),
        {
            let mut t = tool(
                "lookup_customer",
                "Looks up a customer record (sample data with fields worth masking)",
                json!({ "type": "object", "properties": { "id": { "type": "string" } }, "required": ["id"] }),
            );
            t["annotations"] = json!({ "readOnlyHint": true });
            t
        },
        {
            let mut t = tool(
                "deploy",
                "Pretends to deploy a service version to an environment",
                json!({ "type": "object", "properties": {
                    "service": { "type": "string" }, "version": { "type": "string" },
                    "environment": { "type": "string", "enum": ["staging", "production"] } },
                    "required": ["service", "version", "environment"] }),
            );
            t["annotations"] = json!({ "destructiveHint": true, "readOnlyHint": false });
            t
        },
        tool(
            "countdown",
            "Counts down from n, one step every 100 ms, reporting progress",
            json!({ "type": "object", "properties": { "n": { "type": "integer", "minimum": 0, "maximum": 100 } },
                    "required": ["n"] }),
        ),
    ]
}

fn arg_str<'a>(args: &'a Value, name: &str) -> Result<&'a str, RpcError> {
    args.get(name).and_then(Value::as_str).ok_or_else(|| {
        RpcError::new(
            code::INVALID_PARAMS,
            format!("argument {name:?} must be a string"),
        )
    })
}

fn arg_f64(args: &Value, name: &str) -> Result<f64, RpcError> {
    args.get(name).and_then(Value::as_f64).ok_or_else(|| {
        RpcError::new(
            code::INVALID_PARAMS,
            format!("argument {name:?} must be a number"),
        )
    })
}

pub async fn call_tool(ctx: &Ctx, name: &str, args: &Value) -> Result<Value, RpcError> {
    Ok(match name {
        "echo" => text_result(arg_str(args, "text")?),
        "add" => {
            let sum = arg_f64(args, "a")? + arg_f64(args, "b")?;
            let mut r = text_result(sum.to_string());
            r["structuredContent"] = json!({ "sum": sum });
            r
        }
        "sha256" => text_result(hex::encode(Sha256::digest(
            arg_str(args, "text")?.as_bytes(),
        ))),
        "now" => {
            let now = SystemTime::now();
            let secs = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
            text_result(format!(
                "{} ({secs} s since the epoch)",
                humantime::format_rfc3339_seconds(now)
            ))
        }
        "lookup_customer" => {
            let id = arg_str(args, "id")?;
            let record = json!({
                "id": id,
                "name": "Ada Lovelace",
                "email": "ada@example.com",
                "card_number": "4111 1111 1111 1111",
                "api_token": "ghp_0123456789abcdefghijABCDEFGHIJ012345",
                "plan": "enterprise",
            });
            json!({ "content": [{ "type": "text", "text": record.to_string() }], "structuredContent": record })
        }
        "deploy" => {
            let service = arg_str(args, "service")?;
            let version = arg_str(args, "version")?;
            let env = arg_str(args, "environment")?;
            if !matches!(env, "staging" | "production") {
                return Ok(json!({ "content": [{ "type": "text",
                    "text": format!("unknown environment {env:?}: use staging or production") }], "isError": true }));
            }
            text_result(format!(
                "deployed {service} {version} to {env} (simulated; nothing was changed)"
            ))
        }
        "countdown" => {
            let n = args
                .get("n")
                .and_then(Value::as_u64)
                .filter(|n| *n <= 100)
                .ok_or_else(|| {
                    RpcError::new(code::INVALID_PARAMS, "argument \"n\" must be 0..=100")
                })?;
            let token = ctx.progress_token();
            for step in 0..n {
                if let Some(token) = &token {
                    ctx.notify(
                        "notifications/progress",
                        json!({ "progressToken": token, "progress": step, "total": n,
                                "message": format!("{} to go", n - step) }),
                    );
                }
                ctx.log("info", json!(format!("countdown: {}", n - step)));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            text_result("liftoff")
        }
        other => {
            return Err(RpcError::new(
                code::INVALID_PARAMS,
                format!("unknown tool: {other}"),
            ));
        }
    })
}

pub fn resources() -> Vec<Value> {
    vec![
        json!({ "uri": "demo://readme", "name": "readme", "title": "About the demo server",
                 "mimeType": "text/markdown" }),
    ]
}

pub fn read_resource(ctx: &Ctx, uri: &str) -> Result<Value, RpcError> {
    if uri != "demo://readme" {
        return Err(super::conformance::resource_not_found(ctx, uri));
    }
    Ok(
        json!({ "contents": [{ "uri": uri, "mimeType": "text/markdown", "text": format!(
        "# custody demo server\n\n{INSTRUCTIONS}\n"
    ) }] }),
    )
}

pub fn prompts() -> Vec<Value> {
    vec![
        json!({ "name": "release_notes", "description": "Drafts release notes for a version",
                 "arguments": [ { "name": "version", "required": true } ] }),
    ]
}

pub fn get_prompt(name: &str, args: &Value) -> Result<Value, RpcError> {
    if name != "release_notes" {
        return Err(RpcError::new(
            code::INVALID_PARAMS,
            format!("unknown prompt: {name}"),
        ));
    }
    let version = args
        .get("version")
        .and_then(Value::as_str)
        .unwrap_or("next");
    Ok(
        json!({ "messages": [ { "role": "user", "content": { "type": "text",
        "text": format!("Draft release notes for version {version}.") } } ] }),
    )
}
