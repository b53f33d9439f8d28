//! Request dispatch: the method table a [`Ctx`] answers from, the session handshake,
//! `subscriptions/listen` and the decoration of stateless results.

use serde_json::{Value, json};

use super::{Ctx, Listener, lock};
use crate::catalog::Catalog;
use crate::rpc::{RpcError, code};
use crate::{SESSION_VERSIONS, all_versions, meta};

impl Ctx {
    fn str_param(&self, name: &str) -> Result<&str, RpcError> {
        self.params
            .get(name)
            .and_then(Value::as_str)
            .ok_or_else(|| RpcError::new(code::INVALID_PARAMS, format!("missing params.{name}")))
    }

    /// Answers the request. `Ok(None)` means no response is sent (a listen stream that ended
    /// because the client left).
    pub(super) async fn dispatch(&self) -> Result<Option<Value>, RpcError> {
        let catalog = &self.engine.catalog;
        let stateless = self.stateless;
        let mut result = match (self.method.as_str(), stateless) {
            ("initialize", false) => self.initialize(),
            ("ping", false) => json!({}),
            ("logging/setLevel", false) => {
                let level = self.str_param("level")?.to_string();
                if let Some(s) = &self.session {
                    *lock(&s.log_level) = Some(level);
                }
                json!({})
            }
            ("server/discover", _) => json!({
                "supportedVersions": all_versions(),
                "capabilities": catalog.capabilities(),
                "serverInfo": catalog.server_info(),
                "instructions": catalog.instructions(),
            }),
            ("tools/list", _) => json!({ "tools": catalog.tools(stateless) }),
            ("tools/call", _) => {
                let name = self.str_param("name")?.to_string();
                let args = self
                    .params
                    .get("arguments")
                    .cloned()
                    .unwrap_or_else(|| json!({}));
                catalog.call_tool(self, &name, &args).await?
            }
            ("resources/list", _) => json!({ "resources": catalog.resources() }),
            ("resources/templates/list", _) => {
                json!({ "resourceTemplates": catalog.resource_templates() })
            }
            ("resources/read", _) => {
                let uri = self.str_param("uri")?.to_string();
                catalog.read_resource(self, &uri)?
            }
            ("resources/subscribe", false) => {
                let uri = self.str_param("uri")?.to_string();
                if let Some(s) = &self.session {
                    lock(&s.subscriptions).insert(uri);
                }
                json!({})
            }
            ("resources/unsubscribe", false) => {
                let uri = self.str_param("uri")?;
                if let Some(s) = &self.session {
                    lock(&s.subscriptions).remove(uri);
                }
                json!({})
            }
            ("prompts/list", _) => json!({ "prompts": catalog.prompts(stateless) }),
            ("prompts/get", _) => {
                let name = self.str_param("name")?.to_string();
                let args = self
                    .params
                    .get("arguments")
                    .cloned()
                    .unwrap_or_else(|| json!({}));
                catalog.get_prompt(self, &name, &args)?
            }
            ("completion/complete", _) => catalog.complete(&self.params),
            ("subscriptions/listen", true) => return self.listen().await,
            (method, _) => {
                return Err(RpcError::new(
                    code::METHOD_NOT_FOUND,
                    format!("method not found: {method}"),
                ));
            }
        };
        if stateless {
            decorate_stateless(&self.method, &mut result, catalog);
        }
        Ok(Some(result))
    }

    fn initialize(&self) -> Value {
        let requested = self
            .params
            .get("protocolVersion")
            .and_then(Value::as_str)
            .unwrap_or("");
        let version = if SESSION_VERSIONS.contains(&requested) {
            requested
        } else {
            SESSION_VERSIONS[0]
        };
        if let Some(s) = &self.session {
            *lock(&s.version) = version.to_string();
            *lock(&s.client_capabilities) = self
                .params
                .get("capabilities")
                .cloned()
                .unwrap_or_else(|| json!({}));
        }
        let catalog = &self.engine.catalog;
        json!({
            "protocolVersion": version,
            "capabilities": catalog.capabilities(),
            "serverInfo": catalog.server_info(),
            "instructions": catalog.instructions(),
        })
    }

    async fn listen(&self) -> Result<Option<Value>, RpcError> {
        let filter = self
            .params
            .get("notifications")
            .cloned()
            .unwrap_or_else(|| json!({}));
        let wants = |key: &str| filter.get(key).and_then(Value::as_bool).unwrap_or(false);
        let caps = self.engine.catalog.capabilities();
        let tools = wants("toolsListChanged") && caps.pointer("/tools/listChanged").is_some();
        let prompts = wants("promptsListChanged") && caps.pointer("/prompts/listChanged").is_some();
        let resources =
            wants("resourcesListChanged") && caps.pointer("/resources/listChanged").is_some();
        let mut agreed = serde_json::Map::new();
        for (key, on) in [
            ("toolsListChanged", tools),
            ("promptsListChanged", prompts),
            ("resourcesListChanged", resources),
        ] {
            if on {
                agreed.insert(key.into(), json!(true));
            }
        }
        self.notify(
            "notifications/subscriptions/acknowledged",
            json!({ "_meta": { meta::SUBSCRIPTION_ID: self.id }, "notifications": agreed }),
        );
        self.engine.add_listener(Listener {
            id: self.id.clone(),
            tools,
            prompts,
            resources,
            out: self.out.clone(),
        });
        // The stream stays open until the client goes away; an abrupt close carries no response.
        self.out.closed().await;
        Ok(None)
    }
}

/// Adds what every stateless result carries: `resultType`, the server's identity and, for
/// cacheable results, caching hints.
fn decorate_stateless(method: &str, result: &mut Value, catalog: &Catalog) {
    let Some(obj) = result.as_object_mut() else {
        return;
    };
    obj.entry("resultType").or_insert_with(|| json!("complete"));
    let meta = obj.entry("_meta").or_insert_with(|| json!({}));
    if let Some(meta) = meta.as_object_mut() {
        meta.insert(meta::SERVER_INFO.into(), catalog.server_info());
    }
    if matches!(
        method,
        "tools/list"
            | "prompts/list"
            | "resources/list"
            | "resources/read"
            | "resources/templates/list"
            | "server/discover"
    ) && obj.get("resultType") == Some(&json!("complete"))
    {
        obj.entry("ttlMs").or_insert_with(|| json!(60_000));
        obj.entry("cacheScope").or_insert_with(|| json!("public"));
    }
}
