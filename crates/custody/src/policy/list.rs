//! Answers to list methods, filtered down to what the principal may use.

use serde_json::Value;

use super::{Call, Engine, Verdict};

/// The list methods whose answers are filtered by policy.
pub const LIST_METHODS: [&str; 3] = ["tools/list", "resources/list", "prompts/list"];

/// What a list method lists: the result's array, the item's key field, and the action using
/// an item needs.
pub fn listed(method: &str) -> Option<(&'static str, &'static str, &'static str)> {
    match method {
        "tools/list" => Some(("tools", "name", "tools/call")),
        "resources/list" => Some(("resources", "uri", "resources/read")),
        "prompts/list" => Some(("prompts", "name", "prompts/get")),
        _ => None,
    }
}

impl Engine {
    /// Removes from the answer to list method `call.method` the items the principal may not use
    /// (policy denies the action on them; items needing approval stay). Returns the removed
    /// items' names or URIs.
    pub fn filter_list(&self, call: &Call<'_>, answer: &mut Value) -> Vec<String> {
        let Some((array, key, action)) = listed(call.method) else {
            return Vec::new();
        };
        let Some(items) = answer
            .pointer_mut(&format!("/result/{array}"))
            .and_then(Value::as_array_mut)
        else {
            return Vec::new();
        };
        let mut removed = Vec::new();
        items.retain(|item| {
            let name = item.get(key).and_then(Value::as_str).unwrap_or("");
            let verdict = self
                .decide(&Call {
                    method: action,
                    target: Some(name),
                    arguments: None,
                    ..*call
                })
                .verdict;
            if verdict == Verdict::Deny {
                removed.push(name.to_string());
                false
            } else {
                true
            }
        });
        removed
    }
}
