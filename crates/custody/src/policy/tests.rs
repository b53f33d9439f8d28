//! Tests of the engine: deciding calls and approvals.

use super::*;

fn engine(text: &str) -> Arc<Engine> {
    let policy = PolicyConfig {
        files: Vec::new(),
        builtin: Some(Box::leak(text.to_string().into_boxed_str())),
        watch: false,
    };
    Engine::new(&policy, &AuthConfig::anonymous())
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap()
}

fn may_approve(engine: &Engine, approver: &str, environment: &str) -> bool {
    let requester = Principal::static_token("ci");
    let arguments = json!({ "environment": environment });
    engine
        .decide_approve(
            &Principal::static_token(approver),
            &Held {
                requester: &requester,
                endpoint: "prod",
                method: "tools/call",
                target: Some("deploy"),
                arguments: Some(&arguments),
            },
        )
        .verdict
        == Verdict::Allow
}

#[test]
fn approving_is_granted_only_by_permits_that_name_it() {
    let e = engine("permit(principal, action, resource);\n");
    assert!(
        !may_approve(&e, "alice", "prod"),
        "permit-all grants no approvals"
    );
    let e = engine(
        "permit(principal, action, resource);\n\
         permit(principal, action == Action::\"approve\", resource in Endpoint::\"prod\")\n\
         when { principal.name == \"alice\" && context.requester.name == \"ci\" &&\n\
                context.arguments.hasTag(\"environment\") && context.arguments.getTag(\"environment\") == \"prod\" };\n",
    );
    assert!(may_approve(&e, "alice", "prod"));
    assert!(!may_approve(&e, "bob", "prod"));
    assert!(!may_approve(&e, "alice", "staging"));
    let e = engine(
        "permit(principal, action == Action::\"approve\", resource);\n\
         forbid(principal, action, resource) when { principal.name == \"mallory\" };\n",
    );
    assert!(may_approve(&e, "alice", "prod"));
    assert!(
        !may_approve(&e, "mallory", "prod"),
        "a forbid of everything applies"
    );
}

#[test]
fn a_policy_can_keep_the_person_who_started_a_run_from_approving_it() {
    let e = engine(
        "permit(principal, action == Action::\"approve\", resource);\n\
         forbid(principal, action == Action::\"approve\", resource)\n\
         when { context.requester.actor == principal.name };\n",
    );
    let mut claims = serde_json::Map::new();
    claims.insert("actor".into(), json!("octocat"));
    let run = Principal::oidc(
        "https://token.actions.githubusercontent.com",
        "repo:acme/api:ref:refs/heads/main".into(),
        "acme/api@refs/heads/main".into(),
        claims,
        &[],
    );
    let held = Held {
        requester: &run,
        endpoint: "prod",
        method: "tools/call",
        target: Some("deploy"),
        arguments: None,
    };
    let verdict = |who: &str| {
        e.decide_approve(&Principal::static_token(who), &held)
            .verdict
    };
    assert_eq!(verdict("octocat"), Verdict::Deny);
    assert_eq!(verdict("hubot"), Verdict::Allow);
}

#[test]
fn needs_approval_carries_the_largest_min_approvals() {
    let e = engine(
        "@approval(\"required\")\npermit(principal, action, resource);\n\
         @approval(\"required\")\n@min_approvals(\"3\")\npermit(principal, action == Action::\"tools/call\", resource);\n",
    );
    let d = e.decide(&Call {
        principal: &Principal::static_token("ci"),
        endpoint: "prod",
        method: "tools/call",
        target: Some("deploy"),
        arguments: None,
        protocol_version: "2025-11-25",
        client_address: "127.0.0.1:1",
    });
    assert_eq!((d.verdict, d.min_approvals), (Verdict::NeedsApproval, 3));
    assert_eq!(d.policies.len(), 2);
}
