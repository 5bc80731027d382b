//! The `punctual` binary: parse flags, start the daemon, wait until a signal
//! stops it.

use punctual::{Config, Server, faults, logging, service};

fn main() {
    logging::init();
    // A dead generator, hub or fan-out cannot be stood in for: exit non-zero
    // so the service manager starts a fresh daemon.
    faults::exit_when_an_essential_stage_dies();
    let config = Config::from_env_and_args();
    let server = match Server::start(config) {
        Ok(server) => server,
        Err(e) => {
            log::error!("{e}");
            // A setting or limit the operator must change is a usage error.
            let usage = e.kind() == std::io::ErrorKind::InvalidInput;
            std::process::exit(if usage { 2 } else { 1 });
        }
    };
    if let Err(e) = service::handle_signals(server.stopper()) {
        log::error!("cannot install signal handlers: {e}");
        std::process::exit(1);
    }
    service::notify_ready();
    if let Err(e) = service::spawn_notifier(server.monitor()) {
        log::warn!("cannot start the systemd notifier: {e}");
    }
    server.wait();
    log::info!("punctual stopped");
}
