//! Notifications: the [`Event`]s a run raises (`success`, `failure`, `warning`, `missing_media`, `low_disk`, `overdue`)
//! and the sinks configured under `notifications` that hear them ([`sinks`]: a desktop notification, a command, an
//! HTTP POST).
//!
//! Only the kinds listed in `notifications.events` are sent. Every sink gets every event, one after the other. A sink
//! that fails is reported as a [`Delivery`] with the error (the caller logs it); it never changes a run's exit code.

pub mod event;
pub mod sinks;

pub use event::{Delivery, Event, Outcome, kind_word};

use crate::config::Notifications;

/// The events `config` lets through, in their order.
pub fn wanted<'a>(config: &Notifications, events: &'a [Event]) -> Vec<&'a Event> {
    events
        .iter()
        .filter(|e| config.events.contains(&e.kind))
        .collect()
}

/// Sends every wanted event to every configured sink; returns what happened (failures included, never an error).
pub fn send(config: &Notifications, events: &[Event]) -> Vec<Delivery> {
    let wanted = wanted(config, events);
    if wanted.is_empty() {
        return Vec::new();
    }
    let sinks = sinks::configured(config, &sinks::Env::from_process());
    let mut out = Vec::new();
    for event in wanted {
        for sink in &sinks {
            out.push(sink.deliver(event));
        }
    }
    out
}

#[cfg(test)]
mod tests;
