//! The notions of the event model every crate means the same way: when an
//! event happened on the collector's timeline ("corrected time"), which
//! recipients a mail really went to ("accepted recipients"), who did it,
//! what an outcome is called, and which mail domains are the
//! organisation's own ("internal domains"). The index, the investigations,
//! the alert rules and the CLI all use these, never a copy of their own,
//! so a search, a trace and a report agree about the same events.

use std::ops::Bound;

use kiroku_proto::{Attachment, EmailEvent, Event, Outcome, event::Kind};

/// The event's time on the collector's clock: `observed_at` corrected by
/// the agent's measured offset (agent − collector); `observed_at` itself
/// when no offset was measured.
///
/// Why `observed_at` and not `received_at` when the offset is unknown: an
/// offset is missing mostly for events an agent recorded before it first
/// reached a collector, that is, events that waited in its buffer. Their
/// receipt time is when the outage ended, hours or days after the fact,
/// and the same for the whole backlog, so a trace would order them wrong
/// and a report would count them on the wrong day; the agent's own clock
/// is synchronised on almost every host and off by seconds if at all.
pub fn corrected_ms(e: &Event) -> i64 {
    // Both come from the agent: saturate rather than overflow (a panic in
    // a debug build, a time wrapped to the other end of the range in a
    // release build; found by fuzz/grpc_query).
    if e.clock_offset_known {
        e.observed_at_ms.saturating_sub(e.clock_offset_ms)
    } else {
        e.observed_at_ms
    }
}

/// Envelope recipients the upstream (or capture) accepted: a reply code of
/// 0 (not recorded: capture-only mode, or an agent that crashed before the
/// reply) or 2xx. Header recipients (To/Cc) are not recipients: only RCPT
/// TO decides where a mail went.
pub fn accepted_recipients(m: &EmailEvent) -> impl Iterator<Item = &str> {
    m.rcpt_to
        .iter()
        .filter(|r| r.reply_code == 0 || (200..300).contains(&r.reply_code))
        .map(|r| r.address.as_str())
}

/// Attachments in the proper sense (not inline images of the body).
pub fn real_attachments(m: &EmailEvent) -> impl Iterator<Item = &Attachment> {
    m.attachments.iter().filter(|a| !a.inline)
}

/// Lower-cased outcome name as filters and the CLI write it.
pub fn outcome_name(v: i32) -> &'static str {
    match Outcome::try_from(v) {
        Ok(Outcome::Delivered) => "delivered",
        Ok(Outcome::Rejected) => "rejected",
        Ok(Outcome::Aborted) => "aborted",
        Ok(Outcome::Captured) => "captured",
        _ => "unknown",
    }
}

/// `EmailEvent.auth_mechanism` when the login was the agent's own
/// smarthost account (`smtp.upstream_auth`), not the client's: that user
/// says nothing about who sent the mail.
pub const AGENT_CREDENTIALS: &str = "agent-credentials";

/// Values of `EmailEvent.user_source`: where the event's `user` came from.
pub mod user_source {
    /// The owner of the client's socket on the agent's host (a local
    /// client).
    pub const LOCAL_SOCKET: &str = "local_socket";
    /// The SMTP AUTH login of a client on another machine.
    pub const SMTP_AUTH: &str = "smtp_auth";
    /// A client on another machine without SMTP AUTH: who sat at it is
    /// not known to the agent's host, so `user` is empty.
    pub const REMOTE_UNKNOWN: &str = "remote_unknown";
}

/// The SMTP login of the client that sent mail `m`, when it logged in
/// itself: the agent's own smarthost login (`AGENT_CREDENTIALS`) is not a
/// user, so nothing (search, counts, reports) counts mail under it.
pub fn client_login(m: &EmailEvent) -> Option<&str> {
    (!m.auth_user.is_empty() && m.auth_mechanism != AGENT_CREDENTIALS)
        .then_some(m.auth_user.as_str())
}

/// Who did it, for reports and rates: the account the event names, else
/// the client's SMTP login (never the agent's own smarthost account), else
/// the envelope sender.
pub fn event_user(e: &Event) -> String {
    if !e.user.is_empty() {
        return e.user.clone();
    }
    match &e.kind {
        Some(Kind::Email(m))
            if !m.auth_user.is_empty() && m.auth_mechanism != AGENT_CREDENTIALS =>
        {
            m.auth_user.clone()
        }
        Some(Kind::Email(m)) if !m.mail_from.is_empty() => m.mail_from.clone(),
        _ => "(unknown)".into(),
    }
}

/// The domain of an address (lower case, without a trailing dot or `>`);
/// `None` without one (a local mailbox).
pub fn domain_of(address: &str) -> Option<String> {
    let (_, domain) = address.rsplit_once('@')?;
    let d = domain
        .trim()
        .trim_end_matches('>')
        .trim_end_matches('.')
        .to_lowercase();
    (!d.is_empty()).then_some(d)
}

/// A domain as a setting or a filter names it: trimmed, lower case,
/// without a leading `@` or `.` or a trailing `.`. Refused (with why)
/// when it is empty or holds characters no domain has.
pub fn normalise_domain(d: &str) -> Result<String, String> {
    let n = d
        .trim()
        .trim_start_matches('@')
        .trim_start_matches('.')
        .trim_end_matches('.')
        .to_lowercase();
    if n.is_empty() || n.contains(['@', '/', '*', '?']) || n.chars().any(char::is_whitespace) {
        return Err(format!(
            "{} is not a domain name (write it as example.com)",
            crate::quote::quote(d)
        ));
    }
    if n.contains("..") {
        return Err(format!("{} has an empty label", crate::quote::quote(d)));
    }
    Ok(n)
}

/// A domain with its labels reversed and a dot after each:
/// `mx.example.com` → `com.example.mx.`. Indexed this way, a domain and
/// all its subdomains are one contiguous run of terms, the run
/// [`subtree`] names.
pub fn reversed(domain: &str) -> String {
    let mut out = String::with_capacity(domain.len() + 1);
    for label in domain.rsplit('.').filter(|l| !l.is_empty()) {
        out.push_str(label);
        out.push('.');
    }
    out
}

/// The reversed terms of `domain` and every subdomain: `[lo, hi)` with
/// `lo` = `com.example.` and `hi` = `com.example/` (`/` is the byte after
/// `.`), so `com.example.mx.` is inside and `com.examples.` is not.
pub fn subtree(domain: &str) -> (String, String) {
    let lo = reversed(domain);
    let mut hi = lo.clone();
    hi.pop();
    hi.push('/');
    (lo, hi)
}

/// The organisation's own mail domains (the collector's `internal_domains`
/// setting, or an alert rule's own list), each with its subdomains.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InternalDomains {
    /// Normalised, sorted, without a domain already covered by another.
    domains: Vec<String>,
}

impl InternalDomains {
    /// Checks and normalises a list as written in a config file; the error
    /// names the value at fault.
    pub fn new<S: AsRef<str>>(list: &[S]) -> Result<InternalDomains, String> {
        let mut domains = Vec::new();
        for d in list {
            domains.push(normalise_domain(d.as_ref())?);
        }
        domains.sort_by_key(|d| reversed(d));
        // A subdomain of another internal domain adds nothing: keeping
        // only the outermost leaves disjoint ranges to complement.
        let mut kept: Vec<String> = Vec::new();
        for d in domains {
            if !kept
                .iter()
                .any(|k| d == *k || d.ends_with(&format!(".{k}")))
            {
                kept.push(d);
            }
        }
        Ok(InternalDomains { domains: kept })
    }

    pub fn is_empty(&self) -> bool {
        self.domains.is_empty()
    }

    pub fn domains(&self) -> &[String] {
        &self.domains
    }

    /// Is `domain` one of the internal domains or a subdomain of one?
    pub fn contains_domain(&self, domain: &str) -> bool {
        let domain = domain.trim_end_matches('.').to_lowercase();
        self.domains
            .iter()
            .any(|d| domain == *d || domain.ends_with(&format!(".{d}")))
    }

    /// Is `address` outside every internal domain? An address without a
    /// domain is internal (local delivery).
    pub fn is_external(&self, address: &str) -> bool {
        domain_of(address).is_some_and(|d| !self.contains_domain(&d))
    }

    /// External accepted recipients of a mail.
    pub fn external_recipients<'a>(&self, m: &'a EmailEvent) -> Vec<&'a str> {
        accepted_recipients(m)
            .filter(|a| self.is_external(a))
            .collect()
    }

    /// The reversed-domain ranges ([`subtree`]) of the internal domains,
    /// in order and disjoint.
    pub fn internal_ranges(&self) -> Vec<(String, String)> {
        let mut r: Vec<(String, String)> = self.domains.iter().map(|d| subtree(d)).collect();
        r.sort();
        r
    }

    /// The reversed-domain ranges of every domain that is *not* internal:
    /// the gaps between the internal subtrees, from the first term to the
    /// last. Empty only when nothing is internal — then every domain is
    /// external and there is no range to write (the caller decides).
    ///
    /// Why ranges at query time rather than a flag stored with each
    /// event: whether a domain is internal is the collector's setting of
    /// today, and a changed setting then applies to every event already
    /// stored, without re-indexing.
    pub fn external_ranges(&self) -> Vec<(Bound<String>, Bound<String>)> {
        let internal = self.internal_ranges();
        if internal.is_empty() {
            return Vec::new();
        }
        let mut out = Vec::new();
        let mut lo: Bound<String> = Bound::Unbounded;
        for (start, end) in internal {
            out.push((lo, Bound::Excluded(start)));
            lo = Bound::Included(end);
        }
        out.push((lo, Bound::Unbounded));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiroku_proto::Recipient;

    #[test]
    fn corrected_time_falls_back_to_the_agent_clock() {
        let mut e = Event {
            observed_at_ms: 10_000,
            received_at_ms: 99_000,
            ..Default::default()
        };
        assert_eq!(corrected_ms(&e), 10_000, "offset unknown: observed_at");
        e.clock_offset_known = true;
        e.clock_offset_ms = 2_000;
        assert_eq!(corrected_ms(&e), 8_000);
        e.observed_at_ms = i64::MIN;
        assert_eq!(corrected_ms(&e), i64::MIN, "saturates");
    }

    #[test]
    fn accepted_recipients_are_2xx_or_unrecorded_envelope_ones() {
        let r = |a: &str, code| Recipient {
            address: a.into(),
            reply_code: code,
            ..Default::default()
        };
        let m = EmailEvent {
            rcpt_to: vec![r("a@x", 250), r("b@x", 550), r("c@x", 0), r("d@x", 451)],
            to: vec!["header@x".into()],
            ..Default::default()
        };
        assert_eq!(accepted_recipients(&m).collect::<Vec<_>>(), ["a@x", "c@x"]);
    }

    #[test]
    fn domains_reversed_and_their_subtrees() {
        for (addr, domain) in [
            ("bob@Mail.Example.COM", Some("mail.example.com")),
            ("<bob@example.com.>", Some("example.com")),
            ("postmaster", None),
            ("bob@", None),
        ] {
            assert_eq!(domain_of(addr).as_deref(), domain, "{addr}");
        }
        assert_eq!(reversed("mx.example.com"), "com.example.mx.");
        let (lo, hi) = subtree("example.com");
        for (d, inside) in [
            ("example.com", true),
            ("mx.example.com", true),
            ("a.b.example.com", true),
            ("examples.com", false),
            ("myexample.com", false),
            ("example.co", false),
            ("com", false),
        ] {
            let r = reversed(d);
            assert_eq!(r >= lo && r < hi, inside, "{d}");
        }
        for (input, ok) in [
            (" @Example.COM. ", Some("example.com")),
            (".corp.example", Some("corp.example")),
            ("a b", None),
            ("x@y", None),
            ("", None),
            ("a..b", None),
        ] {
            assert_eq!(normalise_domain(input).ok().as_deref(), ok, "{input:?}");
        }
    }

    #[test]
    fn internal_and_external_domains_and_their_ranges() {
        let internal =
            InternalDomains::new(&["corp.example", "mx.corp.example", "Ex.Net"]).expect("valid");
        assert_eq!(
            internal.domains(),
            ["corp.example", "ex.net"],
            "by reversed name"
        );
        assert!(InternalDomains::new(&["not a domain"]).is_err());
        let in_range = |r: &str, (lo, hi): &(Bound<String>, Bound<String>)| {
            let above = match lo {
                Bound::Included(l) => r >= l.as_str(),
                Bound::Excluded(l) => r > l.as_str(),
                Bound::Unbounded => true,
            };
            let below = match hi {
                Bound::Included(h) => r <= h.as_str(),
                Bound::Excluded(h) => r < h.as_str(),
                Bound::Unbounded => true,
            };
            above && below
        };
        let ranges = internal.external_ranges();
        assert_eq!(ranges.len(), 3);
        for (addr, external) in [
            ("a@corp.example", false),
            ("a@MX.corp.example", false),
            ("a@x.ex.net", false),
            ("a@gmail.com", true),
            ("a@corp.example.evil.com", true),
            ("a@notcorp.example", true),
            ("a@ex.network", true),
            ("a@example", true),
            ("root", false),
        ] {
            assert_eq!(internal.is_external(addr), external, "{addr}");
            if let Some(d) = domain_of(addr) {
                let r = reversed(&d);
                let hits = ranges.iter().filter(|x| in_range(&r, x)).count();
                assert_eq!(hits, usize::from(external), "{addr} in the ranges");
            }
        }
        assert!(InternalDomains::default().external_ranges().is_empty());
    }

    #[test]
    fn the_user_of_an_event() {
        let mail = |user: &str, auth: &str, mech: &str| Event {
            user: user.into(),
            kind: Some(Kind::Email(EmailEvent {
                mail_from: "s@x".into(),
                auth_user: auth.into(),
                auth_mechanism: mech.into(),
                ..Default::default()
            })),
            ..Default::default()
        };
        assert_eq!(event_user(&mail("alice", "bob", "PLAIN")), "alice");
        assert_eq!(event_user(&mail("", "bob", "PLAIN")), "bob");
        assert_eq!(event_user(&mail("", "relay", AGENT_CREDENTIALS)), "s@x");
        assert_eq!(event_user(&Event::default()), "(unknown)");
    }
}
