//! PPAP: a password-protected archive mailed, then its password in a
//! second mail ("Password-protected zip, Password, Angouka, Protocol", the
//! practice many Japanese companies are abolishing). Two alert kinds act on
//! what the analysis worker derived from a mail (its annotations), after
//! the mail is stored:
//!
//! - `encrypted_attachment`: a mail carrying an encrypted archive (any
//!   depth; an encrypted 7z header counts) to a recipient outside the
//!   internal domains.
//! - `ppap`: a mail with an encrypted archive, and a *password notice* from
//!   the same sender to an overlapping set of recipients sent within
//!   `window_minutes` after it. A password notice is a short mail (body at
//!   most `max_body_chars` characters) without an encrypted archive whose
//!   subject or body matches one of `password_patterns`.
//!
//! Either mail may reach the collector first (agents ship late after an
//! outage, a password mail may leave through another host): each mail is
//! matched against the unpaired mails of the other role by *sent* time
//! (the corrected event time), and remembered unpaired otherwise. A pair
//! fires exactly once: both mails are marked paired in the same store as
//! the pending mails, under the correlator's lock, before the alert is
//! logged, and a mail analysed again (`reanalyse`) finds its mark. Both
//! mails get a [`Link`] to the other and the tag `ppap` in their
//! annotations, so `kiroku search --tag ppap` finds both.
//!
//! Architecture invariant: the correlation state is bounded per sender by
//! time: unpaired mails older than [`KEEP_MS`] before the newest mail of
//! their sender are dropped when that sender mails again.

use std::collections::BTreeSet;
use std::sync::Mutex;

use kiroku_common::mail::{InternalDomains, accepted_recipients, corrected_ms, event_user};
use kiroku_proto::{Alert, Annotations, EmailEvent, Event, Link, event::Kind};
use regex::Regex;

use super::store::{AnnotationError, AnnotationStore};
use unicode_normalization::UnicodeNormalization;

/// The annotation tag of both mails of a PPAP pair.
pub const TAG_PPAP: &str = "ppap";
/// Default of `window_minutes`.
pub const DEFAULT_WINDOW_MINUTES: f64 = 30.0;
/// Default of `max_body_chars`: a password notice is short, but Japanese
/// business mail carries a salutation and a signature block.
pub const DEFAULT_MAX_BODY_CHARS: usize = 1000;
/// Default `password_patterns` (regular expressions, matched without case
/// on the NFKC form of the subject and the body, so full-width `ＰＷ` and
/// half-width `ﾊﾟｽﾜｰﾄﾞ` match too).
pub const DEFAULT_PATTERNS: &[&str] = &[
    "パスワード",
    "解凍",
    "暗号化",
    "暗証番号",
    "password",
    "passwd",
    "passphrase",
    "passcode",
    r"\bpw\b",
    r"\bpwd\b",
];
/// How long an unpaired mail is remembered, by sent time.
pub const KEEP_MS: i64 = 7 * 24 * 3_600_000;

/// A `ppap` rule's settings, validated.
#[derive(Debug, Clone)]
pub struct PpapSettings {
    pub window_ms: i64,
    pub max_body_chars: usize,
    patterns: Vec<Regex>,
}

impl PpapSettings {
    /// From the rule's fields; `Err((field, message))` names what is wrong.
    pub fn new(
        window_minutes: Option<f64>,
        patterns: &[String],
        max_body_chars: Option<usize>,
    ) -> Result<PpapSettings, (&'static str, String)> {
        let minutes = window_minutes.unwrap_or(DEFAULT_WINDOW_MINUTES);
        // Fractions are allowed (0.5: 30 seconds); at most a week, as long
        // as an unpaired mail is kept (KEEP_MS).
        if !(minutes > 0.0 && minutes <= (KEEP_MS / 60_000) as f64) {
            return Err((
                "window_minutes",
                format!("{minutes} is not between 0 and 10080 minutes (a week)"),
            ));
        }
        let max_body_chars = max_body_chars.unwrap_or(DEFAULT_MAX_BODY_CHARS);
        if max_body_chars == 0 {
            return Err(("max_body_chars", "must be at least 1".to_owned()));
        }
        let sources: Vec<String> = if patterns.is_empty() {
            DEFAULT_PATTERNS.iter().map(|p| (*p).to_owned()).collect()
        } else {
            patterns.to_vec()
        };
        let mut compiled = Vec::with_capacity(sources.len());
        for p in &sources {
            let re = regex::RegexBuilder::new(&p.nfkc().collect::<String>())
                .case_insensitive(true)
                .size_limit(1 << 20)
                .build()
                .map_err(|e| {
                    (
                        "password_patterns",
                        format!("{p:?} is not a valid pattern: {e}"),
                    )
                })?;
            compiled.push(re);
        }
        Ok(PpapSettings {
            window_ms: ((minutes * 60_000.0).round() as i64).max(1),
            max_body_chars,
            patterns: compiled,
        })
    }

    /// Whether a mail without an encrypted archive reads like a password
    /// notice: short, and its subject or body matches a pattern.
    pub fn is_password_notice(&self, subject: &str, body: &str) -> bool {
        if body.trim().chars().count() > self.max_body_chars {
            return false;
        }
        let text: String = format!("{subject}\n{body}").nfkc().collect();
        self.patterns.iter().any(|p| p.is_match(&text))
    }
}

/// What PPAP needs of one mail.
#[derive(Debug, Clone, PartialEq)]
pub struct MailFacts {
    pub event_id: String,
    /// Lower-case envelope sender (header From when there is none).
    pub sender: String,
    /// Lower-case accepted recipients.
    pub recipients: BTreeSet<String>,
    /// Sent time (corrected event time), ms.
    pub at_ms: i64,
    pub role: Role,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// It carries an encrypted archive.
    Archive,
    /// It reads like a password notice.
    Notice,
}

impl Role {
    fn byte(self) -> u8 {
        match self {
            Role::Archive => b'a',
            Role::Notice => b'n',
        }
    }
}

/// The encrypted archives an event's annotations list: (name, encryption).
pub fn encrypted_archives(a: &Annotations) -> Vec<(String, String)> {
    a.attachments
        .iter()
        .filter(|x| x.encrypted)
        .map(|x| {
            let name = if x.path.is_empty() {
                x.name.clone()
            } else {
                x.path.clone()
            };
            (name, x.encryption.clone())
        })
        .collect()
}

impl MailFacts {
    /// The facts of a mail for `settings`, or None when it plays no role.
    pub fn of(e: &Event, encrypted: bool, settings: &PpapSettings) -> Option<MailFacts> {
        let Some(Kind::Email(m)) = &e.kind else {
            return None;
        };
        let role = if encrypted {
            Role::Archive
        } else if settings.is_password_notice(&m.subject, &m.body_text) {
            Role::Notice
        } else {
            return None;
        };
        let sender = sender_of(m)?;
        let recipients: BTreeSet<String> =
            accepted_recipients(m).map(|r| r.to_lowercase()).collect();
        if recipients.is_empty() {
            return None;
        }
        Some(MailFacts {
            event_id: e.event_id.clone(),
            sender,
            recipients,
            at_ms: corrected_ms(e),
            role,
        })
    }
}

fn sender_of(m: &EmailEvent) -> Option<String> {
    let s = if m.mail_from.trim().is_empty() {
        m.from.first()?.as_str()
    } else {
        m.mail_from.as_str()
    };
    let s = s.trim().trim_start_matches('<').trim_end_matches('>');
    (!s.is_empty()).then(|| s.to_lowercase())
}

/// One unpaired mail as the correlator keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct Pending {
    pub event_id: String,
    pub at_ms: i64,
    pub recipients: BTreeSet<String>,
}

/// A mail with an encrypted archive and its password notice.
#[derive(Debug, Clone, PartialEq)]
pub struct Pair {
    pub archive: Pending,
    pub notice: Pending,
}

impl Pair {
    /// Recipients both mails went to.
    pub fn common_recipients(&self) -> Vec<&str> {
        self.archive
            .recipients
            .intersection(&self.notice.recipients)
            .map(String::as_str)
            .collect()
    }
}

/// What [`Correlator::observe`] made of a mail.
#[derive(Debug, Clone, PartialEq)]
pub enum Observed {
    /// It completes a pair: fire.
    Paired(Pair),
    /// It was paired before (analysed again): its partner's event id.
    PairedBefore(String),
    /// No partner yet: remembered.
    Waiting,
}

/// The durable correlation state (a tree of the collector's meta store):
/// unpaired mails by (rule, sender, role, sent time), and the paired marks.
///
/// Keys: `p\0<rule>\0<sender>\0<role>` + sent time (8 bytes, order
/// preserving) + event id → recipients joined by `\n`;
/// `d\0<rule>\0<event id>` → the partner's event id; `f\0<rule>\0<event
/// id>`: a one-mail rule fired on it.
pub struct Correlator {
    tree: sled::Tree,
    lock: Mutex<()>,
}

fn ordered(ms: i64) -> [u8; 8] {
    ((ms as u64) ^ (1 << 63)).to_be_bytes()
}

fn from_ordered(b: &[u8]) -> Option<i64> {
    let raw: [u8; 8] = b.try_into().ok()?;
    Some((u64::from_be_bytes(raw) ^ (1 << 63)) as i64)
}

impl Correlator {
    pub fn new(tree: sled::Tree) -> Correlator {
        Correlator {
            tree,
            lock: Mutex::new(()),
        }
    }

    fn prefix(rule: &str, sender: &str, role: Role) -> Vec<u8> {
        let mut k = Vec::with_capacity(rule.len() + sender.len() + 6);
        k.extend_from_slice(b"p\0");
        k.extend_from_slice(rule.as_bytes());
        k.push(0);
        k.extend_from_slice(sender.as_bytes());
        k.push(0);
        k.push(role.byte());
        k
    }

    fn done_key(rule: &str, event_id: &str) -> Vec<u8> {
        format!("d\0{rule}\0{event_id}").into_bytes()
    }

    /// Matches `mail` with the unpaired mails of the other role under
    /// `rule`.
    pub fn observe(
        &self,
        rule: &str,
        window_ms: i64,
        mail: &MailFacts,
    ) -> Result<Observed, sled::Error> {
        let _held = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(partner) = self.tree.get(Self::done_key(rule, &mail.event_id))? {
            return Ok(Observed::PairedBefore(
                String::from_utf8_lossy(&partner).into_owned(),
            ));
        }
        let own = Self::prefix(rule, &mail.sender, mail.role);
        self.prune(&own, mail.at_ms - KEEP_MS)?;
        let (other_role, from, to) = match mail.role {
            Role::Archive => (Role::Notice, mail.at_ms, mail.at_ms + window_ms),
            Role::Notice => (Role::Archive, mail.at_ms - window_ms, mail.at_ms),
        };
        let other = Self::prefix(rule, &mail.sender, other_role);
        let mut start = other.clone();
        start.extend_from_slice(&ordered(from));
        let mut end = other.clone();
        end.extend_from_slice(&ordered(to.saturating_add(1)));
        let range = self.tree.range(start..end);
        // A notice answers the closest archive before it; an archive the
        // first notice after it.
        let candidates: Box<dyn Iterator<Item = _>> = match mail.role {
            Role::Archive => Box::new(range),
            Role::Notice => Box::new(range.rev()),
        };
        let mut found = None;
        for item in candidates {
            let (key, value) = item?;
            let Some(p) = decode_pending(&key[other.len()..], &value) else {
                continue;
            };
            if p.event_id != mail.event_id && !p.recipients.is_disjoint(&mail.recipients) {
                found = Some((key, p));
                break;
            }
        }
        let mine = Pending {
            event_id: mail.event_id.clone(),
            at_ms: mail.at_ms,
            recipients: mail.recipients.clone(),
        };
        let Some((key, partner)) = found else {
            let mut k = own;
            k.extend_from_slice(&ordered(mail.at_ms));
            k.extend_from_slice(mail.event_id.as_bytes());
            self.tree.insert(k, encode_recipients(&mail.recipients))?;
            return Ok(Observed::Waiting);
        };
        let mut batch = sled::Batch::default();
        batch.remove(key);
        batch.insert(
            Self::done_key(rule, &mail.event_id),
            partner.event_id.as_bytes(),
        );
        batch.insert(
            Self::done_key(rule, &partner.event_id),
            mail.event_id.as_bytes(),
        );
        self.tree.apply_batch(batch)?;
        Ok(Observed::Paired(match mail.role {
            Role::Archive => Pair {
                archive: mine,
                notice: partner,
            },
            Role::Notice => Pair {
                archive: partner,
                notice: mine,
            },
        }))
    }

    /// True the first time `event_id` is seen under `rule` (a rule that
    /// fires on one mail: `encrypted_attachment`), false after.
    pub fn first_time(&self, rule: &str, event_id: &str) -> Result<bool, sled::Error> {
        let key = format!("f\0{rule}\0{event_id}");
        Ok(self
            .tree
            .compare_and_swap(key.as_bytes(), None::<&[u8]>, Some(&[][..]))?
            .is_ok())
    }

    /// Drops the unpaired mails under `prefix` sent before `before`.
    fn prune(&self, prefix: &[u8], before: i64) -> Result<(), sled::Error> {
        let mut end = prefix.to_vec();
        end.extend_from_slice(&ordered(before));
        let old: Vec<sled::IVec> = self
            .tree
            .range(prefix.to_vec()..end)
            .keys()
            .collect::<Result<_, _>>()?;
        for k in old {
            self.tree.remove(k)?;
        }
        Ok(())
    }
}

fn encode_recipients(r: &BTreeSet<String>) -> Vec<u8> {
    r.iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join("\n")
        .into_bytes()
}

fn decode_pending(rest: &[u8], value: &[u8]) -> Option<Pending> {
    let at_ms = from_ordered(rest.get(..8)?)?;
    let event_id = String::from_utf8(rest.get(8..)?.to_vec()).ok()?;
    let recipients = String::from_utf8_lossy(value)
        .split('\n')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    Some(Pending {
        event_id,
        at_ms,
        recipients,
    })
}

/// What the alerts derived for a mail besides the alerts themselves: tags
/// and links to add to the annotations of this or another event.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Derived {
    /// (event id, tag).
    pub tags: Vec<(String, String)>,
    /// (event id, link to put in that event's annotations).
    pub links: Vec<(String, Link)>,
}

impl Derived {
    pub fn tag(&mut self, event_id: &str, tag: &str) {
        let t = (event_id.to_owned(), tag.to_owned());
        if !self.tags.contains(&t) {
            self.tags.push(t);
        }
    }
}

/// Adds `derived`'s tags and links to the stored annotations of the events
/// they name (this mail's, stored just before, and its partner's, stored
/// when it was analysed). Returns the ids of the events changed, to be
/// re-indexed so that `kiroku search --tag ppap` finds them.
pub fn apply(store: &AnnotationStore, derived: &Derived) -> Result<Vec<String>, AnnotationError> {
    let mut ids: Vec<&str> = derived
        .tags
        .iter()
        .map(|(id, _)| id.as_str())
        .chain(derived.links.iter().map(|(id, _)| id.as_str()))
        .collect();
    ids.sort_unstable();
    ids.dedup();
    let mut changed = Vec::new();
    for id in ids {
        let Some(mut a) = store.annotations(id)? else {
            tracing::warn!(event_id = %id, "no annotations to add PPAP links to; `kiroku-collector reanalyse` adds them");
            continue;
        };
        let before = (a.tags.len(), a.links.len());
        for (_, tag) in derived.tags.iter().filter(|(e, _)| e == id) {
            if !a.tags.contains(tag) {
                a.tags.push(tag.clone());
            }
        }
        for (_, l) in derived.links.iter().filter(|(e, _)| e == id) {
            if !a.links.contains(l) {
                a.links.push(l.clone());
            }
        }
        if (a.tags.len(), a.links.len()) != before {
            store.put_annotations(&a)?;
            changed.push(id.to_owned());
        }
    }
    Ok(changed)
}

/// Carries what the alerts added to an event's earlier annotations
/// (`alert:*` and `ppap` tags, PPAP links) over to its new annotations
/// `new`: `kiroku-collector reanalyse` runs without rules (old mail is not
/// alerted on again) and replaces the annotations whole, which erased
/// them; a new analysis version must not either.
pub fn carry_over(old: &Annotations, new: &mut Annotations) {
    for tag in &old.tags {
        if (tag.starts_with("alert:") || tag == TAG_PPAP) && !new.tags.contains(tag) {
            new.tags.push(tag.clone());
        }
    }
    for l in &old.links {
        if !new.links.contains(l) {
            new.links.push(l.clone());
        }
    }
}

/// What a rule of kind `encrypted_attachment` says of a mail, if it fires.
pub fn encrypted_attachment(
    e: &Event,
    encrypted: &[(String, String)],
    internal: &InternalDomains,
) -> Option<String> {
    let Some(Kind::Email(m)) = &e.kind else {
        return None;
    };
    if encrypted.is_empty() {
        return None;
    }
    let outside = internal.external_recipients(m);
    if outside.is_empty() {
        return None;
    }
    let archives: Vec<String> = encrypted
        .iter()
        .map(|(name, how)| format!("{name} ({how})"))
        .collect();
    Some(format!(
        "{} mailed the encrypted archive {} to {}",
        event_user(e),
        archives.join(", "),
        outside.join(", ")
    ))
}

/// The tags and link of one mail of a pair.
fn link(rule: &str, id: &str, role: Role, partner: &str, out: &mut Derived) {
    out.tag(id, TAG_PPAP);
    out.tag(id, &format!("alert:{rule}"));
    let reason = match role {
        Role::Archive => format!("ppap: password notice in {partner}"),
        Role::Notice => format!("ppap: password notice for {partner}"),
    };
    let l = (
        id.to_owned(),
        Link {
            event_id: partner.to_owned(),
            reason,
        },
    );
    if !out.links.contains(&l) {
        out.links.push(l);
    }
}

/// The tags and link of a mail paired before, analysed again.
pub fn pair_annotations(rule: &str, mail: &MailFacts, partner: &str, out: &mut Derived) {
    link(rule, &mail.event_id, mail.role, partner, out);
}

/// The alert, tags and links of a completed pair under `rule`.
pub fn pair_alert(rule: &str, e: &Event, pair: &Pair, now_ms: i64, out: &mut Derived) -> Alert {
    let a = &pair.archive.event_id;
    let n = &pair.notice.event_id;
    link(rule, a, Role::Archive, n, out);
    link(rule, n, Role::Notice, a, out);
    let minutes = (pair.notice.at_ms - pair.archive.at_ms).max(0) / 60_000;
    Alert {
        rule: rule.to_owned(),
        kind: "ppap".into(),
        event_id: e.event_id.clone(),
        fired_at_ms: now_ms,
        summary: format!(
            "{} sent an encrypted archive (event {a}) and its password {minutes} min later (event {n}) to {}",
            event_user(e),
            pair.common_recipients().join(", ")
        ),
        event: Some(e.clone()),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests;
