//! WebSocket transport: the handshake answer and the [`Sink`] over an
//! upgraded connection. The peer is never read: dashboards only listen.

use std::io;
use std::net::TcpStream;

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
pub struct WsSink(WebSocket<TcpStream>);

impl WsSink {
    /// Wraps a connection whose upgrade has been answered.
    pub fn new(stream: TcpStream) -> Self {
        WsSink(WebSocket::from_raw_socket(
            stream,
            Role::Server,
            Some(socket_config()),
        ))
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
        match self.0.write(Message::Text(text)) {
            // A would-block while writing out keeps the frame buffered: taken.
            Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
            other => other.map_err(io_error),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush().map_err(io_error)
    }

    fn set_blocking(&mut self, blocking: bool) -> io::Result<()> {
        self.0.get_ref().set_nonblocking(!blocking)
    }

    fn keepalive(&mut self) -> io::Result<()> {
        self.0
            .send(Message::Ping(Default::default()))
            .map_err(io_error)
    }

    fn goodbye(&mut self) {
        let _ = self.set_blocking(true);
        let close = CloseFrame {
            code: CloseCode::Away,
            reason: "server shutting down".into(),
        };
        let _ = self.0.close(Some(close)).and_then(|()| self.0.flush());
    }
}
