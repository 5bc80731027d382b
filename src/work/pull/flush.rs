//! The `pull-flush` thread: finishes the frames that the sockets of remote
//! workers did not take whole, and drops a remote whose socket takes nothing
//! of them for `--write-timeout`.
//!
//! Owns: the remotes *behind* (the `RemoteWorkers`' `behind` map, by number,
//! and its epoll set, each socket armed for one wake-up when it has room),
//! handing a remote to the thread ([`RemoteWorkers::watch`]) and letting go of
//! it (`unwatch`), the thread's waits and looks, and the guard that marks the
//! daemon not live should the thread die ([`keep_watch`]).
//!
//! Threads and channels: one thread in all, `pull-flush`. Worker threads and
//! readers hand it the remotes they left behind; a reader lets go of its
//! remote as it ends. It writes, through their outboxes, to the sockets that
//! woke it (and to every remote behind once a stall may be due), and, when
//! it drops a remote too slow, the answer channel of its task under way
//! (`worker too slow`); the remote's reader fails the rest. Should the thread
//! die, it marks `health` failed.
//!
//! Must not know: the credit pool (beyond unseating a remote it drops), the
//! WebSocket protocol (a frame here is bytes), or a remote's tasks other than
//! the one whose frame is under way.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::sync::{Arc, MutexGuard, Weak};
use std::thread;
use std::time::{Duration, Instant};

use rustix::event::{Timespec, epoll};
use rustix::io::Errno;

use super::RemoteWorkers;
use super::outbox::Outbox;
use super::remote::Remote;
use crate::ops::health::Heartbeats;
use crate::ops::logging::RateLimit;
use crate::work::Answer;

/// The longest the `pull-flush` thread sleeps: it then looks whether it is
/// still wanted, and at every frame under way (one handed to it while it
/// slept is judged against `--write-timeout` no later than this).
const LOOK_AGAIN: Duration = Duration::from_secs(1);

/// Readiness events `pull-flush` takes from the kernel per wait; more wait
/// for the next (the sockets are level-triggered, so none is lost).
const EVENTS_PER_WAIT: usize = 64;

/// Remotes dropped for not reading their socket, said at most once a minute.
static TOO_SLOW_WARNINGS: RateLimit = RateLimit::new(Duration::from_secs(60));

/// A socket that took nothing of the frames under way for `--write-timeout`:
/// the worker is not reading.
#[derive(Debug)]
struct Stalled(Duration);

impl fmt::Display for Stalled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "worker too slow: its socket took nothing for {} ms",
            self.0.as_millis()
        )
    }
}

impl RemoteWorkers {
    pub(super) fn lock_behind(&self) -> MutexGuard<'_, HashMap<u64, Arc<Remote>>> {
        self.behind.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Hands `remote`'s frame under way (its outbox lock held) to the
    /// `pull-flush` thread.
    pub(super) fn watch(&self, remote: &Arc<Remote>) -> io::Result<()> {
        let mut behind = self.lock_behind();
        let data = epoll::EventData::new_u64(remote.number);
        let flags = epoll::EventFlags::OUT | epoll::EventFlags::ONESHOT;
        match epoll::add(&self.outgoing, &remote.stream, data, flags) {
            Err(Errno::EXIST) => epoll::modify(&self.outgoing, &remote.stream, data, flags)?,
            added => added?,
        }
        behind.insert(remote.number, Arc::clone(remote));
        Ok(())
    }

    /// Lets go of `remote` (its outbox lock held): its frame is out, or it
    /// is dropped.
    pub(super) fn unwatch(&self, remote: &Remote) {
        self.lock_behind().remove(&remote.number);
        let _ = epoll::delete(&self.outgoing, &remote.stream);
    }

    /// Waits until some socket of a remote behind has room, or `wait`;
    /// `events` then holds the keys of those with room.
    fn wait_for_room(&self, events: &mut Vec<epoll::Event>, wait: Duration) {
        events.clear();
        let Ok(timeout) = Timespec::try_from(wait) else {
            return;
        };
        let waited = epoll::wait(
            &self.outgoing,
            rustix::buffer::spare_capacity(events),
            Some(&timeout),
        );
        match waited {
            Ok(_) | Err(Errno::INTR) => {}
            Err(e) => {
                // Nothing a worker does makes epoll_wait fail; if the kernel
                // does, say so and go on rather than spin.
                log::error!("waiting for pull workers' sockets failed: {e}");
                thread::sleep(Duration::from_millis(100));
            }
        }
    }

    /// Writes what the remotes whose sockets have room (`events`) take now,
    /// and, once `look_at_all_at` has come, at every remote behind, dropping
    /// those whose socket took nothing for `--write-timeout`. Only then are
    /// they all looked at: a wake-up costs the sockets that woke it, not
    /// every remote behind. Moves `look_at_all_at` to when the next stall
    /// may be due.
    fn catch_up(&self, events: &[epoll::Event], look_at_all_at: &mut Instant) {
        let now = Instant::now();
        let all = now >= *look_at_all_at;
        let remotes: Vec<Arc<Remote>> = {
            let behind = self.lock_behind();
            if all {
                behind.values().cloned().collect()
            } else {
                // A key no longer there is a remote let go since its event.
                events
                    .iter()
                    .filter_map(|event| behind.get(&event.data.u64()).cloned())
                    .collect()
            }
        };
        if all {
            *look_at_all_at = now + LOOK_AGAIN;
        }
        for remote in remotes {
            if let Some(stall_at) = self.look_at(&remote) {
                // A remote handed over since the last look at all may stall
                // before it.
                *look_at_all_at = (*look_at_all_at).min(stall_at);
            }
        }
    }

    /// Writes what `remote`'s socket takes now; lets go of it if it caught
    /// up, drops it if its socket took nothing for `--write-timeout`, and
    /// otherwise arms it again and returns when it would stall.
    fn look_at(&self, remote: &Arc<Remote>) -> Option<Instant> {
        let mut outbox = remote.lock_outbox();
        match self.flush(remote, &mut outbox) {
            Ok(true) => self.unwatch(remote),
            Ok(false) => {
                let stalled = outbox.progress_at.elapsed();
                if stalled >= remote.write_timeout {
                    let why = Stalled(stalled).to_string();
                    self.drop_too_slow(remote, &mut outbox, &why);
                    return None;
                }
                let data = epoll::EventData::new_u64(remote.number);
                let flags = epoll::EventFlags::OUT | epoll::EventFlags::ONESHOT;
                // Not armed (or let go by its reader meanwhile), it is still
                // looked at when its stall is due.
                let _ = epoll::modify(&self.outgoing, &remote.stream, data, flags);
                return Some(outbox.progress_at + remote.write_timeout);
            }
            Err(e) => {
                log::debug!("{}: task not written: {e}", remote.name);
                self.retire(remote);
                remote.shut_down();
                self.unwatch(remote);
            }
        }
        None
    }

    /// Drops `remote` (its outbox lock held), whose socket took nothing for
    /// `--write-timeout`: its task under way fails `worker too slow` (if its
    /// deadline has not passed, its worker thread still listens), and its
    /// reader, seeing the socket shut, fails the rest `worker gone`.
    fn drop_too_slow(&self, remote: &Arc<Remote>, outbox: &mut Outbox, why: &str) {
        if TOO_SLOW_WARNINGS.allow() {
            log::warn!("{}: {why}: disconnected", remote.name);
        }
        let _ = remote.dropped_for.set(why.to_owned());
        // Taken back first, so the reader does not answer it `worker gone` too.
        if let Some((id, answer)) = outbox.task.take()
            && remote.withdraw(&id, &answer, &self.in_flight)
        {
            let _ = answer.send(Answer::Failed("worker too slow".into()));
        }
        self.retire(remote);
        remote.shut_down();
        self.unwatch(remote);
    }
}

/// Runs the `pull-flush` thread's `body`. Should it die of a panic (one
/// outside the looks it survives), frames under way would no longer be
/// finished and remotes behind would take no more tasks: the daemon is then
/// marked not live (`/healthz` says why, and the watchdog is withheld, so
/// systemd restarts it), as for any stage nothing stands in for.
pub(super) fn keep_watch(health: &Heartbeats, body: impl FnOnce()) {
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)).is_err() {
        log::error!("pull-flush died: frames under way to pull workers are no longer finished");
        health.fail("pull-flush thread panicked".into());
    }
}

/// The `pull-flush` thread: finishes the frames under way as their sockets
/// take them. It holds the `RemoteWorkers` only while it waits, so it ends once
/// the `RemoteWorkers` is no longer wanted. A panic in one look is logged and the
/// thread goes on: dead, it would leave every remote behind stuck until its
/// reader dropped it (the locks it may poison are taken poison-tolerant).
pub(super) fn finish_frames(remote_workers: &Weak<RemoteWorkers>) {
    let mut events = Vec::with_capacity(EVENTS_PER_WAIT);
    let mut look_at_all_at = Instant::now() + LOOK_AGAIN;
    while let Some(remote_workers) = remote_workers.upgrade() {
        let wait = look_at_all_at.saturating_duration_since(Instant::now());
        remote_workers.wait_for_room(&mut events, wait);
        let looked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            remote_workers.catch_up(&events, &mut look_at_all_at);
        }));
        if looked.is_err() {
            log::error!("pull-flush: a look at the remotes behind panicked; going on");
            look_at_all_at = Instant::now() + LOOK_AGAIN;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::work::pull::Offer;
    use crate::work::pull::testing::{
        MS, connected, eventually, is_behind, pair, taken, task_text, the_remote,
    };
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use tungstenite::protocol::Role;
    use tungstenite::{Message, WebSocket};

    #[test]
    fn a_remote_that_does_not_read_is_passed_over_and_loses_its_task_as_too_slow() {
        let (remote_workers, _peer) = connected(2, 300 * MS);
        let remote = the_remote(&remote_workers);
        let soon = || Instant::now() + 100 * MS;
        let first = remote_workers.acquire(soon()).expect("room");
        let second = remote_workers.acquire(soon()).expect("room");
        let big = "x".repeat(1 << 20);
        let started = Instant::now();
        let handover = taken(first.offer(&remote_workers, "big", big));
        assert!(is_behind(&remote), "a megabyte fitted the socket");
        assert!(
            remote_workers.acquire(soon()).is_none(),
            "a remote behind its socket was offered a task"
        );
        assert!(
            matches!(
                second.offer(&remote_workers, "small", "{}".into()),
                Offer::Elsewhere
            ),
            "a second task waited behind the first"
        );

        let answer = handover.answer(Instant::now() + 10_000 * MS);
        assert_eq!(answer, Answer::Failed("worker too slow".into()));
        let waited = started.elapsed();
        assert!(
            waited >= 300 * MS && waited < 5_000 * MS,
            "gave up after {waited:?}"
        );
        assert!(eventually(5_000 * MS, || remote_workers.connected() == 0));
        assert_eq!(
            (
                remote_workers.connected(),
                remote_workers.credit(),
                remote_workers.in_flight()
            ),
            (0, 0, 0)
        );
        assert!(remote_workers.lock_pool().seats.is_empty());
        assert!(
            eventually(5_000 * MS, || remote_workers.lock_behind().is_empty()),
            "pull-flush still holds the remote"
        );
    }

    #[test]
    fn a_task_under_way_at_its_deadline_is_late_and_only_a_write_timeout_without_progress_drops_the_worker()
     {
        let (remote_workers, _peer) = connected(2, 1_500 * MS);
        let remote = the_remote(&remote_workers);
        let credit = remote_workers
            .acquire(Instant::now() + 100 * MS)
            .expect("room");
        let started = Instant::now();
        let handover = taken(credit.offer(&remote_workers, "big", "x".repeat(1 << 20)));
        assert!(is_behind(&remote), "a megabyte fitted the socket");
        // Late at its deadline, not failed; the worker is not dropped for it.
        assert_eq!(handover.answer(Instant::now() + 200 * MS), Answer::TimedOut);
        thread::sleep(300 * MS);
        assert_eq!(
            remote_workers.connected(),
            1,
            "dropped at the task's deadline"
        );
        // Dropped once its socket has taken nothing for --write-timeout.
        assert!(eventually(5_000 * MS, || remote_workers.connected() == 0));
        let waited = started.elapsed();
        assert!(
            waited >= 1_500 * MS && waited < 4_000 * MS,
            "dropped after {waited:?}"
        );
        assert_eq!(
            (remote_workers.credit(), remote_workers.in_flight()),
            (0, 0)
        );
    }

    /// The worker's end of a socket, reading at most `chunk` bytes after a
    /// `pause` each time: a worker that keeps reading, more slowly than a
    /// large task arrives.
    struct Throttled {
        stream: TcpStream,
        chunk: usize,
        pause: Duration,
    }

    impl Read for Throttled {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            thread::sleep(self.pause);
            let n = buf.len().min(self.chunk);
            self.stream.read(&mut buf[..n])
        }
    }

    impl Write for Throttled {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.stream.write(buf)
        }

        fn flush(&mut self) -> io::Result<()> {
            self.stream.flush()
        }
    }

    /// A worker reading 4 KiB every 5 ms (800 KB/s).
    fn steady(stream: TcpStream) -> WebSocket<Throttled> {
        let throttled = Throttled {
            stream,
            chunk: 4096,
            pause: 5 * MS,
        };
        WebSocket::from_raw_socket(throttled, Role::Client, None)
    }

    /// Reads task messages until `n` have come, answering none; returns their ids
    /// and the length of each message.
    fn read_tasks(socket: &mut WebSocket<Throttled>, n: usize) -> Vec<(String, usize)> {
        (0..n)
            .map(|_| {
                let message = socket.read().expect("a task");
                let text = message.to_text().expect("text");
                let task: serde_json::Value = serde_json::from_str(text).expect("a whole task");
                (task["id"].as_str().expect("an id").to_owned(), text.len())
            })
            .collect()
    }

    fn answer_done(socket: &mut WebSocket<Throttled>, id: &str) {
        socket
            .send(Message::text(format!(r#"{{"type":"done","id":"{id}"}}"#)))
            .expect("answer");
    }

    #[test]
    fn a_worker_reading_steadily_keeps_its_tasks_when_one_is_still_being_written_at_its_deadline() {
        let (remote_workers, peer) = connected(4, 5_000 * MS);
        let soon = Instant::now() + 100 * MS;
        let small_credit = remote_workers.acquire(soon).expect("room");
        let small = taken(small_credit.offer(&remote_workers, "small", task_text("small", 0)));
        let big_credit = remote_workers.acquire(soon).expect("room");
        let big = taken(big_credit.offer(&remote_workers, "big", task_text("big", 256 << 10)));

        let worker = thread::spawn(move || {
            let mut socket = steady(peer);
            let first = read_tasks(&mut socket, 2);
            for (id, _) in &first {
                answer_done(&mut socket, id);
            }
            let (third, _) = read_tasks(&mut socket, 1).remove(0);
            answer_done(&mut socket, &third);
            (first, socket)
        });

        // The big task's frame is still on its way at its deadline: the task
        // is late (no answer by then), and the worker, which is reading, stays.
        let deadline_at = Instant::now() + 100 * MS;
        assert_eq!(big.answer(deadline_at), Answer::TimedOut);
        assert!(
            Instant::now() < deadline_at + 500 * MS,
            "waited past the deadline"
        );
        assert_eq!(remote_workers.connected(), 1);
        // The other task is not failed with it, and is answered.
        assert_eq!(small.answer(Instant::now() + 10_000 * MS), Answer::Done);
        // The late answer gives the credit back: the worker takes more.
        let credit = remote_workers
            .acquire(Instant::now() + 10_000 * MS)
            .expect("room again");
        let third = taken(credit.offer(&remote_workers, "third", task_text("third", 0)));
        assert_eq!(third.answer(Instant::now() + 10_000 * MS), Answer::Done);
        let (first, _socket) = worker.join().expect("worker");
        assert_eq!(first[0].0, "small");
        // The big task came whole, after the small one.
        assert_eq!(first[1].0, "big");
        assert_eq!(first[1].1, task_text("big", 256 << 10).len());
        // The reader counts an answer out of flight just after handing it over.
        assert!(eventually(2_000 * MS, || remote_workers.in_flight() == 0));
        assert_eq!(remote_workers.connected(), 1);
    }

    /// The socket's readiness event for `remote`, as `pull-flush` gets it.
    fn room_on(remote: &Remote) -> epoll::Event {
        epoll::Event {
            flags: epoll::EventFlags::OUT,
            data: epoll::EventData::new_u64(remote.number),
        }
    }

    /// Reads what the worker's end holds now.
    fn drain(peer: &mut TcpStream) {
        peer.set_nonblocking(true).expect("non-blocking");
        let mut buf = [0; 64 << 10];
        while matches!(peer.read(&mut buf), Ok(n) if n > 0) {}
    }

    #[test]
    fn pull_flush_writes_only_to_the_sockets_that_woke_it_until_a_stall_is_due() {
        let remote_workers =
            RemoteWorkers::without_flusher(Arc::new(Heartbeats::new())).expect("remote_workers");
        let mut behind = Vec::new();
        for n in 0..2 {
            let (ours, peer) = pair();
            let (remote, socket) = remote_workers
                .seat(ours, None, 1, 60_000 * MS)
                .expect("seated");
            let credit = remote_workers
                .acquire(Instant::now() + 100 * MS)
                .expect("room");
            let id = format!("t{n}");
            let handover = taken(credit.offer(&remote_workers, &id, task_text(&id, 256 << 10)));
            assert!(is_behind(&remote), "256 KiB fitted the socket");
            behind.push((remote, peer, socket, handover));
        }
        for (_, peer, _, _) in &mut behind {
            drain(peer);
        }
        let left = |k: usize| behind[k].0.lock_outbox().left();
        let before = (left(0), left(1));
        // Both sockets have room, but only the first woke the thread.
        let mut look_at_all_at = Instant::now() + 60_000 * MS;
        remote_workers.catch_up(&[room_on(&behind[0].0)], &mut look_at_all_at);
        assert!(
            left(0) < before.0,
            "the socket that woke it was not written"
        );
        assert_eq!(
            left(1),
            before.1,
            "a socket that did not wake it was written"
        );
        // Once a stall may be due, every remote behind is looked at.
        let mut look_at_all_at = Instant::now();
        remote_workers.catch_up(&[], &mut look_at_all_at);
        assert!(left(1) < before.1, "the look at all passed one over");
        assert!(
            look_at_all_at > Instant::now(),
            "the next look at all is not later"
        );
    }

    #[test]
    fn a_pull_flush_that_dies_makes_the_daemon_not_live() {
        let health = Heartbeats::new();
        keep_watch(&health, || panic!("pull-flush dies (a test)"));
        let why = health.live().expect_err("still live");
        assert!(why.contains("pull-flush"), "{why}");
    }
}
