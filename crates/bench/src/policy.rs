//! `custody-bench policy`: the cost of one authorization decision with many policies loaded.
//!
//! The policies are what a platform team with many repositories writes: per-repository tool
//! sets on shared endpoints, main-branch-only deploys, environment-gated tools, forbids on
//! arguments, and approval for destructive tools.

use std::time::Instant;

use custody::config::Config;
use custody::identity::Principal;
use custody::policy::{Call, Engine, Verdict};
use serde_json::json;

use crate::load::percentile;
use crate::relay::us;

fn policies(n: usize) -> String {
    let mut text = String::from(
        "permit(principal, action in [Action::\"other\", Action::\"list\"], resource) when { principal.repository_owner == \"acme\" };\n\
         forbid(principal, action == Action::\"tools/call\", resource) when { context.arguments.hasTag(\"env\") && context.arguments.getTag(\"env\") == \"prod\" && principal.ref != \"refs/heads/main\" };\n\
         @approval(\"required\") permit(principal, action == Action::\"tools/call\", resource) when { resource.name == \"drop_database\" };\n",
    );
    for i in 0..n.saturating_sub(3) {
        let endpoint = ["deploy", "data", "tickets", "search"][i % 4];
        let policy = match i % 3 {
            0 => format!(
                "permit(principal, action == Action::\"tools/call\", resource in Endpoint::\"{endpoint}\") when {{ principal.repository == \"acme/repo-{i}\" && [\"build\", \"test\", \"lint\"].contains(resource.name) }};\n"
            ),
            1 => format!(
                "permit(principal, action == Action::\"tools/call\", resource in Endpoint::\"{endpoint}\") when {{ principal.repository == \"acme/repo-{i}\" && principal.ref == \"refs/heads/main\" && resource.name == \"deploy\" }};\n"
            ),
            _ => format!(
                "permit(principal, action == Action::\"tools/call\", resource in Endpoint::\"{endpoint}\") when {{ principal.repository == \"acme/repo-{i}\" && principal.environment == \"production\" }};\n"
            ),
        };
        text.push_str(&policy);
    }
    text
}

pub fn run(count: usize, calls: usize) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("bench.cedar");
    std::fs::write(&file, policies(count))?;
    let text = format!(
        "[[auth.oidc]]\npreset = \"github-actions\"\naudiences = [\"custody\"]\n[policy]\nfiles = [\"{}\"]\n[endpoints.deploy.upstream]\ntransport = \"stdio\"\ncommand = \"true\"\n",
        file.display()
    );
    let config = Config::parse(&text, "bench.toml")?;
    let started = Instant::now();
    let engine = Engine::new(&config.policy, &config.auth)
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .ok_or_else(|| anyhow::anyhow!("no policy"))?;
    let load = started.elapsed();
    // A repository whose policy grants build/test/lint on the deploy endpoint (i % 12 == 0).
    let repo = format!("acme/repo-{}", (count / 2) / 12 * 12);
    let claims = json!({
        "repository": repo, "repository_owner": "acme", "ref": "refs/heads/main",
        "environment": "production", "sha": "5d8f", "run_id": "1", "run_attempt": "1",
        "actor": "octocat", "event_name": "push",
        "workflow_ref": format!("{repo}/.github/workflows/ci.yml@refs/heads/main"),
        "job_workflow_ref": format!("{repo}/.github/workflows/ci.yml@refs/heads/main"),
    });
    let principal = Principal::oidc(
        "https://token.actions.githubusercontent.com",
        format!("repo:{repo}:ref:refs/heads/main"),
        format!("{repo}@refs/heads/main"),
        claims.as_object().cloned().unwrap_or_default(),
        &[],
    );
    let args = json!({"target": "staging", "dry_run": true});
    let call = Call {
        principal: &principal,
        endpoint: "deploy",
        method: "tools/call",
        target: Some("build"),
        arguments: Some(&args),
        protocol_version: "2025-11-25",
        client_address: "127.0.0.1:50000",
    };
    let first = engine.decide(&call);
    anyhow::ensure!(
        first.verdict == Verdict::Allow,
        "the benchmark call should be allowed: {first:?}"
    );
    for _ in 0..200 {
        engine.decide(&call);
    }
    let mut times = Vec::with_capacity(calls);
    for _ in 0..calls {
        let t = Instant::now();
        let d = engine.decide(&call);
        times.push(t.elapsed());
        std::hint::black_box(d);
    }
    times.sort_unstable();
    let deny_call = Call {
        target: Some("rm_rf"),
        ..call
    };
    let mut deny_times = Vec::with_capacity(calls);
    for _ in 0..calls {
        let t = Instant::now();
        std::hint::black_box(engine.decide(&deny_call));
        deny_times.push(t.elapsed());
    }
    deny_times.sort_unstable();
    println!("custody policy benchmark: one authorization decision with {count} policies loaded");
    println!(
        "command: cargo run --release -p custody-bench -- policy --policies {count} --calls {calls}"
    );
    println!("  load and validate: {:.0} ms", load.as_secs_f64() * 1e3);
    println!(
        "  allowed tools/call: p50 {}  p99 {}",
        us(percentile(&times, 0.5)),
        us(percentile(&times, 0.99))
    );
    println!(
        "  denied tools/call:  p50 {}  p99 {}",
        us(percentile(&deny_times, 0.5)),
        us(percentile(&deny_times, 0.99))
    );
    Ok(())
}
