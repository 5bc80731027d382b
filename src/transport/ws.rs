//! WebSocket transport: the handshake answer and the [`Sink`] over an
//! upgraded connection. The peer is never read: dashboards only listen.

use std::io::{self, Read, Write};

use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tungstenite::{Message, Utf8Bytes, WebSocket};

use crate::hub::Broadcast;
use crate::transport::Sink;

/// Buffers sized for a peer we only write to: a tiny read buffer (we never
/// read), and a write buffer that gathers one batch before it is flushed.
fn socket_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(256)
        .write_buffer_size(64 * 1024)
        .max_message_size(Some(64 * 1024))
        .max_frame_size(Some(64 * 1024))
}

/// Value of `Sec-WebSocket-Accept` for a client's `Sec-WebSocket-Key`.
pub fn accept_key(client_key: &str) -> String {
    tungstenite::handshake::derive_accept_key(client_key.trim().as_bytes())
}

/// A server-side WebSocket over an upgraded connection.
pub struct WsSink<S: Read + Write>(WebSocket<S>);

impl<S: Read + Write> WsSink<S> {
    /// Wraps a connection whose upgrade has been answered.
    pub fn new(stream: S) -> Self {
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
        other => io::Error::other(other),
    }
}

impl<S: Read + Write> Sink for WsSink<S> {
    fn write_batch(&mut self, batch: &mut Vec<Broadcast>) -> io::Result<()> {
        for message in batch.drain(..) {
            // The hub serialised with serde_json, which only writes UTF-8.
            let text = Utf8Bytes::try_from(message.json).map_err(io::Error::other)?;
            self.0.write(Message::Text(text)).map_err(io_error)?;
        }
        self.0.flush().map_err(io_error)
    }

    fn keepalive(&mut self) -> io::Result<()> {
        self.0
            .send(Message::Ping(Default::default()))
            .map_err(io_error)
    }

    fn goodbye(&mut self) {
        let close = CloseFrame {
            code: CloseCode::Away,
            reason: "server shutting down".into(),
        };
        let _ = self.0.close(Some(close)).and_then(|()| self.0.flush());
    }
}
