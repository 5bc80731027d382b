//! One connected client: a cursor into the log, its filter, its socket, and
//! its own thread.
//!
//! Who writes to the socket is decided by the cursor's [`Mode`], under the
//! cursor's lock:
//! - **fast**: the client is caught up. The thread that delivers its share of
//!   the clients (a delivery thread, or the fan-out itself) writes each new
//!   batch to it, without blocking (the socket is non-blocking); what
//!   the socket does not take stays in the sink's buffer, and the client
//!   turns slow. No thread wakes up for a client whose socket takes the bytes.
//! - **slow**: the client's own thread writes with blocking writes (bounded by
//!   the socket's send timeout) from its cursor to the head of the log, then
//!   turns the client fast again. A new client starts here: its hello, its
//!   notices and any replay are written at its own pace.
//! - **closed**: a write failed or the daemon is stopping; the thread ends and
//!   frees the slot.
//!
//! A cursor that falls off the log's tail is told so with a `gap` notice
//! naming the outcomes it missed (counted), and goes on from the oldest
//! message retained.

use std::io::{self, ErrorKind};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::message::{Broadcast, Kind};
use super::shared_log::{Log, Read, Start, gap_message};
use super::{CLIENT_PING_IDLE, ClientCounts, Interest};
use crate::ops::faults::{Faults, Role};

/// Messages the slow path copies out of the log per lock, and the most bytes
/// of them: a slow client pins little of what the log has forgotten.
const CATCH_UP_CHUNK: usize = 256;
const CATCH_UP_CHUNK_BYTES: usize = 256 * 1024;

/// How a client's bytes reach its socket.
pub trait Sink: Send {
    /// Adds a message to what is to be sent. `WouldBlock` means the sink's
    /// own buffer is full: the message was not taken and must be offered again.
    fn write_message(&mut self, message: &Broadcast) -> io::Result<()>;
    /// Sends what is buffered. Non-blocking, `WouldBlock` leaves the rest buffered.
    fn flush(&mut self) -> io::Result<()>;
    /// Blocking writes (the slow path) or non-blocking ones (the fast path).
    fn set_blocking(&mut self, blocking: bool) -> io::Result<()>;
    /// Tells an idle client the connection is alive.
    fn keepalive(&mut self) -> io::Result<()>;
    /// Says goodbye at shutdown (best effort).
    fn goodbye(&mut self);
    /// Reads what the peer sent, without blocking, and answers it as its
    /// protocol requires (a WebSocket ping with a pong, a close with a
    /// close). `Err` ends the client: the peer closed, broke the protocol or
    /// flooded. A transport whose peer has nothing to say keeps the default.
    fn hear(&mut self) -> io::Result<()> {
        Ok(())
    }
    /// A plain client (no control messages) fell off the log, missing the
    /// outcomes `from..=to` (`gap` is the notice a control client would get).
    /// The transport tells it explicitly; `Err` ends the client.
    fn fell_behind(&mut self, gap: &Broadcast, from: u64, to: u64) -> io::Result<()>;
    /// A plain client reached a run switch in the log (an edge's processor
    /// restarted; `reset` is the notice a control client gets): its seqs
    /// would start again at 1. The transport tells it in a way its library
    /// surfaces; `Err` ends the client, which reconnects with its position.
    fn restarted(&mut self, reset: &Broadcast) -> io::Result<()>;
}

/// Who writes to the client's socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Subscribed, not yet placed in the log by the fan-out thread.
    Joining,
    /// Caught up: the fan-out thread writes, without blocking.
    Fast,
    /// Behind, replaying or blocked: the client's own thread writes.
    Slow,
    /// Gone: nobody writes.
    Closed,
}

#[derive(Debug)]
struct Cursor {
    /// The next log position to send.
    next: u64,
    /// Stats before this position are from before the client joined: skipped.
    live_from: u64,
    /// The last outcome `seq` the client was sent (or skipped by its filter).
    last_seq: u64,
    /// Outcomes of this run up to this `seq` are already at the client (it
    /// resumed ahead of this node's log: an edge a little behind another).
    seen_through: u64,
    mode: Mode,
    /// Written before anything else: hello, reset, gap.
    notices: Vec<Broadcast>,
    /// The daemon is stopping: send what is left, say goodbye, end.
    ending: bool,
    /// The peer sent something not yet read (see `delivery::inbound`).
    peer_spoke: bool,
    last_write: Instant,
}

/// A connected client, shared by its own thread and the fan-out thread.
pub struct Client {
    interest: Interest,
    cursor: Mutex<Cursor>,
    wake: Condvar,
    /// The socket, attached once the handshake is answered.
    sink: Mutex<Option<Box<dyn Sink>>>,
    counts: Arc<ClientCounts>,
}

/// What the fan-out does with a client after a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Keep {
    /// Still connected.
    Yes,
    /// Gone: forget it.
    No,
}

impl Client {
    /// A client that wants what `interest` says. It subscribes before its
    /// handshake is answered (so it misses nothing made after it connected)
    /// and gets its socket after.
    pub fn new(interest: Interest, counts: Arc<ClientCounts>) -> Self {
        Client {
            interest,
            cursor: Mutex::new(Cursor {
                next: 0,
                live_from: 0,
                last_seq: 0,
                seen_through: 0,
                mode: Mode::Joining,
                notices: Vec::new(),
                ending: false,
                peer_spoke: false,
                last_write: Instant::now(),
            }),
            wake: Condvar::new(),
            sink: Mutex::new(None),
            counts,
        }
    }

    /// Gives the client its socket, before its thread starts.
    pub fn attach(&self, sink: Box<dyn Sink>) {
        *self.lock_sink() = Some(sink);
    }

    /// What the client asked for.
    pub fn interest(&self) -> &Interest {
        &self.interest
    }

    /// Places the client in the log (fan-out thread, between two appends);
    /// its own thread then writes its notices and replay.
    pub fn join(&self, start: Start) {
        let mut cursor = self.lock();
        if cursor.mode == Mode::Closed {
            return;
        }
        cursor.next = start.position;
        cursor.live_from = start.live_from;
        cursor.last_seq = start.last_seq;
        cursor.seen_through = start.last_seq;
        // A plain client asked for outcomes only: no hello. (A reset or a
        // gap at the start needs a resume position, which opts in.)
        cursor.notices = start
            .notices
            .into_iter()
            .filter(|notice| self.interest.control || notice.kind != Kind::Hello)
            .collect();
        self.set_mode(&mut cursor, Mode::Slow);
        drop(cursor);
        self.wake.notify_one();
    }

    /// The fast path: writes the part of `batch` (appended at `start`) after
    /// the cursor, without blocking, if the client is caught up. A socket
    /// that does not take it all turns the client slow; its thread goes on.
    pub fn deliver(&self, start: u64, batch: &[Broadcast]) -> Keep {
        let mut cursor = self.lock();
        match cursor.mode {
            Mode::Closed => return Keep::No,
            Mode::Joining | Mode::Slow => return Keep::Yes,
            Mode::Fast => {}
        }
        if cursor.next < start {
            return self.turn_slow(cursor);
        }
        let Ok(mut guard) = self.sink.try_lock() else {
            // Its own thread holds the socket (a keep-alive): it catches up next.
            return self.turn_slow(cursor);
        };
        let Some(sink) = guard.as_mut() else {
            drop(guard);
            return self.turn_slow(cursor);
        };
        let skip = usize::try_from(cursor.next - start).unwrap_or(usize::MAX);
        let mut written = false;
        for (position, message) in (cursor.next..).zip(batch.iter().skip(skip)) {
            if message.kind == Kind::Reset && !self.interest.control {
                // Told by its own thread (`Sink::restarted`).
                drop(guard);
                return self.turn_slow(cursor);
            }
            if self.wanted(position, &cursor, message) {
                match sink.write_message(message) {
                    Ok(()) => written = true,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        drop(guard);
                        return self.turn_slow(cursor);
                    }
                    Err(_) => {
                        drop(guard);
                        return self.close_with(cursor);
                    }
                }
            }
            // Recorded only once the sink took the message: one that would
            // block is offered again by the slow path, and a gap notice
            // computed meanwhile must still name it.
            record(&mut cursor, position, message);
        }
        if !written {
            return Keep::Yes;
        }
        match sink.flush() {
            Ok(()) => {
                cursor.last_write = Instant::now();
                Keep::Yes
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                drop(guard);
                self.turn_slow(cursor)
            }
            Err(_) => {
                drop(guard);
                self.close_with(cursor)
            }
        }
    }

    /// Whether the message at `position` goes to this client: what it asked
    /// for, except stats from before it joined (its replay) and outcomes it
    /// already has.
    fn wanted(&self, position: u64, cursor: &Cursor, message: &Broadcast) -> bool {
        let replayed_stats = message.kind == Kind::Stats && position < cursor.live_from;
        let already_sent = message.kind == Kind::Event && message.seq <= cursor.seen_through;
        !replayed_stats && !already_sent && self.interest.wants(message)
    }

    /// The slow path passed the message at `position` (sent or filtered out).
    fn passed(&self, position: u64, message: &Broadcast) {
        record(&mut self.lock(), position, message);
    }

    /// Changes who writes, keeping the count of clients served by their own
    /// thread (`clients.slow`) true.
    fn set_mode(&self, cursor: &mut Cursor, mode: Mode) {
        let slow = &self.counts.slow;
        match (cursor.mode == Mode::Slow, mode == Mode::Slow) {
            (false, true) => {
                slow.fetch_add(1, Ordering::Relaxed);
                self.counts.slow_turns.fetch_add(1, Ordering::Relaxed);
            }
            (true, false) => {
                slow.fetch_sub(1, Ordering::Relaxed);
            }
            _ => {}
        }
        cursor.mode = mode;
    }

    fn turn_slow(&self, mut cursor: MutexGuard<'_, Cursor>) -> Keep {
        self.set_mode(&mut cursor, Mode::Slow);
        drop(cursor);
        self.wake.notify_one();
        Keep::Yes
    }

    fn close_with(&self, mut cursor: MutexGuard<'_, Cursor>) -> Keep {
        self.set_mode(&mut cursor, Mode::Closed);
        drop(cursor);
        self.wake.notify_one();
        Keep::No
    }

    /// The daemon is stopping: the client's thread sends what is left, says
    /// goodbye and ends.
    pub fn end(&self) {
        self.lock().ending = true;
        self.wake.notify_one();
    }

    /// The peer sent something: the client's thread reads and answers it.
    pub fn peer_spoke(&self) {
        self.lock().peer_spoke = true;
        self.wake.notify_one();
    }

    /// Whether the peer spoke since this was last asked.
    fn take_peer_spoke(&self) -> bool {
        std::mem::take(&mut self.lock().peer_spoke)
    }

    /// The client's own thread: waits while the fast path serves it, catches
    /// up whenever it is slow, keeps an idle connection alive, and returns
    /// why it ended.
    pub fn serve(&self, log: &Log, faults: &Faults) -> String {
        loop {
            let (mode, ending, idle) = self.wait_for_work();
            if self.take_peer_spoke()
                && let Err(e) = self.hear()
            {
                self.close();
                return format!("peer: {e}");
            }
            let written = match mode {
                Mode::Closed => return "write failed".into(),
                Mode::Slow => {
                    faults.injection_point(Role::Writer);
                    self.catch_up(log)
                }
                Mode::Joining | Mode::Fast if ending => {
                    if let Some(sink) = self.lock_sink().as_mut() {
                        sink.goodbye();
                    }
                    return "server closed the stream".into();
                }
                Mode::Joining | Mode::Fast if idle => self.keepalive(),
                Mode::Joining | Mode::Fast => Ok(()),
            };
            if let Err(e) = written {
                self.close();
                return format!("write failed: {e}");
            }
        }
    }

    /// Blocks until the client is slow, closed or ending, its peer spoke, or
    /// it has been idle for the keep-alive interval.
    fn wait_for_work(&self) -> (Mode, bool, bool) {
        let cursor = self.lock();
        let idle_for = cursor.last_write.elapsed();
        let wait = CLIENT_PING_IDLE
            .saturating_sub(idle_for)
            .max(Duration::from_millis(1));
        let (cursor, timeout) = self
            .wake
            .wait_timeout_while(cursor, wait, |c| {
                matches!(c.mode, Mode::Fast | Mode::Joining) && !c.ending && !c.peer_spoke
            })
            .unwrap_or_else(|e| e.into_inner());
        let idle = timeout.timed_out() && cursor.last_write.elapsed() >= CLIENT_PING_IDLE;
        (cursor.mode, cursor.ending, idle)
    }

    /// Reads and answers the peer, holding the socket (the fast path finds it
    /// taken and leaves the client to this thread meanwhile).
    fn hear(&self) -> io::Result<()> {
        let mut guard = self.lock_sink();
        let heard = attached(&mut guard)?.hear();
        if heard.is_err() {
            // Closed before the socket is let go: a close frame may be out,
            // and the fast path must not write after it.
            self.close();
        }
        heard
    }

    fn keepalive(&self) -> io::Result<()> {
        let mut guard = self.lock_sink();
        let sink = attached(&mut guard)?;
        sink.set_blocking(true)?;
        sink.keepalive()?;
        sink.set_blocking(false)?;
        self.lock().last_write = Instant::now();
        Ok(())
    }

    /// The slow path: blocking writes from the cursor to the head of the log,
    /// then back to the fast path. The socket lock is held throughout, so the
    /// fan-out thread cannot write in between; it finds the client slow.
    fn catch_up(&self, log: &Log) -> io::Result<()> {
        let mut guard = self.lock_sink();
        let sink = attached(&mut guard)?;
        sink.set_blocking(true)?;
        sink.flush()?;
        let notices = std::mem::take(&mut self.lock().notices);
        for notice in &notices {
            write_blocking(sink, notice)?;
        }
        let mut chunk = Vec::with_capacity(CATCH_UP_CHUNK);
        loop {
            let from = self.lock().next;
            match log.read(from, CATCH_UP_CHUNK, CATCH_UP_CHUNK_BYTES, &mut chunk) {
                Read::Messages(_) => {
                    // No lock the fan-out takes is held across these blocking
                    // writes: while the client is slow only this thread moves
                    // its cursor, so the cursor is updated after each write.
                    for (position, message) in (from..).zip(chunk.drain(..)) {
                        if message.kind == Kind::Reset {
                            self.switch_run(sink, &message)?;
                        } else if self.wanted(position, &self.lock(), &message) {
                            write_blocking(sink, &message)?;
                        }
                        self.passed(position, &message);
                    }
                    sink.flush()?;
                    // A long replay still answers its peer's pings in time.
                    if self.take_peer_spoke() {
                        sink.hear()?;
                    }
                }
                Read::Behind {
                    oldest,
                    oldest_seq,
                    switch,
                } => {
                    if let Some(switch) = switch {
                        // Fell off across a run switch: what it missed of the
                        // old run, the switch, then what it missed of the new.
                        let missed_before = switch.previous_newest;
                        let from_seq = self.lock().last_seq + 1;
                        self.tell_gap(sink, from_seq, missed_before)?;
                        self.switch_run(sink, &switch.message)?;
                        let mut cursor = self.lock();
                        cursor.last_seq = 0;
                        cursor.seen_through = 0;
                    }
                    let mut cursor = self.lock();
                    let missed = oldest - cursor.next.min(oldest);
                    self.counts
                        .dropped_messages
                        .fetch_add(missed, Ordering::Relaxed);
                    let from_seq = cursor.last_seq.saturating_add(1);
                    cursor.last_seq = cursor.last_seq.max(oldest_seq.saturating_sub(1));
                    cursor.next = oldest;
                    drop(cursor);
                    self.tell_gap(sink, from_seq, oldest_seq.saturating_sub(1))?;
                }
                Read::CaughtUp => {
                    sink.flush()?;
                    sink.set_blocking(false)?;
                    if self.go_fast(log) {
                        return Ok(());
                    }
                    sink.set_blocking(true)?;
                }
            }
        }
    }

    /// Tells the client it missed the outcomes `from..=to`, if any: a control
    /// client in a `gap` notice, a plain one as its transport can.
    fn tell_gap(&self, sink: &mut Box<dyn Sink>, from: u64, to: u64) -> io::Result<()> {
        if from > to {
            return Ok(());
        }
        let gap = gap_message(from, to);
        if self.interest.control {
            write_blocking(sink, &gap)
        } else {
            // A plain client asked for outcomes only: it is told of the gap
            // in a way every client library surfaces (a WebSocket close
            // code), never silently.
            sink.fell_behind(&gap, from, to)
        }
    }

    /// A new run starts in the log: a control client reads the `reset`
    /// notice; a plain one is told as its transport can (`Sink::restarted`).
    fn switch_run(&self, sink: &mut Box<dyn Sink>, reset: &Broadcast) -> io::Result<()> {
        if self.interest.control {
            write_blocking(sink, reset)
        } else {
            sink.flush()?;
            sink.restarted(reset)
        }
    }

    /// Hands the client back to the fast path if nothing was appended since
    /// it caught up. Checked under the cursor's lock: the fan-out appends
    /// before the batch reaches any cursor (its own walk, or a delivery
    /// thread's), so either that sees the client fast and delivers the new
    /// batch, or this sees the batch.
    fn go_fast(&self, log: &Log) -> bool {
        let mut cursor = self.lock();
        if !log.is_head(cursor.next) {
            return false;
        }
        self.set_mode(&mut cursor, Mode::Fast);
        cursor.last_write = Instant::now();
        true
    }

    fn lock(&self) -> MutexGuard<'_, Cursor> {
        self.cursor.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_sink(&self) -> MutexGuard<'_, Option<Box<dyn Sink>>> {
        self.sink.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Marks the client gone (its thread ended).
    pub fn close(&self) {
        let mut cursor = self.lock();
        self.set_mode(&mut cursor, Mode::Closed);
    }
}

/// Moves the cursor past the message at `position`, remembering its `seq`.
fn record(cursor: &mut Cursor, position: u64, message: &Broadcast) {
    match message.kind {
        Kind::Event => cursor.last_seq = message.seq,
        // A new run in the log (an edge's processor restarted): its seqs
        // start again at 1.
        Kind::Reset => {
            cursor.last_seq = 0;
            cursor.seen_through = 0;
        }
        _ => {}
    }
    cursor.next = position + 1;
}

/// The socket of a client whose thread runs: attached before it started.
fn attached<'a>(
    guard: &'a mut MutexGuard<'_, Option<Box<dyn Sink>>>,
) -> io::Result<&'a mut Box<dyn Sink>> {
    guard
        .as_mut()
        .ok_or_else(|| io::Error::other("client thread started without a socket"))
}

/// Adds a message on the slow path: when the sink's buffer is full, it is
/// sent first (blocking) to make room.
fn write_blocking(sink: &mut Box<dyn Sink>, message: &Broadcast) -> io::Result<()> {
    match sink.write_message(message) {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {
            sink.flush()?;
            sink.write_message(message)
        }
        other => other,
    }
}
