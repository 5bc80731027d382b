//! Settings as an operator gives them to the binary — flags and `PUNCTUAL_*`
//! variables, as an env file writes them — run as a child process.

use crate::common;

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, Command};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use common::{get_json, http};

/// Every variable these tests set, removed first so the surrounding
/// environment cannot change what a test sees.
const OURS: [&str; 5] = [
    "PUNCTUAL_TOKEN",
    "PUNCTUAL_STATIC_DIR",
    "PUNCTUAL_RATE",
    "PUNCTUAL_ALLOWED_ORIGIN",
    "PUNCTUAL_ALLOWED_HOST",
];

fn command(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_punctual"));
    common::daemon::prepare(&mut command, args);
    for name in OURS {
        command.env_remove(name);
    }
    for (name, value) in env {
        command.env(name, value);
    }
    command
}

/// Runs the binary, expecting it to exit within 10 s: its exit code and stderr.
fn exit_of(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut child = command(args, env).spawn().expect("start punctual");
    let until = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().expect("poll child") {
            break status;
        }
        if Instant::now() >= until {
            let _ = child.kill();
            let _ = child.wait();
            panic!("punctual kept running with {args:?} {env:?}; it should have refused to start");
        }
        thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        pipe.read_to_string(&mut stderr).expect("read stderr");
    }
    (status.code(), stderr)
}

/// A running daemon: the child, its address and its log up to the start line.
struct Daemon {
    child: Child,
    addr: SocketAddr,
    startup: Vec<String>,
}

impl Daemon {
    fn spawn(args: &[&str], env: &[(&str, &str)]) -> Daemon {
        let mut child = command(args, env).spawn().expect("start punctual");
        let stderr = child.stderr.take().expect("stderr is piped");
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        // Built at once so that Drop stops the child whatever happens next.
        let mut daemon = Daemon {
            child,
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            startup: Vec::new(),
        };
        let until = Instant::now() + Duration::from_secs(20);
        while Instant::now() < until {
            let Ok(line) = rx.recv_timeout(Duration::from_millis(100)) else {
                if let Ok(Some(status)) = daemon.child.try_wait() {
                    panic!("punctual exited ({status}): {:?}", daemon.startup);
                }
                continue;
            };
            let addr = line
                .split("serving http://")
                .nth(1)
                .and_then(|rest| rest.split('/').next())
                .and_then(|addr| addr.parse().ok());
            daemon.startup.push(line);
            if let Some(addr) = addr {
                daemon.addr = addr;
                return daemon;
            }
        }
        panic!("no start line within 20 s: {:?}", daemon.startup);
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn an_empty_token_in_the_environment_is_refused_at_start_naming_the_variable() {
    for blank in ["", "   "] {
        let (code, stderr) = exit_of(&[], &[("PUNCTUAL_TOKEN", blank)]);
        assert_eq!(code, Some(2), "{stderr}");
        assert!(stderr.contains("PUNCTUAL_TOKEN"), "{stderr}");
        assert!(stderr.contains("--token"), "{stderr}");
    }
}

#[test]
fn a_token_under_16_bytes_is_refused_at_start() {
    for short in ["abc", "fifteen-bytes!!"] {
        let (code, stderr) = exit_of(&["--token", short], &[]);
        assert_eq!(code, Some(2), "{stderr}");
        assert!(stderr.contains("at least 16"), "{stderr}");
    }
}

#[test]
fn an_empty_token_flag_is_refused_at_start_naming_the_flag() {
    let (code, stderr) = exit_of(&["--token", ""], &[]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--token"), "{stderr}");
}

#[test]
fn a_blank_static_dir_variable_serves_the_built_in_page() {
    let daemon = Daemon::spawn(&["--rate", "0"], &[("PUNCTUAL_STATIC_DIR", "")]);
    let page = http(daemon.addr, "GET", "/", &[], b"");
    assert_eq!(page.status, 200, "{}", String::from_utf8_lossy(&page.body));
    assert!(String::from_utf8_lossy(&page.body).contains("<title>punctual"));
}

#[test]
fn blank_variables_as_an_env_file_writes_them_leave_the_defaults() {
    let daemon = Daemon::spawn(
        &[],
        &[
            ("PUNCTUAL_RATE", ""),
            ("PUNCTUAL_ALLOWED_ORIGIN", ""),
            ("PUNCTUAL_ALLOWED_HOST", " "),
        ],
    );
    let (_, config) = get_json(daemon.addr, "/api/config");
    assert_eq!(config["rate"], 20);
    assert_eq!(config["allowedOrigins"], serde_json::json!([]));
    assert_eq!(config["allowedHosts"], serde_json::json!([]));
    assert_eq!(config["auth"], false);
}

#[test]
fn an_empty_static_dir_flag_is_refused_naming_the_flag() {
    let (code, stderr) = exit_of(&["--static-dir", ""], &[]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--static-dir"), "{stderr}");
}

#[test]
fn allowed_origins_come_comma_separated_from_the_environment() {
    let daemon = Daemon::spawn(
        &[],
        &[(
            "PUNCTUAL_ALLOWED_ORIGIN",
            "http://localhost:5173, http://localhost:4173",
        )],
    );
    let (_, config) = get_json(daemon.addr, "/api/config");
    assert_eq!(
        config["allowedOrigins"],
        serde_json::json!(["http://localhost:5173", "http://localhost:4173"])
    );
    let stream = http(
        daemon.addr,
        "GET",
        "/events",
        &[("Origin", "http://localhost:9999")],
        b"",
    );
    assert_eq!(stream.status, 403);
}

#[test]
fn a_malformed_allowed_origin_is_refused_naming_the_flag() {
    let (code, stderr) = exit_of(&["--allowed-origin", "localhost:5173"], &[]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--allowed-origin"), "{stderr}");
    assert!(stderr.contains("scheme://host"), "{stderr}");
}

/// The start line's warnings about the token.
fn token_warnings(daemon: &Daemon) -> Vec<&String> {
    daemon
        .startup
        .iter()
        .filter(|l| l.contains("WARN") && l.contains("--token"))
        .collect()
}

#[test]
fn only_listening_beyond_loopback_without_a_token_is_warned_about() {
    let default = Daemon::spawn(&[], &[]);
    assert!(token_warnings(&default).is_empty(), "{:?}", default.startup);
    let open = Daemon::spawn(&["--listen", "0.0.0.0:0"], &[]);
    assert_eq!(token_warnings(&open).len(), 1, "{:?}", open.startup);
    let guarded = Daemon::spawn(
        &["--listen", "0.0.0.0:0"],
        &[("PUNCTUAL_TOKEN", "s3cret-s3cret-s3cret")],
    );
    assert!(token_warnings(&guarded).is_empty(), "{:?}", guarded.startup);
}
