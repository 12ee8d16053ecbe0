//! Rendering events for people (tables, detail view) and for scripts (JSON
//! lines with the proto's field names; enums as their names, as in the
//! protobuf JSON mapping).
//!
//! Invariant: everything printed for people that came from outside (a
//! mail, a file name, an agent, a rule) passes through [`safe`] (tables:
//! every cell; the detail view: every line), so control characters and
//! bidirectional overrides reach the terminal only as visible escapes.
//! JSON is never escaped beyond JSON's own rules: it stays exact.

use comfy_table::{ContentArrangement, Table, presets::UTF8_BORDERS_ONLY};
use kiroku_common::mail::{corrected_ms, outcome_name};
use kiroku_common::quote::terminal;
use kiroku_proto::{EmailEvent, Event, FileEvent, GapEvent, HostInfo, event::Kind};

use crate::zone::{Zone, format as time};

mod incident;
mod mtalog;
// Issue 21.
mod network;
mod relay;

/// Outside text as printed for people: controls made visible.
pub fn safe(s: &str) -> String {
    terminal(s).into_owned()
}

/// A table row with every cell made [`safe`].
pub fn safe_row<const N: usize>(cells: [String; N]) -> [String; N] {
    cells.map(|c| safe(&c))
}

/// "1 file", "2 files", "0 files".
pub fn count(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn email(e: &Event) -> Option<&EmailEvent> {
    match &e.kind {
        Some(Kind::Email(m)) => Some(m),
        _ => None,
    }
}

fn file(e: &Event) -> Option<&FileEvent> {
    match &e.kind {
        Some(Kind::File(f)) => Some(f),
        _ => None,
    }
}

fn integrity(e: &Event) -> Option<&kiroku_proto::IntegrityEvent> {
    match &e.kind {
        Some(Kind::Integrity(i)) => Some(i),
        _ => None,
    }
}

fn gap(e: &Event) -> Option<&GapEvent> {
    match &e.kind {
        Some(Kind::Gap(g)) => Some(g),
        _ => None,
    }
}

/// Who did it, as far as the mechanism tells.
fn actor(f: &FileEvent) -> String {
    if f.uid < 0 && f.pid == 0 {
        return format!("unknown ({} does not tell)", f.mechanism);
    }
    let mut s = if f.process.is_empty() {
        format!("pid {}", f.pid)
    } else {
        format!("{} (pid {})", f.process, f.pid)
    };
    if f.uid >= 0 {
        s.push_str(&format!(", uid {}", f.uid));
    }
    s
}

/// The event as proto-style JSON.
pub fn json(e: &Event) -> serde_json::Value {
    let mut v = serde_json::to_value(e).unwrap_or_default();
    let Some(obj) = v.as_object_mut() else {
        return v;
    };
    let kind = obj.remove("kind");
    if let Some(mut m) = kind.as_ref().and_then(|k| k.get("Email").cloned()) {
        if let Some(o) = m.get("outcome").and_then(|o| o.as_i64()) {
            m["outcome"] = serde_json::Value::from(outcome_name(o as i32));
        }
        obj.insert("email".into(), m);
    }
    for (variant, name) in [
        ("File", "file"),
        ("HostChange", "host_change"),
        ("Gap", "gap"),
        ("Integrity", "integrity"),
        ("Incident", "incident"),
        ("Auth", "auth"),
        ("MtaLog", "mta_log"),
        ("Network", "network"),
        ("P2p", "p2p"),
    ] {
        if let Some(v) = kind.as_ref().and_then(|k| k.get(variant)) {
            obj.insert(name.into(), v.clone());
        }
    }
    v
}

/// At most `n` characters of `s` (escaped first, see [`safe`]), a cut one
/// ending in `…`.
pub fn shorten(s: &str, n: usize) -> String {
    let s = terminal(s);
    if s.chars().count() <= n {
        return s.into_owned();
    }
    let mut out: String = s.chars().take(n.saturating_sub(1)).collect();
    out.push('…');
    out
}

pub fn table(events: &[Event], zone: &Zone) -> String {
    let mut t = Table::new();
    t.load_preset(UTF8_BORDERS_ONLY)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header([
            "time",
            "event id",
            "host",
            "user",
            "from / old path",
            "to / path",
            "subject / sha256",
            "att / size",
            "outcome / op",
        ]);
    for e in events {
        let host = e
            .host
            .as_ref()
            .map(|h| h.hostname.clone())
            .unwrap_or_default();
        let row = match (email(e), file(e)) {
            (_, Some(f)) => {
                // Files use the same columns: from = old path, to = path,
                // subject = hash, att = size, outcome = operation.
                let what = if f.detail.is_empty() || !f.sha256.is_empty() {
                    shorten(&f.sha256, 16)
                } else {
                    shorten(&f.detail, 40)
                };
                [
                    time(e.observed_at_ms, zone),
                    e.event_id.clone(),
                    host,
                    e.user.clone(),
                    shorten(&f.old_path, 30),
                    shorten(&f.path, 40),
                    what,
                    f.size.to_string(),
                    if f.removable {
                        format!("{} (removable)", f.operation)
                    } else {
                        f.operation.clone()
                    },
                ]
            }
            (Some(m), None) => {
                let to: Vec<&str> = m.rcpt_to.iter().map(|r| r.address.as_str()).collect();
                [
                    time(e.observed_at_ms, zone),
                    e.event_id.clone(),
                    host,
                    e.user.clone(),
                    shorten(&m.mail_from, 30),
                    shorten(&to.join(", "), 40),
                    shorten(&m.subject, 40),
                    m.attachment_count.to_string(),
                    outcome_name(m.outcome).to_owned(),
                ]
            }
            (None, None) if gap(e).is_some() => {
                let g = gap(e).cloned().unwrap_or_default();
                // A gap: from = senders, to = recipients (or paths),
                // subject = the span, att = the count.
                let to = if g.recipients.is_empty() {
                    g.paths.join(", ")
                } else {
                    g.recipients.join(", ")
                };
                [
                    time(e.observed_at_ms, zone),
                    e.event_id.clone(),
                    host,
                    e.user.clone(),
                    shorten(&g.senders.join(", "), 30),
                    shorten(&to, 40),
                    format!("{} .. {}", time(g.first_ms, zone), time(g.last_ms, zone)),
                    g.count.to_string(),
                    format!("gap: {} unrecorded", g.source),
                ]
            }
            (None, None) if integrity(e).is_some() => {
                let i = integrity(e).cloned().unwrap_or_default();
                // A chain break: to = the stream, subject = what did not
                // match, att = how many sequence numbers it covers.
                [
                    time(e.observed_at_ms, zone),
                    e.event_id.clone(),
                    host,
                    e.user.clone(),
                    String::new(),
                    format!("stream {}", i.stream_id),
                    shorten(&i.detail, 40),
                    format!("seq {}–{}", i.first_seq, i.last_seq),
                    format!(
                        "integrity: {}{}",
                        i.what,
                        if i.tampering { "" } else { " (not tampering)" }
                    ),
                ]
            }
            (None, None) if incident::incident(e).is_some() => {
                let i = incident::incident(e).cloned().unwrap_or_default();
                let [from, to, what, n, state] = incident::row(&i);
                [
                    time(e.observed_at_ms, zone),
                    e.event_id.clone(),
                    host,
                    e.user.clone(),
                    from,
                    to,
                    what,
                    n,
                    state,
                ]
            }
            (None, None) if relay::auth(e).is_some() => {
                let a = relay::auth(e).cloned().unwrap_or_default();
                relay::auth_row(e, &a, host, zone)
            }
            (None, None) if mtalog::of(e).is_some() => {
                let m = mtalog::of(e).cloned().unwrap_or_default();
                mtalog::row(e, &m, host, zone)
            }
            // Issue 21.
            (None, None) if network::network(e).is_some() => {
                let n = network::network(e).cloned().unwrap_or_default();
                network::network_row(e, &n, host, zone)
            }
            (None, None) if network::p2p(e).is_some() => {
                let p = network::p2p(e).cloned().unwrap_or_default();
                network::p2p_row(e, &p, host, zone)
            }
            (None, None) => [
                time(e.observed_at_ms, zone),
                e.event_id.clone(),
                host,
                e.user.clone(),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
            ],
        };
        t.add_row(safe_row(row));
    }
    t.to_string()
}

/// The user of an event with where it comes from, when the record says
/// (mail: the socket owner of a local client, the SMTP login of a remote
/// one, or nobody, and why).
fn user_line(e: &Event) -> String {
    use kiroku_common::mail::user_source;
    let source = email(e).map(|m| m.user_source.as_str()).unwrap_or_default();
    match source {
        user_source::LOCAL_SOCKET => format!("{} (owner of the local client's socket)", e.user),
        user_source::SMTP_AUTH => format!("{} (SMTP AUTH login of a remote client)", e.user),
        user_source::REMOTE_UNKNOWN => {
            "(none: a client on another machine without SMTP AUTH; who used it is not known to the agent)".into()
        }
        _ => e.user.clone(),
    }
}

pub fn detail(e: &Event, zone: &Zone) -> String {
    let mut out = String::new();
    // Every line's key and value are made safe here: nothing an agent or a
    // mail sends can end a line early and forge the next one.
    let mut line = |k: &str, v: &str| {
        if !v.is_empty() {
            out.push_str(&format!("{:>16}: {}\n", terminal(k), terminal(v)));
        }
    };
    let time = |ms: i64| time(ms, zone);
    line("event id", &e.event_id);
    line("agent", &e.agent_id);
    line("observed", &time(e.observed_at_ms));
    line("received", &time(e.received_at_ms));
    if e.clock_offset_known {
        line(
            "clock offset",
            &format!(
                "{:+.3} s (agent - collector)",
                e.clock_offset_ms as f64 / 1000.0
            ),
        );
        line("corrected time", &time(corrected_ms(e)));
    }
    line("user", &user_line(e));
    if let Some(h) = &e.host {
        line("host", &format!("{} ({})", h.hostname, h.fqdn));
        line("domain", &h.domain);
        line("os", &h.os);
        let addrs: Vec<String> = h
            .interfaces
            .iter()
            .filter(|i| !i.ips.is_empty())
            .map(|i| format!("{} {} [{}]", i.name, i.mac, i.ips.join(", ")))
            .collect();
        line("interfaces", &addrs.join("; "));
        line("time zone", &h.time_zone);
    }
    for (k, v) in &e.custom {
        line(&format!("custom.{k}"), v);
    }
    line("tags", &e.tags.join(", "));
    if let Some(f) = file(e) {
        line("operation", &f.operation);
        line("path", &f.path);
        line("old path", &f.old_path);
        if f.size > 0 || !f.sha256.is_empty() {
            line("size", &count(f.size, "byte", "bytes"));
        }
        if f.mtime_ms != 0 {
            line("modified", &time(f.mtime_ms));
        }
        line("sha256", &f.sha256);
        line("not hashed", &f.hash_skipped);
        line("source", &f.source_path);
        let mut volume = f.volume.clone();
        if f.removable {
            volume.push_str(" (removable)");
        }
        line("volume", &volume);
        line("device", &f.device);
        line("label", &f.volume_label);
        line("process", &actor(f));
        line("exe", &f.exe);
        line("mechanism", &f.mechanism);
        if f.coalesced > 1 {
            line(
                "coalesced",
                &count(u64::from(f.coalesced), "kernel event", "kernel events"),
            );
        }
        line("detail", &f.detail);
    }
    if let Some(i) = integrity(e) {
        line("integrity", &i.what);
        line("stream", &i.stream_id);
        line("sequence", &format!("{}–{}", i.first_seq, i.last_seq));
        line("expected sha256", &i.expected_sha256);
        line("got sha256", &i.got_sha256);
        line(
            "tampering",
            if i.tampering {
                "yes"
            } else {
                "no (reported by the agent)"
            },
        );
        line("detail", &i.detail);
    }
    if let Some(i) = incident::incident(e) {
        for (k, v) in incident::lines(i, zone) {
            line(k, &v);
        }
    }
    if let Some(g) = gap(e) {
        line("gap", &format!("{} ({})", g.source, g.reason));
        line("not recorded", &g.count.to_string());
        line("first", &time(g.first_ms));
        line("last", &time(g.last_ms));
        if g.source == "smtp" {
            line("delivered", &g.delivered.to_string());
            line("rejected", &g.rejected.to_string());
        }
        line("senders", &g.senders.join(", "));
        line("recipients", &g.recipients.join(", "));
        line("paths", &g.paths.join(", "));
        if g.truncated {
            line("lists", "truncated (more distinct values than listed)");
        }
        line("detail", &g.detail);
    }
    if let Some(a) = relay::auth(e) {
        for (k, v) in relay::auth_lines(a) {
            line(k, &v);
        }
    }
    if let Some(m) = mtalog::of(e) {
        for (k, v) in mtalog::lines(m, zone) {
            line(k, &v);
        }
    }
    // Issue 21.
    if let Some(n) = network::network(e) {
        for (k, v) in network::network_lines(n, zone) {
            line(k, &v);
        }
    }
    if let Some(p) = network::p2p(e) {
        for (k, v) in network::p2p_lines(e, p, zone) {
            line(k, &v);
        }
    }
    if let Some(m) = email(e) {
        line("protocol", &m.protocol);
        line("client", &format!("{}:{}", m.client_ip, m.client_port));
        line("client name", &m.client_host);
        line("client tls", &m.client_tls);
        line("application", &m.application);
        if !m.auth_user.is_empty() {
            line(
                "authenticated",
                &format!("{} ({})", m.auth_user, m.auth_mechanism),
            );
        }
        line("helo", &m.helo);
        line("mail from", &m.mail_from);
        for r in &m.rcpt_to {
            line(
                "rcpt to",
                &format!("{}  → {}", r.address, r.reply.replace('\n', " | ")),
            );
        }
        line("From", &m.from.join(", "));
        line("To", &m.to.join(", "));
        line("Cc", &m.cc.join(", "));
        line("Bcc", &m.bcc.join(", "));
        line("Subject", &m.subject);
        line("Date", &m.date);
        line("Message-ID", &m.message_id);
        line("size", &count(m.message_size, "byte", "bytes"));
        line("raw sha256", &m.raw_sha256);
        // `line` skips empty values: shown only for a raw message not kept.
        line("raw not kept", &m.raw_not_kept);
        if !m.line_endings_normalised.is_empty() {
            line(
                "normalised",
                &format!(
                    "{} converted to CRLF (raw message is not the client's bytes)",
                    m.line_endings_normalised
                ),
            );
        }
        for a in &m.attachments {
            line(
                "attachment",
                &format!(
                    "{} ({}, {}) sha256 {}",
                    a.filename,
                    a.content_type,
                    count(a.size, "byte", "bytes"),
                    a.sha256
                ),
            );
            // The other names the part was given (decoys, or the real
            // name behind a decoy); the display name is listed above.
            let others: Vec<&str> = a
                .name_candidates
                .iter()
                .map(String::as_str)
                .filter(|n| *n != a.filename)
                .collect();
            if !others.is_empty() {
                line("  also named", &others.join(", "));
            }
        }
        for w in &m.decode_warnings {
            line("repaired", w);
        }
        line("outcome", outcome_name(m.outcome));
        line("ended at", &m.ended_at);
        line("upstream", &m.upstream);
        line("upstream tls", &m.upstream_tls);
        line("queue id", &m.upstream_queue_id);
        line("reply", &m.upstream_reply.replace('\n', " | "));
        line("upstream name", &m.upstream_name);
        line("timings", &relay::timings_line(m));
        for w in &m.parse_warnings {
            line("parse warning", w);
        }
        if !m.body_text.is_empty() {
            out.push('\n');
            out.push_str(&body(&m.body_text, 4000));
        }
    }
    out
}

/// The first `max` characters of a mail body, one line per line, each
/// marked `  │ ` so no line of a body can pass for a field of the detail
/// view, and made [`safe`] (a CR, an escape sequence, a bidi override
/// inside a line is shown, not obeyed).
fn body(text: &str, max: usize) -> String {
    let cut: String = text.chars().take(max).collect();
    let mut out = String::new();
    for l in cut.lines() {
        out.push_str("  │ ");
        out.push_str(&terminal(l));
        out.push('\n');
    }
    if text.chars().nth(max).is_some() {
        out.push_str("  │ …\n");
    }
    out
}

/// "+1.250 s", "-120.000 s !" (beyond the collector's threshold), "-".
fn clock_offset(h: &HostInfo) -> String {
    if !h.clock_offset_known {
        return "-".into();
    }
    let flag = if h.clock_flagged { " !" } else { "" };
    format!("{:+.3} s{flag}", h.clock_offset_ms as f64 / 1000.0)
}

fn bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 30 => format!("{:.1} GiB", n as f64 / f64::from(1u32 << 30)),
        n if n >= 1 << 20 => format!("{:.1} MiB", n as f64 / f64::from(1u32 << 20)),
        n if n >= 1 << 10 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{n} B"),
    }
}

pub fn hosts(hosts: &[HostInfo], zone: &Zone) -> String {
    let mut t = Table::new();
    t.load_preset(UTF8_BORDERS_ONLY)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header([
            "agent",
            "group",
            "hostname",
            "domain",
            "addresses",
            "agent version",
            "time zone",
            "last seen",
            "clock offset",
            "backlog",
            "events",
        ]);
    for h in hosts {
        let id = h.host.clone().unwrap_or_default();
        let ips: Vec<String> = id
            .interfaces
            .iter()
            .flat_map(|i| i.ips.iter().cloned())
            .filter(|ip| ip != "127.0.0.1" && ip != "::1")
            .collect();
        t.add_row(safe_row([
            h.agent_id.clone(),
            h.agent_group.clone(),
            id.hostname,
            id.domain,
            shorten(&ips.join(", "), 40),
            id.agent_version,
            id.time_zone,
            format!(
                "{}{}{}",
                time(h.last_seen_ms, zone),
                if h.connected { " (connected)" } else { "" },
                if h.retired_at_ms > 0 {
                    format!(
                        "; retired {}: {}",
                        time(h.retired_at_ms, zone),
                        shorten(&h.retired_reason, 60)
                    )
                } else {
                    String::new()
                }
            ),
            clock_offset(h),
            match (h.backlog_events, h.backlog_bytes, h.buffer_problem.as_str()) {
                (0, 0, "") => "0".into(),
                (n, b, "") => format!("{n} ({})", bytes(b)),
                // What keeps the agent from recording (its disk is full).
                (n, b, problem) => format!("{n} ({}); {}", bytes(b), shorten(problem, 80)),
            },
            h.events_stored.to_string(),
        ]));
    }
    t.to_string()
}

pub fn audit(entries: &[kiroku_proto::AuditEntry], zone: &Zone) -> String {
    let mut t = Table::new();
    t.load_preset(UTF8_BORDERS_ONLY)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header([
            "seq",
            "time",
            "kind",
            "identity",
            "call",
            "results",
            "filter / detail",
        ]);
    for e in entries {
        // Admin entries say what changed in `detail` and count nothing;
        // entries from before kinds existed are queries.
        let admin = e.kind == "admin";
        t.add_row(safe_row([
            e.seq.to_string(),
            time(e.at_ms, zone),
            if admin { "admin" } else { "query" }.to_owned(),
            e.identity.clone(),
            e.call.clone(),
            if admin {
                String::new()
            } else {
                e.results.to_string()
            },
            shorten(if admin { &e.detail } else { &e.filter }, 80),
        ]));
    }
    t.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiroku_proto::{Attachment, HostIdentity};

    /// What a hostile mail and agent could send: escape sequences, BEL,
    /// CR/LF that would start a forged line, bidi overrides.
    const EVIL: &str =
        "Hi\u{1b}[2J\u{1b}[H\u{7}\r\n         outcome: rejected\u{202e}fdp.exe\u{2066}";

    fn evil_event() -> Event {
        Event {
            event_id: "pc/s/1".into(),
            user: EVIL.into(),
            observed_at_ms: 1_796_429_582_123,
            host: Some(HostIdentity {
                hostname: EVIL.into(),
                time_zone: EVIL.into(),
                ..Default::default()
            }),
            tags: vec![EVIL.into()],
            custom: [(EVIL.to_string(), EVIL.to_string())].into(),
            kind: Some(Kind::Email(EmailEvent {
                subject: EVIL.into(),
                mail_from: EVIL.into(),
                body_text: format!("line one\r\n{EVIL}\n"),
                attachments: vec![Attachment {
                    filename: EVIL.into(),
                    ..Default::default()
                }],
                upstream_reply: EVIL.into(),
                outcome: kiroku_proto::Outcome::Delivered as i32,
                ..Default::default()
            })),
            ..Default::default()
        }
    }

    fn assert_inert(out: &str) {
        for c in out.chars() {
            assert!(
                c == '\n'
                    || !(c.is_control()
                        || ('\u{202a}'..='\u{202e}').contains(&c)
                        || ('\u{2066}'..='\u{2069}').contains(&c)),
                "{c:?} in {out}"
            );
        }
    }

    #[test]
    fn outside_text_cannot_drive_the_terminal_or_forge_a_line() {
        let zone = crate::zone::zone(Some("Asia/Tokyo"), None).expect("zone");
        let e = evil_event();
        let d = detail(&e, &zone);
        assert_inert(&d);
        // Only the real outcome starts a line.
        let outcomes: Vec<&str> = d
            .lines()
            .filter(|l| l.trim_start().starts_with("outcome:"))
            .collect();
        assert_eq!(outcomes, ["         outcome: delivered"], "{d}");
        assert!(d.contains("Hi\\u{1b}[2J"), "{d}");
        assert!(
            d.contains("observed: 2026-12-05 09:13:02.123 +09:00"),
            "{d}"
        );
        assert!(d.contains("  │ line one\n"), "{d}");
        let t = table(&[e], &zone);
        assert_inert(&t);
        assert!(t.contains("\\u{202e}"), "{t}");
        let h = hosts(
            &[HostInfo {
                agent_id: EVIL.into(),
                host: evil_event().host,
                buffer_problem: EVIL.into(),
                ..Default::default()
            }],
            &zone,
        );
        assert_inert(&h);
        // JSON keeps the exact text.
        assert_eq!(json(&evil_event())["email"]["subject"], EVIL);
    }

    #[test]
    fn counts_agree_with_their_number() {
        for (n, want) in [(0, "0 files"), (1, "1 file"), (2, "2 files")] {
            assert_eq!(count(n, "file", "files"), want);
        }
        assert_eq!(count(1, "entry", "entries"), "1 entry");
    }
}
