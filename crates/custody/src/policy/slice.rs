//! Policy slicing: evaluating only the policies that can apply to a request.
//!
//! Cedar evaluates every policy of the set it is given, so a thousand per-repository policies
//! cost a thousand evaluations per call. A policy cannot apply when its action scope excludes
//! the request's action, or when its `when` clause requires, at the top level of an `&&` chain,
//! `principal.ATTR == "literal"` and the principal's ATTR is something else (the clause is then
//! false whatever else it says). Removing exactly those policies changes no decision.
//!
//! The slice for an action and a principal's values of the indexed attributes is built once
//! and kept (bounded), so a CI job's calls evaluate a handful of policies.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use cedar_policy::{ActionConstraint, Policy, PolicySet};
use serde_json::Value;

use super::schema;

/// At most this many slices are kept; past it the cache starts over.
const MAX_SLICES: usize = 4096;

/// What a policy requires of a request, as far as slicing can tell.
struct Needs {
    /// The actions it can apply to; `None`: any.
    actions: Option<BTreeSet<&'static str>>,
    /// `principal.ATTR == "literal"` conjuncts of its `when` clauses.
    equalities: Vec<(String, String)>,
}

/// The concrete actions an action name stands for (the `list` group for the list actions).
fn expand(name: &str) -> Vec<&'static str> {
    if name == "list" {
        return schema::ACTIONS
            .iter()
            .filter(|(_, r)| *r == "Endpoint")
            .map(|(a, _)| *a)
            .collect();
    }
    schema::ACTIONS
        .iter()
        .map(|(a, _)| *a)
        .chain([schema::OTHER, schema::APPROVE, schema::AUDIT])
        .filter(|a| *a == name)
        .collect()
}

fn needs(policy: &Policy) -> Needs {
    let actions = match policy.action_constraint() {
        ActionConstraint::Any => None,
        ActionConstraint::Eq(uid) => Some(expand(uid.id().unescaped()).into_iter().collect()),
        ActionConstraint::In(uids) => Some(
            uids.iter()
                .flat_map(|u| expand(u.id().unescaped()))
                .collect(),
        ),
    };
    let mut equalities = Vec::new();
    if let Ok(est) = policy.to_json()
        && let Some(conditions) = est.get("conditions").and_then(Value::as_array)
    {
        for c in conditions {
            if c.get("kind").and_then(Value::as_str) == Some("when")
                && let Some(body) = c.get("body")
            {
                conjuncts(body, &mut equalities);
            }
        }
    }
    Needs {
        actions,
        equalities,
    }
}

/// Collects `principal.ATTR == "literal"` from the top-level `&&` chain of `expr`.
fn conjuncts(expr: &Value, out: &mut Vec<(String, String)>) {
    if let Some(and) = expr.get("&&") {
        if let (Some(l), Some(r)) = (and.get("left"), and.get("right")) {
            conjuncts(l, out);
            conjuncts(r, out);
        }
        return;
    }
    let Some(eq) = expr.get("==") else {
        return;
    };
    let (Some(l), Some(r)) = (eq.get("left"), eq.get("right")) else {
        return;
    };
    let attr_of = |e: &Value| -> Option<String> {
        let dot = e.get(".")?;
        (dot.get("left")?.get("Var")?.as_str()? == "principal")
            .then(|| dot.get("attr")?.as_str().map(str::to_string))?
    };
    let literal = |e: &Value| e.get("Value")?.as_str().map(str::to_string);
    if let (Some(a), Some(v)) = (attr_of(l), literal(r)) {
        out.push((a, v));
    } else if let (Some(v), Some(a)) = (literal(l), attr_of(r)) {
        out.push((a, v));
    }
}

/// A slice's key: the action and the principal's values of the indexed attributes.
type SliceKey = (&'static str, Vec<String>);

/// The index over a policy set.
pub struct Slicer {
    /// Every policy, with what it needs.
    policies: Vec<(Policy, Needs)>,
    /// The attributes some policy requires equal to a literal.
    attributes: Vec<String>,
    slices: Mutex<HashMap<SliceKey, Arc<PolicySet>>>,
}

impl Slicer {
    pub fn new(set: &PolicySet) -> Self {
        let policies: Vec<(Policy, Needs)> =
            set.policies().map(|p| (p.clone(), needs(p))).collect();
        let attributes: BTreeSet<String> = policies
            .iter()
            .flat_map(|(_, n)| n.equalities.iter().map(|(a, _)| a.clone()))
            .collect();
        Self {
            policies,
            attributes: attributes.into_iter().collect(),
            slices: Mutex::new(HashMap::new()),
        }
    }

    /// The attributes whose values select a slice.
    pub fn attributes(&self) -> &[String] {
        &self.attributes
    }

    /// The policies that can apply to `action` for a principal whose indexed attributes have
    /// `values` (in the order of [`Slicer::attributes`]; `None` for an attribute it lacks).
    pub fn slice(&self, action: &'static str, values: Vec<String>) -> Arc<PolicySet> {
        let key = (action, values);
        if let Some(s) = self
            .slices
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
        {
            return s.clone();
        }
        let value_of = |attr: &str| {
            self.attributes
                .iter()
                .position(|a| a == attr)
                .map(|i| key.1[i].as_str())
        };
        let mut set = PolicySet::new();
        for (policy, needs) in &self.policies {
            if needs.actions.as_ref().is_some_and(|a| !a.contains(action)) {
                continue;
            }
            // Approving is granted only by a permit that names the action; a forbid of every
            // action still applies.
            if (action == schema::APPROVE || action == schema::AUDIT)
                && needs.actions.is_none()
                && policy.effect() == cedar_policy::Effect::Permit
            {
                continue;
            }
            if needs
                .equalities
                .iter()
                .any(|(attr, lit)| value_of(attr).is_some_and(|v| v != lit))
            {
                continue;
            }
            // Ids are unique in the source set, so adding cannot fail.
            let _ = set.add(policy.clone());
        }
        let set = Arc::new(set);
        let mut slices = self.slices.lock().unwrap_or_else(PoisonError::into_inner);
        if slices.len() >= MAX_SLICES {
            slices.clear();
        }
        slices.insert(key, set.clone());
        set
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equalities_and_actions_are_found() {
        let set: PolicySet = r#"
            permit(principal, action == Action::"tools/call", resource)
            when { principal.repository == "acme/api" && ("refs/heads/main" == principal.ref && context.time > 0) };
            permit(principal, action in [Action::"list", Action::"other"], resource)
            when { principal.repository == "acme/api" || principal.actor == "x" };
            forbid(principal, action, resource) unless { principal.repository == "acme/api" };
        "#
        .parse()
        .unwrap();
        let s = Slicer::new(&set);
        let n: Vec<&Needs> = s.policies.iter().map(|(_, n)| n).collect();
        assert_eq!(
            n[0].equalities,
            [
                ("repository".into(), "acme/api".into()),
                ("ref".into(), "refs/heads/main".into())
            ]
        );
        assert_eq!(n[0].actions.as_ref().unwrap().len(), 1);
        assert!(n[1].equalities.is_empty(), "a disjunction requires nothing");
        assert_eq!(n[1].actions.as_ref().unwrap().len(), 5);
        assert!(
            n[2].equalities.is_empty() && n[2].actions.is_none(),
            "unless is not indexed"
        );
        assert_eq!(s.attributes(), ["ref", "repository"]);

        let api = s.slice(
            "tools/call",
            vec!["refs/heads/main".into(), "acme/api".into()],
        );
        assert_eq!(api.num_of_policies(), 2);
        let other = s.slice(
            "tools/call",
            vec!["refs/heads/main".into(), "acme/web".into()],
        );
        assert_eq!(other.num_of_policies(), 1, "only the forbid can apply");
        let list = s.slice(
            "tools/list",
            vec!["refs/heads/dev".into(), "acme/web".into()],
        );
        assert_eq!(list.num_of_policies(), 2);
    }
}
