//! The journal chain check: entries in file order, each naming its leaf
//! number and the SHA-256 of its predecessor, must run 0, 1, 2, … with
//! every link holding. Where they do not, the stretch around the break is
//! kept until the chain runs true again for two entries, and then told
//! apart: an entry whose content changed (its successor names another
//! hash), entries removed (leaves absent), inserted (entries no successor
//! names) or reordered (all there and linked, out of file order), or lost
//! to bytes that fail their checksum. One alteration gives one finding,
//! not a cascade.
//!
//! The chain is followed backwards from the first entry after the break
//! that links correctly: its `prev` names the true predecessor, whose
//! `prev` names the one before, and so on down to the last entry known
//! good. Pure: fed by `verify.rs`, no I/O.

use std::collections::HashMap;

use crate::store::journal::Position;

pub type Hash = [u8; 32];

/// At most this many entries are held while the chain is broken; a break
/// longer than that is judged as it stands.
const WINDOW: usize = 4096;

/// One chained journal entry, as the check needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    pub leaf: u64,
    pub hash: Hash,
    pub prev: Hash,
    pub at: Position,
    /// What the entry holds, for people: an event id, `checkpoint mark 3`.
    pub name: String,
    /// The entry is self-inconsistent (a stored event whose recorded bytes
    /// do not hash to the hash its additions carry): evidence it is the
    /// one that was edited when a link is ambiguous.
    pub inconsistent: bool,
}

/// Bytes the reader skipped: they fail their checksum or are no record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Damage {
    pub at: Position,
    pub len: u64,
    /// The entry the bytes seem to hold (read ignoring the checksum), if
    /// any: (leaf, name).
    pub holds: Option<(u64, String)>,
}

/// A break in the chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Break {
    /// The entry's content does not hash to what its successor names.
    Altered { link: Link, successor: u64 },
    /// Leaves that are not in the journal (removed).
    Missing {
        first: u64,
        last: u64,
        after: Option<Position>,
    },
    /// An entry no successor names (inserted).
    Inserted { link: Link },
    /// Entries all present and linked, but out of file order.
    Reordered { links: Vec<Link> },
    /// Bytes that fail their checksum, and the leaves lost with them.
    Damaged { damage: Damage, leaves: Vec<u64> },
    /// A link that does not hold where nothing else explains it (the
    /// predecessor named is not the entry before).
    Unlinked { link: Link },
}

impl Break {
    /// The leaves this break concerns (to keep other checks from
    /// reporting the same alteration again).
    pub fn leaves(&self) -> Vec<u64> {
        match self {
            Break::Altered { link, .. } | Break::Inserted { link } | Break::Unlinked { link } => {
                vec![link.leaf]
            }
            Break::Missing { first, last, .. } => (*first..=*last).collect(),
            Break::Reordered { links } => links.iter().map(|l| l.leaf).collect(),
            Break::Damaged { damage, leaves } => {
                let mut v = leaves.clone();
                v.extend(damage.holds.as_ref().map(|h| h.0));
                v
            }
        }
    }
}

/// The check's state while reading the journal.
#[derive(Default)]
pub struct ChainCheck {
    last: Option<Link>,
    before_last: Option<Link>,
    /// Held while the chain is broken (the last good entry first).
    window: Vec<Link>,
    /// The entry before the window, known good (None: the genesis).
    anchor: Option<Link>,
    broken: bool,
    damage: Vec<Damage>,
    pub breaks: Vec<Break>,
    /// Entries checked.
    pub entries: u64,
}

fn follows(prev: Option<&Link>, next: &Link) -> bool {
    match prev {
        None => next.leaf == 0 && next.prev == [0; 32],
        Some(p) => next.leaf == p.leaf + 1 && next.prev == p.hash,
    }
}

impl ChainCheck {
    /// Bytes the reader skipped between the previous entry and the next.
    pub fn damage(&mut self, d: Damage) {
        if !self.broken {
            self.open_window();
        }
        self.damage.push(d);
    }

    fn open_window(&mut self) {
        self.broken = true;
        self.anchor = self.before_last.take();
        self.window.extend(self.last.take());
    }

    pub fn push(&mut self, link: Link) {
        self.entries += 1;
        if !self.broken {
            if follows(self.last.as_ref(), &link) {
                self.before_last = self.last.replace(link);
                return;
            }
            self.open_window();
            self.window.push(link);
            return;
        }
        // Two entries in a row that link: the chain runs true again.
        let resync = self.window.len() >= 2 && follows(self.window.last(), &link);
        if resync {
            self.judge(Some(&link));
            let p = self.window.pop();
            self.window.clear();
            self.before_last = p;
            self.last = Some(link);
            self.broken = false;
            self.damage.clear();
            return;
        }
        self.window.push(link);
        if self.window.len() > WINDOW {
            self.judge(None);
            self.before_last = None;
            self.last = self.window.pop();
            self.window.clear();
            self.damage.clear();
            self.broken = false;
        }
    }

    /// The end of the journal: judges a break still open.
    pub fn finish(&mut self) {
        if self.broken {
            self.judge(None);
            self.window.clear();
            self.damage.clear();
            self.broken = false;
        }
    }

    /// Judges the window: `resync` is the first entry after it that links
    /// (its `prev` names the true last entry of the window); None at the
    /// end of the journal or when the window overflowed.
    fn judge(&mut self, resync: Option<&Link>) {
        // The window's last entry is the resync's predecessor only when a
        // resync was found (it linked to it); the resync itself is not in
        // the window.
        let base = self.anchor.as_ref().map_or(0, |a| a.leaf + 1);
        let hi = match resync {
            Some(z) => z.leaf,
            None => {
                let cap = base + self.window.len() as u64;
                self.window
                    .iter()
                    .map(|l| l.leaf + 1)
                    .filter(|l| *l <= cap)
                    .max()
                    .unwrap_or(base)
            }
        };
        let mut by_leaf: HashMap<u64, Vec<usize>> = HashMap::new();
        for (i, l) in self.window.iter().enumerate() {
            by_leaf.entry(l.leaf).or_default().push(i);
        }
        let mut chosen: Vec<(u64, usize)> = Vec::new();
        let mut want: Option<Hash> = resync.map(|z| z.prev);
        let mut successor = resync.map(|z| z.leaf);
        let mut missing: Vec<u64> = Vec::new();
        let mut altered: Vec<(usize, u64)> = Vec::new();
        let mut leaf = hi;
        while leaf > base {
            leaf -= 1;
            let cands = by_leaf.get(&leaf).map(Vec::as_slice).unwrap_or_default();
            let pick = match want {
                Some(w) => cands.iter().copied().find(|i| self.window[*i].hash == w),
                None => None,
            };
            let pick = match (pick, want) {
                (Some(i), _) => Some(i),
                (None, Some(_)) if !cands.is_empty() => {
                    // Present but not what its successor names: changed.
                    // Among several, the self-inconsistent one, else the
                    // last in file order.
                    let i = cands
                        .iter()
                        .copied()
                        .find(|i| self.window[*i].inconsistent)
                        .unwrap_or(cands[cands.len() - 1]);
                    altered.push((i, successor.unwrap_or(leaf + 1)));
                    Some(i)
                }
                (None, None) if !cands.is_empty() => Some(cands[cands.len() - 1]),
                _ => None,
            };
            match pick {
                Some(i) => {
                    chosen.push((leaf, i));
                    want = Some(self.window[i].prev);
                }
                None => {
                    missing.push(leaf);
                    want = None;
                }
            }
            successor = Some(leaf);
        }
        // Down at the anchor: the last chosen entry must name it.
        if let Some(w) = want {
            let anchor_hash = self.anchor.as_ref().map_or([0; 32], |a| a.hash);
            if w != anchor_hash
                && let Some((_, i)) = chosen.last()
                && !altered.iter().any(|(a, _)| a == i)
            {
                self.breaks.push(Break::Unlinked {
                    link: self.window[*i].clone(),
                });
            }
        }
        for (i, successor) in altered {
            self.breaks.push(Break::Altered {
                link: self.window[i].clone(),
                successor,
            });
        }
        // Missing leaves: lost with damaged bytes when there are any, else
        // removed (one finding per run of consecutive leaves).
        missing.sort_unstable();
        if !self.damage.is_empty() {
            let n = self.damage.len();
            for (k, d) in self.damage.drain(..).enumerate() {
                // Every missing leaf goes with the last stretch of damage
                // unless the stretch says which entry it held.
                let leaves = match &d.holds {
                    Some((l, _)) => missing.iter().copied().filter(|m| m == l).collect(),
                    None if k + 1 == n => missing.clone(),
                    None => Vec::new(),
                };
                self.breaks.push(Break::Damaged { damage: d, leaves });
            }
            missing.clear();
        }
        let mut runs: Vec<(u64, u64)> = Vec::new();
        for m in missing {
            match runs.last_mut() {
                Some((_, last)) if *last + 1 == m => *last = m,
                _ => runs.push((m, m)),
            }
        }
        for (first, last) in runs {
            let after = self
                .window
                .iter()
                .filter(|l| l.leaf < first)
                .map(|l| l.at)
                .max()
                .or(self.anchor.as_ref().map(|a| a.at));
            self.breaks.push(Break::Missing { first, last, after });
        }
        // Entries the chain does not pass through were inserted.
        let on_chain: std::collections::HashSet<usize> = chosen.iter().map(|(_, i)| *i).collect();
        for (i, l) in self.window.iter().enumerate() {
            if !on_chain.contains(&i) {
                self.breaks.push(Break::Inserted { link: l.clone() });
            }
        }
        // All there, but out of file order.
        chosen.sort_unstable();
        let mut out_of_place = Vec::new();
        let positions: Vec<usize> = chosen.iter().map(|(_, i)| *i).collect();
        let mut sorted = positions.clone();
        sorted.sort_unstable();
        for (k, i) in positions.iter().enumerate() {
            if sorted[k] != *i {
                out_of_place.push(self.window[*i].clone());
            }
        }
        if !out_of_place.is_empty() {
            self.breaks.push(Break::Reordered {
                links: out_of_place,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A well-formed chain of `n` entries, each at offset 100 × leaf.
    fn chain(n: u64) -> Vec<Link> {
        let mut prev = [0u8; 32];
        (0..n)
            .map(|leaf| {
                let mut hash = [0u8; 32];
                hash[..8].copy_from_slice(&(leaf + 1).to_be_bytes());
                hash[8] = 0xaa;
                let l = Link {
                    leaf,
                    hash,
                    prev,
                    at: Position {
                        segment: 1,
                        offset: leaf * 100,
                    },
                    name: format!("a/s/{leaf}"),
                    inconsistent: false,
                };
                prev = hash;
                l
            })
            .collect()
    }

    fn run(links: Vec<Link>) -> Vec<Break> {
        let mut c = ChainCheck::default();
        for l in links {
            c.push(l);
        }
        c.finish();
        c.breaks
    }

    fn run_with_damage(links: Vec<Link>, damage_before: u64, d: Damage) -> Vec<Break> {
        let mut c = ChainCheck::default();
        for l in links {
            if l.leaf == damage_before {
                c.damage(d.clone());
            }
            c.push(l);
        }
        c.finish();
        c.breaks
    }

    #[test]
    fn an_intact_chain_has_no_breaks() {
        assert_eq!(run(chain(50)), vec![]);
        assert_eq!(run(Vec::new()), vec![]);
    }

    #[test]
    fn each_alteration_is_one_break_naming_the_entry() {
        let c = chain(20);
        // Content of leaf 7 changed (CRC recomputed): its hash differs.
        let mut altered = c.clone();
        altered[7].hash[31] ^= 1;
        let b = run(altered);
        assert!(
            matches!(&b[..], [Break::Altered { link, successor: 8 }] if link.leaf == 7),
            "{b:?}"
        );
        // The first entry altered.
        let mut first = c.clone();
        first[0].hash[31] ^= 1;
        let b = run(first);
        assert!(
            matches!(&b[..], [Break::Altered { link, .. }] if link.leaf == 0),
            "{b:?}"
        );
        // Leaf 7 removed; leaves 7 and 8 removed.
        let mut removed = c.clone();
        removed.remove(7);
        assert!(matches!(
            &run(removed)[..],
            [Break::Missing {
                first: 7,
                last: 7,
                ..
            }]
        ),);
        let mut removed2 = c.clone();
        removed2.drain(7..9);
        let b = run(removed2);
        assert!(
            matches!(
                &b[..],
                [Break::Missing {
                    first: 7,
                    last: 8,
                    ..
                }]
            ),
            "{b:?}"
        );
        // The first entry removed.
        let b = run(c[1..].to_vec());
        assert!(
            matches!(
                &b[..],
                [Break::Missing {
                    first: 0,
                    last: 0,
                    ..
                }]
            ),
            "{b:?}"
        );
        // Leaves 7 and 8 swapped.
        let mut swapped = c.clone();
        swapped.swap(7, 8);
        let b = run(swapped);
        assert!(
            matches!(&b[..], [Break::Reordered { links }] if links.iter().map(|l| l.leaf).collect::<Vec<_>>() == [7, 8]),
            "{b:?}"
        );
        // A forged entry claiming leaf 7 before the real one.
        let mut forged = c[7].clone();
        forged.hash[20] = 0x55;
        forged.at.offset += 1;
        let mut inserted = c.clone();
        inserted.insert(7, forged.clone());
        let b = run(inserted);
        assert_eq!(b, vec![Break::Inserted { link: forged }]);
        // A copy of leaf 3 after leaf 12.
        let mut copy = c.clone();
        copy.insert(13, c[3].clone());
        let b = run(copy);
        assert_eq!(b, vec![Break::Inserted { link: c[3].clone() }]);
        // A new entry appended after the last that links to nothing.
        let mut tail = c.clone();
        let mut extra = c[19].clone();
        extra.leaf = 20;
        extra.prev = [9; 32];
        extra.hash = [8; 32];
        tail.push(extra);
        let b = run(tail);
        assert_eq!(b.len(), 1, "{b:?}");
    }

    #[test]
    fn damaged_bytes_account_for_the_leaves_they_held() {
        let c = chain(20);
        let mut without = c.clone();
        without.remove(7);
        let d = Damage {
            at: c[7].at,
            len: 90,
            holds: Some((7, "a/s/7".into())),
        };
        let b = run_with_damage(without.clone(), 8, d.clone());
        assert_eq!(
            b,
            vec![Break::Damaged {
                damage: d,
                leaves: vec![7]
            }]
        );
        // Unreadable: the missing leaf still goes with the damage.
        let d = Damage {
            at: c[7].at,
            len: 90,
            holds: None,
        };
        let b = run_with_damage(without, 8, d.clone());
        assert_eq!(
            b,
            vec![Break::Damaged {
                damage: d,
                leaves: vec![7]
            }]
        );
        // Garbage between intact entries: the damage alone.
        let d = Damage {
            at: Position {
                segment: 1,
                offset: 750,
            },
            len: 10,
            holds: None,
        };
        let b = run_with_damage(c, 8, d.clone());
        assert_eq!(
            b,
            vec![Break::Damaged {
                damage: d,
                leaves: vec![]
            }]
        );
    }
}
