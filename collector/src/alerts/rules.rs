//! The alert rules file: its format, loading with errors that name the
//! file, the line, the rule and the field, and the pure matching helpers
//! the engine uses. `packaging/alert-rules.example.toml` is a filled-in
//! copy; every field is documented on [`RuleDef`].

use std::path::{Path, PathBuf};

use globset::{Glob, GlobSet, GlobSetBuilder};
use kiroku_common::mail::InternalDomains;
use kiroku_proto::{Event, event::Kind};
use serde::Deserialize;

use super::params::{self, Params};
use crate::analysis::ppap::PpapSettings;

/// What a rule looks for (the `kind` key of a `[[rule]]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleKind {
    /// A mail with at least one attachment to a recipient whose domain is
    /// not in `internal_domains`.
    ExternalAttachment,
    /// An attachment, raw message or file whose SHA-256 is in `sha256`.
    SensitiveHash,
    /// Content first seen in a file under one of `paths` (globs), then the
    /// same content anywhere else: another path, a mail, removable media.
    SensitiveDir,
    /// A file copied onto removable media.
    RemovableCopy,
    /// More than `max_per_hour` mails to external recipients by one user
    /// within any hour (sliding window); fires once per crossing.
    MailRate,
    /// A mail carrying an encrypted archive (ZipCrypto or AES ZIP, 7z) to
    /// a recipient outside `internal_domains`. Evaluated once the
    /// collector has opened the attachments (analysis/ppap.rs).
    EncryptedAttachment,
    /// A mail with an encrypted archive, then a short password notice
    /// (`password_patterns`) from the same sender to an overlapping set of
    /// recipients within `window_minutes`: fires once per pair, in either
    /// order of arrival (analysis/ppap.rs).
    Ppap,
    /// A break in a chain of custody the collector found on ingest (an
    /// `integrity` record: events removed, altered or sent twice with
    /// different content on an agent, or a loss the agent reported).
    Integrity,
    // Issue 20 (settings in params.rs, evaluation in records.rs,
    // windows.rs and health.rs).
    /// More than `max` failed AUTH attempts through a relay in `window`
    /// per client IP or per claimed user (`per`); fires once per crossing.
    AuthFailures,
    /// A relay incident (of `kinds`, default any) lasting more than
    /// `minutes`: from its still_open/closed record, or the periodic check
    /// while it is open. Once per incident.
    IncidentOpen,
    /// More than `max` deferred or bounced deliveries to one recipient
    /// domain in `window` (default 1h), from the MTA's log.
    DeliveryFailures,
    /// A delivery (MTA log, status sent) that took more than `max_delay`.
    DeliveryDelay,
    /// An agent with no stream and no status for `minutes` (periodic).
    /// Once per silence.
    AgentSilent,
    /// An agent's measured clock offset beyond `max_offset` either way.
    /// Once per crossing per agent.
    ClockSkew,
    /// The collector's disk reserve paused ingest (periodic). Once per
    /// pause.
    IngestPaused,
    /// Anything the capture could not record: a gap record, a file
    /// overflow or watch_lost, an integrity record.
    CaptureGap,
    /// A mail sent outside `schedule` in `time_zone`.
    OffHours,
    /// Any mail with an attachment (no internal domains needed).
    AnyAttachment,
    /// One of `keywords` in a mail's subject or body, matched as a search
    /// matches it.
    Keyword,
    /// Issue 21: a process found doing P2P file sharing (a `p2p` episode
    /// record from the agent), with one of `reasons` (default any). Once
    /// per episode, also across collector restarts (p2p.rs).
    P2p,
}

impl RuleKind {
    /// An issue-20 kind (evaluated by records.rs or health.rs).
    pub fn is_new(self) -> bool {
        use RuleKind::*;
        matches!(
            self,
            AuthFailures
                | IncidentOpen
                | DeliveryFailures
                | DeliveryDelay
                | AgentSilent
                | ClockSkew
                | IngestPaused
                | CaptureGap
                | OffHours
                | AnyAttachment
                | Keyword
        )
    }

    pub fn name(self) -> &'static str {
        match self {
            RuleKind::ExternalAttachment => "external_attachment",
            RuleKind::SensitiveHash => "sensitive_hash",
            RuleKind::SensitiveDir => "sensitive_dir",
            RuleKind::RemovableCopy => "removable_copy",
            RuleKind::MailRate => "mail_rate",
            RuleKind::EncryptedAttachment => "encrypted_attachment",
            RuleKind::Ppap => "ppap",
            RuleKind::Integrity => "integrity",
            RuleKind::AuthFailures => "auth_failures",
            RuleKind::IncidentOpen => "incident_open",
            RuleKind::DeliveryFailures => "delivery_failures",
            RuleKind::DeliveryDelay => "delivery_delay",
            RuleKind::AgentSilent => "agent_silent",
            RuleKind::ClockSkew => "clock_skew",
            RuleKind::IngestPaused => "ingest_paused",
            RuleKind::CaptureGap => "capture_gap",
            RuleKind::OffHours => "off_hours",
            RuleKind::AnyAttachment => "any_attachment",
            RuleKind::Keyword => "keyword",
            RuleKind::P2p => "p2p",
        }
    }
}

/// The file: `[[rule]]` tables.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesFile {
    #[serde(default)]
    rule: Vec<toml::Spanned<RuleDef>>,
}

/// One `[[rule]]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleDef {
    /// Unique name; events it matches get the tag `alert:<name>`.
    /// Letters, digits, `-`, `_`, `.`.
    pub name: String,
    /// One of external_attachment, sensitive_hash, sensitive_dir,
    /// removable_copy, mail_rate, encrypted_attachment, ppap, integrity,
    /// and (issue 20) auth_failures, incident_open, delivery_failures,
    /// delivery_delay, agent_silent, clock_skew, ingest_paused,
    /// capture_gap, off_hours, any_attachment, keyword, and (issue 21)
    /// p2p.
    pub kind: RuleKind,
    /// external_attachment, mail_rate, encrypted_attachment: the
    /// organisation's own mail domains;
    /// subdomains are included. A recipient in any other domain is external.
    /// Default: the collector's `internal_domains`; a list here overrides it
    /// for this rule.
    #[serde(default)]
    pub internal_domains: Vec<String>,
    /// sensitive_hash: lower-case hex SHA-256 values.
    #[serde(default)]
    pub sha256: Vec<String>,
    /// sensitive_dir: globs of sensitive files, e.g. "/srv/hr/**". A
    /// Windows pattern (`C:\Share\HR\**`, drive letter or `\\server`)
    /// matches Windows paths as Windows compares them: `\` and `/` alike,
    /// case ignored ([`path_key`]).
    #[serde(default)]
    pub paths: Vec<String>,
    /// mail_rate: the most external mails per user per hour that are fine.
    #[serde(default)]
    pub max_per_hour: Option<u32>,
    /// ppap: how long after the archive mail its password notice may be
    /// sent, minutes (default 30; fractions allowed, at most a week).
    #[serde(default)]
    pub window_minutes: Option<f64>,
    /// ppap: regular expressions of a password notice, matched without
    /// case on the NFKC form of subject and body (default: パスワード, 解凍,
    /// 暗号化, 暗証番号, password, passwd, passphrase, passcode, pw, pwd).
    #[serde(default)]
    pub password_patterns: Vec<String>,
    /// ppap: a longer body is not a password notice (default 1000
    /// characters).
    #[serde(default)]
    pub max_body_chars: Option<usize>,
    /// Set to false to keep a rule in the file without it firing.
    #[serde(default = "yes")]
    pub enabled: bool,
    // Issue 20, every kind (validated in params.rs):
    /// "info", "warning" (default) or "critical".
    #[serde(default)]
    pub severity: Option<String>,
    /// Which notifiers get this rule's alerts: any of "webhook", "mail",
    /// "stream" (the Alerts rpc, `kiroku alerts`). Default: all configured.
    #[serde(default)]
    pub route: Option<Vec<String>>,
    // Issue 20, the new kinds' settings:
    /// auth_failures: "client_ip" or "user".
    #[serde(default)]
    pub per: Option<String>,
    /// auth_failures, delivery_failures: the most that are fine in the
    /// window.
    #[serde(default)]
    pub max: Option<u32>,
    /// auth_failures (default "10m"), delivery_failures (default "1h").
    #[serde(default)]
    pub window: Option<String>,
    /// incident_open: incident kinds (default: all).
    #[serde(default)]
    pub kinds: Vec<String>,
    /// incident_open, agent_silent: how long, minutes (fractions allowed).
    #[serde(default)]
    pub minutes: Option<f64>,
    /// delivery_delay: e.g. "30m".
    #[serde(default)]
    pub max_delay: Option<String>,
    /// clock_skew: e.g. "2s".
    #[serde(default)]
    pub max_offset: Option<String>,
    /// off_hours: working hours, e.g. ["Mon-Fri 08:00-19:00"].
    #[serde(default)]
    pub schedule: Vec<String>,
    /// off_hours: an IANA zone, e.g. "Asia/Tokyo".
    #[serde(default)]
    pub time_zone: Option<String>,
    /// keyword: words matched in subject and body.
    #[serde(default)]
    pub keywords: Vec<String>,
    // Issue 21:
    /// p2p: only episodes with one of these reasons (known_client,
    /// many_peers, dht, utp, tracker_announce, bt_handshake); default any.
    #[serde(default)]
    pub reasons: Vec<String>,
}

fn yes() -> bool {
    true
}

/// A validated rule.
#[derive(Debug)]
pub struct Rule {
    pub name: String,
    pub kind: RuleKind,
    /// The rule's own `internal_domains`, else the collector's.
    pub internal_domains: InternalDomains,
    pub sha256: std::collections::HashSet<String>,
    pub paths: GlobSet,
    pub max_per_hour: u32,
    /// ppap: the validated window and patterns.
    pub ppap: Option<PpapSettings>,
    /// Severity, route and the issue-20 kinds' settings.
    pub params: Params,
    /// Where the rule starts in its file (for errors found later).
    pub line: usize,
}

/// The rules in force.
#[derive(Debug, Default)]
pub struct RuleSet {
    pub rules: Vec<Rule>,
    /// Where they came from (for messages).
    pub source: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    #[error("cannot read alert rules file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid alert rules file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error(
        "invalid alert rules file {path}, line {line}, rule {rule:?}, field `{field}`: {message}"
    )]
    Field {
        path: PathBuf,
        line: usize,
        rule: String,
        field: &'static str,
        message: String,
    },
}

impl RuleSet {
    pub fn load(path: &Path, default_internal: &InternalDomains) -> Result<RuleSet, RulesError> {
        let text = std::fs::read_to_string(path).map_err(|source| RulesError::Read {
            path: path.to_owned(),
            source,
        })?;
        RuleSet::parse(path, &text, default_internal)
    }

    /// Parses and validates the text of a rules file named `path`.
    pub fn parse(
        path: &Path,
        text: &str,
        default_internal: &InternalDomains,
    ) -> Result<RuleSet, RulesError> {
        let file: RulesFile = toml::from_str(text).map_err(|e| RulesError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        let mut rules: Vec<Rule> = Vec::new();
        for spanned in file.rule {
            let line = text[..spanned.span().start.min(text.len())].lines().count() + 1;
            let def = spanned.into_inner();
            let bad = |field: &'static str, message: String| RulesError::Field {
                path: path.to_owned(),
                line,
                rule: def.name.clone(),
                field,
                message,
            };
            if def.name.is_empty()
                || !def
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            {
                return Err(bad(
                    "name",
                    "use 1 or more letters, digits, '-', '_' or '.'".into(),
                ));
            }
            if rules.iter().any(|r| r.name == def.name) {
                return Err(bad("name", "another rule already has this name".into()));
            }
            let needs = |field: &'static str, given: bool, kinds: &[RuleKind]| match (
                given,
                kinds.contains(&def.kind),
            ) {
                (false, true) => Err(bad(field, format!("required for kind {}", def.kind.name()))),
                (true, false) => Err(bad(
                    field,
                    format!("not used by kind {}: remove it", def.kind.name()),
                )),
                _ => Ok(()),
            };
            // A rule's own list overrides the collector's `internal_domains`;
            // a rule that compares with internal domains needs one of them.
            let mail_kinds = [
                RuleKind::ExternalAttachment,
                RuleKind::MailRate,
                RuleKind::EncryptedAttachment,
            ];
            if default_internal.is_empty() || !def.internal_domains.is_empty() {
                needs(
                    "internal_domains",
                    !def.internal_domains.is_empty(),
                    &mail_kinds,
                )
                .map_err(|e| match e {
                    RulesError::Field { message, .. } if message.starts_with("required") => bad(
                        "internal_domains",
                        format!("{message} (or set internal_domains in the collector's config)"),
                    ),
                    e => e,
                })?;
            }
            needs("sha256", !def.sha256.is_empty(), &[RuleKind::SensitiveHash])?;
            needs("paths", !def.paths.is_empty(), &[RuleKind::SensitiveDir])?;
            needs(
                "max_per_hour",
                def.max_per_hour.is_some(),
                &[RuleKind::MailRate],
            )?;
            let mut sha256 = std::collections::HashSet::new();
            for s in &def.sha256 {
                let s = s.trim().to_lowercase();
                if !kiroku_common::is_sha256_hex(&s) {
                    return Err(bad(
                        "sha256",
                        format!("{s:?} is not a SHA-256 (64 hex digits)"),
                    ));
                }
                sha256.insert(s);
            }
            let mut globs = GlobSetBuilder::new();
            for p in &def.paths {
                let g = Glob::new(&path_key(p))
                    .map_err(|e| bad("paths", format!("{p:?} is not a valid glob: {e}")))?;
                globs.add(g);
            }
            let paths = globs
                .build()
                .map_err(|e| bad("paths", format!("cannot build the globs: {e}")))?;
            let internal_domains = if !def.internal_domains.is_empty() {
                InternalDomains::new(&def.internal_domains)
                    .map_err(|m| bad("internal_domains", m))?
            } else if mail_kinds.contains(&def.kind) {
                default_internal.clone()
            } else {
                InternalDomains::default()
            };
            // The ppap settings are optional, and refused on other kinds.
            for (field, given) in [
                ("window_minutes", def.window_minutes.is_some()),
                ("password_patterns", !def.password_patterns.is_empty()),
                ("max_body_chars", def.max_body_chars.is_some()),
            ] {
                if given && def.kind != RuleKind::Ppap {
                    return Err(bad(
                        field,
                        format!("not used by kind {}: remove it", def.kind.name()),
                    ));
                }
            }
            let ppap = if def.kind == RuleKind::Ppap {
                Some(
                    PpapSettings::new(
                        def.window_minutes,
                        &def.password_patterns,
                        def.max_body_chars,
                    )
                    .map_err(|(field, message)| bad(field, message))?,
                )
            } else {
                None
            };
            if def.max_per_hour == Some(0) {
                return Err(bad("max_per_hour", "must be at least 1".into()));
            }
            let params = params::params(&def).map_err(|(field, message)| bad(field, message))?;
            if !def.enabled {
                continue;
            }
            rules.push(Rule {
                name: def.name,
                kind: def.kind,
                internal_domains,
                sha256,
                paths,
                max_per_hour: def.max_per_hour.unwrap_or(0),
                ppap,
                params,
                line,
            });
        }
        Ok(RuleSet {
            rules,
            source: Some(path.to_owned()),
        })
    }
}

impl RuleSet {
    /// Refuses a rule whose `route` names only notifiers that are not
    /// configured (`configured`: "webhook", "mail"; "stream" always is):
    /// its alerts would reach nobody.
    pub fn check_routes(&self, configured: &[&str]) -> Result<(), RulesError> {
        for r in &self.rules {
            let route = &r.params.route;
            if route.is_empty()
                || route
                    .iter()
                    .any(|n| n == "stream" || configured.contains(&n.as_str()))
            {
                continue;
            }
            return Err(RulesError::Field {
                path: self.source.clone().unwrap_or_default(),
                line: r.line,
                rule: r.name.clone(),
                field: "route",
                message: format!(
                    "{} not configured in the collector's [alerts] section: configure it, or route to another notifier",
                    route.join(", ")
                ),
            });
        }
        Ok(())
    }
}

/// Every content hash an event carries: attachments, the raw message, a
/// file's content.
pub fn hashes(e: &Event) -> Vec<&str> {
    let mut out: Vec<&str> = match &e.kind {
        Some(Kind::Email(m)) => m
            .attachments
            .iter()
            .map(|a| a.sha256.as_str())
            .chain(std::iter::once(m.raw_sha256.as_str()))
            .collect(),
        Some(Kind::File(f)) => vec![f.sha256.as_str()],
        _ => Vec::new(),
    };
    out.retain(|h| !h.is_empty());
    out.dedup();
    out
}

/// How a path or a `paths` glob is compared: a Windows path (a drive
/// letter, or a UNC `\\server\share`) with `/` for every `\` and in
/// lower case, so `C:\Users\*\HR\**` matches `c:/users/a/hr/x` and
/// `C:\USERS\A\HR\X` alike (Windows names are case-insensitive and
/// agents record them as the system spells them); any other path as it
/// is (Unix paths are case-sensitive, and `\` in a glob is an escape).
pub fn path_key(p: &str) -> std::borrow::Cow<'_, str> {
    let b = p.as_bytes();
    let drive = b.len() >= 3
        && b[0].is_ascii_alphabetic()
        && b[1] == b':'
        && (b[2] == b'\\' || b[2] == b'/');
    if drive || p.starts_with("\\\\") {
        std::borrow::Cow::Owned(p.replace('\\', "/").to_lowercase())
    } else {
        std::borrow::Cow::Borrowed(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_paths_match_as_windows_compares_them() {
        let mut b = GlobSetBuilder::new();
        for p in ["C:\\Users\\*\\HR\\**", "\\\\fs01\\Legal\\**", "/srv/HR/**"] {
            b.add(Glob::new(&path_key(p)).expect("glob"));
        }
        let set = b.build().expect("globs");
        // (path as recorded, matches)
        let cases = [
            ("C:\\Users\\alice\\HR\\pay.xlsx", true),
            ("c:\\users\\ALICE\\hr\\Pay.xlsx", true),
            ("C:/Users/alice/HR/pay.xlsx", true),
            ("D:\\Users\\alice\\HR\\pay.xlsx", false),
            ("C:\\Users\\alice\\HRX\\pay.xlsx", false),
            ("\\\\FS01\\legal\\nda.pdf", true),
            ("/srv/HR/pay.xlsx", true),
            ("/srv/hr/pay.xlsx", false),
        ];
        for (p, want) in cases {
            assert_eq!(set.is_match(path_key(p).as_ref()), want, "{p}");
        }
    }

    #[test]
    fn example_rules_file_loads() {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/alert-rules.example.toml");
        let set = RuleSet::load(&path, &InternalDomains::default())
            .expect("packaging/alert-rules.example.toml loads");
        let kinds: Vec<RuleKind> = set.rules.iter().map(|r| r.kind).collect();
        for k in [
            RuleKind::ExternalAttachment,
            RuleKind::SensitiveHash,
            RuleKind::SensitiveDir,
            RuleKind::RemovableCopy,
            RuleKind::MailRate,
            RuleKind::EncryptedAttachment,
            RuleKind::Ppap,
            RuleKind::Integrity,
            RuleKind::AuthFailures,
            RuleKind::IncidentOpen,
            RuleKind::DeliveryFailures,
            RuleKind::DeliveryDelay,
            RuleKind::AgentSilent,
            RuleKind::ClockSkew,
            RuleKind::IngestPaused,
            RuleKind::CaptureGap,
            RuleKind::OffHours,
            RuleKind::AnyAttachment,
            RuleKind::Keyword,
            RuleKind::P2p,
        ] {
            assert!(kinds.contains(&k), "the example shows {}", k.name());
        }
    }

    #[test]
    fn bad_rules_name_file_line_rule_and_field() {
        let cases: &[(&str, &str)] = &[
            (
                "[[rule]]\nname = \"a\"\nkind = \"sensitive_hash\"\nsha256 = [\"xyz\"]\n",
                "line 1, rule \"a\", field `sha256`",
            ),
            (
                "[[rule]]\nname = \"ok\"\nkind = \"removable_copy\"\n\n[[rule]]\nname = \"b\"\nkind = \"mail_rate\"\ninternal_domains = [\"x.com\"]\n",
                "line 5, rule \"b\", field `max_per_hour`",
            ),
            (
                "[[rule]]\nname = \"c\"\nkind = \"sensitive_dir\"\npaths = [\"/a/[\"]\n",
                "field `paths`",
            ),
            (
                "[[rule]]\nname = \"d\"\nkind = \"removable_copy\"\nsha256 = [\"ab\"]\n",
                "field `sha256`: not used by kind removable_copy",
            ),
            ("[[rule]]\nname = \"e\"\nkind = \"nonsense\"\n", "line 3"),
            (
                "[[rule]]\nname = \"f\"\nkind = \"removable_copy\"\ncolour = 1\n",
                "colour",
            ),
            (
                "[[rule]]\nname = \"g\"\nkind = \"removable_copy\"\n[[rule]]\nname = \"g\"\nkind = \"removable_copy\"\n",
                "already has this name",
            ),
        ];
        for (text, want) in cases {
            let err = RuleSet::parse(
                Path::new("/etc/kiroku/rules.toml"),
                text,
                &InternalDomains::default(),
            )
            .expect_err(text)
            .to_string();
            assert!(err.contains("/etc/kiroku/rules.toml"), "{err}");
            assert!(err.contains(want), "{text:?}: {err}");
        }
    }

    #[test]
    fn a_rule_defaults_to_the_collectors_internal_domains() {
        let path = Path::new("rules.toml");
        let text = "[[rule]]\nname = \"ext\"\nkind = \"external_attachment\"\n\n[[rule]]\nname = \"own\"\nkind = \"mail_rate\"\nmax_per_hour = 5\ninternal_domains = [\"own.example\"]\n\n[[rule]]\nname = \"usb\"\nkind = \"removable_copy\"\n";
        let err = RuleSet::parse(path, text, &InternalDomains::default())
            .expect_err("no internal domains anywhere")
            .to_string();
        assert!(
            err.contains("rule \"ext\"") && err.contains("collector's config"),
            "{err}"
        );
        let collector = InternalDomains::new(&["corp.example"]).expect("domains");
        let set = RuleSet::parse(path, text, &collector).expect("rules");
        let domains: Vec<&[String]> = set
            .rules
            .iter()
            .map(|r| r.internal_domains.domains())
            .collect();
        assert_eq!(
            domains,
            [
                &["corp.example".to_owned()][..],
                &["own.example".to_owned()],
                &[]
            ],
            "the collector's list, the rule's own override, none for a file rule"
        );
    }
}
