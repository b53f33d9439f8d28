//! Approvals across replicas of a shared log: a call held on one replica is listed and
//! decided on another (the holder judges every decision), a decision written into the database
//! without the log's key is refused, and a replica that dies holding a call has its approval
//! abandoned once.
//!
//! Needs PostgreSQL (see `pg_common`).

mod common;
mod pg_common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use pg_common::{Db, config_with, runtime, start, start_all, terminate};
use serde_json::{Value, json};

const APPROVAL_POLICY: &str = r#"
@id("everything")
permit(principal, action in [Action::"tools/call", Action::"list", Action::"other"], resource);

@id("deploys-need-approval")
@approval("required")
permit(principal, action == Action::"tools/call", resource)
when { resource.name == "deploy" };
"#;

/// Two replicas whose `deploy` calls wait for `alice` or `bob`; the static tokens by name.
fn approval_replicas(
    root: &Path,
    db: &str,
) -> (
    Vec<PathBuf>,
    std::collections::HashMap<&'static str, String>,
) {
    let policy = root.join("approvals.cedar");
    std::fs::write(&policy, APPROVAL_POLICY).unwrap();
    let (statics, tokens) = pg_common::static_tokens(&["ci", "alice", "carol"]);
    let rest = format!(
        "[auth]\n{statics}[policy]\nfiles = [\"{}\"]\n[approvals]\napprovers = [\"alice\"]\n\
         [endpoints.demo.upstream]\ntransport = \"stdio\"\ncommand = \"{}\"\nargs = [\"demo-server\"]\n",
        policy.display(),
        custody_bin()
    );
    let key = root.join("log.key");
    let configs = ["r0", "r1"]
        .iter()
        .map(|n| config_with(root, n, db, &key, &rest))
        .collect();
    (configs, tokens)
}

/// The pending approvals `token` sees on the replica at `base`, once there are `n`.
async fn pending_on(base: &str, token: &str, n: usize) -> Vec<Value> {
    let started = Instant::now();
    loop {
        let list: Value = reqwest::Client::new()
            .get(format!("{base}/api/v1/approvals"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let items = list["approvals"].as_array().cloned().unwrap_or_default();
        if items.len() >= n {
            return items;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "expected {n} pending approvals on {base}: {list}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn decide_on(base: &str, token: &str, id: &str, verb: &str) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .post(format!("{base}/api/v1/approvals/{id}/{verb}"))
        .bearer_auth(token)
        .json(&json!({"reason": "checked on another replica"}))
        .send()
        .await
        .unwrap();
    (
        resp.status().as_u16(),
        resp.json().await.unwrap_or_default(),
    )
}

fn hold_on(base: &str, token: &str) -> tokio::task::JoinHandle<Answer> {
    let c = Client::new(format!("{base}/mcp/demo"))
        .with_token(token)
        .stateless();
    tokio::spawn(async move {
        c.call(
            "tools/call",
            json!({"name": "deploy", "arguments": {"service": "api", "version": "1.2.3", "environment": "staging"}}),
        )
        .await
    })
}

/// The replicas that wrote a `config_changed` entry into the shared log.
fn config_changes(db: &Db) -> Vec<String> {
    db.entries()
        .into_iter()
        .filter(|(e, _)| e.kind.name() == "config_changed")
        .map(|(_, replica)| replica)
        .collect()
}

/// The `approval_*` entries of the shared log for approval `id`, by kind name.
fn approval_entries(db: &Db, id: &str) -> Vec<String> {
    db.entries()
        .iter()
        .filter(|(e, _)| e.kind.name().starts_with("approval_") && e.detail.contains(id))
        .map(|(e, _)| e.kind.name().to_string())
        .collect()
}

#[test]
fn an_approval_granted_on_one_replica_releases_the_call_held_on_another() {
    let Some(db) = Db::new("replica_approvals") else {
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let (configs, tokens) = approval_replicas(root.path(), &db.url);
    let rt = runtime();
    let (mut procs, bases) = start_all(&configs);
    // A policy reload is each replica's own, and each records it.
    for p in procs.iter() {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(p.id() as i32),
            nix::sys::signal::Signal::SIGHUP,
        )
        .unwrap();
    }
    let started = Instant::now();
    loop {
        let mut by = config_changes(&db);
        by.sort();
        if by == ["r0", "r1"] {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "config_changed by {by:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (held_id, forged_row, abandoned_id) = rt.block_on(async {
        // Held on r0, approved on r1.
        let held = hold_on(&bases[0], &tokens["ci"]);
        let first = pending_on(&bases[0], &tokens["alice"], 1).await.remove(0);
        let id = first["id"].as_str().unwrap().to_string();
        // r1 lists it too, read from the shared log, to those who may see it there.
        let there = pending_on(&bases[1], &tokens["alice"], 1).await;
        assert_eq!(there[0]["id"], first["id"], "{there:?}");
        assert_eq!(there[0]["held_by"], "r0");
        assert_eq!(there[0]["target"], "deploy");
        assert_eq!(there[0]["arguments"]["service"], "api");
        assert_eq!(there[0]["arguments_sha256"], first["arguments_sha256"]);
        let mine = pending_on(&bases[1], &tokens["ci"], 1).await;
        assert_eq!(mine[0]["id"], first["id"], "the requester sees its own");
        let none: Value = reqwest::Client::new()
            .get(format!("{}/api/v1/approvals", bases[1]))
            .bearer_auth(&tokens["carol"])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(none["approvals"], json!([]), "neither approver nor requester");
        let shown = reqwest::Client::new()
            .get(format!("{}/api/v1/approvals/{id}", bases[1]))
            .bearer_auth(&tokens["alice"])
            .send()
            .await
            .unwrap();
        assert_eq!(shown.status(), 200);
        assert_eq!(shown.json::<Value>().await.unwrap()["held_by"], "r0");
        // Who may not decide it here may not decide it from there either: the holder judges.
        let (status, body) = decide_on(&bases[1], &tokens["carol"], &id, "approve").await;
        assert_eq!(status, 404, "{body}");
        let (status, body) = decide_on(&bases[1], &tokens["ci"], &id, "approve").await;
        assert_eq!(status, 403, "self-approval from another replica: {body}");
        // A decision written into the database without the log's key is refused by the holder.
        let forged: i64 = {
            let url = db.url.clone();
            let id = id.clone();
            tokio::task::spawn_blocking(move || {
                let ask = json!({"approval": id, "approve": true, "reason": null, "digest": null,
                    "asked_ns": custody::audit::now_ns(), "by": "intruder",
                    "who": {"kind": "static", "issuer": null, "subject": "alice", "name": "alice",
                            "claims": {}, "audit": "{\"name\":\"alice\"}", "binding": "static:alice"}});
                let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
                c.query_one(
                    "INSERT INTO approval_asks (holder, ask, seal) VALUES ('r0', $1, $2) RETURNING id",
                    &[&ask.to_string(), &vec![0u8; 32]],
                )
                .unwrap()
                .get(0)
            })
            .await
            .unwrap()
        };
        tokio::time::sleep(Duration::from_millis(800)).await;
        let still = pending_on(&bases[0], &tokens["alice"], 1).await;
        assert_eq!(still[0]["state"], "pending", "a forged decision released nothing");

        let (status, body) = decide_on(&bases[1], &tokens["alice"], &id, "approve").await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["state"], "granted", "{body}");
        let answer = tokio::time::timeout(Duration::from_secs(10), held)
            .await
            .expect("the held call is released")
            .unwrap();
        assert_eq!(answer.status, 200, "{answer:?}");
        assert!(answer.response().get("result").is_some(), "{answer:?}");
        // Deciding again, anywhere, changes nothing.
        let (status, body) = decide_on(&bases[1], &tokens["alice"], &id, "approve").await;
        assert_ne!(status, 200, "{body}");

        // A call held on r0 when r0 dies: r1 starting again leaves it alone; r0 starting again
        // abandons it, once.
        let _orphan = hold_on(&bases[0], &tokens["ci"]);
        let second = pending_on(&bases[0], &tokens["alice"], 1).await.remove(0);
        (id, forged, second["id"].as_str().unwrap().to_string())
    });
    procs[0].kill().unwrap();
    procs[0].wait().unwrap();
    terminate(&mut procs[1]);
    let (p1, _) = start(&configs[1]).unwrap();
    procs[1] = p1;
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        !approval_entries(&db, &abandoned_id).contains(&"approval_abandoned".to_string()),
        "another replica abandoned r0's approval"
    );
    let (p0, _) = start(&configs[0]).unwrap();
    procs[0] = p0;
    let (p0b, _) = {
        terminate(&mut procs[0]);
        start(&configs[0]).unwrap()
    };
    procs[0] = p0b;
    for p in procs.iter_mut() {
        terminate(p);
    }
    let kinds = approval_entries(&db, &abandoned_id);
    assert_eq!(
        kinds.iter().filter(|k| *k == "approval_abandoned").count(),
        1,
        "abandoned once, whatever restarts: {kinds:?}"
    );
    let kinds = approval_entries(&db, &held_id);
    assert_eq!(
        kinds,
        ["approval_requested", "approval_granted"],
        "the decision taken on r1 is recorded once, by the holder"
    );
    let (status, answer): (i32, String) = {
        let r = db
            .admin()
            .query_opt(
                "SELECT status, answer FROM approval_asks WHERE id = $1",
                &[&forged_row],
            )
            .unwrap()
            .expect("the forged row is answered and left");
        (r.get(0), r.get(1))
    };
    assert_eq!(status, 403, "{answer}");
    assert!(answer.contains("seal does not check"), "{answer}");
}
