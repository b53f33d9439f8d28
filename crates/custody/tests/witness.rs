//! Witnesses end to end on loopback: the gateway's client against built-in witnesses (and
//! against broken and hostile ones), each attack of issue 14 failing in the way it names.

mod witness_common;

use std::time::{Duration, Instant};

use custody::witness::client::Outcome;
use tlog::Note;
use witness_common::*;

const TIMEOUT: Duration = Duration::from_secs(2);

/// Every outcome of a submission: those before it returned and the late ones.
async fn everything(mut s: custody::witness::client::Submission) -> Vec<(String, Outcome)> {
    let mut all = s.outcomes.clone();
    while let Some(o) = tokio::time::timeout(TIMEOUT * 2, s.late.recv())
        .await
        .unwrap()
    {
        all.push(o);
    }
    all
}

fn kinds(outcomes: &[(String, Outcome)]) -> Vec<(String, &'static str)> {
    let mut k: Vec<_> = outcomes
        .iter()
        .map(|(w, o)| (w.clone(), o.kind()))
        .collect();
    k.sort();
    k
}

/// Two witnesses, 2-of-2, a log that grows: every checkpoint reaches quorum, with real
/// consistency proofs, and the cosigned note satisfies the policy offline.
#[tokio::test]
async fn two_witnesses_cosign_a_growing_log() {
    let log = Log::new();
    let a = TestWitness::start("a.witness.example", &log).await;
    let b = TestWitness::start("b.witness.example", &log).await;
    let p = policy(
        &[("a", &a.vkey, &a.url), ("b", &b.vkey, &b.url)],
        "group both all a b\nquorum both\n",
    );
    let witnesses = client(p.clone(), TIMEOUT);
    for grow in [1, 4, 12, 1, 100] {
        log.append(grow);
        let note = log.checkpoint();
        let s = witnesses.submit(&note, log.proofs()).await.unwrap();
        assert!(s.quorum, "size {}: {:?}", log.size(), kinds(&s.outcomes));
        assert_eq!(s.cosignatures.len(), 2);
        let cosigned = Note::parse(s.cosigned_note(&note).as_bytes()).unwrap();
        assert!(p.check(&cosigned).met);
        log.verifier().verify(&cosigned).unwrap();
    }
    // Each witness serves what it cosigned, with the log's signature and its cosignature.
    let (status, served) = a.monitor(ORIGIN).await;
    assert_eq!(status, 200);
    let served = Note::parse(served.as_bytes()).unwrap();
    assert!(served.text.contains(&format!("\n{}\n", log.size())));
    log.verifier().verify(&served).unwrap();
    assert_eq!(p.check(&served).cosigners.len(), 1);
    for w in witnesses.status() {
        assert_eq!(w.cosigned_size, Some(log.size()), "{w:?}");
    }
    // A gateway that restarts knows nothing: its first request says `old 0`, the witnesses
    // answer 409 with their size, and the client re-syncs with a proof from there.
    log.append(3);
    let fresh = client(p.clone(), TIMEOUT);
    let s = fresh.submit(&log.checkpoint(), log.proofs()).await.unwrap();
    assert!(s.quorum, "{:?}", kinds(&s.outcomes));
    assert_eq!(s.cosignatures.len(), 2);
}

/// The operator rewrites history after witnesses cosigned it and re-signs with the real key:
/// every witness refuses, as a fork, whether the client remembers their sizes or not.
#[tokio::test]
async fn a_rewritten_history_is_a_fork_for_every_witness() {
    let log = Log::new();
    log.append(10);
    let a = TestWitness::start("a.witness.example", &log).await;
    let b = TestWitness::start("b.witness.example", &log).await;
    let p = policy(
        &[("a", &a.vkey, &a.url), ("b", &b.vkey, &b.url)],
        "group both all a b\nquorum both\n",
    );
    let witnesses = client(p.clone(), TIMEOUT);
    assert!(
        witnesses
            .submit(&log.checkpoint(), log.proofs())
            .await
            .unwrap()
            .quorum
    );

    // Same size, entry 3 changed, signed with the log's own key.
    let forged = log.rewritten(3);
    let s = witnesses
        .submit(&forged.checkpoint(), forged.proofs())
        .await
        .unwrap();
    assert!(!s.quorum);
    assert!(s.cosignatures.is_empty());
    // It returns at the first fork (2-of-2 can no longer be met); the other comes late.
    assert!(s.alarms().count() >= 1, "{:?}", kinds(&s.outcomes));
    assert_eq!(
        kinds(&everything(s).await),
        [("a".into(), "fork"), ("b".into(), "fork")]
    );
    let (who, what) = witnesses.alarm().expect("an alarm is raised");
    assert!(what.contains("FORK"), "{who}: {what}");
    // The alarm is never retried away: the next checkpoint, even a good one, is not sent.
    log.append(1);
    let s = witnesses
        .submit(&log.checkpoint(), log.proofs())
        .await
        .unwrap();
    assert!(!s.quorum);
    let all = everything(s).await;
    assert_eq!(all.len(), 2);
    assert!(
        all.iter()
            .all(|(_, o)| o.to_string().contains("not asked again"))
    );

    // A restarted gateway (no memory of the witnesses) with a longer rewritten history: the
    // 409 re-sync sends a proof from size 10 of the forged tree, and the witnesses refuse it.
    let forged = log.rewritten(3);
    forged.append(5);
    let fresh = client(p.clone(), TIMEOUT);
    let s = fresh
        .submit(&forged.checkpoint(), forged.proofs())
        .await
        .unwrap();
    assert!(!s.quorum);
    assert_eq!(
        kinds(&everything(s).await),
        [("a".into(), "fork"), ("b".into(), "fork")]
    );
    // The refused, log-signed checkpoints are kept as evidence by the witness.
    let evidence = a.dir.path().join("evidence");
    let kept: usize = std::fs::read_dir(&evidence)
        .unwrap()
        .map(|d| std::fs::read_dir(d.unwrap().path()).unwrap().count())
        .sum();
    assert!(kept >= 2, "{kept} requests kept in {}", evidence.display());
}

/// A gateway restored from an old backup: the witnesses have cosigned more than it has.
#[tokio::test]
async fn a_restored_backup_is_a_rollback() {
    let log = Log::new();
    log.append(10);
    let a = TestWitness::start("a.witness.example", &log).await;
    let p = policy(&[("a", &a.vkey, &a.url)], "quorum a\n");
    let witnesses = client(p.clone(), TIMEOUT);
    assert!(
        witnesses
            .submit(&log.checkpoint(), log.proofs())
            .await
            .unwrap()
            .quorum
    );

    // The witness refuses to go back: 409 with the size it cosigned.
    let old = log.truncated(5);
    let (status, ct, body) = a.post(old.body(0)).await;
    assert_eq!(
        (status, ct.as_deref(), body.as_str()),
        (409, Some("text/x.tlog.size"), "10\n")
    );
    // The client sees the witness ahead of its log: an alarm, from memory or after a 409.
    let s = witnesses
        .submit(&old.checkpoint(), old.proofs())
        .await
        .unwrap();
    assert!(matches!(
        s.outcomes[0].1,
        Outcome::Rollback {
            witness_size: 10,
            size: 5
        }
    ));
    let fresh = client(p, TIMEOUT);
    let s = fresh.submit(&old.checkpoint(), old.proofs()).await.unwrap();
    assert!(!s.quorum);
    assert!(s.outcomes[0].1.is_alarm(), "{}", s.outcomes[0].1);
}

/// A witness that is down: 1-of-2 still reaches quorum, 2-of-2 does not; the down witness is
/// reported and backed off, and recovers when it comes back.
#[tokio::test]
async fn a_witness_that_is_down() {
    let log = Log::new();
    log.append(3);
    let a = TestWitness::start("a.witness.example", &log).await;
    let b = TestWitness::start("b.witness.example", &log).await;
    let b_url = b.url.clone();
    let b_dir = b.stop().await;
    let one = policy(
        &[("a", &a.vkey, &a.url), ("b", &b_url_vkey(&b_dir), &b_url)],
        "group one any a b\nquorum one\n",
    );
    let s = client(one, TIMEOUT)
        .submit(&log.checkpoint(), log.proofs())
        .await
        .unwrap();
    assert!(s.quorum);
    let both = policy(
        &[("a", &a.vkey, &a.url), ("b", &b_url_vkey(&b_dir), &b_url)],
        "group both all a b\nquorum both\n",
    );
    let witnesses = client(both, TIMEOUT);
    log.append(1);
    let s = witnesses
        .submit(&log.checkpoint(), log.proofs())
        .await
        .unwrap();
    assert!(!s.quorum);
    let all = everything(s).await;
    let down = all.iter().find(|(w, _)| w == "b").map(|(_, o)| o);
    assert!(
        matches!(down, Some(Outcome::Unavailable { .. })),
        "{down:?}"
    );
    assert!(
        down.unwrap().to_string().contains("couldn't reach"),
        "{down:?}"
    );
    // Asked again at once: backing off, no request.
    let s = witnesses
        .submit(&log.checkpoint(), log.proofs())
        .await
        .unwrap();
    let all = everything(s).await;
    let down = all
        .iter()
        .find(|(w, _)| w == "b")
        .map(|(_, o)| o.to_string());
    assert!(
        down.as_deref().unwrap_or("").contains("backing off"),
        "{down:?}"
    );
    // It comes back on another port (the old one may be taken); after the backoff, quorum.
    let b = TestWitness::start_in(b_dir, &log).await;
    let both = policy(
        &[("a", &a.vkey, &a.url), ("b", &b.vkey, &b.url)],
        "group both all a b\nquorum both\n",
    );
    let witnesses = client(both, TIMEOUT);
    log.append(1);
    let s = witnesses
        .submit(&log.checkpoint(), log.proofs())
        .await
        .unwrap();
    assert!(s.quorum, "{:?}", kinds(&s.outcomes));
}

fn b_url_vkey(dir: &tempfile::TempDir) -> String {
    std::fs::read_to_string(dir.path().join("witness.vkey"))
        .unwrap()
        .trim()
        .to_string()
}

/// Broken and hostile witnesses (garbage, another key, another checkpoint, an old date, a
/// slow answer) are ignored and reported, and cannot block a quorum the others meet; the
/// slow one does not delay it.
#[tokio::test]
async fn misbehaving_witnesses_are_ignored_and_reported() {
    let log = Log::new();
    log.append(7);
    let a = TestWitness::start("a.witness.example", &log).await;
    let b = TestWitness::start("b.witness.example", &log).await;
    let (garbage, gk) = bad_witness("garbage.example", Misbehaviour::Garbage).await;
    let (wrong, wk) = bad_witness("wrong.example", Misbehaviour::WrongKey).await;
    let (other, ok) = bad_witness("other.example", Misbehaviour::OtherCheckpoint).await;
    let (old, odk) = bad_witness("old.example", Misbehaviour::OldTimestamp).await;
    let (slow, sk) = bad_witness("slow.example", Misbehaviour::Slow(Duration::from_secs(10))).await;
    let p = policy(
        &[
            ("a", &a.vkey, &a.url),
            ("b", &b.vkey, &b.url),
            ("garbage", &gk, &garbage),
            ("wrong", &wk, &wrong),
            ("other", &ok, &other),
            ("old", &odk, &old),
            ("slow", &sk, &slow),
        ],
        "group two 2 a b garbage wrong other old slow\nquorum two\n",
    );
    let witnesses = client(p.clone(), TIMEOUT);
    let started = Instant::now();
    let s = witnesses
        .submit(&log.checkpoint(), log.proofs())
        .await
        .unwrap();
    let took = started.elapsed();
    assert!(s.quorum, "{:?}", kinds(&s.outcomes));
    assert!(took < Duration::from_secs(1), "quorum took {took:?}");
    let mut names: Vec<&str> = s.cosignatures.iter().map(|c| c.witness.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, ["a", "b"]);
    assert!(s.pending.contains(&"slow".to_string()));
    // Everything else arrives on `late`, within the timeout.
    let note = s.cosigned_note(&log.checkpoint());
    let all = everything(s).await;
    let get = |name: &str| {
        all.iter()
            .find(|(w, _)| w == name)
            .map(|(_, o)| o.clone())
            .unwrap()
    };
    for name in ["garbage", "wrong", "other", "old"] {
        assert!(
            matches!(get(name), Outcome::Invalid { .. }),
            "{name}: {}",
            get(name)
        );
    }
    assert!(
        get("wrong")
            .to_string()
            .contains("no cosignature by its key")
    );
    assert!(get("other").to_string().contains("does not verify"));
    assert!(get("old").to_string().contains("clock"));
    assert!(
        matches!(get("slow"), Outcome::Unavailable { .. }),
        "{}",
        get("slow")
    );
    assert!(started.elapsed() < TIMEOUT + Duration::from_secs(1));
    // Nothing misbehaving counts offline either.
    assert_eq!(
        p.check(&Note::parse(note.as_bytes()).unwrap())
            .cosigners
            .len(),
        2
    );
}

/// The witness's own refusals (tlog-witness §add-checkpoint), status by status.
#[tokio::test]
async fn the_witness_refuses_as_the_spec_says() {
    let log = Log::new();
    log.append(4);
    let w = TestWitness::start("w.witness.example", &log).await;
    // 404: an origin it does not accept.
    let stranger = tlog::Checkpoint {
        origin: "stranger.example/log".into(),
        ..log.checkpoint_struct()
    }
    .sign(&tlog::Signer::new("stranger.example/log", [1; 32]).unwrap())
    .encode();
    let (s, _, body) = w.post(format!("old 0\n\n{stranger}")).await;
    assert_eq!(s, 404, "{body}");
    // 403: the right origin signed by another key.
    let impostor = log
        .checkpoint_struct()
        .sign(&tlog::Signer::new(ORIGIN, [2; 32]).unwrap())
        .encode();
    let (s, _, body) = w.post(format!("old 0\n\n{impostor}")).await;
    assert_eq!(s, 403, "{body}");
    // 403: the trusted key's line, but the signature does not verify.
    let tampered = log.checkpoint().replacen("\n4\n", "\n5\n", 1);
    let (s, _, body) = w.post(format!("old 0\n\n{tampered}")).await;
    assert_eq!(s, 403, "{body}");
    // 400: not a request; an old size above the checkpoint's.
    let (s, _, body) = w.post("hello").await;
    assert_eq!(s, 400, "{body}");
    assert!(body.contains("line 1"), "{body}");
    let (s, _, _) = w.post(format!("old 9\n\n{}", log.checkpoint())).await;
    assert_eq!(s, 400);
    // 413: larger than any valid request.
    let (s, _, _) = w.post(vec![b'a'; 200_000]).await;
    assert_eq!(s, 413);
    // 422: a proof with old size 0.
    let (s, _, _) = w
        .post(format!(
            "old 0\n{}\n\n{}",
            "PlRNCrwHpqhGrupue0L7gxbjbMiKA9temvuZZDDpkaw=",
            log.checkpoint()
        ))
        .await;
    assert_eq!(s, 422);
    // 200, then 409 for a stale old size, 422 for a bad proof.
    let (s, ct, line) = w.post(log.body(0)).await;
    assert_eq!((s, ct.as_deref()), (200, Some("text/plain; charset=utf-8")));
    assert!(line.starts_with("\u{2014} w.witness.example "), "{line}");
    log.append(4);
    let (s, _, size) = w.post(log.body(0)).await;
    assert_eq!((s, size.as_str()), (409, "4\n"));
    let mut body = log.body(4);
    body = body.replacen('\n', "\nPlRNCrwHpqhGrupue0L7gxbjbMiKA9temvuZZDDpkaw=\n", 1);
    let (s, _, _) = w.post(body).await;
    assert_eq!(s, 422);
    let (s, _, _) = w.post(log.body(4)).await;
    assert_eq!(s, 200);
    // Monitoring: unknown origin hash → 404.
    let (s, _) = w.monitor("nobody.example").await;
    assert_eq!(s, 404);
}

/// The witness's state survives a restart: it still refuses to go back or fork.
#[tokio::test]
async fn a_restarted_witness_still_refuses_to_go_back() {
    let log = Log::new();
    log.append(10);
    let w = TestWitness::start("w.witness.example", &log).await;
    let (s, _, _) = w.post(log.body(0)).await;
    assert_eq!(s, 200);
    let dir = w.stop().await;
    let w = TestWitness::start_in(dir, &log).await;
    let (s, _, size) = w.post(log.truncated(5).body(0)).await;
    assert_eq!((s, size.as_str()), (409, "10\n"));
    let (s, _, _) = w.post(log.rewritten(2).body(10)).await;
    assert_eq!(s, 422);
    let (s, served) = w.monitor(ORIGIN).await;
    assert_eq!(s, 200);
    assert!(served.contains("\n10\n"));
}

/// Witnesses of tlog-witness v1.0.0 answered a different root at the size they hold with 409
/// (naming that size, or with no size at all): a fork too, never a re-sync loop.
#[tokio::test]
async fn an_older_witness_conflict_is_a_fork() {
    let log = Log::new();
    log.append(7);
    for with_size in [true, false] {
        let (url, vkey) = bad_witness("v1.example", Misbehaviour::V1Conflict(with_size)).await;
        let p = policy(&[("v1", &vkey, &url)], "quorum v1\n");
        let witnesses = client(p, TIMEOUT);
        witnesses.set_cosigned("v1", 7);
        let s = witnesses
            .submit(&log.checkpoint(), log.proofs())
            .await
            .unwrap();
        assert!(!s.quorum);
        assert!(
            matches!(s.outcomes[0].1, Outcome::Fork { .. }),
            "{with_size}: {}",
            s.outcomes[0].1
        );
    }
}

/// Not run by default: how long a checkpoint takes to reach a 2-of-2 quorum of two local
/// built-in witnesses (each fsyncs its state before answering), from submit to return.
/// `cargo test -p custody --release --test witness -- --ignored --nocapture quorum_latency`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement"]
async fn quorum_latency() {
    let log = Log::new();
    let a = TestWitness::start("a.witness.example", &log).await;
    let b = TestWitness::start("b.witness.example", &log).await;
    let p = policy(
        &[("a", &a.vkey, &a.url), ("b", &b.vkey, &b.url)],
        "group both all a b\nquorum both\n",
    );
    let witnesses = client(p, TIMEOUT);
    let mut took = Vec::new();
    for _ in 0..300 {
        log.append(50);
        let note = log.checkpoint();
        let started = Instant::now();
        let s = witnesses.submit(&note, log.proofs()).await.unwrap();
        took.push(started.elapsed());
        assert!(s.quorum, "{:?}", kinds(&s.outcomes));
    }
    took.sort_unstable();
    let pct = |p: usize| took[(took.len() * p / 100).min(took.len() - 1)];
    println!(
        "quorum latency over {} checkpoints (2-of-2, local witnesses): p50 {:?}, p99 {:?}, max {:?}",
        took.len(),
        pct(50),
        pct(99),
        took[took.len() - 1]
    );
}
