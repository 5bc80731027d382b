//! Transports: how a client's queued messages reach its socket.
//!
//! Owns: the client slots (how many clients may connect at once) and one
//! writer thread per connected client. Reads each client's [`ClientQueue`];
//! writes only to that client's socket.
//!
//! Must not know: deadlines, verdicts, or statistics beyond the client count.
//!
//! [`ClientQueue`]: crate::fanout::ClientQueue

pub mod ws;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::stats::Gauges;

/// The cap on connected clients. A slot is taken before a connection is
/// upgraded and given back when its writer ends.
#[derive(Clone)]
pub struct ClientSlots {
    gauges: Arc<Gauges>,
    max: usize,
}

/// A taken client slot; dropping it frees the slot.
pub struct Slot {
    gauges: Arc<Gauges>,
}

impl ClientSlots {
    /// At most `max` clients at once, counted in `gauges.clients`.
    pub fn new(gauges: Arc<Gauges>, max: usize) -> Self {
        ClientSlots { gauges, max }
    }

    /// The most clients at once.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Takes a slot, or `None` when every slot is taken.
    pub fn try_take(&self) -> Option<Slot> {
        self.gauges
            .clients
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .ok()
            .map(|_| Slot {
                gauges: Arc::clone(&self.gauges),
            })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.gauges.clients.fetch_sub(1, Ordering::AcqRel);
    }
}
