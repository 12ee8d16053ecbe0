//! The per-mail budget (`max_event_*`): wall time and bytes gone through
//! by all of a mail's attachments together, and what is left of it for
//! the next archive listing or reader.

use super::{Run, archive};

impl Run<'_> {
    /// Why the event's budget allows no more work, if it does not (a time
    /// bound marks the annotations for `reanalyse`).
    pub(super) fn over_budget(&mut self) -> Option<String> {
        let l = self.limits;
        if self.started.elapsed().as_millis() >= u128::from(l.max_event_millis) {
            self.out.retry = true;
            return Some(format!(
                "time: {} ms spent on this mail (analysis.max_event_millis)",
                l.max_event_millis
            ));
        }
        if self.expanded >= l.max_event_expanded_bytes {
            return Some(format!(
                "{} bytes of files and archive members gone through in this mail (analysis.max_event_expanded_bytes)",
                l.max_event_expanded_bytes
            ));
        }
        None
    }

    /// Milliseconds left of the event's time budget.
    pub(super) fn millis_left(&self) -> u64 {
        let spent = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.limits.max_event_millis.saturating_sub(spent)
    }

    /// The archive limits for the next listing: the configured ones,
    /// lowered to what is left of the event's budget (time, bytes); true
    /// when lowered.
    pub(super) fn archive_limits(&self) -> (archive::ArchiveLimits, bool) {
        let mut l = self.limits.archive.clone();
        let bytes_left = self
            .limits
            .max_event_expanded_bytes
            .saturating_sub(self.expanded);
        let millis_left = self.millis_left().max(1);
        let capped = bytes_left < l.max_expanded_bytes || millis_left < l.max_millis;
        l.max_expanded_bytes = l.max_expanded_bytes.min(bytes_left);
        l.max_millis = l.max_millis.min(millis_left);
        (l, capped)
    }
}
