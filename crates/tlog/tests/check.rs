//! The log checker against every kind of tampering.

use std::borrow::Cow;

use tlog::check::LogCheck;
use tlog::entry::{Direction, Entry, Kind};
use tlog::{Checkpoint, CompactRange, Signer, leaf_hash};

const ORIGIN: &str = "custody.test/log";

fn entry(index: u64, kind: Kind, request: Option<u64>) -> Vec<u8> {
    let direction = if kind == Kind::Request {
        Direction::ClientToUpstream
    } else {
        Direction::UpstreamToClient
    };
    Entry {
        index,
        kind,
        direction,
        time_ns: 1_000 + index,
        endpoint: "demo".into(),
        session: "s".into(),
        id: request.unwrap_or(index).to_string().into(),
        method: "tools/call".into(),
        target: "echo".into(),
        caller: "{}".into(),
        request,
        detail: "{}".into(),
        message: Cow::Owned(format!("{{\"n\":{index}}}").into_bytes()),
        version: tlog::entry::V1,
        commitments: Vec::new(),
    }
    .encode()
}

/// A log of request/response pairs with a checkpoint every `every` entries.
fn log(n: u64, every: u64, signer: &Signer) -> (Vec<Vec<u8>>, Vec<String>) {
    let mut entries = Vec::new();
    let mut range = CompactRange::new();
    let mut checkpoints = Vec::new();
    for i in 0..n {
        let e = if i % 2 == 0 {
            entry(i, Kind::Request, None)
        } else {
            entry(i, Kind::Response, Some(i - 1))
        };
        range.append(leaf_hash(&e), |_| {});
        entries.push(e);
        if (i + 1) % every == 0 {
            checkpoints.push(checkpoint(&range, signer));
        }
    }
    (entries, checkpoints)
}

fn checkpoint(range: &CompactRange, signer: &Signer) -> String {
    Checkpoint {
        origin: ORIGIN.into(),
        size: range.size(),
        root: range.root(),
        extensions: vec![],
    }
    .sign(signer)
    .encode()
}

fn run(
    entries: &[(u64, Vec<u8>)],
    checkpoints: &[String],
    signer: &Signer,
    trusted: Option<&str>,
) -> Result<tlog::check::Summary, tlog::check::Problem> {
    let mut c = LogCheck::new(signer.verifier());
    for (i, cp) in checkpoints.iter().enumerate() {
        c.add_checkpoint(cp.as_bytes(), &format!("checkpoint {i}"), false)?;
    }
    if let Some(t) = trusted {
        c.add_checkpoint(t.as_bytes(), "the trusted checkpoint", true)?;
    }
    for (i, e) in entries {
        c.push(*i, e, None)?;
    }
    c.finish()
}

fn indexed(entries: &[Vec<u8>]) -> Vec<(u64, Vec<u8>)> {
    entries
        .iter()
        .cloned()
        .enumerate()
        .map(|(i, e)| (i as u64, e))
        .collect()
}

#[test]
fn an_intact_log_verifies() {
    let signer = Signer::new(ORIGIN, [1; 32]).unwrap();
    let (entries, cps) = log(100, 10, &signer);
    let s = run(&indexed(&entries), &cps, &signer, None).unwrap();
    assert_eq!(s.entries, 100);
    assert_eq!(s.checkpoints, 10);
    assert_eq!(s.unanswered_requests, 0);
}

#[test]
fn a_changed_byte_is_found() {
    let signer = Signer::new(ORIGIN, [1; 32]).unwrap();
    let (entries, cps) = log(100, 10, &signer);
    let mut bad = indexed(&entries);
    let last = bad[37].1.len() - 2;
    bad[37].1[last] ^= 1;
    let p = run(&bad, &cps, &signer, None).unwrap_err();
    assert_eq!(p.index, Some(30), "{p}");
    assert!(p.message.contains("do not hash to the root"), "{p}");
    // With the leaf hash stored beside the entry, the exact entry is named.
    let mut c = LogCheck::new(signer.verifier());
    let err = bad
        .iter()
        .try_for_each(|(i, e)| c.push(*i, e, Some(leaf_hash(&entries[*i as usize]))))
        .unwrap_err();
    assert_eq!(err.index, Some(37), "{err}");
}

#[test]
fn deleted_swapped_inserted_and_truncated_entries_are_found() {
    let signer = Signer::new(ORIGIN, [1; 32]).unwrap();
    let (entries, cps) = log(100, 10, &signer);
    let all = indexed(&entries);

    let mut deleted = all.clone();
    deleted.remove(42);
    let p = run(&deleted, &cps, &signer, None).unwrap_err();
    assert_eq!(p.index, Some(42), "{p}");
    assert!(p.message.contains("deleted"), "{p}");

    let mut renumbered: Vec<(u64, Vec<u8>)> = entries
        .iter()
        .cloned()
        .enumerate()
        .filter(|(i, _)| *i != 42)
        .map(|(_, e)| e)
        .enumerate()
        .map(|(i, e)| (i as u64, e))
        .collect();
    renumbered.truncate(90);
    let p = run(&renumbered, &cps, &signer, None).unwrap_err();
    assert_eq!(p.index, Some(42), "{p}");

    let mut swapped = all.clone();
    let (a, b) = (swapped[10].1.clone(), swapped[11].1.clone());
    swapped[10].1 = b;
    swapped[11].1 = a;
    let p = run(&swapped, &cps, &signer, None).unwrap_err();
    assert_eq!(p.index, Some(10), "{p}");
    assert!(p.message.contains("reordered"), "{p}");

    let mut inserted = all.clone();
    inserted.insert(50, (50, entry(50, Kind::Request, None)));
    for (i, e) in inserted.iter_mut().enumerate() {
        e.0 = i as u64;
    }
    let p = run(&inserted, &cps, &signer, None).unwrap_err();
    assert_eq!(p.index, Some(51), "{p}");

    let truncated = all[..95].to_vec();
    let p = run(&truncated, &cps, &signer, None).unwrap_err();
    assert_eq!(p.index, Some(95), "{p}");
    assert!(p.message.contains("tail was removed"), "{p}");
}

#[test]
fn a_replaced_signature_is_found() {
    let signer = Signer::new(ORIGIN, [1; 32]).unwrap();
    let (entries, mut cps) = log(20, 10, &signer);
    let forger = Signer::new(ORIGIN, [9; 32]).unwrap();
    let text = tlog::Note::parse(cps[0].as_bytes()).unwrap().text;
    let mut forged = forger.sign(&text);
    forged.signatures[0].key_id =
        tlog::Note::parse(cps[0].as_bytes()).unwrap().signatures[0].key_id;
    cps[0] = forged.encode();
    let p = run(&indexed(&entries), &cps, &signer, None).unwrap_err();
    assert!(
        p.message.contains("checkpoint 0 is not a valid checkpoint")
            && p.message.contains("does not verify"),
        "{p}"
    );
}

#[test]
fn a_log_reforged_with_the_real_key_fails_against_a_trusted_checkpoint() {
    let signer = Signer::new(ORIGIN, [1; 32]).unwrap();
    let (entries, cps) = log(40, 10, &signer);
    let trusted = cps[1].clone();
    // The operator rewrites entry 5 and re-signs every checkpoint with the real key.
    let mut forged = entries.clone();
    forged[5] = {
        let mut e = Entry::decode(&entries[5]).unwrap().into_owned();
        e.message = Cow::Owned(b"{\"n\":\"rewritten\"}".to_vec());
        e.encode()
    };
    let mut range = CompactRange::new();
    let mut new_cps = Vec::new();
    for (i, e) in forged.iter().enumerate() {
        range.append(leaf_hash(e), |_| {});
        if (i + 1) % 10 == 0 {
            new_cps.push(checkpoint(&range, &signer));
        }
    }
    assert!(
        run(&indexed(&forged), &new_cps, &signer, None).is_ok(),
        "self-consistent on its own"
    );
    let p = run(&indexed(&forged), &new_cps, &signer, Some(&trusted)).unwrap_err();
    assert!(p.message.contains("forked"), "{p}");
    let p = run(&indexed(&forged), &[], &signer, Some(&trusted)).unwrap_err();
    assert_eq!(p.index, Some(0), "{p}");
    assert!(p.message.contains("the trusted checkpoint"), "{p}");
}

#[test]
fn answers_must_match_their_requests() {
    let signer = Signer::new(ORIGIN, [1; 32]).unwrap();
    let e0 = entry(0, Kind::Request, None);
    let e1 = entry(1, Kind::Response, Some(0));
    let e2 = entry(2, Kind::Response, Some(0));
    let p = run(&indexed(&[e0.clone(), e1, e2]), &[], &signer, None).unwrap_err();
    assert_eq!(p.index, Some(2));
    assert!(p.message.contains("already answered"), "{p}");
    let bogus = entry(1, Kind::Response, Some(5));
    let p = run(&indexed(&[e0, bogus]), &[], &signer, None).unwrap_err();
    assert!(p.message.contains("not earlier"), "{p}");
}
