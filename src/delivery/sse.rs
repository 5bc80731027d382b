//! Server-Sent Events transport: `GET /events` as a `text/event-stream`.
//!
//! tiny_http hands over the socket; the head is written here and the stream
//! ends when the connection closes, so no chunked encoding is needed.
//!
//! An outcome's SSE id is `EPOCH:SEQ`: a reconnecting `EventSource` sends it
//! back in `Last-Event-ID` by itself, so the resume names its run. Notices
//! (`hello`, `reset`, `gap`) carry no id: a client that drops right after one
//! must resume from the last outcome it really got, not from the notice.

use std::io::{self, Write};
use std::net::TcpStream;

use tiny_http::ConnectionSlot;

use super::message::{Broadcast, Kind};
use super::shared_log::switched_to;
use super::{MAX_BUFFERED, Sink, is_large};
use crate::epoch::Epoch;

/// How long a browser's `EventSource` waits before reconnecting, in ms.
const RETRY_MS: u64 = 2000;

/// The response head and the reconnect hint that open every stream. A page
/// of another site admitted by `--allowed-origin` needs `cors_origin` named in
/// `Access-Control-Allow-Origin`, or its browser withholds the stream.
fn preamble(cors_origin: Option<&str>) -> String {
    let cors = cors_origin
        .map(|origin| format!("Access-Control-Allow-Origin: {origin}\r\nVary: Origin\r\n"))
        .unwrap_or_default();
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n\
         X-Accel-Buffering: no\r\n{cors}Connection: close\r\n\r\nretry: {RETRY_MS}\n\n"
    )
}

/// An event stream over a socket.
pub struct SseSink {
    socket: TcpStream,
    /// Keeps the connection counted under the front's cap while it is open.
    _held: Option<ConnectionSlot>,
    /// Framed bytes the socket has not taken yet.
    pending: Vec<u8>,
    epoch: Epoch,
    /// Writes block (the slow path): a would-block is then the send timeout.
    blocking: bool,
}

impl SseSink {
    /// Writes the head of the stream (blocking); the stream is live once
    /// this returns. `epoch` is the run's, written into every outcome's id;
    /// `cors_origin` (`*` or an origin, never raw client input) is sent as
    /// `Access-Control-Allow-Origin`.
    pub fn open(
        mut socket: TcpStream,
        held: Option<ConnectionSlot>,
        epoch: Epoch,
        cors_origin: Option<&str>,
    ) -> io::Result<Self> {
        socket.write_all(preamble(cors_origin).as_bytes())?;
        super::bound_send_buffer(&socket);
        Ok(SseSink {
            socket,
            _held: held,
            pending: Vec::with_capacity(4096),
            epoch,
            blocking: true,
        })
    }
}

/// One SSE message. Outcomes carry `EPOCH:SEQ` as the event id, which is
/// what a reconnecting `EventSource` sends back as `Last-Event-ID`, and no
/// event name, so they reach `onmessage`; notices and stats are named events,
/// which `onmessage` ignores.
fn frame(out: &mut impl Write, epoch: &Epoch, message: &Broadcast) -> io::Result<()> {
    match message.kind {
        Kind::Event => writeln!(out, "id: {epoch}:{}", message.seq)?,
        Kind::Stats => out.write_all(b"event: stats\n")?,
        Kind::Gap => out.write_all(b"event: gap\n")?,
        Kind::Hello => out.write_all(b"event: hello\n")?,
        Kind::Reset => out.write_all(b"event: reset\n")?,
    }
    write_data(out, &message.json)?;
    out.write_all(b"\n")
}

/// Writes `data` as `data:` lines. The messages are one-line JSON, but a line
/// break inside one would end the field early and corrupt the stream, so any
/// break (LF, CR or CRLF, as the SSE spec reads them) starts a new `data:`
/// line instead; a client joins them back with `\n`.
fn write_data(out: &mut impl Write, data: &[u8]) -> io::Result<()> {
    let mut rest = data;
    loop {
        let end = rest
            .iter()
            .position(|b| matches!(b, b'\n' | b'\r'))
            .unwrap_or(rest.len());
        out.write_all(b"data: ")?;
        out.write_all(&rest[..end])?;
        out.write_all(b"\n")?;
        if end == rest.len() {
            return Ok(());
        }
        let break_len = if rest[end..].starts_with(b"\r\n") {
            2
        } else {
            1
        };
        rest = &rest[end + break_len..];
    }
}

impl Sink for SseSink {
    fn write_message(&mut self, message: &Broadcast) -> io::Result<()> {
        if let Some(epoch) = switched_to(message) {
            self.epoch = epoch;
        }
        if is_large(message) {
            // Not copied into this stream's buffer: on the fast path it is
            // left to the client's own thread, which writes it straight to
            // the socket after what is pending.
            if !self.blocking {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            self.flush()?;
            return frame(&mut self.socket, &self.epoch, message)
                .map_err(|e| super::ws::timed_out_if_blocking(e, true));
        }
        // A message goes in only if the buffer stays within MAX_BUFFERED
        // (an empty buffer takes any message that is not large), so what a
        // stream holds is bounded as a WebSocket's is.
        if !self.pending.is_empty() && self.pending.len() + message.json.len() > MAX_BUFFERED {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        frame(&mut self.pending, &self.epoch, message)
    }

    fn flush(&mut self) -> io::Result<()> {
        while !self.pending.is_empty() {
            match self.socket.write(&self.pending) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.pending.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(super::ws::timed_out_if_blocking(e, self.blocking)),
            }
        }
        Ok(())
    }

    fn set_blocking(&mut self, blocking: bool) -> io::Result<()> {
        self.socket.set_nonblocking(!blocking)?;
        self.blocking = blocking;
        Ok(())
    }

    /// An event stream has no close code: the named `gap` event says it (it
    /// does not reach `onmessage`), and the stream goes on.
    fn fell_behind(&mut self, gap: &Broadcast, _from: u64, _to: u64) -> io::Result<()> {
        frame(&mut self.pending, &self.epoch, gap)?;
        self.flush()
    }

    /// The named `reset` event says it, and from here on ids carry the new
    /// run's epoch, so `Last-Event-ID` names the run its seq is from.
    fn restarted(&mut self, reset: &Broadcast) -> io::Result<()> {
        self.write_message(reset)?;
        self.flush()
    }

    fn keepalive(&mut self) -> io::Result<()> {
        self.pending.extend_from_slice(b": keep-alive\n\n");
        self.flush()
    }

    fn goodbye(&mut self) {
        let _ = self.set_blocking(true);
        let _ = self.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn an_outcome_becomes_one_unnamed_sse_message_with_epoch_and_seq_as_id() {
        let epoch = Epoch::parse("0123abcd4567ef89").expect("valid epoch");
        let message = Broadcast {
            kind: Kind::Event,
            seq: 42,
            status: "late",
            json: Bytes::from_static(br#"{"seq":42}"#),
        };
        let mut out = Vec::new();
        frame(&mut out, &epoch, &message).expect("write to memory");
        assert_eq!(
            String::from_utf8_lossy(&out),
            "id: 0123abcd4567ef89:42\ndata: {\"seq\":42}\n\n"
        );
    }

    #[test]
    fn a_stream_buffers_no_more_than_a_websocket_does() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let _peer = TcpStream::connect(listener.local_addr().expect("address")).expect("connect");
        let (socket, _) = listener.accept().expect("accept");
        let epoch = Epoch::parse("e").expect("valid epoch");
        let mut sink = SseSink::open(socket, None, epoch, None).expect("open the stream");
        let message = Broadcast {
            kind: Kind::Event,
            seq: 1,
            status: "on-time",
            json: Bytes::from(vec![b'x'; MAX_BUFFERED * 5 / 8]),
        };
        // Nothing is flushed: every message stays in the stream's buffer.
        let taken = (0..4)
            .take_while(|_| sink.write_message(&message).is_ok())
            .count();
        assert_eq!(taken, 1, "a second message would overfill the buffer");
        assert!(sink.pending.len() <= MAX_BUFFERED);
    }

    #[test]
    fn a_notice_has_its_own_event_name_and_no_id() {
        let epoch = Epoch::parse("e").expect("valid epoch");
        let message = Broadcast {
            kind: Kind::Reset,
            seq: 0,
            status: "",
            json: Bytes::from_static(br#"{"type":"reset"}"#),
        };
        let mut out = Vec::new();
        frame(&mut out, &epoch, &message).expect("write to memory");
        assert_eq!(
            String::from_utf8_lossy(&out),
            "event: reset\ndata: {\"type\":\"reset\"}\n\n"
        );
    }

    #[test]
    fn a_message_with_line_breaks_becomes_several_data_lines() {
        let message = Broadcast {
            kind: Kind::Stats,
            seq: 0,
            status: "",
            json: Bytes::from_static(b"{\"a\":\n1,\r\n\"b\":\r2}"),
        };
        let mut out = Vec::new();
        let epoch = Epoch::parse("e").expect("valid epoch");
        frame(&mut out, &epoch, &message).expect("write to memory");
        assert_eq!(
            out,
            b"event: stats\ndata: {\"a\":\ndata: 1,\ndata: \"b\":\ndata: 2}\n\n"
        );
    }
}
