//! Inclusion and consistency proofs (RFC 9162 §2.1.3 and §2.1.4): generation from a store of
//! perfect-subtree hashes, and verification from the proof alone.

use crate::hash::{Hash, node_hash, split};

/// Where proof generation reads the tree: the root of the perfect subtree at `level`, index
/// `index` (leaves `[index << level, (index + 1) << level)`). A store may keep every level or
/// only some and compute the rest from those below.
pub trait HashStore {
    type Error;
    /// # Errors
    /// The store's own, for a node it cannot produce.
    fn node(&self, level: u32, index: u64) -> Result<Hash, Self::Error>;
}

/// Why a proof could not be made.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProofError<E> {
    #[error("index {index} is outside a tree of size {size}")]
    OutOfRange { index: u64, size: u64 },
    #[error("cannot prove consistency from size {old} to the smaller size {new}")]
    Shrinks { old: u64, new: u64 },
    #[error("reading the tree: {0}")]
    Store(E),
}

/// Why a proof does not verify.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VerifyError {
    #[error("index {index} is outside a tree of size {size}")]
    OutOfRange { index: u64, size: u64 },
    #[error("the proof has the wrong number of hashes")]
    WrongLength,
    #[error("the proof does not lead to the expected root hash")]
    RootMismatch,
    #[error("the old tree is larger than the new one")]
    Shrinks,
}

/// `MTH(D[start:end])` for a range that RFC 9162's recursion produces (its perfect parts are
/// aligned), read from the store in O(log n) nodes.
fn subtree<S: HashStore>(store: &S, start: u64, end: u64) -> Result<Hash, S::Error> {
    let len = end - start;
    if len.is_power_of_two() && start.is_multiple_of(len) {
        return store.node(len.trailing_zeros(), start / len);
    }
    let k = split(len);
    let left = subtree(store, start, start + k)?;
    let right = subtree(store, start + k, end)?;
    Ok(node_hash(&left, &right))
}

/// The audit path of leaf `index` in the tree of `size` leaves (RFC 9162 §2.1.3.1 `PATH`),
/// from the leaf's sibling up to the root's child.
///
/// # Errors
/// [`ProofError::OutOfRange`], or the store's error.
pub fn inclusion_proof<S: HashStore>(
    store: &S,
    index: u64,
    size: u64,
) -> Result<Vec<Hash>, ProofError<S::Error>> {
    if index >= size {
        return Err(ProofError::OutOfRange { index, size });
    }
    let mut path = Vec::new();
    // PATH(m, D[n]): descend from the root, recording the sibling subtree at each split; the
    // recursion's output order is leaf-to-root, so collect and reverse.
    let (mut start, mut end, mut m) = (0u64, size, index);
    while end - start > 1 {
        let k = split(end - start);
        if m < k {
            // PATH(m, D[0:k]) : MTH(D[k:n])
            path.push(subtree(store, start + k, end).map_err(ProofError::Store)?);
            end = start + k;
        } else {
            // PATH(m - k, D[k:n]) : MTH(D[0:k])
            path.push(subtree(store, start, start + k).map_err(ProofError::Store)?);
            start += k;
            m -= k;
        }
    }
    path.reverse();
    Ok(path)
}

/// A consistency proof from the tree of `old` leaves to the tree of `new` leaves
/// (RFC 9162 §2.1.4.1 `PROOF(m, D[n])`). Empty when `old` is 0 or equals `new`.
///
/// # Errors
/// [`ProofError::Shrinks`], or the store's error.
pub fn consistency_proof<S: HashStore>(
    store: &S,
    old: u64,
    new: u64,
) -> Result<Vec<Hash>, ProofError<S::Error>> {
    if old > new {
        return Err(ProofError::Shrinks { old, new });
    }
    if old == 0 || old == new {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    // SUBPROOF(m, D[n], b), iteratively: the appended hashes come out root-to-leaf, reversed at
    // the end.
    let (mut start, mut end, mut m, mut b) = (0u64, new, old, true);
    while m != end - start {
        let k = split(end - start);
        if m <= k {
            // SUBPROOF(m, D[0:k], b) : MTH(D[k:n])
            out.push(subtree(store, start + k, end).map_err(ProofError::Store)?);
            end = start + k;
        } else {
            // SUBPROOF(m - k, D[k:n], false) : MTH(D[0:k])
            out.push(subtree(store, start, start + k).map_err(ProofError::Store)?);
            start += k;
            m -= k;
            b = false;
        }
    }
    // SUBPROOF(m, D[m], false) = {MTH(D[m])}; with b still true it is empty.
    if !b {
        out.push(subtree(store, start, end).map_err(ProofError::Store)?);
    }
    out.reverse();
    Ok(out)
}

/// Verifies that `leaf` is at `index` in the tree of `size` leaves with root `root`
/// (RFC 9162 §2.1.3.2).
///
/// # Errors
/// [`VerifyError`] naming the failed check.
pub fn verify_inclusion(
    leaf: &Hash,
    index: u64,
    size: u64,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), VerifyError> {
    if index >= size {
        return Err(VerifyError::OutOfRange { index, size });
    }
    // 1-3: fn = leaf_index, sn = tree_size - 1, r = hash.
    let (mut f, mut s, mut r) = (index, size - 1, *leaf);
    for p in proof {
        // a. If sn is 0, then stop the iteration and fail the proof verification.
        if s == 0 {
            return Err(VerifyError::WrongLength);
        }
        if f & 1 == 1 || f == s {
            // b. If LSB(fn) is set, or if fn is equal to sn: r = HASH(0x01 || p || r), and
            //    if LSB(fn) is not set, shift until it is or fn is 0.
            r = node_hash(p, &r);
            if f & 1 == 0 {
                while f & 1 == 0 && f != 0 {
                    f >>= 1;
                    s >>= 1;
                }
            }
        } else {
            // c. Otherwise: r = HASH(0x01 || r || p).
            r = node_hash(&r, p);
        }
        f >>= 1;
        s >>= 1;
    }
    // Compare sn to 0 and r against the root hash.
    if s != 0 {
        return Err(VerifyError::WrongLength);
    }
    if &r != root {
        return Err(VerifyError::RootMismatch);
    }
    Ok(())
}

/// Verifies that the tree of `old` leaves with root `old_root` is a prefix of the tree of
/// `new` leaves with root `new_root` (RFC 9162 §2.1.4.2).
///
/// # Errors
/// [`VerifyError`] naming the failed check.
pub fn verify_consistency(
    old: u64,
    new: u64,
    proof: &[Hash],
    old_root: &Hash,
    new_root: &Hash,
) -> Result<(), VerifyError> {
    if old > new {
        return Err(VerifyError::Shrinks);
    }
    if old == new {
        return match (proof.is_empty(), old_root == new_root) {
            (false, _) => Err(VerifyError::WrongLength),
            (true, false) => Err(VerifyError::RootMismatch),
            (true, true) => Ok(()),
        };
    }
    if old == 0 {
        // Every tree extends the empty one.
        return if proof.is_empty() {
            Ok(())
        } else {
            Err(VerifyError::WrongLength)
        };
    }
    if proof.is_empty() {
        return Err(VerifyError::WrongLength);
    }
    // 2. If first is an exact power of 2, prepend first_hash to the consistency_path.
    let mut path = Vec::with_capacity(proof.len() + 1);
    if old.is_power_of_two() {
        path.push(*old_root);
    }
    path.extend_from_slice(proof);
    // 3. fn = first - 1, sn = second - 1; shift while LSB(fn) is set.
    let (mut f, mut s) = (old - 1, new - 1);
    while f & 1 == 1 {
        f >>= 1;
        s >>= 1;
    }
    // 5. fr = sr = the first value of the path.
    let (mut fr, mut sr) = (path[0], path[0]);
    // 6. For each subsequent value c:
    for c in &path[1..] {
        if s == 0 {
            return Err(VerifyError::WrongLength);
        }
        if f & 1 == 1 || f == s {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            if f & 1 == 0 {
                while f & 1 == 0 && f != 0 {
                    f >>= 1;
                    s >>= 1;
                }
            }
        } else {
            sr = node_hash(&sr, c);
        }
        f >>= 1;
        s >>= 1;
    }
    // 7. fr == first_hash, sr == second_hash and sn == 0.
    if s != 0 {
        return Err(VerifyError::WrongLength);
    }
    if &fr != old_root || &sr != new_root {
        return Err(VerifyError::RootMismatch);
    }
    Ok(())
}

/// A [`HashStore`] over all leaf hashes in memory, computing interior nodes on demand. For
/// tests and small logs.
pub struct MemoryStore<'a>(pub &'a [Hash]);

impl HashStore for MemoryStore<'_> {
    type Error = std::convert::Infallible;
    fn node(&self, level: u32, index: u64) -> Result<Hash, Self::Error> {
        if level == 0 {
            return Ok(self.0[usize::try_from(index).unwrap_or(usize::MAX)]);
        }
        let left = self.node(level - 1, index * 2)?;
        let right = self.node(level - 1, index * 2 + 1)?;
        Ok(node_hash(&left, &right))
    }
}
