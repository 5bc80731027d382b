//! (patch) Limits on every connection: a cap on open connections, a total
//! deadline for each request to arrive and for each response to leave, an idle
//! timeout between kept-alive requests, and bounded request heads.
//!
//! The deadlines are enforced below the buffered readers and writers, in
//! `RefinedTcpStream`: before each read or write the socket's timeout is set
//! to what is left of the deadline, so a peer that dribbles one byte at a
//! time is cut off when the deadline passes, not when it pauses.

use std::io::{Error as IoError, ErrorKind, Result as IoResult};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::connection::Connection;

/// Limits applied to every connection. `Limits::default()` sets none, which
/// is the behaviour of the released crate.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Most connections open at once, upgraded ones included. A connection
    /// past the cap is answered `503` with `Retry-After` and closed.
    pub max_connections: Option<usize>,
    /// Time for a request to arrive whole, head and body: from its first
    /// byte, or for a connection's first request from the accept.
    pub request_timeout: Option<Duration>,
    /// Time a kept-alive connection may wait for the first byte of its next request.
    pub idle_timeout: Option<Duration>,
    /// Time for a whole response to be written; once a connection is
    /// upgraded or turned into a raw writer, the limit of each single write.
    pub write_timeout: Option<Duration>,
    /// Longest request line in bytes; a longer one is answered `414`.
    pub max_request_line: usize,
    /// Largest request head (request line and headers) in bytes; a larger one is answered `431`.
    pub max_head: usize,
    /// After an answer that closes the connection early (a refusal, an error
    /// answer to a request with a body), how long what the peer still sends
    /// is read and thrown away, within the request's own deadline. Closing
    /// with unread data resets the connection, and a peer still sending its
    /// body would lose the answer; `None` closes at once.
    pub linger: Option<Duration>,
    /// Most bytes read and thrown away while lingering.
    pub linger_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: None,
            request_timeout: None,
            idle_timeout: None,
            write_timeout: None,
            max_request_line: usize::MAX,
            max_head: usize::MAX,
            linger: None,
            linger_bytes: 0,
        }
    }
}

/// The number of open connections, shared by the accept thread and every
/// connection's [`ConnectionSlot`].
#[derive(Debug, Default)]
pub(crate) struct OpenConnections(AtomicUsize);

impl OpenConnections {
    pub(crate) fn count(&self) -> usize {
        self.0.load(Ordering::Acquire)
    }

    /// Takes a slot unless `max` connections are open already.
    pub(crate) fn try_take(self: &Arc<Self>, max: Option<usize>) -> Option<ConnectionSlot> {
        let max = max.unwrap_or(usize::MAX);
        self.0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()?;
        Some(ConnectionSlot(Arc::clone(self)))
    }
}

/// One open connection's place under the cap; freed when the connection's
/// last handle (plain, upgraded or raw writer) is dropped, or, for a socket
/// handed over, when whoever took it drops this.
#[derive(Debug)]
pub struct ConnectionSlot(Arc<OpenConnections>);

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        (self.0).0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What the two halves of one connection share: its deadlines, whether it is
/// closing or taken over, and its slot.
#[derive(Debug)]
pub(crate) struct ConnectionState {
    read_deadline: Mutex<Option<Instant>>,
    write_deadline: Mutex<Option<Instant>>,
    closing: AtomicBool,
    taken_over: AtomicBool,
    /// The socket itself was handed out: tiny_http's halves must not shut it down.
    handed_over: AtomicBool,
    limits: Arc<Limits>,
    /// The socket whose timeouts are set; `None` over TLS, where the patch sets none.
    connection: Option<Arc<Connection>>,
    slot: Mutex<Option<ConnectionSlot>>,
}

impl ConnectionState {
    /// A freshly accepted connection: its first request must arrive within the request timeout.
    pub(crate) fn new(
        limits: Arc<Limits>,
        connection: Option<Arc<Connection>>,
        slot: Option<ConnectionSlot>,
    ) -> Self {
        let first = limits.request_timeout.map(|t| Instant::now() + t);
        ConnectionState {
            read_deadline: Mutex::new(first),
            write_deadline: Mutex::new(None),
            closing: AtomicBool::new(false),
            taken_over: AtomicBool::new(false),
            handed_over: AtomicBool::new(false),
            limits,
            connection,
            slot: Mutex::new(slot),
        }
    }

    pub(crate) fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Waiting for the next request on a kept-alive connection.
    pub(crate) fn await_next_request(&self) {
        self.set_read_deadline(self.limits.idle_timeout);
    }

    /// The first byte of a request arrived: the rest of it must follow within the request timeout.
    pub(crate) fn request_started(&self) {
        self.set_read_deadline(self.limits.request_timeout);
    }

    fn set_read_deadline(&self, timeout: Option<Duration>) {
        *lock(&self.read_deadline) = timeout.map(|t| Instant::now() + t);
    }

    /// A response was written whole; the next one gets a fresh write deadline.
    pub(crate) fn response_done(&self) {
        *lock(&self.write_deadline) = None;
    }

    /// No further request is read from this connection and reads see its end.
    pub(crate) fn close(&self) {
        self.closing.store(true, Ordering::Release);
    }

    pub(crate) fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }

    /// The connection now belongs to whoever upgraded it (or took its raw
    /// writer): no more requests are read from it, the request and response
    /// deadlines no longer apply, and each write is bounded by the write timeout.
    pub(crate) fn take_over(&self) {
        self.taken_over.store(true, Ordering::Release);
        *lock(&self.read_deadline) = None;
        *lock(&self.write_deadline) = None;
        if let Some(connection) = &self.connection {
            let _ = connection.set_read_timeout(None);
            let _ = connection.set_write_timeout(self.limits.write_timeout);
        }
    }

    /// Takes the connection over and hands out its TCP socket (another
    /// descriptor for it, while tiny_http's own halves close theirs without
    /// shutting the socket down).
    pub(crate) fn hand_over(&self) -> IoResult<(std::net::TcpStream, Option<ConnectionSlot>)> {
        self.take_over();
        match self.connection.as_deref() {
            Some(Connection::Tcp(stream)) => {
                let socket = stream.try_clone()?;
                self.handed_over.store(true, Ordering::Release);
                Ok((socket, lock(&self.slot).take()))
            }
            _ => Err(IoError::new(
                ErrorKind::Unsupported,
                "only a TCP connection can be handed over",
            )),
        }
    }

    pub(crate) fn is_handed_over(&self) -> bool {
        self.handed_over.load(Ordering::Acquire)
    }

    /// Ends a connection that is closing with an answer behind it: shuts
    /// the write side, so the peer sees the answer end, then reads and
    /// throws away what it still sends until it stops, the linger time or
    /// the request's deadline passes, or `linger_bytes` have come. The
    /// caller closes the socket after this. A connection taken over, or
    /// not closing, is left alone.
    pub(crate) fn linger(&self) {
        if !self.is_closing() || self.taken_over.load(Ordering::Acquire) {
            return;
        }
        let (Some(connection), Some(linger)) = (&self.connection, self.limits.linger) else {
            return;
        };
        let mut until = Instant::now() + linger;
        if let Some(deadline) = *lock(&self.read_deadline) {
            until = until.min(deadline);
        }
        let _ = connection.shutdown(std::net::Shutdown::Write);
        const PIECE: usize = 16 * 1024;
        let mut buf = [0u8; PIECE];
        let mut left = self.limits.linger_bytes;
        while left > 0 {
            let time_left = until.saturating_duration_since(Instant::now());
            if time_left.is_zero() || connection.set_read_timeout(Some(time_left)).is_err() {
                return;
            }
            match connection.read_shared(&mut buf[..left.min(PIECE)]) {
                Ok(0) => return,
                Ok(n) => left -= n,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
    }

    /// Whether the connection serves no more requests.
    pub(crate) fn ends_here(&self) -> bool {
        self.is_closing() || self.taken_over.load(Ordering::Acquire)
    }

    /// Sets the socket's receive timeout to what is left of the read deadline.
    pub(crate) fn arm_read(&self) -> IoResult<bool> {
        let Some(connection) = &self.connection else {
            return Ok(false);
        };
        let deadline = *lock(&self.read_deadline);
        arm(deadline, |left| connection.set_read_timeout(Some(left)))
    }

    /// Sets the socket's send timeout to what is left of the response's
    /// deadline, starting that deadline with the response's first write.
    pub(crate) fn arm_write(&self) -> IoResult<bool> {
        let Some(connection) = &self.connection else {
            return Ok(false);
        };
        if self.taken_over.load(Ordering::Acquire) {
            return Ok(false);
        }
        let deadline = {
            let mut deadline = lock(&self.write_deadline);
            if deadline.is_none() {
                *deadline = self.limits.write_timeout.map(|t| Instant::now() + t);
            }
            *deadline
        };
        arm(deadline, |left| connection.set_write_timeout(Some(left)))
    }
}

/// Applies what is left before `deadline`; `Ok(true)` when a deadline is in
/// force, a `TimedOut` error when it has passed.
fn arm(deadline: Option<Instant>, set: impl FnOnce(Duration) -> IoResult<()>) -> IoResult<bool> {
    let Some(deadline) = deadline else {
        return Ok(false);
    };
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(timed_out());
    }
    set(left)?;
    Ok(true)
}

/// The error of a passed deadline.
pub(crate) fn timed_out() -> IoError {
    IoError::new(ErrorKind::TimedOut, "deadline passed")
}

/// A socket timeout shows as `WouldBlock`; under a deadline it means the deadline passed.
pub(crate) fn deadline_error(e: IoError) -> IoError {
    match e.kind() {
        ErrorKind::WouldBlock | ErrorKind::TimedOut => timed_out(),
        _ => e,
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}
