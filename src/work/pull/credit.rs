//! The credit pool: which remote worker may take a task now, and the
//! [`Credit`] a worker thread offers its task on.
//!
//! Owns: one seat per remote that takes tasks, with the credit it has free
//! (its credit less its tasks unanswered), and whose turn is next; taking
//! credit ([`RemoteWorkers::acquire`]), giving it back, and unseating a
//! remote that takes no more tasks; offering a task on credit
//! ([`Credit::offer`]) and the [`Handover`] its answer comes through.
//!
//! Threads and channels: worker threads take credit, waiting on the pool's
//! condition variable until some remote has room or the event's deadline,
//! and offer their task on it; a remote's reader gives a unit back per
//! answer; a remote's connection seats it, and whoever sees it stop taking
//! tasks (its reader, a worker thread whose write failed, `pull-flush`)
//! unseats it. Each task gets a one-slot answer channel here: the remote's
//! reader (or `pull-flush`) writes it, the worker thread that offered the
//! task waits on it until the deadline ([`Handover::answer`]). The pool takes
//! no other lock.
//!
//! Must not know: the WebSocket protocol (a task frame is bytes from
//! `outbox`), epoll, or why a remote stopped taking tasks.

use std::sync::atomic::Ordering;
use std::sync::{Arc, MutexGuard};
use std::time::Instant;

use crossbeam_channel::Receiver;

use super::RemoteWorkers;
use super::outbox::task_frame;
use super::remote::Remote;
use crate::work::Answer;

/// The seated remotes and the credit each has free.
#[derive(Default)]
pub(super) struct Pool {
    pub(super) seats: Vec<Seat>,
    /// Where the next search for room starts: remotes take turns.
    next: usize,
}

pub(super) struct Seat {
    pub(super) remote: Arc<Remote>,
    /// Tasks the remote may take now: its credit less its tasks unanswered.
    pub(super) free: usize,
}

/// Leave to send one task to one remote worker, taken from the pool.
pub struct Credit {
    remote: Arc<Remote>,
}

/// What came of offering a task to the remote of a [`Credit`].
pub enum Offer {
    /// The remote has the task, or its frame is under way.
    Taken(Handover),
    /// Nothing was written and nothing is owed: the remote's socket is still
    /// taking an earlier frame (the credit is back in the pool, which offers
    /// this remote nothing until it catches up), or the remote takes no more
    /// tasks (it is closing, or went since the credit was taken). Take other
    /// credit.
    Elsewhere,
}

/// A task handed to a remote: where its answer will come.
pub struct Handover {
    answer_out: Receiver<Answer>,
}

impl RemoteWorkers {
    pub(super) fn lock_pool(&self) -> MutexGuard<'_, Pool> {
        self.pool.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until some connected worker may take a task, or `until`; `None`
    /// means no worker had room before then.
    pub fn acquire(&self, until: Instant) -> Option<Credit> {
        let mut pool = self.lock_pool();
        loop {
            // Looked at first after every wake-up, the deadline's included:
            // whoever wakes takes the room there is, so none is left unused
            // while a thread sleeps.
            if let Some(remote) = pool.take() {
                return Some(Credit { remote });
            }
            let left = until
                .checked_duration_since(Instant::now())
                .filter(|left| !left.is_zero())?;
            pool = self
                .room
                .wait_timeout(pool, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Gives one task's room back to `remote`, if it is still seated.
    pub(super) fn release(&self, remote: &Arc<Remote>) {
        let mut pool = self.lock_pool();
        if let Some(seat) = pool.seat_of(remote) {
            seat.free = (seat.free + 1).min(remote.credit);
            self.room.notify_one();
        }
    }

    /// Wakes every waiting worker thread: a remote came with room, or caught
    /// up with its socket. Under the pool lock, so that no thread is between
    /// looking for room and going to sleep.
    pub(super) fn wake_all(&self) {
        let _pool = self.lock_pool();
        self.room.notify_all();
    }

    /// Takes `remote` out of the pool and its credit out of the gauge, once.
    pub(super) fn unseat(&self, remote: &Arc<Remote>) {
        let mut pool = self.lock_pool();
        let before = pool.seats.len();
        pool.seats.retain(|seat| !Arc::ptr_eq(&seat.remote, remote));
        if pool.seats.len() < before {
            self.credit.fetch_sub(remote.credit, Ordering::Relaxed);
        }
    }

    /// Offers `remote` no more tasks: it is closing, failed or dropped. No
    /// task frame starts on it after this returns.
    pub(super) fn retire(&self, remote: &Arc<Remote>) {
        remote.stop_taking();
        self.unseat(remote);
    }
}

impl Pool {
    /// One task's room on the next remote, in turn, that has some and is
    /// neither closing nor behind.
    fn take(&mut self) -> Option<Arc<Remote>> {
        let n = self.seats.len();
        let k = (0..n)
            .map(|i| (self.next + i) % n)
            .find(|&k| self.seats[k].free > 0 && self.seats[k].remote.may_take())?;
        self.next = (k + 1) % n;
        let seat = &mut self.seats[k];
        seat.free -= 1;
        Some(Arc::clone(&seat.remote))
    }

    fn seat_of(&mut self, remote: &Arc<Remote>) -> Option<&mut Seat> {
        self.seats
            .iter_mut()
            .find(|seat| Arc::ptr_eq(&seat.remote, remote))
    }
}

impl Credit {
    /// Offers `task` (the text of a task message for `id`) to this credit's
    /// worker, writing what its socket takes now without waiting; what it
    /// does not take, `pull-flush` writes. A worker whose socket fails is
    /// disconnected and the task goes [`Offer::Elsewhere`].
    pub fn offer(self, remote_workers: &RemoteWorkers, id: &str, task: String) -> Offer {
        let remote = self.remote;
        let frame = task_frame(task);
        let mut outbox = remote.lock_outbox();
        // An earlier frame may have finished since the pool offered this
        // remote: write what is left of it first.
        match remote_workers.flush(&remote, &mut outbox) {
            Ok(true) => {}
            Ok(false) => {
                drop(outbox);
                remote_workers.release(&remote);
                return Offer::Elsewhere;
            }
            Err(e) => {
                drop(outbox);
                log::debug!("{}: socket failed: {e}", remote.name);
                remote_workers.retire(&remote);
                remote.shut_down();
                return Offer::Elsewhere;
            }
        }
        let (answer_in, answer_out) = crossbeam_channel::bounded(1);
        // Registered before the first byte goes, so that no answer can come
        // before its task is known; refused once the remote takes no more.
        if !remote.expect(id, answer_in.clone(), &remote_workers.in_flight) {
            return Offer::Elsewhere;
        }
        let written = outbox
            .start(&remote.stream, &remote.behind, &frame)
            .and_then(|under_way| {
                if under_way {
                    outbox.task = Some((id.into(), answer_in.clone()));
                    remote_workers.watch(&remote)?;
                }
                Ok(())
            });
        match written {
            Ok(()) => Offer::Taken(Handover { answer_out }),
            Err(e) => {
                drop(outbox);
                log::debug!("{}: task not written: {e}", remote.name);
                remote_workers.retire(&remote);
                // The reader thread sees the connection end and fails every
                // task but this one, which another worker may still take.
                remote.shut_down();
                remote.withdraw(id, &answer_in, &remote_workers.in_flight);
                Offer::Elsewhere
            }
        }
    }

    /// Returns unused leave to the pool.
    pub fn give_back(self, remote_workers: &RemoteWorkers) {
        remote_workers.release(&self.remote);
    }
}

impl Handover {
    /// Waits for the task's answer until `deadline_at`; [`Answer::TimedOut`]
    /// if none came by then, whether the worker is still working on the task
    /// or its socket is still taking the task's frame (the rest of the frame
    /// still goes, and a late answer returns the credit). A remote dropped
    /// for taking nothing of the frame for `--write-timeout` before the
    /// deadline answers `worker too slow`.
    pub fn answer(self, deadline_at: Instant) -> Answer {
        self.answer_out
            .recv_deadline(deadline_at)
            .unwrap_or(Answer::TimedOut)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::work::pull::testing::{MS, connected, eventually, task_text};

    #[test]
    fn a_task_for_a_worker_gone_since_its_credit_was_taken_goes_elsewhere() {
        let (remote_workers, peer) = connected(2, 5_000 * MS);
        let credit = remote_workers
            .acquire(Instant::now() + 100 * MS)
            .expect("room");
        drop(peer);
        assert!(eventually(5_000 * MS, || remote_workers.connected() == 0));
        assert!(matches!(
            credit.offer(&remote_workers, "t", task_text("t", 0)),
            Offer::Elsewhere
        ));
        assert_eq!(
            (remote_workers.in_flight(), remote_workers.credit()),
            (0, 0)
        );
    }
}
