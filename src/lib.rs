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
//! The flow, one module per stage: [`generator`] → [`workers`] (work queue,
//! admission, verdicts; the real work in [`work`]) → [`hub`] (sequence, serialise once, [`stats`]) →
//! [`delivery`] (one shared log, a cursor and a thread per client), with
//! [`http`] in front and [`config`], [`time`] and [`epoch`] beside. [`server`] wires them;
//! [`faults`] decides what a panicking thread costs.
//!
//! ```no_run
//! let server = punctual::Server::start(punctual::Config::for_tests())?;
//! println!("open http://{}/", server.local_addr());
//! server.stop();
//! # Ok::<(), std::io::Error>(())
//! ```
#![warn(missing_docs)]

pub mod config;
pub mod delivery;
pub mod epoch;
pub mod event;
pub mod faults;
pub mod generator;
pub mod health;
pub mod http;
pub mod hub;
pub mod ingest;
pub mod limits;
pub mod logging;
pub mod metrics;
pub mod origin;
pub mod schedule;
pub mod server;
pub mod service;
pub mod stats;
pub mod time;
pub mod work;
pub mod workers;

mod query;

/// Entry points for the fuzz targets; not a stable interface.
#[doc(hidden)]
pub mod fuzzing;

pub use config::{Admission, Config};
pub use event::{DropReason, Event, Source, Status};
pub use server::{Server, Stopper};
