//! MAIL and RCPT: the envelope of a transaction.

use std::time::Instant;

use kiroku_proto::{Outcome, Recipient};

use super::wire::Reply;
use super::{End, Session, Txn};

impl Session<'_> {
    pub(super) async fn mail(&mut self, line: &[u8]) -> Result<(), End> {
        let Some((addr, params)) = parse_path(line, "MAIL FROM:") else {
            return self
                .send(&Reply::new(501, "5.5.4 Syntax: MAIL FROM:<address>"))
                .await;
        };
        if !self.relay() {
            if self.helo.is_none() {
                return self
                    .send(&Reply::new(503, "5.5.1 Send HELO/EHLO first"))
                    .await;
            }
            if self.txn.is_some() {
                return self
                    .send(&Reply::new(503, "5.5.1 Nested MAIL command"))
                    .await;
            }
        }
        let group = self.pipelined_after_mail().await?;
        if !group.is_empty() {
            return self.relay_group(line, addr, params, group).await;
        }
        let t = Instant::now();
        let reply = self.exchange(line, "MAIL").await;
        self.phases = self.new_phases(t, t.elapsed());
        self.mail_replied(addr, params, &reply).await;
        self.send(&reply).await
    }

    /// Opens the transaction of a MAIL the upstream answered with `reply`
    /// (and records it at once if refused).
    pub(super) async fn mail_replied(&mut self, addr: String, params: String, reply: &Reply) {
        if self.txn.is_some() {
            return;
        }
        self.txn = Some(Txn {
            mail_from: addr,
            mail_params: params,
            rcpt: Vec::new(),
        });
        if !reply.is_positive() {
            let outcome = if reply.code >= 400 {
                Outcome::Rejected
            } else {
                Outcome::Aborted
            };
            self.end_txn(outcome, Some(reply), "MAIL").await;
        }
    }

    pub(super) async fn rcpt(&mut self, line: &[u8]) -> Result<(), End> {
        let Some((addr, params)) = parse_path(line, "RCPT TO:") else {
            return self
                .send(&Reply::new(501, "5.5.4 Syntax: RCPT TO:<address>"))
                .await;
        };
        if !self.relay() && self.txn.is_none() {
            return self
                .send(&Reply::new(503, "5.5.1 Need MAIL before RCPT"))
                .await;
        }
        let t = Instant::now();
        let reply = self.exchange(line, "RCPT").await;
        self.phases.rcpt += t.elapsed();
        self.rcpt_replied(addr, params, &reply);
        self.send(&reply).await
    }

    /// Keeps a recipient with the upstream's reply to it.
    pub(super) fn rcpt_replied(&mut self, addr: String, params: String, reply: &Reply) {
        if let Some(txn) = self.txn.as_mut() {
            txn.rcpt.push(Recipient {
                address: addr,
                params,
                reply_code: u32::from(reply.code),
                reply: reply.text(),
            });
        }
    }
}

/// Parses `MAIL FROM:<addr> params` / `RCPT TO:<addr> params`.
pub(super) fn parse_path(line: &[u8], prefix: &str) -> Option<(String, String)> {
    let s = String::from_utf8_lossy(line);
    if s.len() < prefix.len() || !s.is_char_boundary(prefix.len()) {
        return None;
    }
    if !s[..prefix.len()].eq_ignore_ascii_case(prefix) {
        return None;
    }
    let rest = s[prefix.len()..].trim_start();
    if let Some(inner) = rest.strip_prefix('<') {
        let end = inner.find('>')?;
        Some((inner[..end].to_owned(), inner[end + 1..].trim().to_owned()))
    } else {
        let mut parts = rest.splitn(2, ' ');
        let addr = parts.next()?.to_owned();
        if addr.is_empty() {
            return None;
        }
        Some((addr, parts.next().unwrap_or("").trim().to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        type Case<'a> = (&'a [u8], &'a str, Option<(&'a str, &'a str)>);
        let cases: &[Case] = &[
            (
                b"MAIL FROM:<a@b.c> SIZE=10",
                "MAIL FROM:",
                Some(("a@b.c", "SIZE=10")),
            ),
            (b"mail from: <>", "MAIL FROM:", Some(("", ""))),
            (
                b"RCPT TO:<x@y> NOTIFY=NEVER",
                "RCPT TO:",
                Some(("x@y", "NOTIFY=NEVER")),
            ),
            (b"RCPT TO:x@y", "RCPT TO:", Some(("x@y", ""))),
            (b"RCPT TO:", "RCPT TO:", None),
            (b"RCPT", "RCPT TO:", None),
            ("RCPT T\u{e9}:<x>".as_bytes(), "RCPT TO:", None),
            (
                "MAIL FROM:<j\u{f6}rg@b\u{fc}cher.example> SMTPUTF8".as_bytes(),
                "MAIL FROM:",
                Some(("j\u{f6}rg@b\u{fc}cher.example", "SMTPUTF8")),
            ),
        ];
        for (line, prefix, want) in cases {
            let got = parse_path(line, prefix);
            assert_eq!(
                got,
                want.map(|(a, p)| (a.to_owned(), p.to_owned())),
                "{}",
                String::from_utf8_lossy(line)
            );
        }
    }
}
