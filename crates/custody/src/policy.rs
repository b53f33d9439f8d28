//! Who may call what: Cedar policies over the verified principal, the endpoint and the tool,
//! resource or prompt a call touches. Default deny once policies are configured; a permit
//! annotated `@approval("required")` turns its allow into "needs approval".
//!
//! The policy set in force is swapped whole on reload ([`Engine::reload`]): a call sees the old
//! set or the new one, never a mix.

mod audit;
mod list;
pub mod load;
pub mod reload;
pub mod schema;
mod slice;
#[cfg(test)]
mod tests;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use cedar_policy::{
    Authorizer, Context, Decision as CedarDecision, Entities, Entity, EntityId, EntityTypeName,
    EntityUid, Request, RestrictedExpression, Schema,
};
use serde_json::{Value, json};

pub use list::{LIST_METHODS, listed};
pub use load::{Loaded, PolicyError, PolicyErrors, Source};

use crate::config::{AuthConfig, PolicyConfig};
use crate::identity::Principal;

/// What policy says about a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    Deny,
    /// Allowed once a person approves it.
    NeedsApproval,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Allow => "allow",
            Verdict::Deny => "deny",
            Verdict::NeedsApproval => "needs_approval",
        }
    }
}

/// A verdict and the policies that decided it: the permits that allowed it (those asking for
/// approval, when it needs one), or the forbids that denied it (none: nothing permitted it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub verdict: Verdict,
    pub policies: Vec<String>,
    /// For [`Verdict::NeedsApproval`]: how many distinct approvers must approve (the most any
    /// of `policies` asks for); 0 otherwise.
    pub min_approvals: u32,
}

impl Decision {
    fn deny(policies: Vec<String>) -> Self {
        Self {
            verdict: Verdict::Deny,
            policies,
            min_approvals: 0,
        }
    }

    /// For the audit entry.
    pub fn to_json(&self) -> Value {
        if self.verdict == Verdict::NeedsApproval {
            json!({ "decision": self.verdict.as_str(), "policies": self.policies, "min_approvals": self.min_approvals })
        } else {
            json!({ "decision": self.verdict.as_str(), "policies": self.policies })
        }
    }
}

/// One call, as policy sees it.
pub struct Call<'a> {
    pub principal: &'a Principal,
    pub endpoint: &'a str,
    pub method: &'a str,
    /// The tool or prompt name, or the resource URI.
    pub target: Option<&'a str>,
    pub arguments: Option<&'a Value>,
    pub protocol_version: &'a str,
    pub client_address: &'a str,
}

/// The action a method maps to: its own, or `other`.
pub fn action_of(method: &str) -> &'static str {
    schema::ACTIONS
        .iter()
        .find(|(a, _)| *a == method)
        .map_or(schema::OTHER, |(a, _)| *a)
}

/// A policy set in force.
struct Policies {
    loaded: Loaded,
    slicer: slice::Slicer,
}

impl Policies {
    fn new(loaded: Loaded) -> Self {
        Self {
            slicer: slice::Slicer::new(&loaded.set),
            loaded,
        }
    }
}

/// Evaluates calls against the policy set in force, and reloads it.
pub struct Engine {
    schema: Schema,
    schema_text: String,
    claims: BTreeSet<String>,
    action_entities: Vec<Entity>,
    files: Vec<PathBuf>,
    builtin: Option<&'static str>,
    current: RwLock<Arc<Policies>>,
    authorizer: Authorizer,
}

fn uid(kind: &str, id: &str) -> EntityUid {
    // Entity type names here are fixed identifiers of the schema: parsing cannot fail.
    let t = EntityTypeName::from_str(kind).unwrap_or_else(|_| unreachable!("{kind}"));
    EntityUid::from_type_name_and_id(t, EntityId::new(id))
}

fn string(s: &str) -> RestrictedExpression {
    RestrictedExpression::new_string(s.to_string())
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

impl Engine {
    /// Loads the configured policies; `Ok(None)` when none are configured.
    ///
    /// # Errors
    /// Every problem in the policy files, with file:line:col.
    pub fn new(
        policy: &PolicyConfig,
        auth: &AuthConfig,
    ) -> Result<Option<Arc<Self>>, PolicyErrors> {
        if !policy.is_enabled() {
            return Ok(None);
        }
        let schema_text = schema::text(auth);
        let (schema, _) = Schema::from_cedarschema_str(&schema_text).map_err(|e| {
            PolicyErrors(vec![PolicyError {
                file: "custody's schema".into(),
                position: None,
                message: e.to_string(),
            }])
        })?;
        let action_entities = schema
            .action_entities()
            .map(|e| e.iter().cloned().collect())
            .unwrap_or_default();
        let sources = read_sources(&policy.files, policy.builtin)?;
        let loaded = load::load(&sources, &schema)?;
        Ok(Some(Arc::new(Self {
            schema,
            schema_text,
            claims: schema::claim_attributes(auth),
            action_entities,
            files: policy.files.clone(),
            builtin: policy.builtin,
            current: RwLock::new(Arc::new(Policies::new(loaded))),
            authorizer: Authorizer::new(),
        })))
    }

    /// The schema policies are validated against, in Cedar's schema syntax.
    pub fn schema_text(&self) -> &str {
        &self.schema_text
    }

    /// The files policies are read from.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    fn current(&self) -> Arc<Policies> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The hash of the policy set in force and how many policies it has.
    pub fn summary(&self) -> (String, usize) {
        let p = self.current();
        (p.loaded.hash.clone(), p.loaded.set.num_of_policies())
    }

    /// Reads and validates the files again; a good set replaces the one in force at once, a bad
    /// one changes nothing.
    ///
    /// # Errors
    /// Every problem in the new files; the old set stays in force.
    pub fn reload(&self) -> Result<(String, usize), PolicyErrors> {
        let sources = read_sources(&self.files, self.builtin)?;
        let loaded = load::load(&sources, &self.schema)?;
        let summary = (loaded.hash.clone(), loaded.set.num_of_policies());
        *self.current.write().unwrap_or_else(PoisonError::into_inner) =
            Arc::new(Policies::new(loaded));
        Ok(summary)
    }

    /// A principal attribute's value: the base attributes, or a kept claim as a string ("" when
    /// the token lacked it, or it is not a string, number or boolean).
    fn attribute(p: &Principal, name: &str) -> String {
        match name {
            "kind" => p.kind.as_str().to_string(),
            "issuer" => p.issuer.clone().unwrap_or_default(),
            "subject" => p.subject.clone(),
            "name" => p.name.clone(),
            claim => match p.claims.get(claim) {
                Some(Value::String(s)) => s.clone(),
                Some(v @ (Value::Number(_) | Value::Bool(_))) => v.to_string(),
                _ => String::new(),
            },
        }
    }

    fn principal_entity(&self, p: &Principal) -> Option<Entity> {
        let attrs = schema::BASE_ATTRIBUTES
            .iter()
            .map(|a| (*a).to_string())
            .chain(self.claims.iter().cloned())
            .map(|a| {
                let v = RestrictedExpression::new_string(Self::attribute(p, &a));
                (a, v)
            })
            .collect();
        Entity::new(uid("Principal", &p.subject), attrs, Default::default()).ok()
    }

    /// Decides `call`. An evaluation that cannot be set up (which the schema rules out) denies.
    pub fn decide(&self, call: &Call<'_>) -> Decision {
        let action = action_of(call.method);
        let context = vec![
            ("method".to_string(), string(call.method)),
            (
                "protocol_version".to_string(),
                string(call.protocol_version),
            ),
            ("client_address".to_string(), string(call.client_address)),
        ];
        let target = Target {
            endpoint: call.endpoint,
            action,
            name: call.target,
        };
        let Some((response, policies)) =
            self.evaluate(call.principal, action, &target, call.arguments, context)
        else {
            return Decision::deny(Vec::new());
        };
        let reasons: Vec<&cedar_policy::PolicyId> = response.diagnostics().reason().collect();
        match response.decision() {
            CedarDecision::Deny => {
                Decision::deny(reasons.iter().map(ToString::to_string).collect())
            }
            CedarDecision::Allow => {
                let approvals: Vec<(String, u32)> = reasons
                    .iter()
                    .filter_map(|id| {
                        policies
                            .loaded
                            .approval
                            .get(*id)
                            .map(|n| (id.to_string(), *n))
                    })
                    .collect();
                if approvals.is_empty() {
                    Decision {
                        verdict: Verdict::Allow,
                        policies: reasons.iter().map(ToString::to_string).collect(),
                        min_approvals: 0,
                    }
                } else {
                    Decision {
                        verdict: Verdict::NeedsApproval,
                        min_approvals: approvals.iter().map(|(_, n)| *n).max().unwrap_or(1),
                        policies: approvals.into_iter().map(|(id, _)| id).collect(),
                    }
                }
            }
        }
    }

    /// May `approver` decide the held call? Only permits that name `Action::"approve"` grant
    /// it (approval annotations play no part here); any applying forbid refuses it.
    pub fn decide_approve(&self, approver: &Principal, held: &Held<'_>) -> Decision {
        let requester = RestrictedExpression::new_record(
            schema::BASE_ATTRIBUTES
                .iter()
                .map(|a| (*a).to_string())
                .chain(self.claims.iter().cloned())
                .map(|a| {
                    let v = string(&Self::attribute(held.requester, &a));
                    (a, v)
                }),
        );
        let Ok(requester) = requester else {
            return Decision::deny(Vec::new());
        };
        let context = vec![
            ("requester".to_string(), requester),
            ("method".to_string(), string(held.method)),
        ];
        let target = Target {
            endpoint: held.endpoint,
            action: action_of(held.method),
            name: held.target,
        };
        let Some((response, _)) =
            self.evaluate(approver, schema::APPROVE, &target, held.arguments, context)
        else {
            return Decision::deny(Vec::new());
        };
        let reasons = response
            .diagnostics()
            .reason()
            .map(ToString::to_string)
            .collect();
        match response.decision() {
            CedarDecision::Allow => Decision {
                verdict: Verdict::Allow,
                policies: reasons,
                min_approvals: 0,
            },
            CedarDecision::Deny => Decision::deny(reasons),
        }
    }

    /// Evaluates `action` by `principal` on `target` with the given context (to which the
    /// arguments and the time are added). `None` when the request cannot be built.
    fn evaluate(
        &self,
        principal: &Principal,
        action: &'static str,
        target: &Target<'_>,
        arguments: Option<&Value>,
        mut context: Vec<(String, RestrictedExpression)>,
    ) -> Option<(cedar_policy::Response, Arc<Policies>)> {
        let endpoint_uid = uid("Endpoint", target.endpoint);
        let endpoint = Entity::new(
            endpoint_uid.clone(),
            [("name".to_string(), string(target.endpoint))]
                .into_iter()
                .collect(),
            Default::default(),
        )
        .ok()?;
        let name = target.name.unwrap_or("");
        let resource = schema::ACTIONS
            .iter()
            .find(|(a, _)| *a == target.action)
            .map(|(_, r)| *r)
            .filter(|r| *r != "Endpoint")
            .map(|kind| {
                let key = if kind == "Resource" { "uri" } else { "name" };
                let r_uid = uid(kind, &format!("{}/{name}", target.endpoint));
                let entity = Entity::new(
                    r_uid.clone(),
                    [
                        (key.to_string(), string(name)),
                        ("endpoint".to_string(), string(target.endpoint)),
                    ]
                    .into_iter()
                    .collect(),
                    [endpoint_uid.clone()].into_iter().collect(),
                );
                (r_uid, entity)
            });
        let args_uid = uid("Arguments", "call");
        let tags: Vec<(String, RestrictedExpression)> = arguments
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .map(|(k, v)| {
                        let text = match v {
                            Value::String(s) => s.clone(),
                            other => other.to_string(),
                        };
                        (k.clone(), RestrictedExpression::new_string(text))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let arguments_entity = Entity::new_with_tags(args_uid.clone(), [], [], tags).ok()?;
        let principal_entity = self.principal_entity(principal)?;
        let principal_uid = principal_entity.uid();
        let mut entities = vec![principal_entity, endpoint, arguments_entity];
        let resource_uid = match resource {
            Some((r_uid, entity)) => {
                entities.push(entity.ok()?);
                r_uid
            }
            None => endpoint_uid,
        };
        entities.extend(self.action_entities.iter().cloned());
        let entities = Entities::from_entities(entities, None).ok()?;
        context.extend([
            (
                "arguments".to_string(),
                RestrictedExpression::new_entity_uid(args_uid),
            ),
            (
                "arguments_json".to_string(),
                string(
                    &arguments
                        .map(Value::to_string)
                        .unwrap_or_else(|| "{}".into()),
                ),
            ),
            (
                "time".to_string(),
                RestrictedExpression::new_long(unix_now()),
            ),
        ]);
        let context = Context::from_pairs(context).ok()?;
        let request = Request::new(
            principal_uid,
            uid("Action", action),
            resource_uid,
            context,
            None,
        )
        .ok()?;
        let policies = self.current();
        let values = policies
            .slicer
            .attributes()
            .iter()
            .map(|a| Self::attribute(principal, a))
            .collect();
        let slice = policies.slicer.slice(action, values);
        let response = self.authorizer.is_authorized(&request, &slice, &entities);
        for e in response.diagnostics().errors() {
            tracing::debug!(
                endpoint = target.endpoint,
                action,
                "policy evaluation error: {e}"
            );
        }
        Some((response, policies))
    }
}

/// What a request acts on: the endpoint, and the tool, resource or prompt the action names.
struct Target<'a> {
    endpoint: &'a str,
    /// The action whose resource type the target is (`tools/call`: a `Tool`).
    action: &'static str,
    name: Option<&'a str>,
}

/// A call held for approval, as the `approve` action sees it.
pub struct Held<'a> {
    pub requester: &'a Principal,
    pub endpoint: &'a str,
    pub method: &'a str,
    pub target: Option<&'a str>,
    pub arguments: Option<&'a Value>,
}

/// Reads the policy files (and the built-in text).
fn read_sources(
    files: &[PathBuf],
    builtin: Option<&'static str>,
) -> Result<Vec<Source>, PolicyErrors> {
    let mut sources = Vec::new();
    let mut errors = Vec::new();
    if let Some(text) = builtin {
        sources.push(Source {
            name: "<embedded demo policy>".into(),
            text: text.to_string(),
        });
    }
    for f in files {
        let name = f.display().to_string();
        match std::fs::read_to_string(f) {
            Ok(text) => sources.push(Source { name, text }),
            Err(e) => errors.push(PolicyError {
                file: name,
                position: None,
                message: format!("cannot read the policy file: {e}"),
            }),
        }
    }
    if errors.is_empty() {
        Ok(sources)
    } else {
        Err(PolicyErrors(errors))
    }
}
