//! What policy decides for the relay: whether a call may go on, which items of a list answer
//! the caller may see, and the refusal a denied call gets.

use super::*;

impl Relay {
    /// What policy says about a client request; `None` without policies or for a message
    /// that is not a request.
    pub(super) fn authorize(
        &self,
        ep: &Endpoint,
        caller: &Caller,
        msg: &Message,
        version: &str,
    ) -> Option<Decision> {
        let engine = self.policy.as_ref()?;
        if !msg.is_request() {
            return None;
        }
        let method = msg.method()?;
        let arguments = match method {
            "tools/call" | "prompts/get" => msg.params().and_then(|p| p.get("arguments")),
            _ => None,
        };
        let mut span = crate::telemetry::child("policy");
        let decision = engine.decide(&Call {
            principal: &caller.principal,
            endpoint: &ep.name,
            method,
            target: msg.target_name(),
            arguments,
            protocol_version: version,
            client_address: &caller.address,
        });
        ep.metrics.decision(match decision.verdict {
            Verdict::Allow => 0,
            Verdict::Deny => 1,
            Verdict::NeedsApproval => 2,
        });
        if let Some(s) = &mut span {
            s.set(
                "custody.policy.decision",
                match decision.verdict {
                    Verdict::Allow => "allow",
                    Verdict::Deny => "deny",
                    Verdict::NeedsApproval => "approval",
                },
            );
            s.set("custody.policy.ids", decision.policies.join(","));
        }
        Some(decision)
    }

    /// The list filter for the list requests among `messages`, when policies are configured.
    pub(super) fn list_filter(
        &self,
        caller: &Caller,
        messages: &[&Message],
        version: &str,
    ) -> Option<ListFilter> {
        let engine = self.policy.as_ref()?;
        let requests: Vec<(Value, &'static str)> = messages
            .iter()
            .filter_map(|m| {
                let method = policy::LIST_METHODS
                    .into_iter()
                    .find(|x| Some(*x) == m.method())?;
                Some((m.id()?.clone(), method))
            })
            .collect();
        if requests.is_empty() {
            return None;
        }
        Some(ListFilter {
            engine: engine.clone(),
            principal: caller.principal.clone(),
            address: caller.address.clone(),
            version: version.to_string(),
            requests,
        })
    }

    /// Refuses a request policy did not allow, recording the decision.
    pub(super) async fn deny(
        &self,
        ep: &Arc<Endpoint>,
        caller: &Caller,
        msg: &Message,
        decision: &Decision,
        session: Option<&Session>,
        why: &'static str,
    ) -> Outcome {
        let action = policy::action_of(msg.method().unwrap_or(""));
        let target = msg.target_name().map(str::to_string);
        let endpoint = ep.name.to_string();
        let policies = decision.policies.clone();
        let error = if decision.verdict == Verdict::NeedsApproval {
            RelayError::ApprovalRequired {
                action,
                target,
                endpoint,
                policies,
                why,
            }
        } else {
            RelayError::Denied {
                action,
                target,
                endpoint,
                policies,
            }
        };
        tracing::info!(endpoint = %ep.name, caller = %caller.principal.name, "{error}");
        let id = msg.id().cloned();
        let scope = self.scope(ep, session.map(|s| s.id.clone()), &caller.principal);
        let error = match scope
            .refusal_with(
                Some(msg),
                None,
                &error,
                id.as_ref(),
                Some(decision.to_json()),
            )
            .await
        {
            Ok(_) => error,
            Err(audit) => audit,
        };
        Outcome::Error {
            error,
            id,
            session: session.map(|s| s.token.clone()),
        }
    }
}
