//! Session-based sessions across replicas of a shared log: a session opened on one replica
//! goes on through another (and after its opener is killed), a token cannot be altered or used
//! by another caller, a session is closed once whichever replica closes it, and a session used
//! on one replica is not closed as idle by another.
//!
//! Needs PostgreSQL (see `pg_common`).

mod common;
mod pg_common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use pg_common::{Db, config_with, logs, runtime, start_all, terminate};
use serde_json::json;

/// Two replicas of one log in `db` relaying the conformance fixture at `upstream` as endpoint
/// `f`, each with static tokens for `ci` and `other`, sessions idle after `idle`.
fn replicas(
    root: &Path,
    db: &str,
    upstream: &str,
    idle: &str,
) -> (
    Vec<PathBuf>,
    std::collections::HashMap<&'static str, String>,
) {
    let (statics, tokens) = pg_common::static_tokens(&["ci", "other"]);
    let rest = format!(
        "[auth]\n{statics}[explorer]\nauditors = [\"ci\"]\n{}{}",
        http_upstream("f", upstream, ""),
        stdio_fixture("p", "")
    );
    let key = root.join("log.key");
    let configs = ["r0", "r1"]
        .iter()
        .map(|n| {
            let file = config_with(root, n, db, &key, &rest);
            let text = std::fs::read_to_string(&file).unwrap().replace(
                "[server]\n",
                &format!("[server]\nsession_idle_timeout = \"{idle}\"\n"),
            );
            std::fs::write(&file, text).unwrap();
            file
        })
        .collect();
    (configs, tokens)
}

/// The reasons of the `session_closed` entries of session `id`, and how many entries name it.
/// (Called from the tests' runtime: the blocking client runs where blocking is allowed.)
fn session_entries(db: &Db, id: &str) -> (Vec<String>, usize) {
    let entries = tokio::task::block_in_place(|| db.entries());
    let mine: Vec<_> = entries.iter().filter(|(e, _)| e.session == id).collect();
    let closed = mine
        .iter()
        .filter(|(e, _)| e.kind.name() == "session_closed")
        .map(|(e, _)| {
            let detail: serde_json::Value = serde_json::from_str(&e.detail).unwrap();
            detail["reason"].as_str().unwrap_or_default().to_string()
        })
        .collect();
    (closed, mine.len())
}

/// A client of `url` as `token` presenting session `session`.
fn holding(url: &str, token: &str, session: &str) -> Client {
    let mut c = Client::new(url.to_string()).with_token(token);
    c.session = Some(session.to_string());
    c
}

async fn simple_call(c: &Client) -> Answer {
    c.call(
        "tools/call",
        json!({"name": "test_simple_text", "arguments": {}}),
    )
    .await
}

#[test]
fn a_session_opened_on_one_replica_goes_on_through_another() {
    let Some(db) = Db::new("replica_sessions") else {
        return;
    };
    let rt = runtime();
    let root = tempfile::tempdir().unwrap();
    let upstream = rt.block_on(fixture_http());
    let (configs, tokens) = replicas(root.path(), &db.url, &upstream, "30m");
    let (mut procs, bases) = start_all(&configs);
    rt.block_on(async {
        let on = |i: usize| format!("{}/mcp/f", bases[i]);
        let mut c = Client::new(on(0)).with_token(&tokens["ci"]);
        c.initialize().await;
        let token = c.session.clone().unwrap();
        let (id, sealed) = token
            .split_once('.')
            .expect("a shared session's token is sealed");
        assert_eq!(id.len(), 32, "{token}");
        assert!(sealed.len() > 40, "{token}");

        // The same session through the other replica: the call reaches the upstream session.
        c.url = on(1);
        let answer = simple_call(&c).await;
        assert_eq!(answer.status, 200, "{answer:#?}");
        assert!(answer.response().get("result").is_some(), "{answer:#?}");
        assert_eq!(answer.header("mcp-session-id"), Some(token.as_str()));

        // Another caller holding the token finds no session, on either replica.
        for i in 0..2 {
            let stranger = holding(&on(i), &tokens["other"], &token);
            let answer = simple_call(&stranger).await;
            assert_eq!(answer.status, 404, "{answer:#?}");
        }
        // An altered token is no session either (a byte of the sealed part changed).
        let mut altered = token.clone().into_bytes();
        let at = altered.len() - 5;
        altered[at] = if altered[at] == b'A' { b'B' } else { b'A' };
        let forged = holding(&on(1), &tokens["ci"], &String::from_utf8(altered).unwrap());
        let answer = simple_call(&forged).await;
        assert_eq!(answer.status, 404, "{answer:#?}");
        // Nor is the bare id.
        let bare = holding(&on(1), &tokens["ci"], id);
        assert_eq!(simple_call(&bare).await.status, 404);

        // One explorer index for both replicas: each finds the session's requests, whichever
        // replica wrote them.
        for base in &bases {
            let started = Instant::now();
            loop {
                let v: serde_json::Value = reqwest::Client::new()
                    .get(format!("{base}/api/v1/entries?session={id}&kind=request"))
                    .bearer_auth(&tokens["ci"])
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                let n = v["entries"].as_array().map_or(0, Vec::len);
                if n == 2 {
                    break;
                }
                assert!(started.elapsed() < Duration::from_secs(10), "{base}: {v}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        assert!(!root.path().join("r1/data/index.sqlite").exists());

        // A stdio session lives with its process: its id names the replica, and the other
        // replica says where it lives.
        let mut local = Client::new(format!("{}/mcp/p", bases[0])).with_token(&tokens["ci"]);
        local.initialize().await;
        let held = local.session.clone().unwrap();
        assert!(held.ends_with("@r0"), "{held}");
        assert_eq!(simple_call(&local).await.status, 200);
        local.url = format!("{}/mcp/p", bases[1]);
        let elsewhere = simple_call(&local).await;
        assert_eq!(elsewhere.status, 404, "{elsewhere:#?}");
        assert!(
            elsewhere.error_message().contains("it lives on replica r0"),
            "{elsewhere:#?}"
        );

        // The opener dies; the session goes on through the other replica.
        let mut c2 = Client::new(on(0)).with_token(&tokens["ci"]);
        c2.initialize().await;
        procs[0].kill().unwrap();
        procs[0].wait().unwrap();
        c2.url = on(1);
        let answer = simple_call(&c2).await;
        assert_eq!(answer.status, 200, "{answer:#?}");

        // Deleted through r1: closed once, everywhere.
        assert_eq!(c.delete().await, 200);
        let again = simple_call(&c).await;
        assert_eq!(again.status, 404, "{again:#?}");
        assert!(
            again.error_message().contains("deleted by the client"),
            "{again:#?}"
        );
        assert_eq!(c.delete().await, 404, "a second DELETE finds nothing");
        let (closed, entries) = session_entries(&db, id);
        assert_eq!(closed, ["deleted by the client"], "{}", logs(&configs));
        assert!(
            entries >= 4,
            "initialize, its answer, the call and its answer: {entries}"
        );
    });
    terminate(&mut procs[1]);
}

#[test]
fn a_shared_session_is_closed_as_idle_only_when_no_replica_used_it() {
    let Some(db) = Db::new("replica_session_idle") else {
        return;
    };
    let rt = runtime();
    let root = tempfile::tempdir().unwrap();
    let upstream = rt.block_on(fixture_http());
    let (configs, tokens) = replicas(root.path(), &db.url, &upstream, "4s");
    let (mut procs, bases) = start_all(&configs);
    rt.block_on(async {
        let on = |i: usize| format!("{}/mcp/f", bases[i]);
        let mut c = Client::new(on(0)).with_token(&tokens["ci"]);
        c.initialize().await;
        let token = c.session.clone().unwrap();
        let id = token.split_once('.').unwrap().0.to_string();
        // Used on r1 only, for longer than the idle timeout: r0 must not close it.
        c.url = on(1);
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(9) {
            let answer = simple_call(&c).await;
            assert_eq!(answer.status, 200, "{answer:#?}\n{}", logs(&configs));
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        assert_eq!(session_entries(&db, &id).0, Vec::<String>::new());
        // Back on r0, which dropped its idle copy and takes the session on again.
        c.url = on(0);
        assert_eq!(simple_call(&c).await.status, 200);
        // Unused everywhere: closed once, as idle.
        let started = Instant::now();
        loop {
            let (closed, _) = session_entries(&db, &id);
            if !closed.is_empty() {
                assert_eq!(closed, ["idle"]);
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "the idle session was never closed\n{}",
                logs(&configs)
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(session_entries(&db, &id).0, ["idle"], "closed once");
        for i in 0..2 {
            c.url = on(i);
            let answer = simple_call(&c).await;
            assert_eq!(answer.status, 404, "{answer:#?}");
        }
    });
    for p in procs.iter_mut() {
        terminate(p);
    }
}
