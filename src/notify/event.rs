//! What notifications are made of: an [`Event`] a run raises, the config's word for its kind ([`kind_word`]), and what
//! became of it at one sink ([`Delivery`], [`Outcome`]). The sinks ([`super::sinks`]) and the sending
//! ([`super::send`]) build on these.

use chrono::{DateTime, FixedOffset};
use serde::{Deserialize, Serialize};

use crate::config::EventKind;

/// One thing worth telling the user about. Sent as JSON to commands (on stdin) and described in words elsewhere.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub kind: EventKind,
    /// One line: `dbackup backup on workstation: the T9 drive is not present`.
    pub summary: String,
    /// Lines with the specifics (which sets, which drive, why).
    pub details: String,
    pub host: String,
    pub time: DateTime<FixedOffset>,
    /// The command that raised it (`backup`).
    pub command: String,
    /// The run's exit code, for `success`, `warning` and `failure`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit: Option<u8>,
    pub dbackup_version: String,
}

impl Event {
    pub fn new(
        kind: EventKind,
        command: &str,
        summary: impl Into<String>,
        details: impl Into<String>,
        time: DateTime<FixedOffset>,
    ) -> Event {
        Event {
            kind,
            summary: summary.into(),
            details: details.into(),
            host: crate::media::hostname(),
            time,
            command: command.to_string(),
            exit: None,
            dbackup_version: env!("CARGO_PKG_VERSION").to_string(),
        }
    }

    pub fn with_exit(mut self, exit: u8) -> Event {
        self.exit = Some(exit);
        self
    }
}

/// The config's spelling of an event kind (`missing_media`).
pub fn kind_word(kind: EventKind) -> &'static str {
    match kind {
        EventKind::Success => "success",
        EventKind::Failure => "failure",
        EventKind::Warning => "warning",
        EventKind::MissingMedia => "missing_media",
        EventKind::LowDisk => "low_disk",
        EventKind::Overdue => "overdue",
    }
}

/// What happened when one event was given to one sink.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    pub event: EventKind,
    /// `desktop`, `command` or `http`.
    pub sink: String,
    pub outcome: Outcome,
    /// Why it failed or was skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Sent,
    /// The sink cannot work here (no desktop session): not an error.
    Skipped,
    Failed,
}
