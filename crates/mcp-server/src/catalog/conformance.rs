//! The fixtures the official MCP conformance suite expects a server to offer.

use std::time::Duration;

use serde_json::{Value, json};

use super::{mrtr, no_args, text_result, tool};
use crate::engine::{Ctx, ListKind};
use crate::rpc::{RpcError, code};

/// A 1x1 PNG.
pub(crate) const IMAGE_PNG: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg==";
/// A minimal WAV file.
const AUDIO_WAV: &str = "UklGRiYAAABXQVZFZm10IBAAAAABAAEAQB8AAAB9AAACABAAZGF0YQIAAAA=";

pub fn tools(_stateless: bool) -> Vec<Value> {
    let mut tools = vec![
        tool("test_simple_text", "Returns a simple text block", no_args()),
        tool("test_image_content", "Returns an image block", no_args()),
        tool("test_audio_content", "Returns an audio block", no_args()),
        tool(
            "test_embedded_resource",
            "Returns an embedded resource",
            no_args(),
        ),
        tool(
            "test_multiple_content_types",
            "Returns text, image and resource blocks",
            no_args(),
        ),
        tool(
            "test_tool_with_logging",
            "Sends log messages while it runs",
            no_args(),
        ),
        tool(
            "test_tool_with_progress",
            "Reports progress while it runs",
            no_args(),
        ),
        tool(
            "test_error_handling",
            "Always returns a tool error",
            no_args(),
        ),
        tool(
            "test_reconnection",
            "Closes its response stream mid-call; the result arrives after the client resumes",
            no_args(),
        ),
        tool(
            "test_sampling",
            "Asks the client for an LLM completion",
            json!({ "type": "object", "properties": { "prompt": { "type": "string", "description": "The prompt to send to the LLM" } }, "required": ["prompt"] }),
        ),
        tool(
            "test_elicitation",
            "Asks the user for input",
            json!({ "type": "object", "properties": { "message": { "type": "string", "description": "The message to show the user" } }, "required": ["message"] }),
        ),
        tool(
            "test_elicitation_sep1034_defaults",
            "Elicitation with defaults for every primitive type",
            no_args(),
        ),
        tool(
            "test_elicitation_sep1330_enums",
            "Elicitation with every enum schema form",
            no_args(),
        ),
        tool(
            "json_schema_2020_12_tool",
            "Tool whose input schema uses JSON Schema 2020-12 keywords",
            json!({
                "$schema": "https://json-schema.org/draft/2020-12/schema",
                "type": "object",
                "$defs": { "address": { "$anchor": "address", "type": "object",
                    "properties": { "street": { "type": "string" }, "city": { "type": "string" } } } },
                "properties": { "name": { "type": "string" }, "address": { "$ref": "#/$defs/address" },
                                "kind": { "type": "string" } },
                "allOf": [ { "anyOf": [ { "required": ["name"] }, { "required": ["address"] } ] } ],
                "if": { "properties": { "kind": { "const": "business" } } },
                "then": { "required": ["address"] },
                "else": { "required": [] },
                "additionalProperties": false
            }),
        ),
        tool(
            "test_trigger_tool_change",
            "Announces a change of the tool list",
            no_args(),
        ),
        tool(
            "test_trigger_prompt_change",
            "Announces a change of the prompt list",
            no_args(),
        ),
        tool(
            "test_missing_capability",
            "Needs the client's sampling capability",
            no_args(),
        ),
        tool(
            "test_logging_tool",
            "Logs while it runs (only when the request asks for a log level)",
            no_args(),
        ),
        tool(
            "test_streaming_elicitation",
            "Streams progress, then asks for input with an InputRequiredResult",
            no_args(),
        ),
        tool(
            "test_headers",
            "Mirrors its region argument into the Mcp-Param-Region header",
            json!({
                "type": "object",
                "properties": {
                    "region": { "type": "string", "description": "Region to run in", "x-mcp-header": "Region" },
                    "query": { "type": "string", "description": "Not mirrored" }
                },
                "required": ["region"]
            }),
        ),
    ];
    tools.extend(mrtr::tools());
    tools
}

pub async fn call_tool(ctx: &Ctx, name: &str, args: &Value) -> Result<Value, RpcError> {
    if let Some(result) = mrtr::call_tool(ctx, name)? {
        return Ok(result);
    }
    Ok(match name {
        "test_simple_text" => text_result("This is a simple text response for testing."),
        "test_image_content" => {
            json!({ "content": [{ "type": "image", "data": IMAGE_PNG, "mimeType": "image/png" }] })
        }
        "test_audio_content" => {
            json!({ "content": [{ "type": "audio", "data": AUDIO_WAV, "mimeType": "audio/wav" }] })
        }
        "test_embedded_resource" => json!({ "content": [{ "type": "resource", "resource": {
            "uri": "test://embedded-resource", "mimeType": "text/plain",
            "text": "This is an embedded resource content." } }] }),
        "test_multiple_content_types" => json!({ "content": [
            { "type": "text", "text": "Multiple content types test:" },
            { "type": "image", "data": IMAGE_PNG, "mimeType": "image/png" },
            { "type": "resource", "resource": { "uri": "test://mixed-content-resource",
              "mimeType": "application/json", "text": "{\"test\":\"data\",\"value\":123}" } }
        ] }),
        "test_tool_with_logging" => {
            for (i, step) in [
                "Tool execution started",
                "Tool processing data",
                "Tool execution completed",
            ]
            .iter()
            .enumerate()
            {
                if i > 0 {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                ctx.log("info", json!(step));
            }
            text_result("Tool with logging executed successfully")
        }
        "test_tool_with_progress" => {
            let token = ctx.progress_token();
            for (i, progress) in [0, 50, 100].into_iter().enumerate() {
                if i > 0 {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                if let Some(token) = &token {
                    ctx.notify(
                        "notifications/progress",
                        json!({ "progressToken": token, "progress": progress, "total": 100,
                                "message": format!("Completed step {progress} of 100") }),
                    );
                }
            }
            let text = match token {
                Some(Value::String(s)) => s,
                Some(other) => other.to_string(),
                None => "0".into(),
            };
            text_result(text)
        }
        "test_error_handling" => json!({
            "content": [{ "type": "text", "text": "This tool intentionally returns an error for testing" }],
            "isError": true
        }),
        "test_reconnection" => {
            if !ctx.stateless {
                ctx.close_stream();
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            text_result(
                "Reconnection test completed successfully. If you received this, the client properly reconnected after stream closure.",
            )
        }
        "test_sampling" => {
            let prompt = args.get("prompt").and_then(Value::as_str).unwrap_or("");
            let answer = ctx
                .request(
                    "sampling/createMessage",
                    json!({ "messages": [{ "role": "user", "content": { "type": "text", "text": prompt } }],
                            "maxTokens": 100 }),
                )
                .await;
            match answer {
                Ok(r) => {
                    let text = r
                        .pointer("/content/text")
                        .and_then(Value::as_str)
                        .unwrap_or("No response");
                    text_result(format!("LLM response: {text}"))
                }
                Err(e) => text_result(format!("Sampling not supported or error: {}", e.message)),
            }
        }
        "test_elicitation" => {
            let message = args.get("message").and_then(Value::as_str).unwrap_or("");
            elicit(
                ctx,
                "User response",
                json!({ "mode": "form", "message": message, "requestedSchema": {
                    "type": "object",
                    "properties": { "response": { "type": "string", "description": "User's response" } },
                    "required": ["response"] } }),
            )
            .await
        }
        "test_elicitation_sep1034_defaults" => {
            elicit(
                ctx,
                "Elicitation completed",
                json!({ "mode": "form", "message": "Please review and update the form fields with defaults",
                "requestedSchema": { "type": "object", "required": [], "properties": {
                    "name": { "type": "string", "description": "User name", "default": "John Doe" },
                    "age": { "type": "integer", "description": "User age", "default": 30 },
                    "score": { "type": "number", "description": "User score", "default": 95.5 },
                    "status": { "type": "string", "description": "User status",
                                "enum": ["active", "inactive", "pending"], "default": "active" },
                    "verified": { "type": "boolean", "description": "Verification status", "default": true }
                } } }),
            )
            .await
        }
        "test_elicitation_sep1330_enums" => {
            elicit(
                ctx,
                "Elicitation completed",
                json!({ "mode": "form", "message": "Please select options from the enum fields",
                "requestedSchema": { "type": "object", "required": [], "properties": {
                    "untitledSingle": { "type": "string", "description": "Select one option",
                                        "enum": ["option1", "option2", "option3"] },
                    "titledSingle": { "type": "string", "description": "Select one option with titles",
                        "oneOf": [ { "const": "value1", "title": "First Option" },
                                   { "const": "value2", "title": "Second Option" },
                                   { "const": "value3", "title": "Third Option" } ] },
                    "legacyEnum": { "type": "string", "description": "Select one option (legacy)",
                        "enum": ["opt1", "opt2", "opt3"], "enumNames": ["Option One", "Option Two", "Option Three"] },
                    "untitledMulti": { "type": "array", "description": "Select multiple options",
                        "minItems": 1, "maxItems": 3,
                        "items": { "type": "string", "enum": ["option1", "option2", "option3"] } },
                    "titledMulti": { "type": "array", "description": "Select multiple options with titles",
                        "minItems": 1, "maxItems": 3,
                        "items": { "anyOf": [ { "const": "value1", "title": "First Choice" },
                                              { "const": "value2", "title": "Second Choice" },
                                              { "const": "value3", "title": "Third Choice" } ] } }
                } } }),
            )
            .await
        }
        "json_schema_2020_12_tool" => {
            text_result(format!("JSON Schema 2020-12 tool called with: {args}"))
        }
        "test_trigger_tool_change" => {
            ctx.list_changed(ListKind::Tools);
            text_result("tool list change announced")
        }
        "test_trigger_prompt_change" => {
            ctx.list_changed(ListKind::Prompts);
            text_result("prompt list change announced")
        }
        "test_missing_capability" => {
            if ctx.client_capabilities().get("sampling").is_none() {
                return Err(RpcError::bad_request(
                    code::MISSING_CLIENT_CAPABILITY,
                    "this tool needs the client's sampling capability",
                )
                .with_data(json!({ "requiredCapabilities": { "sampling": {} } })));
            }
            text_result("client declared sampling")
        }
        "test_logging_tool" => {
            ctx.log("info", json!("test_logging_tool ran"));
            text_result("logged if asked to")
        }
        "test_streaming_elicitation" => {
            ctx.notify(
                "notifications/progress",
                json!({ "progressToken": ctx.progress_token().unwrap_or(json!("stream")), "progress": 1, "total": 2 }),
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
            json!({ "resultType": "input_required", "inputRequests": { "confirm": { "method": "elicitation/create",
                "params": { "message": "Continue?", "requestedSchema": { "type": "object",
                    "properties": { "ok": { "type": "boolean" } }, "required": ["ok"] } } } } })
        }
        "test_headers" => {
            let region = args.get("region").and_then(Value::as_str).unwrap_or("");
            text_result(format!("ran in region {region}"))
        }
        other => {
            return Err(RpcError::new(
                code::INVALID_PARAMS,
                format!("unknown tool: {other}"),
            ));
        }
    })
}

async fn elicit(ctx: &Ctx, label: &str, params: Value) -> Value {
    match ctx.request("elicitation/create", params).await {
        Ok(r) => {
            let action = r.get("action").and_then(Value::as_str).unwrap_or("");
            let content = r.get("content").cloned().unwrap_or_else(|| json!({}));
            text_result(format!("{label}: action={action}, content={content}"))
        }
        Err(e) => text_result(format!("Elicitation not supported or error: {}", e.message)),
    }
}

pub fn resources() -> Vec<Value> {
    vec![
        json!({ "uri": "test://static-text", "name": "static-text", "title": "Static Text Resource",
                "description": "A static text resource for testing", "mimeType": "text/plain" }),
        json!({ "uri": "test://static-binary", "name": "static-binary", "title": "Static Binary Resource",
                "description": "A static binary resource (image) for testing", "mimeType": "image/png" }),
        json!({ "uri": "test://watched-resource", "name": "watched-resource", "title": "Watched Resource",
                "description": "A resource that can be subscribed to", "mimeType": "text/plain" }),
    ]
}

pub fn resource_templates() -> Vec<Value> {
    vec![json!({
        "uriTemplate": "test://template/{id}/data", "name": "template", "title": "Resource Template",
        "description": "A resource template with parameter substitution", "mimeType": "application/json"
    })]
}

pub fn read_resource(ctx: &Ctx, uri: &str) -> Result<Value, RpcError> {
    let content = match uri {
        "test://static-text" => {
            json!({ "uri": uri, "mimeType": "text/plain", "text": "This is the content of the static text resource." })
        }
        "test://static-binary" => json!({ "uri": uri, "mimeType": "image/png", "blob": IMAGE_PNG }),
        "test://watched-resource" => {
            json!({ "uri": uri, "mimeType": "text/plain", "text": "Watched resource content" })
        }
        _ => match uri
            .strip_prefix("test://template/")
            .and_then(|rest| rest.strip_suffix("/data"))
        {
            Some(id) if !id.is_empty() && !id.contains('/') => json!({
                "uri": uri, "mimeType": "application/json",
                "text": json!({ "id": id, "templateTest": true, "data": format!("Data for ID: {id}") }).to_string()
            }),
            _ => return Err(resource_not_found(ctx, uri)),
        },
    };
    Ok(json!({ "contents": [content] }))
}

/// `-32602` since 2026-07-28 (SEP-2164), `-32002` before.
pub(crate) fn resource_not_found(ctx: &Ctx, uri: &str) -> RpcError {
    let code = if ctx.stateless {
        code::INVALID_PARAMS
    } else {
        -32002
    };
    RpcError::new(code, format!("resource not found: {uri}")).with_data(json!({ "uri": uri }))
}

pub fn prompts(_stateless: bool) -> Vec<Value> {
    let mut prompts = vec![
        json!({ "name": "test_simple_prompt", "title": "Simple Test Prompt",
                "description": "A simple prompt without arguments" }),
        json!({ "name": "test_prompt_with_arguments", "title": "Prompt With Arguments",
                "description": "A prompt with required arguments",
                "arguments": [ { "name": "arg1", "description": "First test argument", "required": true },
                               { "name": "arg2", "description": "Second test argument", "required": true } ] }),
        json!({ "name": "test_prompt_with_embedded_resource", "title": "Prompt With Embedded Resource",
                "description": "A prompt that includes an embedded resource",
                "arguments": [ { "name": "resourceUri", "description": "URI of the resource to embed", "required": true } ] }),
        json!({ "name": "test_prompt_with_image", "title": "Prompt With Image",
                "description": "A prompt that includes image content" }),
    ];
    prompts.extend(mrtr::prompts());
    prompts
}

pub fn get_prompt(ctx: &Ctx, name: &str, args: &Value) -> Result<Value, RpcError> {
    if let Some(result) = mrtr::get_prompt(ctx, name)? {
        return Ok(result);
    }
    let arg = |k: &str| {
        args.get(k)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    Ok(match name {
        "test_simple_prompt" => json!({ "messages": [ { "role": "user", "content": {
            "type": "text", "text": "This is a simple prompt for testing." } } ] }),
        "test_prompt_with_arguments" => json!({ "messages": [ { "role": "user", "content": {
            "type": "text",
            "text": format!("Prompt with arguments: arg1='{}', arg2='{}'", arg("arg1"), arg("arg2")) } } ] }),
        "test_prompt_with_embedded_resource" => json!({ "messages": [
            { "role": "user", "content": { "type": "resource", "resource": {
                "uri": arg("resourceUri"), "mimeType": "text/plain",
                "text": "Embedded resource content for testing." } } },
            { "role": "user", "content": { "type": "text", "text": "Please process the embedded resource above." } }
        ] }),
        "test_prompt_with_image" => json!({ "messages": [
            { "role": "user", "content": { "type": "image", "data": IMAGE_PNG, "mimeType": "image/png" } },
            { "role": "user", "content": { "type": "text", "text": "Please analyze the image above." } }
        ] }),
        other => {
            return Err(RpcError::new(
                code::INVALID_PARAMS,
                format!("unknown prompt: {other}"),
            ));
        }
    })
}
