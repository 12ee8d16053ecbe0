//! The fixed words of the event model that more than one crate checks:
//! file operations (recorded by the agent, filtered on by the collector and
//! the CLI) and the tag namespaces (which tags an agent may set, which only
//! the collector sets).
//!
//! Tags are how the collector marks events for investigators (`alert:<rule>`
//! from the alert rules, `clock-skew` for a host whose clock is off), so an
//! agent must not be able to forge them: a compromised or buggy agent that
//! stamps `alert:usb-copy` on its own events would otherwise appear in
//! `kiroku search --alert usb-copy`. An agent may set the tags in
//! [`AGENT_TAGS`]; any other tag it sends is kept (nothing an agent sends is
//! dropped) but moved into the `agent:` namespace, which the collector never
//! uses for its own tags.

use std::borrow::Cow;

// Issue 21: network and P2P records.
pub mod network;

/// The names of file operations (`FileEvent.operation`), written once:
/// the agent records them, the collector and the CLI match on them (they
/// are `&str` constants so they serve as `match` patterns too).
pub mod file_op {
    pub const CREATE: &str = "create";
    pub const MODIFY: &str = "modify";
    pub const DELETE: &str = "delete";
    pub const RENAME: &str = "rename";
    pub const COPY_TO_REMOVABLE: &str = "copy_to_removable";
    pub const OVERFLOW: &str = "overflow";
    pub const WATCH_LOST: &str = "watch_lost";
    pub const WATCH_RESTORED: &str = "watch_restored";
    pub const VOLUME_MOUNTED: &str = "volume_mounted";
    pub const VOLUME_UNMOUNTED: &str = "volume_unmounted";
}

/// Every `FileEvent.operation` an agent records.
pub const FILE_OPERATIONS: [&str; 10] = [
    file_op::CREATE,
    file_op::MODIFY,
    file_op::DELETE,
    file_op::RENAME,
    file_op::COPY_TO_REMOVABLE,
    file_op::OVERFLOW,
    file_op::WATCH_LOST,
    file_op::WATCH_RESTORED,
    file_op::VOLUME_MOUNTED,
    file_op::VOLUME_UNMOUNTED,
];

/// True when `op` is one of [`FILE_OPERATIONS`].
pub fn is_file_operation(op: &str) -> bool {
    FILE_OPERATIONS.contains(&op)
}

/// `op` as a search names it (trimmed, lower case) when it is one of
/// [`FILE_OPERATIONS`]; otherwise a message naming it and the valid ones.
pub fn file_operation(op: &str) -> Result<String, String> {
    let op = op.trim().to_lowercase();
    if is_file_operation(&op) {
        Ok(op)
    } else {
        Err(format!(
            "unknown file operation {}: use one of {}",
            crate::quote::quote(&op),
            FILE_OPERATIONS.join(", ")
        ))
    }
}

/// Relay incident kinds (`IncidentEvent.kind`, issue 20): the agent
/// records them (`capture/smtp/incidents.rs` names each once, and its test
/// checks it against this list), the collector and the CLI filter on them
/// (`--incident`). Upstream kinds are keyed by the upstream, client kinds
/// by the client's address.
pub const INCIDENT_KINDS: [&str; 10] = [
    "upstream_unreachable",
    "upstream_refused",
    "upstream_tls",
    "upstream_starttls_absent",
    "upstream_timeout",
    "upstream_lost",
    "client_timeout",
    "client_gone_before_mail",
    "client_too_many_errors",
    "client_tls",
];

/// The states of an incident's records (`IncidentEvent.state`), which
/// `--outcome` filters on for incidents.
pub const INCIDENT_STATES: [&str; 3] = ["open", "still_open", "closed"];

/// `kind` as a search names it (trimmed, lower case) when it is one of
/// [`INCIDENT_KINDS`]; otherwise a message naming it and the valid ones.
pub fn incident_kind(kind: &str) -> Result<String, String> {
    let k = kind.trim().to_lowercase();
    if INCIDENT_KINDS.contains(&k.as_str()) {
        Ok(k)
    } else {
        Err(format!(
            "unknown incident kind {}: use one of {}",
            crate::quote::quote(&k),
            INCIDENT_KINDS.join(", ")
        ))
    }
}

/// The agent tagged a mail whose bare CR/LF line endings it normalised to
/// CRLF before relaying (`smtp.bare_line_endings = "normalise"`).
pub const NORMALISED_LINE_ENDINGS: &str = "normalised-line-endings";

/// The agent repaired something to read the mail (damaged base64, a bad
/// header line in a part, ...): `EmailEvent.decode_warnings` lists what.
pub const MIME_REPAIRED: &str = "mime-repaired";

/// An attachment was given more than one distinct name (RFC 2231 and
/// plain, Content-Type and Content-Disposition): `Attachment.name_candidates`
/// lists them.
pub const ATTACHMENT_NAME_MISMATCH: &str = "attachment-name-mismatch";

/// The tags an agent may set on its events, stored as sent.
pub const AGENT_TAGS: [&str; 3] = [
    NORMALISED_LINE_ENDINGS,
    MIME_REPAIRED,
    ATTACHMENT_NAME_MISMATCH,
];

/// Prefix of every tag an agent sent that is not in [`AGENT_TAGS`]; the
/// collector never sets a tag of its own in it.
pub const AGENT_TAG_PREFIX: &str = "agent:";

/// The tag the collector stores for `tag` as an agent sent it: an allowed
/// agent tag or one already in the agent namespace unchanged, anything
/// else (`alert:usb-copy`, `clock-skew`, `urgent`) prefixed with `agent:`.
pub fn agent_tag(tag: &str) -> Cow<'_, str> {
    if AGENT_TAGS.contains(&tag) || tag.starts_with(AGENT_TAG_PREFIX) {
        Cow::Borrowed(tag)
    } else {
        Cow::Owned(format!("{AGENT_TAG_PREFIX}{tag}"))
    }
}

/// Moves every tag an agent may not set into the agent namespace, in place
/// (order kept). Returns how many were moved.
pub fn confine_agent_tags(tags: &mut [String]) -> usize {
    let mut moved = 0;
    for t in tags.iter_mut() {
        if let Cow::Owned(confined) = agent_tag(t) {
            *t = confined;
            moved += 1;
        }
    }
    moved
}

/// What `kiroku stats` (the collector's Aggregate call) counts by, as
/// requests and the CLI spell it: a value of the events, or a time bucket
/// ([`STATS_TIME_BUCKETS`]).
pub const STATS_GROUP_BYS: [&str; 18] = [
    "user",
    "sender",
    "sender-domain",
    "recipient-domain",
    "host",
    "client-ip",
    "outcome",
    "reply-code",
    "attachment-name",
    "attachment-sha256",
    "kind",
    // Issue 21: network records (bytes: their deltas summed).
    "process",
    "remote-ip",
    "port",
    "hour",
    "day",
    "hour-of-day",
    "weekday",
];

/// The groupings of [`STATS_GROUP_BYS`] cut in a time zone.
pub const STATS_TIME_BUCKETS: [&str; 4] = ["hour", "day", "hour-of-day", "weekday"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_tags_stay_and_everything_else_is_confined() {
        for (sent, stored) in [
            ("normalised-line-endings", "normalised-line-endings"),
            ("alert:usb-copy", "agent:alert:usb-copy"),
            ("alert:", "agent:alert:"),
            ("clock-skew", "agent:clock-skew"),
            ("agent:mine", "agent:mine"),
            ("", "agent:"),
            ("Normalised-Line-Endings", "agent:Normalised-Line-Endings"),
        ] {
            assert_eq!(agent_tag(sent), stored, "{sent:?}");
        }
        let mut tags = vec!["clock-skew".to_owned(), NORMALISED_LINE_ENDINGS.to_owned()];
        assert_eq!(confine_agent_tags(&mut tags), 1);
        assert_eq!(tags, ["agent:clock-skew", NORMALISED_LINE_ENDINGS]);
    }

    #[test]
    fn file_operations() {
        assert!(is_file_operation("copy_to_removable"));
        assert!(!is_file_operation("bogus"));
        assert!(!is_file_operation("Create"));
    }
}

/// Issue 20: the outcome of an AUTH attempt (`AuthEvent.success`) as
/// searched (`--outcome failed|succeeded`), counted and shown.
pub mod auth_outcome {
    pub const SUCCEEDED: &str = "succeeded";
    pub const FAILED: &str = "failed";

    pub fn name(success: bool) -> &'static str {
        if success { SUCCEEDED } else { FAILED }
    }
}
