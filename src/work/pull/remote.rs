//! One remote worker: a program connected to `/api/work` that takes tasks.
//!
//! Owns: the [`Remote`] — its name (`pull-N`, also its reader thread's) and
//! number, whether it takes tasks and whether it is behind its socket, its
//! credit, its socket, its outbox (written as `outbox` says), its tasks sent
//! and not answered (each with the sending end of its one-slot answer
//! channel), why another thread than its reader dropped it, and its
//! connection slot.
//!
//! Threads and channels: a worker thread registers its task before the first
//! byte of it goes ([`Remote::expect`]) and takes it back if it could not go
//! ([`Remote::withdraw`]); the remote's reader writes each answer to its
//! task's channel ([`Remote::answered`]) and, when the remote goes, fails
//! every task left `worker gone` ([`Remote::close`]); `pull-flush` takes back
//! the task it fails `worker too slow`. Whether the remote takes tasks changes
//! under the lock tasks are registered under, so no task is counted in flight
//! after its remote failed its tasks.
//!
//! Must not know: the credit pool, epoll, or the WebSocket protocol.

use std::collections::{HashMap, VecDeque};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use crossbeam_channel::Sender;
use tiny_http::ConnectionSlot;

use super::outbox::Outbox;
use crate::work::Answer;

/// A connected worker.
pub(super) struct Remote {
    pub(super) name: String,
    /// Its key in the `RemoteWorkers`' `behind` map and epoll set.
    pub(super) number: u64,
    /// Whether it takes tasks: false once it sent Close or was sent one, its
    /// socket failed or it was dropped, and once it has gone. Changed under
    /// the pending lock, which a task is registered under (with the outbox
    /// lock held), so no task frame starts after it is false.
    open: AtomicBool,
    /// A frame is under way in the outbox: the pool offers this remote no
    /// task until the socket has taken it.
    pub(super) behind: AtomicBool,
    pub(super) credit: usize,
    /// The socket. The reader thread reads it; everyone writes it without
    /// blocking, under the outbox lock.
    pub(super) stream: TcpStream,
    outbox: Mutex<Outbox>,
    /// How long the socket may take nothing of a frame under way.
    pub(super) write_timeout: Duration,
    /// Tasks sent and not answered, by event id, oldest first: ids chosen by
    /// producers may repeat, and a worker answers them in any order.
    pending: Mutex<HashMap<Box<str>, VecDeque<Sender<Answer>>>>,
    /// Why it was dropped by another thread than its reader, for the
    /// reader's "disconnected" line.
    pub(super) dropped_for: OnceLock<String>,
    _held: Option<ConnectionSlot>,
}

impl Remote {
    /// Remote number `number` (named `pull-N`), taking tasks, with nothing
    /// under way or pending.
    pub(super) fn new(
        number: u64,
        credit: usize,
        stream: TcpStream,
        write_timeout: Duration,
        held: Option<ConnectionSlot>,
    ) -> Self {
        Remote {
            name: format!("pull-{number}"),
            number,
            open: AtomicBool::new(true),
            behind: AtomicBool::new(false),
            credit,
            stream,
            outbox: Mutex::new(Outbox::new()),
            write_timeout,
            pending: Mutex::new(HashMap::new()),
            dropped_for: OnceLock::new(),
            _held: held,
        }
    }

    fn is_open(&self) -> bool {
        self.open.load(Ordering::Relaxed)
    }

    /// Whether the pool may offer this remote a task.
    pub(super) fn may_take(&self) -> bool {
        self.is_open() && !self.behind.load(Ordering::Relaxed)
    }

    fn lock_pending(&self) -> MutexGuard<'_, HashMap<Box<str>, VecDeque<Sender<Answer>>>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn lock_outbox(&self) -> MutexGuard<'_, Outbox> {
        self.outbox.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Refuses every task from now on, under the lock tasks are registered
    /// under: a task registered before has its frame started before this
    /// returns or fails, since its writer holds the outbox lock throughout.
    pub(super) fn stop_taking(&self) {
        let _pending = self.lock_pending();
        self.open.store(false, Ordering::Relaxed);
    }

    /// Registers a task about to be sent and counts it in `in_flight`, under
    /// the lock [`Remote::close`] takes, so no task is counted after the remote
    /// has failed its tasks; `false` when the remote takes no more tasks.
    pub(super) fn expect(&self, id: &str, answer: Sender<Answer>, in_flight: &AtomicUsize) -> bool {
        let mut pending = self.lock_pending();
        if !self.is_open() {
            return false;
        }
        pending.entry(id.into()).or_default().push_back(answer);
        in_flight.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// Takes back the task registered with `answer`; `false` when it has
    /// been answered already (or failed by [`Remote::close`]).
    pub(super) fn withdraw(
        &self,
        id: &str,
        answer: &Sender<Answer>,
        in_flight: &AtomicUsize,
    ) -> bool {
        let mut pending = self.lock_pending();
        let Some(waiting) = pending.get_mut(id) else {
            return false;
        };
        let Some(at) = waiting.iter().position(|task| task.same_channel(answer)) else {
            return false;
        };
        waiting.remove(at);
        if waiting.is_empty() {
            pending.remove(id);
        }
        in_flight.fetch_sub(1, Ordering::Relaxed);
        true
    }

    /// Delivers an answer to the oldest task with `id`; `false` when none is pending.
    pub(super) fn answered(&self, id: &str, answer: Answer) -> bool {
        let mut pending = self.lock_pending();
        let Some(waiting) = pending.get_mut(id) else {
            return false;
        };
        let Some(task) = waiting.pop_front() else {
            return false;
        };
        if waiting.is_empty() {
            pending.remove(id);
        }
        // The worker thread may have given up at the deadline: then nobody listens.
        let _ = task.send(answer);
        true
    }

    pub(super) fn shut_down(&self) {
        let _ = self.stream.shutdown(Shutdown::Both);
    }

    /// Marks the remote gone and fails every task it held; returns how many.
    pub(super) fn close(&self) -> usize {
        let mut pending = self.lock_pending();
        self.open.store(false, Ordering::Relaxed);
        let mut failed = 0;
        for (_, tasks) in pending.drain() {
            for task in tasks {
                let _ = task.send(gone());
                failed += 1;
            }
        }
        drop(pending);
        self.shut_down();
        failed
    }
}

pub(super) fn gone() -> Answer {
    Answer::Failed("worker gone".into())
}
