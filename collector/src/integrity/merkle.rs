//! RFC 6962 Merkle tree hashes (section 2.1) over journal entries: the tree
//! head of a checkpoint and the inclusion proof of one entry in it.
//!
//! - leaf hash = SHA-256(0x00 || entry bytes), node hash = SHA-256(0x01 ||
//!   left || right), the tree of no leaves = SHA-256("").
//! - MTH(D[n]) splits at the largest power of two below n, so the tree is
//!   left-complete. [`TreeBuilder`] computes the same head from a stream of
//!   leaves with O(log n) memory (the checkpoint writer and `verify` read
//!   the journal once and keep no list of hashes).
//! - An inclusion proof is RFC 6962's PATH, leaf to root; [`verify_inclusion`]
//!   is RFC 9162 section 2.1.3.2, which also refuses proofs of the wrong
//!   length.
//!
//! Pure: no I/O. Test vectors are those of RFC 6962's reference
//! implementation (certificate-transparency-go), checked below.

use sha2::{Digest, Sha256};

/// A SHA-256 output.
pub type Hash = [u8; 32];

/// SHA-256(0x00 || entry): the leaf of one journal entry.
pub fn leaf_hash(entry: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(entry);
    h.finalize().into()
}

/// SHA-256(0x01 || left || right).
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The head of a tree of no leaves: SHA-256 of nothing.
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// MTH over `leaves` (leaf hashes, in order).
pub fn root(leaves: &[Hash]) -> Hash {
    let mut b = TreeBuilder::default();
    for l in leaves {
        b.push(*l);
    }
    b.root()
}

/// Computes a tree head from leaf hashes pushed one by one. It keeps the
/// roots of the complete subtrees so far (at most one per power of two),
/// merging two of equal size as soon as they exist, which is exactly the
/// left-complete shape of MTH.
#[derive(Debug, Default, Clone)]
pub struct TreeBuilder {
    /// (number of leaves, subtree root), sizes strictly decreasing.
    stack: Vec<(u64, Hash)>,
    leaves: u64,
}

impl TreeBuilder {
    pub fn push(&mut self, leaf: Hash) {
        self.leaves += 1;
        let mut cur = (1u64, leaf);
        while let Some(&(size, left)) = self.stack.last() {
            if size != cur.0 {
                break;
            }
            self.stack.pop();
            cur = (size * 2, node_hash(&left, &cur.1));
        }
        self.stack.push(cur);
    }

    /// Leaves pushed so far.
    pub fn leaves(&self) -> u64 {
        self.leaves
    }

    /// MTH of the leaves pushed so far: the complete subtrees folded right
    /// to left (the smallest is the rightmost part of the tree).
    pub fn root(&self) -> Hash {
        let mut it = self.stack.iter().rev();
        let Some(&(_, mut acc)) = it.next() else {
            return empty_root();
        };
        for (_, left) in it {
            acc = node_hash(left, &acc);
        }
        acc
    }
}

/// RFC 6962 PATH(index, D[n]): the sibling hashes from the leaf up to the
/// root. `None` when `index` is not a leaf of `leaves`.
pub fn inclusion_proof(leaves: &[Hash], index: usize) -> Option<Vec<Hash>> {
    if index >= leaves.len() {
        return None;
    }
    let mut path = Vec::new();
    path_into(leaves, index, &mut path);
    Some(path)
}

fn path_into(leaves: &[Hash], index: usize, out: &mut Vec<Hash>) {
    let n = leaves.len();
    if n <= 1 {
        return;
    }
    let k = split(n);
    if index < k {
        path_into(&leaves[..k], index, out);
        out.push(root(&leaves[k..]));
    } else {
        path_into(&leaves[k..], index - k, out);
        out.push(root(&leaves[..k]));
    }
}

/// The largest power of two smaller than `n` (n > 1).
fn split(n: usize) -> usize {
    let mut k = 1;
    while k * 2 < n {
        k *= 2;
    }
    k
}

/// Why an inclusion proof does not hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    #[error("leaf {index} is outside a tree of {size} leaves")]
    OutOfRange { index: u64, size: u64 },
    #[error(
        "a proof of {got} hashes cannot be the path of leaf {index} in a tree of {size} leaves"
    )]
    WrongLength { index: u64, size: u64, got: usize },
    #[error("the proof leads to root {got}, not the signed root {want}")]
    RootMismatch { got: String, want: String },
}

/// Checks that `leaf` is leaf `index` of the tree of `size` leaves whose head
/// is `root`, given its audit path (RFC 9162 section 2.1.3.2).
pub fn verify_inclusion(
    leaf: &Hash,
    index: u64,
    size: u64,
    path: &[Hash],
    root: &Hash,
) -> Result<(), ProofError> {
    if index >= size {
        return Err(ProofError::OutOfRange { index, size });
    }
    let wrong_length = || ProofError::WrongLength {
        index,
        size,
        got: path.len(),
    };
    let (mut f_n, mut s_n) = (index, size - 1);
    let mut r = *leaf;
    for p in path {
        if s_n == 0 {
            return Err(wrong_length());
        }
        if f_n & 1 == 1 || f_n == s_n {
            r = node_hash(p, &r);
            // A right-most node without a sibling is promoted unchanged
            // through the levels where it stands alone.
            while f_n & 1 == 0 && f_n != 0 {
                f_n >>= 1;
                s_n >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    if s_n != 0 {
        return Err(wrong_length());
    }
    if &r == root {
        Ok(())
    } else {
        Err(ProofError::RootMismatch {
            got: hex::encode(r),
            want: hex::encode(root),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The leaves of certificate-transparency-go's reference tree.
    const CT_INPUTS: [&str; 8] = [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ];
    /// Its heads for 0..=8 leaves.
    const CT_ROOTS: [&str; 9] = [
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ];

    fn h(s: &str) -> Hash {
        let v = hex::decode(s).expect("hex");
        v.try_into().expect("32 bytes")
    }

    fn ct_leaves() -> Vec<Hash> {
        CT_INPUTS
            .iter()
            .map(|s| leaf_hash(&hex::decode(s).expect("hex")))
            .collect()
    }

    #[test]
    fn heads_match_the_reference_tree() {
        let leaves = ct_leaves();
        for (n, want) in CT_ROOTS.iter().enumerate() {
            assert_eq!(root(&leaves[..n]), h(want), "{n} leaves");
        }
        assert_eq!(empty_root(), h(CT_ROOTS[0]));
    }

    #[test]
    fn proofs_match_the_reference_tree() {
        // (leaf index, tree size, PATH) from certificate-transparency-go.
        let cases: [(usize, usize, &[&str]); 4] = [
            (0, 1, &[]),
            (
                0,
                8,
                &[
                    "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
                ],
            ),
            (
                5,
                8,
                &[
                    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                    "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
                ],
            ),
            (
                2,
                3,
                &["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"],
            ),
        ];
        let leaves = ct_leaves();
        for (index, size, want) in cases {
            let want: Vec<Hash> = want.iter().map(|s| h(s)).collect();
            let got = inclusion_proof(&leaves[..size], index).expect("in range");
            assert_eq!(got, want, "leaf {index} of {size}");
            verify_inclusion(
                &leaves[index],
                index as u64,
                size as u64,
                &got,
                &h(CT_ROOTS[size]),
            )
            .expect("verifies");
        }
    }

    /// Every leaf of every tree up to 70 leaves: the proof verifies, and a
    /// changed hash, a wrong index, a short or long path does not. (The tree
    /// size is not hashed into the root: a verifier takes it from the signed
    /// checkpoint, never from the proof.)
    #[test]
    fn every_proof_verifies_and_no_altered_one_does() {
        let leaves: Vec<Hash> = (0..70u32).map(|i| leaf_hash(&i.to_be_bytes())).collect();
        for n in 1..=leaves.len() {
            let tree = &leaves[..n];
            let head = root(tree);
            for i in 0..n {
                let path = inclusion_proof(tree, i).expect("proof");
                let (iu, nu) = (i as u64, n as u64);
                assert_eq!(verify_inclusion(&tree[i], iu, nu, &path, &head), Ok(()));
                let other = leaf_hash(b"other");
                assert!(verify_inclusion(&other, iu, nu, &path, &head).is_err());
                if n > 1 {
                    let j = (i + 1) % n;
                    assert!(verify_inclusion(&tree[i], j as u64, nu, &path, &head).is_err());
                }
                if let Some((first, rest)) = path.split_first() {
                    let mut bad = first.to_owned();
                    bad[0] ^= 1;
                    let mut altered = vec![bad];
                    altered.extend_from_slice(rest);
                    assert!(verify_inclusion(&tree[i], iu, nu, &altered, &head).is_err());
                    assert!(verify_inclusion(&tree[i], iu, nu, rest, &head).is_err());
                }
                let mut long = path.clone();
                long.push([0xab; 32]);
                assert!(verify_inclusion(&tree[i], iu, nu, &long, &head).is_err());
            }
            assert!(inclusion_proof(tree, n).is_none());
            assert!(matches!(
                verify_inclusion(&tree[0], nu(n), nu(n), &[], &head),
                Err(ProofError::OutOfRange { .. })
            ));
        }
    }

    fn nu(n: usize) -> u64 {
        n as u64
    }
}
