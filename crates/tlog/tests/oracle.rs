//! Merkle roots and proofs checked against an independent implementation (the `ct-merkle`
//! crate, RFC 6962/9162 hashing) for random trees, and corrupted proofs shown to fail.

use ct_merkle::mem_backed_tree::MemoryBackedTree;
use proptest::prelude::*;
use sha2::Sha256;
use tlog::proof::{
    MemoryStore, consistency_proof, inclusion_proof, verify_consistency, verify_inclusion,
};
use tlog::{CompactRange, Hash, leaf_hash};

fn build(n: usize) -> (MemoryBackedTree<Sha256, Vec<u8>>, Vec<Hash>, CompactRange) {
    let mut oracle = MemoryBackedTree::new();
    let mut leaves = Vec::new();
    let mut range = CompactRange::new();
    for i in 0..n {
        let data = format!("entry {i}").into_bytes();
        let leaf = leaf_hash(&data);
        oracle.push(data);
        leaves.push(leaf);
        range.append(leaf, |_| {});
    }
    (oracle, leaves, range)
}

fn hashes(bytes: &[u8]) -> Vec<Hash> {
    bytes
        .chunks(32)
        .map(|c| Hash::from_slice(c).unwrap())
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn roots_and_inclusion_match_the_oracle(n in 1usize..300, pick in any::<prop::sample::Index>()) {
        let (oracle, leaves, range) = build(n);
        let root = range.root();
        let oracle_root = oracle.root();
        prop_assert_eq!(root.0.as_slice(), oracle_root.as_bytes().as_slice());
        let idx = pick.index(n);
        let ours = inclusion_proof(&MemoryStore(&leaves), idx as u64, n as u64).unwrap();
        let theirs = hashes(oracle.prove_inclusion(idx).as_bytes());
        prop_assert_eq!(&ours, &theirs);
        prop_assert!(verify_inclusion(&leaves[idx], idx as u64, n as u64, &ours, &root).is_ok());
        // Any flipped bit, a wrong index or a wrong size fails.
        if !ours.is_empty() {
            let mut bad = ours.clone();
            bad[0].0[0] ^= 1;
            prop_assert!(verify_inclusion(&leaves[idx], idx as u64, n as u64, &bad, &root).is_err());
            let mut short = ours.clone();
            short.pop();
            prop_assert!(verify_inclusion(&leaves[idx], idx as u64, n as u64, &short, &root).is_err());
            let mut long = ours.clone();
            long.push(root);
            prop_assert!(verify_inclusion(&leaves[idx], idx as u64, n as u64, &long, &root).is_err());
        }
        if n > 1 {
            let other = (idx + 1) % n;
            prop_assert!(verify_inclusion(&leaves[idx], other as u64, n as u64, &ours, &root).is_err());
        }
        prop_assert!(verify_inclusion(&leaves[idx], n as u64, n as u64, &ours, &root).is_err());
    }

    #[test]
    fn consistency_matches_the_oracle(new in 2usize..300, old_pick in any::<prop::sample::Index>()) {
        let (oracle, leaves, range) = build(new);
        let old = 1 + old_pick.index(new - 1);
        let (_, _, old_range) = build(old);
        let ours = consistency_proof(&MemoryStore(&leaves), old as u64, new as u64).unwrap();
        if old < new {
            let theirs = hashes(oracle.prove_consistency(new - old).as_bytes());
            prop_assert_eq!(&ours, &theirs);
        }
        let (o, r) = (old_range.root(), range.root());
        prop_assert!(verify_consistency(old as u64, new as u64, &ours, &o, &r).is_ok());
        if !ours.is_empty() {
            let mut bad = ours.clone();
            let last = bad.len() - 1;
            bad[last].0[31] ^= 0x80;
            prop_assert!(verify_consistency(old as u64, new as u64, &bad, &o, &r).is_err());
            prop_assert!(verify_consistency(old as u64, new as u64, &ours[1..], &o, &r).is_err());
        }
        let mut wrong_root = o;
        wrong_root.0[0] ^= 1;
        prop_assert!(verify_consistency(old as u64, new as u64, &ours, &wrong_root, &r).is_err());
        prop_assert!(verify_consistency(new as u64, old as u64, &ours, &r, &o).is_err());
    }
}

#[test]
fn edge_cases() {
    let (_, leaves, range) = build(1);
    let p = inclusion_proof(&MemoryStore(&leaves), 0, 1).unwrap();
    assert!(p.is_empty());
    assert!(verify_inclusion(&leaves[0], 0, 1, &p, &range.root()).is_ok());
    assert!(verify_consistency(0, 5, &[], &Hash::empty(), &range.root()).is_ok());
    assert!(verify_consistency(3, 3, &[], &range.root(), &range.root()).is_ok());
    assert!(verify_consistency(3, 3, &[range.root()], &range.root(), &range.root()).is_err());
    assert!(inclusion_proof(&MemoryStore(&leaves), 1, 1).is_err());
}
