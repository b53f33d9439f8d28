//! Issue 13, class 7: approvers see what will run. A held call's arguments are shown as the
//! upstream will receive them (only the credentials the gateway holds scrubbed) with the digest
//! the grant binds to; a deployment that wants masked values says so, and the view counts them.

mod common;

use std::time::{Duration, Instant};

use common::*;
use custody::identity::{new_static_token, token_hash};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const CREDENTIAL: &str = "sk-demo-credential-0001";
const SECRET_ARGUMENT: &str = "abc123-deploy-key-77";

const POLICIES: &str = r#"
@id("everything")
permit(principal, action in [Action::"tools/call", Action::"list", Action::"other"], resource);

@id("echo-needs-approval")
@approval("required")
permit(principal, action == Action::"tools/call", resource)
when { resource.name == "echo" };
"#;

struct Setup {
    gw: Gateway,
    ci: String,
    alice: String,
    _dir: tempfile::TempDir,
}

async fn setup(show: &str) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("p.cedar");
    std::fs::write(&policy, POLICIES).unwrap();
    let (ci, alice) = (new_static_token(), new_static_token());
    let statics: String = [("ci", &ci), ("alice", &alice)]
        .iter()
        .map(|(name, t)| {
            format!(
                "[[auth.static]]\nname = \"{name}\"\nsha256 = \"{}\"\n",
                hex::encode(token_hash(t))
            )
        })
        .collect();
    let gw = Gateway::start(
        "",
        &format!(
            "[auth]\n{statics}[policy]\nfiles = [\"{}\"]\n[approvals]\napprovers = [\"alice\"]\nkeepalive = \"200ms\"\n{show}\n\
             [endpoints.demo.upstream]\ntransport = \"stdio\"\ncommand = \"{}\"\nargs = [\"demo-server\"]\n\
             env = {{ DEMO_API_KEY = \"{CREDENTIAL}\" }}\n",
            policy.display(),
            custody_bin()
        ),
    )
    .await;
    Setup {
        gw,
        ci,
        alice,
        _dir: dir,
    }
}

impl Setup {
    async fn api(&self, path: &str) -> Value {
        let resp = reqwest::Client::new()
            .get(format!("http://{}/api/v1/approvals{path}", self.gw.addr))
            .bearer_auth(&self.alice)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        resp.json().await.unwrap()
    }

    /// Holds an `echo` of `text` in the background; returns the held approval as alice sees
    /// it, and the call's answer to come.
    async fn hold(&self, text: &str) -> (Value, tokio::task::JoinHandle<Answer>) {
        let client = self.gw.client("demo").with_token(&self.ci).stateless();
        let text = text.to_string();
        let call = tokio::spawn(async move {
            client
                .call(
                    "tools/call",
                    json!({"name": "echo", "arguments": {"text": text}}),
                )
                .await
        });
        let started = Instant::now();
        loop {
            let list = self.api("").await;
            if let Some(a) = list["approvals"].as_array().and_then(|a| a.first()) {
                return (a.clone(), call);
            }
            assert!(started.elapsed() < Duration::from_secs(10), "nothing held");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn approve(&self, id: &str, digest: &str) -> u16 {
        reqwest::Client::new()
            .post(format!(
                "http://{}/api/v1/approvals/{id}/approve",
                self.gw.addr
            ))
            .bearer_auth(&self.alice)
            .json(&json!({"arguments_sha256": digest}))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }
}

/// SHA-256 of the canonical JSON of `{"text": text}` (one key: no ordering to do).
fn digest_of(text: &str) -> String {
    hex::encode(Sha256::digest(json!({"text": text}).to_string().as_bytes()))
}

/// Issue 13, class 7: an argument shaped like `token=...`, which the log's detectors mask, was
/// shown masked and approved blind. The approver sees it as the upstream will receive it, with
/// the digest of exactly that; only the credential the gateway holds is hidden (and counted).
#[tokio::test]
async fn approvers_see_the_arguments_the_upstream_will_receive_with_their_digest() {
    let s = setup("").await;
    let text = format!("token={SECRET_ARGUMENT} and key {CREDENTIAL}");
    let (held, call) = s.hold(&text).await;
    assert_eq!(held["arguments_view"], "as_sent", "{held:#}");
    assert_eq!(
        held["arguments"]["text"],
        format!("token={SECRET_ARGUMENT} and key [custody:credential]"),
        "{held:#}"
    );
    assert_eq!(
        held["hidden_values"], 1,
        "the gateway's credential is hidden"
    );
    assert!(
        !held.to_string().contains(CREDENTIAL),
        "the approvals API never shows a credential the gateway holds"
    );
    assert_eq!(
        held["arguments_sha256"],
        digest_of(&text),
        "the digest binds the arguments as sent"
    );
    let id = held["id"].as_str().unwrap();
    assert_eq!(
        s.approve(id, held["arguments_sha256"].as_str().unwrap())
            .await,
        200
    );
    let answer = call.await.unwrap();
    assert_eq!(
        answer.response()["result"]["content"][0]["text"],
        format!("token={SECRET_ARGUMENT} and key [custody:credential]"),
        "the upstream got what the approver saw: {answer:#?}"
    );

    // Once it has ended, the arguments as sent are gone from memory: the log's copy is shown.
    let finished = s.api(&format!("/{id}")).await;
    assert_eq!(finished["arguments_view"], "masked", "{finished:#}");
    assert_eq!(
        finished["arguments"]["text"],
        "token=[custody:password_pair] and key [custody:credential]"
    );
    let data = s.gw.shutdown().await;
    let recorded: String = entries(data.path())
        .iter()
        .map(|e| format!("{} {}\n", e.detail, String::from_utf8_lossy(&e.message)))
        .collect();
    assert!(
        !recorded.contains(SECRET_ARGUMENT) && !recorded.contains(CREDENTIAL),
        "the log keeps its masked copy:\n{recorded}"
    );
}

/// `approvals.show = "masked"`: the log's copy, saying how many values it hides.
#[tokio::test]
async fn a_deployment_can_show_approvers_the_masked_copy_and_the_view_counts_what_it_hides() {
    let s = setup("show = \"masked\"").await;
    let text = format!("token={SECRET_ARGUMENT}");
    let (held, call) = s.hold(&text).await;
    assert_eq!(held["arguments_view"], "masked", "{held:#}");
    assert_eq!(held["arguments"]["text"], "token=[custody:password_pair]");
    assert_eq!(held["hidden_values"], 1);
    assert_eq!(held["arguments_sha256"], digest_of(&text));
    let id = held["id"].as_str().unwrap();
    assert_eq!(
        s.approve(id, held["arguments_sha256"].as_str().unwrap())
            .await,
        200
    );
    assert!(call.await.unwrap().response().get("result").is_some());
    s.gw.shutdown().await;
}

#[test]
fn an_unknown_view_is_a_config_error() {
    let e = custody::config::Config::parse(
        "[approvals]\nshow = \"plain\"\n[auth]\nanonymous = true\n\
         [endpoints.a.upstream]\ntransport = \"stdio\"\ncommand = \"true\"\n",
        "t.toml",
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("t.toml:2:")
            && e.contains("approvals.show")
            && e.contains("\"plain\" is not a view of a held call"),
        "{e}"
    );
}
