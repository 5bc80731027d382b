//! WebSocket transport: the handshake answer and the [`Sink`] over an
//! upgraded connection. Dashboards only listen, but their sockets are still
//! read when the inbound thread says the peer spoke: a ping is answered with
//! a pong, a close with a close (then the client ends), data is ignored, and
//! a peer that sends too much is cut off.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::Instant;

use tiny_http::ConnectionSlot;
use tungstenite::protocol::frame::FrameHeader;
use tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tungstenite::{Message, Utf8Bytes, WebSocket};

use super::inbound::Watched;
use super::message::Broadcast;
use super::{MAX_BUFFERED, Sink, is_large};

/// Most bytes of a WebSocket frame's head (RFC 6455 §5.2: 2, plus 8 for a
/// 64-bit length, plus 4 for a mask a server never sends).
const MAX_FRAME_HEAD: usize = 14;

/// Largest frame or message a dashboard may send. It has nothing to say
/// but pings (at most 125 bytes by RFC 6455) and a close; a larger one is
/// refused with 1009 and ends the client, so a peer controls at most about
/// twice this of the daemon's memory (a frame being read, a message being
/// put together).
const MAX_INBOUND: usize = 4 * 1024;

/// What a peer may make its client's thread do at once, and how much more it
/// earns a second, in units: one per wake-up, one per message, one per KiB
/// read. A client library's ping every 20 s or so costs 2; past the
/// allowance the peer is flooding and is cut off with 1008, so neither a
/// stream of tiny segments nor a message fragmented without end keeps a
/// thread busy.
const INBOUND_BURST: f64 = 32.0;
const INBOUND_PER_SECOND: f64 = 1.0;

/// Most bytes one wake-up reads: a peer that sends faster than they are read
/// would otherwise keep its thread in one read loop for ever.
const MAX_READ_PER_WAKE: usize = 8 * 1024;

/// The client's socket, counting what is read from it per wake-up.
struct PeerSocket {
    stream: TcpStream,
    /// Bytes read since the wake-up began; reading stops at [`MAX_READ_PER_WAKE`].
    read: usize,
}

impl Read for PeerSocket {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = MAX_READ_PER_WAKE.saturating_sub(self.read);
        if left == 0 {
            return Err(io::Error::other(OVER_BUDGET));
        }
        let n = buf.len().min(left);
        let read = self.stream.read(&mut buf[..n])?;
        self.read += read;
        Ok(read)
    }
}

impl Write for PeerSocket {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.stream.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.stream.flush()
    }
}

const OVER_BUDGET: &str = "the peer sent more than 8 KiB at once";

/// Buffers sized for a peer that mostly listens: a small read buffer (pings
/// and a close), and a write buffer that gathers a batch before it is flushed.
fn socket_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(256)
        .write_buffer_size(16 * 1024)
        // Any message up to MAX_BUFFERED fits once the buffer has drained
        // (tungstenite refuses a frame that would overfill it); larger ones
        // are written around it (`write_large`).
        .max_write_buffer_size(MAX_BUFFERED + MAX_FRAME_HEAD)
        .max_message_size(Some(MAX_INBOUND))
        .max_frame_size(Some(MAX_INBOUND))
}

/// Close code for a plain client that fell off the log (the 4000 range is
/// the application's own, RFC 6455 §7.4.2).
pub const FELL_BEHIND: u16 = 4001;

/// Value of `Sec-WebSocket-Accept` for a client's `Sec-WebSocket-Key`.
pub fn accept_key(client_key: &str) -> String {
    tungstenite::handshake::derive_accept_key(client_key.trim().as_bytes())
}

/// A server-side WebSocket over a socket whose upgrade has been answered.
pub struct WsSink {
    socket: WebSocket<PeerSocket>,
    /// Writes block (the slow path): a would-block is then the send timeout.
    blocking: bool,
    /// Units the peer may still spend now (see [`INBOUND_BURST`]), as of `heard_at`.
    allowance: f64,
    heard_at: Instant,
    /// The inbound thread watches the socket while the sink lives.
    _watched: Option<Watched>,
    /// Keeps the connection counted under the front's cap while it is open.
    _held: Option<ConnectionSlot>,
}

impl WsSink {
    /// Wraps a connection whose upgrade has been answered; `held` is its
    /// place under the connection cap, `watched` its registration with the
    /// inbound thread (without one, what the peer sends is never read).
    pub fn new(stream: TcpStream, held: Option<ConnectionSlot>, watched: Option<Watched>) -> Self {
        super::bound_send_buffer(&stream);
        WsSink {
            socket: WebSocket::from_raw_socket(
                PeerSocket { stream, read: 0 },
                Role::Server,
                Some(socket_config()),
            ),
            blocking: true,
            allowance: INBOUND_BURST,
            heard_at: Instant::now(),
            _watched: watched,
            _held: held,
        }
    }

    /// Reads frames until the socket would block. tungstenite queues the
    /// answer to a ping or a close itself and writes it before its next read.
    fn read_frames(&mut self) -> io::Result<()> {
        loop {
            let message = match self.socket.read() {
                Ok(message) => message,
                Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Ok(());
                }
                Err(e) => return Err(self.refuse(e)),
            };
            self.spend(1.0)?;
            if let Message::Close(_) = message {
                // The echo is queued: send it (bounded by the write timeout)
                // and end; dropping the socket then closes the connection,
                // which RFC 6455 leaves to the server.
                let _ = self.set_blocking(true);
                let _ = self.socket.flush();
                return Err(io::Error::other("the peer closed the WebSocket"));
            }
            // Pings are answered by tungstenite; pongs and data are ignored.
        }
    }

    /// Takes `units` from the peer's allowance; a peer past it is cut off.
    fn spend(&mut self, units: f64) -> io::Result<()> {
        let now = Instant::now();
        let earned = now.duration_since(self.heard_at).as_secs_f64() * INBOUND_PER_SECOND;
        self.heard_at = now;
        self.allowance = (self.allowance + earned).min(INBOUND_BURST) - units;
        if self.allowance < 0.0 {
            self.close_with(
                CloseCode::Policy,
                "too much, too often: a dashboard only listens",
            );
            return Err(io::Error::other("the peer flooded the WebSocket"));
        }
        Ok(())
    }

    /// What ends a client whose peer broke the protocol, sent too large a
    /// frame, or went away; the peer is told why where it can still hear.
    fn refuse(&mut self, e: tungstenite::Error) -> io::Error {
        match e {
            tungstenite::Error::Capacity(e) => {
                self.close_with(CloseCode::Size, "a dashboard sends at most 4 KiB at once");
                io::Error::other(format!("the peer sent too much: {e}"))
            }
            tungstenite::Error::Protocol(e) => {
                self.close_with(CloseCode::Protocol, "WebSocket protocol error");
                io::Error::other(format!("the peer broke the WebSocket protocol: {e}"))
            }
            tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed => {
                io::Error::other("the peer closed the WebSocket")
            }
            tungstenite::Error::Io(_) if self.socket.get_ref().read >= MAX_READ_PER_WAKE => {
                self.close_with(
                    CloseCode::Policy,
                    "too much at once: a dashboard only listens",
                );
                io::Error::other(OVER_BUDGET)
            }
            other => io_error(other),
        }
    }

    /// Sends a close frame with `code` and `reason` (best effort, bounded by
    /// the write timeout): the client ends whether or not it got out.
    fn close_with(&mut self, code: CloseCode, reason: &str) {
        let _ = self.set_blocking(true);
        let close = CloseFrame {
            code,
            reason: reason.into(),
        };
        let _ = self
            .socket
            .close(Some(close))
            .and_then(|()| self.socket.flush());
    }

    /// Writes a message larger than the buffer as one text frame straight
    /// to the socket (blocking), after what is buffered, so frames stay in
    /// order. A time-out part-way leaves a torn frame: the error ends the
    /// client, which is what a timed-out write does anyway.
    fn write_large(&mut self, json: &[u8]) -> io::Result<()> {
        // Written around tungstenite, so its closing state is checked here:
        // nothing may follow a close frame.
        if !self.socket.can_write() {
            return Err(io::Error::other("the WebSocket is closing"));
        }
        self.flush()?;
        let mut head = Vec::with_capacity(MAX_FRAME_HEAD);
        let text = FrameHeader {
            opcode: OpCode::Data(Data::Text),
            ..FrameHeader::default()
        };
        text.format(json.len() as u64, &mut head)
            .map_err(io_error)?;
        let socket = &mut self.socket.get_mut().stream;
        socket
            .write_all(&head)
            .and_then(|()| socket.write_all(json))
            .and_then(|()| socket.flush())
            .map_err(|e| timed_out_if_blocking(e, true))
    }
}

/// A blocking write that would block has run out its send timeout
/// (`SO_SNDTIMEO`): a failure, never a message taken.
pub(super) fn timed_out_if_blocking(e: io::Error, blocking: bool) -> io::Error {
    if blocking && e.kind() == io::ErrorKind::WouldBlock {
        io::Error::new(
            io::ErrorKind::TimedOut,
            "the client took nothing within --write-timeout",
        )
    } else {
        e
    }
}

fn io_error(e: tungstenite::Error) -> io::Error {
    match e {
        tungstenite::Error::Io(e) => e,
        // The message was not taken: offer it again once the buffer drained.
        tungstenite::Error::WriteBufferFull(_) => io::ErrorKind::WouldBlock.into(),
        other => io::Error::other(other),
    }
}

impl Sink for WsSink {
    fn write_message(&mut self, message: &Broadcast) -> io::Result<()> {
        if is_large(message) {
            // Not taken on the fast path: the client's own thread writes it.
            if !self.blocking {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            return self.write_large(&message.json);
        }
        // The hub serialised with serde_json, which only writes UTF-8.
        let text = Utf8Bytes::try_from(message.json.clone()).map_err(io::Error::other)?;
        match self.socket.write(Message::Text(text)) {
            // A would-block while writing out keeps the frame buffered: taken.
            Err(tungstenite::Error::Io(e))
                if e.kind() == io::ErrorKind::WouldBlock && !self.blocking =>
            {
                Ok(())
            }
            other => other.map_err(|e| timed_out_if_blocking(io_error(e), self.blocking)),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.socket
            .flush()
            .map_err(|e| timed_out_if_blocking(io_error(e), self.blocking))
    }

    fn set_blocking(&mut self, blocking: bool) -> io::Result<()> {
        self.socket.get_ref().stream.set_nonblocking(!blocking)?;
        self.blocking = blocking;
        Ok(())
    }

    fn fell_behind(&mut self, _gap: &Broadcast, from: u64, to: u64) -> io::Result<()> {
        let reason = format!(
            "fell behind: missed outcomes {from}-{to}; reconnect with ?since= to be told of gaps instead"
        );
        self.close_with(CloseCode::Library(FELL_BEHIND), &reason);
        Err(io::Error::other(format!(
            "fell behind: missed outcomes {from}-{to}"
        )))
    }

    /// Closed with 1012 (service restart), which a client library reports
    /// and a reconnecting dashboard answers with its position: it then gets
    /// the `reset` and the new run from its start.
    fn restarted(&mut self, _reset: &Broadcast) -> io::Result<()> {
        self.close_with(
            CloseCode::Restart,
            "the processor restarted: reconnect with ?epoch=&since= to resume",
        );
        Err(io::Error::other(
            "a new run started: client closed with 1012",
        ))
    }

    fn keepalive(&mut self) -> io::Result<()> {
        self.socket
            .send(Message::Ping(Default::default()))
            .map_err(io_error)
    }

    fn goodbye(&mut self) {
        self.close_with(CloseCode::Away, "server shutting down");
    }

    fn hear(&mut self) -> io::Result<()> {
        let was_blocking = self.blocking;
        self.socket.get_mut().read = 0;
        self.set_blocking(false)?;
        self.read_frames()?;
        let read = self.socket.get_ref().read;
        self.spend(1.0 + read as f64 / 1024.0)?;
        // A pong still queued behind what the socket is sending goes out now,
        // on this (the client's own) thread: bounded by the write timeout,
        // and the fast path finds the sink taken meanwhile.
        self.set_blocking(true)?;
        self.flush()?;
        self.set_blocking(was_blocking)
    }
}
