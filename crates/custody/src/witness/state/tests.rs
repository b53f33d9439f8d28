use tlog::hash::leaf_hash;
use tlog::proof::{MemoryStore, consistency_proof};

use super::*;

fn leaves(n: u64) -> Vec<Hash> {
    (0..n).map(|i| leaf_hash(&i.to_be_bytes())).collect()
}

fn root(leaves: &[Hash]) -> Hash {
    let mut c = tlog::CompactRange::new();
    for l in leaves {
        c.append(*l, |_| {});
    }
    c.root()
}

fn cp(leaves: &[Hash]) -> Checkpoint {
    Checkpoint {
        origin: "log.example".into(),
        size: leaves.len() as u64,
        root: root(leaves),
        extensions: vec![],
    }
}

fn proof(all: &[Hash], old: u64, new: u64) -> Vec<Hash> {
    consistency_proof(&MemoryStore(all), old, new).unwrap()
}

#[test]
fn the_checks_of_add_checkpoint() {
    let all = leaves(10);
    let five = cp(&all[..5]);
    let ten = cp(&all);
    // First contact: old 0, no proof.
    assert_eq!(check(None, 0, &[], &five), Ok(()));
    // Extending with a good proof.
    assert_eq!(check(Some(&five), 5, &proof(&all, 5, 10), &ten), Ok(()));
    // The same checkpoint again.
    assert_eq!(check(Some(&ten), 10, &[], &ten), Ok(()));
    // 400: the old size is above the checkpoint's.
    assert!(matches!(
        check(Some(&ten), 10, &[], &five),
        Err(Refusal::BadRequest(_))
    ));
    // 409: the old size is not what was cosigned.
    assert_eq!(
        check(Some(&ten), 5, &proof(&all, 5, 10), &ten),
        Err(Refusal::Conflict { old: 5, size: 10 })
    );
    assert_eq!(
        check(None, 5, &proof(&all, 5, 10), &ten),
        Err(Refusal::Conflict { old: 5, size: 0 })
    );
    // 422: a proof with old size 0.
    assert!(matches!(
        check(None, 0, &proof(&all, 5, 10), &ten),
        Err(Refusal::Inconsistent(_))
    ));
    // 422: a size-0 checkpoint without the empty root.
    let bad_empty = Checkpoint {
        size: 0,
        ..five.clone()
    };
    assert!(matches!(
        check(None, 0, &[], &bad_empty),
        Err(Refusal::Inconsistent(_))
    ));
    // 422: the same size with another root (v1.0.0 witnesses answered 409).
    let mut other = leaves(10);
    other[3] = leaf_hash(b"rewritten");
    let forked = cp(&other);
    assert!(matches!(
        check(Some(&ten), 10, &[], &forked),
        Err(Refusal::Inconsistent(m)) if m.contains("fork")
    ));
    // 422: a rewritten history with a proof from its own tree.
    let more: Vec<Hash> = other
        .iter()
        .copied()
        .chain(leaves(12)[10..].iter().copied())
        .collect();
    assert!(matches!(
        check(Some(&ten), 10, &proof(&more, 10, 12), &cp(&more)),
        Err(Refusal::Inconsistent(_))
    ));
    // 422: a proof of the wrong length.
    assert!(matches!(
        check(Some(&five), 5, &[], &ten),
        Err(Refusal::Inconsistent(_))
    ));
}

#[test]
fn atomic_writes_replace_and_leave_no_temporary_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state");
    write_atomic(&path, b"one").unwrap();
    write_atomic(&path, b"two").unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"two");
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["state"]);
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
}

#[test]
fn a_damaged_state_file_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let signer = CosignatureSigner::new("w.example", [5; 32]).unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let path = logs.join(tlog::witness::origin_hash("log.example"));
    // A note cosigned by another key: not this witness's state.
    let other = CosignatureSigner::new("w.example", [6; 32]).unwrap();
    let text = cp(&leaves(3)).to_text();
    let note = Note {
        text: text.clone(),
        signatures: vec![other.sign(&text, 100).unwrap()],
    };
    std::fs::write(&path, note.encode()).unwrap();
    let Err(err) = Store::open(dir.path(), ["log.example"], &signer.verifier()) else {
        panic!("a state file cosigned by another key was accepted")
    };
    assert!(err.to_string().contains("damaged"), "{err}");
    std::fs::write(&path, "garbage").unwrap();
    assert!(Store::open(dir.path(), ["log.example"], &signer.verifier()).is_err());
    // Its own cosignature, but for another origin.
    let foreign = Checkpoint {
        origin: "other.example".into(),
        ..cp(&leaves(3))
    }
    .to_text();
    let note = Note {
        text: foreign.clone(),
        signatures: vec![signer.sign(&foreign, 100).unwrap()],
    };
    std::fs::write(&path, note.encode()).unwrap();
    let Err(err) = Store::open(dir.path(), ["log.example"], &signer.verifier()) else {
        panic!("a state file of another origin was accepted")
    };
    assert!(err.to_string().contains("other.example"), "{err}");
}
