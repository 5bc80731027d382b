//! A remote worker's connection and its reader thread (`pull-N`): taken over
//! from `/api/work`, seated in the pool, and read until it goes.
//!
//! Owns: connecting a remote ([`RemoteWorkers::connect`]: counted, seated,
//! its thread started) and its leaving; the reader's loop (answers in, a ping
//! when the worker is quiet, its Close); what a worker may send
//! (`{"type":"done"|"failed","id":…}`, at most 64 KiB) and the refusal of
//! anything else; `Duplex`, the reader's view of the socket, whose writes go
//! whole through the outbox and never wait; the "connected" and
//! "disconnected" log lines.
//!
//! Threads and channels: one thread per connected remote. It reads the
//! remote's socket, writes each answer to its task's one-slot answer channel
//! and gives the unit of credit back to the pool; a remote that sent Close or
//! broke the protocol is unseated before our Close is written. When the
//! remote goes, the reader fails its tasks left `worker gone`, lets go of any
//! frame under way (out of `pull-flush`'s set) and, as it ends, frees the
//! remote's descriptor and connection slot.
//!
//! Must not know: which worker thread sent a task or what becomes of its
//! answer (the verdict is the worker thread's), the order the pool offers
//! remotes in, or how the rest of a frame under way is written.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread;
use std::time::Duration;

use tiny_http::ConnectionSlot;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tungstenite::{Message, WebSocket};

use super::RemoteWorkers;
use super::credit::Seat;
use super::remote::Remote;
use crate::ops::logging::RateLimit;
use crate::pipeline::event::error_text;
use crate::work::Answer;

/// A connected worker that sends nothing for this long is pinged; one that
/// stays silent for another such period is taken for gone.
const QUIET_LIMIT: Duration = Duration::from_secs(15);

/// Largest message a worker may send (answers are small).
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// How much of a worker's own text goes into a log line or a close reason.
const PEER_TEXT_CHARS: usize = 200;

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

impl RemoteWorkers {
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
    pub(super) fn seat(
        self: &Arc<Self>,
        stream: TcpStream,
        held: Option<ConnectionSlot>,
        credit: usize,
        write_timeout: Duration,
    ) -> io::Result<(Arc<Remote>, WebSocket<Duplex>)> {
        stream.set_nodelay(true)?;
        let number = self.next_remote.fetch_add(1, Ordering::Relaxed);
        let remote = Arc::new(Remote::new(number, credit, stream, write_timeout, held));
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

    /// Takes a remote that has gone out of the pool and the counts.
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
pub(super) struct Duplex {
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
        if !self.remote_workers.flush(remote, &mut outbox)? && !watched {
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
    use crate::ops::health::Heartbeats;
    use crate::work::pull::Offer;
    use crate::work::pull::remote::gone;
    use crate::work::pull::testing::{
        MS, connected, eventually, is_behind, pair, remote_workers, taken, task_text, the_remote,
    };
    use std::time::Instant;
    use tungstenite::protocol::frame::Frame;
    use tungstenite::protocol::frame::coding::{Control, Data, OpCode};

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
}
