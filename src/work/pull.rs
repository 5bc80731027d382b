//! `--work pull`: workers in any language connect to `GET /api/work` over
//! WebSocket and are handed admitted events as tasks, as many at once as the
//! credit they asked for (`?credit=N`).
//!
//! Owns: the [`RemoteWorkers`] (the credit pool, the gauges of connected
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

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, Weak};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use rustix::event::{Timespec, epoll};
use rustix::io::Errno;
use rustix::net::SendFlags;
use tiny_http::ConnectionSlot;
use tungstenite::protocol::frame::coding::{CloseCode, Control, Data, OpCode};
use tungstenite::protocol::frame::{Frame, FrameHeader};
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

/// The longest the `pull-flush` thread sleeps: it then looks whether it is
/// still wanted, and at every frame under way (one handed to it while it
/// slept is judged against `--write-timeout` no later than this).
const LOOK_AGAIN: Duration = Duration::from_secs(1);

/// Readiness events `pull-flush` takes from the kernel per wait; more wait
/// for the next (the sockets are level-triggered, so none is lost).
const EVENTS_PER_WAIT: usize = 64;

/// How much of a worker's own text goes into a log line or a close reason.
const PEER_TEXT_CHARS: usize = 200;

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

/// The seated remotes and the credit each has free.
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

/// A connected worker.
pub struct Remote {
    name: String,
    /// Its key in the `RemoteWorkers`' `behind` map and epoll set.
    number: u64,
    /// Whether it takes tasks: false once it sent Close or was sent one, its
    /// socket failed or it was dropped, and once it has gone. Changed under
    /// the pending lock, which a task is registered under (with the outbox
    /// lock held), so no task frame starts after it is false.
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
    /// Why it was dropped by another thread than its reader, for the
    /// reader's "disconnected" line.
    dropped_for: OnceLock<String>,
    _held: Option<ConnectionSlot>,
}

/// The frames the socket could not take whole, and the reader's frames
/// waiting for them. Frames are whole on the wire: nothing else is written
/// until these are.
struct Outbox {
    /// The frames under way; what the socket has not taken starts at `rest_at`.
    rest: Vec<u8>,
    rest_at: usize,
    /// When the socket last took some of the frame under way, whichever
    /// thread wrote it (or when the frame was started): a stall is measured
    /// from here, so no writer takes another's progress for none.
    progress_at: Instant,
    /// The task whose frame is under way (none for the reader's frames): it
    /// fails `worker too slow` if its remote is dropped for not taking it.
    task: Option<(Box<str>, Sender<Answer>)>,
    /// The reader's frames waiting for those under way, written in this
    /// order after them. Only the latest pong is kept (a newer ping's pong
    /// replaces it, as RFC 6455 allows), so the slot stays small whatever
    /// a worker sends; nothing is kept once a close is.
    pong: Option<Vec<u8>>,
    ping: Option<Vec<u8>>,
    close: Option<Vec<u8>>,
}

impl Outbox {
    fn new() -> Self {
        Outbox {
            rest: Vec::new(),
            rest_at: 0,
            progress_at: Instant::now(),
            task: None,
            pong: None,
            ping: None,
            close: None,
        }
    }

    fn left(&self) -> usize {
        self.rest.len() - self.rest_at
    }

    /// Keeps the reader's frames in `bytes` (whole control frames, as
    /// tungstenite writes them) for after the frames under way.
    fn keep_controls(&mut self, bytes: &[u8]) -> io::Result<()> {
        let mut cursor = io::Cursor::new(bytes);
        while let Some(at) = usize::try_from(cursor.position())
            .ok()
            .filter(|&at| at < bytes.len())
        {
            let parsed = FrameHeader::parse(&mut cursor).map_err(io::Error::other)?;
            let end = parsed.as_ref().and_then(|&(_, length)| {
                let end = cursor.position().checked_add(length)?;
                usize::try_from(end).ok().filter(|&end| end <= bytes.len())
            });
            let (Some((header, _)), Some(end)) = (parsed, end) else {
                return Err(not_control());
            };
            cursor.set_position(end as u64);
            let frame = bytes[at..end].to_vec();
            match header.opcode {
                // Nothing may follow a close.
                _ if self.close.is_some() => {}
                OpCode::Control(Control::Pong) => self.pong = Some(frame),
                OpCode::Control(Control::Ping) => self.ping = Some(frame),
                OpCode::Control(Control::Close) => self.close = Some(frame),
                _ => return Err(not_control()),
            }
        }
        Ok(())
    }

    /// The reader's frames kept, in the order they go, taken out.
    fn take_controls(&mut self) -> Option<Vec<u8>> {
        let frames: Vec<u8> = [self.pong.take(), self.ping.take(), self.close.take()]
            .into_iter()
            .flatten()
            .flatten()
            .collect();
        (!frames.is_empty()).then_some(frames)
    }
}

/// The reader writes only control frames (it sends no message); anything
/// else means a frame could be cut in two, so the reader ends instead.
fn not_control() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        "the reader writes only whole control frames",
    )
}

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

    fn lock_pool(&self) -> MutexGuard<'_, Pool> {
        self.pool.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_behind(&self) -> MutexGuard<'_, HashMap<u64, Arc<Remote>>> {
        self.behind.lock().unwrap_or_else(|e| e.into_inner())
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
        let (remote, socket) = self.seat(stream, held, credit, write_timeout)?;
        let remote_workers = Arc::clone(self);
        let reader = Arc::clone(&remote);
        let started = thread::Builder::new()
            .name(remote.name.clone())
            .spawn(move || {
                remote_workers.serve(reader, socket);
            });
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

    /// Makes a remote of `stream`, counted and seated: before its reader
    /// starts, which takes it out when it ends (seated after, a remote gone
    /// at once would stay).
    fn seat(
        self: &Arc<Self>,
        stream: TcpStream,
        held: Option<ConnectionSlot>,
        credit: usize,
        write_timeout: Duration,
    ) -> io::Result<(Arc<Remote>, WebSocket<Duplex>)> {
        stream.set_nodelay(true)?;
        let number = self.next_remote.fetch_add(1, Ordering::Relaxed);
        let remote = Arc::new(Remote {
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
        });
        let socket = WebSocket::from_raw_socket(
            Duplex {
                remote: Arc::clone(&remote),
                remote_workers: Arc::clone(self),
                heard: false,
            },
            Role::Server,
            Some(socket_config()),
        );
        self.count_connected(1);
        self.credit.fetch_add(credit, Ordering::Relaxed);
        self.lock_pool().seats.push(Seat {
            remote: Arc::clone(&remote),
            free: credit,
        });
        Ok((remote, socket))
    }

    /// Takes `remote` out of the pool and its credit out of the gauge, once.
    fn unseat(&self, remote: &Arc<Remote>) {
        let mut pool = self.lock_pool();
        let before = pool.seats.len();
        pool.seats.retain(|seat| !Arc::ptr_eq(&seat.remote, remote));
        if pool.seats.len() < before {
            self.credit.fetch_sub(remote.credit, Ordering::Relaxed);
        }
    }

    /// Offers `remote` no more tasks: it is closing, failed or dropped. No
    /// task frame starts on it after this returns.
    fn retire(&self, remote: &Arc<Remote>) {
        remote.stop_taking();
        self.unseat(remote);
    }

    /// Takes a remote that has gone out of the pool and the gauges.
    fn leave(&self, remote: &Arc<Remote>) {
        self.unseat(remote);
        self.count_connected(-1);
    }

    /// The reader thread of one remote: answers in, until it goes; returns
    /// why it went.
    fn serve(&self, remote: Arc<Remote>, mut socket: WebSocket<Duplex>) -> String {
        let read_why = self.read_answers(&remote, &mut socket);
        let why = remote.dropped_for.get().cloned().unwrap_or(read_why);
        {
            // Let go here of what is under way (a reply to the worker's close
            // included: the connection ends now), under the outbox lock so
            // that no writer hands it to `pull-flush` again: a remote's end
            // frees its descriptor whether or not `pull-flush` is alive.
            let mut outbox = remote.lock_outbox();
            self.unwatch(&remote);
            outbox.task = None;
        }
        let failed = remote.close();
        self.in_flight.fetch_sub(failed, Ordering::Relaxed);
        self.leave(&remote);
        let said = format!(
            "{} disconnected ({why}); {failed} tasks in flight failed",
            remote.name
        );
        log_at_most_every_10_s(&DISCONNECTED_LOGS, &said);
        why
    }

    /// Reads the remote's messages until the connection ends; returns why it did.
    fn read_answers(&self, remote: &Arc<Remote>, socket: &mut WebSocket<Duplex>) -> String {
        let quiet = remote
            .stream
            .read_timeout()
            .ok()
            .flatten()
            .unwrap_or(QUIET_LIMIT);
        let mut quiet_once = false;
        loop {
            let read = socket.read();
            // Silence is time in which nothing at all came, not even part
            // of a message.
            if std::mem::take(&mut socket.get_mut().heard) {
                quiet_once = false;
            }
            let message = match read {
                Ok(message) => message,
                Err(e) => {
                    match e {
                        // The socket's read timeout: the reader's writes
                        // never wait, so never time out.
                        tungstenite::Error::Io(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        tungstenite::Error::ConnectionClosed
                        | tungstenite::Error::AlreadyClosed => return "closed".into(),
                        e => return e.to_string(),
                    }
                    if quiet_once {
                        return format!("silent for {} s", 2 * quiet.as_secs());
                    }
                    quiet_once = true;
                    match socket.send(Message::Ping(Default::default())) {
                        Ok(()) => continue,
                        Err(_) => return "ping failed".into(),
                    }
                }
            };
            let text = match message {
                Message::Text(text) => text,
                Message::Close(_) => {
                    // Out of the pool before the reply is written (on the
                    // next read): nothing may follow a Close frame, and the
                    // worker will answer nothing more.
                    self.retire(remote);
                    continue;
                }
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
                        log::debug!(
                            "{}: answer for unknown task \"{}\"",
                            remote.name,
                            peer_text(&id)
                        );
                    }
                }
                Err(e) => return refuse(socket, &e),
            }
        }
    }

    /// Hands `remote`'s frame under way (its outbox lock held) to the
    /// `pull-flush` thread.
    fn watch(&self, remote: &Arc<Remote>) -> io::Result<()> {
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
    fn unwatch(&self, remote: &Remote) {
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
        match remote.flush(&mut outbox, self) {
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
fn keep_watch(health: &Heartbeats, body: impl FnOnce()) {
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
fn finish_frames(remote_workers: &Weak<RemoteWorkers>) {
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

/// Closes a connection whose worker broke the protocol, telling it why.
fn refuse(socket: &mut WebSocket<Duplex>, why: &str) -> String {
    // Out of the pool before the Close frame: no task may follow it.
    let Duplex {
        remote,
        remote_workers,
        ..
    } = socket.get_ref();
    remote_workers.retire(remote);
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

/// A worker's own text as it may go into a log line: at most
/// [`PEER_TEXT_CHARS`] characters, with control, bidirectional and other
/// invisible characters escaped, so that a worker can neither flood the
/// journal nor make a line read as something else.
fn peer_text(text: &str) -> String {
    let mut cut = text.chars();
    let kept: String = cut.by_ref().take(PEER_TEXT_CHARS).collect();
    let mut shown = kept.escape_debug().to_string();
    if cut.next().is_some() {
        shown.push('…');
    }
    shown
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

/// A worker's message as `(task id, answer)`, or what is wrong with it (its
/// words in it cut short and escaped: they reach the log).
fn parse_answer(text: &str) -> Result<(String, Answer), String> {
    let reply: Reply = serde_json::from_str(text).map_err(|e| {
        let e = peer_text(&e.to_string());
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
    /// worker, writing what its socket takes now without waiting; what it
    /// does not take, `pull-flush` writes. A worker whose socket fails is
    /// disconnected and the task goes [`Offer::Elsewhere`].
    pub fn offer(self, remote_workers: &RemoteWorkers, id: &str, task: String) -> Offer {
        let remote = self.remote;
        let frame = task_frame(task);
        let mut outbox = remote.lock_outbox();
        // An earlier frame may have finished since the pool offered this
        // remote: write what is left of it first.
        match remote.flush(&mut outbox, remote_workers) {
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
        let written = remote.start(&mut outbox, &frame).and_then(|under_way| {
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

    /// Refuses every task from now on, under the lock tasks are registered
    /// under: a task registered before has its frame started before this
    /// returns or fails, since its writer holds the outbox lock throughout.
    fn stop_taking(&self) {
        let _pending = self.lock_pending();
        self.open.store(false, Ordering::Relaxed);
    }

    /// Registers a task about to be sent and counts it in `in_flight`, under
    /// the lock [`Remote::close`] takes, so no task is counted after the remote
    /// has failed its tasks; `false` when the remote takes no more tasks.
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

    /// Writes what the socket takes now of the frames under way, then the
    /// reader's frames kept for after them; whether none is left. The remote
    /// that catches up is offered tasks again.
    fn flush(&self, outbox: &mut Outbox, remote_workers: &RemoteWorkers) -> io::Result<bool> {
        loop {
            if outbox.left() > 0 {
                let sent = send_now(&self.stream, &outbox.rest[outbox.rest_at..])?;
                if sent > 0 {
                    outbox.rest_at += sent;
                    outbox.progress_at = Instant::now();
                }
                if outbox.left() > 0 {
                    self.behind.store(true, Ordering::Relaxed);
                    return Ok(false);
                }
                outbox.rest.clear();
                outbox.rest.shrink_to(KEPT_OUTBOX_BYTES);
                outbox.rest_at = 0;
                outbox.task = None;
            }
            let Some(controls) = outbox.take_controls() else {
                break;
            };
            outbox.rest = controls;
            outbox.progress_at = Instant::now();
        }
        if self.behind.swap(false, Ordering::Relaxed) {
            remote_workers.wake_all();
        }
        Ok(true)
    }

    /// Writes `frame` (none under way) as far as the socket takes it now;
    /// whether some of it is left for later, the remote then behind.
    fn start(&self, outbox: &mut Outbox, frame: &[u8]) -> io::Result<bool> {
        let sent = send_now(&self.stream, frame)?;
        if sent == frame.len() {
            return Ok(false);
        }
        outbox.rest.extend_from_slice(&frame[sent..]);
        outbox.progress_at = Instant::now();
        self.behind.store(true, Ordering::Relaxed);
        Ok(true)
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
/// the close handshake) whole through the outbox, after any frame under way,
/// without waiting for them to go.
struct Duplex {
    remote: Arc<Remote>,
    remote_workers: Arc<RemoteWorkers>,
    /// Something came since the reader last looked: the worker is not silent.
    heard: bool,
}

impl Read for Duplex {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = (&self.remote.stream).read(buf)?;
        self.heard |= n > 0;
        Ok(n)
    }
}

impl Write for Duplex {
    /// Takes all of `buf` (whole control frames) or fails, and never
    /// waits: what the socket does not take now goes after the frames under
    /// way, written by whoever finishes them (`pull-flush`, which also drops
    /// a worker that stops taking them). A frame is never left half-written
    /// for a task frame to be interleaved with.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let remote = &self.remote;
        let mut outbox = remote.lock_outbox();
        outbox.keep_controls(buf)?;
        // With frames under way, the remote is already in `pull-flush`'s set.
        let watched = outbox.left() > 0;
        if !remote.flush(&mut outbox, &self.remote_workers)? && !watched {
            self.remote_workers.watch(remote)?;
        }
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

    /// A loopback connection whose daemon end (first) takes only a few KiB
    /// before it is full while the worker's end (second) does not read.
    fn pair() -> (TcpStream, TcpStream) {
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
        (ours, peer.into())
    }

    fn remote_workers() -> Arc<RemoteWorkers> {
        RemoteWorkers::new(Arc::new(Heartbeats::new())).expect("remote_workers")
    }

    /// A `RemoteWorkers` with one remote of `credit` connected over a [`pair`],
    /// and the worker's end.
    fn connected(credit: usize, write_timeout: Duration) -> (Arc<RemoteWorkers>, TcpStream) {
        let (ours, peer) = pair();
        let remote_workers = remote_workers();
        remote_workers
            .connect(ours, None, credit, write_timeout)
            .expect("connects");
        (remote_workers, peer)
    }

    /// A remote seated as [`connected`] does, but whose reader (returned:
    /// it gives why the remote went) silence takes `quiet` to notice.
    fn seated(
        credit: usize,
        write_timeout: Duration,
        quiet: Duration,
    ) -> (
        Arc<RemoteWorkers>,
        Arc<Remote>,
        thread::JoinHandle<String>,
        TcpStream,
    ) {
        let (ours, peer) = pair();
        ours.set_read_timeout(Some(quiet)).expect("read timeout");
        let remote_workers = remote_workers();
        let (remote, socket) = remote_workers
            .seat(ours, None, credit, write_timeout)
            .expect("seated");
        let reader = {
            let (remote_workers, remote) = (Arc::clone(&remote_workers), Arc::clone(&remote));
            thread::spawn(move || remote_workers.serve(remote, socket))
        };
        (remote_workers, remote, reader, peer)
    }

    fn taken(offer: Offer) -> Handover {
        match offer {
            Offer::Taken(handover) => handover,
            Offer::Elsewhere => panic!("the remote did not take the task"),
        }
    }

    fn the_remote(remote_workers: &RemoteWorkers) -> Arc<Remote> {
        Arc::clone(&remote_workers.lock_pool().seats[0].remote)
    }

    fn is_behind(remote: &Remote) -> bool {
        remote.behind.load(Ordering::Relaxed)
    }

    /// Whether `done` comes true within `within`, looking every 10 ms.
    fn eventually(within: Duration, mut done: impl FnMut() -> bool) -> bool {
        let until = Instant::now() + within;
        while !done() {
            if Instant::now() >= until {
                return false;
            }
            thread::sleep(10 * MS);
        }
        true
    }

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

    #[test]
    fn a_remote_that_catches_up_gets_its_task_whole_and_is_offered_tasks_again() {
        let (remote_workers, peer) = connected(1, 5_000 * MS);
        let remote = the_remote(&remote_workers);
        let credit = remote_workers
            .acquire(Instant::now() + 100 * MS)
            .expect("room");
        let task = format!(
            r#"{{"type":"task","id":"big","pad":"{}"}}"#,
            "x".repeat(1 << 20)
        );
        let handover = taken(credit.offer(&remote_workers, "big", task));
        assert!(is_behind(&remote), "a megabyte fitted the socket");

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
        let answer = handover.answer(Instant::now() + 10_000 * MS);
        assert_eq!(answer, Answer::Done);
        assert!(
            remote_workers
                .acquire(Instant::now() + 2_000 * MS)
                .is_some(),
            "a remote that caught up was not offered a task again"
        );
        assert_eq!(remote_workers.connected(), 1);
        drop(worker.join().expect("worker"));
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

    /// The text of a task message for `id` padded with `pad` bytes.
    fn task_text(id: &str, pad: usize) -> String {
        format!(
            r#"{{"type":"task","id":"{id}","pad":"{}"}}"#,
            "x".repeat(pad)
        )
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

    /// The bytes of one frame as a worker sends it (masked, as clients must).
    fn client_frame(opcode: OpCode, payload: &[u8]) -> Vec<u8> {
        let header = tungstenite::protocol::frame::FrameHeader {
            opcode,
            mask: Some([1, 2, 3, 4]),
            ..Default::default()
        };
        let frame = Frame::from_payload(header, payload.to_vec().into());
        let mut bytes = Vec::new();
        frame.format(&mut bytes).expect("formats");
        bytes
    }

    #[test]
    fn a_worker_that_takes_no_pong_is_dropped_as_too_slow_not_taken_for_silent() {
        // Silence would take 10 s to notice: only the stalled pong can end it.
        let (_dispatcher, remote, reader, peer) = seated(1, 1_000 * MS, 10_000 * MS);
        peer.set_write_timeout(Some(3_000 * MS)).expect("timeout");
        let started = Instant::now();
        // Pings without reading a pong, until the connection is cut (or
        // long after it should have been). Only the latest pong waits while
        // one is under way, so the socket fills only as fast as the kernel
        // lets pongs in: a fixed number of pings may all be answered into
        // its buffers.
        let pinger = thread::spawn(move || {
            let mut socket = WebSocket::from_raw_socket(peer, Role::Client, None);
            while started.elapsed() < 8_000 * MS {
                if socket.send(Message::Ping(vec![0; 125].into())).is_err() {
                    break;
                }
            }
            // Kept open: closed with pongs unread, it would be reset.
            socket
        });
        let why = reader.join().expect("reader");
        // Not a write timeout taken for silence, then a ping that waits as
        // long again ("ping failed"), or a silence of 10 s.
        assert!(why.starts_with("worker too slow"), "{why}");
        assert!(started.elapsed() < 9_000 * MS);
        drop(remote);
        drop(pinger.join().expect("pinger"));
    }

    #[test]
    fn part_of_a_message_is_not_silence() {
        let quiet = 300 * MS;
        let (_dispatcher, _remote, reader, mut peer) = seated(1, 5_000 * MS, quiet);
        let answer = client_frame(
            OpCode::Data(Data::Text),
            br#"{"type":"done","id":"nobody"}"#,
        );
        // Silent for one period (pinged), then a few bytes in each of the
        // next two: never silent for two periods together.
        thread::sleep(quiet + 150 * MS);
        peer.write_all(&answer[..3]).expect("write");
        thread::sleep(quiet + 150 * MS);
        peer.write_all(&answer[3..]).expect("write");
        thread::sleep(100 * MS);
        peer.write_all(&client_frame(OpCode::Control(Control::Close), &[]))
            .expect("close");
        assert_eq!(reader.join().expect("reader"), "closed");
    }

    #[test]
    fn a_closing_worker_is_offered_no_task_before_its_close_is_answered() {
        let closings = [
            ("its Close", OpCode::Control(Control::Close)),
            ("a binary message (refused)", OpCode::Data(Data::Binary)),
        ];
        for (what, opcode) in closings {
            let (remote_workers, mut peer) = connected(2, 5_000 * MS);
            let remote = the_remote(&remote_workers);
            let early = remote_workers
                .acquire(Instant::now() + 100 * MS)
                .expect("room");
            // Our Close cannot be written while this is held.
            let outbox = remote.lock_outbox();
            peer.write_all(&client_frame(opcode, &[])).expect("write");
            assert!(
                eventually(2_000 * MS, || remote_workers.lock_pool().seats.is_empty()),
                "after {what}: still offered tasks"
            );
            assert_eq!(remote_workers.credit(), 0, "after {what}");
            drop(outbox);
            assert!(
                matches!(
                    early.offer(&remote_workers, "late", task_text("late", 0)),
                    Offer::Elsewhere
                ),
                "after {what}: a task went to a closing worker"
            );
            // The worker hears our Close, and no task before or after it.
            peer.set_read_timeout(Some(2_000 * MS)).expect("timeout");
            let mut socket = WebSocket::from_raw_socket(peer, Role::Client, None);
            match socket.read() {
                Ok(Message::Close(_)) => {}
                other => panic!("after {what}: {other:?} instead of our Close"),
            }
            if let Ok(Message::Text(text)) = socket.read() {
                panic!("after {what}: a task after our Close: {text}");
            }
            assert!(eventually(2_000 * MS, || remote_workers.connected() == 0));
            assert_eq!(remote_workers.in_flight(), 0);
        }
    }

    #[test]
    fn answers_are_read_while_a_big_frame_is_under_way_and_a_ping_waits_for_its_pong() {
        let (remote_workers, peer) = connected(2, 5_000 * MS);
        let remote = the_remote(&remote_workers);
        let soon = Instant::now() + 100 * MS;
        let small_credit = remote_workers.acquire(soon).expect("room");
        let small = taken(small_credit.offer(&remote_workers, "small", task_text("small", 0)));
        let big_credit = remote_workers.acquire(soon).expect("room");
        let big = taken(big_credit.offer(&remote_workers, "big", task_text("big", 1 << 20)));
        assert!(is_behind(&remote), "a megabyte fitted the socket");

        // Reading nothing yet, the worker pings, then answers the small task.
        let mut writer = peer.try_clone().expect("clone");
        writer
            .write_all(&client_frame(OpCode::Control(Control::Ping), b"there?"))
            .expect("ping");
        let sent = Instant::now();
        writer
            .write_all(&client_frame(
                OpCode::Data(Data::Text),
                br#"{"type":"done","id":"small"}"#,
            ))
            .expect("answer");
        // The answer is read at once: the pong does not hold up the reader.
        assert_eq!(small.answer(Instant::now() + 2_000 * MS), Answer::Done);
        assert!(sent.elapsed() < 500 * MS, "read after {:?}", sent.elapsed());
        assert!(is_behind(&remote), "the big frame went meanwhile");

        // The worker reads at last: its tasks, the big one whole, then the pong.
        let mut socket = WebSocket::from_raw_socket(peer, Role::Client, None);
        let ids: Vec<String> = (0..2)
            .map(|_| {
                let message = socket.read().expect("a task");
                let task: serde_json::Value =
                    serde_json::from_str(message.to_text().expect("text")).expect("JSON");
                task["id"].as_str().expect("id").to_owned()
            })
            .collect();
        assert_eq!(ids, ["small", "big"]);
        let pong = socket.read().expect("the pong");
        assert_eq!(pong, Message::Pong(b"there?".to_vec().into()));
        socket
            .send(Message::text(r#"{"type":"done","id":"big"}"#))
            .expect("answer");
        assert_eq!(big.answer(Instant::now() + 2_000 * MS), Answer::Done);
        assert_eq!(
            (remote_workers.connected(), remote_workers.in_flight()),
            (1, 0)
        );
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
    fn a_remote_whose_reader_ends_is_let_go_with_its_frame_under_way_even_without_pull_flush() {
        let remote_workers =
            RemoteWorkers::without_flusher(Arc::new(Heartbeats::new())).expect("remote_workers");
        let (ours, peer) = pair();
        let (remote, socket) = remote_workers
            .seat(ours, None, 1, 60_000 * MS)
            .expect("seated");
        let reader = {
            let (remote_workers, remote) = (Arc::clone(&remote_workers), Arc::clone(&remote));
            thread::spawn(move || remote_workers.serve(remote, socket))
        };
        let credit = remote_workers
            .acquire(Instant::now() + 100 * MS)
            .expect("room");
        let handover = taken(credit.offer(&remote_workers, "big", task_text("big", 1 << 20)));
        assert!(is_behind(&remote), "a megabyte fitted the socket");
        assert_eq!(remote_workers.lock_behind().len(), 1);
        drop(peer);
        reader.join().expect("reader");
        assert!(
            remote_workers.lock_behind().is_empty(),
            "its end left it behind"
        );
        assert_eq!(handover.answer(Instant::now() + 100 * MS), gone());
        // Nothing else holds it, so its descriptor is closed with it.
        assert_eq!(Arc::strong_count(&remote), 1);
    }

    #[test]
    fn a_pull_flush_that_dies_makes_the_daemon_not_live() {
        let health = Heartbeats::new();
        keep_watch(&health, || panic!("pull-flush dies (a test)"));
        let why = health.live().expect_err("still live");
        assert!(why.contains("pull-flush"), "{why}");
    }

    #[test]
    fn a_workers_words_reach_the_log_cut_short_and_escaped() {
        let long = format!("\u{202e}{}", "v".repeat(60_000));
        for text in [
            format!(r#"{{"type":"{long}","id":"x"}}"#),
            format!(r#"{{"type":"done","id":"x","{long}":1}}"#),
        ] {
            let why = parse_answer(&text).expect_err("unreadable");
            assert!(why.chars().count() < 500, "{} chars", why.chars().count());
            assert!(!why.contains('\u{202e}'), "{why}");
            assert!(why.contains(r"\u{202e}"), "{why}");
        }
        assert_eq!(peer_text("a\u{2066}b\n"), r"a\u{2066}b\n");
    }

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
