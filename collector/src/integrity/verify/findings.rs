//! The findings of a run (what is not intact, alteration or explained),
//! the leaves and events already found altered, and each journal chain
//! break as a finding.

use std::collections::{BTreeSet, HashSet};

use kiroku_proto::VerifyFinding;

use super::{Break, where_at};

/// The findings of a run, and the leaves they concern.
#[derive(Default)]
pub struct Findings {
    pub list: Vec<VerifyFinding>,
    /// Leaves already found altered, removed, inserted or reordered.
    pub flagged: BTreeSet<u64>,
    /// The event ids those entries hold (the index check does not report
    /// them again).
    pub flagged_ids: HashSet<String>,
}

impl Findings {
    pub fn add(
        &mut self,
        what: &str,
        where_: String,
        event_id: &str,
        detail: String,
        alteration: bool,
    ) {
        self.list.push(VerifyFinding {
            what: what.to_owned(),
            r#where: where_,
            event_id: event_id.to_owned(),
            detail,
            alteration,
        });
    }

    /// True when a leaf in `first..=last` was already found altered.
    pub fn any_flagged(&self, first: u64, last: u64) -> bool {
        first <= last && self.flagged.range(first..=last).next().is_some()
    }

    pub(super) fn chain_break(&mut self, b: Break) {
        self.flagged.extend(b.leaves());
        match &b {
            Break::Altered { link, .. } | Break::Inserted { link } | Break::Unlinked { link } => {
                self.flagged_ids.insert(link.name.clone());
            }
            Break::Reordered { links } => {
                self.flagged_ids
                    .extend(links.iter().map(|l| l.name.clone()));
            }
            Break::Damaged { damage, .. } => {
                self.flagged_ids
                    .extend(damage.holds.as_ref().map(|h| h.1.clone()));
            }
            Break::Missing { .. } => {}
        }
        match b {
            Break::Altered { link, successor } => {
                let why = if link.inconsistent {
                    "its recorded bytes no longer hash to the hash stored beside them: the entry was edited"
                } else {
                    "the entry was edited (or the link in its successor)"
                };
                self.add(
                    "altered",
                    where_at(link.at),
                    &link.name,
                    format!(
                        "leaf {} ({}) does not hash to what leaf {successor} names as its predecessor: {why}",
                        link.leaf, link.name
                    ),
                    true,
                );
            }
            Break::Missing { first, last, after } => {
                let leaves = if first == last {
                    format!("leaf {first} is")
                } else {
                    format!("leaves {first}–{last} are")
                };
                self.add(
                    "missing",
                    after.map_or_else(|| "journal start".to_owned(), where_at),
                    "",
                    format!("{leaves} not in the journal: removed (the entry after names a predecessor that is not there)"),
                    true,
                );
            }
            Break::Inserted { link } => self.add(
                "inserted",
                where_at(link.at),
                &link.name,
                format!(
                    "an entry claiming leaf {} ({}) that no entry after it names: it was inserted",
                    link.leaf, link.name
                ),
                true,
            ),
            Break::Reordered { links } => {
                let leaves: Vec<String> = links.iter().map(|l| l.leaf.to_string()).collect();
                let names: Vec<&str> = links.iter().map(|l| l.name.as_str()).collect();
                self.add(
                    "reordered",
                    where_at(links.iter().map(|l| l.at).min().unwrap_or_default()),
                    links.first().map_or("", |l| l.name.as_str()),
                    format!(
                        "leaves {} ({}) are all present and linked but out of order in the file: they were moved",
                        leaves.join(", "),
                        names.join(", ")
                    ),
                    true,
                );
            }
            Break::Damaged { damage, leaves } => {
                let held = match (&damage.holds, leaves.as_slice()) {
                    (Some((leaf, name)), _) => format!("; they held leaf {leaf} ({name})"),
                    (None, []) => String::new(),
                    (None, l) => format!(
                        "; leaves {} are lost with them",
                        l.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")
                    ),
                };
                self.add(
                    "altered",
                    where_at(damage.at),
                    damage.holds.as_ref().map_or("", |h| h.1.as_str()),
                    format!(
                        "{} bytes fail their checksum or are no journal record (changed without recomputing the CRC, or disk damage){held}",
                        damage.len
                    ),
                    true,
                );
            }
            Break::Unlinked { link } => self.add(
                "altered",
                where_at(link.at),
                &link.name,
                format!(
                    "leaf {} ({}) names a predecessor that is not the entry before it",
                    link.leaf, link.name
                ),
                true,
            ),
        }
    }
}
