//! Exim 4.9x mainlog lines into [`MtaLogEvent`] fields. A pure function,
//! table-tested below.
//!
//! The default `log_selector` is understood: `<=` arrivals (`H=` with the
//! HELO name and `[ip]`, `U=`, `P=`, `S=`, `id=`, `A=`, `X=`, `R=` of a
//! bounce), deliveries `=>`, `->` (another address of the same delivery),
//! `*>` (suppressed), `>>` (cutthrough) with `R=`, `T=`, `H=`, `X=`, `C=`;
//! `**` failures (status "bounced", or "expired" for `retry timeout
//! exceeded`), `==` deferrals, `Completed` (action "removed"),
//! `rejected RCPT|MAIL|after DATA|...` (also `temporarily rejected`),
//! `X authenticator failed for ... (set_id=U)` and the daemon's own lines
//! (action "other"). Also understood from `log_selector` additions:
//! `+subject` (`T=`, kept in `status_text` of the arrival), `+queue_time`
//! (`QT=`, the delay), `+deliver_time` (`DT=`, the delay when no `QT=`),
//! `+pid` (`[1234]` after the time), `+millisec`, `log_timezone = true`,
//! `+incoming_port`/`+outgoing_port` (`[ip]:port`), `+received_recipients`
//! (`for a b`), `+smtp_connection` (`SMTP connection from ...`: actions
//! "connect" and "disconnect"), `+tls_peerdn` (`DN=`); other additions
//! leave their fields unread but the line still parsed.

use kiroku_proto::MtaLogEvent;

use super::header::{Clock, date_time_ms, word};

/// Parses one mainlog line (without its newline). Never fails: an
/// unparsed line comes back with `parsed = false` and only `line` set.
pub fn parse(line: &str, clock: &Clock) -> MtaLogEvent {
    let mut e = MtaLogEvent {
        mta: "exim".into(),
        line: line.to_owned(),
        ..Default::default()
    };
    let Some((date, rest)) = word(line) else {
        return e;
    };
    let Some((time, mut rest)) = word(rest) else {
        return e;
    };
    let zone = word(rest).map(|(z, _)| z);
    let Some((at_ms, zoned)) = date_time_ms(date, time, zone, clock) else {
        return e;
    };
    if zoned {
        rest = word(rest).map(|(_, r)| r).unwrap_or("");
    }
    // +pid: "[1234]".
    if let Some((w, r)) = word(rest)
        && let Some(pid) = w.strip_prefix('[').and_then(|w| w.strip_suffix(']'))
        && let Ok(pid) = pid.parse()
    {
        e.pid = pid;
        rest = r;
    }
    e.parsed = true;
    e.logged_at_ms = at_ms;
    e.program = "exim".into();
    e.action = "other".into();
    if let Some((w, r)) = word(rest)
        && is_message_id(w)
    {
        e.queue_id = w.to_owned();
        rest = r;
    }
    message(rest, &mut e);
    e
}

/// `1tJxyz-000Abc-Q1` (4.96 and before) or `1tJxyz-00000000Abc-Q1AB`
/// (4.97 and later).
fn is_message_id(w: &str) -> bool {
    let mut parts = w.split('-');
    let ok = |p: Option<&str>, lens: &[usize]| {
        p.is_some_and(|p| lens.contains(&p.len()) && p.bytes().all(|b| b.is_ascii_alphanumeric()))
    };
    ok(parts.next(), &[6])
        && ok(parts.next(), &[6, 11])
        && ok(parts.next(), &[2, 4])
        && parts.next().is_none()
}

fn message(rest: &str, e: &mut MtaLogEvent) {
    let (flag, after) = word(rest).unwrap_or(("", ""));
    match flag {
        "<=" => return arrival(after, e),
        "=>" | "->" | "*>" | ">>" => {
            e.status = "sent".into();
            return delivery(after, e);
        }
        "**" => {
            e.status = if after.contains("retry timeout exceeded") {
                "expired".into()
            } else {
                "bounced".into()
            };
            return delivery(after, e);
        }
        "==" => {
            e.status = "deferred".into();
            return delivery(after, e);
        }
        _ => {}
    }
    if rest == "Completed" || rest.starts_with("Completed ") {
        e.action = "removed".into();
        return;
    }
    if let Some(i) = rest.find(" authenticator failed for ") {
        return auth_failed(
            &rest[..i],
            &rest[i + " authenticator failed for ".len()..],
            e,
        );
    }
    if let Some(r) = rest.strip_prefix("SMTP connection from ") {
        return connection(r, e);
    }
    if let Some(i) = rest.find(" rejected ") {
        reject(rest, i, e);
    }
}

/// One `KEY=value` (quoted values with `\"` inside; `H=` takes the
/// `(helo)` and `[ip]` words after it) or a bare word.
struct Fields<'a>(&'a str);

impl<'a> Iterator for Fields<'a> {
    type Item = (&'a str, &'a str);

    fn next(&mut self) -> Option<(&'a str, &'a str)> {
        let s = self.0.trim_start_matches(' ');
        if s.is_empty() {
            return None;
        }
        let eq = s.find('=').filter(|&i| !s[..i].contains(' ') && i > 0);
        let Some(eq) = eq else {
            let (w, r) = word(s)?;
            self.0 = r;
            return Some(("", w));
        };
        let key = &s[..eq];
        let v = &s[eq + 1..];
        let end = if v.starts_with('"') {
            let b = v.as_bytes();
            let mut i = 1;
            while i < b.len() && b[i] != b'"' {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            (i + 1).min(v.len())
        } else {
            let mut end = v.find(' ').unwrap_or(v.len());
            if key == "H" {
                // H=name (helo) [ip]:port, H=(helo) [ip], H=[ip]
                while let Some(next) = v[end..].strip_prefix(' ')
                    && (next.starts_with('(') || next.starts_with('['))
                {
                    let close = if next.starts_with('(') { ')' } else { ']' };
                    let Some(c) = next.find(close) else { break };
                    let after = &next[c + 1..];
                    let port = after.find(' ').unwrap_or(after.len());
                    end += 1 + c + 1 + if close == ']' { port } else { 0 };
                }
            }
            end
        };
        self.0 = &v[end..];
        Some((key, &v[..end]))
    }
}

fn unquote(v: &str) -> String {
    match v.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
        Some(inner) => inner.replace("\\\"", "\"").replace("\\\\", "\\"),
        None => v.to_owned(),
    }
}

/// `H=` value → client host and IP (`name (helo) [ip]:port`).
fn host(v: &str) -> (String, String) {
    let ip = v
        .rfind('[')
        .and_then(|i| v[i + 1..].find(']').map(|j| v[i + 1..i + 1 + j].to_owned()))
        .unwrap_or_default();
    let name = v.split(' ').next().unwrap_or("");
    let name = if name.starts_with('(') || name.starts_with('[') {
        // Only the HELO name: "(helo)".
        name.trim_matches(['(', ')'])
    } else {
        name
    };
    let name = if name.starts_with('[') { "" } else { name };
    (name.to_owned(), ip)
}

/// After `<= `: `sender H=... P=... S=... id=...`.
fn arrival(after: &str, e: &mut MtaLogEvent) {
    e.action = "received".into();
    let (sender, rest) = word(after).unwrap_or(("", ""));
    e.from = if sender == "<>" {
        String::new()
    } else {
        sender.to_owned()
    };
    let mut for_rcpts = false;
    for (k, v) in Fields(rest) {
        match k {
            "H" => (e.client_host, e.client_ip) = host(v),
            "S" => e.size = v.parse().unwrap_or(0),
            "id" => e.message_id = v.trim_matches(['<', '>']).to_owned(),
            "A" => {
                let (mech, user) = v.split_once(':').unwrap_or((v, ""));
                e.sasl_method = mech.to_owned();
                e.sasl_username = user.to_owned();
            }
            "X" => e.tls = v.to_owned(),
            "T" => e.status_text = unquote(v),
            "R" => e.relay = String::new(),
            "" if v == "for" => for_rcpts = true,
            "" if for_rcpts => e.to.push(v.to_owned()),
            _ => {}
        }
    }
    e.nrcpt = e.to.len() as u32;
}

/// After `=> `, `** `, `== `: `addr [<orig>] R=... T=... H=... C="..."`,
/// then for failures and deferrals `: the error` (after `H=... [ip]`).
fn delivery(after: &str, e: &mut MtaLogEvent) {
    e.action = "delivery".into();
    // The error text of `**`/`==` follows the first ": " outside quotes.
    let (head, error) = split_error(after);
    let (addr, mut rest) = word(head).unwrap_or(("", ""));
    e.to.push(addr.to_owned());
    if let Some((w, r)) = word(rest)
        && w.starts_with('<')
        && w.ends_with('>')
    {
        e.orig_to = w.trim_matches(['<', '>']).to_owned();
        rest = r;
    }
    let mut queue_time = None;
    let mut deliver_time = None;
    for (k, v) in Fields(rest) {
        match k {
            "H" => e.relay = v.to_owned(),
            "T" if e.relay.is_empty() => e.relay = v.to_owned(),
            "X" => e.tls = v.to_owned(),
            "C" => e.status_text = unquote(v),
            "QT" => queue_time = exim_duration_ms(v),
            "DT" => deliver_time = exim_duration_ms(v),
            _ => {}
        }
    }
    e.delay_ms = queue_time.or(deliver_time).unwrap_or(0);
    if let Some(err) = error {
        e.status_text = err.to_owned();
        e.dsn = dsn_in(err);
    } else if e.status == "sent" {
        e.dsn = dsn_in(&e.status_text);
    }
}

/// Splits `head: error` at the first `: ` outside double quotes.
fn split_error(s: &str) -> (&str, Option<&str>) {
    let mut quoted = false;
    let b = s.as_bytes();
    let mut i = 0;
    while i + 1 < b.len() {
        match b[i] {
            b'\\' if quoted => i += 1,
            b'"' => quoted = !quoted,
            b':' if !quoted && b[i + 1] == b' ' => return (&s[..i], Some(&s[i + 2..])),
            _ => {}
        }
        i += 1;
    }
    (s, None)
}

/// The first `d.d.d` enhanced status code in `text` ("550 5.1.1 ...").
fn dsn_in(text: &str) -> String {
    text.split([' ', ':'])
        .find(|w| {
            let p: Vec<&str> = w.split('.').collect();
            p.len() == 3
                && matches!(p[0], "2" | "4" | "5")
                && p.iter()
                    .all(|x| !x.is_empty() && x.len() <= 3 && x.bytes().all(|b| b.is_ascii_digit()))
        })
        .unwrap_or("")
        .to_owned()
}

/// `1d2h3m4s`, `3s`, `1.234s` (`+millisec`) → milliseconds.
fn exim_duration_ms(v: &str) -> Option<u64> {
    let mut total = 0f64;
    let mut num = String::new();
    for c in v.chars() {
        if c.is_ascii_digit() || c == '.' {
            num.push(c);
            continue;
        }
        let unit = match c {
            'w' => 604_800.0,
            'd' => 86_400.0,
            'h' => 3_600.0,
            'm' => 60.0,
            's' => 1.0,
            _ => return None,
        };
        total += num.parse::<f64>().ok()? * unit;
        num.clear();
    }
    if !num.is_empty() {
        return None;
    }
    Some((total * 1000.0).round() as u64)
}

/// `plain authenticator failed for (helo) [ip]: 535 Incorrect
/// authentication data (set_id=alice)`.
fn auth_failed(mech: &str, rest: &str, e: &mut MtaLogEvent) {
    e.action = "auth_failed".into();
    e.sasl_method = mech.rsplit(' ').next().unwrap_or(mech).to_owned();
    let (who, why) = rest.split_once("]: ").unwrap_or((rest, ""));
    (e.client_host, e.client_ip) = host(&format!("{who}]"));
    let (why, user) = match why.rsplit_once(" (set_id=") {
        Some((w, u)) => (w, u.trim_end_matches(')')),
        None => (why, ""),
    };
    e.status_text = why.to_owned();
    e.sasl_username = user.to_owned();
}

/// `+smtp_connection`: `SMTP connection from (helo) [ip]:port I=... (TCP/IP
/// connection count = 1)` and `SMTP connection from ... closed by QUIT` /
/// `... lost` (the latter also without the selector).
fn connection(r: &str, e: &mut MtaLogEvent) {
    let close = r.find(']').map(|i| i + 1).unwrap_or(r.len());
    let (who, tail) = r.split_at(close);
    (e.client_host, e.client_ip) = host(who);
    let tail = tail
        .trim_start_matches(|c: char| c == ':' || c.is_ascii_digit())
        .trim();
    if tail.starts_with("closed") || tail.starts_with("lost") || tail.contains(" lost") {
        e.action = "disconnect".into();
        e.status_text = tail.to_owned();
    } else {
        e.action = "connect".into();
    }
}

/// `H=(helo) [ip] F=<from> rejected RCPT <to>: reason` and the like.
fn reject(rest: &str, at: usize, e: &mut MtaLogEvent) {
    e.action = "reject".into();
    let (head, what) = rest.split_at(at);
    for (k, v) in Fields(head) {
        match k {
            "H" => (e.client_host, e.client_ip) = host(v),
            "F" => e.from = v.trim_matches(['<', '>']).to_owned(),
            "A" => {
                let (mech, user) = v.split_once(':').unwrap_or((v, ""));
                e.sasl_method = mech.to_owned();
                e.sasl_username = user.to_owned();
            }
            _ => {}
        }
    }
    let what = what.trim_start_matches(" rejected ");
    let (what, reason) = what.split_once(": ").unwrap_or((what, ""));
    if let Some(to) = what.strip_prefix("RCPT ") {
        e.to.push(to.trim_matches(['<', '>']).to_owned());
        e.status_text = "RCPT".into();
    } else if let Some(from) = what.strip_prefix("MAIL ") {
        if e.from.is_empty() {
            e.from = from.trim_matches(['<', '>']).to_owned();
        }
        e.status_text = "MAIL".into();
    } else {
        e.status_text = what.to_owned();
    }
    if head.ends_with(" temporarily") {
        e.status_text = format!("temporarily {}", e.status_text);
    }
    e.reject_reason = reason.to_owned();
    e.dsn = dsn_in(reason);
}

#[cfg(test)]
mod tests;
