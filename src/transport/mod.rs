//! Transports: how a client's queued messages reach its socket.
//!
//! Owns: the client slots (how many clients may connect at once) and one
//! writer thread per connected client. Reads each client's [`ClientQueue`];
//! writes only to that client's socket.
//!
//! A writer that panics is caught at its thread's boundary: the panic is
//! logged and counted, and that client is disconnected like one whose write
//! failed (socket dropped, queue closed, slot freed). It is not restarted: a
//! writer holds nothing but one client's connection, which a panic leaves in
//! an unknown state, and the client reconnects (with `since`) by itself.
//!
//! Must not know: deadlines, verdicts, or statistics beyond the client count.
//!
//! [`ClientQueue`]: crate::fanout::ClientQueue

pub mod sse;
pub mod ws;

use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread;
use std::time::Duration;

use crate::fanout::{Batch, ClientQueue};
use crate::faults::{Faults, Role};
use crate::hub::Broadcast;
use crate::stats::Gauges;

/// An idle client gets a keep-alive (WebSocket Ping, SSE comment) after this long.
pub const KEEPALIVE_IDLE: Duration = Duration::from_secs(15);

/// Stack of a writer thread: it only moves buffers around, and thousands of
/// them must fit.
const WRITER_STACK: usize = 128 * 1024;

/// A client connection as a writer thread sees it.
pub trait Sink {
    /// Writes every message of `batch` (draining it) and flushes once.
    fn write_batch(&mut self, batch: &mut Vec<Broadcast>) -> io::Result<()>;
    /// Tells an idle client the connection is alive.
    fn keepalive(&mut self) -> io::Result<()>;
    /// Says goodbye at shutdown (best effort).
    fn goodbye(&mut self);
}

/// Starts a client's writer thread: it drains everything queued on each wake
/// and flushes once, so a burst costs one write, not one per message. It ends
/// as soon as a write fails — a client that went away, or whose socket stayed
/// unwritable past the socket's send timeout — or when the queue closes.
pub fn spawn_writer<S>(
    mut sink: S,
    queue: Arc<ClientQueue>,
    slot: Slot,
    name: String,
) -> io::Result<()>
where
    S: Sink + Send + 'static,
{
    let thread_queue = Arc::clone(&queue);
    let spawned = thread::Builder::new()
        .name(name)
        .stack_size(WRITER_STACK)
        .spawn(move || {
            let faults = Arc::clone(&slot.faults);
            let ended = faults
                .catch(Role::Writer, || {
                    write_until_closed(&mut sink, &thread_queue, &faults)
                })
                .unwrap_or_else(|| "the writer panicked; client disconnected".into());
            // Whatever ended the writer, the fan-out forgets this client at
            // its next message, the socket closes and the slot is free now.
            thread_queue.close();
            drop(sink);
            drop(slot);
            log::debug!(
                "{} ended: {ended}",
                thread::current().name().unwrap_or("writer")
            );
        });
    if spawned.is_err() {
        queue.close();
    }
    spawned.map(|_| ())
}

fn write_until_closed(sink: &mut impl Sink, queue: &ClientQueue, faults: &Faults) -> String {
    let mut batch: Vec<Broadcast> = Vec::new();
    loop {
        let written = match queue.take_all(&mut batch, KEEPALIVE_IDLE) {
            Batch::Messages => {
                faults.injection_point(Role::Writer);
                sink.write_batch(&mut batch)
            }
            Batch::Idle => sink.keepalive(),
            Batch::Closed => {
                sink.goodbye();
                return "server closed the stream".into();
            }
        };
        if let Err(e) = written {
            return format!("write failed: {e}");
        }
    }
}

/// How a client is connected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// WebSocket (`/ws`).
    WebSocket,
    /// Server-Sent Events (`/events`).
    Sse,
}

/// The cap on connected clients. A slot is taken before a connection is
/// upgraded and given back when its writer ends.
#[derive(Clone)]
pub struct ClientSlots {
    gauges: Arc<Gauges>,
    max: usize,
    faults: Arc<Faults>,
}

/// A taken client slot; dropping it frees the slot.
pub struct Slot {
    gauges: Arc<Gauges>,
    transport: Transport,
    /// Where the writer holding this slot counts a panic.
    faults: Arc<Faults>,
}

impl ClientSlots {
    /// At most `max` clients at once, counted in `gauges.clients`; their
    /// writers' panics are counted in `faults`.
    pub fn new(gauges: Arc<Gauges>, max: usize, faults: Arc<Faults>) -> Self {
        ClientSlots {
            gauges,
            max,
            faults,
        }
    }

    /// The most clients at once.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Takes a slot, or `None` when every slot is taken.
    pub fn try_take(&self, transport: Transport) -> Option<Slot> {
        self.gauges
            .clients
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .ok()?;
        per_transport(&self.gauges, transport).fetch_add(1, Ordering::Relaxed);
        Some(Slot {
            gauges: Arc::clone(&self.gauges),
            transport,
            faults: Arc::clone(&self.faults),
        })
    }
}

fn per_transport(gauges: &Gauges, transport: Transport) -> &std::sync::atomic::AtomicUsize {
    match transport {
        Transport::WebSocket => &gauges.websocket_clients,
        Transport::Sse => &gauges.sse_clients,
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        per_transport(&self.gauges, self.transport).fetch_sub(1, Ordering::Relaxed);
        self.gauges.clients.fetch_sub(1, Ordering::AcqRel);
    }
}
