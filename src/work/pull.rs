//! `--work pull`: workers in any language connect to `GET /api/work` over
//! WebSocket and are handed admitted events as tasks, as many at once as the
//! credit they asked for (`?credit=N`).
//!
//! Owns: the [`Dispatcher`] (the credit channel and the gauges of connected
//! workers) and one [`Remote`] per connected worker: its socket's write side,
//! its tasks awaiting an answer, and its reader thread (`pull-N`).
//!
//! Channels:
//! - credit (unbounded, at most the connected workers' total credit): each
//!   token lets one task go to one remote worker. A remote puts its credit in
//!   when it connects and one token back for every task it answers; a worker
//!   thread takes one before it sends a task. Tokens of a remote that has gone
//!   are thrown away when taken.
//! - answer (one slot per task): the remote's reader thread writes the answer;
//!   the worker thread that sent the task waits on it until the deadline.
//!
//! A remote that disconnects fails its tasks in flight at once (`worker gone`).
//! A task abandoned at its deadline still holds its credit until the remote
//! answers it: the remote is still busy with it.

use std::collections::{HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use tiny_http::ConnectionSlot;
use tungstenite::protocol::frame::Frame;
use tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tungstenite::{Message, WebSocket};

use super::Answer;
use crate::event::error_text;
use crate::health::Heartbeats;

/// Most tasks one worker may ask to hold at once.
pub const MAX_CREDIT: usize = 1024;

/// A connected worker that sends nothing for this long is pinged; one that
/// stays silent for another such period is taken for gone.
const QUIET_LIMIT: Duration = Duration::from_secs(15);

/// Largest message a worker may send (answers are small).
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// The pull-mode hub: who is connected and who may take a task.
pub struct Dispatcher {
    credit_in: Sender<Credit>,
    credit_out: Receiver<Credit>,
    health: Arc<Heartbeats>,
    next_remote: AtomicU64,
    /// Workers connected; a mutex, so that the count and the readiness
    /// flag derived from it change together (connections are rare).
    connected: Mutex<usize>,
    credit: AtomicUsize,
    in_flight: AtomicUsize,
}

/// Leave to send one task to one remote worker.
pub struct Credit {
    remote: Arc<Remote>,
}

/// A connected worker.
pub struct Remote {
    name: String,
    open: AtomicBool,
    credit: usize,
    /// The socket's write side. Task frames and the reader's control frames
    /// (pong, close) are each written whole under this lock.
    writer: Arc<Mutex<TcpStream>>,
    /// Tasks sent and not answered, by event id, oldest first: ids chosen by
    /// producers may repeat, and a worker answers them in any order.
    pending: Mutex<HashMap<Box<str>, VecDeque<Sender<Answer>>>>,
    _held: Option<ConnectionSlot>,
}

impl Dispatcher {
    /// A dispatcher with no worker connected; `health` hears when there is none.
    pub fn new(health: Arc<Heartbeats>) -> Self {
        let (credit_in, credit_out) = crossbeam_channel::unbounded();
        health.set_no_workers(true);
        Dispatcher {
            credit_in,
            credit_out,
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
        loop {
            match self.credit_out.recv_deadline(until) {
                Ok(credit) if credit.remote.is_open() => return Some(credit),
                // A token of a worker that has gone: take the next.
                Ok(_) => continue,
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => return None,
            }
        }
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
        stream.set_write_timeout(Some(write_timeout))?;
        stream.set_read_timeout(Some(QUIET_LIMIT))?;
        stream.set_nodelay(true)?;
        let writer = Arc::new(Mutex::new(stream.try_clone()?));
        let number = self.next_remote.fetch_add(1, Ordering::Relaxed);
        let remote = Arc::new(Remote {
            name: format!("pull-{number}"),
            open: AtomicBool::new(true),
            credit,
            writer: Arc::clone(&writer),
            pending: Mutex::new(HashMap::new()),
            _held: held,
        });
        let socket = WebSocket::from_raw_socket(
            Duplex {
                read: stream,
                write: writer,
            },
            Role::Server,
            Some(socket_config()),
        );
        // Counted before its reader starts, which counts it out when it ends.
        self.count_connected(1);
        self.credit.fetch_add(credit, Ordering::Relaxed);
        let dispatcher = Arc::clone(self);
        let reader = Arc::clone(&remote);
        let started = thread::Builder::new()
            .name(remote.name.clone())
            .spawn(move || dispatcher.serve(reader, socket));
        if let Err(e) = started {
            remote.close();
            self.credit.fetch_sub(credit, Ordering::Relaxed);
            self.count_connected(-1);
            return Err(e);
        }
        for _ in 0..credit {
            self.give(Arc::clone(&remote));
        }
        log::info!("{} connected with credit {credit}", remote.name);
        Ok(())
    }

    fn give(&self, remote: Arc<Remote>) {
        // The dispatcher holds the receiving end itself: sending cannot fail.
        let _ = self.credit_in.send(Credit { remote });
    }

    /// The reader thread of one remote: answers in, until it goes.
    fn serve(&self, remote: Arc<Remote>, mut socket: WebSocket<Duplex>) {
        let why = self.read_answers(&remote, &mut socket);
        let failed = remote.close();
        self.in_flight.fetch_sub(failed, Ordering::Relaxed);
        self.credit.fetch_sub(remote.credit, Ordering::Relaxed);
        self.count_connected(-1);
        log::info!(
            "{} disconnected ({why}); {failed} tasks in flight failed",
            remote.name
        );
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
                        self.give(Arc::clone(remote));
                    } else {
                        log::debug!("{}: answer for unknown task {id:?}", remote.name);
                    }
                }
                Err(e) => return refuse(socket, &e),
            }
        }
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
    /// Sends `task` (the text of a task message for `id`) to this credit's
    /// worker; returns where its answer will come. A worker that cannot be
    /// written to is disconnected, and the answer is `worker gone`.
    pub fn send(self, dispatcher: &Dispatcher, id: &str, task: String) -> Receiver<Answer> {
        let (answer_in, answer_out) = crossbeam_channel::bounded(1);
        let remote = self.remote;
        if !remote.expect(id, answer_in.clone(), &dispatcher.in_flight) {
            let _ = answer_in.send(gone());
            return answer_out;
        }
        if let Err(e) = remote.write_task(task) {
            log::debug!("{}: task not written: {e}", remote.name);
            // The reader thread sees the connection end and fails every task.
            remote.shut_down();
        }
        answer_out
    }

    /// Returns unused leave to the pool.
    pub fn give_back(self, dispatcher: &Dispatcher) {
        if self.remote.is_open() {
            dispatcher.give(self.remote);
        }
    }
}

impl Remote {
    fn is_open(&self) -> bool {
        self.open.load(Ordering::Relaxed)
    }

    fn lock_pending(&self) -> MutexGuard<'_, HashMap<Box<str>, VecDeque<Sender<Answer>>>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
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

    fn write_task(&self, task: String) -> io::Result<()> {
        let frame = Frame::message(task, OpCode::Data(Data::Text), true);
        let mut bytes = Vec::with_capacity(frame.len());
        frame.format(&mut bytes).map_err(io::Error::other)?;
        let mut writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        writer.write_all(&bytes)
    }

    fn shut_down(&self) {
        let writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let _ = writer.shutdown(Shutdown::Both);
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

/// The reader's view of the socket: reads from its own handle, writes (pongs,
/// the close handshake) whole under the lock that task frames are written under.
struct Duplex {
    read: TcpStream,
    write: Arc<Mutex<TcpStream>>,
}

impl Read for Duplex {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.read.read(buf)
    }
}

impl Write for Duplex {
    /// Writes all of `buf` or fails: a frame is never left half-written for
    /// a task frame to be interleaved with.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut writer = self.write.lock().unwrap_or_else(|e| e.into_inner());
        writer.write_all(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
