//! DATA: the message read, made durable, and completed at the upstream.

use std::time::{Duration, Instant};

use kiroku_proto::{Outcome, event::Kind};

use super::record;
use super::recording::mark_normalised;
use super::upstream::{self, Step, UpstreamError};
use super::wire::{self, Reply};
use super::{End, Phase, Session, Txn, buffer_failure};
use crate::buffer::{Blob, BufferError, Spool, Spooled};
use crate::config::{BareLineEndings, WhenFull};
use crate::gaps::{self, Missed, Source};

impl Session<'_> {
    pub(super) async fn data_command(&mut self, line: &[u8]) -> Result<(), End> {
        let accepted = self
            .txn
            .as_ref()
            .is_some_and(|t| t.rcpt.iter().any(|r| (200..300).contains(&r.reply_code)));
        if !self.relay() && !accepted {
            return self
                .send(&Reply::new(503, "5.5.1 Need RCPT before DATA"))
                .await;
        }
        let t = Instant::now();
        let reply = self.exchange(line, "DATA").await;
        self.phases.data_cmd = t.elapsed();
        self.data_replied(reply, Vec::new()).await
    }

    /// Goes on after the upstream's reply to DATA: the message on 354, else
    /// the refused transaction recorded. `earlier` are the replies to the
    /// rest of a pipelined group, sent in the same write.
    pub(super) async fn data_replied(
        &mut self,
        reply: Reply,
        mut earlier: Vec<Reply>,
    ) -> Result<(), End> {
        if reply.code == 354 {
            self.phases.envelope_done();
            earlier.push(reply);
            self.send_all(&earlier).await?;
            return self.data().await;
        }
        // Refused before any content: the transaction is over for the record.
        let outcome = if reply.code >= 400 {
            Outcome::Rejected
        } else {
            Outcome::Aborted
        };
        self.end_txn(outcome, Some(&reply), "DATA").await;
        earlier.push(reply);
        self.send_all(&earlier).await
    }

    /// Reads the message after 354 in chunks: each goes to the buffer's
    /// spool file and, relaying, straight on to the upstream (dot-stuffed
    /// again), so memory stays bounded whatever the size. At the client's
    /// end-of-data: the message is made durable and recorded, and only then
    /// does the upstream get its end-of-data; its outcome is committed
    /// before the client gets the reply and flushed while the reply goes
    /// out (any later reply waits for that flush). Data that is refused
    /// (NUL; bare CR/LF unless `smtp.bare_line_endings` normalises them)
    /// or over the size limit never gets an end-of-data upstream (the
    /// connection is dropped, so nothing is delivered).
    pub(super) async fn data(&mut self) -> Result<(), End> {
        let mut body = self.read_body().await?;
        self.slot.set(Phase::Busy);
        let txn = self.txn.take().unwrap_or(Txn {
            mail_from: String::new(),
            mail_params: String::new(),
            rcpt: Vec::new(),
        });
        let env = self.envelope(txn);
        if body.reader.too_big() || body.reader.refused() {
            return self.refuse_body(&env, body).await;
        }

        // The content is complete: make it durable.
        self.phases.body = body.started.elapsed();
        let t = Instant::now();
        let spooled = match body.spool.take() {
            Some(sp) => sp.finish().await,
            None => Err(body.spool_err.take().unwrap_or(BufferError::Task {
                path: Default::default(),
                message: "no spool".into(),
            })),
        };
        let spooled = match spooled {
            Ok(s) => s,
            Err(_) if body.unrecorded => {
                return self
                    .relay_unrecorded(env, &mut body.stuffer, body.forward_err)
                    .await;
            }
            Err(e) => {
                self.upstream = None;
                return self.send(&buffer_failure(&e)).await;
            }
        };
        self.phases.spool = t.elapsed();
        let t = Instant::now();
        let mut ev = self.build_event(&env, Some(&spooled)).await;
        mark_normalised(&mut ev, &body.reader.normalised());
        self.phases.parse = t.elapsed();
        if let Some(Kind::Email(m)) = &mut ev.kind {
            m.ended_at = "END-OF-DATA".into();
            for w in &m.parse_warnings {
                tracing::info!(peer = %self.peer, warning = %w, "message recorded with parse warning");
            }
        }
        if !self.relay() {
            return self.capture_only(ev, spooled).await;
        }
        self.complete_upstream(env, ev, spooled, body).await
    }

    /// The message's data up to the client's end-of-data, spooled and
    /// (relaying) streamed upstream. A client that goes away or is too
    /// slow ends the session here (a slow one gets 421 and its transaction
    /// is recorded as abandoned).
    async fn read_body(&mut self) -> Result<Body, End> {
        let limit = self.cap.cfg.max_message_bytes;
        let mut reader = wire::DataReader::new(limit, self.cap.cfg.bare_line_endings);
        // Without a spool (buffer full, disk error) the data is still read
        // to its end, then refused with a temporary error — unless the
        // buffer is full and the policy is to relay unrecorded: then the
        // data goes on to the upstream and the mail is counted as a gap.
        let (mut spool, mut spool_err) = match self.cap.buffer.spool().await {
            Ok(s) => (Some(s), None),
            Err(e) => (None, Some(e)),
        };
        let unrecorded = spool.is_none()
            && matches!(spool_err, Some(BufferError::Full { .. }))
            && self.may_relay_unrecorded();
        let mut stuffer = wire::Stuffer::default();
        // Why forwarding stopped early, if it did.
        let mut forward_err: Option<UpstreamError> = if self.relay() && self.upstream.is_none() {
            Some(self.no_upstream(Step::Data))
        } else {
            None
        };
        let started = Instant::now();
        let limits = DataLimits::new(&self.cap.cfg);
        self.slot.set(Phase::Data);
        loop {
            let (until, why) = limits.next_deadline(tokio::time::Instant::now(), reader.size());
            let next = tokio::select! {
                r = tokio::time::timeout_at(until, reader.next(&mut self.client)) => r,
                () = self.slot.evicted() => return self.evict().await,
            };
            let chunk = match next {
                Err(_) => return self.data_too_slow(&limits, why, reader.size()).await,
                Ok(Err(e)) => {
                    // The client went away mid-message: the upstream gets no
                    // end-of-data, so nothing is delivered.
                    self.upstream = None;
                    return Err(End::Client(e));
                }
                Ok(Ok(None)) => break,
                Ok(Ok(Some(c))) => c,
            };
            self.slot.data_progress(reader.size());
            if chunk.is_empty() || reader.too_big() {
                continue;
            }
            if let Some(sp) = spool.as_mut()
                && let Err(e) = sp.write(&chunk).await
            {
                spool_err = Some(e);
                spool = None;
            }
            if self.relay()
                && forward_err.is_none()
                && !reader.refused()
                && (spool.is_some() || unrecorded)
                && let Some(up) = self.upstream.as_mut()
                && let Err(e) = up.data_chunk(&mut stuffer, &chunk).await
            {
                forward_err = Some(e);
                self.upstream = None;
            }
        }
        Ok(Body {
            reader,
            spool,
            spool_err,
            unrecorded,
            stuffer,
            forward_err,
            started,
        })
    }

    /// Too slow: the upstream gets no end-of-data (nothing is delivered)
    /// and the transaction is recorded as abandoned, with the reply that
    /// says why.
    async fn data_too_slow<T>(
        &mut self,
        limits: &DataLimits,
        why: Limit,
        received: u64,
    ) -> Result<T, End> {
        self.upstream = None;
        let reply = limits.reply(why);
        tracing::info!(peer = %self.peer, received, reply = %reply.text(), "message data too slow; transaction abandoned");
        self.end_txn(Outcome::Aborted, Some(&reply), "TIMEOUT")
            .await;
        self.send(&reply).await?;
        Err(End::Timeout)
    }

    /// Refused by us (too big, NUL, bare line endings): the upstream never
    /// sees an end-of-data, so we drop its connection (it discards the
    /// partial message); the record keeps the content unless it was too
    /// big.
    async fn refuse_body(&mut self, env: &record::Envelope, mut body: Body) -> Result<(), End> {
        self.upstream = None;
        let limit = self.cap.cfg.max_message_bytes;
        let too_big = body.reader.too_big();
        let reply = if too_big {
            Reply::new(
                552,
                &format!("5.3.4 Message size exceeds fixed limit of {limit} bytes"),
            )
        } else if self.cap.cfg.bare_line_endings == BareLineEndings::Normalise {
            Reply::new(554, "5.6.0 Message contains NUL; refused")
        } else {
            Reply::new(
                554,
                "5.6.0 Message contains bare CR, bare LF or NUL (RFC 5321 section 2.3.8); refused",
            )
        };
        let kept = match body.spool.take() {
            Some(sp) if !too_big => sp.finish().await.ok(),
            _ => None,
        };
        let mut ev = self.build_event(env, kept.as_ref()).await;
        mark_normalised(&mut ev, &body.reader.normalised());
        if let Some(Kind::Email(m)) = &mut ev.kind {
            m.outcome = Outcome::Aborted as i32;
            m.reply_code = u32::from(reply.code);
            m.upstream_reply = reply.text();
            m.ended_at = "END-OF-DATA".into();
            if kept.is_none() {
                m.raw_sha256.clear();
                m.message_size = body.reader.size();
                m.parse_warnings
                    .push("message over the size limit; content not kept".into());
            }
        }
        if let Err(e) = self.cap.buffer.append(&ev, kept.map(Blob::Spooled)).await {
            self.not_recorded(env, &e, "a refused message").await;
        }
        tracing::warn!(peer = %self.peer, reply = %reply.text(), "message refused");
        self.send(&reply).await
    }

    /// Capture-only: the message is recorded and the client told so.
    async fn capture_only(
        &mut self,
        mut ev: kiroku_proto::Event,
        spooled: Spooled,
    ) -> Result<(), End> {
        if let Some(Kind::Email(m)) = &mut ev.kind {
            m.outcome = Outcome::Captured as i32;
            m.reply_code = 250;
        }
        let reply = match self
            .cap
            .buffer
            .append(&ev, Some(Blob::Spooled(spooled)))
            .await
        {
            Ok(seq) => Reply::new(
                250,
                &format!(
                    "2.0.0 Ok: captured as {}/{seq}",
                    self.cap.buffer.stream_id()
                ),
            ),
            Err(e) => buffer_failure(&e),
        };
        self.send(&reply).await
    }

    /// Relay: the record made durable first, then end-of-data to the
    /// upstream, its outcome committed, then the reply.
    async fn complete_upstream(
        &mut self,
        env: record::Envelope,
        ev: kiroku_proto::Event,
        spooled: Spooled,
        mut body: Body,
    ) -> Result<(), End> {
        let t = Instant::now();
        let id = match self
            .cap
            .buffer
            .begin(&ev, Some(Blob::Spooled(spooled)))
            .await
        {
            Ok(id) => id,
            Err(BufferError::Full { .. }) if self.may_relay_unrecorded() => {
                return self
                    .relay_unrecorded(env, &mut body.stuffer, body.forward_err)
                    .await;
            }
            Err(e) => {
                self.upstream = None;
                return self.send(&buffer_failure(&e)).await;
            }
        };
        self.phases.begin = t.elapsed();
        // Failing before our end-of-data means the upstream discarded the
        // message: not delivered. Failing after it: we cannot know.
        let t = Instant::now();
        let outcome = match (body.forward_err, self.upstream.as_mut()) {
            (Some(e), _) => Err((false, e)),
            (None, Some(up)) => up.data_end(&mut body.stuffer).await.map_err(|e| (true, e)),
            (None, None) => Err((false, self.no_upstream(Step::EndOfData))),
        };
        self.phases.eod = t.elapsed();
        if outcome.is_err() {
            self.upstream = None;
        }
        let t = Instant::now();
        self.commit_outcome(id, Answer::of(&outcome));
        self.phases.finish = t.elapsed();
        let reply = self.final_reply(outcome);
        let t = Instant::now();
        let sent = self.send_now(&reply).await;
        self.phases.reply = t.elapsed();
        self.phases.log();
        sent
    }

    /// The outcome is committed now and flushed while the reply goes out
    /// (the next reply to this client waits for that flush). A crash in
    /// between leaves the in-flight record, recovered with outcome
    /// unknown, as a crash while the upstream decides does.
    fn commit_outcome(&mut self, id: crate::buffer::InflightId, o: Answer) {
        let timings = self.phases.record();
        let settled = self.cap.buffer.settle(id, |ev| {
            if let Some(Kind::Email(m)) = &mut ev.kind {
                m.timings = Some(timings);
                m.outcome = o.outcome as i32;
                m.reply_code = u32::from(o.code);
                m.upstream_reply = o.text.clone();
                m.upstream_queue_id = o.queue_id.clone();
                m.ended_at = o.stage.into();
            }
        });
        match settled {
            Ok(settled) => {
                let (buffer, peer) = (self.cap.buffer.clone(), self.peer);
                self.outcome_flush = Some(tokio::spawn(async move {
                    if let Err(e) = buffer.make_durable(settled).await {
                        // The record exists (in flight, durable) and is
                        // recovered with outcome unknown at the next start.
                        tracing::error!(peer = %peer, error = %e, "could not record the upstream's outcome");
                    }
                }));
            }
            Err(e) => {
                tracing::error!(peer = %self.peer, error = %e, "could not record the upstream's outcome");
            }
        }
    }

    /// The client's reply for the upstream's answer to end-of-data (or
    /// the failure that kept it from answering).
    pub(super) fn final_reply(&self, outcome: Result<Reply, (bool, UpstreamError)>) -> Reply {
        match outcome {
            Ok(r) => r,
            Err((after_end, e)) => {
                tracing::warn!(peer = %self.peer, error = %e, "upstream failed during delivery");
                if after_end {
                    Reply::new(
                        451,
                        "4.4.2 Upstream connection lost during delivery; outcome unknown, try again later",
                    )
                } else {
                    Reply::new(
                        451,
                        "4.4.1 Upstream connection lost before the end of the message; not delivered, try again later",
                    )
                }
            }
        }
    }

    /// Whether mail goes on unrecorded while the buffer is full
    /// (`buffer.when_full = "relay_unrecorded"`, relay mode only).
    pub(super) fn may_relay_unrecorded(&self) -> bool {
        self.relay() && self.cap.when_full == WhenFull::RelayUnrecorded
    }

    /// The buffer is full and the policy is to relay anyway: the mail is
    /// counted as a gap (durably, before the upstream gets end-of-data, as
    /// a recorded mail is stored before it), then completed at the
    /// upstream, whose answer the client gets verbatim.
    pub(super) async fn relay_unrecorded(
        &mut self,
        env: record::Envelope,
        stuffer: &mut wire::Stuffer,
        forward_err: Option<UpstreamError>,
    ) -> Result<(), End> {
        let accepted: Vec<String> = env
            .rcpt
            .iter()
            .filter(|r| (200..300).contains(&r.reply_code))
            .map(|r| r.address.clone())
            .collect();
        let missed = Missed {
            sender: Some(&env.mail_from),
            recipients: &accepted,
            path: None,
        };
        if let Err(e) = self.cap.gaps.missed(Source::Smtp, missed).await {
            // Not even countable: refuse, as the refuse policy would.
            self.upstream = None;
            return self.send(&buffer_failure(&e)).await;
        }
        let outcome = match (forward_err, self.upstream.as_mut()) {
            (Some(e), _) => Err((false, e)),
            (None, Some(up)) => up.data_end(stuffer).await.map_err(|e| (true, e)),
            (None, None) => Err((false, self.no_upstream(Step::EndOfData))),
        };
        match &outcome {
            Ok(r) if (200..300).contains(&r.code) => {
                self.cap
                    .gaps
                    .upstream_answered(gaps::Upstream::Delivered)
                    .await;
            }
            Ok(_) => {
                self.cap
                    .gaps
                    .upstream_answered(gaps::Upstream::Rejected)
                    .await
            }
            Err(_) => self.upstream = None,
        }
        tracing::warn!(
            peer = %self.peer,
            mail_from = %env.mail_from,
            recipients = accepted.len(),
            reply = outcome.as_ref().map(|r| r.code).unwrap_or(0),
            "mail relayed UNRECORDED: the agent buffer is full and buffer.when_full = \"relay_unrecorded\"; it is counted in a gap record sent to the collector once the buffer has room (raise buffer.max_bytes or fix the collector connection)"
        );
        let reply = self.final_reply(outcome);
        self.send(&reply).await
    }
}

/// The message data as read: what `data` needs after the client's
/// end-of-data.
struct Body {
    reader: wire::DataReader,
    spool: Option<Spool>,
    /// Why there is no spool, when there is none.
    spool_err: Option<BufferError>,
    /// The buffer is full and the mail goes on unrecorded.
    unrecorded: bool,
    stuffer: wire::Stuffer,
    /// Why forwarding to the upstream stopped early, if it did.
    forward_err: Option<UpstreamError>,
    started: Instant,
}

/// What the record says of the upstream's answer to end-of-data.
struct Answer {
    code: u16,
    text: String,
    outcome: Outcome,
    queue_id: String,
    stage: &'static str,
}

impl Answer {
    /// `Err((true, _))`: the upstream failed after our end-of-data (the
    /// outcome is unknown); `Err((false, _))`: before it (not delivered).
    fn of(outcome: &Result<Reply, (bool, UpstreamError)>) -> Answer {
        let end = |code, text, outcome, queue_id| Answer {
            code,
            text,
            outcome,
            queue_id,
            stage: "END-OF-DATA",
        };
        let lost = |code, e: &UpstreamError, outcome| Answer {
            code,
            text: e.to_string(),
            outcome,
            queue_id: String::new(),
            stage: "UPSTREAM",
        };
        match outcome {
            Ok(r) if (200..300).contains(&r.code) => {
                end(r.code, r.text(), Outcome::Delivered, upstream::queue_id(r))
            }
            Ok(r) => end(r.code, r.text(), Outcome::Rejected, String::new()),
            Err((true, e)) => lost(0, e, Outcome::Unknown),
            Err((false, e)) => lost(451, e, Outcome::Aborted),
        }
    }
}

/// Which limit ended a client's message data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Limit {
    /// Nothing for `smtp.data_block_timeout_secs`.
    Block,
    /// Slower than `smtp.data_min_rate_bytes_per_sec` on average.
    Rate,
    /// Longer than `smtp.data_timeout_secs` in all.
    Total,
}

/// How long message data may take (RFC 5321 4.5.3.2 gives a client 3
/// minutes per block, which alone lets a trickle of one byte every few
/// minutes hold a connection forever). A client gets the block timeout for
/// free; each byte then buys `1 / min_rate` seconds more, and the whole is
/// capped by the total deadline.
struct DataLimits {
    started: tokio::time::Instant,
    block: Duration,
    total: Duration,
    min_rate: u64,
}

impl DataLimits {
    fn new(cfg: &crate::config::SmtpConfig) -> DataLimits {
        // A year is "no limit" for a connection; capping keeps the instant
        // arithmetic below from overflowing on an absurd setting.
        let secs = |v: u64| Duration::from_secs(v.min(365 * 24 * 3600));
        DataLimits {
            started: tokio::time::Instant::now(),
            block: secs(cfg.data_block_timeout_secs),
            total: secs(cfg.data_timeout_secs),
            min_rate: cfg.data_min_rate_bytes_per_sec,
        }
    }

    /// When the next read must have finished, after `received` bytes, and
    /// which limit that is.
    fn next_deadline(
        &self,
        now: tokio::time::Instant,
        received: u64,
    ) -> (tokio::time::Instant, Limit) {
        let mut best = (now + self.block, Limit::Block);
        if self.min_rate > 0 {
            let credit = Duration::from_secs_f64(received as f64 / self.min_rate as f64);
            let t = self.started + self.block + credit;
            if t < best.0 {
                best = (t, Limit::Rate);
            }
        }
        let t = self.started + self.total;
        if t < best.0 {
            best = (t, Limit::Total);
        }
        best
    }

    /// The client's reply when `why` ends its data.
    fn reply(&self, why: Limit) -> Reply {
        let text = match why {
            Limit::Block => "4.4.2 Timeout reading message data, closing".to_owned(),
            Limit::Rate => format!(
                "4.4.2 Message data arriving too slowly (under {} bytes/s); not delivered, closing",
                self.min_rate
            ),
            Limit::Total => format!(
                "4.4.2 Message data took longer than {} s; not delivered, closing",
                self.total.as_secs()
            ),
        };
        Reply::new(421, &text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_limits() {
        let limits = DataLimits {
            started: tokio::time::Instant::now(),
            block: Duration::from_secs(180),
            total: Duration::from_secs(1800),
            min_rate: 500,
        };
        let at = |s: u64| limits.started + Duration::from_secs(s);
        // (seconds since DATA, bytes received, deadline in seconds, limit)
        let cases = [
            // At first only the block timeout applies.
            (0, 0, 180, Limit::Block),
            // A byte every 5 s (the finding): 60 bytes after 300 s buy
            // 0.12 s, so the rate limit ends it at once.
            (300, 60, 180, Limit::Rate),
            // Keeping 500 B/s, the block timeout stays the nearer limit.
            (300, 150_000, 480, Limit::Block),
            // Just under the block timeout but far under the rate.
            (170, 10, 180, Limit::Rate),
            // Fast enough, but the whole may not pass the total.
            (1700, 10_000_000, 1800, Limit::Total),
        ];
        for (now, received, want, limit) in cases {
            let (until, why) = limits.next_deadline(at(now), received);
            assert_eq!(why, limit, "at {now} s with {received} bytes");
            let got = (until - limits.started).as_secs();
            assert_eq!(got, want, "at {now} s with {received} bytes");
        }
        let off = DataLimits {
            min_rate: 0,
            ..limits
        };
        assert_eq!(off.next_deadline(at(300), 0).1, Limit::Block);
    }
}
