//! `--work pull`: workers in any language connect to `GET /api/work` over
//! WebSocket and are handed admitted events as tasks, as many at once as the
//! credit they asked for (`?credit=N`).
//!
//! Owns: the [`Dispatcher`] (the credit pool and the gauges of connected
//! workers) and one [`Remote`] per connected worker: its socket, the frame
//! its socket has not taken all of yet, its tasks awaiting an answer, and its
//! reader thread (`pull-N`).
//!
//! Credit: each connected remote has a seat in the dispatcher's pool that
//! counts the tasks it may take now. A worker thread takes one before it
//! sends a task, waiting on the pool's condition variable until some remote
//! has room; the reader gives one back for every task answered. A remote
//! leaves the pool when it goes, so nothing of a gone remote waits there to be
//! taken: its descriptor and connection slot are freed as soon as its reader
//! ends (a worker thread holds it only while it writes to it).
//!
//! Channels: answer (one slot per task): the remote's reader thread writes
//! the answer; the worker thread that sent the task waits on it until the
//! deadline.
//!
//! Writing: every write on a remote's socket is non-blocking, under the
//! remote's outbox lock, so that lock is only ever held while the kernel
//! copies what fits. A frame the socket cannot take whole waits in the outbox
//! and goes before any other; meanwhile the remote is *behind* and the pool
//! offers it no task, so no other worker thread waits on it. The worker thread
//! whose task frame is under way waits for the socket (outside the lock) until
//! the task's deadline, or `--write-timeout` without progress; if it is still
//! unwritten then, the task fails (`worker too slow`) and the remote is
//! dropped.
//!
//! Why so: a blocking write under the lock, even one bounded by the time
//! left, makes every thread with a task for that remote wait as long (before,
//! up to `--write-timeout` per write ahead of it, and its pings too); a
//! try-lock would fail the tasks of a healthy remote that is merely taking a
//! large frame; a writer thread per remote would cost every connection a
//! thread. Measured (debug build, loopback): the lock is held 20 to 80 µs per
//! ordinary task and at most 7 ms for a 512 KiB one, and no thread waited
//! more than 2 µs for it with a worker that had stopped reading
//! (`tests/work.rs`).
//!
//! A remote that disconnects fails its tasks in flight at once (`worker gone`).
//! A task abandoned at its deadline still holds its credit until the remote
//! answers it: the remote is still busy with it.

use std::collections::{HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::io::Errno;
use rustix::net::SendFlags;
use tiny_http::ConnectionSlot;
use tungstenite::protocol::frame::Frame;
use tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tungstenite::{Message, WebSocket};

use super::Answer;
use crate::ops::health::Heartbeats;
use crate::ops::logging::RateLimit;
use crate::pipeline::event::error_text;

/// Most tasks one worker may ask to hold at once.
pub const MAX_CREDIT: usize = 1024;

/// A connected worker that sends nothing for this long is pinged; one that
/// stays silent for another such period is taken for gone.
const QUIET_LIMIT: Duration = Duration::from_secs(15);

/// Largest message a worker may send (answers are small).
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// A frame under way keeps its buffer for the next one up to this size; a
/// larger one (a webhook's megabyte) is given back once written.
const KEPT_OUTBOX_BYTES: usize = 64 * 1024;

/// Remotes dropped for not reading their socket, said at most once a minute.
static TOO_SLOW_WARNINGS: RateLimit = RateLimit::new(Duration::from_secs(60));

/// Workers coming and going are said at info at most once per 10 s each (the
/// rest at debug): a worker that reconnects in a loop must not fill the journal.
static CONNECTED_LOGS: RateLimit = RateLimit::new(Duration::from_secs(10));
static DISCONNECTED_LOGS: RateLimit = RateLimit::new(Duration::from_secs(10));

fn log_at_most_every_10_s(limit: &RateLimit, message: &str) {
    let message = crate::ops::logging::one_line(message);
    if limit.allow() {
        log::info!("{message}");
    } else {
        log::debug!("{message}");
    }
}

/// The pull-mode hub: who is connected and who may take a task.
pub struct Dispatcher {
    /// Which remote has room: one lock for every remote's free credit, so a
    /// remote's seat can be taken out the moment it goes.
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
}

/// The connected remotes and the credit each has free.
#[derive(Default)]
struct Pool {
    seats: Vec<Seat>,
    /// Where the next search for room starts: remotes take turns.
    next: usize,
}

struct Seat {
    remote: Arc<Remote>,
    /// Tasks the remote may take now: its credit less its tasks unanswered.
    free: usize,
}

/// Leave to send one task to one remote worker, taken from the pool.
pub struct Credit {
    remote: Arc<Remote>,
}

/// What came of offering a task to the remote of a [`Credit`].
pub enum Offer {
    /// The remote has the task, or its frame is under way.
    Taken(Handover),
    /// The remote's socket is still taking an earlier frame: nothing was
    /// written, and the credit is back in the pool, which offers this remote
    /// nothing until it catches up. Take other credit.
    Busy,
}

/// A task handed to a remote: its frame, perhaps not all written yet, and
/// where its answer will come.
pub struct Handover {
    remote: Arc<Remote>,
    id: Box<str>,
    /// The number of the task's frame when the socket has not taken all of it.
    under_way: Option<u64>,
    answer_in: Sender<Answer>,
    answer_out: Receiver<Answer>,
}

/// A connected worker.
pub struct Remote {
    name: String,
    open: AtomicBool,
    /// A frame is under way in the outbox: the pool offers this remote no
    /// task until the socket has taken it.
    behind: AtomicBool,
    credit: usize,
    /// The socket. The reader thread reads it; everyone writes it without
    /// blocking, under the outbox lock.
    stream: TcpStream,
    outbox: Mutex<Outbox>,
    /// How long the socket may take nothing of a frame under way.
    write_timeout: Duration,
    /// Tasks sent and not answered, by event id, oldest first: ids chosen by
    /// producers may repeat, and a worker answers them in any order.
    pending: Mutex<HashMap<Box<str>, VecDeque<Sender<Answer>>>>,
    _held: Option<ConnectionSlot>,
}

/// The frame the socket could not take whole, and the numbering of frames.
/// Frames are whole on the wire: nothing else is written until this one is.
#[derive(Default)]
struct Outbox {
    /// The frame under way; what the socket has not taken of it starts at `rest_at`.
    rest: Vec<u8>,
    rest_at: usize,
    /// The number of the frame under way.
    rest_of: u64,
    /// The number of the last frame started.
    started: u64,
}

impl Outbox {
    fn left(&self) -> usize {
        self.rest.len() - self.rest_at
    }

    /// Whether frame number `frame` is still under way.
    fn holds(&self, frame: u64) -> bool {
        self.left() > 0 && self.rest_of == frame
    }
}

/// Why a frame under way was not finished.
enum Unfinished {
    /// The socket took none of it for this long: until the deadline, or for
    /// `--write-timeout`.
    TooSlow(Duration),
    Io(io::Error),
}

impl Dispatcher {
    /// A dispatcher with no worker connected; `health` hears when there is none.
    pub fn new(health: Arc<Heartbeats>) -> Self {
        health.set_no_workers(true);
        Dispatcher {
            pool: Mutex::new(Pool::default()),
            room: Condvar::new(),
            health,
            next_remote: AtomicU64::new(1),
            connected: Mutex::new(0),
            credit: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
        }
    }

    /// Workers connected now.
    pub fn connected(&self) -> usize {
        *self.lock_connected()
    }

    fn lock_connected(&self) -> MutexGuard<'_, usize> {
        self.connected.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_pool(&self) -> MutexGuard<'_, Pool> {
        self.pool.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts a worker in (`+1`) or out (`-1`) and tells `health` whether any is left.
    fn count_connected(&self, in_or_out: isize) {
        let mut connected = self.lock_connected();
        *connected = connected.saturating_add_signed(in_or_out);
        self.health.set_no_workers(*connected == 0);
    }

    /// The connected workers' credit, together.
    pub fn credit(&self) -> usize {
        self.credit.load(Ordering::Relaxed)
    }

    /// Tasks sent and not answered yet.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
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

    /// Gives one task's room back to `remote`, if it is still connected.
    fn release(&self, remote: &Arc<Remote>) {
        let mut pool = self.lock_pool();
        if let Some(seat) = pool.seat_of(remote) {
            seat.free = (seat.free + 1).min(remote.credit);
            self.room.notify_one();
        }
    }

    /// Wakes every waiting worker thread: a remote came with room, or caught
    /// up with its socket. Under the pool lock, so that no thread is between
    /// looking for room and going to sleep.
    fn wake_all(&self) {
        let _pool = self.lock_pool();
        self.room.notify_all();
    }

    /// Takes over an upgraded `/api/work` connection for a worker that asked
    /// for `credit` tasks at once, and starts its reader thread.
    pub fn connect(
        self: &Arc<Self>,
        stream: TcpStream,
        held: Option<ConnectionSlot>,
        credit: usize,
        write_timeout: Duration,
    ) -> io::Result<()> {
        stream.set_read_timeout(Some(QUIET_LIMIT))?;
        stream.set_nodelay(true)?;
        let number = self.next_remote.fetch_add(1, Ordering::Relaxed);
        let remote = Arc::new(Remote {
            name: format!("pull-{number}"),
            open: AtomicBool::new(true),
            behind: AtomicBool::new(false),
            credit,
            stream,
            outbox: Mutex::new(Outbox::default()),
            write_timeout,
            pending: Mutex::new(HashMap::new()),
            _held: held,
        });
        let socket = WebSocket::from_raw_socket(
            Duplex {
                remote: Arc::clone(&remote),
                dispatcher: Arc::clone(self),
            },
            Role::Server,
            Some(socket_config()),
        );
        // Counted and seated before its reader starts, which takes it out
        // when it ends: seated after, a remote gone at once would stay.
        self.count_connected(1);
        self.credit.fetch_add(credit, Ordering::Relaxed);
        self.lock_pool().seats.push(Seat {
            remote: Arc::clone(&remote),
            free: credit,
        });
        let dispatcher = Arc::clone(self);
        let reader = Arc::clone(&remote);
        let started = thread::Builder::new()
            .name(remote.name.clone())
            .spawn(move || dispatcher.serve(reader, socket));
        if let Err(e) = started {
            remote.close();
            self.leave(&remote);
            return Err(e);
        }
        self.wake_all();
        let said = format!("{} connected with credit {credit}", remote.name);
        log_at_most_every_10_s(&CONNECTED_LOGS, &said);
        Ok(())
    }

    /// Takes a remote that has gone out of the pool and the gauges.
    fn leave(&self, remote: &Arc<Remote>) {
        self.lock_pool()
            .seats
            .retain(|seat| !Arc::ptr_eq(&seat.remote, remote));
        self.credit.fetch_sub(remote.credit, Ordering::Relaxed);
        self.count_connected(-1);
    }

    /// The reader thread of one remote: answers in, until it goes.
    fn serve(&self, remote: Arc<Remote>, mut socket: WebSocket<Duplex>) {
        let why = self.read_answers(&remote, &mut socket);
        let failed = remote.close();
        self.in_flight.fetch_sub(failed, Ordering::Relaxed);
        self.leave(&remote);
        let said = format!(
            "{} disconnected ({why}); {failed} tasks in flight failed",
            remote.name
        );
        log_at_most_every_10_s(&DISCONNECTED_LOGS, &said);
    }

    /// Reads the remote's messages until the connection ends; returns why it did.
    fn read_answers(&self, remote: &Arc<Remote>, socket: &mut WebSocket<Duplex>) -> String {
        let mut quiet_once = false;
        loop {
            let message = match socket.read() {
                Ok(message) => message,
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    if quiet_once {
                        return format!("silent for {} s", 2 * QUIET_LIMIT.as_secs());
                    }
                    quiet_once = true;
                    if socket.send(Message::Ping(Default::default())).is_err() {
                        return "ping failed".into();
                    }
                    continue;
                }
                Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
                    return "closed".into();
                }
                Err(e) => return e.to_string(),
            };
            quiet_once = false;
            let text = match message {
                Message::Text(text) => text,
                Message::Close(_) => continue,
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
                Message::Binary(_) => {
                    return refuse(socket, "answers are JSON text messages");
                }
            };
            match parse_answer(text.as_str()) {
                Ok((id, answer)) => {
                    if remote.answered(&id, answer) {
                        self.in_flight.fetch_sub(1, Ordering::Relaxed);
                        self.release(remote);
                    } else {
                        log::debug!("{}: answer for unknown task {id:?}", remote.name);
                    }
                }
                Err(e) => return refuse(socket, &e),
            }
        }
    }
}

impl Pool {
    /// One task's room on the next remote, in turn, that has some and is
    /// neither gone nor behind.
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

/// Closes a connection whose worker broke the protocol, telling it why.
fn refuse(socket: &mut WebSocket<Duplex>, why: &str) -> String {
    let close = CloseFrame {
        code: CloseCode::Policy,
        reason: close_reason(why).into(),
    };
    let _ = socket.close(Some(close)).and_then(|()| socket.flush());
    format!("protocol error: {why}")
}

/// `why` cut to fit a close frame (a control frame's payload is at most 125
/// bytes, two of them the code).
fn close_reason(why: &str) -> &str {
    let mut end = why.len().min(120);
    while !why.is_char_boundary(end) {
        end -= 1;
    }
    &why[..end]
}

#[derive(serde::Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
enum Reply<'a> {
    Done {
        #[serde(borrow)]
        id: std::borrow::Cow<'a, str>,
    },
    Failed {
        #[serde(borrow)]
        id: std::borrow::Cow<'a, str>,
        #[serde(default)]
        error: Option<String>,
    },
}

/// A worker's message as `(task id, answer)`, or what is wrong with it.
fn parse_answer(text: &str) -> Result<(String, Answer), String> {
    let reply: Reply = serde_json::from_str(text).map_err(|e| {
        format!(r#"unreadable answer ({e}): send {{"type":"done","id":…}} or {{"type":"failed","id":…,"error":…}}"#)
    })?;
    Ok(match reply {
        Reply::Done { id } => (id.into_owned(), Answer::Done),
        Reply::Failed { id, error } => {
            let error = error.unwrap_or_else(|| "failed".into());
            (id.into_owned(), Answer::Failed(error_text(&error)))
        }
    })
}

impl Credit {
    /// Offers `task` (the text of a task message for `id`) to this credit's
    /// worker, writing what its socket takes now without waiting. A worker
    /// that cannot be written to is disconnected, and the answer is `worker gone`.
    pub fn offer(self, dispatcher: &Dispatcher, id: &str, task: String) -> Offer {
        let remote = self.remote;
        let (answer_in, answer_out) = crossbeam_channel::bounded(1);
        let taken = |under_way| {
            Offer::Taken(Handover {
                remote: Arc::clone(&remote),
                id: id.into(),
                under_way,
                answer_in: answer_in.clone(),
                answer_out: answer_out.clone(),
            })
        };
        let frame = task_frame(task);
        let mut outbox = remote.lock_outbox();
        // An earlier frame may have finished since the pool offered this
        // remote: write what is left of it first.
        match remote.flush(&mut outbox, dispatcher) {
            Ok(true) => {}
            Ok(false) => {
                drop(outbox);
                dispatcher.release(&remote);
                return Offer::Busy;
            }
            Err(e) => {
                drop(outbox);
                log::debug!("{}: socket failed: {e}", remote.name);
                remote.shut_down();
                let _ = answer_in.send(gone());
                return taken(None);
            }
        }
        // Registered before the first byte goes, so that no answer can come
        // before its task is known.
        if !remote.expect(id, answer_in.clone(), &dispatcher.in_flight) {
            let _ = answer_in.send(gone());
            return taken(None);
        }
        match remote.start(&mut outbox, &frame) {
            Ok(under_way) => taken(under_way),
            Err(e) => {
                drop(outbox);
                log::debug!("{}: task not written: {e}", remote.name);
                // The reader thread sees the connection end and fails every task.
                remote.shut_down();
                taken(None)
            }
        }
    }

    /// Returns unused leave to the pool.
    pub fn give_back(self, dispatcher: &Dispatcher) {
        dispatcher.release(&self.remote);
    }
}

impl Handover {
    /// Waits for the socket to take the rest of the task's frame, if need be,
    /// then for the answer; both until `deadline_at`. A frame the socket does
    /// not take by then, or for `--write-timeout`, fails the task with `worker
    /// too slow` and drops the remote: it has not read a socketful of tasks
    /// for that long, so those are late too, and its credit is better spent
    /// on a worker that reads (the rest of its tasks fail `worker gone`). Past
    /// the deadline that failure is `late`, as any answer after it is.
    pub fn answer(self, dispatcher: &Dispatcher, deadline_at: Instant) -> Answer {
        let Handover {
            remote,
            id,
            under_way,
            answer_in,
            answer_out,
        } = self;
        if let Some(frame) = under_way {
            match remote.finish(frame, deadline_at, dispatcher) {
                Ok(()) => {}
                Err(Unfinished::TooSlow(stalled)) => {
                    if TOO_SLOW_WARNINGS.allow() {
                        log::warn!(
                            "{}: its socket took nothing for {} ms with a task to write: disconnected (worker too slow)",
                            remote.name,
                            stalled.as_millis()
                        );
                    }
                    // Taken back first, so the reader does not answer it `worker gone` too.
                    if remote.withdraw(&id, &answer_in, &dispatcher.in_flight) {
                        let _ = answer_in.send(Answer::Failed("worker too slow".into()));
                    }
                    remote.shut_down();
                }
                Err(Unfinished::Io(e)) => {
                    log::debug!("{}: task not written: {e}", remote.name);
                    remote.shut_down();
                }
            }
        }
        // Not held while waiting: a remote that goes is freed at once.
        drop((remote, answer_in));
        answer_out
            .recv_deadline(deadline_at)
            .unwrap_or(Answer::TimedOut)
    }
}

/// The bytes of a task message: one whole text frame.
fn task_frame(task: String) -> Vec<u8> {
    let frame = Frame::message(task, OpCode::Data(Data::Text), true);
    let mut bytes = Vec::with_capacity(frame.len());
    // Formatting into a vector cannot fail.
    let _ = frame.format(&mut bytes);
    bytes
}

impl Remote {
    fn is_open(&self) -> bool {
        self.open.load(Ordering::Relaxed)
    }

    /// Whether the pool may offer this remote a task.
    fn may_take(&self) -> bool {
        self.is_open() && !self.behind.load(Ordering::Relaxed)
    }

    fn lock_pending(&self) -> MutexGuard<'_, HashMap<Box<str>, VecDeque<Sender<Answer>>>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_outbox(&self) -> MutexGuard<'_, Outbox> {
        self.outbox.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a task about to be sent and counts it in `in_flight`, under
    /// the lock [`Remote::close`] takes, so no task is counted after the remote
    /// has failed its tasks; `false` when the remote has gone.
    fn expect(&self, id: &str, answer: Sender<Answer>, in_flight: &AtomicUsize) -> bool {
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
    fn withdraw(&self, id: &str, answer: &Sender<Answer>, in_flight: &AtomicUsize) -> bool {
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
    fn answered(&self, id: &str, answer: Answer) -> bool {
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

    /// Writes what the socket takes now of the frame under way; whether none
    /// of it is left. The remote that catches up is offered tasks again.
    fn flush(&self, outbox: &mut Outbox, dispatcher: &Dispatcher) -> io::Result<bool> {
        if outbox.left() == 0 {
            return Ok(true);
        }
        outbox.rest_at += send_now(&self.stream, &outbox.rest[outbox.rest_at..])?;
        if outbox.left() > 0 {
            return Ok(false);
        }
        outbox.rest.clear();
        outbox.rest.shrink_to(KEPT_OUTBOX_BYTES);
        outbox.rest_at = 0;
        self.behind.store(false, Ordering::Relaxed);
        dispatcher.wake_all();
        Ok(true)
    }

    /// Writes `frame` (none under way) as far as the socket takes it now;
    /// returns its number when some of it is left for later, the remote then
    /// behind.
    fn start(&self, outbox: &mut Outbox, frame: &[u8]) -> io::Result<Option<u64>> {
        outbox.started += 1;
        let sent = send_now(&self.stream, frame)?;
        if sent == frame.len() {
            return Ok(None);
        }
        outbox.rest.extend_from_slice(&frame[sent..]);
        outbox.rest_of = outbox.started;
        self.behind.store(true, Ordering::Relaxed);
        Ok(Some(outbox.started))
    }

    /// Waits, outside the outbox lock, for the socket to take the rest of
    /// frame number `frame`: until `deadline_at`, or `--write-timeout` in
    /// which the socket takes nothing of it.
    fn finish(
        &self,
        frame: u64,
        deadline_at: Instant,
        dispatcher: &Dispatcher,
    ) -> Result<(), Unfinished> {
        let mut progress_at = Instant::now();
        loop {
            let give_up_at = deadline_at.min(progress_at + self.write_timeout);
            let now = Instant::now();
            if now >= give_up_at {
                return Err(Unfinished::TooSlow(now - progress_at));
            }
            wait_writable(&self.stream, give_up_at);
            let mut outbox = self.lock_outbox();
            if !outbox.holds(frame) {
                // The reader, writing a control frame, wrote the rest.
                return Ok(());
            }
            let left = outbox.left();
            if self
                .flush(&mut outbox, dispatcher)
                .map_err(Unfinished::Io)?
            {
                return Ok(());
            }
            if outbox.left() < left {
                progress_at = Instant::now();
            }
        }
    }

    /// Writes `frame` (the reader's pong, ping or close) whole, after the
    /// frame under way if there is one; the reader waits for its own socket
    /// at most `--write-timeout` without progress.
    fn write_control(&self, frame: &[u8], dispatcher: &Dispatcher) -> io::Result<()> {
        let mut progress_at = Instant::now();
        let mut mine = None;
        loop {
            {
                let mut outbox = self.lock_outbox();
                let left = outbox.left();
                let clear = self.flush(&mut outbox, dispatcher)?;
                if outbox.left() < left {
                    progress_at = Instant::now();
                }
                match mine {
                    Some(number) if !outbox.holds(number) => return Ok(()),
                    Some(_) => {}
                    None if clear => match self.start(&mut outbox, frame)? {
                        None => return Ok(()),
                        Some(number) => mine = Some(number),
                    },
                    None => {}
                }
            }
            let give_up_at = progress_at + self.write_timeout;
            if Instant::now() >= give_up_at {
                return Err(io::ErrorKind::TimedOut.into());
            }
            wait_writable(&self.stream, give_up_at);
        }
    }

    fn shut_down(&self) {
        let _ = self.stream.shutdown(Shutdown::Both);
    }

    /// Marks the remote gone and fails every task it held; returns how many.
    fn close(&self) -> usize {
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

/// Writes as much of `bytes` as the socket takes without waiting; 0 when it
/// is full.
fn send_now(stream: &TcpStream, bytes: &[u8]) -> io::Result<usize> {
    let mut sent = 0;
    while sent < bytes.len() {
        match rustix::net::send(
            stream,
            &bytes[sent..],
            SendFlags::DONTWAIT | SendFlags::NOSIGNAL,
        ) {
            Ok(0) => break,
            Ok(n) => sent += n,
            Err(Errno::AGAIN) => break,
            Err(Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(sent)
}

/// Sleeps until the socket may take more, or `until` (or a signal).
fn wait_writable(stream: &TcpStream, until: Instant) {
    let left = until.saturating_duration_since(Instant::now());
    let Ok(timeout) = Timespec::try_from(left) else {
        return;
    };
    let mut fds = [PollFd::new(stream, PollFlags::OUT)];
    let _ = rustix::event::poll(&mut fds, Some(&timeout));
}

fn gone() -> Answer {
    Answer::Failed("worker gone".into())
}

/// Buffers for a peer that sends small answers and receives small tasks.
fn socket_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .max_message_size(Some(MAX_ANSWER_BYTES))
        .max_frame_size(Some(MAX_ANSWER_BYTES))
}

/// The reader's view of the socket: reads it directly, writes (pongs, pings,
/// the close handshake) whole through the outbox, after any frame under way.
struct Duplex {
    remote: Arc<Remote>,
    dispatcher: Arc<Dispatcher>,
}

impl Read for Duplex {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (&self.remote.stream).read(buf)
    }
}

impl Write for Duplex {
    /// Writes all of `buf` or fails: a frame is never left half-written for
    /// a task frame to be interleaved with.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.remote.write_control(buf, &self.dispatcher)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    const MS: Duration = Duration::from_millis(1);

    /// A dispatcher with one remote of `credit` connected over loopback; the
    /// remote's socket takes only a few KiB before it is full while the peer
    /// (returned) does not read.
    fn connected(credit: usize, write_timeout: Duration) -> (Arc<Dispatcher>, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("address");
        let peer = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .expect("socket");
        peer.set_recv_buffer_size(4096).expect("SO_RCVBUF");
        peer.connect(&addr.into()).expect("connect");
        let (ours, _) = listener.accept().expect("accept");
        socket2::SockRef::from(&ours)
            .set_send_buffer_size(4096)
            .expect("SO_SNDBUF");
        let dispatcher = Arc::new(Dispatcher::new(Arc::new(Heartbeats::new())));
        dispatcher
            .connect(ours, None, credit, write_timeout)
            .expect("connects");
        (dispatcher, peer.into())
    }

    fn taken(offer: Offer) -> Handover {
        match offer {
            Offer::Taken(handover) => handover,
            Offer::Busy => panic!("the remote was busy"),
        }
    }

    #[test]
    fn a_remote_that_does_not_read_is_passed_over_and_loses_its_task_as_too_slow() {
        let (dispatcher, _peer) = connected(2, 300 * MS);
        let soon = || Instant::now() + 100 * MS;
        let first = dispatcher.acquire(soon()).expect("room");
        let second = dispatcher.acquire(soon()).expect("room");
        let big = "x".repeat(1 << 20);
        let handover = taken(first.offer(&dispatcher, "big", big));
        assert!(handover.under_way.is_some(), "a megabyte fitted the socket");
        assert!(
            dispatcher.acquire(soon()).is_none(),
            "a remote behind its socket was offered a task"
        );
        assert!(
            matches!(second.offer(&dispatcher, "small", "{}".into()), Offer::Busy),
            "a second task waited behind the first"
        );

        let asked = Instant::now();
        let answer = handover.answer(&dispatcher, Instant::now() + 10_000 * MS);
        assert_eq!(answer, Answer::Failed("worker too slow".into()));
        let waited = asked.elapsed();
        assert!(
            waited >= 300 * MS && waited < 5_000 * MS,
            "gave up after {waited:?}"
        );
        let until = Instant::now() + 5_000 * MS;
        while dispatcher.connected() > 0 && Instant::now() < until {
            thread::sleep(10 * MS);
        }
        assert_eq!(
            (
                dispatcher.connected(),
                dispatcher.credit(),
                dispatcher.in_flight()
            ),
            (0, 0, 0)
        );
        assert!(dispatcher.lock_pool().seats.is_empty());
    }

    #[test]
    fn a_remote_that_catches_up_gets_its_task_whole_and_is_offered_tasks_again() {
        let (dispatcher, peer) = connected(1, 5_000 * MS);
        let credit = dispatcher.acquire(Instant::now() + 100 * MS).expect("room");
        let task = format!(
            r#"{{"type":"task","id":"big","pad":"{}"}}"#,
            "x".repeat(1 << 20)
        );
        let handover = taken(credit.offer(&dispatcher, "big", task));
        assert!(handover.under_way.is_some(), "a megabyte fitted the socket");

        // The worker reads at last, and answers.
        let worker = thread::spawn(move || {
            thread::sleep(200 * MS);
            let mut socket = WebSocket::from_raw_socket(peer, Role::Client, None);
            let message = socket.read().expect("the task");
            let task: serde_json::Value =
                serde_json::from_str(message.to_text().expect("text")).expect("JSON");
            assert_eq!(task["id"], "big");
            socket
                .send(Message::text(r#"{"type":"done","id":"big"}"#))
                .expect("answer");
            socket
        });
        let answer = handover.answer(&dispatcher, Instant::now() + 10_000 * MS);
        assert_eq!(answer, Answer::Done);
        assert!(
            dispatcher.acquire(Instant::now() + 2_000 * MS).is_some(),
            "a remote that caught up was not offered a task again"
        );
        assert_eq!(dispatcher.connected(), 1);
        drop(worker.join().expect("worker"));
    }
}
