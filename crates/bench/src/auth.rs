//! `custody-bench auth`: what authentication costs per request.
//!
//! Part one measures `Identity::authenticate` itself against the project's test issuer on
//! loopback, with the issuer's keys already fetched: a token seen before (the token cache), and
//! a fresh token every call (a full signature check) for each algorithm. Part two measures it
//! where it matters: `tools/call` round trips through a gateway, without a token (anonymous)
//! and with a CI token, alternating in batches so both see the same machine.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use custody::config::Config;
use custody::identity::Identity;
use custody_test_issuer::TestIssuer;
use http::HeaderMap;
use serde_json::json;

use crate::load::{Conn, latencies_on, percentile};
use crate::relay::{Proc, free_addr, spawn_self, us, wait_listening};

fn config(issuer: &TestIssuer, cache: usize) -> anyhow::Result<Config> {
    let text = format!(
        "[auth]\nanonymous = true\ntoken_cache_size = {cache}\n[[auth.oidc]]\npreset = \"github-actions\"\nissuer = \"{}\"\naudiences = [\"custody\"]\nalgorithms = [\"RS256\", \"ES256\", \"EdDSA\"]\n[endpoints.bench.upstream]\ntransport = \"stdio\"\ncommand = \"true\"\n",
        issuer.url
    );
    Ok(Config::parse(&text, "bench.toml")?)
}

fn github_claims(issuer: &TestIssuer, n: usize) -> serde_json::Value {
    issuer.claims(
        "repo:acme/api:ref:refs/heads/main",
        &json!({
            "repository": "acme/api", "repository_owner": "acme", "ref": "refs/heads/main",
            "sha": "5d8f1e2a9c7b3f4e6a1d0c9b8a7f6e5d4c3b2a19", "run_id": format!("{n}"),
            "run_attempt": "1", "actor": "octocat", "event_name": "push",
            "workflow_ref": "acme/api/.github/workflows/deploy.yml@refs/heads/main",
            "job_workflow_ref": "acme/api/.github/workflows/deploy.yml@refs/heads/main",
            "environment": "production",
        }),
    )
}

fn bearer(token: &str) -> anyhow::Result<HeaderMap> {
    let mut h = HeaderMap::new();
    h.insert(
        http::header::AUTHORIZATION,
        format!("Bearer {token}").parse()?,
    );
    Ok(h)
}

/// p50 and p99 of authenticating each of `headers` once (after one warm-up pass).
async fn time_each(
    identity: &Identity,
    headers: &[HeaderMap],
) -> anyhow::Result<(Duration, Duration)> {
    let mut times = Vec::with_capacity(headers.len());
    for h in headers {
        let started = Instant::now();
        let p = identity.authenticate(h).await;
        times.push(started.elapsed());
        anyhow::ensure!(
            p.is_ok(),
            "refused: {:?}",
            p.err().map(|r| r.error.to_string())
        );
    }
    times.sort_unstable();
    Ok((percentile(&times, 0.5), percentile(&times, 0.99)))
}

pub async fn run(calls: usize) -> anyhow::Result<()> {
    println!("custody auth benchmark: the cost of authenticating one request");
    println!("command: cargo run --release -p custody-bench -- auth --calls {calls}");
    let issuer = TestIssuer::start().await;
    let stop = tokio_util::sync::CancellationToken::new();

    // Warm token cache: the same token, as a CI job sends it on every call.
    let identity = Identity::new(&config(&issuer, 10_000)?.auth);
    let _loaders = identity.start(&stop).await;
    let token = issuer.token("rsa-1", &github_claims(&issuer, 0));
    let same: Vec<HeaderMap> = (0..calls)
        .map(|_| bearer(&token))
        .collect::<Result<_, _>>()?;
    time_each(&identity, &same[..100.min(calls)]).await?;
    let (p50, p99) = time_each(&identity, &same).await?;
    println!(
        "  token seen before (token cache hit)        p50 {:>7}  p99 {:>7}",
        us(p50),
        us(p99)
    );

    // Warm key cache, a fresh token every call: the full check.
    let uncached = Identity::new(&config(&issuer, 0)?.auth);
    let _loaders2 = uncached.start(&stop).await;
    for (kid, alg) in [
        ("rsa-1", "RS256 (RSA-2048)"),
        ("ec-1", "ES256 (P-256)"),
        ("ed-1", "EdDSA (Ed25519)"),
    ] {
        let n = calls.min(2000);
        let fresh: Vec<HeaderMap> = (0..n)
            .map(|i| bearer(&issuer.token(kid, &github_claims(&issuer, i))))
            .collect::<Result<_, _>>()?;
        time_each(&uncached, &fresh[..50.min(n)]).await?;
        let (p50, p99) = time_each(&uncached, &fresh).await?;
        println!(
            "  fresh token, keys cached: {alg:<17} p50 {:>7}  p99 {:>7}",
            us(p50),
            us(p99)
        );
    }
    stop.cancel();

    end_to_end(&issuer, &token, calls).await
}

/// Through a gateway (durability none, to keep disk noise out): anonymous calls against calls
/// with the same CI token.
async fn end_to_end(issuer: &TestIssuer, token: &str, calls: usize) -> anyhow::Result<()> {
    let work = tempfile::tempdir_in(std::env::current_dir()?)?;
    let up_addr = free_addr()?;
    let _upstream: Proc = spawn_self(&["upstream", &up_addr.to_string()])?;
    wait_listening(up_addr).await?;
    let gw_addr: SocketAddr = free_addr()?;
    let config = work.path().join("custody.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"{gw_addr}\"\ndata_dir = \"{}\"\n[audit]\ndurability = \"none\"\norigin = \"bench.custody/log\"\n[auth]\nanonymous = true\n[[auth.oidc]]\npreset = \"github-actions\"\nissuer = \"{}\"\naudiences = [\"custody\"]\n[endpoints.bench.upstream]\ntransport = \"http\"\nurl = \"http://{up_addr}/mcp\"\n",
            work.path().join("data").display(),
            issuer.url
        ),
    )?;
    let _gateway: Proc = spawn_self(&["gateway", config.to_str().unwrap_or_default()])?;
    wait_listening(gw_addr).await?;
    let anonymous = Conn::open(gw_addr, "/mcp/bench").await?;
    let authed = Conn::open_with_token(gw_addr, "/mcp/bench", token).await?;
    let (mut la, mut lb) = latencies_on(anonymous, authed, 500, calls).await?;
    la.sort_unstable();
    lb.sort_unstable();
    let (a50, b50) = (percentile(&la, 0.5), percentile(&lb, 0.5));
    println!(
        "  through the gateway, {calls} tools/call each: anonymous p50 {}, with a GitHub Actions token p50 {} (difference {:+.0} µs)",
        us(a50),
        us(b50),
        (b50.as_secs_f64() - a50.as_secs_f64()) * 1e6
    );
    Ok(())
}
