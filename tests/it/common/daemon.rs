//! A `punctual` child process, as an operator runs it: started with flags,
//! environment and descriptor limits, its log collected line by line.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, ChildStderr, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// Gives `command` the arguments and output of a test daemon: `args` (on a
/// free loopback port unless they name `--listen`), plain RFC 3339 logs at
/// info on a piped stderr, and no systemd around it.
pub fn prepare(command: &mut Command, args: &[&str]) {
    if !args.contains(&"--listen") {
        command.args(["--listen", "127.0.0.1:0"]);
    }
    command
        .args(args)
        .env_remove("JOURNAL_STREAM")
        .env_remove("NOTIFY_SOCKET")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
}

/// A `punctual` child process on a free port, with its log lines collected.
pub struct Daemon {
    pub child: Child,
    pub addr: SocketAddr,
    lines: mpsc::Receiver<String>,
    /// The log up to and including the start line.
    pub startup: Vec<String>,
}

impl Daemon {
    pub fn spawn(args: &[&str], env: &[(&str, &str)]) -> Daemon {
        Daemon::spawn_command(Command::new(env!("CARGO_BIN_EXE_punctual")), args, env)
    }

    /// Starts it with both open-file limits set to `limit` (it cannot raise them).
    pub fn spawn_with_fd_limit(limit: u32, args: &[&str]) -> Daemon {
        let mut command = Command::new("bash");
        command.args([
            "-c",
            &format!("ulimit -n {limit} && exec \"$0\" \"$@\""),
            env!("CARGO_BIN_EXE_punctual"),
        ]);
        Daemon::spawn_command(command, args, &[])
    }

    pub fn spawn_command(mut command: Command, args: &[&str], env: &[(&str, &str)]) -> Daemon {
        prepare(&mut command, args);
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command.spawn().expect("start punctual");
        let stderr = child.stderr.take().expect("stderr is piped");
        let (lines, startup, addr) = follow_log(stderr);
        Daemon {
            child,
            addr,
            lines,
            startup,
        }
    }

    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([format!("-{name}"), self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} failed");
    }

    pub fn wait_for_exit(&mut self, timeout: Duration) -> ExitStatus {
        let until = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("poll child") {
                return status;
            }
            if Instant::now() >= until {
                let _ = self.child.kill();
                panic!("punctual did not exit within {timeout:?}");
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn log_so_far(&self) -> Vec<String> {
        self.lines.try_iter().collect()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads the log until the start line names the URL; the rest keeps flowing
/// into the returned channel.
fn follow_log(stderr: ChildStderr) -> (mpsc::Receiver<String>, Vec<String>, SocketAddr) {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let until = Instant::now() + Duration::from_secs(20);
    let mut startup = Vec::new();
    while Instant::now() < until {
        let Ok(line) = rx.recv_timeout(Duration::from_millis(100)) else {
            continue;
        };
        let addr = line.split("serving http://").nth(1).map(|rest| {
            let addr = rest.split('/').next().expect("address");
            addr.parse::<SocketAddr>().expect("socket address")
        });
        startup.push(line);
        if let Some(addr) = addr {
            return (rx, startup, addr);
        }
    }
    panic!("punctual never logged its URL");
}

/// The status of `GET /healthz`, or `None` when nobody answers within 2 s.
pub fn healthz_status(addr: SocketAddr) -> Option<u16> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}
