//! The pipeline: where verdicts are made. Events come in from the
//! [`generator`] and the intake ([`intake::Intake`], fed by ingest), wait in
//! the work queue ([`schedule`]), are admitted ([`admission`]) and judged by
//! the worker threads ([`workers`]), and every verdict goes to the [`hub`], which
//! numbers, serialises and counts it ([`stats`]) and hands it to delivery.
//!
//! Channels: the work queue (intake → workers, expiry), the outcome channel
//! (intake, workers, expiry → hub) and the broadcast channel (hub → the
//! fan-out, delivery's side).
//!
//! Must not know: clients, sockets or transports.

pub(crate) mod admission;
pub(crate) mod event;
pub(crate) mod generator;
pub(crate) mod hub;
pub(crate) mod intake;
pub(crate) mod ledger;
pub(crate) mod meters;
pub(crate) mod overload;
pub(crate) mod schedule;
pub(crate) mod stats;
pub(crate) mod window;
pub(crate) mod workers;
