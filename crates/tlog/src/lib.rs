//! `tlog`: the transparency-log library behind custody's audit log.
//!
//! It implements the standards a third party needs to check the log without trusting custody:
//!
//! * [`hash`]: RFC 9162 §2.1.1 Merkle hashing with domain separation;
//! * [`compact`]: the compact range, O(log n) state that appends a leaf and yields the root;
//! * [`proof`]: RFC 9162 §2.1.3–2.1.4 inclusion and consistency proofs, generated from a
//!   [`proof::HashStore`] (the one storage trait) and verified from the proof alone;
//! * [`note`]: C2SP signed notes with Ed25519, verifier and signer key strings;
//! * [`checkpoint`]: C2SP checkpoints;
//! * [`cosignature`]: C2SP tlog-cosignature, Ed25519 `cosignature/v1` witness cosignatures;
//! * [`policy`]: C2SP tlog-policy, known logs and witnesses and the quorum rule;
//! * [`witness`]: the wire formats of C2SP tlog-witness (`add-checkpoint`);
//! * [`receipt`]: C2SP tlog-proof, offline-verifiable proofs of inclusion;
//! * [`entry`]: custody's canonical entry encoding (version 2: a header and commitments);
//! * [`payload`]: salted commitments to the payloads kept beside the tree;
//! * [`tiles`]: C2SP tlog-tiles paths, the tiles of a tree, entry bundles;
//! * [`check`]: verifying a whole log from its entries and checkpoints.
//!
//! Deliberately out of scope: I/O, async, clocks, storage engines, MCP, HTTP and
//! configuration. An auditor verifies an exported log with this crate and nothing else.
//! Every parser of untrusted bytes bounds its input before looking at it and returns an
//! error, never panics; `fuzz/` holds a target for each.

#![forbid(unsafe_code)]

pub mod check;
pub mod checkpoint;
pub mod compact;
pub mod cosignature;
pub mod entry;
pub mod hash;
pub mod note;
pub mod payload;
pub mod policy;
pub mod proof;
pub mod receipt;
pub mod tiles;
pub mod witness;

pub use checkpoint::Checkpoint;
pub use compact::CompactRange;
pub use entry::Entry;
pub use hash::{Hash, leaf_hash, node_hash};
pub use note::{Note, Signer, Verifier};
pub use receipt::InclusionReceipt;
