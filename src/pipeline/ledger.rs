//! The conservation ledger: every event's entry and verdict, counted under
//! one lock, so any copy of the totals balances exactly
//! (`generated + ingested == judged + inFlight`).
//!
//! Owns: [`Ledger`] and the [`Totals`] it keeps. Written by the intake
//! (entries, queue-full), the workers and the expiry thread (verdicts); read
//! by the hub for each snapshot. Reads and writes no channel.
//!
//! Must not know: queues or threads (the caller passes what the queue did).

use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::pipeline::event::{DropReason, Source, Status};

/// Cumulative counts of events by entry and by verdict.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Totals {
    /// Events made by the generator.
    pub generated: u64,
    /// Events posted by producers.
    pub ingested: u64,
    /// Verdicts `on-time`.
    pub on_time: u64,
    /// Verdicts `late`.
    pub late: u64,
    /// Verdicts `failed`: the worker answered with an error.
    pub failed: u64,
    /// Verdicts `dropped`, by reason.
    pub dropped: Dropped,
    /// Events entered and not yet judged: in the work queue or being worked on.
    pub in_flight: u64,
}

/// Drop counts by reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Dropped {
    /// The work queue was full.
    pub queue_full: u64,
    /// The deadline had passed before work could start.
    pub expired: u64,
    /// The predicted work did not fit in the time left.
    pub infeasible: u64,
    /// The worker judging it panicked (see `faults`).
    pub panicked: u64,
}

impl Dropped {
    /// All drops together.
    pub fn total(&self) -> u64 {
        self.queue_full + self.expired + self.infeasible + self.panicked
    }
}

impl Totals {
    /// Events that entered the pipeline.
    pub fn entered(&self) -> u64 {
        self.generated + self.ingested
    }

    /// Events that have a verdict.
    pub fn judged(&self) -> u64 {
        self.on_time + self.late + self.failed + self.dropped.total()
    }

    /// Events worked on to an answer: on time, late or failed.
    pub fn worked(&self) -> u64 {
        self.on_time + self.late + self.failed
    }

    /// The conservation invariant: every event that entered is judged or in flight.
    pub fn balances(&self) -> bool {
        self.entered() == self.judged() + self.in_flight
    }

    fn count_entry(&mut self, source: Source) {
        match source {
            Source::Generator => self.generated += 1,
            Source::Ingest => self.ingested += 1,
        }
    }

    pub(crate) fn count_verdict(&mut self, status: Status) {
        match status {
            Status::OnTime => self.on_time += 1,
            Status::Late => self.late += 1,
            Status::Failed => self.failed += 1,
            Status::Dropped(DropReason::QueueFull) => self.dropped.queue_full += 1,
            Status::Dropped(DropReason::Expired) => self.dropped.expired += 1,
            Status::Dropped(DropReason::Infeasible) => self.dropped.infeasible += 1,
            Status::Dropped(DropReason::Panicked) => self.dropped.panicked += 1,
        }
    }
}

/// What the work queue did with an entering event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Door {
    /// Queued: now in flight.
    Queued,
    /// The queue was full: the newcomer is dropped `queue-full`.
    Refused,
    /// Queued, and a queued event due later dropped `queue-full` to make room (`edf`).
    QueuedInPlaceOfAnother,
}

/// The conservation ledger. Entry and verdict of each event are recorded under
/// one lock, so any copy taken with [`Ledger::totals`] balances exactly.
#[derive(Debug, Default)]
pub struct Ledger {
    totals: Mutex<Totals>,
}

impl Ledger {
    /// Records the entry of an event whose hand-off to the work queue is
    /// attempted by `enqueue` while the ledger is locked, and returns what
    /// `enqueue` said. A refused newcomer, or the queued event it displaced,
    /// is counted as `dropped/queue-full` in the same critical section, so
    /// `inFlight` never counts an event that left the queue unjudged.
    ///
    /// `enqueue` must not block: the ledger lock is held across it so that a
    /// worker cannot judge an event before its entry is counted.
    pub fn enter(&self, source: Source, enqueue: impl FnOnce() -> Door) -> Door {
        let mut totals = self.lock();
        totals.count_entry(source);
        let door = enqueue();
        match door {
            Door::Queued => totals.in_flight += 1,
            Door::Refused | Door::QueuedInPlaceOfAnother => {
                totals.count_verdict(Status::Dropped(DropReason::QueueFull));
            }
        }
        door
    }

    /// Records `status` for each event `take` returns, taking them while the
    /// ledger is locked (`take` must not block): a snapshot sees them either
    /// queued and in flight, or judged.
    pub fn judge_each<T>(&self, status: Status, take: impl FnOnce() -> Vec<T>) -> Vec<T> {
        let mut totals = self.lock();
        let taken = take();
        for _ in &taken {
            totals.in_flight = totals.in_flight.saturating_sub(1);
            totals.count_verdict(status);
        }
        taken
    }

    /// Records the verdict on an event that was in flight.
    pub fn judge(&self, status: Status) {
        let mut totals = self.lock();
        totals.in_flight = totals.in_flight.saturating_sub(1);
        totals.count_verdict(status);
    }

    /// A consistent copy of the counts.
    pub fn totals(&self) -> Totals {
        *self.lock()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Totals> {
        // Counting never panics while holding the lock, but a poisoned lock
        // must not stop the counting either.
        self.totals.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_and_verdicts_balance_at_every_step() {
        let ledger = Ledger::default();
        ledger.enter(Source::Generator, || Door::Queued);
        assert!(ledger.totals().balances());
        assert_eq!(ledger.totals().in_flight, 1);
        ledger.enter(Source::Ingest, || Door::Refused);
        let t = ledger.totals();
        assert!(t.balances());
        assert_eq!((t.ingested, t.dropped.queue_full, t.in_flight), (1, 1, 1));
        ledger.judge(Status::Late);
        let t = ledger.totals();
        assert!(t.balances());
        assert_eq!((t.late, t.in_flight), (1, 0));
        ledger.enter(Source::Ingest, || Door::Queued);
        ledger.judge(Status::Failed);
        let t = ledger.totals();
        assert!(t.balances());
        assert_eq!((t.failed, t.in_flight), (1, 0));
        // edf: the newcomer takes a queued event's place; one in flight still.
        ledger.enter(Source::Ingest, || Door::Queued);
        ledger.enter(Source::Ingest, || Door::QueuedInPlaceOfAnother);
        let t = ledger.totals();
        assert!(t.balances());
        assert_eq!((t.dropped.queue_full, t.in_flight), (2, 1));
        let taken = ledger.judge_each(Status::Dropped(DropReason::Expired), || vec![(); 1]);
        let t = ledger.totals();
        assert!(t.balances());
        assert_eq!((taken.len(), t.dropped.expired, t.in_flight), (1, 1, 0));
    }
}
