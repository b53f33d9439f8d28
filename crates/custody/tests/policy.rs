//! Access policy end to end: a gateway with GitHub Actions and GitLab issuers (the project's
//! test issuer), Cedar policies over the demo server's tools, resources and prompts, and real
//! calls. Each case checks the answer the client gets and the decision in the audit log.

mod common;

use std::time::Duration;

use common::*;
use custody_test_issuer::TestIssuer;
use serde_json::{Value, json};
use tlog::entry::Kind;

const POLICIES: &str = r#"
// Every acme repository and the platform group may connect and list.
@id("connect-github")
permit(principal, action in [Action::"other", Action::"list"], resource)
when { principal.repository_owner == "acme" };

@id("connect-gitlab")
permit(principal, action in [Action::"other", Action::"list"], resource)
when { principal.namespace_path == "platform" };

// acme/api may echo and add; deploys only from main, only to staging without approval.
@id("api-tools")
permit(principal, action == Action::"tools/call", resource in Endpoint::"demo")
when { principal.repository == "acme/api" && ["echo", "add"].contains(resource.name) };

@id("api-deploy-main")
permit(principal, action == Action::"tools/call", resource in Endpoint::"demo")
when {
  principal.repository == "acme/api" && principal.ref == "refs/heads/main" &&
  resource.name == "deploy"
};

@id("production-needs-approval")
@approval("required")
permit(principal, action == Action::"tools/call", resource)
when {
  resource.name == "deploy" && context.arguments.hasTag("environment") &&
  context.arguments.getTag("environment") == "production"
};

// No one echoes secrets, whatever else permits it.
@id("no-secret-echo")
forbid(principal, action == Action::"tools/call", resource)
when { resource.name == "echo" && context.arguments_json like "*password*" };

// GitLab's platform/infra project reads the readme and gets prompts.
@id("infra-read")
permit(principal, action in [Action::"resources/read", Action::"prompts/get"], resource)
when { principal.project_path == "platform/infra" };
"#;

struct Setup {
    gw: Gateway,
    github: TestIssuer,
    gitlab: TestIssuer,
    policy_file: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

async fn setup(policies: &str) -> Setup {
    let github = TestIssuer::start().await;
    let gitlab = TestIssuer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let policy_file = dir.path().join("ci.cedar");
    std::fs::write(&policy_file, policies).unwrap();
    let gw = Gateway::start(
        "",
        &format!(
            "[[auth.oidc]]\npreset = \"github-actions\"\nissuer = \"{}\"\naudiences = [\"custody\"]\n\
             [[auth.oidc]]\npreset = \"gitlab\"\nissuer = \"{}\"\naudiences = [\"custody\"]\n\
             [policy]\nfiles = [\"{}\"]\n\
             [approvals]\ntimeout = \"1s\"\n\
             [endpoints.demo.upstream]\ntransport = \"stdio\"\ncommand = \"{}\"\nargs = [\"demo-server\"]\n",
            github.url,
            gitlab.url,
            policy_file.display(),
            custody_bin()
        ),
    )
    .await;
    Setup {
        gw,
        github,
        gitlab,
        policy_file,
        _dir: dir,
    }
}

fn github_token(s: &Setup, repository: &str, git_ref: &str) -> String {
    let owner = repository.split('/').next().unwrap();
    let claims = s.github.claims(
        &format!("repo:{repository}:ref:{git_ref}"),
        &json!({
            "repository": repository, "repository_owner": owner, "ref": git_ref,
            "sha": "5d8f1e2a", "run_id": "42", "run_attempt": "1", "actor": "octocat",
            "event_name": "push", "environment": "ci",
            "workflow_ref": format!("{repository}/.github/workflows/ci.yml@{git_ref}"),
            "job_workflow_ref": format!("{repository}/.github/workflows/ci.yml@{git_ref}"),
        }),
    );
    s.github.token("rsa-1", &claims)
}

fn gitlab_token(s: &Setup, project: &str) -> String {
    let namespace = project.split('/').next().unwrap();
    let claims = s.gitlab.claims(
        &format!("project_path:{project}:ref_type:branch:ref:main"),
        &json!({
            "namespace_path": namespace, "project_path": project, "project_id": "7",
            "pipeline_id": "1001", "pipeline_source": "push", "job_id": "5005",
            "ref": "main", "ref_type": "branch", "ref_protected": "true", "sha": "abc",
            "user_login": "ops", "environment": "production",
        }),
    );
    s.gitlab.token("rsa-1", &claims)
}

/// A stateless call (every request is decided on its own).
async fn call(s: &Setup, token: &str, method: &str, params: Value) -> Answer {
    let c = s.gw.client("demo").stateless().with_token(token);
    c.call(method, params).await
}

#[derive(Debug)]
enum Want {
    Allow,
    Deny(&'static [&'static str]),
    Approval(&'static [&'static str]),
}

#[tokio::test]
async fn each_action_and_principal_is_decided_by_the_policies() {
    let s = setup(POLICIES).await;
    let api_main = github_token(&s, "acme/api", "refs/heads/main");
    let api_dev = github_token(&s, "acme/api", "refs/heads/dev");
    let web = github_token(&s, "acme/web", "refs/heads/main");
    let stranger = github_token(&s, "evil/fork", "refs/heads/main");
    let infra = gitlab_token(&s, "platform/infra");
    let other_project = gitlab_token(&s, "platform/web");

    let tool = |name: &str, args: Value| json!({"name": name, "arguments": args});
    let cases: Vec<(&str, &str, &str, Value, Want)> = vec![
        (
            "api echoes",
            &api_main,
            "tools/call",
            tool("echo", json!({"text": "hi"})),
            Want::Allow,
        ),
        (
            "api adds",
            &api_dev,
            "tools/call",
            tool("add", json!({"a": 1, "b": 2})),
            Want::Allow,
        ),
        (
            "api may not sha256",
            &api_main,
            "tools/call",
            tool("sha256", json!({"text": "x"})),
            Want::Deny(&[]),
        ),
        (
            "web may not echo",
            &web,
            "tools/call",
            tool("echo", json!({"text": "hi"})),
            Want::Deny(&[]),
        ),
        (
            "deploy from main to staging",
            &api_main,
            "tools/call",
            tool(
                "deploy",
                json!({"service": "api", "version": "1.2.3", "environment": "staging"}),
            ),
            Want::Allow,
        ),
        (
            "deploy from a branch",
            &api_dev,
            "tools/call",
            tool(
                "deploy",
                json!({"service": "api", "version": "1.2.3", "environment": "staging"}),
            ),
            Want::Deny(&[]),
        ),
        (
            "deploy to production needs approval",
            &api_main,
            "tools/call",
            tool(
                "deploy",
                json!({"service": "api", "version": "1.2.3", "environment": "production"}),
            ),
            Want::Approval(&["production-needs-approval"]),
        ),
        (
            "forbid overrides permit",
            &api_main,
            "tools/call",
            tool("echo", json!({"text": "my password is hunter2"})),
            Want::Deny(&["no-secret-echo"]),
        ),
        ("github list", &web, "tools/list", json!({}), Want::Allow),
        (
            "stranger may not list",
            &stranger,
            "tools/list",
            json!({}),
            Want::Deny(&[]),
        ),
        (
            "stranger may not ping",
            &stranger,
            "ping",
            json!({}),
            Want::Deny(&[]),
        ),
        (
            "stranger may not list templates",
            &stranger,
            "resources/templates/list",
            json!({}),
            Want::Deny(&[]),
        ),
        (
            "gitlab lists resources",
            &infra,
            "resources/list",
            json!({}),
            Want::Allow,
        ),
        (
            "gitlab lists prompts",
            &other_project,
            "prompts/list",
            json!({}),
            Want::Allow,
        ),
        (
            "gitlab infra reads",
            &infra,
            "resources/read",
            json!({"uri": "demo://readme"}),
            Want::Allow,
        ),
        (
            "gitlab other project may not read",
            &other_project,
            "resources/read",
            json!({"uri": "demo://readme"}),
            Want::Deny(&[]),
        ),
        (
            "gitlab infra gets a prompt",
            &infra,
            "prompts/get",
            json!({"name": "release_notes", "arguments": {"version": "1.0"}}),
            Want::Allow,
        ),
        (
            "github may not get prompts",
            &api_main,
            "prompts/get",
            json!({"name": "release_notes", "arguments": {"version": "1.0"}}),
            Want::Deny(&[]),
        ),
        (
            "gitlab may not call tools",
            &infra,
            "tools/call",
            tool("echo", json!({"text": "hi"})),
            Want::Deny(&[]),
        ),
    ];
    for (name, token, method, params, want) in &cases {
        let a = call(&s, token, method, params.clone()).await;
        let r = a.response();
        match want {
            Want::Allow => {
                assert!(
                    r.get("result").is_some(),
                    "{name}: expected a result: {a:#?}"
                );
            }
            Want::Deny(policies) => {
                assert_eq!(r["error"]["code"], -32030, "{name}: {a:#?}");
                let msg = r["error"]["message"].as_str().unwrap();
                assert!(msg.starts_with("denied by policy: "), "{name}: {msg}");
                if policies.is_empty() {
                    assert!(msg.contains("no policy permits"), "{name}: {msg}");
                } else {
                    for p in *policies {
                        assert!(msg.contains(p), "{name}: {msg} should name {p}");
                    }
                }
                assert_eq!(r["error"]["data"]["policies"], json!(policies), "{name}");
            }
            Want::Approval(_) => {
                // Held, and with nobody to approve it here, expired (approvals.timeout = 1s).
                assert!(
                    a.is_sse(),
                    "{name}: a held call answers on a stream: {a:#?}"
                );
                assert_eq!(r["error"]["code"], -32033, "{name}: {a:#?}");
                let msg = r["error"]["message"].as_str().unwrap();
                assert!(
                    msg.starts_with("approval ") && msg.contains("expired"),
                    "{name}: {msg}"
                );
                assert!(r["error"]["data"]["approval"].is_string(), "{name}: {a:#?}");
            }
        }
    }

    // Every call's decision is in the log: allowed requests and refusals alike.
    let dir = s.gw.shutdown().await;
    let log = entries(dir.path());
    let decided: Vec<Value> = log
        .iter()
        .filter(|e| matches!(e.kind, Kind::Request | Kind::Rejected) && !e.method.is_empty())
        .map(|e| serde_json::from_str::<Value>(&e.detail).unwrap())
        .collect();
    assert_eq!(decided.len(), cases.len(), "one decided entry per call");
    for (d, (name, _, _, _, want)) in decided.iter().zip(&cases) {
        let decision = d["policy"]["decision"]
            .as_str()
            .unwrap_or_else(|| panic!("{name}: {d}"));
        let expected = match want {
            Want::Allow => "allow",
            Want::Deny(_) => "deny",
            Want::Approval(_) => "needs_approval",
        };
        assert_eq!(decision, expected, "{name}: {d}");
        if let Want::Approval(policies) = want {
            assert_eq!(d["policy"]["policies"], json!(policies), "{name}: {d}");
        }
    }
    let allowed_echo = decided
        .iter()
        .find(|d| d["policy"]["decision"] == "allow")
        .unwrap();
    assert_eq!(allowed_echo["policy"]["policies"], json!(["api-tools"]));
}

#[tokio::test]
async fn lists_show_only_what_the_principal_may_use() {
    let s = setup(POLICIES).await;
    let names = |a: &Answer, key: &str, field: &str| -> Vec<String> {
        a.response()["result"][key]
            .as_array()
            .unwrap_or_else(|| panic!("{a:#?}"))
            .iter()
            .map(|t| t[field].as_str().unwrap().to_string())
            .collect()
    };
    let api = github_token(&s, "acme/api", "refs/heads/main");
    let tools = names(
        &call(&s, &api, "tools/list", json!({})).await,
        "tools",
        "name",
    );
    assert_eq!(
        tools,
        ["echo", "add", "deploy"],
        "deploy stays: it is usable (with approval)"
    );
    let web = github_token(&s, "acme/web", "refs/heads/main");
    let tools = names(
        &call(&s, &web, "tools/list", json!({})).await,
        "tools",
        "name",
    );
    assert!(tools.is_empty(), "{tools:?}");
    let infra = gitlab_token(&s, "platform/infra");
    let resources = names(
        &call(&s, &infra, "resources/list", json!({})).await,
        "resources",
        "uri",
    );
    assert_eq!(resources, ["demo://readme"]);
    let prompts = names(
        &call(&s, &infra, "prompts/list", json!({})).await,
        "prompts",
        "name",
    );
    assert_eq!(prompts, ["release_notes"]);
    let other = gitlab_token(&s, "platform/web");
    let prompts = names(
        &call(&s, &other, "prompts/list", json!({})).await,
        "prompts",
        "name",
    );
    assert!(prompts.is_empty());

    // A session-based client sees the same filtering, and the log says what was removed.
    let mut c = s.gw.client("demo").with_token(&api);
    c.initialize().await;
    let listed = c.call("tools/list", json!({})).await;
    assert_eq!(names(&listed, "tools", "name"), ["echo", "add", "deploy"]);
    let dir = s.gw.shutdown().await;
    let log = entries(dir.path());
    let filtered: Vec<Value> = log
        .iter()
        .filter(|e| e.kind == Kind::Response && e.detail.contains("policy_filtered"))
        .map(|e| serde_json::from_str(&e.detail).unwrap())
        .collect();
    assert!(
        filtered
            .iter()
            .any(|d| d["policy_filtered"]
                == json!(["sha256", "now", "lookup_customer", "countdown"])),
        "{filtered:?}"
    );
}

#[tokio::test]
async fn policies_reload_on_sighup_and_on_change_and_bad_sets_are_refused() {
    let s = setup(POLICIES).await;
    let web = github_token(&s, "acme/web", "refs/heads/main");
    let echo = json!({"name": "echo", "arguments": {"text": "hi"}});
    assert_eq!(
        call(&s, &web, "tools/call", echo.clone()).await.response()["error"]["code"],
        -32030
    );

    // A good change takes effect (the watcher checks every second).
    let good = format!(
        "{POLICIES}\n@id(\"web-echo\")\npermit(principal, action == Action::\"tools/call\", resource)\nwhen {{ principal.repository == \"acme/web\" && resource.name == \"echo\" }};\n"
    );
    std::fs::write(&s.policy_file, &good).unwrap();
    let started = std::time::Instant::now();
    loop {
        let a = call(&s, &web, "tools/call", echo.clone()).await;
        if a.response().get("result").is_some() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the new policy never took effect"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // A bad change is refused: the set in force stays.
    std::fs::write(
        &s.policy_file,
        format!("{good}\npermit(principal, action == Action::\"tools/cal\", resource);\n"),
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(
        call(&s, &web, "tools/call", echo.clone())
            .await
            .response()
            .get("result")
            .is_some()
    );

    // SIGHUP reloads too: back to the original file.
    std::fs::write(&s.policy_file, POLICIES).unwrap();
    nix::sys::signal::raise(nix::sys::signal::Signal::SIGHUP).unwrap();
    let started = std::time::Instant::now();
    loop {
        let a = call(&s, &web, "tools/call", echo.clone()).await;
        if a.response().get("error").is_some() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "SIGHUP did not reload"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let dir = s.gw.shutdown().await;
    let log = entries(dir.path());
    let changes: Vec<Value> = log
        .iter()
        .filter(|e| e.kind == Kind::ConfigChanged)
        .map(|e| serde_json::from_str(&e.detail).unwrap())
        .collect();
    let taken: Vec<&Value> = changes
        .iter()
        .filter(|c| c["policy"]["reloaded"] == true)
        .collect();
    let refused: Vec<&Value> = changes
        .iter()
        .filter(|c| c["policy"]["reloaded"] == false)
        .collect();
    assert!(taken.len() >= 2, "{changes:#?}");
    assert_eq!(refused.len(), 1, "{changes:#?}");
    let errors = refused[0]["policy"]["errors"].as_array().unwrap();
    assert!(
        errors
            .iter()
            .any(|e| e.as_str().unwrap().contains("ci.cedar:")
                && e.as_str().unwrap().contains("tools/cal")),
        "{errors:?}"
    );
    assert_eq!(
        refused[0]["policy"]["hash"], taken[0]["policy"]["hash"],
        "the set in force stayed"
    );
    assert_ne!(
        taken[0]["policy"]["hash"],
        taken[0]["policy"]["previous_hash"]
    );
}

#[tokio::test]
async fn a_bad_policy_file_stops_the_gateway_with_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.cedar");
    std::fs::write(
        &file,
        "permit(principal, action, resource);\n\npermit(principal, action == Action::\"tools/call\", resource)\nwhen { principal.repositry == \"acme/api\" };\n@approval(\"maybe\")\npermit(principal, action, resource);\n",
    )
    .unwrap();
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n[auth]\nanonymous = true\n[policy]\nfiles = [\"{}\"]\n{}",
        dir.path().join("data").display(),
        file.display(),
        stdio_fixture("f", "")
    );
    let config = custody::config::Config::parse(&text, "t.toml").unwrap();
    let err = match custody::http::start(&config).await {
        Ok(_) => panic!("started with a bad policy"),
        Err(e) => e.to_string(),
    };
    let name = file.display().to_string();
    assert!(err.contains(&format!("{name}:4:8:")), "{err}");
    assert!(err.contains("repositry"), "{err}");
    assert!(
        err.contains(&format!(
            "{name}:5:1: @approval(\"maybe\") is not understood"
        )),
        "{err}"
    );
}
