//! `--work pull`: workers in any language connect to `GET /api/work` over
//! WebSocket and are handed admitted events as tasks, as many at once as the
//! credit they asked for (`?credit=N`).
//!
//! Owns: the [`RemoteWorkers`] (the credit pool, the counts of connected
//! workers, and the `pull-flush` thread that finishes frames under way) and
//! one [`Remote`] per connected worker: its socket, the frame its socket has
//! not taken all of yet, its tasks awaiting an answer, and its reader thread
//! (`pull-N`).
//!
//! Credit: each remote that takes tasks has a seat in the `RemoteWorkers`' pool
//! that counts the tasks it may take now. A worker thread takes one before it
//! sends a task, waiting on the pool's condition variable until some remote
//! has room; the reader gives one back for every task answered. A remote
//! leaves the pool as soon as it takes no more tasks (it sent Close or was
//! sent one, its socket failed, it was dropped) and at the latest when it
//! goes, so nothing of a gone remote waits there to be taken: its descriptor
//! and connection slot are freed when its reader ends, which takes it out of
//! `pull-flush`'s set too if a frame was still under way (so they are freed
//! even if that thread is gone).
//!
//! Channels: answer (one slot per task): the remote's reader thread writes
//! the answer (or `pull-flush` writes `worker too slow`); the worker thread
//! that sent the task waits on it until the deadline.
//!
//! Writing: every write of a task on a remote's socket is non-blocking, under
//! the remote's outbox lock, so that lock is only ever held while the kernel
//! copies what fits. A frame the socket cannot take whole waits in the outbox
//! and goes before any other; meanwhile the remote is *behind* and the pool
//! offers it no task. The rest is written by the `pull-flush` thread as the
//! socket takes it, whatever became of the task: a frame is never left torn,
//! since the worker could not read anything after it. No worker thread waits
//! on a socket: the one whose task is under way waits only for its answer,
//! until the deadline, as for any task. A remote whose socket takes nothing of
//! a frame under way for `--write-timeout` is dropped (its task under way
//! fails `worker too slow` if its deadline has not passed, the rest `worker
//! gone`); one that keeps reading, however slowly, is not.
//!
//! The reader's own frames (pongs, pings, close) never make it wait: written
//! at once when nothing is under way, otherwise kept in the outbox (one pong,
//! the latest, as RFC 6455 allows; one ping; one close) and written by
//! whoever finishes the frame ahead, usually `pull-flush`. A reader that
//! waited behind a large task frame would read no answer meanwhile, and an
//! answer sent in time would be judged `late`.
//!
//! Why so: a blocking write under the lock, even one bounded by the time
//! left, makes every thread with a task for that remote wait as long; a
//! try-lock would fail the tasks of a healthy remote that is merely taking a
//! large frame; a writer thread per remote would cost every connection a
//! thread, and a worker thread that finished its frame past the deadline would
//! be held by a slow reader for as long as it keeps reading. One thread over
//! an epoll set of the remotes that are behind costs nothing while none is.
//!
//! A remote that disconnects fails its tasks in flight at once (`worker gone`).
//! A task abandoned at its deadline still holds its credit until the remote
//! answers it: the remote is still busy with it.
//!
//! Must not know: admission, the ledger or verdicts: an answer is reported
//! as it came, and when, and the worker thread that sent the task judges it.
//!
//! Where each part lives: `credit` (the pool, and the
//! [`Credit`](credit::Credit) a worker thread offers its task on), `remote`
//! (one [`Remote`] and its tasks awaiting an answer), `outbox` (the frames a
//! socket has not taken all of, written without blocking), `reader` (a
//! remote's connection and its `pull-N` thread) and `flush` (the
//! `pull-flush` thread over the remotes behind).

mod credit;
mod flush;
mod outbox;
mod reader;
mod remote;
#[cfg(test)]
mod testing;

pub use credit::Offer;

use std::collections::HashMap;
use std::io;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;

use rustix::event::epoll;

use crate::ops::health::Heartbeats;
use credit::Pool;
use flush::{finish_frames, keep_watch};
use outbox::{Flushed, Outbox};
use remote::Remote;

/// Most tasks one worker may ask to hold at once.
pub const MAX_CREDIT: usize = 1024;

/// The pull-mode hub: who is connected and who may take a task.
pub struct RemoteWorkers {
    /// Which remote has room: one lock for every remote's free credit, so a
    /// remote's seat can be taken out the moment it stops taking tasks.
    pool: Mutex<Pool>,
    /// Signalled when credit comes free: a remote connects, answers, or
    /// catches up with its socket.
    room: Condvar,
    health: Arc<Heartbeats>,
    next_remote: AtomicU64,
    /// Workers connected; a mutex, so that the count and the readiness
    /// flag derived from it change together (connections are rare).
    connected: Mutex<usize>,
    credit: AtomicUsize,
    in_flight: AtomicUsize,
    /// The `pull-flush` thread's epoll set: the socket of every remote with
    /// a task frame under way, each armed for one wake-up when it has room.
    outgoing: OwnedFd,
    /// Those remotes, by number: held here until their frame is out or
    /// they are dropped.
    behind: Mutex<HashMap<u64, Arc<Remote>>>,
}

impl RemoteWorkers {
    /// Writes what `remote`'s socket takes now of its outbox; whether none is
    /// left. A remote that caught up is offered tasks again: the worker
    /// threads waiting for room are woken.
    fn flush(&self, remote: &Remote, outbox: &mut Outbox) -> io::Result<bool> {
        match outbox.flush(&remote.stream, &remote.behind)? {
            Flushed::Left => Ok(false),
            Flushed::Empty => Ok(true),
            Flushed::CaughtUp => {
                self.wake_all();
                Ok(true)
            }
        }
    }

    /// A `RemoteWorkers` with no worker connected (`health` hears when there is
    /// none), and its `pull-flush` thread, which ends within a second of the
    /// `RemoteWorkers`. Should that thread die, `health` hears that too.
    pub fn new(health: Arc<Heartbeats>) -> io::Result<Arc<Self>> {
        let remote_workers = Self::without_flusher(health)?;
        let flusher = Arc::downgrade(&remote_workers);
        let health = Arc::clone(&remote_workers.health);
        thread::Builder::new()
            .name("pull-flush".into())
            .spawn(move || keep_watch(&health, || finish_frames(&flusher)))?;
        Ok(remote_workers)
    }

    /// The `RemoteWorkers` alone, no thread finishing its frames.
    fn without_flusher(health: Arc<Heartbeats>) -> io::Result<Arc<Self>> {
        health.set_no_workers(true);
        Ok(Arc::new(RemoteWorkers {
            pool: Mutex::new(Pool::default()),
            room: Condvar::new(),
            health,
            next_remote: AtomicU64::new(1),
            connected: Mutex::new(0),
            credit: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            outgoing: epoll::create(epoll::CreateFlags::CLOEXEC)?,
            behind: Mutex::new(HashMap::new()),
        }))
    }

    /// Workers connected now.
    pub fn connected(&self) -> usize {
        *self.lock_connected()
    }

    fn lock_connected(&self) -> MutexGuard<'_, usize> {
        self.connected.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts a worker in (`+1`) or out (`-1`) and tells `health` whether any is left.
    fn count_connected(&self, in_or_out: isize) {
        let mut connected = self.lock_connected();
        *connected = connected.saturating_add_signed(in_or_out);
        self.health.set_no_workers(*connected == 0);
    }

    /// The seated workers' credit, together.
    pub fn credit(&self) -> usize {
        self.credit.load(Ordering::Relaxed)
    }

    /// Tasks sent and not answered yet.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }
}
