//! Delivery: how serialised outcomes reach every client's socket, at a cost
//! per message that does not grow with a thread wake-up per client.
//!
//! Owns: the shared [`Log`] (every message once, in order), one [`Client`]
//! per connection (a cursor into the log, its filter, its socket and its own
//! thread), the fan-out thread that appends to the log and the delivery
//! threads that write each batch to their caught-up clients without blocking,
//! and the client slots (the cap).
//!
//! Channels: reads the hub's broadcast channel (already-serialised messages:
//! the boundary between producing outcomes and delivering them) and the
//! subscribe channel from the HTTP front. Writes only to clients' sockets;
//! reads them only to answer what a WebSocket peer says (see `inbound`).
//!
//! Must not know: deadlines, verdicts, or statistics beyond the client counts.
//!
//! A client thread that panics is caught at its boundary: the panic is logged
//! and counted, and that client is disconnected like one whose write failed.
//! It is not restarted: it holds nothing but one client's connection, which a
//! panic leaves in an unknown state, and the client reconnects (with `since`).

mod client;
mod fanout;
mod inbound;
mod message;
mod shared_log;
pub mod sse;
pub mod ws;

pub use client::{Client, Sink};
pub use fanout::{Subscriptions, spawn};
pub use inbound::Inbound;
pub use message::{Broadcast, Kind};
pub use shared_log::{Log, Read, Resume, gap_message, run_switch};

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

use crate::ops::faults::{Faults, Role};

/// An idle client gets a keep-alive (WebSocket Ping, SSE comment) after this long.
pub const CLIENT_PING_IDLE: Duration = Duration::from_secs(15);

/// Stack of a client thread: it only moves buffers around, and thousands of
/// them must fit.
const CLIENT_STACK: usize = 128 * 1024;

/// Kernel send buffer of a client's socket. Set, not left to autotuning
/// (which grows it to megabytes on loopback), so a client's kernel memory is
/// bounded and a client that stops reading is noticed — and left to its own
/// thread — within this many bytes.
pub const CLIENT_SEND_BUFFER: usize = 128 * 1024;

/// Most bytes a client's sink buffers while its socket does not take them;
/// past it the fast path leaves the rest to the client's own thread.
///
/// A message larger than this (a big webhook's outcome: up to `--max-body`)
/// is never copied into a client's buffer. The fast path leaves it to the
/// client's own thread, which writes it blocking straight from the shared
/// log, so a client costs the same whatever producers send, and a message
/// that one client cannot take is that client's failure alone.
const MAX_BUFFERED: usize = 64 * 1024;

/// Whether `message` is written around the sink's buffer (see [`MAX_BUFFERED`]).
fn is_large(message: &Broadcast) -> bool {
    message.json.len() > MAX_BUFFERED
}

fn bound_send_buffer(socket: &std::net::TcpStream) {
    if let Err(e) = socket2::SockRef::from(socket).set_send_buffer_size(CLIENT_SEND_BUFFER) {
        ::log::debug!("could not bound a client's send buffer: {e}");
    }
}

/// What a client asks for when it connects.
#[derive(Clone, Debug, Default)]
pub struct Interest {
    /// Stats messages too, once a second.
    pub stats: bool,
    /// Control messages too (`hello`, `reset`, `gap`): asked for with
    /// `?control=1`, `?stats=1` or any resume position. A plain client gets
    /// outcome objects only, as a dashboard's first handler expects.
    pub control: bool,
    /// What to replay first.
    pub resume: Resume,
    /// Only outcomes with these statuses (`None`: all).
    pub statuses: Option<Vec<String>>,
}

impl Interest {
    fn wants(&self, message: &Broadcast) -> bool {
        match message.kind {
            Kind::Stats => self.stats,
            Kind::Gap | Kind::Hello | Kind::Reset => self.control,
            Kind::Event => self
                .statuses
                .as_ref()
                .is_none_or(|wanted| wanted.iter().any(|s| s == message.status)),
        }
    }
}

/// Starts a client's own thread, named `name`. It serves the client until a
/// write fails — the client went away, or its socket stayed unwritable past
/// the send timeout — or the daemon stops, then frees the slot.
pub fn spawn_client(
    client: Arc<Client>,
    log: Arc<Log>,
    slot: Slot,
    name: String,
) -> io::Result<()> {
    let thread_client = Arc::clone(&client);
    let spawned = thread::Builder::new()
        .name(name)
        .stack_size(CLIENT_STACK)
        .spawn(move || {
            yield_to_the_pipeline();
            let faults = Arc::clone(&slot.faults);
            let ended = faults
                .catch(Role::Writer, || thread_client.serve(&log, &faults))
                .unwrap_or_else(|| "the client thread panicked; client disconnected".into());
            // Whatever ended it, the fan-out forgets this client at its next
            // batch, the socket closes and the slot is free now.
            thread_client.close();
            drop(slot);
            ::log::debug!(
                "{} ended: {ended}",
                thread::current().name().unwrap_or("client")
            );
        });
    if spawned.is_err() {
        client.close();
    }
    spawned.map(|_| ())
}

/// Nice value of a client's thread. Its thread writes only while its client
/// is slow or replaying, and that work must never take the CPU from the
/// fan-out (every live client) or the pipeline (the verdicts and the
/// generator's clock): at 19 fifty busy client threads weigh less, to the
/// kernel's scheduler, than the fan-out alone. On an idle machine a replay
/// still runs at full speed.
const CLIENT_NICE: i32 = 19;

/// Lowers the calling (client) thread's scheduling priority; on Linux
/// `setpriority` on a thread id applies to that thread only.
fn yield_to_the_pipeline() {
    let me = rustix::thread::gettid();
    if let Err(e) = rustix::process::setpriority_process(Some(me), CLIENT_NICE) {
        ::log::debug!("could not lower a client thread's priority: {e}");
    }
}

/// Delivery's own counts, read by the hub for each snapshot (`clients` in
/// the stats). Atomics: the fan-out and client threads never wait on them.
#[derive(Debug, Default)]
pub struct ClientCounts {
    /// Dashboard clients connected now.
    pub connected: AtomicUsize,
    /// Of which over WebSocket.
    pub websocket: AtomicUsize,
    /// Of which over Server-Sent Events.
    pub sse: AtomicUsize,
    /// Messages some client missed because it fell off the log's tail.
    pub dropped_messages: AtomicU64,
    /// Clients now served by their own thread (behind, replaying, or blocked).
    pub slow: AtomicUsize,
    /// Times a client was left to its own thread (it joined, fell behind, or blocked).
    pub slow_turns: AtomicU64,
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
    counts: Arc<ClientCounts>,
    max: usize,
    faults: Arc<Faults>,
}

/// A taken client slot; dropping it frees the slot.
pub struct Slot {
    counts: Arc<ClientCounts>,
    transport: Transport,
    /// Where the writer holding this slot counts a panic.
    faults: Arc<Faults>,
}

impl ClientSlots {
    /// At most `max` clients at once, counted in `counts.connected`; their
    /// writers' panics are counted in `faults`.
    pub fn new(counts: Arc<ClientCounts>, max: usize, faults: Arc<Faults>) -> Self {
        ClientSlots {
            counts,
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
        self.counts
            .connected
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .ok()?;
        per_transport(&self.counts, transport).fetch_add(1, Ordering::Relaxed);
        Some(Slot {
            counts: Arc::clone(&self.counts),
            transport,
            faults: Arc::clone(&self.faults),
        })
    }
}

fn per_transport(counts: &ClientCounts, transport: Transport) -> &AtomicUsize {
    match transport {
        Transport::WebSocket => &counts.websocket,
        Transport::Sse => &counts.sse,
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        per_transport(&self.counts, self.transport).fetch_sub(1, Ordering::Relaxed);
        self.counts.connected.fetch_sub(1, Ordering::AcqRel);
    }
}
