//! WebSocket transport: the handshake answer and the [`Sink`] over an
//! upgraded connection. The peer is never read: dashboards only listen.

use std::io;
use std::net::TcpStream;

use tiny_http::ConnectionSlot;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tungstenite::{Message, Utf8Bytes, WebSocket};

use super::Sink;
use crate::hub::Broadcast;

/// Most bytes a client's WebSocket buffers while its socket does not take
/// them; past it the fast path leaves the rest to the client's own thread.
const MAX_BUFFERED: usize = 64 * 1024;

/// Buffers sized for a peer we only write to: a tiny read buffer (we never
/// read), and a write buffer that gathers a batch before it is flushed.
fn socket_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(256)
        .write_buffer_size(16 * 1024)
        .max_write_buffer_size(MAX_BUFFERED)
        .max_message_size(Some(64 * 1024))
        .max_frame_size(Some(64 * 1024))
}

/// Value of `Sec-WebSocket-Accept` for a client's `Sec-WebSocket-Key`.
pub fn accept_key(client_key: &str) -> String {
    tungstenite::handshake::derive_accept_key(client_key.trim().as_bytes())
}

/// A server-side WebSocket over a socket whose upgrade has been answered.
pub struct WsSink {
    socket: WebSocket<TcpStream>,
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
            _held: held,
        }
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
        // The hub serialised with serde_json, which only writes UTF-8.
        let text = Utf8Bytes::try_from(message.json.clone()).map_err(io::Error::other)?;
        match self.socket.write(Message::Text(text)) {
            // A would-block while writing out keeps the frame buffered: taken.
            Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
            other => other.map_err(io_error),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.socket.flush().map_err(io_error)
    }

    fn set_blocking(&mut self, blocking: bool) -> io::Result<()> {
        self.socket.get_ref().set_nonblocking(!blocking)
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
