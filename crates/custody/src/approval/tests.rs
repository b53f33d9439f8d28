use super::*;

fn granted(requester: &Arc<Principal>, arguments: &Value, expires_ns: u64) -> Pending {
    let (resolved, _) = watch::channel(None);
    let state = State::Granted { votes: Vec::new() };
    Pending {
        id: "a1".into(),
        requester: requester.clone(),
        endpoint: "prod".into(),
        session: None,
        rpc_id: Some("7".into()),
        method: "tools/call".into(),
        target: Some("deploy".into()),
        masked_arguments: arguments.clone(),
        masked_hidden: 0,
        show: ShowArguments::AsSent,
        held: Mutex::new(Some(HeldArguments {
            arguments: Some(arguments.clone()),
            scrubbed: None,
            credentials_hidden: 0,
        })),
        digest: digest(Some(arguments)),
        requested_ns: now_ns(),
        expires_ns,
        min_approvals: 1,
        policies: Vec::new(),
        request_entry: 3,
        state: tokio::sync::Mutex::new(state.clone()),
        snapshot: Mutex::new(state),
        resolved,
    }
}

#[test]
fn a_grant_releases_exactly_the_call_it_was_given_for() {
    let ci = Arc::new(Principal::static_token("ci"));
    let args = json!({"env": "prod", "version": "1.2.3"});
    let p = granted(&ci, &args, now_ns() + 60_000_000_000);
    assert!(p.releases(&ci, "prod", "tools/call", Some("deploy"), Some(&args)));
    let other_args = json!({"env": "prod", "version": "1.2.4"});
    assert!(!p.releases(&ci, "prod", "tools/call", Some("deploy"), Some(&other_args)));
    assert!(!p.releases(&ci, "prod", "tools/call", Some("deploy"), None));
    let someone = Principal::static_token("other-job");
    assert!(!p.releases(&someone, "prod", "tools/call", Some("deploy"), Some(&args)));
    assert!(!p.releases(&ci, "staging", "tools/call", Some("deploy"), Some(&args)));
    assert!(!p.releases(&ci, "prod", "tools/call", Some("rollback"), Some(&args)));
    assert!(!p.releases(&ci, "prod", "prompts/get", Some("deploy"), Some(&args)));
    let expired = granted(&ci, &args, now_ns() - 1);
    assert!(!expired.releases(&ci, "prod", "tools/call", Some("deploy"), Some(&args)));
    let waiting = granted(&ci, &args, now_ns() + 60_000_000_000);
    waiting.set(
        &mut waiting.state.try_lock().unwrap(),
        State::Pending { votes: Vec::new() },
    );
    assert!(!waiting.releases(&ci, "prod", "tools/call", Some("deploy"), Some(&args)));
}

#[test]
fn the_digest_ignores_key_order_and_whitespace_but_not_values() {
    let a = json!({"env": "prod", "replicas": 3, "tags": ["a", {"y": 1, "x": 2}]});
    let b: Value = serde_json::from_str(
        r#"{ "tags": ["a", {"x": 2, "y": 1}], "replicas": 3, "env": "prod" }"#,
    )
    .unwrap();
    assert_eq!(digest(Some(&a)), digest(Some(&b)));
    let c = json!({"env": "staging", "replicas": 3, "tags": ["a", {"y": 1, "x": 2}]});
    assert_ne!(digest(Some(&a)), digest(Some(&c)));
    assert_eq!(digest(None), digest(Some(&json!({}))));
    // The SHA-256 of the two bytes `{}`.
    assert_eq!(
        digest(None),
        "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
    );
}
