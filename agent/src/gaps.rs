//! What the agent could not record, counted and reported.
//!
//! While the buffer is at its bound (`buffer.max_bytes`), a capture source
//! that goes on without recording — the relay under `buffer.when_full =
//! "relay_unrecorded"`, file capture always (a file operation cannot be
//! refused) — counts each record it could not keep here. The count lives in
//! a durable note in the buffer (one per source, bounded: counts, first and
//! last time, up to [`MAX_LISTED`] distinct addresses or paths), so a crash
//! forgets nothing, and becomes one `GapEvent` in the queue as soon as the
//! buffer has room again ([`Gaps::run`]). The collector then shows "N mails
//! between T1 and T2 were relayed unrecorded".
//!
//! Invariant: a mail relayed unrecorded is counted durably before the
//! upstream gets its end-of-data, as a recorded one is stored before it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use kiroku_proto::GapEvent;
use kiroku_proto::event::Kind;
use prost::Message;

use crate::buffer::{Buffer, BufferError, Durability};
use crate::capture::context::CaptureContext;

/// Distinct senders, recipients or paths kept per gap record; more set
/// `truncated`.
pub const MAX_LISTED: usize = 100;

/// The capture source a gap belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Smtp,
    Files,
    /// Relay incident records (issue 20).
    Incidents,
    /// AUTH attempt records (issue 20).
    Auth,
    /// Network flow and P2P records (issue 21).
    Network,
}

impl Source {
    fn name(self) -> &'static str {
        match self {
            Source::Smtp => "smtp",
            Source::Files => "files",
            Source::Incidents => "incidents",
            Source::Auth => "auth",
            Source::Network => "network",
        }
    }

    fn note_key(self) -> String {
        format!("gap/{}", self.name())
    }

    fn what(self) -> &'static str {
        match self {
            Source::Smtp => {
                "SMTP transactions were relayed to the upstream without being recorded (buffer.when_full = \"relay_unrecorded\")"
            }
            Source::Files => "file events were not recorded",
            Source::Incidents => "relay incident records were not written",
            Source::Auth => "AUTH attempt records were not written",
            Source::Network => "network flow records were not written",
        }
    }
}

/// How a mail relayed unrecorded ended at the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upstream {
    Delivered,
    Rejected,
}

/// One thing not recorded.
#[derive(Debug, Default)]
pub struct Missed<'a> {
    pub sender: Option<&'a str>,
    pub recipients: &'a [String],
    pub path: Option<&'a str>,
}

/// The gap ledger; one per agent, shared by every capture source.
pub struct Gaps {
    buffer: Arc<Buffer>,
    ctx: Arc<CaptureContext>,
    /// A "buffer full, not recording" line was logged for the episode in
    /// progress (per source).
    reported: [AtomicBool; 5],
    /// Counts of file events missed while the buffer could not be written
    /// at all (a full disk: not even the note can be stored), kept in
    /// memory until the note can be, and then merged into it. A crash
    /// meanwhile forgets them; the next start's catch-up scan reports the
    /// files whose state still differs.
    held: std::sync::Mutex<[GapEvent; 5]>,
}

fn push_distinct(list: &mut Vec<String>, value: &str, truncated: &mut bool) {
    if value.is_empty() || list.iter().any(|v| v == value) {
        return;
    }
    if list.len() >= MAX_LISTED {
        *truncated = true;
        return;
    }
    list.push(value.to_owned());
}

fn decode(bytes: Option<&[u8]>) -> GapEvent {
    bytes
        .and_then(|b| GapEvent::decode(b).ok())
        .unwrap_or_default()
}

impl Gaps {
    pub fn new(buffer: Arc<Buffer>, ctx: Arc<CaptureContext>) -> Arc<Gaps> {
        Arc::new(Gaps {
            buffer,
            ctx,
            reported: [
                AtomicBool::new(false),
                AtomicBool::new(false),
                AtomicBool::new(false),
                AtomicBool::new(false),
                AtomicBool::new(false),
            ],
            held: std::sync::Mutex::new([
                GapEvent::default(),
                GapEvent::default(),
                GapEvent::default(),
                GapEvent::default(),
                GapEvent::default(),
            ]),
        })
    }

    /// Counts one record `source` could not keep; on disk on return.
    pub async fn missed(&self, source: Source, m: Missed<'_>) -> Result<(), BufferError> {
        let now = self.ctx.clock.now_ms();
        if !self.reported[source as usize].swap(true, Ordering::SeqCst) {
            tracing::error!(
                source = source.name(),
                buffer = %self.buffer.dir().display(),
                "agent buffer is full: {}. Each one is counted and reported to the collector as a gap record once the buffer has room again. Check the collector connection (`kiroku hosts` shows this agent's backlog) or raise buffer.max_bytes",
                source.what()
            );
        }
        let one = |g: &mut GapEvent| {
            if g.count == 0 {
                g.first_ms = now;
            }
            g.count += 1;
            g.last_ms = g.last_ms.max(now);
            let mut truncated = g.truncated;
            if let Some(s) = m.sender {
                push_distinct(&mut g.senders, s, &mut truncated);
            }
            for r in m.recipients {
                push_distinct(&mut g.recipients, r, &mut truncated);
            }
            if let Some(p) = m.path {
                push_distinct(&mut g.paths, p, &mut truncated);
            }
            g.truncated = truncated;
        };
        let written = self
            .buffer
            .note(&source.note_key(), Durability::Now, |old| {
                let mut g = decode(old);
                one(&mut g);
                g.encode_to_vec()
            })
            .await;
        match written {
            // A mail relayed unrecorded must be counted durably before its
            // end-of-data goes upstream: the relay refuses it instead.
            // Records that are not mail (files, incidents, AUTH attempts)
            // are counted in memory while the disk takes no writes.
            Err(e) if source != Source::Smtp && e.unwritable() => {
                let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
                one(&mut held[source as usize]);
                Ok(())
            }
            other => other,
        }
    }

    /// Merges the counts held in memory (the buffer could not be written)
    /// into the durable note, once it can be.
    async fn store_held(&self, source: Source) {
        let held = {
            let held = self.held.lock().unwrap_or_else(|p| p.into_inner());
            held[source as usize].clone()
        };
        if held.count == 0 {
            return;
        }
        let r = self
            .buffer
            .note(&source.note_key(), Durability::Now, |old| {
                let mut g = decode(old);
                merge(&mut g, &held);
                g.encode_to_vec()
            })
            .await;
        if r.is_ok() {
            let mut now = self.held.lock().unwrap_or_else(|p| p.into_inner());
            // Only what was merged: events counted meanwhile stay held.
            let g = &mut now[source as usize];
            g.count = g.count.saturating_sub(held.count);
            if g.count == 0 {
                *g = GapEvent::default();
            }
        }
    }

    /// Adds the upstream's answer to a mail counted by [`Gaps::missed`]
    /// (written within a second; a crash before leaves it counted without
    /// an outcome).
    pub async fn upstream_answered(&self, answer: Upstream) {
        let r = self
            .buffer
            .note(&Source::Smtp.note_key(), Durability::Soon, |old| {
                let mut g = decode(old);
                match answer {
                    Upstream::Delivered => g.delivered += 1,
                    Upstream::Rejected => g.rejected += 1,
                }
                g.encode_to_vec()
            })
            .await;
        if let Err(e) = r {
            tracing::error!(error = %e, "could not count the outcome of a mail relayed unrecorded");
        }
    }

    /// Queues the pending gap records whenever the buffer has room, until
    /// aborted (checked every `every`).
    pub async fn run(self: Arc<Self>, every: std::time::Duration) {
        loop {
            self.flush_pending().await;
            tokio::time::sleep(every).await;
        }
    }

    /// Queues each pending gap record if the buffer has room.
    pub async fn flush_pending(&self) {
        for source in [
            Source::Smtp,
            Source::Files,
            Source::Incidents,
            Source::Auth,
            Source::Network,
        ] {
            self.store_held(source).await;
            let ctx = self.ctx.clone();
            let made = self
                .buffer
                .take_note(&source.note_key(), |bytes| {
                    let mut g = GapEvent::decode(bytes).ok()?;
                    g.source = source.name().into();
                    g.reason = "buffer_full".into();
                    g.detail = detail(source, &g);
                    let first = g.first_ms;
                    let mut ev = ctx.event(String::new(), Kind::Gap(g));
                    // The gap's own time is when it began.
                    ev.observed_at_ms = first;
                    Some(ev)
                })
                .await;
            match made {
                Ok(Some(seq)) => {
                    self.reported[source as usize].store(false, Ordering::SeqCst);
                    tracing::warn!(
                        source = source.name(),
                        seq,
                        "the agent buffer has room again: the gap record of what was not recorded meanwhile is queued for the collector (kiroku search --kind gap)"
                    );
                }
                Ok(None) => {}
                Err(e) if e.refused_for_space() => {}
                Err(e) => {
                    tracing::error!(source = source.name(), error = %e, "could not queue a gap record; it stays pending")
                }
            }
        }
    }
}

/// Adds the counts of `from` to `into`.
fn merge(into: &mut GapEvent, from: &GapEvent) {
    if into.count == 0 || (from.first_ms != 0 && from.first_ms < into.first_ms) {
        into.first_ms = from.first_ms;
    }
    into.count += from.count;
    into.last_ms = into.last_ms.max(from.last_ms);
    into.delivered += from.delivered;
    into.rejected += from.rejected;
    let mut truncated = into.truncated || from.truncated;
    for s in &from.senders {
        push_distinct(&mut into.senders, s, &mut truncated);
    }
    for r in &from.recipients {
        push_distinct(&mut into.recipients, r, &mut truncated);
    }
    for p in &from.paths {
        push_distinct(&mut into.paths, p, &mut truncated);
    }
    into.truncated = truncated;
}

/// The sentence an investigator reads.
fn detail(source: Source, g: &GapEvent) -> String {
    let span = format!(
        "between {} and {} (agent clock)",
        kiroku_common::rfc3339_ms(g.first_ms),
        kiroku_common::rfc3339_ms(g.last_ms)
    );
    match source {
        Source::Smtp => format!(
            "{} SMTP transactions {span} were relayed to the upstream without being recorded: the agent buffer was full and buffer.when_full = \"relay_unrecorded\" ({} delivered, {} rejected by the upstream, {} ended otherwise). Their content is not available; the senders and recipients listed are all that is known{}. Raise buffer.max_bytes or fix the collector connection that let the buffer fill.",
            g.count,
            g.delivered,
            g.rejected,
            g.count.saturating_sub(g.delivered + g.rejected),
            if g.truncated {
                " (lists truncated)"
            } else {
                ""
            }
        ),
        Source::Incidents => format!(
            "{} relay incident records {span} were not written: the agent buffer was full or its disk could not be written{}. The incidents listed are some of them (kind, upstream or client, state). Raise buffer.max_bytes or fix the collector connection that let the buffer fill.",
            g.count,
            if g.truncated { " (list truncated)" } else { "" }
        ),
        Source::Auth => format!(
            "{} AUTH attempt records {span} were not written: the agent buffer was full or its disk could not be written{}. The attempts listed are some of them (client, mechanism, claimed user, outcome). Raise buffer.max_bytes or fix the collector connection that let the buffer fill.",
            g.count,
            if g.truncated { " (list truncated)" } else { "" }
        ),
        Source::Network => format!(
            "{} network records {span} were not written: the agent buffer was full or its disk could not be written{}. The peers listed are some of them (process and remote address). Raise buffer.max_bytes or fix the collector connection that let the buffer fill.",
            g.count,
            if g.truncated { " (list truncated)" } else { "" }
        ),
        Source::Files => format!(
            "{} file events {span} were not recorded: the agent buffer was full or its disk could not be written{}. The paths listed are some of them; the next start's catch-up scan reports files whose state still differs. Raise buffer.max_bytes or fix the collector connection that let the buffer fill.",
            g.count,
            if g.truncated {
                " (paths truncated)"
            } else {
                ""
            }
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_counts_merge_into_the_note() {
        let mut note = GapEvent {
            count: 2,
            first_ms: 2_000,
            last_ms: 3_000,
            paths: vec!["/a".into()],
            ..Default::default()
        };
        let held = GapEvent {
            count: 3,
            first_ms: 1_000,
            last_ms: 5_000,
            paths: vec!["/a".into(), "/b".into()],
            ..Default::default()
        };
        merge(&mut note, &held);
        assert_eq!((note.count, note.first_ms, note.last_ms), (5, 1_000, 5_000));
        assert_eq!(note.paths, vec!["/a".to_owned(), "/b".to_owned()]);
        let mut empty = GapEvent::default();
        merge(&mut empty, &held);
        assert_eq!((empty.count, empty.first_ms), (3, 1_000));
    }
}
