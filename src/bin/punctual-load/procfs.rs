//! Readings from `/proc`: a process's CPU ticks, memory and threads, the
//! machine's busy share and load average; and the once-a-second watch of
//! the daemon during the window.

use std::fs;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

/// User + system clock ticks of a process (`/proc/<pid>/stat`).
pub fn cpu_ticks(pid: &str) -> Option<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the name (which may hold spaces): utime and stime are the 12th
    // and 13th fields.
    let after_name = &text[text.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Resident memory (KiB) and threads of a process (`/proc/<pid>/status`).
fn rss_and_threads(pid: u32) -> (u64, u64) {
    let text = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |key: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(key))
            .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("Threads:"))
}

/// Busy and total clock ticks of the whole machine (`/proc/stat`).
pub fn machine_ticks() -> (u64, u64) {
    let text = fs::read_to_string("/proc/stat").unwrap_or_default();
    let fields: Vec<u64> = text
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .take(8) // user nice system idle iowait irq softirq steal
        .filter_map(|f| f.parse().ok())
        .collect();
    let total: u64 = fields.iter().sum();
    let idle = fields.get(3).unwrap_or(&0) + fields.get(4).unwrap_or(&0);
    (total.saturating_sub(idle), total)
}

/// Share of all CPUs busy between two `machine_ticks`, in % of one core.
pub fn machine_busy(from: (u64, u64), to: (u64, u64), cpus: usize) -> f64 {
    let busy = to.0.saturating_sub(from.0) as f64;
    let total = to.1.saturating_sub(from.1).max(1) as f64;
    busy / total * 100.0 * cpus as f64
}

pub fn clock_ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

pub fn load_average() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// What the processes under test did during the window, added up.
#[derive(Default)]
pub struct ServerReadings {
    pub cpu_pct: Option<f64>,
    /// Each process's share of `cpu_pct`, in the order given.
    pub cpu_pct_by_pid: Vec<(u32, Option<f64>)>,
    pub busiest_second_pct: Option<f64>,
    pub rss_kib: u64,
    pub max_rss_kib: u64,
    pub threads: u64,
    /// The daemon's `generator.tickJitterMsP99`, read once a second.
    pub tick_jitter_ms: Vec<f64>,
}

/// CPU ticks of each of `pids` (`None` for one that is gone).
fn ticks_of(pids: &[u32]) -> Vec<Option<u64>> {
    pids.iter().map(|p| cpu_ticks(&p.to_string())).collect()
}

/// The ticks the processes spent between two readings, counting only
/// those read both times (one that ended or started in between would add
/// nothing, or its whole life); `None` if there is none.
fn spent(from: &[Option<u64>], to: &[Option<u64>]) -> Option<u64> {
    from.iter()
        .zip(to)
        .filter_map(|(from, to)| Some(to.as_ref()?.saturating_sub(*from.as_ref()?)))
        .reduce(|a, b| a + b)
}

/// Resident memory and threads of all `pids` together.
fn rss_and_threads_of(pids: &[u32]) -> (u64, u64) {
    pids.iter()
        .map(|&p| rss_and_threads(p))
        .fold((0, 0), |(r, t), (rss, threads)| (r + rss, t + threads))
}

/// Samples the processes' CPU, RSS, threads and the daemon's tick jitter once
/// a second for `length`.
pub fn watch_server(
    pids: &[u32],
    length: Duration,
    ticks_per_s: f64,
    stats: impl Fn() -> Option<Value>,
) -> ServerReadings {
    let pct = |ticks: u64, wall: f64| ticks as f64 / ticks_per_s / wall * 100.0;
    let started = Instant::now();
    let first = ticks_of(pids);
    let mut last = (started, first.clone());
    let mut readings = ServerReadings::default();
    while started.elapsed() < length {
        thread::sleep(
            length
                .saturating_sub(started.elapsed())
                .min(Duration::from_secs(1)),
        );
        let (rss, _) = rss_and_threads_of(pids);
        readings.max_rss_kib = readings.max_rss_kib.max(rss);
        let jitter = stats().and_then(|s| s.pointer("/generator/tickJitterMsP99")?.as_f64());
        readings.tick_jitter_ms.extend(jitter);
        let now = (Instant::now(), ticks_of(pids));
        let wall = (now.0 - last.0).as_secs_f64();
        if let Some(ticks) = spent(&last.1, &now.1).filter(|_| wall >= 0.5) {
            let busiest = readings.busiest_second_pct.unwrap_or(0.0);
            readings.busiest_second_pct = Some(busiest.max(pct(ticks, wall)));
        }
        last = now;
    }
    let wall = started.elapsed().as_secs_f64();
    let end = ticks_of(pids);
    readings.cpu_pct_by_pid = pids
        .iter()
        .zip(first.iter().zip(&end))
        .map(|(&pid, (&from, &to))| (pid, spent(&[from], &[to]).map(|t| pct(t, wall))))
        .collect();
    readings.cpu_pct = spent(&first, &end).map(|t| pct(t, wall));
    (readings.rss_kib, readings.threads) = rss_and_threads_of(pids);
    readings.max_rss_kib = readings.max_rss_kib.max(readings.rss_kib);
    readings
}
