//! The integration tests: one crate of modules, one link (each area of
//! behaviour is a module; the helpers are in `common`). Every test starts the
//! real daemon, in-process or as a child, and talks to it as a client would.

mod common;

mod access;
mod browser;
mod budget;
mod cluster;
mod delivery;
mod faults;
mod front;
mod fuzz_regressions;
mod garbage;
mod http;
mod ingest;
mod layout;
mod load;
mod openapi;
mod peers;
mod pipeline;
mod producers;
mod resume;
mod schedule;
mod service;
mod settings;
mod spent;
mod systemd;
mod verdicts;
mod wire;
mod work;
