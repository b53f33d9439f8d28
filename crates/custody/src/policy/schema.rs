//! The Cedar schema custody evaluates policies against: generated from the configuration, so
//! the claims the issuers keep are typed attributes of `Principal`.

use std::collections::BTreeSet;

use crate::config::AuthConfig;

/// Attributes every principal has; claims with these names are not exposed as attributes.
pub const BASE_ATTRIBUTES: [&str; 4] = ["kind", "issuer", "subject", "name"];

/// The MCP methods that have an action of their own, and the resource type each acts on.
pub const ACTIONS: [(&str, &str); 7] = [
    ("tools/call", "Tool"),
    ("resources/read", "Resource"),
    ("prompts/get", "Prompt"),
    ("tools/list", "Endpoint"),
    ("resources/list", "Endpoint"),
    ("resources/templates/list", "Endpoint"),
    ("prompts/list", "Endpoint"),
];

/// The action of deciding a held call: the approver is the principal, the held call's tool,
/// resource or prompt (or its endpoint) the resource. Only policies that name it in their action
/// scope grant it: `permit(principal, action, resource)` makes nobody an approver.
pub const APPROVE: &str = "approve";

/// The action of reading the log through the explorer: the reader is the principal, an
/// endpoint the resource. Like `approve`, only policies that name it grant it.
pub const AUDIT: &str = "audit";

/// The action of every other client request (`initialize`, `ping`, `completion/complete`,
/// `logging/setLevel`, `resources/subscribe`, ...).
pub const OTHER: &str = "other";

/// The claim attributes of `Principal`: every claim any issuer keeps (their presets' lists
/// included), minus the base attributes.
pub fn claim_attributes(auth: &AuthConfig) -> BTreeSet<String> {
    let mut names: BTreeSet<String> = auth
        .oidc
        .iter()
        .flat_map(|o| o.claims.iter().cloned())
        .collect();
    for preset in [
        crate::config::Preset::GithubActions,
        crate::config::Preset::Gitlab,
    ] {
        names.extend(preset.claims().iter().map(|c| (*c).to_string()));
    }
    names.retain(|n| !BASE_ATTRIBUTES.contains(&n.as_str()));
    names
}

/// The schema in Cedar's schema syntax.
pub fn text(auth: &AuthConfig) -> String {
    let claims: String = claim_attributes(auth)
        .iter()
        .map(|c| format!("    {}: String,\n", quote(c)))
        .collect();
    let list_actions = ACTIONS
        .iter()
        .filter(|(_, r)| *r == "Endpoint")
        .map(|(a, _)| quote(a))
        .collect::<Vec<_>>()
        .join(", ");
    let requester: String = BASE_ATTRIBUTES
        .iter()
        .map(|a| quote(a))
        .chain(claim_attributes(auth).iter().map(|c| quote(c)))
        .map(|a| format!("        {a}: String,\n"))
        .collect();
    let mut actions = String::new();
    for (action, resource) in ACTIONS.iter().filter(|(_, r)| *r != "Endpoint") {
        actions.push_str(&format!(
            "action {} appliesTo {{ principal: [Principal], resource: [{resource}], context: Call }};\n",
            quote(action)
        ));
    }
    format!(
        r#"// custody's Cedar schema: what policies can refer to.

// Who calls: a verified identity. `kind` is "oidc", "static" or "anonymous"; `issuer` is ""
// except for OIDC. The claims the issuers keep are attributes too, as strings: "" when the
// token did not have the claim.
entity Principal = {{
    "kind": String,
    "issuer": String,
    "subject": String,
    "name": String,
{claims}}};

// What is called: an endpoint, and the tools, resources and prompts inside it.
entity Endpoint = {{ "name": String }};
entity Tool in [Endpoint] = {{ "name": String, "endpoint": String }};
entity Resource in [Endpoint] = {{ "uri": String, "endpoint": String }};
entity Prompt in [Endpoint] = {{ "name": String, "endpoint": String }};

// The call's arguments, one tag per top-level argument; values that are not strings are
// their JSON text.
entity Arguments tags String;

type Call = {{
    "method": String,
    "arguments": Arguments,
    "arguments_json": String,
    "protocol_version": String,
    "client_address": String,
    "time": Long,
}};

// Deciding a held call: who asked (the requester's attributes, as a record), what they asked
// for, and the call's arguments.
type Approval = {{
    "requester": {{
{requester}    }},
    "method": String,
    "arguments": Arguments,
    "arguments_json": String,
    "time": Long,
}};

// Reading the log through the explorer: the reader, the endpoint whose entries it reads.
type Audit = {{
    "arguments": Arguments,
    "arguments_json": String,
    "time": Long,
}};

{actions}action "list";
action {list_actions} in ["list"] appliesTo {{ principal: [Principal], resource: [Endpoint], context: Call }};
action "{OTHER}" appliesTo {{ principal: [Principal], resource: [Endpoint], context: Call }};
action "{APPROVE}" appliesTo {{ principal: [Principal], resource: [Tool, Resource, Prompt, Endpoint], context: Approval }};
action "{AUDIT}" appliesTo {{ principal: [Principal], resource: [Endpoint], context: Audit }};
"#
    )
}

fn quote(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generated_schema_parses_and_types_claims() {
        let text = text(&AuthConfig::anonymous());
        let (schema, _) = cedar_policy::Schema::from_cedarschema_str(&text)
            .unwrap_or_else(|e| panic!("{e:?}\n{text}"));
        let actions: Vec<String> = schema.actions().map(ToString::to_string).collect();
        for (a, _) in ACTIONS {
            assert!(actions.iter().any(|x| x.contains(a)), "{a} in {actions:?}");
        }
        assert!(actions.iter().any(|x| x.contains(APPROVE)), "{actions:?}");
        assert!(text.contains("\"repository\": String"));
        assert!(text.contains("\"project_path\": String"));
    }
}
