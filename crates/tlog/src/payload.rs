//! Payloads committed beside the tree (entry version 2).
//!
//! A payload (the masked message, the recorded upstream headers) is not part of the entry the
//! tree hashes; the entry holds its length and a salted commitment
//!
//! ```text
//! SHA-256("custody payload commitment v1\0" || opening || payload)
//! ```
//!
//! where `opening` is 32 random bytes kept (with the payload) in the gateway's payload store.
//! With the opening, anyone can check the payload against the signed tree; without it, the
//! commitment reveals nothing about the payload (it cannot be guessed and checked, even for a
//! payload from a small set). Erasing a payload means deleting it and its opening: the leaf,
//! every proof and every checkpoint stay valid.

use sha2::{Digest, Sha256};

use crate::hash::Hash;

/// The domain-separation tag of payload commitments.
pub const TAG: &[u8] = b"custody payload commitment v1\0";

/// The slot of the JSON-RPC message as recorded (its audit copy).
pub const MESSAGE: u8 = 1;
/// The slot of the upstream's recorded response headers (JSON, masked).
pub const HEADERS: u8 = 2;

/// One payload's commitment, as an entry holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Commitment {
    pub slot: u8,
    pub length: u64,
    pub hash: Hash,
}

/// The commitment to `payload` with `opening`.
pub fn commit(opening: &[u8; 32], payload: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update(TAG);
    h.update(opening);
    h.update(payload);
    Hash(h.finalize().into())
}

/// Whether `payload` with `opening` is what `c` commits to (length and hash).
pub fn opens(c: &Commitment, opening: &[u8; 32], payload: &[u8]) -> bool {
    c.length == payload.len() as u64 && commit(opening, payload) == c.hash
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_commitment_opens_only_with_its_opening_and_payload() {
        let opening = [7u8; 32];
        let c = Commitment {
            slot: MESSAGE,
            length: 5,
            hash: commit(&opening, b"hello"),
        };
        assert!(opens(&c, &opening, b"hello"));
        assert!(!opens(&c, &opening, b"hellp"));
        assert!(!opens(&c, &[8u8; 32], b"hello"));
        assert_ne!(commit(&opening, b""), commit(&[0; 32], b""));
    }
}
