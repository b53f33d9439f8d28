//! The gateway's witness client against a third-party witness. Ignored by default: run by
//! `.ci/interop/witness.sh`, which starts the witness (aics-witness) and sets
//!
//! * `CUSTODY_INTEROP_WITNESS_URL`: its submission prefix;
//! * `CUSTODY_INTEROP_WITNESS_VKEY`: its cosigner verifier key;
//! * `CUSTODY_INTEROP_LOG_KEY`: a `custody keygen` log key file whose `.pub` the witness accepts.

mod witness_common;

use std::time::Duration;

use custody::witness::client::Outcome;
use tlog::Note;
use witness_common::*;

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set; run .ci/interop/witness.sh"))
}

#[tokio::test]
#[ignore = "needs a third-party witness; see .ci/interop/witness.sh"]
async fn third_party_witness() {
    let url = env("CUSTODY_INTEROP_WITNESS_URL");
    let vkey = env("CUSTODY_INTEROP_WITNESS_VKEY");
    let key = std::fs::read_to_string(env("CUSTODY_INTEROP_LOG_KEY")).unwrap();
    let log = Log::with_key(&key);
    let p = policy(&[("third-party", &vkey, &url)], "quorum third-party\n");
    let witnesses = client(p.clone(), Duration::from_secs(5));
    let outcome = |s: &custody::witness::client::Submission| s.outcomes[0].1.clone();

    // First contact (old 0), then growth with consistency proofs.
    for (step, grow) in [1, 4, 27, 1].into_iter().enumerate() {
        log.append(grow);
        let note = log.checkpoint();
        let s = witnesses.submit(&note, log.proofs()).await.unwrap();
        assert!(
            s.quorum,
            "step {step}, size {}: {}",
            log.size(),
            outcome(&s)
        );
        let cosigned = Note::parse(s.cosigned_note(&note).as_bytes()).unwrap();
        assert!(p.check(&cosigned).met);
        println!(
            "ok   cosigned size {} by the third-party witness",
            log.size()
        );
    }
    // A client without memory: old 0, 409 with the witness's size, re-sync.
    log.append(6);
    let fresh = client(p.clone(), Duration::from_secs(5));
    let s = fresh.submit(&log.checkpoint(), log.proofs()).await.unwrap();
    assert!(s.quorum, "{}", outcome(&s));
    println!(
        "ok   re-synced from its 409 and cosigned size {}",
        log.size()
    );

    // The monitoring endpoint serves a checkpoint our tlog verifies.
    let served = reqwest::get(format!(
        "{url}/{}/checkpoint",
        tlog::witness::origin_hash(&log.origin())
    ))
    .await
    .unwrap();
    assert_eq!(served.status().as_u16(), 200);
    let served = Note::parse(served.text().await.unwrap().as_bytes()).unwrap();
    log.verifier().verify(&served).unwrap();
    assert!(p.check(&served).met);
    println!("ok   its monitoring checkpoint verifies with the log key and the policy");

    // A rewritten history re-signed with the log's key: a fork.
    let forged = log.rewritten(2);
    let s = fresh
        .submit(&forged.checkpoint(), forged.proofs())
        .await
        .unwrap();
    assert!(
        matches!(outcome(&s), Outcome::Fork { .. }),
        "{}",
        outcome(&s)
    );
    println!("ok   a rewritten history is refused: {}", outcome(&s));
    // A restored backup: the witness is ahead.
    let old = log.truncated(3);
    let s = client(p, Duration::from_secs(5))
        .submit(&old.checkpoint(), old.proofs())
        .await
        .unwrap();
    assert!(
        matches!(outcome(&s), Outcome::Rollback { .. }),
        "{}",
        outcome(&s)
    );
    println!("ok   a restored backup is refused: {}", outcome(&s));
}
