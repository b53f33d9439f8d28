//! `custody approvals list|show|approve|deny`: the approvals API from a terminal.

use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use http::{Method, Request, header};
use http_body_util::Full;
use serde_json::{Value, json};

/// Where the gateway is and who is asking.
pub struct Target {
    pub gateway: String,
    pub token: String,
}

/// What to do.
pub enum Action {
    List {
        all: bool,
    },
    Show {
        id: String,
    },
    Approve {
        id: String,
        reason: Option<String>,
        digest: Option<String>,
    },
    Deny {
        id: String,
        reason: String,
    },
}

/// The token: the flag or variable, else the file's first line.
pub fn token(flag: Option<String>, file: Option<&std::path::Path>) -> anyhow::Result<String> {
    if let Some(t) = flag.filter(|t| !t.trim().is_empty()) {
        return Ok(t.trim().to_string());
    }
    if let Some(path) = file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the token file {}", path.display()))?;
        let t = text.lines().next().unwrap_or("").trim().to_string();
        if t.is_empty() {
            bail!("{} is empty", path.display());
        }
        return Ok(t);
    }
    bail!(
        "no token: pass --token, set CUSTODY_TOKEN, or pass --token-file (the embedded default writes custody-data/approver-token)"
    )
}

pub(crate) async fn call(
    target: &Target,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> anyhow::Result<Value> {
    let base = target.gateway.trim_end_matches('/');
    let url = format!("{base}{path}");
    let uri: http::Uri = url
        .parse()
        .with_context(|| format!("{base:?} is not a URL (--gateway http://HOST:PORT)"))?;
    let mut req = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::AUTHORIZATION, format!("Bearer {}", target.token))
        .header(header::ACCEPT, "application/json")
        .header(
            header::USER_AGENT,
            concat!("custody/", env!("CARGO_PKG_VERSION")),
        );
    let body = match body {
        Some(v) => {
            req = req.header(header::CONTENT_TYPE, "application/json");
            Full::new(Bytes::from(v.to_string()))
        }
        None => Full::new(Bytes::new()),
    };
    let req = req.body(body).context("building the request")?;
    let client = crate::net::client::<Full<Bytes>>(Duration::from_secs(5));
    let what = format!("the gateway at {base}");
    let (status, bytes) = tokio::time::timeout(
        Duration::from_secs(30),
        crate::net::exchange(&client, req, &what, 16 * 1024 * 1024),
    )
    .await
    .map_err(|_| anyhow::anyhow!("{what} did not answer within 30s"))?
    .map_err(|e| {
        if e.starts_with("couldn't reach") {
            anyhow::anyhow!("{e} (is it running? pass --gateway or set CUSTODY_GATEWAY)")
        } else {
            anyhow::anyhow!(e)
        }
    })?;
    let value: Value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| json!({ "error": String::from_utf8_lossy(&bytes).trim().to_string() }));
    if !status.is_success() {
        let message = value
            .get("error")
            .and_then(Value::as_str)
            .unwrap_or("no details");
        bail!("{status}: {message}");
    }
    Ok(value)
}

fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

fn call_name(a: &Value) -> String {
    match a.get("target").and_then(Value::as_str) {
        Some(t) => format!("{} {t}", s(a, "method")),
        None => s(a, "method").to_string(),
    }
}

fn requester(a: &Value) -> String {
    a.pointer("/requester/name")
        .and_then(Value::as_str)
        .unwrap_or("?")
        .to_string()
}

fn votes(a: &Value) -> String {
    let n = a.get("votes").and_then(Value::as_array).map_or(0, Vec::len);
    format!(
        "{n}/{}",
        a.get("min_approvals").and_then(Value::as_u64).unwrap_or(1)
    )
}

fn print_one(a: &Value) {
    out!("approval   {}", s(a, "id"));
    out!("state      {}", s(a, "state"));
    out!("endpoint   {}", s(a, "endpoint"));
    out!("call       {}", call_name(a));
    out!("requester  {}", requester(a));
    if let Some(r) = a.get("requester") {
        out!("           {r}");
    }
    out!("requested  {}", s(a, "requested_at"));
    out!("expires    {}", s(a, "expires_at"));
    out!(
        "approvals  {} (policies: {})",
        votes(a),
        a.get("policies")
            .map(ToString::to_string)
            .unwrap_or_default()
    );
    for v in a
        .get("votes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        out!(
            "           {} at {}{}",
            s(v, "approver"),
            s(v, "at"),
            v.get("reason")
                .and_then(Value::as_str)
                .map(|r| format!(": {r}"))
                .unwrap_or_default()
        );
    }
    if let Some(r) = a.get("reason").and_then(Value::as_str) {
        out!("reason     {r}");
    }
    let hidden = a.get("hidden_values").and_then(Value::as_u64).unwrap_or(0);
    let view = match a.get("arguments_view").and_then(Value::as_str) {
        Some("as_sent") if hidden == 0 => "exactly as the upstream will receive them".to_string(),
        Some("as_sent") => format!(
            "as the upstream will receive them, but {hidden} credential(s) the gateway holds are hidden"
        ),
        _ => format!("masked as the log stores them: {hidden} value(s) hidden"),
    };
    out!(
        "arguments  ({view}; SHA-256 of the call's arguments as sent {})",
        s(a, "arguments_sha256")
    );
    let pretty = serde_json::to_string_pretty(a.get("arguments").unwrap_or(&Value::Null))
        .unwrap_or_default();
    for line in pretty.lines() {
        out!("  {line}");
    }
}

pub async fn run(target: &Target, action: Action, as_json: bool) -> anyhow::Result<()> {
    let answer = match &action {
        Action::List { all } => {
            let path = if *all {
                "/api/v1/approvals?all=true"
            } else {
                "/api/v1/approvals"
            };
            call(target, Method::GET, path, None).await?
        }
        Action::Show { id } => {
            call(
                target,
                Method::GET,
                &format!("/api/v1/approvals/{id}"),
                None,
            )
            .await?
        }
        Action::Approve { id, reason, digest } => {
            call(
                target,
                Method::POST,
                &format!("/api/v1/approvals/{id}/approve"),
                Some(json!({ "reason": reason, "arguments_sha256": digest })),
            )
            .await?
        }
        Action::Deny { id, reason } => {
            call(
                target,
                Method::POST,
                &format!("/api/v1/approvals/{id}/deny"),
                Some(json!({ "reason": reason })),
            )
            .await?
        }
    };
    if as_json {
        out!("{}", serde_json::to_string_pretty(&answer)?);
        return Ok(());
    }
    match action {
        Action::List { .. } => {
            let items = answer
                .get("approvals")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            if items.is_empty() {
                out!("no approvals waiting that you may decide");
                return Ok(());
            }
            out!(
                "{:<17} {:<9} {:<14} {:<28} {:<30} {:<6} EXPIRES",
                "ID",
                "STATE",
                "ENDPOINT",
                "CALL",
                "REQUESTER",
                "VOTES"
            );
            for a in &items {
                out!(
                    "{:<17} {:<9} {:<14} {:<28} {:<30} {:<6} {}",
                    s(a, "id"),
                    s(a, "state"),
                    s(a, "endpoint"),
                    call_name(a),
                    requester(a),
                    votes(a),
                    s(a, "expires_at")
                );
            }
        }
        Action::Show { .. } => print_one(&answer),
        Action::Approve { id, .. } => {
            if s(&answer, "state") == "granted" {
                out!(
                    "approved {id}: the call is released ({} approvals)",
                    votes(&answer)
                );
            } else {
                out!(
                    "approved {id}: recorded ({} approvals); it waits for more",
                    votes(&answer)
                );
            }
        }
        Action::Deny { id, .. } => out!("denied {id}: the call fails with your reason"),
    }
    Ok(())
}
