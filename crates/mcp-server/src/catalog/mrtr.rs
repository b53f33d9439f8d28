//! Multi round-trip request fixtures (2026-07-28, SEP-2322): tools and a prompt that answer
//! `input_required` until the client retries with the `inputResponses` they asked for.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Map, Value, json};
use sha2::Sha256;

use super::{no_args, text_result, tool};
use crate::engine::Ctx;
use crate::rpc::{RpcError, code};

pub fn tools() -> Vec<Value> {
    [
        "test_input_required_result_elicitation",
        "test_input_required_result_sampling",
        "test_input_required_result_list_roots",
        "test_input_required_result_request_state",
        "test_input_required_result_multiple_inputs",
        "test_input_required_result_multi_round",
        "test_input_required_result_tampered_state",
        "test_input_required_result_capabilities",
    ]
    .iter()
    .map(|name| {
        tool(
            name,
            "Asks the client for input with an InputRequiredResult",
            no_args(),
        )
    })
    .collect()
}

pub fn prompts() -> Vec<Value> {
    vec![json!({ "name": "test_input_required_result_prompt",
                 "description": "Asks the client for context with an InputRequiredResult" })]
}

fn elicitation(message: &str, field: &str, kind: &str) -> Value {
    json!({ "method": "elicitation/create", "params": { "message": message, "requestedSchema": {
        "type": "object", "properties": { field: { "type": kind } }, "required": [field] } } })
}

fn sampling(text: &str) -> Value {
    json!({ "method": "sampling/createMessage", "params": {
        "messages": [ { "role": "user", "content": { "type": "text", "text": text } } ], "maxTokens": 100 } })
}

fn roots() -> Value {
    json!({ "method": "roots/list", "params": {} })
}

fn input_required(requests: Value, state: Option<String>) -> Value {
    let mut result = json!({ "resultType": "input_required", "inputRequests": requests });
    if let Some(state) = state {
        result["requestState"] = json!(state);
    }
    result
}

/// The client's answers, validated: `None` when absent, an error when malformed.
fn responses(ctx: &Ctx) -> Result<Option<&Map<String, Value>>, RpcError> {
    match ctx.params.get("inputResponses") {
        None => Ok(None),
        Some(Value::Object(map)) => {
            for (key, value) in map {
                if !value.is_object() {
                    return Err(RpcError::new(
                        code::INVALID_PARAMS,
                        format!("inputResponses.{key} must be an object"),
                    ));
                }
            }
            Ok(Some(map))
        }
        Some(_) => Err(RpcError::new(
            code::INVALID_PARAMS,
            "inputResponses must be an object",
        )),
    }
}

fn field<'a>(responses: Option<&'a Map<String, Value>>, key: &str) -> Option<&'a Value> {
    responses.and_then(|r| r.get(key))
}

fn content_str(response: &Value, field: &str) -> String {
    response
        .pointer(&format!("/content/{field}"))
        .and_then(Value::as_str)
        .unwrap_or("unknown")
        .to_string()
}

/// Signs state so that a client cannot alter it between rounds.
fn seal(ctx: &Ctx, state: &Value) -> String {
    let body = URL_SAFE_NO_PAD.encode(state.to_string());
    let mut mac = Hmac::<Sha256>::new_from_slice(ctx.engine().state_key()).expect("any key size");
    mac.update(body.as_bytes());
    format!("{body}.{}", hex::encode(mac.finalize().into_bytes()))
}

fn open(ctx: &Ctx) -> Result<Option<Value>, RpcError> {
    let Some(sealed) = ctx.params.get("requestState") else {
        return Ok(None);
    };
    let tampered = || {
        RpcError::new(
            code::INVALID_PARAMS,
            "requestState failed integrity verification",
        )
    };
    let sealed = sealed.as_str().ok_or_else(tampered)?;
    let (body, tag) = sealed.rsplit_once('.').ok_or_else(tampered)?;
    let tag = hex::decode(tag).map_err(|_| tampered())?;
    let mut mac = Hmac::<Sha256>::new_from_slice(ctx.engine().state_key()).expect("any key size");
    mac.update(body.as_bytes());
    mac.verify_slice(&tag).map_err(|_| tampered())?;
    let bytes = URL_SAFE_NO_PAD.decode(body).map_err(|_| tampered())?;
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|_| tampered())
}

pub fn call_tool(ctx: &Ctx, name: &str) -> Result<Option<Value>, RpcError> {
    if !name.starts_with("test_input_required_result_") {
        return Ok(None);
    }
    let answers = responses(ctx)?;
    let state = open(ctx)?;
    Ok(Some(match name {
        "test_input_required_result_elicitation" => match field(answers, "user_name") {
            Some(r) => text_result(format!("Hello, {}!", content_str(r, "name"))),
            None => input_required(
                json!({ "user_name": elicitation("What is your name?", "name", "string") }),
                None,
            ),
        },
        "test_input_required_result_sampling" => match field(answers, "sample_request") {
            Some(r) => {
                let text = r
                    .pointer("/content/text")
                    .and_then(Value::as_str)
                    .unwrap_or("no response");
                text_result(format!("Sampling result: {text}"))
            }
            None => input_required(
                json!({ "sample_request": sampling("What is the capital of France?") }),
                None,
            ),
        },
        "test_input_required_result_list_roots" => match field(answers, "roots_request") {
            Some(r) => {
                let n = r.get("roots").and_then(Value::as_array).map_or(0, Vec::len);
                text_result(format!("Found {n} root(s)"))
            }
            None => input_required(json!({ "roots_request": roots() }), None),
        },
        "test_input_required_result_request_state"
        | "test_input_required_result_tampered_state" => {
            match (&state, field(answers, "confirm")) {
                (Some(s), Some(_)) if s["kind"] == "request-state" => {
                    text_result("state-ok: requestState validated")
                }
                _ => input_required(
                    json!({ "confirm": elicitation("Please confirm", "ok", "boolean") }),
                    Some(seal(
                        ctx,
                        &json!({ "kind": "request-state", "nonce": nonce() }),
                    )),
                ),
            }
        }
        "test_input_required_result_multiple_inputs" => {
            match (
                &state,
                field(answers, "user_name"),
                field(answers, "greeting"),
                field(answers, "client_roots"),
            ) {
                (Some(s), Some(user), Some(greeting), Some(r))
                    if s["kind"] == "multiple-inputs" =>
                {
                    let greeting = greeting
                        .pointer("/content/text")
                        .and_then(Value::as_str)
                        .unwrap_or("Hello there!");
                    let n = r.get("roots").and_then(Value::as_array).map_or(0, Vec::len);
                    text_result(format!(
                        "Name: {}; Greeting: {greeting}; Roots: {n}",
                        content_str(user, "name")
                    ))
                }
                _ => input_required(
                    json!({
                        "user_name": elicitation("What is your name?", "name", "string"),
                        "greeting": sampling("Generate a greeting"),
                        "client_roots": roots(),
                    }),
                    Some(seal(
                        ctx,
                        &json!({ "kind": "multiple-inputs", "nonce": nonce() }),
                    )),
                ),
            }
        }
        "test_input_required_result_multi_round" => {
            let round = state.as_ref().and_then(|s| s["round"].as_u64());
            match (round, field(answers, "step1"), field(answers, "step2")) {
                (Some(1), Some(step1), _) => input_required(
                    json!({ "step2": elicitation("Step 2: What is your favorite color?", "color", "string") }),
                    Some(seal(
                        ctx,
                        &json!({ "round": 2, "name": content_str(step1, "name"), "nonce": nonce() }),
                    )),
                ),
                (Some(2), _, Some(step2)) => {
                    let name = state
                        .as_ref()
                        .and_then(|s| s["name"].as_str())
                        .unwrap_or("friend");
                    text_result(format!(
                        "Multi-round complete for {name} who likes {}",
                        content_str(step2, "color")
                    ))
                }
                _ => input_required(
                    json!({ "step1": elicitation("Step 1: What is your name?", "name", "string") }),
                    Some(seal(ctx, &json!({ "round": 1, "nonce": nonce() }))),
                ),
            }
        }
        "test_input_required_result_capabilities" => {
            let caps = ctx.client_capabilities();
            let mut requests = Map::new();
            if caps.get("elicitation").is_some() {
                requests.insert(
                    "user_name".into(),
                    elicitation("What is your name?", "name", "string"),
                );
            }
            if caps.get("sampling").is_some() {
                requests.insert("greeting".into(), sampling("Generate a greeting"));
            }
            if caps.get("roots").is_some() {
                requests.insert("client_roots".into(), roots());
            }
            if answers.is_some() || requests.is_empty() {
                text_result("capabilities respected")
            } else {
                input_required(Value::Object(requests), None)
            }
        }
        other => {
            return Err(RpcError::new(
                code::INVALID_PARAMS,
                format!("unknown tool: {other}"),
            ));
        }
    }))
}

pub fn get_prompt(ctx: &Ctx, name: &str) -> Result<Option<Value>, RpcError> {
    if name != "test_input_required_result_prompt" {
        return Ok(None);
    }
    let answers = responses(ctx)?;
    Ok(Some(match field(answers, "user_context") {
        Some(r) => json!({ "messages": [ { "role": "user", "content": {
            "type": "text", "text": format!("Prompt with context: {}", content_str(r, "context")) } } ] }),
        None => input_required(
            json!({ "user_context": elicitation("What context should the prompt use?", "context", "string") }),
            None,
        ),
    }))
}

fn nonce() -> String {
    hex::encode(rand::random::<[u8; 8]>())
}
