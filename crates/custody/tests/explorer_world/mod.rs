//! The explorer tests' world: a gateway with two CI runs (GitHub-style tokens from a test
//! issuer), an auditor, a nosy static token and an endpoint auditor, on the embedded log or on
//! a log in PostgreSQL (its explorer index there too).

use custody::identity::{new_static_token, token_hash};
use custody_test_issuer::TestIssuer;
use serde_json::{Value, json};

use crate::common::*;
use crate::pg_common::Db;

const POLICIES: &str = r#"
@id("everything")
permit(principal, action in [Action::"tools/call", Action::"list", Action::"other"], resource);

@id("web-may-not-add")
forbid(principal, action == Action::"tools/call", resource)
when { resource.name == "add" && principal.repository == "acme/web" };

@id("edna-audits-demo")
permit(principal, action == Action::"audit", resource == Endpoint::"demo")
when { principal.name == "edna" };
"#;

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub struct World {
    pub gw: Gateway,
    /// The log's own database, when the log is in PostgreSQL.
    pub db: Option<Db>,
    pub auditor: String,
    pub nosy: String,
    pub edna: String,
    pub api_job: String,
    pub web_job: String,
    _issuer: TestIssuer,
    _policy: tempfile::TempDir,
}

impl World {
    pub async fn get(&self, token: &str, path: &str) -> (u16, Value) {
        let resp = reqwest::Client::new()
            .get(format!("http://{}{path}", self.gw.addr))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    pub async fn ok(&self, token: &str, path: &str) -> Value {
        let (status, v) = self.get(token, path).await;
        assert_eq!(status, 200, "{path}: {v}");
        v
    }

    /// Every index a filter returns, following cursors `limit` at a time.
    pub async fn all(&self, token: &str, query: &str, limit: u32) -> Vec<u64> {
        let mut out = Vec::new();
        let mut cursor = String::new();
        loop {
            let v = self
                .ok(
                    token,
                    &format!("/api/v1/entries?{query}&limit={limit}{cursor}"),
                )
                .await;
            let page = v["entries"].as_array().unwrap();
            assert!(page.len() <= limit as usize);
            out.extend(page.iter().map(|e| e["index"].as_u64().unwrap()));
            match v["next"].as_str() {
                Some(c) => cursor = format!("&cursor={c}"),
                None => return out,
            }
        }
    }
}

/// The world on the embedded log.
pub async fn world() -> World {
    world_on(None).await
}

/// The world on the log in `db` (the embedded log when `None`).
pub async fn world_on(db: Option<Db>) -> World {
    let audit = db.as_ref().map_or(String::new(), |d| {
        format!("[audit]\nstore = \"{}\"\nreplica = \"r0\"\n", d.url)
    });
    let issuer = TestIssuer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("p.cedar");
    std::fs::write(&policy, POLICIES).unwrap();
    let (auditor, nosy, edna) = (new_static_token(), new_static_token(), new_static_token());
    let gw = Gateway::start(
        "",
        &format!(
            "[[auth.oidc]]\npreset = \"github-actions\"\nissuer = \"{}\"\naudiences = [\"custody\"]\n\
             [[auth.static]]\nname = \"ines\"\nsha256 = \"{}\"\n\
             [[auth.static]]\nname = \"nosy\"\nsha256 = \"{}\"\n\
             [[auth.static]]\nname = \"edna\"\nsha256 = \"{}\"\n\
             [policy]\nfiles = [\"{}\"]\n[explorer]\nauditors = [\"ines\"]\n\
             [endpoints.demo.upstream]\ntransport = \"stdio\"\ncommand = \"{}\"\nargs = [\"demo-server\"]\n\
             [[endpoints.demo.mask_audit]]\npath = \"$.params.arguments.text\"\naction = \"hmac\"\n{audit}",
            issuer.url,
            hex(&token_hash(&auditor)),
            hex(&token_hash(&nosy)),
            hex(&token_hash(&edna)),
            policy.display(),
            custody_bin()
        ),
    )
    .await;
    let job = |repo: &str, run: &str, actor: &str| {
        issuer.token(
            "rsa-1",
            &issuer.claims(
                &format!("repo:{repo}:ref:refs/heads/main"),
                &json!({"repository": repo, "repository_owner": "acme", "ref": "refs/heads/main",
                        "run_id": run, "run_attempt": "1", "workflow": "ci", "actor": actor}),
            ),
        )
    };
    let api_job = job("acme/api", "4711", "octocat");
    let web_job = job("acme/web", "99", "hubot");
    World {
        gw,
        db,
        auditor,
        nosy,
        edna,
        api_job,
        web_job,
        _issuer: issuer,
        _policy: dir,
    }
}

pub async fn call(w: &World, token: &str, tool: &str, args: Value) -> Answer {
    w.gw.client("demo")
        .with_token(token)
        .stateless()
        .call("tools/call", json!({"name": tool, "arguments": args}))
        .await
}

/// Runs the calls of both jobs: acme/api echoes three times and adds; acme/web echoes once
/// and is refused `add`.
pub async fn traffic(w: &World) {
    for text in ["one", "two", "three"] {
        let a = call(w, &w.api_job, "echo", json!({"text": text})).await;
        assert!(a.response().get("result").is_some(), "{:?}", a.response());
    }
    let a = call(w, &w.api_job, "add", json!({"a": 1, "b": 2})).await;
    assert!(a.response().get("result").is_some(), "{:?}", a.response());
    let a = call(w, &w.web_job, "echo", json!({"text": "web"})).await;
    assert!(a.response().get("result").is_some(), "{:?}", a.response());
    let denied = call(w, &w.web_job, "add", json!({"a": 1, "b": 2})).await;
    assert!(
        denied.response().get("error").is_some(),
        "{:?}",
        denied.response()
    );
}

impl World {
    /// Stops the gateway; every entry of its log, and its data directory.
    pub async fn finish(self) -> (Vec<tlog::Entry<'static>>, tempfile::TempDir) {
        let dir = self.gw.shutdown().await;
        let entries = match self.db {
            None => entries(dir.path()),
            Some(db) => tokio::task::block_in_place(move || {
                let out = db.entries().into_iter().map(|(e, _)| e).collect();
                drop(db);
                out
            }),
        };
        (entries, dir)
    }
}
