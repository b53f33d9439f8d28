//! `custody policy check | eval | schema`: the access policy without a running gateway, for
//! policy repositories' own CI.

use std::path::Path;

use anyhow::{Context, bail};
use serde_json::{Map, Value, json};

use crate::config::Config;
use crate::identity::Principal;
use crate::policy::{Call, Engine, Verdict};

fn engine(config: &Config) -> anyhow::Result<std::sync::Arc<Engine>> {
    match Engine::new(&config.policy, &config.auth) {
        Ok(Some(e)) => Ok(e),
        Ok(None) => bail!(
            "the config has no [policy]: every authenticated caller may call everything; add [policy] files = [\"...\"]"
        ),
        Err(errors) => bail!("the access policy is invalid:\n{errors}"),
    }
}

/// `custody policy check`: validates the policy files against the schema.
pub fn check(config_path: &Path) -> anyhow::Result<()> {
    let config = Config::load(config_path)?;
    let engine = engine(&config)?;
    let (hash, count) = engine.summary();
    out!(
        "policy ok: {count} polic{} in {} file{}, set hash {hash}",
        if count == 1 { "y" } else { "ies" },
        engine.files().len(),
        if engine.files().len() == 1 { "" } else { "s" }
    );
    Ok(())
}

/// `custody policy schema`: prints the schema policies are validated against.
pub fn schema(config_path: &Path) -> anyhow::Result<()> {
    let config = Config::load(config_path)?;
    print!("{}", crate::policy::schema::text(&config.auth));
    Ok(())
}

pub struct EvalArgs<'a> {
    pub config: &'a Path,
    pub principal: &'a Path,
    pub endpoint: &'a str,
    pub method: &'a str,
    pub target: Option<&'a str>,
    pub args: Option<&'a str>,
    pub expect: Option<&'a str>,
    pub json: bool,
}

/// The principal a token with these claims would be: the configured issuer named by `iss`
/// keeps its claims and renders its name; without `iss`, a static principal named `sub`.
fn principal(config: &Config, claims: &Map<String, Value>) -> anyhow::Result<Principal> {
    let sub = claims
        .get("sub")
        .and_then(Value::as_str)
        .context("the claims need a \"sub\"")?;
    let Some(iss) = claims.get("iss").and_then(Value::as_str) else {
        return Ok(Principal::static_token(sub));
    };
    let Some(issuer) = config.auth.oidc.iter().find(|o| o.issuer == iss) else {
        let known: Vec<&str> = config.auth.oidc.iter().map(|o| o.issuer.as_str()).collect();
        bail!(
            "no [[auth.oidc]] issuer is {iss:?} (configured: {})",
            known.join(", ")
        );
    };
    let kept = issuer
        .claims
        .iter()
        .filter_map(|c| claims.get(c).map(|v| (c.clone(), v.clone())))
        .collect();
    Ok(Principal::oidc(
        iss,
        sub.to_string(),
        issuer.name.render(claims),
        kept,
        &[],
    ))
}

/// `custody policy eval`: prints the decision for one call. Exits 1 when `--expect` differs.
pub fn eval(a: &EvalArgs<'_>) -> anyhow::Result<bool> {
    let config = Config::load(a.config)?;
    let engine = engine(&config)?;
    let text = std::fs::read_to_string(a.principal)
        .with_context(|| format!("reading {}", a.principal.display()))?;
    let claims: Map<String, Value> = serde_json::from_str(&text).with_context(|| {
        format!(
            "{} must be a JSON object of token claims",
            a.principal.display()
        )
    })?;
    let principal = principal(&config, &claims)?;
    if !config.endpoints.iter().any(|e| e.name == a.endpoint) {
        let known: Vec<&str> = config.endpoints.iter().map(|e| e.name.as_str()).collect();
        bail!(
            "no endpoint {:?} (configured: {})",
            a.endpoint,
            known.join(", ")
        );
    }
    let arguments: Option<Value> = a
        .args
        .map(|s| serde_json::from_str(s).context("--args must be a JSON object"))
        .transpose()?;
    let decision = engine.decide(&Call {
        principal: &principal,
        endpoint: a.endpoint,
        method: a.method,
        target: a.target,
        arguments: arguments.as_ref(),
        protocol_version: "2025-11-25",
        client_address: "127.0.0.1:0",
    });
    if a.json {
        out!(
            "{}",
            json!({
                "decision": decision.verdict.as_str(),
                "policies": decision.policies,
                "action": crate::policy::action_of(a.method),
                "principal": serde_json::from_str::<Value>(&principal.audit).unwrap_or(Value::Null),
            })
        );
    } else {
        let why = match (decision.verdict, decision.policies.is_empty()) {
            (Verdict::Deny, true) => "no policy permits it".to_string(),
            (_, _) => format!("by {}", decision.policies.join(", ")),
        };
        out!(
            "{}: {} {} {} for {} ({why})",
            decision.verdict.as_str(),
            crate::policy::action_of(a.method),
            a.target
                .map(|t| format!("{t:?} on"))
                .unwrap_or_else(|| "on".into()),
            a.endpoint,
            principal.name
        );
    }
    match a.expect {
        None => Ok(true),
        Some(e) if e == decision.verdict.as_str() => Ok(true),
        Some(e) => {
            eprintln!(
                "custody policy eval: expected {e}, got {}",
                decision.verdict.as_str()
            );
            Ok(false)
        }
    }
}
