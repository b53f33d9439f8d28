//! `Action::"audit"`: may a principal read an endpoint's entries through the explorer?

use cedar_policy::Decision as CedarDecision;

use super::{Engine, Target, schema};
use crate::identity::Principal;

impl Engine {
    /// May `reader` read the entries of `endpoint` through the explorer? Only permits that
    /// name `Action::"audit"` grant it; any applying forbid refuses it.
    pub fn may_audit(&self, reader: &Principal, endpoint: &str) -> bool {
        let target = Target {
            endpoint,
            action: schema::AUDIT,
            name: None,
        };
        self.evaluate(reader, schema::AUDIT, &target, None, Vec::new())
            .is_some_and(|(response, _)| response.decision() == CedarDecision::Allow)
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{AuthConfig, PolicyConfig};
    use crate::identity::Principal;
    use crate::policy::Engine;

    fn engine(text: &str) -> std::sync::Arc<Engine> {
        let policy = PolicyConfig {
            files: Vec::new(),
            builtin: Some(Box::leak(text.to_string().into_boxed_str())),
            watch: false,
        };
        Engine::new(&policy, &AuthConfig::anonymous())
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap()
    }

    #[test]
    fn auditing_is_granted_only_by_permits_that_name_it_per_endpoint() {
        let who = |n: &str| Principal::static_token(n);
        let e = engine("permit(principal, action, resource);\n");
        assert!(
            !e.may_audit(&who("alice"), "prod"),
            "permit-all makes no auditor"
        );
        let e = engine(
            "permit(principal, action == Action::\"audit\", resource == Endpoint::\"prod\")\n\
             when { principal.name == \"alice\" };\n\
             forbid(principal, action, resource) when { principal.name == \"mallory\" };\n\
             permit(principal, action == Action::\"audit\", resource) when { principal.name == \"mallory\" };\n",
        );
        assert!(e.may_audit(&who("alice"), "prod"));
        assert!(!e.may_audit(&who("alice"), "staging"));
        assert!(!e.may_audit(&who("bob"), "prod"));
        assert!(!e.may_audit(&who("mallory"), "prod"), "a forbid wins");
    }
}
