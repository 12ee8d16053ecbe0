//! The coalescing itself: pure logic, no I/O, the clock passed in. Each
//! call returns the records to write, in order.

use std::collections::{BTreeMap, HashSet};

use kiroku_proto::IncidentEvent;

use super::{IncidentKind, Occurrence};

/// Incidents open at once; an occurrence with a new key beyond this joins
/// the kind's catch-all incident (scope `*`), so a scan from a million
/// addresses costs bounded memory.
pub const MAX_OPEN: usize = 1000;
/// Distinct client addresses listed in a record (`client_ips`).
pub const MAX_LISTED: usize = 100;
/// Distinct client addresses counted (`clients`); past it the count
/// stops growing and the detail says "at least".
pub const MAX_COUNTED: usize = 10_000;
/// The scope of a kind's catch-all incident.
pub const CATCH_ALL: &str = "*";

/// When incidents close and report.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// No repeat for this long: closed (`smtp.incident_quiet_secs`).
    pub quiet_ms: i64,
    /// A `still_open` record this often while open
    /// (`smtp.incident_still_open_secs`).
    pub still_open_ms: i64,
}

/// What identifies an incident: its kind and the upstream (upstream
/// kinds) or the client's address (client kinds).
type Key = (IncidentKind, String);

struct Open {
    id: String,
    count: u64,
    first_ms: i64,
    last_ms: i64,
    /// When the next `still_open` record is due.
    still_open_due: i64,
    last: Occurrence,
    listed: Vec<String>,
    counted: HashSet<String>,
}

/// The incidents open now, by key. Lost with the process (an agent that
/// crashes forgets the counts of open incidents: their `open` records are
/// in the buffer, their `closed` ones never come); a clean stop closes
/// them with [`Tracker::close_all`].
pub struct Tracker {
    timing: Timing,
    open: BTreeMap<Key, Open>,
    /// Makes incident ids unique within the process.
    serial: u64,
}

impl Tracker {
    pub fn new(timing: Timing) -> Tracker {
        Tracker {
            timing,
            open: BTreeMap::new(),
            serial: 0,
        }
    }

    /// How many incidents are open.
    pub fn open_count(&self) -> usize {
        self.open.len()
    }

    /// One occurrence at `now`: the first of its key opens an incident
    /// (its `open` record is returned); a repeat is only counted.
    pub fn occurred(&mut self, occ: Occurrence, now: i64) -> Option<IncidentEvent> {
        let mut key = (occ.kind, occ.scope().to_owned());
        if !self.open.contains_key(&key) && self.open.len() >= MAX_OPEN {
            key.1 = CATCH_ALL.to_owned();
        }
        if let Some(o) = self.open.get_mut(&key) {
            o.count += 1;
            o.last_ms = now;
            note_client(o, occ.client);
            o.last = occ;
            return None;
        }
        self.serial += 1;
        let mut o = Open {
            id: format!("{}-{now:x}-{}", occ.kind.name(), self.serial),
            count: 1,
            first_ms: now,
            last_ms: now,
            still_open_due: now + self.timing.still_open_ms,
            listed: Vec::new(),
            counted: HashSet::new(),
            last: occ,
        };
        let client = o.last.client;
        note_client(&mut o, client);
        let rec = record(&key, &o, "open", o.last.kind.meaning());
        self.open.insert(key, o);
        Some(rec)
    }

    /// The upstream `addr` answered a greeting and EHLO: its incidents
    /// are over.
    pub fn upstream_ok(&mut self, addr: &str) -> Vec<IncidentEvent> {
        self.close_where(
            |(kind, scope)| kind.upstream_side() && scope == addr,
            "ended: the upstream answered a greeting and EHLO again",
        )
    }

    /// What time alone decides at `now`: incidents quiet for
    /// `quiet_ms` close, long ones report `still_open`.
    pub fn tick(&mut self, now: i64) -> Vec<IncidentEvent> {
        let quiet = self.timing.quiet_ms;
        let secs = quiet / 1000;
        let mut out = self.close_where_open(
            |o| now - o.last_ms >= quiet,
            &format!("ended: no repeat for {secs} s (smtp.incident_quiet_secs)"),
        );
        for (key, o) in &mut self.open {
            if now >= o.still_open_due {
                o.still_open_due = now + self.timing.still_open_ms;
                out.push(record(key, o, "still_open", o.last.kind.meaning()));
            }
        }
        out
    }

    /// The agent is stopping: every open incident is closed with what is
    /// known.
    pub fn close_all(&mut self) -> Vec<IncidentEvent> {
        self.close_where(
            |_| true,
            "agent stopped: closed with what was known (the incident may go on)",
        )
    }

    fn close_where(&mut self, pick: impl Fn(&Key) -> bool, why: &str) -> Vec<IncidentEvent> {
        let keys: Vec<Key> = self.open.keys().filter(|k| pick(k)).cloned().collect();
        self.close_keys(keys, why)
    }

    fn close_where_open(&mut self, pick: impl Fn(&Open) -> bool, why: &str) -> Vec<IncidentEvent> {
        let keys: Vec<Key> = self
            .open
            .iter()
            .filter(|(_, o)| pick(o))
            .map(|(k, _)| k.clone())
            .collect();
        self.close_keys(keys, why)
    }

    fn close_keys(&mut self, keys: Vec<Key>, why: &str) -> Vec<IncidentEvent> {
        keys.into_iter()
            .filter_map(|k| {
                let o = self.open.remove(&k)?;
                Some(record(&k, &o, "closed", why))
            })
            .collect()
    }
}

fn note_client(o: &mut Open, client: std::net::SocketAddr) {
    let ip = client.ip().to_canonical().to_string();
    if o.counted.len() < MAX_COUNTED {
        o.counted.insert(ip.clone());
    }
    if o.listed.len() < MAX_LISTED && !o.listed.contains(&ip) {
        o.listed.push(ip);
    }
}

/// The record of incident `o` in `state`; `why` says what it means (open)
/// or why it ended (closed).
fn record(key: &Key, o: &Open, state: &str, why: &str) -> IncidentEvent {
    let last = &o.last;
    let clients = o.counted.len() as u64;
    let at_least = if o.counted.len() >= MAX_COUNTED {
        "at least "
    } else {
        ""
    };
    let scope = if key.1 == CATCH_ALL {
        " (too many distinct incidents open: this one gathers the rest of its kind)"
    } else {
        ""
    };
    let detail = format!(
        "{why}; {} occurrence{} from {at_least}{clients} client{}{scope}",
        o.count,
        if o.count == 1 { "" } else { "s" },
        if clients == 1 { "" } else { "s" },
    );
    IncidentEvent {
        kind: key.0.name().into(),
        state: state.into(),
        incident_id: o.id.clone(),
        count: o.count,
        first_ms: o.first_ms,
        last_ms: o.last_ms,
        last_error: last.error.clone(),
        reply_code: last.reply.as_ref().map_or(0, |r| u32::from(r.0)),
        reply: last.reply.as_ref().map(|r| r.1.clone()).unwrap_or_default(),
        upstream: last.upstream.clone(),
        client_ip: last.client.ip().to_canonical().to_string(),
        client_port: u32::from(last.client.port()),
        pid: last.pid.unwrap_or(0),
        process: last.process.clone(),
        client_ips: o.listed.clone(),
        clients,
        timings: last.timings,
        step: last.step.clone(),
        detail,
    }
}
