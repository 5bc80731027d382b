//! The report of one run, typed: what `--json` prints and the summary reads.
//! Every field serialises under the name the JSON has always had; an
//! `Option` without `skip_serializing_if` is a key that is always there and
//! `null` when there is nothing to say.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::Value;

use crate::clients::{Tally, delay_histogram};
use crate::options::TargetKind;
use crate::procfs::ServerReadings;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub target: Target,
    pub host: Host,
    pub clients: Clients,
    pub window: Window,
    pub server: Server,
    /// This tool's own CPU during the window, % of one core.
    pub load_cpu_pct: Option<f64>,
    pub daemon_stats: DaemonStats,
    pub verdicts_per_second: VerdictRates,
    pub work: Work,
    #[serde(flatten)]
    pub tallied: Tallied,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ingest: Option<IngestReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replay: Option<ReplayReport>,
    /// The clients read in bulk (`--probes`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drained: Option<DrainReport>,
    /// What the tool published (`--target nchan`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub published: Option<PublishReport>,
}

impl Report {
    /// One line of JSON. Through `Value`, whose keys are sorted: the order
    /// the report has always printed in, whatever the order of the fields.
    pub fn to_json(&self) -> Result<String, String> {
        let value = serde_json::to_value(self).map_err(|e| format!("the report: {e}"))?;
        Ok(value.to_string())
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Target {
    /// punctual, or the peer (`nchan`).
    pub kind: TargetKind,
    /// The addresses the clients were dealt over, comma-separated.
    pub addr: String,
    pub spawned: bool,
    /// The first of `pids`.
    pub pid: Option<u32>,
    /// The processes measured as the server.
    pub pids: Vec<u32>,
    /// The spawned daemon's flags; absent for a daemon at `--addr`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub daemon_args: Option<Vec<String>>,
}

/// The machine: before the run, and during the window (% of one core).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Host {
    pub cpus: usize,
    pub busy_before_pct: f64,
    pub load_average_before: String,
    pub busy_during_pct: f64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Clients {
    pub ws: Connections,
    pub sse: Connections,
    pub connect_seconds: f64,
    pub caught_up: usize,
    pub grace_seconds: f64,
}

/// Connections of one kind (WebSocket or SSE clients, pull workers): how
/// many connected, why the others did not, and why any ended early.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Connections {
    pub requested: u32,
    pub connected: usize,
    pub connect_failures: u64,
    pub failure_reasons: BTreeMap<String, u64>,
    pub ended_early: usize,
    pub ended_example: Option<String>,
}

impl Connections {
    pub fn new(
        requested: u32,
        connected: usize,
        failures: &BTreeMap<String, u64>,
        ended: &[&str],
    ) -> Self {
        Connections {
            requested,
            connected,
            connect_failures: failures.values().sum(),
            failure_reasons: failures.clone(),
            ended_early: ended.len(),
            ended_example: ended.first().map(|&why| why.to_owned()),
        }
    }

    /// The measured clients of one transport, from their tallies.
    pub fn of_clients(requested: u32, tallies: &[Tally], failures: &BTreeMap<String, u64>) -> Self {
        let ended: Vec<&str> = tallies.iter().filter_map(|t| t.ended.as_deref()).collect();
        Connections::new(requested, tallies.len(), failures, &ended)
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Window {
    pub warmup_seconds: f64,
    pub seconds: f64,
}

/// The daemon's processes, added up; `None` where no pid is known.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Server {
    pub cpu_pct: Option<f64>,
    /// Each process's CPU in the order of `--pid`, when there are several.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub processes: Vec<ProcessCpu>,
    pub busiest_second_pct: Option<f64>,
    #[serde(rename = "rssMiB")]
    pub rss_mib: Option<f64>,
    #[serde(rename = "maxRssMiB")]
    pub max_rss_mib: Option<f64>,
    pub threads: Option<u64>,
    pub tick_jitter_ms_p99: Option<Spread>,
    /// Server CPU over the window per message the clients received of those
    /// decided in it (a drained client counted as getting what a measured
    /// one got on average), µs: what one more dashboard's message costs.
    pub cpu_us_per_message: Option<f64>,
}

impl Server {
    pub fn new(readings: &ServerReadings, pids: &[u32]) -> Self {
        let known = (!pids.is_empty()).then_some(());
        let mib = |kib: u64| known.map(|_| round1(kib as f64 / 1024.0));
        let processes = readings
            .cpu_pct_by_pid
            .iter()
            .filter(|_| pids.len() > 1)
            .map(|&(pid, pct)| ProcessCpu {
                pid,
                cpu_pct: pct.map(round1),
            })
            .collect();
        Server {
            cpu_pct: readings.cpu_pct.map(round1),
            processes,
            busiest_second_pct: readings.busiest_second_pct.map(round1),
            rss_mib: mib(readings.rss_kib),
            max_rss_mib: mib(readings.max_rss_kib),
            threads: known.map(|_| readings.threads),
            tick_jitter_ms_p99: Spread::of(&readings.tick_jitter_ms),
            cpu_us_per_message: None,
        }
    }
}

/// One of the server's processes.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProcessCpu {
    pub pid: u32,
    pub cpu_pct: Option<f64>,
}

/// Median and largest of a second-by-second reading.
#[derive(Serialize)]
pub struct Spread {
    pub median: f64,
    pub max: f64,
}

impl Spread {
    /// `None` without a reading.
    fn of(samples: &[f64]) -> Option<Self> {
        let mut sorted = samples.to_vec();
        sorted.sort_by(f64::total_cmp);
        let max = *sorted.last()?;
        Some(Spread {
            median: sorted[sorted.len() / 2],
            max,
        })
    }
}

/// The daemon's own counts (`/api/stats`); the parts passed on as they came
/// are the wire's JSON, `null` when missing.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DaemonStats {
    pub dropped_messages: u64,
    pub dropped_messages_during_run: u64,
    pub backlog: Option<Value>,
    pub connected: Option<Value>,
    pub generated_during_run: u64,
    pub totals: Option<Value>,
    pub producers: Option<Value>,
    /// Every event entered is accounted for by a verdict or in flight.
    pub conservation: bool,
}

/// Verdicts per second over the window, by the daemon's counts.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VerdictRates {
    pub seconds: f64,
    pub entered: f64,
    pub on_time: f64,
    pub late: f64,
    pub failed: f64,
    pub worked: f64,
    /// By drop reason.
    pub dropped: BTreeMap<String, f64>,
    /// Late and dropped verdicts by the daemon's cause (`spent.missesTotal`).
    pub misses: BTreeMap<String, f64>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Work {
    pub mode: Option<Value>,
    pub target: Option<Value>,
    pub error_rate: Option<Value>,
    /// Calls the HTTP worker answered (`--http-worker` only).
    pub http_calls: Option<u64>,
    /// Tasks the pull workers answered (`--pull-workers` only).
    pub pull_tasks: Option<u64>,
    pub pull_workers: Option<PullReport>,
    pub failed_during_run: u64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PullReport {
    #[serde(flatten)]
    pub connections: Connections,
    pub tasks_answered: u64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IngestReport {
    pub rate: f64,
    pub batch: u32,
    pub seconds: f64,
    pub posts: u64,
    pub accepted: u64,
    pub dropped: u64,
    pub refused: u64,
    pub failed_posts: u64,
    pub late_posts: u64,
}

/// The clients read in bulk: connected, and what they took in all.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DrainReport {
    pub requested: u32,
    pub connected: usize,
    pub connect_failures: u64,
    pub failure_reasons: BTreeMap<String, u64>,
    /// Bytes read from all of them, from connecting to closing.
    pub bytes: u64,
    /// Those the server closed before the tool did.
    pub closed_by_server: usize,
}

/// The messages the tool published to a peer.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PublishReport {
    pub rate: f64,
    pub seconds: f64,
    pub sent: u64,
    pub failed: u64,
    /// Sent more than a second behind schedule.
    pub late: u64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplayReport {
    pub requested: u32,
    pub connected: usize,
    pub pause_seconds: f64,
    /// Replays that got the whole run up to their start, in order.
    pub complete: usize,
    pub holes: u64,
    pub gap_notices: u64,
}

/// What the measured clients saw, all of them together.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Tallied {
    pub messages: Messages,
    pub delivery_ms: Delivery,
    pub end_to_end_ms: Percentiles,
    pub verdict_ms: Percentiles,
    /// The verdicts' `queueMs` and `workMs`: where their time went.
    pub queue_ms: Percentiles,
    pub work_ms: Percentiles,
    pub lateness_ms: Lateness,
    pub gaps: Gaps,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Messages {
    pub received: u64,
    pub per_second: f64,
    pub per_client_per_second: PerClient,
    /// Oldest and newest `seq` decided inside the window.
    pub seq_range: Option<[u64; 2]>,
    pub expected: u64,
    pub delivered_pct: Option<f64>,
    pub unparsed: u64,
    pub bad_sse_ids: u64,
}

#[derive(Serialize)]
pub struct PerClient {
    pub min: Option<f64>,
    pub median: Option<f64>,
}

/// Milliseconds.
#[derive(Serialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl Percentiles {
    fn of(histogram: &Histogram<u32>, max_us: u64) -> Self {
        let ms = |us: u64| round3(us as f64 / 1000.0);
        let at = |q: f64| ms(histogram.value_at_quantile(q));
        Percentiles {
            p50: at(0.50),
            p90: at(0.90),
            p99: at(0.99),
            p999: at(0.999),
            max: ms(max_us),
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Delivery {
    #[serde(flatten)]
    pub percentiles: Percentiles,
    /// Mean delivery of the events decided in each second of the window.
    pub mean_per_second: Vec<Option<f64>>,
}

#[derive(Serialize)]
pub struct Lateness {
    #[serde(flatten)]
    pub percentiles: Percentiles,
    /// Late verdicts seen.
    pub late: u64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Gaps {
    pub missing_seqs: u64,
    pub clients_with_missing: usize,
    pub gap_notices: u64,
    pub clients_with_gap_notices: usize,
    pub max_gap_notices_per_client: u64,
    pub resets: u64,
    pub out_of_order: u64,
}

/// The clients' tallies added up.
struct Merged {
    delay: Histogram<u32>,
    end_to_end: Histogram<u32>,
    verdict: Histogram<u32>,
    queue: Histogram<u32>,
    work: Histogram<u32>,
    lateness: Histogram<u32>,
    /// Per second of the window: delay sum (µs) and count.
    by_second: Vec<(u64, u64)>,
    first_seq: u64,
    last_seq: u64,
    max_delay_us: u64,
    /// Events per second of each client, sorted.
    rates: Vec<f64>,
}

fn merge(tallies: &[&Tally], seconds: f64) -> Result<Merged, String> {
    let mut m = Merged {
        delay: delay_histogram(),
        end_to_end: delay_histogram(),
        verdict: delay_histogram(),
        queue: delay_histogram(),
        work: delay_histogram(),
        lateness: delay_histogram(),
        by_second: vec![(0, 0); seconds.ceil() as usize],
        first_seq: u64::MAX,
        last_seq: 0,
        max_delay_us: 0,
        rates: Vec::with_capacity(tallies.len()),
    };
    let add =
        |to: &mut Histogram<u32>, from: &Histogram<u32>| to.add(from).map_err(|e| e.to_string());
    for t in tallies {
        add(&mut m.delay, &t.delay_us)?;
        add(&mut m.end_to_end, &t.end_to_end_us)?;
        add(&mut m.verdict, &t.verdict_us)?;
        add(&mut m.queue, &t.queue_us)?;
        add(&mut m.work, &t.work_us)?;
        add(&mut m.lateness, &t.lateness_us)?;
        for (total, (sum, n)) in m.by_second.iter_mut().zip(&t.by_second) {
            total.0 += sum;
            total.1 += n;
        }
        m.max_delay_us = m.max_delay_us.max(t.max_delay_us);
        if t.received > 0 {
            m.first_seq = m.first_seq.min(t.first_in_window);
            m.last_seq = m.last_seq.max(t.last_in_window);
        }
        m.rates.push(t.received as f64 / seconds);
    }
    m.rates.sort_by(f64::total_cmp);
    Ok(m)
}

/// Merges the clients' tallies: messages, delays, gaps.
pub fn tally_report(tallies: &[&Tally], seconds: f64) -> Result<Tallied, String> {
    let m = merge(tallies, seconds)?;
    let means = m
        .by_second
        .iter()
        .map(|&(sum, n)| (n > 0).then(|| round3(sum as f64 / n as f64 / 1000.0)))
        .collect();
    Ok(Tallied {
        messages: messages(tallies, &m, seconds),
        delivery_ms: Delivery {
            percentiles: Percentiles::of(&m.delay, m.max_delay_us),
            mean_per_second: means,
        },
        end_to_end_ms: Percentiles::of(&m.end_to_end, m.end_to_end.max()),
        verdict_ms: Percentiles::of(&m.verdict, m.verdict.max()),
        queue_ms: Percentiles::of(&m.queue, m.queue.max()),
        work_ms: Percentiles::of(&m.work, m.work.max()),
        lateness_ms: Lateness {
            percentiles: Percentiles::of(&m.lateness, m.lateness.max()),
            late: m.lateness.len(),
        },
        gaps: gaps(tallies),
    })
}

fn messages(tallies: &[&Tally], m: &Merged, seconds: f64) -> Messages {
    let sum = |f: fn(&Tally) -> u64| tallies.iter().map(|t| f(t)).sum::<u64>();
    let received = sum(|t| t.received);
    let decided = if received > 0 {
        m.last_seq - m.first_seq + 1
    } else {
        0
    };
    let expected = decided * tallies.len() as u64;
    Messages {
        received,
        per_second: round1(received as f64 / seconds),
        per_client_per_second: PerClient {
            min: m.rates.first().copied().map(round1),
            median: m.rates.get(m.rates.len() / 2).copied().map(round1),
        },
        seq_range: (received > 0).then_some([m.first_seq, m.last_seq]),
        expected,
        delivered_pct: (expected > 0).then(|| round3(received as f64 * 100.0 / expected as f64)),
        unparsed: sum(|t| t.unparsed),
        bad_sse_ids: sum(|t| t.bad_ids),
    }
}

fn gaps(tallies: &[&Tally]) -> Gaps {
    let sum = |f: fn(&Tally) -> u64| tallies.iter().map(|t| f(t)).sum::<u64>();
    let clients_with = |f: fn(&Tally) -> u64| tallies.iter().filter(|t| f(t) > 0).count();
    Gaps {
        missing_seqs: sum(|t| t.missing),
        clients_with_missing: clients_with(|t| t.missing),
        gap_notices: sum(|t| t.gap_notices),
        clients_with_gap_notices: clients_with(|t| t.gap_notices),
        max_gap_notices_per_client: tallies.iter().map(|t| t.gap_notices).max().unwrap_or(0),
        resets: sum(|t| t.resets),
        out_of_order: sum(|t| t.out_of_order),
    }
}

pub fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}
