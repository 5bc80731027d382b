//! What keeps the process honest to its operator: signals and systemd
//! ([`service`]), liveness and readiness ([`health`]), the descriptor limit
//! and the caps derived from it ([`limits`]), the journal ([`logging`]),
//! what a panicking thread costs ([`faults`]) and `/metrics` ([`metrics`]).
//!
//! Channels: none of its own; it reads the stages' heartbeats and the stats
//! snapshot.
//!
//! Must not know: what the stages do.

pub(crate) mod faults;
pub(crate) mod health;
pub(crate) mod limits;
pub(crate) mod logging;
pub(crate) mod metrics;
pub(crate) mod service;
