//! Offline-verifiable proofs that an entry is in a log (<https://c2sp.org/tlog-proof>).
//!
//! custody puts the entry's leaf hash in the proof's `extra` line, so a proof stands on its
//! own: with the log's verifier key, it shows that the entry with that leaf hash is at that
//! index of a tree the log signed. (`extra` is not authenticated by itself; the inclusion proof
//! is what ties the leaf hash to the signed root.)

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

use crate::checkpoint::{Checkpoint, CheckpointError};
use crate::hash::Hash;
use crate::note::Verifier;
use crate::proof::{VerifyError, verify_inclusion};

const HEADER: &str = "c2sp.org/tlog-proof@v1";
/// The largest proof accepted: a checkpoint note, 64 hashes and an extra line.
pub const MAX_PROOF_BYTES: usize = 80 * 1024;

/// A parsed proof.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InclusionReceipt {
    pub extra: Option<Vec<u8>>,
    pub index: u64,
    pub path: Vec<Hash>,
    /// The checkpoint, verbatim.
    pub checkpoint: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReceiptError {
    #[error("not a tlog-proof: {0}")]
    Malformed(&'static str),
    #[error("the proof's checkpoint: {0}")]
    Checkpoint(#[from] CheckpointError),
    #[error("the proof carries no leaf hash, and none was given")]
    NoLeaf,
    #[error("the entry is not in the signed tree: {0}")]
    Inclusion(#[from] VerifyError),
    #[error("the proof is for leaf {found}, expected {expected}")]
    LeafMismatch { found: Hash, expected: Hash },
}

/// What a verified proof establishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub index: u64,
    pub leaf: Hash,
    pub checkpoint: Checkpoint,
}

impl InclusionReceipt {
    pub fn encode(&self) -> String {
        let mut out = format!("{HEADER}\n");
        if let Some(extra) = &self.extra {
            out.push_str(&format!("extra {}\n", B64.encode(extra)));
        }
        out.push_str(&format!("index {}\n", self.index));
        for h in &self.path {
            out.push_str(&B64.encode(h.0));
            out.push('\n');
        }
        out.push('\n');
        out.push_str(&self.checkpoint);
        out
    }

    /// Parses a proof, bounding its size first.
    ///
    /// # Errors
    /// [`ReceiptError::Malformed`] naming the bad part.
    pub fn parse(bytes: &[u8]) -> Result<Self, ReceiptError> {
        if bytes.len() > MAX_PROOF_BYTES {
            return Err(ReceiptError::Malformed("larger than the limit"));
        }
        let s = std::str::from_utf8(bytes).map_err(|_| ReceiptError::Malformed("not UTF-8"))?;
        let (head, checkpoint) = s.split_once("\n\n").ok_or(ReceiptError::Malformed(
            "no blank line before the checkpoint",
        ))?;
        let mut lines = head.split('\n');
        if lines.next() != Some(HEADER) {
            return Err(ReceiptError::Malformed(
                "the first line must be c2sp.org/tlog-proof@v1",
            ));
        }
        let mut line = lines
            .next()
            .ok_or(ReceiptError::Malformed("no index line"))?;
        let mut extra = None;
        if let Some(b64) = line.strip_prefix("extra ") {
            extra = Some(
                B64.decode(b64)
                    .map_err(|_| ReceiptError::Malformed("extra is not base64"))?,
            );
            line = lines
                .next()
                .ok_or(ReceiptError::Malformed("no index line"))?;
        }
        let index = line
            .strip_prefix("index ")
            .filter(|n| {
                !n.is_empty()
                    && (n.len() == 1 || !n.starts_with('0'))
                    && n.bytes().all(|b| b.is_ascii_digit())
            })
            .and_then(|n| n.parse::<u64>().ok())
            .ok_or(ReceiptError::Malformed("the index line must be `index N`"))?;
        let mut path = Vec::new();
        for l in lines {
            if path.len() == 64 {
                return Err(ReceiptError::Malformed("more than 64 proof hashes"));
            }
            let h = B64
                .decode(l)
                .ok()
                .and_then(|b| Hash::from_slice(&b))
                .ok_or(ReceiptError::Malformed(
                    "a proof line is not a base64 SHA-256 hash",
                ))?;
            path.push(h);
        }
        Ok(Self {
            extra,
            index,
            path,
            checkpoint: checkpoint.to_string(),
        })
    }

    /// The leaf hash carried in `extra`, if it is one.
    pub fn leaf(&self) -> Option<Hash> {
        self.extra.as_deref().and_then(Hash::from_slice)
    }

    /// Verifies the proof offline: the checkpoint's signature with `verifier`, and the
    /// inclusion of the leaf (`expected`, or the one in `extra`) at `index`.
    ///
    /// # Errors
    /// [`ReceiptError`] naming the failed check.
    pub fn verify(
        &self,
        verifier: &Verifier,
        expected: Option<Hash>,
    ) -> Result<Verified, ReceiptError> {
        let (checkpoint, _) = Checkpoint::open(self.checkpoint.as_bytes(), verifier)?;
        let leaf = match (expected, self.leaf()) {
            (Some(e), Some(found)) if e != found => {
                return Err(ReceiptError::LeafMismatch { found, expected: e });
            }
            (Some(e), _) => e,
            (None, Some(found)) => found,
            (None, None) => return Err(ReceiptError::NoLeaf),
        };
        verify_inclusion(
            &leaf,
            self.index,
            checkpoint.size,
            &self.path,
            &checkpoint.root,
        )?;
        Ok(Verified {
            index: self.index,
            leaf,
            checkpoint,
        })
    }
}
