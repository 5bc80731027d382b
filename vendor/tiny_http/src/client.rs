use ascii::AsciiString;

use std::io::Error as IoError;
use std::io::Result as IoResult;
use std::io::{BufReader, BufWriter, ErrorKind, Read, Write};

use std::net::SocketAddr;
use std::str::FromStr;

use crate::common::{HTTPVersion, Method};
use crate::limits::ConnectionState;
use crate::util::RefinedTcpStream;
use std::sync::Arc;
use crate::util::{SequentialReader, SequentialReaderBuilder, SequentialWriterBuilder};
use crate::Request;

/// A ClientConnection is an object that will store a socket to a client
/// and return Request objects.
pub struct ClientConnection {
    // address of the client
    remote_addr: IoResult<Option<SocketAddr>>,

    // sequence of Readers to the stream, so that the data is not read in
    //  the wrong order
    source: SequentialReaderBuilder<BufReader<RefinedTcpStream>>,

    // sequence of Writers to the stream, to avoid writing response #2 before
    //  response #1
    sink: SequentialWriterBuilder<BufWriter<RefinedTcpStream>>,

    // Reader to read the next header from
    next_header_source: SequentialReader<BufReader<RefinedTcpStream>>,

    // set to true if we know that the previous request is the last one
    no_more_requests: bool,

    // true if the connection goes through SSL
    secure: bool,

    // (patch) deadlines and limits shared with the connection's streams
    state: Arc<ConnectionState>,

    // (patch) false until the first request has been read
    kept_alive: bool,
}

/// Error that can happen when reading a request.
#[derive(Debug)]
enum ReadError {
    WrongRequestLine,
    WrongHeader(HTTPVersion),
    /// the client sent an unrecognized `Expect` header
    ExpectationFailed(HTTPVersion),
    ReadIoError(IoError),
    /// (patch) the request line is longer than the limit
    RequestLineTooLong,
    /// (patch) the request head is larger than the limit
    HeadTooLarge,
}

/// (patch) Why a line could not be read.
enum LineError {
    Io(IoError),
    TooLong,
}

impl ClientConnection {
    /// Creates a new `ClientConnection` that takes ownership of the `TcpStream`.
    pub fn new(
        write_socket: RefinedTcpStream,
        mut read_socket: RefinedTcpStream,
    ) -> ClientConnection {
        let remote_addr = read_socket.peer_addr();
        let secure = read_socket.secure();
        let state = Arc::clone(read_socket.state());

        let mut source = SequentialReaderBuilder::new(BufReader::with_capacity(1024, read_socket));
        let first_header = source.next().unwrap();

        ClientConnection {
            source,
            sink: SequentialWriterBuilder::new(BufWriter::with_capacity(1024, write_socket)),
            remote_addr,
            next_header_source: first_header,
            no_more_requests: false,
            secure,
            state,
            kept_alive: false,
        }
    }

    /// true if the connection is HTTPS
    pub fn secure(&self) -> bool {
        self.secure
    }

    /// (patch) Answers a request that could not be read with a JSON error
    /// and marks the connection as closing.
    fn refuse(&mut self, status: u16, message: &str, version: HTTPVersion) {
        self.state.close();
        if let Some(mut writer) = self.sink.next() {
            // (patch) flushed now: a lingering close shuts the write side first
            json_error(status, message)
                .raw_print(&mut writer, version, &[], false, None)
                .and_then(|()| writer.flush())
                .ok();
        }
    }

    /// (patch) Once the connection's last answer is written: a closing
    /// connection lingers (see `ConnectionState::linger`).
    pub(crate) fn linger(&self) {
        self.state.linger();
    }

    /// Reads the next line from self.next_header_source.
    ///
    /// Reads until `CRLF` is reached. The next read will start
    ///  at the first byte of the new line.
    ///
    /// (patch) A line longer than `limit` bytes is refused; `on_first_byte`
    /// runs once the line's first byte has arrived.
    fn read_next_line(
        &mut self,
        limit: usize,
        on_first_byte: impl FnOnce(&ConnectionState),
    ) -> Result<AsciiString, LineError> {
        let mut buf = Vec::new();
        let mut prev_byte_was_cr = false;
        let mut on_first_byte = Some(on_first_byte);

        loop {
            let byte = self.next_header_source.by_ref().bytes().next();

            let byte = match byte {
                Some(b) => b.map_err(LineError::Io)?,
                None => {
                    return Err(LineError::Io(IoError::new(
                        ErrorKind::ConnectionAborted,
                        "Unexpected EOF",
                    )))
                }
            };
            if let Some(f) = on_first_byte.take() {
                f(&self.state);
            }

            if byte == b'\n' && prev_byte_was_cr {
                buf.pop(); // removing the '\r'
                return AsciiString::from_ascii(buf).map_err(|_| {
                    LineError::Io(IoError::new(ErrorKind::InvalidInput, "Header is not in ASCII"))
                });
            }

            prev_byte_was_cr = byte == b'\r';

            if buf.len() >= limit {
                return Err(LineError::TooLong);
            }
            buf.push(byte);
        }
    }

    /// Reads a request from the stream.
    /// Blocks until the header has been read.
    fn read(&mut self) -> Result<Request, ReadError> {
        // (patch) the previous request's body is done with; a kept-alive
        // connection may idle until the next request's first byte, which
        // starts the clock for the whole request
        self.next_header_source
            .wait_turn()
            .map_err(ReadError::ReadIoError)?;
        if self.kept_alive {
            self.state.await_next_request();
        }
        self.kept_alive = true;
        let max_line = self.state.limits().max_request_line;
        let mut head_left = self.state.limits().max_head;
        let (method, path, version, headers) = {
            // reading the request line
            let (method, path, version) = {
                let line = match self.read_next_line(max_line.min(head_left), |state| {
                    state.request_started()
                }) {
                    Ok(line) => line,
                    Err(LineError::Io(e)) => return Err(ReadError::ReadIoError(e)),
                    Err(LineError::TooLong) if max_line <= head_left => {
                        return Err(ReadError::RequestLineTooLong)
                    }
                    Err(LineError::TooLong) => return Err(ReadError::HeadTooLarge),
                };
                head_left = head_left.saturating_sub(line.len() + 2);

                parse_request_line(
                    line.as_str().trim(), // TODO: remove this conversion
                )?
            };

            // getting all headers
            let headers = {
                let mut headers = Vec::new();
                loop {
                    let line = match self.read_next_line(head_left, |_| ()) {
                        Ok(line) => line,
                        Err(LineError::Io(e)) => return Err(ReadError::ReadIoError(e)),
                        Err(LineError::TooLong) => return Err(ReadError::HeadTooLarge),
                    };
                    head_left = head_left.saturating_sub(line.len() + 2);

                    if line.is_empty() {
                        break;
                    };
                    headers.push(match FromStr::from_str(line.as_str().trim()) {
                        // TODO: remove this conversion
                        Ok(h) => h,
                        _ => return Err(ReadError::WrongHeader(version)),
                    });
                }

                headers
            };

            (method, path, version, headers)
        };

        // building the writer for the request
        let writer = self.sink.next().unwrap();

        // follow-up for next potential request
        let mut data_source = self.source.next().unwrap();
        std::mem::swap(&mut self.next_header_source, &mut data_source);

        // building the next reader
        let request = crate::request::new_request(
            Some(Arc::clone(&self.state)),
            self.secure,
            method,
            path,
            version.clone(),
            headers,
            *self.remote_addr.as_ref().unwrap(),
            data_source,
            writer,
        )
        .map_err(|e| {
            use crate::request;
            match e {
                request::RequestCreationError::CreationIoError(e) => ReadError::ReadIoError(e),
                request::RequestCreationError::ExpectationFailed => {
                    ReadError::ExpectationFailed(version)
                }
            }
        })?;

        // return the request
        Ok(request)
    }
}

impl Iterator for ClientConnection {
    type Item = Request;

    /// Blocks until the next Request is available.
    /// Returns None when no new Requests will come from the client.
    fn next(&mut self) -> Option<Request> {

        // the client sent a "connection: close" header in this previous request
        //  or is using HTTP 1.0, meaning that no new request will come
        if self.no_more_requests {
            return None;
        }

        // (patch) a connection that was taken over or is closing serves no more requests
        if self.state.ends_here() {
            return None;
        }

        // (patch) every refusal is a JSON error and ends the connection
        let rq = match self.read() {
            Err(ReadError::WrongRequestLine) => {
                self.refuse(400, "malformed request line", HTTPVersion(1, 1));
                return None;
            }
            Err(ReadError::WrongHeader(ver)) => {
                self.refuse(400, "malformed header line", ver);
                return None;
            }
            Err(ReadError::RequestLineTooLong) => {
                let limit = self.state.limits().max_request_line;
                let message = format!("request line longer than {} bytes", limit);
                self.refuse(414, &message, HTTPVersion(1, 1));
                return None;
            }
            Err(ReadError::HeadTooLarge) => {
                let limit = self.state.limits().max_head;
                let message = format!("request head larger than {} bytes", limit);
                self.refuse(431, &message, HTTPVersion(1, 1));
                return None;
            }
            Err(ReadError::ReadIoError(ref err)) if err.kind() == ErrorKind::TimedOut => {
                self.refuse(408, "request not received in time", HTTPVersion(1, 1));
                return None;
            }
            Err(ReadError::ExpectationFailed(ver)) => {
                self.refuse(417, "only Expect: 100-continue is supported", ver);
                return None;
            }
            Err(ReadError::ReadIoError(_)) => return None,
            Ok(rq) => rq,
        };

        // checking HTTP version; (patch) answered through the request itself,
        // whose writer comes first
        if *rq.http_version() > (1, 1) {
            let message = "only HTTP/1.0 and HTTP/1.1 are supported";
            rq.respond_as_http11(json_error(505, message)).ok();
            return None;
        }

        {
            // updating the status of the connection
            let connection_header = rq
                .headers()
                .iter()
                .find(|h| h.field.equiv("Connection"))
                .map(|h| h.value.as_str());

            let lowercase = connection_header.map(|h| h.to_ascii_lowercase());

            match lowercase {
                Some(ref val) if val.contains("close") => self.no_more_requests = true,
                Some(ref val) if val.contains("upgrade") => self.no_more_requests = true,
                Some(ref val)
                    if !val.contains("keep-alive") && *rq.http_version() == HTTPVersion(1, 0) =>
                {
                    self.no_more_requests = true
                }
                None if *rq.http_version() == HTTPVersion(1, 0) => self.no_more_requests = true,
                _ => (),
            };

            // returning the request
            return Some(rq);
        }
    }
}

/// (patch) `{"error": message}` with a status; the connection closes after it.
pub(crate) fn json_error(status: u16, message: &str) -> crate::Response<std::io::Cursor<Vec<u8>>> {
    use crate::{Header, Response, StatusCode};
    let escaped = message.replace('\\', "\\\\").replace('"', "\\\"");
    let mut response = Response::from_string(format!("{{\"error\":\"{}\"}}", escaped))
        .with_status_code(StatusCode(status));
    if let Ok(header) = Header::from_bytes(&b"Content-Type"[..], &b"application/json"[..]) {
        response.add_header(header);
    }
    response.with_connection_close()
}

/// Parses a "HTTP/1.1" string.
fn parse_http_version(version: &str) -> Result<HTTPVersion, ReadError> {
    let (major, minor) = match version {
        "HTTP/0.9" => (0, 9),
        "HTTP/1.0" => (1, 0),
        "HTTP/1.1" => (1, 1),
        "HTTP/2.0" => (2, 0),
        "HTTP/3.0" => (3, 0),
        _ => return Err(ReadError::WrongRequestLine),
    };

    Ok(HTTPVersion(major, minor))
}

/// Parses the request line of the request.
/// eg. GET / HTTP/1.1
fn parse_request_line(line: &str) -> Result<(Method, String, HTTPVersion), ReadError> {
    let mut parts = line.split(' ');

    let method = parts.next().and_then(|w| w.parse().ok());
    let path = parts.next().map(ToOwned::to_owned);
    let version = parts.next().and_then(|w| parse_http_version(w).ok());

    method
        .and_then(|method| Some((method, path?, version?)))
        .ok_or(ReadError::WrongRequestLine)
}

#[cfg(test)]
mod test {
    #[test]
    fn test_parse_request_line() {
        let (method, path, ver) = super::parse_request_line("GET /hello HTTP/1.1").unwrap();

        assert!(method == crate::Method::Get);
        assert!(path == "/hello");
        assert!(ver == crate::common::HTTPVersion(1, 1));

        assert!(super::parse_request_line("GET /hello").is_err());
        assert!(super::parse_request_line("qsd qsd qsd").is_err());
    }
}
