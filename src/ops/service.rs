//! Running as a system service: signals and the systemd notification protocol.
//!
//! Owns the `signals` thread (SIGTERM/SIGINT start a graceful stop; a second
//! one exits at once) and the `systemd` thread, which sends `STATUS=` lines
//! and, only while the daemon is healthy, `WATCHDOG=1` pings. Without
//! `NOTIFY_SOCKET` every notification is a no-op. Reads and writes no channel.

use std::io;
use std::thread;
use std::time::Duration;

use sd_notify::NotifyState;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::config::Config;
use crate::ops::{faults, logging};
use crate::server::{Monitor, Server, Stopper};

/// The `punctual` binary: parse flags, start the daemon, serve until a
/// signal stops it. Returns the exit status: 0 after a graceful stop, 2 for
/// a setting or limit the operator must change, 1 for anything else.
pub fn run_daemon() -> i32 {
    logging::init();
    // A dead generator, hub or fan-out cannot be stood in for: exit non-zero
    // so the service manager starts a fresh daemon.
    faults::exit_when_an_essential_stage_dies();
    let config = Config::from_env_and_args();
    let server = match Server::start(config) {
        Ok(server) => server,
        Err(e) => {
            log::error!("{e}");
            let usage = e.kind() == io::ErrorKind::InvalidInput;
            return if usage { 2 } else { 1 };
        }
    };
    if let Err(e) = handle_signals(server.stopper()) {
        log::error!("cannot install signal handlers: {e}");
        return 1;
    }
    notify_ready();
    if let Err(e) = spawn_notifier(server.monitor()) {
        log::warn!("cannot start the systemd notifier: {e}");
    }
    let monitor = server.monitor();
    server.wait();
    // Stopped because it could no longer work (a processor that lost its
    // lease): non-zero, so the service manager starts it again.
    if let Some(reason) = monitor.failure() {
        log::error!("punctual stopped: {reason}");
        return 1;
    }
    log::info!("punctual stopped");
    0
}

/// How often `STATUS=` is refreshed.
const STATUS_EVERY: Duration = Duration::from_secs(5);

fn notify(state: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(state) {
        log::debug!("could not notify systemd: {e}");
    }
}

/// Tells systemd the daemon is serving (call once the server has started).
pub fn notify_ready() {
    notify(&[NotifyState::Ready, NotifyState::Status("serving")]);
}

/// Starts the thread that keeps systemd informed, when systemd listens.
pub fn spawn_notifier(monitor: Monitor) -> io::Result<()> {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return Ok(());
    }
    // systemd expects a ping at least every WATCHDOG_USEC; half leaves room for delay.
    let watchdog = sd_notify::watchdog_enabled().map(|period| period / 2);
    let tick = watchdog.map_or(STATUS_EVERY, |w| w.min(STATUS_EVERY));
    thread::Builder::new()
        .name("systemd".into())
        .spawn(move || {
            let mut since_status = STATUS_EVERY;
            loop {
                if watchdog.is_some() {
                    match monitor.alive() {
                        Ok(()) => notify(&[NotifyState::Watchdog]),
                        Err(reason) => log::error!("withholding the watchdog ping: {reason}"),
                    }
                }
                if since_status >= STATUS_EVERY {
                    if let Some(snapshot) = monitor.stats() {
                        notify(&[NotifyState::Status(&snapshot.status_line())]);
                    }
                    since_status = Duration::ZERO;
                }
                thread::sleep(tick);
                since_status += tick;
            }
        })?;
    Ok(())
}

/// Installs the signal handling: the first SIGTERM or SIGINT starts a graceful
/// stop through `stopper`; a second one exits at once.
pub fn handle_signals(stopper: Stopper) -> io::Result<()> {
    let mut signals = Signals::new([SIGTERM, SIGINT])?;
    thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut received = signals.forever();
            if let Some(signal) = received.next() {
                log::info!(
                    "{} received: draining (send it again to exit at once)",
                    name(signal)
                );
                notify(&[NotifyState::Stopping, NotifyState::Status("draining")]);
                stopper.stop();
            }
            if let Some(signal) = received.next() {
                log::warn!("second {} received: exiting without draining", name(signal));
                std::process::exit(128 + signal);
            }
        })?;
    Ok(())
}

fn name(signal: i32) -> &'static str {
    match signal {
        SIGTERM => "SIGTERM",
        SIGINT => "SIGINT",
        _ => "signal",
    }
}
