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
    deliver_all(&sinks, &wanted, sinks::Sink::limit)
}

/// Gives each event to each sink, in order, each delivery within `limit(sink)`. A sink that used its whole limit and
/// failed (a hung receiver) is not tried for the run's later events, so it delays a run by one limit, not one per
/// event.
pub(crate) fn deliver_all(
    sinks: &[sinks::Sink],
    events: &[&Event],
    limit: impl Fn(&sinks::Sink) -> std::time::Duration,
) -> Vec<Delivery> {
    let mut hung: Vec<Option<String>> = vec![None; sinks.len()];
    let mut out = Vec::new();
    for event in events {
        for (sink, hung) in sinks.iter().zip(hung.iter_mut()) {
            if let Some(why) = hung {
                out.push(Delivery {
                    event: event.kind,
                    sink: sink.name().into(),
                    outcome: Outcome::Failed,
                    message: Some(why.clone()),
                });
                continue;
            }
            let limit = limit(sink);
            let started = std::time::Instant::now();
            let delivery = sink.deliver_within(event, limit);
            if delivery.outcome == Outcome::Failed && started.elapsed() >= limit {
                *hung = Some(format!(
                    "not tried: it used its whole {}s for the {} notification and failed",
                    limit.as_secs_f64(),
                    kind_word(event.kind)
                ));
            }
            out.push(delivery);
        }
    }
    out
}

#[cfg(test)]
mod tests;
