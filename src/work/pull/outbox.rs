//! Writing on a remote worker's socket without ever waiting: the [`Outbox`]
//! of frames the socket has not taken all of, and the reader's control
//! frames kept for after them.
//!
//! Owns: the `Outbox` (what is left of the frames under way, when the socket
//! last took some, the task whose frame is under way, the pong, ping and
//! close kept for after them), a task's frame ([`task_frame`]), and every
//! write on a remote's socket: non-blocking (`MSG_DONTWAIT`), under the
//! remote's outbox lock, whole frames only ([`Outbox::start`],
//! [`Outbox::flush`]). What the socket does not take makes the remote
//! *behind*; a flush that catches up says so ([`Flushed::CaughtUp`]), and
//! `RemoteWorkers::flush` then wakes the worker threads waiting on the pool.
//!
//! Threads: called, with the outbox lock held, by worker threads (a task's
//! frame), by a remote's reader (its pongs, pings and close) and by
//! `pull-flush` (the rest of what is under way). Reads and writes no
//! channel.
//!
//! Must not know: what a task or its answer says, which remote the pool
//! offers next, or epoll (who writes the rest is the caller's business).

use std::io;
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use crossbeam_channel::Sender;
use rustix::io::Errno;
use rustix::net::SendFlags;
use tungstenite::protocol::frame::coding::{Control, Data, OpCode};
use tungstenite::protocol::frame::{Frame, FrameHeader};

use crate::work::Answer;

/// A frame under way keeps its buffer for the next one up to this size; a
/// larger one (a webhook's megabyte) is given back once written.
const KEPT_OUTBOX_BYTES: usize = 64 * 1024;

/// The frames the socket could not take whole, and the reader's frames
/// waiting for them. Frames are whole on the wire: nothing else is written
/// until these are.
pub(super) struct Outbox {
    /// The frames under way; what the socket has not taken starts at `rest_at`.
    rest: Vec<u8>,
    rest_at: usize,
    /// When the socket last took some of the frame under way, whichever
    /// thread wrote it (or when the frame was started): a stall is measured
    /// from here, so no writer takes another's progress for none.
    pub(super) progress_at: Instant,
    /// The task whose frame is under way (none for the reader's frames): it
    /// fails `worker too slow` if its remote is dropped for not taking it.
    pub(super) task: Option<(Box<str>, Sender<Answer>)>,
    /// The reader's frames waiting for those under way, written in this
    /// order after them. Only the latest pong is kept (a newer ping's pong
    /// replaces it, as RFC 6455 allows), so the slot stays small whatever
    /// a worker sends; nothing is kept once a close is.
    pong: Option<Vec<u8>>,
    ping: Option<Vec<u8>>,
    close: Option<Vec<u8>>,
}

impl Outbox {
    pub(super) fn new() -> Self {
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

    pub(super) fn left(&self) -> usize {
        self.rest.len() - self.rest_at
    }

    /// Keeps the reader's frames in `bytes` (whole control frames, as
    /// tungstenite writes them) for after the frames under way.
    pub(super) fn keep_controls(&mut self, bytes: &[u8]) -> io::Result<()> {
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

/// The bytes of a task message: one whole text frame.
pub(super) fn task_frame(task: String) -> Vec<u8> {
    let frame = Frame::message(task, OpCode::Data(Data::Text), true);
    let mut bytes = Vec::with_capacity(frame.len());
    // Formatting into a vector cannot fail.
    let _ = frame.format(&mut bytes);
    bytes
}

impl Outbox {
    /// Writes what `stream` takes now of the frames under way, then the
    /// reader's frames kept for after them. `behind` is set while some is
    /// left; [`Flushed::CaughtUp`] says it was set and no longer is, so the
    /// caller can wake whoever waits for the remote's room.
    pub(super) fn flush(&mut self, stream: &TcpStream, behind: &AtomicBool) -> io::Result<Flushed> {
        loop {
            if self.left() > 0 {
                let sent = send_now(stream, &self.rest[self.rest_at..])?;
                if sent > 0 {
                    self.rest_at += sent;
                    self.progress_at = Instant::now();
                }
                if self.left() > 0 {
                    behind.store(true, Ordering::Relaxed);
                    return Ok(Flushed::Left);
                }
                self.rest.clear();
                self.rest.shrink_to(KEPT_OUTBOX_BYTES);
                self.rest_at = 0;
                self.task = None;
            }
            let Some(controls) = self.take_controls() else {
                break;
            };
            self.rest = controls;
            self.progress_at = Instant::now();
        }
        if behind.swap(false, Ordering::Relaxed) {
            Ok(Flushed::CaughtUp)
        } else {
            Ok(Flushed::Empty)
        }
    }

    /// Writes `frame` (none under way) as far as `stream` takes it now;
    /// whether some of it is left for later, `behind` then set.
    pub(super) fn start(
        &mut self,
        stream: &TcpStream,
        behind: &AtomicBool,
        frame: &[u8],
    ) -> io::Result<bool> {
        let sent = send_now(stream, frame)?;
        if sent == frame.len() {
            return Ok(false);
        }
        self.rest.extend_from_slice(&frame[sent..]);
        self.progress_at = Instant::now();
        behind.store(true, Ordering::Relaxed);
        Ok(true)
    }
}

/// What a flush left.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Flushed {
    /// Some is left: the socket is full.
    Left,
    /// All went, and nothing was behind.
    Empty,
    /// All went, and the remote was behind until now.
    CaughtUp,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::work::pull::testing::{MS, connected, is_behind, taken, the_remote};
    use std::thread;
    use tungstenite::protocol::Role;
    use tungstenite::{Message, WebSocket};

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
}
