//! Commands a client pipelined behind MAIL (RFC 2920), relayed as one
//! group to an upstream that offered PIPELINING.

use std::time::Instant;

use super::mail::parse_path;
use super::upstream::{self, Step};
use super::wire;
use super::{End, Session, temp_failure};

/// A command pipelined behind MAIL that joins its group (see
/// `Session::pipelined_after_mail`).
pub(super) enum Piped {
    /// The line as read (without CRLF) and its parsed path.
    Rcpt {
        line: Vec<u8>,
        addr: String,
        params: String,
    },
    /// DATA, always the last of a group.
    Data,
}

/// The next command waiting complete in `buf`, if it may join a pipelined
/// group: a CRLF-terminated line with no other CR, no NUL, within the
/// length limit, that is a well-formed RCPT or exactly DATA. Anything
/// else (including a line still arriving) ends the group.
pub(super) fn peek_piped(buf: &[u8]) -> Option<Piped> {
    let nl = memchr::memchr(b'\n', buf)?;
    let line = buf[..nl].strip_suffix(b"\r")?;
    if line.len() > wire::MAX_COMMAND_LINE || line.iter().any(|&b| b == b'\r' || b == 0) {
        return None;
    }
    if line.eq_ignore_ascii_case(b"DATA") {
        return Some(Piped::Data);
    }
    let (addr, params) = parse_path(line, "RCPT TO:")?;
    Some(Piped::Rcpt {
        line: Vec::new(),
        addr,
        params,
    })
}

impl Session<'_> {
    /// The RCPT and DATA commands a client pipelined (RFC 2920) behind a
    /// MAIL, when they can go to the upstream in one write: relay mode,
    /// an ESMTP client (it saw our PIPELINING) and an upstream that offered
    /// PIPELINING. Only complete, clean lines already received are taken
    /// (never waiting for more), up to and including a DATA, which ends a
    /// group; anything else stays for the lock-step path.
    pub(super) async fn pipelined_after_mail(&mut self) -> Result<Vec<Piped>, End> {
        let upstream_pipelines = self
            .upstream
            .as_ref()
            .is_some_and(|u| u.caps.has("PIPELINING"));
        let mut group = Vec::new();
        if !self.relay() || !self.esmtp || !upstream_pipelines {
            return Ok(group);
        }
        while let Some(next) = peek_piped(self.client.buffer()) {
            // The line is complete and clean in the buffer: reading it
            // cannot wait nor fail.
            let line = self.read_client_line(wire::MAX_COMMAND_LINE).await?;
            let data = matches!(next, Piped::Data);
            group.push(match next {
                Piped::Rcpt { addr, params, .. } => Piped::Rcpt { line, addr, params },
                Piped::Data => Piped::Data,
            });
            if data {
                break;
            }
        }
        Ok(group)
    }

    /// Relays MAIL and the commands pipelined behind it in one write and
    /// reads the upstream's replies one by one, in order; each is handled
    /// as in lock-step (recipients recorded with their own reply) and the
    /// client gets them all in order, in one write. If the upstream fails
    /// part-way, the commands left unanswered get a temporary failure.
    pub(super) async fn relay_group(
        &mut self,
        mail: &[u8],
        addr: String,
        params: String,
        group: Vec<Piped>,
    ) -> Result<(), End> {
        let t = Instant::now();
        let mut lines: Vec<&[u8]> = vec![mail];
        for p in &group {
            lines.push(match p {
                Piped::Rcpt { line, .. } => line.as_slice(),
                Piped::Data => b"DATA".as_slice(),
            });
        }
        let mut replies = Vec::with_capacity(lines.len());
        let sent = match self.upstream.as_mut() {
            Some(up) => up.send_lines(&lines).await,
            None => Err(self.no_upstream(Step::Command)),
        };
        match sent {
            Err(e) => {
                self.upstream = None;
                replies.resize(lines.len(), temp_failure(e));
            }
            Ok(()) => {
                for p in std::iter::once(None).chain(group.iter().map(Some)) {
                    let limit = match p {
                        Some(Piped::Data) => upstream::DATA_INIT_TIMEOUT,
                        _ => upstream::COMMAND_TIMEOUT,
                    };
                    let Some(up) = self.upstream.as_mut() else {
                        replies.push(temp_failure("upstream connection lost mid-group"));
                        continue;
                    };
                    match up.reply(limit).await {
                        Ok(r) => {
                            if r.code == 421 {
                                self.upstream = None;
                            }
                            replies.push(r);
                        }
                        Err(e) => {
                            self.upstream = None;
                            replies.push(temp_failure(e));
                        }
                    }
                }
            }
        }
        // The envelope's round trip is shared; it is counted as MAIL's.
        self.phases = self.new_phases(t, t.elapsed());
        let mut replies = replies.into_iter();
        let mut out = Vec::with_capacity(lines.len());
        let mail_reply = replies.next().unwrap_or_else(|| temp_failure("no reply"));
        self.mail_replied(addr, params, &mail_reply).await;
        out.push(mail_reply);
        for p in group {
            let reply = replies.next().unwrap_or_else(|| temp_failure("no reply"));
            match p {
                Piped::Rcpt { addr, params, .. } => {
                    self.rcpt_replied(addr, params, &reply);
                    out.push(reply);
                }
                Piped::Data => return self.data_replied(reply, out).await,
            }
        }
        self.send_all(&out).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_may_join_a_pipelined_group() {
        // (buffered input, joins as: None, Some("RCPT <addr>") or Some("DATA"))
        let cases: &[(&[u8], Option<&str>)] = &[
            (b"RCPT TO:<b@x>\r\nDATA\r\n", Some("RCPT b@x")),
            (b"rcpt to:<b@x> NOTIFY=NEVER\r\n", Some("RCPT b@x")),
            (b"DATA\r\nSubject: early\r\n", Some("DATA")),
            (b"data\r\n", Some("DATA")),
            // Incomplete, bare LF, stray CR, NUL: left to the lock-step path.
            (b"RCPT TO:<b@x>", None),
            (b"RCPT TO:<b@x>\n", None),
            (b"RCPT TO:<b@x>\rX\r\n", None),
            (b"RCPT TO:<b\0@x>\r\n", None),
            // Malformed RCPT, other commands, DATA with an argument.
            (b"RCPT TO:\r\n", None),
            (b"RSET\r\n", None),
            (b"AUTH PLAIN AGFAYg==\r\n", None),
            (b"STARTTLS\r\n", None),
            (b"DATA x\r\n", None),
            (b"BDAT 10 LAST\r\n", None),
            (b"", None),
        ];
        for (buf, want) in cases {
            let got = peek_piped(buf).map(|p| match p {
                Piped::Rcpt { addr, .. } => format!("RCPT {addr}"),
                Piped::Data => "DATA".into(),
            });
            assert_eq!(got.as_deref(), *want, "{}", String::from_utf8_lossy(buf));
        }
        let long = [b"RCPT TO:<".as_slice(), &[b'a'; 5000], b">\r\n"].concat();
        assert!(peek_piped(&long).is_none(), "over the line limit");
    }
}
