//! The `punctual` binary: parse flags, start the daemon, wait.

use clap::Parser;

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let config = punctual::Config::parse();
    match punctual::Server::start(config) {
        Ok(server) => server.wait(),
        Err(e) => {
            log::error!("{e}");
            std::process::exit(1);
        }
    }
}
