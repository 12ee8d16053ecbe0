//! What the collector checks and fills in on a batch before it goes to
//! the committer: each event's identity (the certificate's), stream,
//! sequence number and kind, the tags an agent may not set, the clock-skew
//! tag, the agent's group, and the bytes to journal.

use kiroku_common::pki::PeerIdentity;
use kiroku_common::quote::quote;
use kiroku_proto::{Batch, Event, event::Kind};
use prost::Message;
use tonic::Status;

use super::CLOCK_SKEW_TAG;
use super::commit::Incoming;

/// What one Ship stream knows about its agent's clock.
#[derive(Default, Clone, Copy)]
pub(super) struct SessionClock {
    /// agent − collector, from the agent's last Status.
    pub(super) offset_ms: Option<i64>,
}

/// Whether a Hello's `stream_id` is acceptable (public for the fuzz
/// targets in `fuzz/`).
#[doc(hidden)]
pub fn valid_stream_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Whether an agent clock offset (agent − collector) is beyond the
/// threshold either way.
#[doc(hidden)]
pub fn clock_flagged(offset_ms: i64, threshold_ms: i64) -> bool {
    offset_ms.abs() > threshold_ms
}

/// Tags an event from a host whose clock is off beyond the threshold. An
/// event recorded before its agent measured the offset is judged by the
/// offset the agent reported on this stream (the event itself is not
/// changed: `clock_offset_known` stays false).
fn check_clock(e: &mut Event, session: SessionClock, threshold_ms: i64) {
    let offset = if e.clock_offset_known {
        Some(e.clock_offset_ms)
    } else {
        session.offset_ms
    };
    if offset.is_some_and(|o| clock_flagged(o, threshold_ms))
        && !e.tags.iter().any(|t| t == CLOCK_SKEW_TAG)
    {
        e.tags.push(CLOCK_SKEW_TAG.to_owned());
    }
}

/// Checks one event of a batch and fills in what the collector owns.
fn admit(e: &mut Event, id: &PeerIdentity, stream_id: &str, now: i64) -> Result<(), Status> {
    if !e.agent_id.is_empty() && e.agent_id != id.name {
        tracing::warn!(identity = %id, claimed = %e.agent_id, "refused: agent tried to submit events as another agent");
        return Err(Status::permission_denied(format!(
            "{id} may only submit its own events, not events of agent {}",
            quote(&e.agent_id)
        )));
    }
    if e.stream_id != stream_id {
        return Err(Status::invalid_argument(format!(
            "event seq {} names stream {} but this stream is {}",
            e.seq,
            quote(&e.stream_id),
            quote(stream_id)
        )));
    }
    if e.seq == 0 {
        return Err(Status::invalid_argument("event without a sequence number"));
    }
    if e.kind.is_none() {
        return Err(Status::invalid_argument(format!(
            "event seq {} has no kind",
            e.seq
        )));
    }
    if matches!(e.kind, Some(Kind::Integrity(_))) {
        return Err(Status::invalid_argument(format!(
            "event seq {} is an integrity record: only the collector writes those",
            e.seq
        )));
    }
    e.agent_id = id.name.clone();
    e.event_id = format!("{}/{}/{}", id.name, stream_id, e.seq);
    e.received_at_ms = now;
    // The group is the certificate's ([`admit_incoming`] sets it), never
    // the agent's own say.
    e.agent_group.clear();
    confine_tags(e, id);
    Ok(())
}

/// Tags in the collector's namespaces (`alert:…`, `clock-skew`) come only
/// from the collector: whatever else an agent sent is kept under `agent:`
/// (`kiroku_common::vocabulary`), before the collector adds its own.
fn confine_tags(e: &mut Event, id: &PeerIdentity) {
    let moved = kiroku_common::vocabulary::confine_agent_tags(&mut e.tags);
    if moved > 0 {
        tracing::debug!(identity = %id, event_id = %e.event_id, moved, "tags an agent may not set kept under agent:");
    }
}

/// Everything the collector checks and fills in on a decoded batch before
/// it goes to the committer: [`admit`] on each event (identity from the
/// certificate, stream, sequence number, kind), then the clock-skew tag
/// (`session_offset_ms`: the offset the agent last reported on this
/// stream). Public for the fuzz targets in `fuzz/`; the Ship stream uses it.
#[doc(hidden)]
pub fn admit_batch(
    events: &mut [Event],
    id: &PeerIdentity,
    stream_id: &str,
    session_offset_ms: Option<i64>,
    threshold_ms: i64,
    now_ms: i64,
) -> Result<(), Status> {
    events
        .iter_mut()
        .try_for_each(|e| admit(e, id, stream_id, now_ms))?;
    let session = SessionClock {
        offset_ms: session_offset_ms,
    };
    for e in events.iter_mut() {
        check_clock(e, session, threshold_ms);
    }
    Ok(())
}
/// A batch decoded and admitted ([`admit_batch`]), each event with the
/// bytes to journal: `Batch.recorded` as the agent's buffer holds them
/// (the shipper's `raw_not_kept` note set in the merged view), or an
/// older agent's `Batch.events` encoded as received (before the
/// collector's additions).
pub(super) fn admit_incoming(
    batch: Batch,
    id: &PeerIdentity,
    group: &str,
    stream_id: &str,
    session_offset_ms: Option<i64>,
    threshold_ms: i64,
    now_ms: i64,
) -> Result<Vec<Incoming>, Status> {
    if !batch.events.is_empty() && !batch.recorded.is_empty() {
        return Err(Status::invalid_argument(
            "a batch carries either events or recorded events, not both",
        ));
    }
    let reencoded = batch.recorded.is_empty();
    let (mut events, mut raw) = (Vec::new(), Vec::new());
    if reencoded {
        raw = batch
            .events
            .iter()
            .map(|e| (e.encode_to_vec(), String::new()))
            .collect();
        events = batch.events;
    } else {
        for (n, r) in batch.recorded.into_iter().enumerate() {
            let mut e = Event::decode(r.event.as_slice()).map_err(|err| {
                Status::invalid_argument(format!(
                    "recorded event {n} of the batch does not decode as an Event: {err}"
                ))
            })?;
            if !r.raw_not_kept.is_empty()
                && let Some(Kind::Email(m)) = &mut e.kind
            {
                m.raw_not_kept.clone_from(&r.raw_not_kept);
            }
            events.push(e);
            raw.push((r.event, r.raw_not_kept));
        }
    }
    admit_batch(
        &mut events,
        id,
        stream_id,
        session_offset_ms,
        threshold_ms,
        now_ms,
    )?;
    for e in &mut events {
        group.clone_into(&mut e.agent_group);
    }
    Ok(events
        .into_iter()
        .zip(raw)
        .map(|(event, (recorded, raw_not_kept))| Incoming {
            event,
            recorded,
            raw_not_kept,
            reencoded,
        })
        .collect())
}
