//! The daemon under test: spawning one (its flags, its log) and stopping it,
//! and its `/api/stats`, the wire's JSON, read into the parts of the report
//! that come from the daemon's own counts.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{self, Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::options::Options;
use crate::report::{DaemonStats, PullReport, VerdictRates, Work, round1, round3};

/// Connections the tool and a spawned daemon need beyond the clients
/// (stats, ingest, the daemon's own probe, a margin).
pub const SPARE_CONNECTIONS: usize = 64;

/// A spawned daemon; killed if still running when dropped.
pub struct Daemon {
    pub child: Child,
    pub addr: SocketAddr,
    pub args: Vec<String>,
}

impl Daemon {
    /// SIGTERM (the daemon drains and says goodbye), SIGKILL if it is not
    /// gone within 5 s.
    pub fn stop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `--server`, else `punctual` in the directory of this binary.
fn server_binary(options: &Options) -> Result<PathBuf, String> {
    let path = match &options.server {
        Some(path) => path.clone(),
        None => std::env::current_exe()
            .map_err(|e| format!("cannot find this binary: {e}"))?
            .with_file_name("punctual"),
    };
    if path.exists() {
        Ok(path)
    } else {
        Err(format!(
            "{} not found: run `cargo build --release` first, or pass --server PATH",
            path.display()
        ))
    }
}

/// The daemon's flags: ours (a free port, a quiet log, caps that fit the
/// clients) unless given after `--`, then the given ones, then the work mode
/// the tool's own workers serve (`work_url`: the HTTP worker's).
fn daemon_args(options: &Options, work_url: Option<&str>) -> Vec<String> {
    let room = (options.connections() + SPARE_CONNECTIONS).to_string();
    let mut args = Vec::new();
    for (flag, value) in [
        ("--listen", "127.0.0.1:0"),
        ("--log-interval", "3600"),
        ("--max-connections", room.as_str()),
        ("--max-clients", room.as_str()),
    ] {
        if !options.daemon_flag(flag) {
            args.extend([flag.to_string(), value.to_string()]);
        }
    }
    args.extend(options.daemon_args.iter().cloned());
    if let Some(url) = work_url {
        args.extend(["--work", "http", "--work-url", url].map(String::from));
    } else if options.pull_workers > 0 && !options.daemon_flag("--work") {
        args.extend(["--work", "pull"].map(String::from));
    }
    args
}

pub fn spawn_daemon(options: &Options, work_url: Option<&str>) -> Result<Daemon, String> {
    let binary = server_binary(options)?;
    let args = daemon_args(options, work_url);
    let mut command = Command::new(&binary);
    command
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .env("RUST_LOG", "info")
        .env_remove("JOURNAL_STREAM")
        .env_remove("NOTIFY_SOCKET");
    // Only the flags given here configure the daemon.
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("PUNCTUAL_") {
            command.env_remove(name);
        }
    }
    let mut child = command
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
    let stderr = child.stderr.take().ok_or("no stderr pipe")?;
    let mut daemon = Daemon {
        child,
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        args,
    };
    let serving = follow_daemon_log(stderr)?;
    let addr = match serving.recv_timeout(Duration::from_secs(15)) {
        Ok(Ok(addr)) => addr,
        Ok(Err(log)) => return Err(format!("the daemon ended before serving:\n{log}")),
        Err(_) => return Err("the daemon did not log `serving http://…` within 15 s".into()),
    };
    daemon.addr = addr
        .parse()
        .map_err(|e| format!("cannot parse the daemon's address {addr:?}: {e}"))?;
    Ok(daemon)
}

/// Drains the daemon's log so it never blocks on a full pipe, and sends the
/// address of its `serving http://ADDR/` line (or, if it ends first, its
/// log). Later warnings and errors are passed on to stderr.
fn follow_daemon_log(
    stderr: process::ChildStderr,
) -> Result<mpsc::Receiver<Result<String, String>>, String> {
    let (tell, serving) = mpsc::channel();
    thread::Builder::new()
        .name("daemon-log".into())
        .spawn(move || {
            let mut tell = Some(tell);
            let mut before = Vec::new();
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                match (line.split("serving http://").nth(1), tell.take()) {
                    (Some(rest), Some(found)) => {
                        let addr = rest.split('/').next().unwrap_or("").to_string();
                        let _ = found.send(Ok(addr));
                    }
                    (_, waiting) => {
                        tell = waiting;
                        if line.contains("WARN") || line.contains("ERROR") {
                            eprintln!("daemon: {line}");
                        }
                        if tell.is_some() {
                            before.push(line);
                        }
                    }
                }
            }
            if let Some(found) = tell {
                let _ = found.send(Err(before.join("\n")));
            }
        })
        .map_err(|e| format!("cannot start the log reader: {e}"))?;
    Ok(serving)
}

/// A kept-alive HTTP client that hands back every status as an answer.
pub fn http_agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into()
}

/// `GET /api/stats` as JSON.
pub fn server_stats(agent: &ureq::Agent, addr: SocketAddr) -> Result<Value, String> {
    let fail = |e: &dyn std::fmt::Display| format!("GET /api/stats: {e}");
    let mut response = agent
        .get(format!("http://{addr}/api/stats"))
        .call()
        .map_err(|e| fail(&e))?;
    let status = response.status();
    let body = response.body_mut().read_to_string().map_err(|e| fail(&e))?;
    if !status.is_success() {
        return Err(fail(&format!("{status}: {body}")));
    }
    serde_json::from_str(&body).map_err(|e| fail(&e))
}

fn stat_u64(stats: &Value, path: &str) -> u64 {
    stats.pointer(path).and_then(Value::as_u64).unwrap_or(0)
}

/// `generated + ingested == onTime + late + failed + dropped.* + inFlight`.
fn conserved(stats: &Value) -> bool {
    let totals = |key: &str| stat_u64(stats, &format!("/totals/{key}"));
    let dropped: u64 = stats
        .pointer("/totals/dropped")
        .and_then(Value::as_object)
        .map_or(0, |d| d.values().filter_map(Value::as_u64).sum());
    stats.pointer("/totals").is_some()
        && totals("generated") + totals("ingested")
            == totals("onTime") + totals("late") + totals("failed") + dropped + totals("inFlight")
}

/// A number of the daemon's stats that grew between two readings.
fn grown(start: &Value, end: &Value, path: &str) -> u64 {
    stat_u64(end, path).saturating_sub(stat_u64(start, path))
}

/// The daemon's own view of the run: what it dropped, holds and decided.
pub fn daemon_report(start: &Value, end: &Value) -> DaemonStats {
    DaemonStats {
        dropped_messages: stat_u64(end, "/clients/droppedMessages"),
        dropped_messages_during_run: grown(start, end, "/clients/droppedMessages"),
        backlog: end.pointer("/clients/backlog").cloned(),
        connected: end.pointer("/clients/connected").cloned(),
        generated_during_run: grown(start, end, "/totals/generated"),
        totals: end.pointer("/totals").cloned(),
        producers: end.pointer("/producers").cloned(),
        conservation: conserved(end),
    }
}

/// What the daemon decided between two stats readings `seconds` apart, per
/// second: the window's throughput, by verdict and drop reason.
pub fn verdict_rates(start: &Value, end: &Value, seconds: f64) -> VerdictRates {
    let per_second = |path: &str| round1(grown(start, end, path) as f64 / seconds);
    let each_per_second = |path: &str| -> BTreeMap<String, f64> {
        end.pointer(path)
            .and_then(Value::as_object)
            .map_or_else(Default::default, |counts| {
                counts
                    .keys()
                    .map(|key| (key.clone(), per_second(&format!("{path}/{key}"))))
                    .collect()
            })
    };
    let dropped = each_per_second("/totals/dropped");
    let misses = each_per_second("/spent/missesTotal");
    let (on_time, late, failed) = (
        per_second("/totals/onTime"),
        per_second("/totals/late"),
        per_second("/totals/failed"),
    );
    VerdictRates {
        seconds: round3(seconds),
        entered: per_second("/totals/generated") + per_second("/totals/ingested"),
        on_time,
        late,
        failed,
        worked: round1(on_time + late + failed),
        dropped,
        misses,
    }
}

/// Where the work ran, what the tool's own workers answered, and what the
/// daemon counted as failed meanwhile (the tool's workers never answer
/// `failed`, so anything here is the daemon's doing or a lost connection).
pub fn work_report(
    start: &Value,
    end: &Value,
    http_calls: Option<&AtomicU64>,
    pull: Option<PullReport>,
) -> Work {
    Work {
        mode: end.pointer("/work/mode").cloned(),
        target: end.pointer("/work/target").cloned(),
        error_rate: end.pointer("/work/errorRate").cloned(),
        http_calls: http_calls.map(|n| n.load(Ordering::Relaxed)),
        pull_tasks: pull.as_ref().map(|p| p.tasks_answered),
        pull_workers: pull,
        failed_during_run: grown(start, end, "/totals/failed"),
    }
}
