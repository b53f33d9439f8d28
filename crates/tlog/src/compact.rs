//! A compact range: the roots of the perfect subtrees that make up a tree of size `n`, one per
//! set bit of `n`, largest first. Appending a leaf costs O(log n) hashing and the state is
//! O(log n) hashes, so a log never rehashes its history to grow or to restart.

use crate::hash::{Hash, node_hash};

/// The right edge of a Merkle tree of `size` leaves.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CompactRange {
    size: u64,
    /// Roots of the perfect subtrees, largest (leftmost) first.
    nodes: Vec<Hash>,
}

/// A perfect subtree completed by an append: level `level` (0 is a leaf) at position
/// `index`, covering leaves `[index << level, (index + 1) << level)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Node {
    pub level: u32,
    pub index: u64,
    pub hash: Hash,
}

/// Why bytes do not describe a compact range.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("not a compact range: {0}")]
pub struct DecodeError(&'static str);

impl CompactRange {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends a leaf hash. `completed` sees every perfect subtree the append completes, from
    /// the leaf (level 0) upwards, so a store can persist interior nodes for proofs.
    ///
    /// # Panics
    /// When the tree already holds `u64::MAX` leaves.
    pub fn append(&mut self, leaf: Hash, mut completed: impl FnMut(Node)) {
        let index = self.size;
        completed(Node {
            level: 0,
            index,
            hash: leaf,
        });
        let mut hash = leaf;
        let mut level = 0u32;
        // Each trailing one bit of the old size is a perfect subtree of that level waiting for
        // a right sibling of the same size: the new leaf's subtree completes it.
        while (index >> level) & 1 == 1 {
            let left = self
                .nodes
                .pop()
                .unwrap_or_else(|| unreachable!("one node per set bit"));
            hash = node_hash(&left, &hash);
            level += 1;
            completed(Node {
                level,
                index: index >> level,
                hash,
            });
        }
        self.nodes.push(hash);
        self.size = index
            .checked_add(1)
            .expect("a log holds at most u64::MAX entries");
    }

    /// The tree's root hash (RFC 9162 `MTH(D[n])`), `SHA-256()` for the empty tree.
    pub fn root(&self) -> Hash {
        let mut nodes = self.nodes.iter().rev();
        let Some(first) = nodes.next() else {
            return Hash::empty();
        };
        nodes.fold(*first, |right, left| node_hash(left, &right))
    }

    /// A compact range from its parts: `nodes` are the roots of the perfect subtrees of a tree
    /// of `size` leaves, one per set bit of `size`, largest first.
    ///
    /// # Errors
    /// When the number of nodes does not match the set bits of `size`.
    pub fn from_parts(size: u64, nodes: Vec<Hash>) -> Result<Self, DecodeError> {
        if nodes.len() != size.count_ones() as usize {
            return Err(DecodeError("node count does not match the size"));
        }
        Ok(Self { size, nodes })
    }

    /// The perfect subtrees of a tree of `size` leaves, largest first, as (level, index).
    pub fn subtrees(size: u64) -> impl Iterator<Item = (u32, u64)> {
        let mut start = 0u64;
        (0..64u32)
            .rev()
            .filter(move |l| size & (1u64 << l) != 0)
            .map(move |level| {
                let index = start >> level;
                start += 1u64 << level;
                (level, index)
            })
    }

    /// `size` (8 bytes, big-endian) followed by the node hashes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 + 32 * self.nodes.len());
        out.extend_from_slice(&self.size.to_be_bytes());
        for n in &self.nodes {
            out.extend_from_slice(&n.0);
        }
        out
    }

    /// The inverse of [`CompactRange::to_bytes`].
    ///
    /// # Errors
    /// When the length does not match the number of set bits of the size.
    pub fn from_bytes(b: &[u8]) -> Result<Self, DecodeError> {
        let size = b
            .get(..8)
            .and_then(|s| <[u8; 8]>::try_from(s).ok())
            .map(u64::from_be_bytes)
            .ok_or(DecodeError("shorter than 8 bytes"))?;
        let rest = &b[8..];
        if rest.len() != 32 * size.count_ones() as usize {
            return Err(DecodeError("node count does not match the size"));
        }
        let nodes = rest.chunks_exact(32).filter_map(Hash::from_slice).collect();
        Ok(Self { size, nodes })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::leaf_hash;

    /// `MTH` straight from the definition, for comparison.
    fn mth(leaves: &[Hash]) -> Hash {
        match leaves.len() {
            0 => Hash::empty(),
            1 => leaves[0],
            n => {
                let k = crate::hash::split(n as u64) as usize;
                node_hash(&mth(&leaves[..k]), &mth(&leaves[k..]))
            }
        }
    }

    #[test]
    fn roots_match_the_definition() {
        let mut c = CompactRange::new();
        let mut leaves = Vec::new();
        assert_eq!(c.root(), Hash::empty());
        for i in 0..70u32 {
            let l = leaf_hash(&i.to_be_bytes());
            leaves.push(l);
            c.append(l, |_| {});
            assert_eq!(c.root(), mth(&leaves), "size {}", i + 1);
            assert_eq!(CompactRange::from_bytes(&c.to_bytes()).unwrap(), c);
        }
    }

    #[test]
    fn completed_nodes_are_the_perfect_subtrees() {
        let mut c = CompactRange::new();
        let mut leaves = Vec::new();
        let mut seen = Vec::new();
        for i in 0..16u32 {
            let l = leaf_hash(&i.to_be_bytes());
            leaves.push(l);
            c.append(l, |n| seen.push(n));
        }
        assert_eq!(seen.len(), 31, "16 leaves + 15 interior nodes");
        for n in seen {
            let start = (n.index << n.level) as usize;
            let end = start + (1usize << n.level);
            assert_eq!(n.hash, mth(&leaves[start..end]), "{n:?}");
        }
    }

    #[test]
    fn rebuilds_from_its_subtrees() {
        let mut c = CompactRange::new();
        let mut leaves = Vec::new();
        for i in 0..37u32 {
            let l = leaf_hash(&i.to_be_bytes());
            leaves.push(l);
            c.append(l, |_| {});
        }
        let nodes: Vec<Hash> = CompactRange::subtrees(37)
            .map(|(level, index)| {
                let start = (index << level) as usize;
                mth(&leaves[start..start + (1 << level)])
            })
            .collect();
        assert_eq!(
            CompactRange::subtrees(37).collect::<Vec<_>>(),
            [(5, 0), (2, 8), (0, 36)]
        );
        assert_eq!(CompactRange::from_parts(37, nodes).unwrap(), c);
    }

    #[test]
    fn rejects_bad_encodings() {
        assert!(CompactRange::from_bytes(&[0; 7]).is_err());
        let mut b = 3u64.to_be_bytes().to_vec();
        b.extend_from_slice(&[0; 32]);
        assert!(CompactRange::from_bytes(&b).is_err(), "3 needs two nodes");
    }
}
