//! What the server offers: the demo toolset or the conformance fixtures.

mod conformance;
mod demo;
mod mrtr;

use serde_json::{Value, json};

use crate::engine::Ctx;
use crate::rpc::RpcError;

/// The set of tools, resources and prompts a server offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Catalog {
    /// custody's built-in demo: a few tools that are useful to try the gateway with.
    Demo,
    /// The fixtures the official MCP conformance suite expects.
    Conformance,
}

impl Catalog {
    pub fn name(&self) -> &'static str {
        match self {
            Catalog::Demo => "custody-demo",
            Catalog::Conformance => "custody-conformance-fixture",
        }
    }

    pub fn server_info(&self) -> Value {
        json!({ "name": self.name(), "version": env!("CARGO_PKG_VERSION") })
    }

    pub fn instructions(&self) -> &'static str {
        match self {
            Catalog::Demo => demo::INSTRUCTIONS,
            Catalog::Conformance => "Fixtures for the MCP conformance suite.",
        }
    }

    pub fn capabilities(&self) -> Value {
        match self {
            Catalog::Demo => json!({
                "tools": { "listChanged": false },
                "resources": { "subscribe": false, "listChanged": false },
                "prompts": { "listChanged": false },
                "logging": {},
            }),
            Catalog::Conformance => json!({
                "tools": { "listChanged": true },
                "resources": { "subscribe": true, "listChanged": true },
                "prompts": { "listChanged": true },
                "logging": {},
                "completions": {},
            }),
        }
    }

    pub fn tools(&self, stateless: bool) -> Vec<Value> {
        match self {
            Catalog::Demo => demo::tools(),
            Catalog::Conformance => conformance::tools(stateless),
        }
    }

    pub async fn call_tool(&self, ctx: &Ctx, name: &str, args: &Value) -> Result<Value, RpcError> {
        match self {
            Catalog::Demo => demo::call_tool(ctx, name, args).await,
            Catalog::Conformance => conformance::call_tool(ctx, name, args).await,
        }
    }

    pub fn resources(&self) -> Vec<Value> {
        match self {
            Catalog::Demo => demo::resources(),
            Catalog::Conformance => conformance::resources(),
        }
    }

    pub fn resource_templates(&self) -> Vec<Value> {
        match self {
            Catalog::Demo => Vec::new(),
            Catalog::Conformance => conformance::resource_templates(),
        }
    }

    pub fn read_resource(&self, ctx: &Ctx, uri: &str) -> Result<Value, RpcError> {
        match self {
            Catalog::Demo => demo::read_resource(ctx, uri),
            Catalog::Conformance => conformance::read_resource(ctx, uri),
        }
    }

    pub fn prompts(&self, stateless: bool) -> Vec<Value> {
        match self {
            Catalog::Demo => demo::prompts(),
            Catalog::Conformance => conformance::prompts(stateless),
        }
    }

    pub fn get_prompt(&self, ctx: &Ctx, name: &str, args: &Value) -> Result<Value, RpcError> {
        match self {
            Catalog::Demo => demo::get_prompt(name, args),
            Catalog::Conformance => conformance::get_prompt(ctx, name, args),
        }
    }

    pub fn complete(&self, _params: &Value) -> Value {
        json!({ "completion": { "values": [], "total": 0, "hasMore": false } })
    }

    /// The `x-mcp-header` annotations of a tool's input schema: (header suffix, argument name).
    pub fn header_params(&self, tool: &str) -> Vec<(String, String)> {
        let tools = self.tools(true);
        let Some(schema) = tools
            .iter()
            .find(|t| t["name"] == tool)
            .and_then(|t| t.pointer("/inputSchema/properties"))
            .and_then(Value::as_object)
        else {
            return Vec::new();
        };
        schema
            .iter()
            .filter_map(|(arg, prop)| {
                prop.get("x-mcp-header")
                    .and_then(Value::as_str)
                    .map(|h| (h.to_string(), arg.clone()))
            })
            .collect()
    }
}

/// A tool result with one text block.
pub(crate) fn text_result(text: impl Into<String>) -> Value {
    json!({ "content": [{ "type": "text", "text": text.into() }] })
}

pub(crate) fn tool(name: &str, description: &str, schema: Value) -> Value {
    json!({ "name": name, "description": description, "inputSchema": schema })
}

pub(crate) fn no_args() -> Value {
    json!({ "type": "object", "properties": {} })
}
