//! Counts and charts (`kiroku stats`, the `Aggregate` call): the events a
//! search filter matches, grouped by a value or a time bucket, each group
//! with its number of events and their bytes (message size for mail, file
//! size for files, the deltas in + out for network records), the largest
//! groups first, the rest summed.
//!
//! Each grouping reads a column of its own (`by_*`, fast-only, never
//! searched) and `size`, both filled here in [`add_fields`], so a query
//! never loads a stored event: the filter's query finds the documents, a
//! collector reads their column values by term ordinal per segment, and
//! only the ordinals that occurred are turned into strings at the end.
//!
//! Why a column collector and not tantivy's `terms` aggregation: the
//! aggregation keeps the top `segment_size` terms of each segment, so its
//! counts and its "other" are estimates (it reports an error bound), and it
//! has no sum of the groups left out; investigators quote these counts.
//! This collector counts every term of every segment exactly. Time buckets
//! cannot be an aggregation either: `date_histogram` knows fixed offsets,
//! not a zone's daylight-saving rules. They are counted per quarter hour of
//! UTC (every offset in use today is a multiple of 15 minutes) and the
//! quarter hours put in local buckets with jiff afterwards: a few thousand
//! conversions for a month, not one per event (`stats/time.rs`).
//!
//! The request and result types ([`GroupBy`], [`StatsQuery`], [`Stats`])
//! know nothing of tantivy, so another store can answer the same call.

use std::collections::HashMap;

use jiff::tz::TimeZone;
use kiroku_common::mail::domain_of;
use kiroku_proto::{Event, SearchRequest, event::Kind};
use tantivy::collector::{Collector, SegmentCollector};
use tantivy::columnar::{Cardinality, Column, StrColumn};
use tantivy::schema::{FAST, Field};
use tantivy::{DocId, Score, SegmentOrdinal, SegmentReader, TantivyDocument};

mod time;
use time::{TimeCollector, time_buckets};

use kiroku_common::mail::InternalDomains;

use super::schema::FieldSource;
use super::{EventIndex, IndexError, TantivyIndex, outcome_name};

/// Most groups (or time buckets) one request returns.
pub const MAX_TOP: u32 = 10_000;
/// Groups returned when the request does not say.
pub const DEFAULT_TOP: u32 = 10;
/// Longest zone name accepted (the longest IANA name is 32 bytes).
pub const MAX_ZONE_BYTES: usize = 64;
/// Longest `by` accepted.
const MAX_BY_BYTES: usize = 64;

/// The columns of the groupings and the bytes.
#[derive(Clone, Copy)]
pub(super) struct StatsFields {
    user: Field,
    sender: Field,
    sender_domain: Field,
    recipient_domain: Field,
    host: Field,
    client_ip: Field,
    outcome: Field,
    reply_code: Field,
    attachment_name: Field,
    attachment_sha256: Field,
    kind: Field,
    size: Field,
    // Issue 21: network records.
    process: Field,
    remote_ip: Field,
    port: Field,
}

/// Adds the grouping columns to the schema.
pub(super) fn schema_fields(b: &mut FieldSource<'_>) -> StatsFields {
    StatsFields {
        user: b.add_text_field("by_user", FAST),
        sender: b.add_text_field("by_sender", FAST),
        sender_domain: b.add_text_field("by_sender_domain", FAST),
        recipient_domain: b.add_text_field("by_recipient_domain", FAST),
        host: b.add_text_field("by_host", FAST),
        client_ip: b.add_text_field("by_client_ip", FAST),
        outcome: b.add_text_field("by_outcome", FAST),
        reply_code: b.add_text_field("by_reply_code", FAST),
        attachment_name: b.add_text_field("by_attachment_name", FAST),
        attachment_sha256: b.add_text_field("by_attachment_sha256", FAST),
        kind: b.add_text_field("by_kind", FAST),
        size: b.add_u64_field("size", FAST),
        process: b.add_text_field("by_process", FAST),
        remote_ip: b.add_text_field("by_remote_ip", FAST),
        port: b.add_text_field("by_port", FAST),
    }
}

/// Bytes of a grouping value kept: names come from mails and agents, and
/// every group's name goes into a response (up to [`MAX_TOP`] of them).
pub const MAX_KEY_BYTES: usize = 256;

/// `v` cut to [`MAX_KEY_BYTES`] at a character boundary, an ellipsis
/// marking the cut (values that share their first 250 bytes or so share
/// a group).
fn key(v: &str) -> std::borrow::Cow<'_, str> {
    if v.len() <= MAX_KEY_BYTES {
        return v.into();
    }
    let mut end = MAX_KEY_BYTES - '…'.len_utf8();
    while !v.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &v[..end]).into()
}

fn put(d: &mut TantivyDocument, field: Field, v: &str) {
    if !v.is_empty() {
        d.add_text(field, key(v).as_ref());
    }
}

/// An address in its usual form (an IPv4-mapped IPv6 address as IPv4);
/// anything that is not an address as it is.
fn canonical_ip(ip: &str) -> String {
    match ip.trim().parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V6(v6)) => v6
            .to_ipv4_mapped()
            .map_or_else(|| v6.to_string(), |v4| v4.to_string()),
        Ok(v4) => v4.to_string(),
        Err(_) => ip.to_owned(),
    }
}

/// Sorted, without repeats and empties: an event counts once per value.
fn distinct(values: impl Iterator<Item = String>) -> Vec<String> {
    let mut v: Vec<String> = values.filter(|s| !s.is_empty()).collect();
    v.sort_unstable();
    v.dedup();
    v
}

/// Fills the grouping columns of event `e`.
pub(super) fn add_fields(f: &StatsFields, d: &mut TantivyDocument, e: &Event) {
    if let Some(h) = &e.host {
        let name = if h.hostname.is_empty() {
            &h.fqdn
        } else {
            &h.hostname
        };
        put(d, f.host, &name.to_lowercase());
    }
    let mut size = 0;
    let kind = match &e.kind {
        Some(Kind::Email(m)) => {
            // The record's user, else the client's own SMTP login (never
            // the agent's smarthost login).
            let user = if e.user.is_empty() {
                kiroku_common::mail::client_login(m).unwrap_or_default()
            } else {
                &e.user
            };
            put(d, f.user, &user.to_lowercase());
            let sender = m.mail_from.trim().to_lowercase();
            put(d, f.sender, &sender);
            if let Some(dom) = domain_of(&sender) {
                put(d, f.sender_domain, &dom);
            }
            for dom in distinct(m.rcpt_to.iter().filter_map(|r| domain_of(&r.address))) {
                put(d, f.recipient_domain, &dom);
            }
            // One group per address however the agent wrote it
            // (`::ffff:10.1.2.3` is 10.1.2.3), as `--client-ip` matches it.
            put(d, f.client_ip, &canonical_ip(&m.client_ip));
            put(d, f.outcome, outcome_name(m.outcome));
            if m.reply_code != 0 {
                put(d, f.reply_code, &m.reply_code.to_string());
            }
            for name in distinct(m.attachments.iter().map(|a| a.filename.clone())) {
                put(d, f.attachment_name, &name);
            }
            for sha in distinct(m.attachments.iter().map(|a| a.sha256.to_lowercase())) {
                put(d, f.attachment_sha256, &sha);
            }
            size = m.message_size;
            "email"
        }
        Some(Kind::File(file)) => {
            size = file.size;
            "file"
        }
        Some(Kind::HostChange(_)) => "host_change",
        Some(Kind::Gap(_)) => "gap",
        Some(Kind::Integrity(_)) => "integrity",
        Some(Kind::Incident(_)) => "incident",
        Some(Kind::Auth(a)) => {
            // Counted by the claimed user (`--by user`: who is guessed
            // at), falling back to the record's user, and by client.
            let user = if a.claimed_user.trim().is_empty() {
                &e.user
            } else {
                a.claimed_user.trim()
            };
            put(d, f.user, &user.to_lowercase());
            put(d, f.client_ip, &canonical_ip(&a.client_ip));
            put(
                d,
                f.outcome,
                kiroku_common::vocabulary::auth_outcome::name(a.success),
            );
            if a.reply_code != 0 {
                put(d, f.reply_code, &a.reply_code.to_string());
            }
            "auth"
        }
        Some(Kind::MtaLog(_)) => "mta_log",
        // Issue 21: by process name, remote address and service port;
        // the bytes are the record's deltas, so a sum over a time range
        // counts each byte of a flow once whatever its records.
        Some(Kind::Network(n)) => {
            add_process(f, d, e, n.process.as_ref());
            put(d, f.remote_ip, &canonical_ip(&n.remote_ip));
            let port = super::network::service_port(n);
            if port != 0 {
                put(d, f.port, &port.to_string());
            }
            size = super::network::delta_bytes(n);
            "network"
        }
        // An episode's volume is a running total: it is not added to the
        // bytes (the network records of its flows carry them).
        Some(Kind::P2p(p)) => {
            add_process(f, d, e, p.process.as_ref());
            "p2p"
        }
        None => "",
    };
    if !matches!(
        e.kind,
        Some(Kind::Email(_) | Kind::Auth(_) | Kind::Network(_) | Kind::P2p(_))
    ) {
        put(d, f.user, &e.user.to_lowercase());
    }
    put(d, f.kind, kind);
    d.add_u64(f.size, size);
}

/// A network or P2P record's process (its name, else its executable) and
/// user (the record's, else the process's).
fn add_process(
    f: &StatsFields,
    d: &mut TantivyDocument,
    e: &Event,
    p: Option<&kiroku_proto::ProcessRef>,
) {
    let p = p.cloned().unwrap_or_default();
    let name = if p.name.trim().is_empty() {
        p.exe.trim()
    } else {
        p.name.trim()
    };
    put(d, f.process, name);
    let user = if e.user.is_empty() { &p.user } else { &e.user };
    put(d, f.user, &user.to_lowercase());
}

/// What the events are grouped by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupBy {
    User,
    Sender,
    SenderDomain,
    RecipientDomain,
    Host,
    ClientIp,
    Outcome,
    ReplyCode,
    AttachmentName,
    AttachmentSha256,
    Kind,
    /// Issue 21: a network or P2P record's process name.
    Process,
    /// A network record's remote address.
    RemoteIp,
    /// A network record's service port (`index/network.rs`,
    /// `service_port`).
    Port,
    /// Local hours (the zone's), in time order.
    Hour,
    /// Local days, in time order.
    Day,
    /// 00–23, the hour of the day in the zone, every hour listed.
    HourOfDay,
    /// Mon–Sun in the zone, every day listed.
    Weekday,
}

/// Every grouping with its name, as requests and the CLI spell it.
pub const GROUP_BYS: [(&str, GroupBy); 18] = [
    ("user", GroupBy::User),
    ("sender", GroupBy::Sender),
    ("sender-domain", GroupBy::SenderDomain),
    ("recipient-domain", GroupBy::RecipientDomain),
    ("host", GroupBy::Host),
    ("client-ip", GroupBy::ClientIp),
    ("outcome", GroupBy::Outcome),
    ("reply-code", GroupBy::ReplyCode),
    ("attachment-name", GroupBy::AttachmentName),
    ("attachment-sha256", GroupBy::AttachmentSha256),
    ("kind", GroupBy::Kind),
    ("process", GroupBy::Process),
    ("remote-ip", GroupBy::RemoteIp),
    ("port", GroupBy::Port),
    ("hour", GroupBy::Hour),
    ("day", GroupBy::Day),
    ("hour-of-day", GroupBy::HourOfDay),
    ("weekday", GroupBy::Weekday),
];

const WEEKDAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];

impl GroupBy {
    /// A name of [`GROUP_BYS`] (case and `_` for `-` do not matter).
    pub fn parse(s: &str) -> Option<GroupBy> {
        let s = s.trim().to_lowercase().replace('_', "-");
        GROUP_BYS.iter().find(|(n, _)| *n == s).map(|(_, g)| *g)
    }

    pub fn name(self) -> &'static str {
        GROUP_BYS
            .iter()
            .find(|(_, g)| *g == self)
            .map_or("", |(n, _)| n)
    }

    /// An event can have several values (and counts in each group).
    pub fn multi_valued(self) -> bool {
        matches!(
            self,
            GroupBy::RecipientDomain | GroupBy::AttachmentName | GroupBy::AttachmentSha256
        )
    }

    /// The column a value grouping reads; none for time buckets.
    fn column(self) -> Option<&'static str> {
        Some(match self {
            GroupBy::User => "by_user",
            GroupBy::Sender => "by_sender",
            GroupBy::SenderDomain => "by_sender_domain",
            GroupBy::RecipientDomain => "by_recipient_domain",
            GroupBy::Host => "by_host",
            GroupBy::ClientIp => "by_client_ip",
            GroupBy::Outcome => "by_outcome",
            GroupBy::ReplyCode => "by_reply_code",
            GroupBy::AttachmentName => "by_attachment_name",
            GroupBy::AttachmentSha256 => "by_attachment_sha256",
            GroupBy::Kind => "by_kind",
            GroupBy::Process => "by_process",
            GroupBy::RemoteIp => "by_remote_ip",
            GroupBy::Port => "by_port",
            GroupBy::Hour | GroupBy::Day | GroupBy::HourOfDay | GroupBy::Weekday => return None,
        })
    }
}

/// A stats request, checked: what to group by, how many groups, the zone
/// of the time buckets.
#[derive(Clone, Debug)]
pub struct StatsQuery {
    pub by: GroupBy,
    /// Groups to return; 0: the default (10, or every time bucket).
    pub top: u32,
    pub zone: TimeZone,
    /// The zone's name as asked ("UTC" when none was).
    pub zone_name: String,
}

fn refuse(field: &'static str, message: String) -> IndexError {
    IndexError::BadQuery { field, message }
}

impl StatsQuery {
    /// Checks and reads the request's own fields (the filter is checked
    /// with the search's limits): `by` one of [`GROUP_BYS`], `top` at most
    /// [`MAX_TOP`], `zone` an IANA name (empty: UTC).
    pub fn parse(by: &str, top: u32, zone: &str) -> Result<StatsQuery, IndexError> {
        use kiroku_common::quote::quote;
        let names = || GROUP_BYS.map(|(n, _)| n).join(", ");
        if by.len() > MAX_BY_BYTES {
            return Err(refuse(
                "by",
                format!("{} is not a grouping: use one of {}", quote(by), names()),
            ));
        }
        let g = GroupBy::parse(by).ok_or_else(|| {
            let message = if by.trim().is_empty() {
                format!("say what to group by: one of {}", names())
            } else {
                format!("{} is not a grouping: use one of {}", quote(by), names())
            };
            refuse("by", message)
        })?;
        if top > MAX_TOP {
            return Err(refuse(
                "top",
                format!("{top} groups asked; at most {MAX_TOP} are returned"),
            ));
        }
        if zone.len() > MAX_ZONE_BYTES {
            return Err(refuse(
                "time_zone",
                format!(
                    "the zone name is {} bytes; at most {MAX_ZONE_BYTES} are accepted",
                    zone.len()
                ),
            ));
        }
        let zone = zone.trim();
        let (tz, zone_name) = if zone.is_empty() {
            (TimeZone::UTC, "UTC".to_string())
        } else {
            let tz = TimeZone::get(zone).map_err(|_| {
                refuse(
                    "time_zone",
                    format!(
                        "unknown time zone {}: use an IANA name such as Asia/Tokyo or UTC",
                        quote(zone)
                    ),
                )
            })?;
            (tz, zone.to_string())
        };
        Ok(StatsQuery {
            by: g,
            top,
            zone: tz,
            zone_name,
        })
    }
}

/// Events and their bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub count: u64,
    pub bytes: u64,
}

impl Tally {
    fn add(&mut self, bytes: u64) {
        self.count += 1;
        // Sizes come from agents: saturate rather than wrap.
        self.bytes = self.bytes.saturating_add(bytes);
    }

    fn merge(&mut self, o: Tally) {
        self.count += o.count;
        self.bytes = self.bytes.saturating_add(o.bytes);
    }
}

/// One group: its value (or bucket) and its events.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Group {
    pub key: String,
    pub tally: Tally,
    /// Hour and day buckets: when the bucket starts.
    pub start_ms: Option<i64>,
}

/// The answer to a stats request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Largest first (ties by key); time buckets in time order.
    pub groups: Vec<Group>,
    /// The groups left out by `top`, summed, and how many there were.
    pub other: Tally,
    pub other_groups: u64,
    /// Every matching event.
    pub total: Tally,
    /// Matching events without a value for the grouping.
    pub none: Tally,
}

impl EventIndex {
    /// The events matching `filter`, grouped as `q` says, read from
    /// columns only. Refused while an index of an older schema (without
    /// the grouping columns) serves.
    pub fn stats(&self, filter: &SearchRequest, q: &StatsQuery) -> Result<Stats, IndexError> {
        self.require_current("counting (stats)")?;
        self.serving().stats(filter, q, &self.internal_domains())
    }
}

impl TantivyIndex {
    fn stats(
        &self,
        filter: &SearchRequest,
        q: &StatsQuery,
        internal: &InternalDomains,
    ) -> Result<Stats, IndexError> {
        let query = self.build_query(filter, internal)?;
        let searcher = self.reader.searcher();
        match q.by.column() {
            Some(column) => {
                let found = searcher
                    .search(&query, &ValueCollector { column })
                    .map_err(|e| self.terr(e))?;
                let values = found.map_err(|message| IndexError::Other {
                    path: self.path.clone(),
                    message,
                })?;
                Ok(top_values(values, q.top))
            }
            None => {
                let field = if filter.corrected_time {
                    "corrected_at"
                } else {
                    "observed_at"
                };
                let found = searcher
                    .search(&query, &TimeCollector { field })
                    .map_err(|e| self.terr(e))?;
                Ok(time_buckets(found, q))
            }
        }
    }
}

/// What a value collector found: each value's events, the total and the
/// events without a value.
#[derive(Default)]
struct Values {
    groups: HashMap<String, Tally>,
    total: Tally,
    none: Tally,
}

/// Counts the matching documents per value of a string column.
struct ValueCollector {
    column: &'static str,
}

/// Documents read per batch (tantivy hands out blocks of 64).
const BLOCK: usize = 64;

struct ValueSegment {
    column: Option<StrColumn>,
    multi: bool,
    size: Option<Column<u64>>,
    /// Per term ordinal of this segment's column.
    tallies: Vec<Tally>,
    total: Tally,
    none: Tally,
    sizes: Vec<Option<u64>>,
    ords: Vec<Option<u64>>,
}

impl Collector for ValueCollector {
    type Fruit = Result<Values, String>;
    type Child = ValueSegment;

    fn for_segment(
        &self,
        _segment: SegmentOrdinal,
        reader: &SegmentReader,
    ) -> tantivy::Result<ValueSegment> {
        let ff = reader.fast_fields();
        // A segment none of whose events has a value for the grouping has
        // no column for it: its events count as having none.
        let column = ff.str(self.column)?;
        let size = ff.column_opt::<u64>("size")?;
        let terms = column.as_ref().map_or(0, |c| c.num_terms());
        let multi = column
            .as_ref()
            .is_some_and(|c| c.ords().get_cardinality() == Cardinality::Multivalued);
        Ok(ValueSegment {
            column,
            multi,
            size,
            tallies: vec![Tally::default(); terms],
            total: Tally::default(),
            none: Tally::default(),
            sizes: vec![None; BLOCK],
            ords: vec![None; BLOCK],
        })
    }

    fn requires_scoring(&self) -> bool {
        false
    }

    fn merge_fruits(&self, fruits: Vec<Result<Values, String>>) -> tantivy::Result<Self::Fruit> {
        let mut all = Values::default();
        for f in fruits {
            let f = match f {
                Ok(f) => f,
                Err(e) => return Ok(Err(e)),
            };
            all.total.merge(f.total);
            all.none.merge(f.none);
            for (k, t) in f.groups {
                all.groups.entry(k).or_default().merge(t);
            }
        }
        Ok(Ok(all))
    }
}

/// The first value of `column` for each of `docs` into `out`; none for
/// every doc of a segment without the column.
fn first_vals<T>(column: &Option<Column<T>>, docs: &[DocId], out: &mut [Option<T>])
where
    T: tantivy::columnar::MonotonicallyMappableToU64 + PartialOrd,
{
    match column {
        Some(c) => c.first_vals(docs, out),
        None => out.fill(None),
    }
}

impl SegmentCollector for ValueSegment {
    type Fruit = Result<Values, String>;

    fn collect(&mut self, doc: DocId, _score: Score) {
        self.collect_block(&[doc]);
    }

    fn collect_block(&mut self, docs: &[DocId]) {
        for docs in docs.chunks(BLOCK) {
            let sizes = &mut self.sizes[..docs.len()];
            first_vals(&self.size, docs, sizes);
            let Some(col) = &self.column else {
                for s in sizes.iter() {
                    self.total.add(s.unwrap_or(0));
                    self.none.add(s.unwrap_or(0));
                }
                continue;
            };
            if self.multi {
                for (&doc, s) in docs.iter().zip(sizes.iter()) {
                    let bytes = s.unwrap_or(0);
                    self.total.add(bytes);
                    let mut any = false;
                    for ord in col.term_ords(doc) {
                        any = true;
                        if let Some(t) = self.tallies.get_mut(ord as usize) {
                            t.add(bytes);
                        }
                    }
                    if !any {
                        self.none.add(bytes);
                    }
                }
            } else {
                let ords = &mut self.ords[..docs.len()];
                col.ords().first_vals(docs, ords);
                for (ord, s) in ords.iter().zip(sizes.iter()) {
                    let bytes = s.unwrap_or(0);
                    self.total.add(bytes);
                    match ord.and_then(|o| self.tallies.get_mut(o as usize)) {
                        Some(t) => t.add(bytes),
                        None => self.none.add(bytes),
                    }
                }
            }
        }
    }

    fn harvest(self) -> Self::Fruit {
        let mut values = Values {
            groups: HashMap::new(),
            total: self.total,
            none: self.none,
        };
        let Some(col) = self.column else {
            return Ok(values);
        };
        let seen: Vec<u64> = (0..self.tallies.len() as u64)
            .filter(|&o| self.tallies[o as usize].count > 0)
            .collect();
        let mut i = 0;
        col.dictionary()
            .sorted_ords_to_term_cb(&seen, |term| {
                let key = String::from_utf8_lossy(term).into_owned();
                if let Some(&o) = seen.get(i) {
                    values
                        .groups
                        .entry(key)
                        .or_default()
                        .merge(self.tallies[o as usize]);
                }
                i += 1;
            })
            .map_err(|e| format!("reading the dictionary of a grouping column: {e}"))?;
        Ok(values)
    }
}

/// The `top` largest groups (ties by key), the rest summed.
fn top_values(values: Values, top: u32) -> Stats {
    let top = match top {
        0 => DEFAULT_TOP,
        n => n.min(MAX_TOP),
    } as usize;
    let mut groups: Vec<Group> = values
        .groups
        .into_iter()
        .map(|(key, tally)| Group {
            key,
            tally,
            start_ms: None,
        })
        .collect();
    groups.sort_unstable_by(|a, b| {
        b.tally
            .count
            .cmp(&a.tally.count)
            .then_with(|| a.key.cmp(&b.key))
    });
    let mut other = Tally::default();
    let rest = groups.split_off(top.min(groups.len()));
    for g in &rest {
        other.merge(g.tally);
    }
    Stats {
        groups,
        other,
        other_groups: rest.len() as u64,
        total: values.total,
        none: values.none,
    }
}

#[cfg(test)]
mod tests;
