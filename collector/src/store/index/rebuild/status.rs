//! Where a rebuild stands, as `kiroku hosts`, `ListHosts` and the log
//! show it.

/// What a rebuild is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RebuildState {
    Rebuilding,
    /// Waiting for free space above the reserve.
    PausedForSpace,
    Done,
    /// A batch or the switch failed; it is tried again.
    Failed,
}

impl RebuildState {
    pub fn name(self) -> &'static str {
        match self {
            RebuildState::Rebuilding => "rebuilding",
            RebuildState::PausedForSpace => "paused for disk space",
            RebuildState::Done => "done",
            RebuildState::Failed => "failed",
        }
    }
}

/// Where a rebuild stands (`kiroku hosts`, `ListHosts`, the log).
#[derive(Clone, Debug, PartialEq)]
pub struct RebuildStatus {
    pub state: RebuildState,
    /// Events re-indexed from the journal, and about how many there are
    /// (the old index's count).
    pub events_done: u64,
    pub events_total: u64,
    /// Of the journal read, 0–100.
    pub percent: f64,
    pub events_per_second: f64,
    pub from_version: u32,
    pub to_version: u32,
    /// Why it is paused or what failed; empty otherwise.
    pub reason: String,
}

impl RebuildStatus {
    /// One line for people.
    pub fn describe(&self) -> String {
        let head = format!(
            "index rebuild for schema version {} (from {}): {}, {} of about {} events ({:.0}%)",
            self.to_version,
            self.from_version,
            self.state.name(),
            self.events_done,
            self.events_total.max(self.events_done),
            self.percent
        );
        let tail = match self.state {
            RebuildState::Rebuilding => format!(
                ", {:.0} events/s; queries are answered from the previous index meanwhile (new events appear in searches once it is done)",
                self.events_per_second
            ),
            RebuildState::Done => "; queries use the new index".into(),
            RebuildState::PausedForSpace | RebuildState::Failed => format!(": {}", self.reason),
        };
        head + &tail
    }
}
