//! The delivery message: one serialised outcome, stats snapshot or notice,
//! made once and shared by every client (the log holds it once; every
//! client's write copies from there). The hub makes outcomes and stats; the
//! log makes the per-client notices (hello, reset, gap).
//!
//! Must not know: how it was made or who reads it.

use bytes::Bytes;

/// What a broadcast message carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// One outcome (`{"type":"event",…}`).
    Event,
    /// A stats snapshot (`{"type":"stats",…}`), for clients that asked for stats.
    Stats,
    /// Outcomes a resuming client asked for that are no longer retained
    /// (`{"type":"gap","from":…,"to":…}`); made by the fan-out, per client.
    Gap,
    /// The first message of every stream: the run's epoch and the newest `seq`
    /// (`{"type":"hello","epoch":…,"seq":…}`); made by the fan-out, per client.
    Hello,
    /// The client's position is from another run; what follows is this run
    /// from its start (`{"type":"reset","epoch":…,"previousEpoch":…}`);
    /// made by the fan-out, per client.
    Reset,
}

/// One message for the dashboards, serialised once and shared by every client.
#[derive(Clone, Debug, PartialEq)]
pub struct Broadcast {
    /// What the message carries.
    pub kind: Kind,
    /// The outcome's sequence number; for stats, the last outcome's.
    pub seq: u64,
    /// The outcome's status name (`on-time`, `late`, `dropped`), for filters;
    /// empty for other kinds.
    pub status: &'static str,
    /// The JSON text.
    pub json: Bytes,
}
