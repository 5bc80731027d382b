//! WebSocket transport: the handshake answer and the [`Sink`] over an
//! upgraded connection. The peer is never read: dashboards only listen.

use std::io::{self, Write};
use std::net::TcpStream;

use tiny_http::ConnectionSlot;
use tungstenite::protocol::frame::FrameHeader;
use tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tungstenite::{Message, Utf8Bytes, WebSocket};

use super::{MAX_BUFFERED, Sink, is_large};
use crate::hub::Broadcast;

/// Most bytes of a WebSocket frame's head (RFC 6455 §5.2: 2, plus 8 for a
/// 64-bit length, plus 4 for a mask a server never sends).
const MAX_FRAME_HEAD: usize = 14;

/// Buffers sized for a peer we only write to: a tiny read buffer (we never
/// read), and a write buffer that gathers a batch before it is flushed.
fn socket_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(256)
        .write_buffer_size(16 * 1024)
        // Any message up to MAX_BUFFERED fits once the buffer has drained
        // (tungstenite refuses a frame that would overfill it); larger ones
        // are written around it (`write_large`).
        .max_write_buffer_size(MAX_BUFFERED + MAX_FRAME_HEAD)
        .max_message_size(Some(64 * 1024))
        .max_frame_size(Some(64 * 1024))
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
    socket: WebSocket<TcpStream>,
    /// Writes block (the slow path): a would-block is then the send timeout.
    blocking: bool,
    /// Keeps the connection counted under the front's cap while it is open.
    _held: Option<ConnectionSlot>,
}

impl WsSink {
    /// Wraps a connection whose upgrade has been answered; `held` is its
    /// place under the connection cap.
    pub fn new(stream: TcpStream, held: Option<ConnectionSlot>) -> Self {
        super::bound_send_buffer(&stream);
        WsSink {
            socket: WebSocket::from_raw_socket(stream, Role::Server, Some(socket_config())),
            blocking: true,
            _held: held,
        }
    }

    /// Writes a message larger than the buffer as one text frame straight
    /// to the socket (blocking), after what is buffered, so frames stay in
    /// order. A time-out part-way leaves a torn frame: the error ends the
    /// client, which is what a timed-out write does anyway.
    fn write_large(&mut self, json: &[u8]) -> io::Result<()> {
        self.flush()?;
        let mut head = Vec::with_capacity(MAX_FRAME_HEAD);
        let text = FrameHeader {
            opcode: OpCode::Data(Data::Text),
            ..FrameHeader::default()
        };
        text.format(json.len() as u64, &mut head)
            .map_err(io_error)?;
        let socket = self.socket.get_mut();
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
        self.socket.get_ref().set_nonblocking(!blocking)?;
        self.blocking = blocking;
        Ok(())
    }

    fn fell_behind(&mut self, _gap: &Broadcast, from: u64, to: u64) -> io::Result<()> {
        let close = CloseFrame {
            code: CloseCode::Library(FELL_BEHIND),
            reason: format!("fell behind: missed outcomes {from}-{to}; reconnect with ?since= to be told of gaps instead").into(),
        };
        // Best effort: the client ends whether or not the frame got out.
        let _ = self
            .socket
            .close(Some(close))
            .and_then(|()| self.socket.flush());
        Err(io::Error::other(format!(
            "fell behind: missed outcomes {from}-{to}"
        )))
    }

    fn keepalive(&mut self) -> io::Result<()> {
        self.socket
            .send(Message::Ping(Default::default()))
            .map_err(io_error)
    }

    fn goodbye(&mut self) {
        let _ = self.set_blocking(true);
        let close = CloseFrame {
            code: CloseCode::Away,
            reason: "server shutting down".into(),
        };
        let _ = self
            .socket
            .close(Some(close))
            .and_then(|()| self.socket.flush());
    }
}
