//! punctual: a deadline-aware live event monitor.
//!
//! Events carry their own deadline. A fixed pool of workers takes them from a
//! bounded queue and gives each a verdict — `on-time`, `late`, `failed` (real
//! work only), or `dropped` with a reason — and every verdict is streamed to
//! every connected dashboard.
//!
//! Goals, against which every choice here is checked:
//! - **Predictable, not fast.** Work that cannot finish in time is dropped on
//!   purpose, visibly, so the work that is done keeps its promise.
//! - **Bounded everywhere.** Every queue has a named capacity and a stated
//!   behaviour when full; nothing grows without limit under overload.
//! - **Every outcome counted.** `generated + ingested == onTime + late +
//!   failed + dropped + inFlight` holds at every stats snapshot.
//! - **Plain threads.** Synchronous code on named OS threads; no async runtime.
//! - **No unsafe code** (forbidden for every target in `Cargo.toml`).
//!
//! The flow, one folder per part of it: `pipeline` (generator → work queue →
//! workers → hub: where verdicts are made; the real work in `work`) →
//! `delivery` (one shared log, a cursor and a thread per client), with `http`
//! in front and `ops` (service, health, limits, logging, faults, metrics)
//! beside; `server` wires them. ARCHITECTURE.md is the map.
//!
//! ```no_run
//! let server = punctual::Server::start(punctual::Config::for_tests())?;
//! println!("open http://{}/", server.local_addr());
//! server.stop();
//! # Ok::<(), std::io::Error>(())
//! ```
#![warn(missing_docs)]

// Grouped by the flow (ARCHITECTURE.md, "Code map"): where verdicts are made,
// where serialised outcomes reach sockets, real work, the front, and what
// keeps the process honest. Private: the items below are the public API.
mod cluster;
mod config;
mod delivery;
mod epoch;
mod http;
mod ops;
mod pipeline;
mod server;
mod time;
mod work;

/// Entry points for the fuzz targets; not a stable interface.
#[doc(hidden)]
pub mod fuzzing;

/// Sizes and limits the tests recompute the systemd unit's arithmetic from;
/// not a stable interface.
#[doc(hidden)]
pub mod sizing {
    pub use crate::http::{MAX_PAGE_BYTES, MAX_PAGES_IN_FLIGHT};
    pub use crate::ops::limits::{
        DEFAULT_MAX_CLIENTS, DEFAULT_MAX_CONNECTIONS, THREADS_PER_CONNECTION, allowed_connections,
        caps_for,
    };
    pub use crate::pipeline::hub::{BROADCAST_CHANNEL_CAPACITY, OUTCOME_CHANNEL_CAPACITY};
}

pub use config::{Admission, Config, NodeRole, Schedule, WorkMode};
pub use http::origin::{AllowedHost, AllowedOrigin};
pub use ops::faults::{EXIT_STAGE_DIED, Role};
pub use ops::service::run_daemon;
pub use pipeline::event::{DropReason, Event, Source, Status};
pub use pipeline::stats::Snapshot;
pub use server::{Monitor, Server, Stopper};
