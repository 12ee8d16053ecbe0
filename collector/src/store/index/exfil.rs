//! The exfiltration report's side of the index. An event that sent files
//! out (`investigate::exfil_files` is not empty) carries fast fields the
//! report reads without loading stored events:
//!
//! - `exfil` (the channel), `exfil_user`, `exfil_at` (the rows' corrected
//!   time), `exfil_files` and `exfil_bytes`: the totals per day and per
//!   user are column reads, however many files the range holds;
//! - `exfil_rows`: the rows themselves (prost `ExfilReport.files`), read
//!   only for the files a report lists or streams. Each value starts with
//!   its time (8 bytes, big-endian, sign bit flipped), so the column's
//!   dictionary, which is sorted by bytes, is in time order: the newest
//!   files are a segment's last terms and a time window is a run of
//!   consecutive terms. tantivy keeps that dictionary in zstd blocks of
//!   about 4 KB, one decompression context each; reading a run opens each
//!   block once, where rows scattered by content would open one per row.

use std::collections::HashMap;
use std::ops::Bound;
use std::path::{Path, PathBuf};

use kiroku_proto::{ExfilFile, ExfilReport};
use prost::Message;
use tantivy::columnar::Dictionary;
use tantivy::query::{BooleanQuery, EnableScoring, Occur, Query, RangeQuery, TermQuery};
use tantivy::schema::IndexRecordOption;
use tantivy::{Searcher, TantivyDocument, Term};

use super::{Fields, IndexError, TantivyIndex};

/// The index fields the report reads (an index of an older schema that
/// lacks one cannot answer it).
pub(super) const FIELDS: &[&str] = &[
    "exfil",
    "exfil_user",
    "exfil_at",
    "exfil_files",
    "exfil_bytes",
    "exfil_rows",
];

/// Bytes of time in front of an event's rows in `exfil_rows`.
const TIME_KEY: usize = 8;

/// `at_ms` as bytes that sort like the number.
fn time_key(at_ms: i64) -> [u8; TIME_KEY] {
    ((at_ms as u64) ^ (1 << 63)).to_be_bytes()
}

/// Adds the report's fields of an event whose rows are `rows` (all of one
/// event: same channel, user and time).
pub(super) fn add_fields(f: &Fields, d: &mut TantivyDocument, rows: &[ExfilFile]) {
    let Some(first) = rows.first() else {
        return;
    };
    d.add_text(f.exfil, &first.method);
    d.add_text(f.exfil_user, &first.user);
    d.add_i64(f.exfil_at, first.at_ms);
    d.add_u64(f.exfil_files, rows.len() as u64);
    // Sizes come from agents: saturate rather than wrap.
    d.add_u64(
        f.exfil_bytes,
        rows.iter().fold(0u64, |n, r| n.saturating_add(r.size)),
    );
    let rows = ExfilReport {
        files: rows.to_vec(),
        ..Default::default()
    };
    let mut value = Vec::with_capacity(TIME_KEY + rows.encoded_len());
    value.extend_from_slice(&time_key(first.at_ms));
    rows.encode(&mut value)
        .expect("a Vec grows to fit the encoding");
    d.add_bytes(f.exfil_rows, &value);
}

/// One event that sent files out, as the report's totals see it.
#[derive(Clone, Copy, Debug)]
pub struct ExfilEvent {
    /// Corrected time of its files.
    pub at_ms: i64,
    /// Channel and user: indexes into [`ExfilScan::name`].
    pub method: u32,
    pub user: u32,
    /// How many files it sent and their bytes.
    pub files: u64,
    pub bytes: u64,
    /// Where its rows are: a segment of the scan's searcher, a term of
    /// that segment's `exfil_rows` dictionary.
    segment: u32,
    ord: u64,
}

impl ExfilEvent {
    /// Time order (ties in index order): the order the rows are read in.
    pub fn time_order(&self) -> (i64, u32, u64) {
        (self.at_ms, self.segment, self.ord)
    }
}

/// Which events a scan keeps besides its time range; empty strings keep
/// every event.
#[derive(Clone, Debug, Default)]
pub struct ExfilFilter {
    /// The channel: `mail` or `removable`.
    pub method: String,
    /// The report's user (`investigate::event_user`), any case.
    pub user: String,
    /// A hostname or FQDN (any case), or an agent id.
    pub host: String,
}

impl ExfilFilter {
    /// Term ordinals of a segment dictionary of names `ids` that pass
    /// `want` (empty: all do).
    fn keep(want: &str, ids: &[u32], names: &Names) -> Vec<bool> {
        ids.iter()
            .map(|&id| want.is_empty() || names.list[id as usize].to_lowercase() == want)
            .collect()
    }
}

/// The events of one time range on one snapshot of the index; their rows
/// are read from the same snapshot.
pub struct ExfilScan {
    searcher: Searcher,
    path: PathBuf,
    names: Vec<String>,
    pub events: Vec<ExfilEvent>,
}

/// Channel and user names, each kept once for the whole scan.
#[derive(Default)]
struct Names {
    list: Vec<String>,
    ids: HashMap<String, u32>,
}

impl Names {
    /// Global ids of every term of a segment's dictionary, by term ordinal.
    fn intern_all(&mut self, dict: &Dictionary) -> std::io::Result<Vec<u32>> {
        let mut ids = Vec::with_capacity(dict.num_terms());
        let mut terms = dict.stream()?;
        while terms.advance() {
            let name = String::from_utf8_lossy(terms.key());
            let next = self.list.len() as u32;
            let id = *self.ids.entry(name.to_string()).or_insert(next);
            if id == next {
                self.list.push(name.into_owned());
            }
            ids.push(id);
        }
        Ok(ids)
    }
}

impl TantivyIndex {
    /// Every event whose files left in [from_ms, to_ms) (corrected time)
    /// and that `filter` keeps, read from fast fields only (the host from
    /// the indexed `host` and `agent_id`), and that match `also` when given
    /// (the report's internal/external recipients); see
    /// [`ExfilScan::rows`] for the files.
    pub fn exfil_scan(
        &self,
        from_ms: i64,
        to_ms: i64,
        filter: &ExfilFilter,
        also: Option<Box<dyn Query>>,
    ) -> Result<ExfilScan, IndexError> {
        let searcher = self.reader.searcher();
        let range: Box<dyn Query> = Box::new(RangeQuery::new(
            Bound::Included(Term::from_field_i64(self.f.exfil_at, from_ms)),
            Bound::Excluded(Term::from_field_i64(self.f.exfil_at, to_ms)),
        ));
        let query: Box<dyn Query> = match filter.host.trim() {
            "" => range,
            host => {
                let term = |t: Term| -> Box<dyn Query> {
                    Box::new(TermQuery::new(t, IndexRecordOption::Basic))
                };
                // The report names a host by its hostname, or by the agent
                // id when the agent sent none.
                let either = BooleanQuery::new(vec![
                    (
                        Occur::Should,
                        term(Term::from_field_text(self.f.host, &host.to_lowercase())),
                    ),
                    (
                        Occur::Should,
                        term(Term::from_field_text(self.f.agent_id, host)),
                    ),
                ]);
                Box::new(BooleanQuery::new(vec![
                    (Occur::Must, range),
                    (Occur::Must, Box::new(either)),
                ]))
            }
        };
        let query: Box<dyn Query> = match also {
            None => query,
            Some(q) => Box::new(BooleanQuery::new(vec![
                (Occur::Must, query),
                (Occur::Must, q),
            ])),
        };
        let (want_method, want_user) = (
            filter.method.trim().to_lowercase(),
            filter.user.trim().to_lowercase(),
        );
        let weight = query
            .weight(EnableScoring::disabled_from_searcher(&searcher))
            .map_err(|e| self.terr(e))?;
        let io = |what: &str, e: std::io::Error| other(&self.path, format!("reading {what}: {e}"));
        let mut names = Names::default();
        let mut events = Vec::new();
        for (segment, seg) in searcher.segment_readers().iter().enumerate() {
            let ff = seg.fast_fields();
            let terr = |e| self.terr(e);
            // A segment without these columns has no event that sent files.
            let (Some(rows), Some(at), Some(files), Some(bytes), Some(method), Some(user)) = (
                ff.bytes("exfil_rows").map_err(terr)?,
                ff.column_opt::<i64>("exfil_at").map_err(terr)?,
                ff.column_opt::<u64>("exfil_files").map_err(terr)?,
                ff.column_opt::<u64>("exfil_bytes").map_err(terr)?,
                ff.str("exfil").map_err(terr)?,
                ff.str("exfil_user").map_err(terr)?,
            ) else {
                continue;
            };
            let methods = names
                .intern_all(method.dictionary())
                .map_err(|e| io("exfil", e))?;
            let users = names
                .intern_all(user.dictionary())
                .map_err(|e| io("exfil_user", e))?;
            let method_kept = ExfilFilter::keep(&want_method, &methods, &names);
            let user_kept = ExfilFilter::keep(&want_user, &users, &names);
            let alive = seg.alive_bitset();
            weight
                .for_each_no_score(seg, &mut |docs| {
                    for &d in docs {
                        if alive.is_some_and(|a| !a.is_alive(d)) {
                            continue;
                        }
                        let (Some(ord), Some(at_ms), Some(m), Some(u)) = (
                            rows.term_ords(d).next(),
                            at.first(d),
                            method.term_ords(d).next(),
                            user.term_ords(d).next(),
                        ) else {
                            continue;
                        };
                        let kept = |k: &[bool], ord: u64| k.get(ord as usize) == Some(&true);
                        if !kept(&method_kept, m) || !kept(&user_kept, u) {
                            continue;
                        }
                        events.push(ExfilEvent {
                            at_ms,
                            method: methods.get(m as usize).copied().unwrap_or_default(),
                            user: users.get(u as usize).copied().unwrap_or_default(),
                            files: files.first(d).unwrap_or_default(),
                            bytes: bytes.first(d).unwrap_or_default(),
                            segment: segment as u32,
                            ord,
                        });
                    }
                })
                .map_err(|e| self.terr(e))?;
        }
        Ok(ExfilScan {
            searcher,
            path: self.path.clone(),
            names: names.list,
            events,
        })
    }
}

/// An error reading the report's fields of the index at `path`.
fn other(path: &Path, message: String) -> IndexError {
    IndexError::Other {
        path: path.to_owned(),
        message,
    }
}

impl ExfilScan {
    /// A channel or user name of an [`ExfilEvent`].
    pub fn name(&self, id: u32) -> &str {
        self.names.get(id as usize).map_or("", String::as_str)
    }

    /// The rows of `events` (without their `day`), by segment and within a
    /// segment in time order. Cheapest when `events` are close in time.
    pub fn rows(&self, events: &[ExfilEvent]) -> Result<Vec<ExfilFile>, IndexError> {
        let mut wanted: Vec<(u32, u64)> = events.iter().map(|e| (e.segment, e.ord)).collect();
        wanted.sort_unstable();
        wanted.dedup();
        let other = |message: String| other(&self.path, message);
        let mut rows = Vec::new();
        let mut ords = Vec::new();
        for run in wanted.chunk_by(|a, b| a.0 == b.0) {
            let seg = self.searcher.segment_reader(run[0].0);
            let col = seg
                .fast_fields()
                .bytes("exfil_rows")
                .map_err(|e| other(format!("opening exfil_rows: {e}")))?
                .ok_or_else(|| other("exfil_rows went missing from a segment".into()))?;
            ords.clear();
            ords.extend(run.iter().map(|w| w.1));
            let mut bad = None;
            col.dictionary()
                .sorted_ords_to_term_cb(&ords, |b| {
                    let decoded = b
                        .get(TIME_KEY..)
                        .ok_or_else(|| "shorter than its time".to_string())
                        .and_then(|b| ExfilReport::decode(b).map_err(|e| e.to_string()));
                    match decoded {
                        Ok(r) => rows.extend(r.files),
                        Err(e) => bad = Some(e),
                    }
                })
                .map_err(|e| other(format!("reading exfil_rows: {e}")))?;
            if let Some(e) = bad {
                return Err(other(format!("exfil_rows does not decode: {e}")));
            }
        }
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::time_key;

    #[test]
    fn time_keys_sort_like_times() {
        let times = [i64::MIN, -86_400_000, -1, 0, 1, 1_700_000_000_000, i64::MAX];
        for w in times.windows(2) {
            assert!(time_key(w[0]) < time_key(w[1]), "{} vs {}", w[0], w[1]);
        }
    }
}
