//! Server-Sent Events transport: `GET /events` as a `text/event-stream`.
//!
//! tiny_http hands over the raw connection; the head is written here and the
//! stream ends when the connection closes, so no chunked encoding is needed.

use std::io::{self, BufWriter, Write};

use crate::hub::{Broadcast, Kind};
use crate::transport::Sink;

/// How long a browser's `EventSource` waits before reconnecting, in ms.
const RETRY_MS: u64 = 2000;

/// The response head and the reconnect hint that open every stream.
fn preamble() -> String {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n\
         X-Accel-Buffering: no\r\nConnection: close\r\n\r\nretry: {RETRY_MS}\n\n"
    )
}

/// An event stream over a raw HTTP connection.
pub struct SseSink<W: Write>(BufWriter<W>);

impl<W: Write> SseSink<W> {
    /// Writes the head of the stream; the stream is live once this returns.
    pub fn open(writer: W) -> io::Result<Self> {
        let mut sink = SseSink(BufWriter::with_capacity(64 * 1024, writer));
        sink.0.write_all(preamble().as_bytes())?;
        sink.0.flush()?;
        Ok(sink)
    }
}

/// One SSE message. Outcomes carry their `seq` as the event id, which is what
/// a reconnecting `EventSource` sends back as `Last-Event-ID`.
fn frame(out: &mut impl Write, message: &Broadcast) -> io::Result<()> {
    match message.kind {
        Kind::Event => write!(out, "id: {}\nevent: event\n", message.seq)?,
        Kind::Stats => out.write_all(b"event: stats\n")?,
        Kind::Gap => out.write_all(b"event: gap\n")?,
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

    #[test]
    fn a_message_with_line_breaks_becomes_several_data_lines() {
        let message = Broadcast {
            kind: Kind::Stats,
            seq: 0,
            status: "",
            json: Bytes::from_static(b"{\"a\":\n1,\r\n\"b\":\r2}"),
        };
        let mut out = Vec::new();
        frame(&mut out, &message).expect("write to memory");
        assert_eq!(
            out,
            b"event: stats\ndata: {\"a\":\ndata: 1,\ndata: \"b\":\ndata: 2}\n\n"
        );
    }
}
