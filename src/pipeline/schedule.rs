//! The work queue: bounded, served in arrival order (`fifo`) or earliest
//! deadline first (`edf`), switchable at any moment, and rid of every event
//! the instant its deadline passes while it waits.
//!
//! Owns: [`WorkQueue`] — every queued event indexed twice, by arrival and by
//! absolute deadline, under one lock. The order is only a choice of index at
//! the moment a worker takes an event, so switching the schedule moves
//! nothing: no event is lost, reordered twice or counted twice.
//!
//! Capacity rule: a full queue refuses the newcomer (`queue-full`), except
//! under `edf`, where of the newcomer and the queued event with the latest
//! deadline the later one is refused — tight work is never pushed out by
//! loose work. Ties refuse the newcomer.
//!
//! Threads: producers push (through `workers::Intake`), workers pop (blocking
//! on a condition variable), and the `expiry` thread sleeps until the
//! earliest queued deadline and takes out what has expired. Reads and writes
//! no channel itself; the expiry thread's caller sends the verdicts.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Instant;

use crossbeam_utils::Backoff;

use crate::config::Schedule;
use crate::pipeline::event::Event;

/// The bounded work queue shared by producers, workers and the expiry thread.
#[derive(Debug)]
pub struct WorkQueue {
    state: Mutex<State>,
    /// Workers wait here for an event.
    ready: Condvar,
    /// The expiry thread waits here for the earliest deadline, or a new one.
    expiry: Condvar,
    capacity: usize,
    /// Events queued, readable without the lock: an idle worker watches it
    /// for a moment before it sleeps (see [`WorkQueue::pop`]).
    queued: AtomicUsize,
}

#[derive(Debug, Default)]
struct State {
    next_arrival: u64,
    by_arrival: BTreeMap<u64, Event>,
    by_deadline: BTreeSet<(Instant, u64)>,
    /// No producer is left: once empty, workers and the expiry thread end.
    closed: bool,
    /// When the expiry thread means to wake; `None` while it waits for any
    /// event (or is busy), so that a push knows whether to wake it sooner.
    expiry_wake: Option<Instant>,
    /// Workers asleep on `ready`: a push makes the wake-up system call only
    /// when there is someone to wake.
    sleeping_workers: usize,
}

/// What [`WorkQueue::push`] did with a newcomer.
#[derive(Debug)]
pub enum Pushed {
    /// Queued.
    Queued,
    /// The queue was full and the newcomer is refused (returned).
    Refused(Event),
    /// The newcomer is queued; this queued event, due later, made room (`edf` only).
    Evicted(Event),
}

impl WorkQueue {
    /// An empty queue holding at most `capacity` events.
    pub fn new(capacity: usize) -> Self {
        WorkQueue {
            state: Mutex::new(State::default()),
            ready: Condvar::new(),
            expiry: Condvar::new(),
            capacity: capacity.max(1),
            queued: AtomicUsize::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding it, but a poisoned lock must not stop the queue.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Offers `event` under `schedule`'s capacity rule; never waits for room.
    pub fn push(&self, event: Event, schedule: Schedule) -> Pushed {
        let mut state = self.lock();
        let deadline_at = event.deadline_at();
        let mut evicted = None;
        if state.by_arrival.len() >= self.capacity {
            let latest = state.by_deadline.last().copied();
            match latest {
                Some((latest_at, arrival))
                    if schedule == Schedule::Edf && deadline_at < latest_at =>
                {
                    state.by_deadline.remove(&(latest_at, arrival));
                    evicted = state.by_arrival.remove(&arrival);
                }
                _ => return Pushed::Refused(event),
            }
        }
        let arrival = state.next_arrival;
        state.next_arrival += 1;
        state.by_deadline.insert((deadline_at, arrival));
        state.by_arrival.insert(arrival, event);
        self.queued.store(state.by_arrival.len(), Ordering::Release);
        if state.expiry_wake.is_none_or(|wake| deadline_at < wake) {
            self.expiry.notify_one();
        }
        let someone_asleep = state.sleeping_workers > 0;
        drop(state);
        if someone_asleep {
            self.ready.notify_one();
        }
        match evicted {
            Some(event) => Pushed::Evicted(event),
            None => Pushed::Queued,
        }
    }

    /// Takes the next event in the order `schedule` names when it is taken,
    /// waiting for one; `None` once the queue is closed and empty.
    ///
    /// A worker that finds the queue empty watches its count for a moment
    /// (spinning, then yielding) before it goes to sleep: at hundreds of
    /// thousands of events a second the next one comes within microseconds,
    /// and a sleep and wake-up per event cost more than the event.
    pub fn pop(&self, schedule: impl Fn() -> Schedule) -> Option<Event> {
        let backoff = Backoff::new();
        loop {
            let mut state = self.lock();
            if let Some(event) = self.take_next(&mut state, &schedule) {
                return Some(event);
            }
            if state.closed {
                return None;
            }
            if backoff.is_completed() {
                state.sleeping_workers += 1;
                let mut state = self.ready.wait(state).unwrap_or_else(|e| e.into_inner());
                state.sleeping_workers -= 1;
                drop(state);
                backoff.reset();
                continue;
            }
            drop(state);
            while self.queued.load(Ordering::Acquire) == 0 && !backoff.is_completed() {
                backoff.snooze();
            }
        }
    }

    fn take_next(&self, state: &mut State, schedule: &impl Fn() -> Schedule) -> Option<Event> {
        let (deadline_at, arrival) = match schedule() {
            Schedule::Fifo => state
                .by_arrival
                .first_key_value()
                .map(|(a, e)| (e.deadline_at(), *a))?,
            Schedule::Edf => state.by_deadline.first().copied()?,
        };
        state.by_deadline.remove(&(deadline_at, arrival));
        let event = state.by_arrival.remove(&arrival);
        self.queued.store(state.by_arrival.len(), Ordering::Release);
        if state.closed && state.by_arrival.is_empty() {
            // The expiry thread sleeps until the earliest deadline, which may
            // be a minute away: the last event taken at shutdown ends it now,
            // so the drain finishes and the final snapshot goes out.
            self.expiry.notify_all();
        }
        event
    }

    /// Waits until some queued event's deadline has passed; `false` once the
    /// queue is closed and empty. The expired events stay queued until
    /// [`WorkQueue::take_expired`], so the caller can take them out in the
    /// same critical section as it judges them.
    pub fn wait_until_expired(&self) -> bool {
        let mut state = self.lock();
        loop {
            let now = Instant::now();
            if state.by_deadline.first().is_some_and(|(at, _)| *at <= now) {
                state.expiry_wake = None;
                return true;
            }
            if state.closed && state.by_arrival.is_empty() {
                return false;
            }
            let earliest = state.by_deadline.first().map(|(at, _)| *at);
            state.expiry_wake = earliest;
            state = match earliest {
                Some(at) => {
                    self.expiry
                        .wait_timeout(state, at.saturating_duration_since(now))
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
                None => self.expiry.wait(state).unwrap_or_else(|e| e.into_inner()),
            };
        }
    }

    /// Takes out every event due at or before `now`, earliest first (none if
    /// workers took them meanwhile).
    pub fn take_expired(&self, now: Instant) -> Vec<Event> {
        let mut state = self.lock();
        let expired = state.take_due(now);
        self.queued.store(state.by_arrival.len(), Ordering::Release);
        expired
    }

    /// No more events will come: workers and the expiry thread end once it is empty.
    pub fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_all();
        self.expiry.notify_all();
    }

    /// Events waiting now.
    pub fn len(&self) -> usize {
        self.lock().by_arrival.len()
    }

    /// Most events it holds.
    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

impl State {
    /// Removes the events due at or before `now` (their time left is zero:
    /// what admission calls expired), earliest first.
    fn take_due(&mut self, now: Instant) -> Vec<Event> {
        let mut due = Vec::new();
        while let Some(&(at, arrival)) = self.by_deadline.first() {
            if at > now {
                break;
            }
            self.by_deadline.remove(&(at, arrival));
            due.extend(self.by_arrival.remove(&arrival));
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn event(created: Instant, deadline_ms: u64, id: &str) -> Event {
        let mut e = Event::generated(created, Duration::from_millis(deadline_ms));
        e.id = id.into();
        e
    }

    fn ids(queue: &WorkQueue, schedule: Schedule) -> Vec<String> {
        queue.close();
        std::iter::from_fn(|| queue.pop(|| schedule))
            .map(|e| e.id)
            .collect()
    }

    #[test]
    fn fifo_serves_by_arrival_and_edf_by_deadline() {
        let now = Instant::now();
        for (schedule, expected) in [
            (Schedule::Fifo, ["loose", "looser", "tight"]),
            (Schedule::Edf, ["tight", "loose", "looser"]),
        ] {
            let queue = WorkQueue::new(8);
            for (ms, id) in [(500, "loose"), (900, "looser"), (20, "tight")] {
                assert!(matches!(
                    queue.push(event(now, ms, id), schedule),
                    Pushed::Queued
                ));
            }
            assert_eq!(ids(&queue, schedule), expected);
        }
    }

    #[test]
    fn a_full_edf_queue_refuses_whichever_is_due_latest() {
        let now = Instant::now();
        let queue = WorkQueue::new(2);
        queue.push(event(now, 500, "a"), Schedule::Edf);
        queue.push(event(now, 900, "b"), Schedule::Edf);
        match queue.push(event(now, 20, "tight"), Schedule::Edf) {
            Pushed::Evicted(e) => assert_eq!(e.id, "b"),
            other => panic!("{other:?}"),
        }
        match queue.push(event(now, 950, "loose"), Schedule::Edf) {
            Pushed::Refused(e) => assert_eq!(e.id, "loose"),
            other => panic!("{other:?}"),
        }
        // A tie refuses the newcomer; fifo always refuses the newcomer.
        assert!(matches!(
            queue.push(event(now, 500, "tie"), Schedule::Edf),
            Pushed::Refused(_)
        ));
        assert!(matches!(
            queue.push(event(now, 1, "fifo"), Schedule::Fifo),
            Pushed::Refused(_)
        ));
        assert_eq!(ids(&queue, Schedule::Edf), ["tight", "a"]);
    }

    #[test]
    fn switching_the_schedule_moves_nothing_and_loses_nothing() {
        let now = Instant::now();
        let queue = WorkQueue::new(8);
        for (ms, id) in [(300, "a"), (100, "b"), (200, "c"), (50, "d")] {
            queue.push(event(now, ms, id), Schedule::Fifo);
        }
        assert_eq!(
            queue.pop(|| Schedule::Fifo).map(|e| e.id).as_deref(),
            Some("a")
        );
        assert_eq!(
            queue.pop(|| Schedule::Edf).map(|e| e.id).as_deref(),
            Some("d")
        );
        assert_eq!(queue.len(), 2);
        assert_eq!(ids(&queue, Schedule::Fifo), ["b", "c"]);
    }

    #[test]
    fn expired_events_are_taken_out_at_their_deadline_and_the_rest_stay() {
        let now = Instant::now();
        let queue = WorkQueue::new(8);
        queue.push(event(now, 30, "soon"), Schedule::Fifo);
        queue.push(event(now, 60_000, "later"), Schedule::Fifo);
        assert!(queue.wait_until_expired(), "one expires");
        let expired = queue.take_expired(Instant::now());
        assert!(Instant::now() >= now + Duration::from_millis(30));
        assert_eq!(
            expired.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(),
            ["soon"]
        );
        assert_eq!(queue.len(), 1);
        queue.close();
        assert!(queue.pop(|| Schedule::Fifo).is_some());
        assert!(!queue.wait_until_expired(), "closed and empty");
    }
}
