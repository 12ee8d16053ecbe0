//! Exim 4.9x mainlog lines into [`MtaLogEvent`] fields (pure function).

use kiroku_proto::MtaLogEvent;

use super::header::Clock;

/// Parses one mainlog line (without its newline). Never fails: an
/// unparsed line comes back with `parsed = false` and only `line` set.
pub fn parse(line: &str, _clock: &Clock) -> MtaLogEvent {
    MtaLogEvent {
        mta: "exim".into(),
        line: line.to_owned(),
        ..Default::default()
    }
}
