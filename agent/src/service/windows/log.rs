//! The service's logging: the same `tracing` events as the console agent,
//! to a daily file under `%ProgramData%\Kiroku\logs` (tracing-appender,
//! 14 files kept) and, for errors, to the Windows event log too, where
//! administrators and their monitoring look first.

use std::fmt::Write as _;
use std::path::Path;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use super::eventlog;

/// The log files' names: `kiroku-agent.<YYYY-MM-DD>.log`.
const LOG_PREFIX: &str = "kiroku-agent";
const LOG_SUFFIX: &str = "log";
/// Daily log files kept.
const LOG_FILES_KEPT: usize = 14;

/// Installs the service's subscriber; `RUST_LOG` overrides `info`. A log
/// directory that cannot be written leaves the event log only (said there).
pub fn init(dir: &Path) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let file = tracing_appender::rolling::Builder::new()
        .rotation(tracing_appender::rolling::Rotation::DAILY)
        .filename_prefix(LOG_PREFIX)
        .filename_suffix(LOG_SUFFIX)
        .max_log_files(LOG_FILES_KEPT)
        .build(dir);
    let file = match file {
        Ok(f) => Some(
            tracing_subscriber::fmt::layer()
                .with_writer(f)
                .with_ansi(false)
                .with_target(false),
        ),
        Err(e) => {
            eventlog::report(
                eventlog::Level::Warning,
                &format!(
                    "cannot write the log files in {}: {e}; errors go to this event log only",
                    dir.display()
                ),
            );
            None
        }
    };
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(file)
        .with(EventLogLayer)
        .try_init();
}

/// Sends ERROR events to the event log as `message (field=value, …)`.
struct EventLogLayer;

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for EventLogLayer {
    fn on_event(
        &self,
        event: &tracing::Event<'_>,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        if *event.metadata().level() != tracing::Level::ERROR {
            return;
        }
        let mut text = Text::default();
        event.record(&mut text);
        eventlog::report(eventlog::Level::Error, &text.finish());
    }
}

/// An event's message and fields as one line.
#[derive(Default)]
struct Text {
    message: String,
    fields: String,
}

impl Text {
    fn finish(self) -> String {
        if self.fields.is_empty() {
            self.message
        } else {
            format!("{} ({})", self.message, self.fields)
        }
    }
}

impl tracing::field::Visit for Text {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            if !self.fields.is_empty() {
                self.fields.push_str(", ");
            }
            let _ = write!(self.fields, "{}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            if !self.fields.is_empty() {
                self.fields.push_str(", ");
            }
            let _ = write!(self.fields, "{}={value}", field.name());
        }
    }
}
