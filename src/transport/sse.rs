//! Server-Sent Events transport: `GET /events` as a `text/event-stream`.
//!
//! tiny_http hands over the raw connection; the head is written here and the
//! stream ends when the connection closes, so no chunked encoding is needed.

use std::io::{self, BufWriter, Write};

use crate::hub::{Broadcast, Kind};
use crate::transport::Sink;

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

/// An event stream over a raw HTTP connection.
pub struct SseSink<W: Write>(BufWriter<W>);

impl<W: Write> SseSink<W> {
    /// Writes the head of the stream; the stream is live once this returns.
    /// `cors_origin` (`*` or an origin, never raw client input) is sent as
    /// `Access-Control-Allow-Origin`.
    pub fn open(writer: W, cors_origin: Option<&str>) -> io::Result<Self> {
        let mut sink = SseSink(BufWriter::with_capacity(64 * 1024, writer));
        sink.0.write_all(preamble(cors_origin).as_bytes())?;
        sink.0.flush()?;
        Ok(sink)
    }
}

/// One SSE message. Outcomes carry their `seq` as the event id, which is what
/// a reconnecting `EventSource` sends back as `Last-Event-ID`.
fn frame(out: &mut impl Write, message: &Broadcast) -> io::Result<()> {
    match message.kind {
        Kind::Event => write!(out, "id: {}\nevent: event\ndata: ", message.seq)?,
        Kind::Stats => out.write_all(b"event: stats\ndata: ")?,
        Kind::Gap => out.write_all(b"event: gap\ndata: ")?,
    }
    // serde_json escapes newlines inside strings, so the JSON is one line.
    out.write_all(&message.json)?;
    out.write_all(b"\n\n")
}

impl<W: Write> Sink for SseSink<W> {
    fn write_batch(&mut self, batch: &mut Vec<Broadcast>) -> io::Result<()> {
        for message in batch.drain(..) {
            frame(&mut self.0, &message)?;
        }
        self.0.flush()
    }

    fn keepalive(&mut self) -> io::Result<()> {
        self.0.write_all(b": keep-alive\n\n")?;
        self.0.flush()
    }

    fn goodbye(&mut self) {
        let _ = self.0.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn an_outcome_becomes_one_sse_message_with_its_seq_as_id() {
        let message = Broadcast {
            kind: Kind::Event,
            seq: 42,
            status: "late",
            json: Bytes::from_static(br#"{"seq":42}"#),
        };
        let mut out = Vec::new();
        frame(&mut out, &message).expect("write to memory");
        assert_eq!(out, b"id: 42\nevent: event\ndata: {\"seq\":42}\n\n");
    }
}
