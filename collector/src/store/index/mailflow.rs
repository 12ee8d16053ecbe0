//! Mail-flow fields and filters: sender and recipient domains (subdomains
//! included), address wildcards, client address or network, Message-ID,
//! the upstream's queue id, reply codes and classes, the client's SMTP
//! login, internal/external recipients and the direction of a mail.
//!
//! Domains are indexed twice: exactly (`sender_domain`, a column to count
//! by) and with their labels reversed and dot-terminated
//! (`mx.example.com` → `com.example.mx.`), where a domain and all its
//! subdomains are one contiguous run of terms, so `--recipient-domain
//! example.com` is one range query (`kiroku_common::mail::subtree`).
//!
//! Internal and external are not stored: they are ranges over the
//! reversed domains computed from the collector's `internal_domains` when
//! a query runs (the external domains are the gaps between the internal
//! subtrees, `InternalDomains::external_ranges`). A changed setting
//! therefore applies to every stored mail at once, without re-indexing.

use std::net::IpAddr;
use std::ops::Bound;

use kiroku_common::mail::{self, InternalDomains, accepted_recipients, domain_of, reversed};
use kiroku_common::search::{AddressPattern, as_v6, ip_range, reply_codes};
use kiroku_proto::{EmailEvent, SearchRequest};
use tantivy::query::{BooleanQuery, Occur, Query, RangeQuery, RegexQuery, TermQuery};
use tantivy::schema::{Field, IndexRecordOption};
use tantivy::{TantivyDocument, Term};

use super::schema::Fields;
use super::{IndexError, TantivyIndex};

/// Values of `SearchRequest.direction`.
pub const DIRECTIONS: [&str; 4] = ["outbound", "inbound", "internal", "transit"];

/// A Message-ID as indexed and looked up: without its angle brackets, in
/// lower case (IDs differing only in case are not told apart).
pub fn message_id_key(v: &str) -> String {
    v.trim()
        .trim_start_matches('<')
        .trim_end_matches('>')
        .trim()
        .to_lowercase()
}

/// Adds the exact and reversed domains of `senders` and `recipients`.
pub(super) fn add_domains<S: AsRef<str>, R: AsRef<str>>(
    f: &Fields,
    d: &mut TantivyDocument,
    senders: &[S],
    recipients: &[R],
) {
    let senders: Vec<&str> = senders.iter().map(AsRef::as_ref).collect();
    let recipients: Vec<&str> = recipients.iter().map(AsRef::as_ref).collect();
    for (exact, rev, list) in [
        (f.sender_domain, f.sender_rdomain, &senders),
        (f.recipient_domain, f.recipient_rdomain, &recipients),
    ] {
        let mut seen: Vec<String> = Vec::new();
        for dom in list.iter().filter_map(|a| domain_of(a)) {
            if !seen.contains(&dom) {
                d.add_text(rev, reversed(&dom));
                d.add_text(exact, &dom);
                seen.push(dom);
            }
        }
    }
}

/// The mail-flow fields of a mail.
pub(super) fn add_email(f: &Fields, d: &mut TantivyDocument, m: &EmailEvent) {
    let senders: Vec<&str> = std::iter::once(m.mail_from.as_str())
        .chain(m.from.iter().map(String::as_str))
        .collect();
    let recipients: Vec<&str> = m
        .rcpt_to
        .iter()
        .map(|r| r.address.as_str())
        .chain(m.to.iter().chain(&m.cc).chain(&m.bcc).map(String::as_str))
        .collect();
    add_domains(f, d, &senders, &recipients);
    if let Some(dom) = domain_of(&m.mail_from) {
        d.add_text(f.envelope_sender_rdomain, reversed(&dom));
    }
    let mut accepted = 0u64;
    for a in accepted_recipients(m) {
        accepted += 1;
        if let Some(dom) = domain_of(a) {
            d.add_text(f.accepted_rdomain, reversed(&dom));
        }
    }
    d.add_u64(f.accepted_count, accepted);
    if let Ok(ip) = m.client_ip.trim().parse::<IpAddr>() {
        d.add_ip_addr(f.client_ip, as_v6(ip));
    }
    if !m.message_id.trim().is_empty() {
        d.add_text(f.message_id, message_id_key(&m.message_id));
    }
    if !m.upstream_queue_id.is_empty() {
        d.add_text(f.queue_id, m.upstream_queue_id.trim().to_lowercase());
    }
    if !m.auth_user.is_empty() && m.auth_mechanism != mail::AGENT_CREDENTIALS {
        d.add_text(f.auth_user, m.auth_user.to_lowercase());
    }
    let mut codes: Vec<u32> = std::iter::once(m.reply_code)
        .chain(m.rcpt_to.iter().map(|r| r.reply_code))
        .filter(|c| *c != 0)
        .collect();
    codes.sort_unstable();
    codes.dedup();
    for c in codes {
        d.add_u64(f.reply_code, u64::from(c));
    }
    let mut replies = m.upstream_reply.clone();
    for r in m.rcpt_to.iter().filter(|r| !r.reply.is_empty()) {
        replies.push('\n');
        replies.push_str(&r.reply);
    }
    if !replies.trim().is_empty() {
        d.add_text(f.replies, &replies);
    }
}

fn bad(field: &'static str, message: String) -> IndexError {
    IndexError::BadQuery { field, message }
}

fn term_query(t: Term) -> Box<dyn Query> {
    Box::new(TermQuery::new(t, IndexRecordOption::Basic))
}

/// Any of `ranges` over the text field `field`.
fn any_range(field: Field, ranges: Vec<(Bound<String>, Bound<String>)>) -> Box<dyn Query> {
    let term = |b: Bound<String>| match b {
        Bound::Included(s) => Bound::Included(Term::from_field_text(field, &s)),
        Bound::Excluded(s) => Bound::Excluded(Term::from_field_text(field, &s)),
        Bound::Unbounded => Bound::Unbounded,
    };
    let should: Vec<(Occur, Box<dyn Query>)> = ranges
        .into_iter()
        .map(|(lo, hi)| {
            (
                Occur::Should,
                Box::new(RangeQuery::new(term(lo), term(hi))) as Box<dyn Query>,
            )
        })
        .collect();
    Box::new(BooleanQuery::new(should))
}

fn subtree_query(field: Field, flag: &'static str, v: &str) -> Result<Box<dyn Query>, IndexError> {
    let dom = mail::normalise_domain(v).map_err(|m| bad(flag, m))?;
    let (lo, hi) = mail::subtree(&dom);
    Ok(any_range(
        field,
        vec![(Bound::Included(lo), Bound::Excluded(hi))],
    ))
}

/// The mail-flow conditions a request's fields ask for, each a query that
/// must match.
pub(super) struct Flow<'a> {
    pub(super) f: &'a Fields,
    pub(super) internal: &'a InternalDomains,
}

impl Flow<'_> {
    /// An address filter on `field` (an address field: sender, recipient
    /// or any address), `domain_field` the exact domains for `*@domain`.
    pub(super) fn address(
        &self,
        name: &'static str,
        field: Field,
        domain_field: Field,
        v: &str,
    ) -> Result<Box<dyn Query>, IndexError> {
        Ok(match AddressPattern::parse(v).map_err(|m| bad(name, m))? {
            AddressPattern::Exact(a) => term_query(Term::from_field_text(field, &a)),
            AddressPattern::Domain(d) => term_query(Term::from_field_text(domain_field, &d)),
            AddressPattern::Regex(re) => Box::new(
                RegexQuery::from_pattern(&re, field)
                    .map_err(|e| bad(name, format!("the pattern cannot be used: {e}")))?,
            ),
        })
    }

    /// Accepted recipients in the external domains, or only in internal
    /// ones (and at least one).
    fn recipients(&self, external: bool) -> Result<Box<dyn Query>, IndexError> {
        let ranges = self.internal.external_ranges();
        if ranges.is_empty() {
            return Err(bad(
                if external { "external" } else { "internal" },
                "the collector has no internal domains to compare with: set `internal_domains` in its config".into(),
            ));
        }
        let ext = any_range(self.f.accepted_rdomain, ranges);
        if external {
            return Ok(ext);
        }
        let some = Box::new(RangeQuery::new(
            Bound::Included(Term::from_field_u64(self.f.accepted_count, 1)),
            Bound::Unbounded,
        ));
        Ok(Box::new(BooleanQuery::new(vec![
            (Occur::Must, some as Box<dyn Query>),
            (Occur::MustNot, ext),
        ])))
    }

    /// The envelope sender in an internal domain, or in an external one.
    fn sender(&self, internal: bool) -> Box<dyn Query> {
        let ranges = if internal {
            self.internal
                .internal_ranges()
                .into_iter()
                .map(|(lo, hi)| (Bound::Included(lo), Bound::Excluded(hi)))
                .collect()
        } else {
            self.internal.external_ranges()
        };
        any_range(self.f.envelope_sender_rdomain, ranges)
    }

    fn direction(&self, v: &str) -> Result<Box<dyn Query>, IndexError> {
        let d = v.trim().to_lowercase();
        let (sender_internal, to_external) = match d.as_str() {
            "outbound" => (true, true),
            "inbound" => (false, false),
            "internal" => (true, false),
            "transit" => (false, true),
            _ => {
                return Err(bad(
                    "direction",
                    format!(
                        "unknown direction {}: use one of {}",
                        kiroku_common::quote::quote(v),
                        DIRECTIONS.join(", ")
                    ),
                ));
            }
        };
        if self.internal.is_empty() {
            return Err(bad(
                "direction",
                "the collector has no internal domains to tell directions by: set `internal_domains` in its config".into(),
            ));
        }
        Ok(Box::new(BooleanQuery::new(vec![
            (Occur::Must, self.sender(sender_internal)),
            (Occur::Must, self.recipients(to_external)?),
        ])))
    }

    /// Every mail-flow condition of `r`.
    pub(super) fn queries(&self, r: &SearchRequest) -> Result<Vec<Box<dyn Query>>, IndexError> {
        let f = self.f;
        let mut must: Vec<Box<dyn Query>> = Vec::new();
        for (name, field, domains, v) in [
            ("address", f.address, None, &r.address),
            ("sender", f.sender, Some(f.sender_domain), &r.sender),
            (
                "recipient",
                f.recipient,
                Some(f.recipient_domain),
                &r.recipient,
            ),
        ] {
            if v.trim().is_empty() {
                continue;
            }
            must.push(match domains {
                Some(dom) => self.address(name, field, dom, v)?,
                // Any address: `*@domain` is a sender or a recipient there.
                None => match AddressPattern::parse(v).map_err(|m| bad(name, m))? {
                    AddressPattern::Domain(d) => Box::new(BooleanQuery::new(vec![
                        (
                            Occur::Should,
                            term_query(Term::from_field_text(f.sender_domain, &d)),
                        ),
                        (
                            Occur::Should,
                            term_query(Term::from_field_text(f.recipient_domain, &d)),
                        ),
                    ])),
                    _ => self.address(name, field, f.sender_domain, v)?,
                },
            });
        }
        if !r.sender_domain.trim().is_empty() {
            must.push(subtree_query(
                f.sender_rdomain,
                "sender_domain",
                &r.sender_domain,
            )?);
        }
        if !r.recipient_domain.trim().is_empty() {
            must.push(subtree_query(
                f.recipient_rdomain,
                "recipient_domain",
                &r.recipient_domain,
            )?);
        }
        if !r.client_ip.trim().is_empty() {
            let (lo, hi) = ip_range(&r.client_ip).map_err(|m| bad("client_ip", m))?;
            must.push(Box::new(RangeQuery::new(
                Bound::Included(Term::from_field_ip_addr(f.client_ip, lo)),
                Bound::Included(Term::from_field_ip_addr(f.client_ip, hi)),
            )));
        }
        if !r.message_id.trim().is_empty() {
            must.push(term_query(Term::from_field_text(
                f.message_id,
                &message_id_key(&r.message_id),
            )));
        }
        if !r.queue_id.trim().is_empty() {
            must.push(term_query(Term::from_field_text(
                f.queue_id,
                &r.queue_id.trim().to_lowercase(),
            )));
        }
        if !r.auth_user.trim().is_empty() {
            must.push(term_query(Term::from_field_text(
                f.auth_user,
                &r.auth_user.trim().to_lowercase(),
            )));
        }
        if !r.reply_code.trim().is_empty() {
            let (lo, hi) = reply_codes(&r.reply_code).map_err(|m| bad("reply_code", m))?;
            must.push(Box::new(RangeQuery::new(
                Bound::Included(Term::from_field_u64(f.reply_code, u64::from(lo))),
                Bound::Included(Term::from_field_u64(f.reply_code, u64::from(hi))),
            )));
        }
        match (r.external, r.internal) {
            (true, true) => {
                return Err(bad(
                    "external",
                    "external and internal exclude each other: ask for one".into(),
                ));
            }
            (true, false) => must.push(self.recipients(true)?),
            (false, true) => must.push(self.recipients(false)?),
            (false, false) => {}
        }
        if !r.direction.trim().is_empty() {
            must.push(self.direction(&r.direction)?);
        }
        Ok(must)
    }
}

/// The index fields [`TantivyIndex::recipients_query`] reads.
pub(super) const RECIPIENT_FIELDS: &[&str] = &["accepted_rdomain", "accepted_count"];

impl TantivyIndex {
    /// The query of mail whose accepted recipients are external (or all
    /// internal), for the exfiltration report's `recipients` filter.
    pub(super) fn recipients_query(
        &self,
        external: bool,
        internal: &InternalDomains,
    ) -> Result<Box<dyn Query>, IndexError> {
        Flow {
            f: &self.f,
            internal,
        }
        .recipients(external)
    }
}

#[cfg(test)]
mod tests;
