//! The `punctual` binary: the daemon, as `punctual::run_daemon` runs it.

fn main() {
    std::process::exit(punctual::run_daemon());
}
