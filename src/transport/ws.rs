//! WebSocket transport: the handshake answer and the per-client writer thread.
//!
//! The writer drains everything queued for its client on each wake and flushes
//! once, so a burst costs one write, not one per message. It pings an idle
//! client every [`PING_IDLE`], and ends as soon as a write fails — a client
//! that went away, or whose socket stayed unwritable past the socket's send
//! timeout. The peer is never read: dashboards only listen.

use std::io::{self, Read, Write};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tungstenite::{Message, Utf8Bytes, WebSocket};

use crate::fanout::{Batch, ClientQueue};
use crate::hub::Broadcast;
use crate::transport::Slot;

/// An idle client gets a Ping after this long without messages.
pub const PING_IDLE: Duration = Duration::from_secs(15);

/// Stack of a writer thread: it only moves buffers around, and thousands of
/// them must fit.
const WRITER_STACK: usize = 128 * 1024;

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

/// Starts the writer thread for an upgraded connection.
pub fn spawn_writer<S>(
    stream: S,
    queue: Arc<ClientQueue>,
    slot: Slot,
    name: String,
) -> io::Result<()>
where
    S: Read + Write + Send + 'static,
{
    let socket = WebSocket::from_raw_socket(stream, Role::Server, Some(socket_config()));
    thread::Builder::new()
        .name(name)
        .stack_size(WRITER_STACK)
        .spawn(move || {
            let ended = write_until_closed(socket, &queue);
            // Whatever ended the writer, the fan-out forgets this client at
            // its next message and the slot is free now.
            queue.close();
            drop(slot);
            log::debug!(
                "{} ended: {ended}",
                thread::current().name().unwrap_or("ws")
            );
        })?;
    Ok(())
}

/// Writes queued messages until the queue closes (server shutdown: Close
/// 1001) or a write fails. Returns why it ended, for the debug log.
fn write_until_closed<S: Read + Write>(mut socket: WebSocket<S>, queue: &ClientQueue) -> String {
    let mut batch: Vec<Broadcast> = Vec::new();
    loop {
        let sent = match queue.take_all(&mut batch, PING_IDLE) {
            Batch::Messages => write_batch(&mut socket, &mut batch),
            Batch::Idle => socket.send(Message::Ping(Default::default())),
            Batch::Closed => {
                let goodbye = CloseFrame {
                    code: CloseCode::Away,
                    reason: "server shutting down".into(),
                };
                let _ = socket.close(Some(goodbye)).and_then(|()| socket.flush());
                return "server closed the stream".into();
            }
        };
        if let Err(e) = sent {
            return format!("write failed: {e}");
        }
    }
}

fn write_batch<S: Read + Write>(
    socket: &mut WebSocket<S>,
    batch: &mut Vec<Broadcast>,
) -> tungstenite::Result<()> {
    for message in batch.drain(..) {
        // The hub serialised with serde_json, which only writes UTF-8.
        let text = Utf8Bytes::try_from(message.json)
            .map_err(|_| tungstenite::Error::Utf8("outcome".into()))?;
        socket.write(Message::Text(text))?;
    }
    socket.flush()
}
