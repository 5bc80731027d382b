//! The once-a-second snapshot: its wire schema ([`Snapshot`] and its parts,
//! served at `/api/stats` and sent to clients that ask for stats), the
//! hub's [`Window`] (latency histograms, rates, producers and utilisation of
//! the last second, owned by the hub thread) that builds it from the
//! ledger's totals and the gauges, and its log lines.
//!
//! Reads and writes no channel; the hub calls [`Window::snapshot`] and
//! publishes the result. The counting itself is in `ledger` and `gauges`.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::ops::faults::PanicCounts;
use crate::pipeline::event::{Outcome, Status};
use crate::pipeline::gauges::{micros_histogram, p99_ms, record_micros};
use crate::pipeline::ledger::{Dropped, Totals};

/// Latency percentiles of the outcomes judged in the last window, in ms.
#[derive(Clone, Copy, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LatencyMs {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest.
    pub max: f64,
    /// 99th percentile of how long after its deadline a late verdict was
    /// given (`decided − deadline_at`): the cost of waking a worker at its
    /// deadline. 0 when the window had no late verdict.
    pub late_after_deadline_p99: f64,
}

/// Per-second rates over the last window.
#[derive(Clone, Copy, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Rates {
    /// Generated events per second.
    pub generated: f64,
    /// Ingested events per second.
    pub ingested: f64,
    /// On-time verdicts per second.
    pub on_time: f64,
    /// Late verdicts per second.
    pub late: f64,
    /// Failed verdicts per second.
    pub failed: f64,
    /// Drops per second (all reasons).
    pub dropped: f64,
    /// Queue-full drops per second.
    pub queue_full: f64,
    /// Expired drops per second.
    pub expired: f64,
    /// Infeasible drops per second.
    pub infeasible: f64,
}

/// The state of the system once a second: served at `/api/stats` and sent to
/// clients that asked for stats.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Snapshot {
    /// Always `"stats"`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The run's epoch (see `epoch`): seqs and totals are this run's.
    pub epoch: String,
    /// Seconds since start.
    pub uptime_s: f64,
    /// Cumulative counts; they balance (see `Totals::balances`).
    pub totals: Totals,
    /// Per-second rates over the last window.
    pub rates: Rates,
    /// Latency of events worked on (on-time and late) in the last window.
    pub latency_ms: LatencyMs,
    /// Work queue fill.
    pub queue: QueueState,
    /// Worker pool use.
    pub workers: WorkerState,
    /// Connected dashboards.
    pub clients: ClientState,
    /// Generator state.
    pub generator: GeneratorState,
    /// Where the work runs and how its workers do.
    pub work: WorkState,
    /// Offered utilisation of the worker pool over the last few seconds.
    pub schedulability: Schedulability,
    /// Outcomes by producer (at most `MAX_PRODUCERS` rows, the rest as `other`).
    pub producers: Vec<ProducerStats>,
    /// Threads that panicked.
    pub threads: ThreadState,
    /// Effective settings.
    pub config: serde_json::Value,
    /// Latency of every event worked on since start, for `/metrics`.
    #[serde(skip)]
    pub cumulative_latency: CumulativeLatency,
}

/// A cumulative latency histogram with fixed buckets placed around the
/// deadline in force at start (Prometheus needs buckets that never change).
#[derive(Clone, Debug, Default)]
pub struct CumulativeLatency {
    bounds_s: Vec<f64>,
    counts: Vec<u64>,
    count: u64,
    sum_s: f64,
}

/// Bucket bounds as multiples of the deadline.
const BUCKET_FACTORS: [f64; 11] = [0.1, 0.25, 0.5, 0.75, 0.9, 1.0, 1.1, 1.25, 1.5, 2.0, 5.0];

impl CumulativeLatency {
    /// Buckets around `deadline`.
    pub fn around(deadline: Duration) -> Self {
        // Whole milliseconds keep the `le` labels readable (0.01, not 0.010000000000000002).
        let deadline_ms = deadline.as_secs_f64() * 1000.0;
        let bounds_s: Vec<f64> = BUCKET_FACTORS
            .iter()
            .map(|f| (deadline_ms * f).round().max(1.0) / 1000.0)
            .collect();
        CumulativeLatency {
            counts: vec![0; bounds_s.len()],
            bounds_s,
            count: 0,
            sum_s: 0.0,
        }
    }

    fn record(&mut self, latency: Duration) {
        let seconds = latency.as_secs_f64();
        if let Some(i) = self.bounds_s.iter().position(|le| seconds <= *le) {
            self.counts[i] += 1;
        }
        self.count += 1;
        self.sum_s += seconds;
    }

    /// `(upper bound in seconds, observations at or below it)`, ascending.
    pub fn buckets(&self) -> impl Iterator<Item = (f64, u64)> + '_ {
        self.bounds_s
            .iter()
            .zip(self.counts.iter().scan(0, |total, n| {
                *total += n;
                Some(*total)
            }))
            .map(|(le, n)| (*le, n))
    }

    /// Observations in all.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Sum of all observations, seconds.
    pub fn sum_seconds(&self) -> f64 {
        self.sum_s
    }
}

/// Work queue fill.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct QueueState {
    /// Events waiting now.
    pub depth: usize,
    /// Most events it holds.
    pub capacity: usize,
}

/// Worker pool use.
#[derive(Clone, Copy, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkerState {
    /// Workers running work now.
    pub busy: usize,
    /// Workers in the pool.
    pub total: usize,
    /// Total time spent running work since start, ms.
    pub work_ms_total: f64,
}

/// Connected dashboards.
#[derive(Clone, Copy, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClientState {
    /// Clients connected now.
    pub connected: usize,
    /// Of which over WebSocket.
    pub websocket: usize,
    /// Of which over Server-Sent Events.
    pub sse: usize,
    /// Effective most clients at once.
    pub max: usize,
    /// Messages clients missed because they fell off the log's tail, since start.
    pub dropped_messages: u64,
    /// Clients now served by their own thread: behind, replaying, or blocked.
    pub slow: usize,
    /// Times since start a client was left to its own thread.
    pub slow_turns: u64,
    /// Messages serialised by the hub and not yet handed out by the fan-out:
    /// a growing number means the fan-out cannot keep up with the clients.
    pub backlog: usize,
    /// Open HTTP connections, clients included.
    pub connections: usize,
    /// Effective most open connections at once.
    pub max_connections: usize,
    /// Failed `accept` calls since start (descriptors exhausted, say).
    pub accept_errors: u64,
}

/// Generator state.
#[derive(Clone, Copy, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GeneratorState {
    /// Target events per second (0: off).
    pub rate: u64,
    /// Ticks skipped because the generator fell behind, since start.
    pub lag_ticks: u64,
    /// 99th percentile of how late the generator woke for a tick (actual −
    /// scheduled wake) in the last window, in ms; 0 when it did not wake for one.
    pub tick_jitter_ms_p99: f64,
}

/// Whether the offered load fits the workers: `U = arrival rate × mean work /
/// workers` over the last few seconds. Below 1 every event can be served in
/// time with the right order; at 1 or more the system is overloaded by
/// design and drops are expected whatever the order.
#[derive(Clone, Copy, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Schedulability {
    /// U, the offered utilisation of the worker pool.
    pub utilisation: f64,
    /// 1 − U: the share of the pool left (negative when overloaded).
    pub headroom: f64,
    /// Events entered per second.
    pub arrival_rate: f64,
    /// Mean measured work per event worked on, ms (the configured mean
    /// `work + jitter / 2` while nothing was worked on).
    pub mean_work_ms: f64,
    /// Seconds the figures are taken over.
    pub window_s: f64,
}

impl Schedulability {
    fn of(load: Load, configured_work_ms: f64, workers: usize) -> Self {
        let round = |x: f64| (x * 1000.0).round() / 1000.0;
        if load.seconds <= 0.0 {
            return Schedulability::default();
        }
        let arrival_rate = load.arrivals as f64 / load.seconds;
        let mean_work_ms = if load.worked > 0 {
            load.work_ms / load.worked as f64
        } else {
            configured_work_ms
        };
        let utilisation = arrival_rate * mean_work_ms / 1000.0 / workers.max(1) as f64;
        Schedulability {
            utilisation: round(utilisation),
            headroom: round(1.0 - utilisation),
            arrival_rate: round(arrival_rate),
            mean_work_ms: round(mean_work_ms),
            window_s: round(load.seconds),
        }
    }

    /// Whether the offered load alone exceeds the pool (U ≥ 1).
    pub fn overloaded(&self) -> bool {
        self.utilisation >= 1.0
    }
}

/// Where the work runs (`--work`) and how the workers it is handed to do.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkState {
    /// `simulate`, `http` or `pull`.
    pub mode: &'static str,
    /// The worker URL (`http`), `/api/work` (`pull`), or none (`simulate`).
    pub target: Option<String>,
    /// Workers connected to `/api/work` now (`pull`; 0 otherwise).
    pub connected: usize,
    /// Tasks the connected workers take at once, together (`pull`).
    pub credit: usize,
    /// Tasks handed to a worker and not answered yet (`http`, `pull`).
    pub in_flight: usize,
    /// Share of the answers in the last window that were `failed` (0 to 1;
    /// 0 when nothing was answered).
    pub error_rate: f64,
}

/// The daemon's own threads.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct ThreadState {
    /// Panics caught since start, by role.
    pub panics: PanicCounts,
}

/// What a snapshot needs from the rest of the system at the moment it is taken.
pub struct Readings {
    /// Totals copied from the ledger.
    pub totals: Totals,
    /// Work queue depth and capacity.
    pub queue: QueueState,
    /// Worker pool.
    pub workers: WorkerState,
    /// Clients.
    pub clients: ClientState,
    /// Generator.
    pub generator: GeneratorState,
    /// Work (its `error_rate` is the window's, filled in by the snapshot).
    pub work: WorkState,
    /// Mean of the configured work (`work + jitter / 2`), ms: the utilisation's
    /// guess while nothing is worked on.
    pub configured_work_ms: f64,
    /// Threads.
    pub threads: ThreadState,
    /// Effective settings.
    pub config: serde_json::Value,
    /// The run's epoch.
    pub epoch: String,
}

/// Latency of the current window and the totals at its start. Owned by the hub.
pub struct Window {
    cumulative: CumulativeLatency,
    started: Instant,
    window_start: Instant,
    previous: Totals,
    latency_us: Histogram<u64>,
    late_after_deadline_us: Histogram<u64>,
    previous_work_ms: f64,
    /// The last few windows' load, for the utilisation.
    recent_load: VecDeque<Load>,
    producers: Producers,
}

/// Most producers with a row of their own; the rest share the row `other`,
/// so a producer naming itself anew for every event cannot grow the stats or
/// the metrics' label set without bound.
pub const MAX_PRODUCERS: usize = 32;

/// Outcomes by producer, owned by the hub's window.
#[derive(Default)]
struct Producers {
    rows: Vec<ProducerRow>,
    index: HashMap<Box<str>, usize>,
}

struct ProducerRow {
    name: Box<str>,
    verdicts: Totals,
    window_verdicts: u64,
    window_latency_us: Histogram<u64>,
}

impl Producers {
    fn record(&mut self, outcome: &Outcome) {
        let row = self.row(outcome.event.producer());
        let row = &mut self.rows[row];
        row.verdicts.count_verdict(outcome.status);
        row.window_verdicts += 1;
        if matches!(outcome.status, Status::OnTime | Status::Late) {
            record_micros(&mut row.window_latency_us, outcome.latency());
        }
    }

    /// The row of `name`: its own while there is room, else `other`.
    fn row(&mut self, name: &str) -> usize {
        if let Some(&row) = self.index.get(name) {
            return row;
        }
        let name = if self.rows.len() < MAX_PRODUCERS {
            name
        } else {
            "other"
        };
        if let Some(&row) = self.index.get(name) {
            return row;
        }
        self.rows.push(ProducerRow {
            name: name.into(),
            verdicts: Totals::default(),
            window_verdicts: 0,
            window_latency_us: micros_histogram(),
        });
        self.index.insert(name.into(), self.rows.len() - 1);
        self.rows.len() - 1
    }

    /// Every row's figures for a window of `seconds`; starts the next window.
    fn take(&mut self, seconds: f64) -> Vec<ProducerStats> {
        self.rows
            .iter_mut()
            .map(|row| {
                let stats = ProducerStats::of(row, seconds);
                row.window_verdicts = 0;
                row.window_latency_us.reset();
                stats
            })
            .collect()
    }
}

/// One producer's outcomes: cumulative counts, and the last window's rate and p99.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProducerStats {
    /// The producer's name (`generator`, `ingest`, a name it gave, or `other`).
    pub name: String,
    /// Verdicts since start.
    pub on_time: u64,
    /// Late verdicts since start.
    pub late: u64,
    /// Failed verdicts since start.
    pub failed: u64,
    /// Drops since start, by reason.
    pub dropped: Dropped,
    /// Share of its verdicts that were on time, percent (100 before any).
    pub on_time_pct: f64,
    /// Verdicts per second in the last window.
    pub rate: f64,
    /// p99 latency of its events worked on in the last window, ms (0: none).
    pub latency_p99_ms: f64,
}

impl ProducerStats {
    fn of(row: &ProducerRow, seconds: f64) -> Self {
        let v = &row.verdicts;
        let judged = v.judged();
        ProducerStats {
            name: row.name.to_string(),
            on_time: v.on_time,
            late: v.late,
            failed: v.failed,
            dropped: v.dropped,
            on_time_pct: if judged == 0 {
                100.0
            } else {
                v.on_time as f64 * 100.0 / judged as f64
            },
            rate: if seconds > 0.0 {
                row.window_verdicts as f64 / seconds
            } else {
                0.0
            },
            latency_p99_ms: p99_ms(&row.window_latency_us),
        }
    }
}

/// What one window offered and what its work took.
#[derive(Clone, Copy, Debug)]
struct Load {
    seconds: f64,
    arrivals: u64,
    worked: u64,
    work_ms: f64,
}

/// Windows the utilisation is taken over (about as many seconds).
const LOAD_WINDOWS: usize = 5;

impl Window {
    /// An empty window starting at `now`; the cumulative histogram's buckets
    /// are placed around `deadline`.
    pub fn new(now: Instant, deadline: Duration) -> Self {
        Window {
            cumulative: CumulativeLatency::around(deadline),
            started: now,
            window_start: now,
            previous: Totals::default(),
            latency_us: micros_histogram(),
            late_after_deadline_us: micros_histogram(),
            previous_work_ms: 0.0,
            recent_load: VecDeque::with_capacity(LOAD_WINDOWS),
            producers: Producers::default(),
        }
    }

    /// Adds an outcome's latency when it was worked on (on-time or late).
    /// Drops are excluded: their "latency" is time-to-drop and would flatter the chart.
    pub fn record(&mut self, outcome: &Outcome) {
        self.producers.record(outcome);
        if matches!(outcome.status, Status::OnTime | Status::Late) {
            record_micros(&mut self.latency_us, outcome.latency());
            self.cumulative.record(outcome.latency());
        }
        if outcome.status == Status::Late {
            let after = outcome
                .decided
                .saturating_duration_since(outcome.event.deadline_at());
            record_micros(&mut self.late_after_deadline_us, after);
        }
    }

    /// Closes the window at `now`, returns its snapshot, and starts the next one.
    pub fn snapshot(&mut self, now: Instant, readings: Readings) -> Snapshot {
        let elapsed = now.saturating_duration_since(self.window_start);
        let rates = rates(&self.previous, &readings.totals, elapsed);
        let schedulability = self.schedulability(elapsed, &readings);
        let work = WorkState {
            error_rate: error_rate(&self.previous, &readings.totals),
            ..readings.work
        };
        let latency_ms = self.latency_percentiles();
        self.previous = readings.totals;
        self.previous_work_ms = readings.workers.work_ms_total;
        self.window_start = now;
        self.latency_us.reset();
        self.late_after_deadline_us.reset();
        Snapshot {
            kind: "stats",
            epoch: readings.epoch,
            uptime_s: now.saturating_duration_since(self.started).as_secs_f64(),
            totals: readings.totals,
            rates,
            latency_ms,
            queue: readings.queue,
            workers: readings.workers,
            clients: readings.clients,
            generator: readings.generator,
            work,
            schedulability,
            producers: self.producers.take(elapsed.as_secs_f64()),
            threads: readings.threads,
            config: readings.config,
            cumulative_latency: self.cumulative.clone(),
        }
    }

    /// The offered utilisation over the last few windows, this one included.
    fn schedulability(&mut self, elapsed: Duration, readings: &Readings) -> Schedulability {
        if self.recent_load.len() == LOAD_WINDOWS {
            self.recent_load.pop_front();
        }
        let now = &readings.totals;
        self.recent_load.push_back(Load {
            seconds: elapsed.as_secs_f64(),
            arrivals: now.entered().saturating_sub(self.previous.entered()),
            worked: now.worked().saturating_sub(self.previous.worked()),
            work_ms: (readings.workers.work_ms_total - self.previous_work_ms).max(0.0),
        });
        let total = self.recent_load.iter().fold(
            Load {
                seconds: 0.0,
                arrivals: 0,
                worked: 0,
                work_ms: 0.0,
            },
            |sum, l| Load {
                seconds: sum.seconds + l.seconds,
                arrivals: sum.arrivals + l.arrivals,
                worked: sum.worked + l.worked,
                work_ms: sum.work_ms + l.work_ms,
            },
        );
        Schedulability::of(total, readings.configured_work_ms, readings.workers.total)
    }

    fn latency_percentiles(&self) -> LatencyMs {
        let late_after_deadline_p99 = p99_ms(&self.late_after_deadline_us);
        if self.latency_us.is_empty() {
            return LatencyMs {
                late_after_deadline_p99,
                ..LatencyMs::default()
            };
        }
        let ms = |us: u64| us as f64 / 1000.0;
        LatencyMs {
            p50: ms(self.latency_us.value_at_quantile(0.50)),
            p90: ms(self.latency_us.value_at_quantile(0.90)),
            p99: ms(self.latency_us.value_at_quantile(0.99)),
            max: ms(self.latency_us.max()),
            late_after_deadline_p99,
        }
    }
}

fn rates(before: &Totals, now: &Totals, elapsed: Duration) -> Rates {
    let secs = elapsed.as_secs_f64();
    if secs <= 0.0 {
        return Rates::default();
    }
    let per_s = |a: u64, b: u64| b.saturating_sub(a) as f64 / secs;
    Rates {
        generated: per_s(before.generated, now.generated),
        ingested: per_s(before.ingested, now.ingested),
        on_time: per_s(before.on_time, now.on_time),
        late: per_s(before.late, now.late),
        failed: per_s(before.failed, now.failed),
        dropped: per_s(before.dropped.total(), now.dropped.total()),
        queue_full: per_s(before.dropped.queue_full, now.dropped.queue_full),
        expired: per_s(before.dropped.expired, now.dropped.expired),
        infeasible: per_s(before.dropped.infeasible, now.dropped.infeasible),
    }
}

/// Failed answers among all answers between two totals.
fn error_rate(before: &Totals, now: &Totals) -> f64 {
    let answered = now.worked().saturating_sub(before.worked());
    if answered == 0 {
        0.0
    } else {
        now.failed.saturating_sub(before.failed) as f64 / answered as f64
    }
}

impl Snapshot {
    /// Share of verdicts that were on time, in percent (100 before any verdict).
    pub fn on_time_percent(&self) -> f64 {
        let judged = self.totals.judged();
        if judged == 0 {
            100.0
        } else {
            self.totals.on_time as f64 * 100.0 / judged as f64
        }
    }

    /// The short live line `systemctl status` shows.
    pub fn status_line(&self) -> String {
        format!(
            "{:.0} events/s, on-time {:.1}%, {} late, {} failed, {} dropped, {} clients",
            self.rates.generated + self.rates.ingested,
            self.on_time_percent(),
            self.totals.late,
            self.totals.failed,
            self.totals.dropped.total(),
            self.clients.connected,
        )
    }

    /// The one-line summary the log carries every `--log-interval`.
    pub fn summary_line(&self) -> String {
        let t = &self.totals;
        format!(
            "{:.0} events/s, on-time {:.1}% ({} on-time, {} late, {} failed, dropped {} queue-full / {} expired / {} infeasible), \
             p99 {:.1} ms, queue {}/{}, clients {}",
            self.rates.generated + self.rates.ingested,
            self.on_time_percent(),
            t.on_time,
            t.late,
            t.failed,
            t.dropped.queue_full,
            t.dropped.expired,
            t.dropped.infeasible,
            self.latency_ms.p99,
            self.queue.depth,
            self.queue.capacity,
            self.clients.connected,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::event::{DropReason, Event};

    #[test]
    fn the_cumulative_histogram_counts_at_or_below_each_bound() {
        let mut h = CumulativeLatency::around(Duration::from_millis(100));
        for ms in [5, 50, 100, 101, 700] {
            h.record(Duration::from_millis(ms));
        }
        let buckets: Vec<(f64, u64)> = h.buckets().collect();
        assert_eq!(buckets[0], (0.01, 1));
        assert_eq!(buckets[5], (0.1, 3));
        assert_eq!(buckets[6].1, 4);
        assert_eq!(buckets.last().copied(), Some((0.5, 4)));
        assert_eq!(h.count(), 5);
    }

    #[test]
    fn the_error_rate_is_the_failed_share_of_the_answers_in_the_window() {
        let before = Totals {
            on_time: 10,
            failed: 10,
            ..Totals::default()
        };
        let now = Totals {
            on_time: 13,
            late: 1,
            failed: 11,
            dropped: Dropped {
                expired: 50,
                ..Dropped::default()
            },
            ..Totals::default()
        };
        assert_eq!(error_rate(&before, &now), 0.2);
        assert_eq!(error_rate(&now, &now), 0.0, "nothing answered");
    }

    #[test]
    fn utilisation_is_arrivals_times_mean_work_over_the_workers() {
        let load = Load {
            seconds: 5.0,
            arrivals: 500,
            worked: 400,
            work_ms: 8_000.0,
        };
        // 100 events/s × 20 ms = 2 worker-seconds per second, of 4 workers.
        let s = Schedulability::of(load, 50.0, 4);
        assert_eq!(
            (s.arrival_rate, s.mean_work_ms, s.utilisation, s.headroom),
            (100.0, 20.0, 0.5, 0.5)
        );
        assert!(!s.overloaded());
        // Nothing worked on (all refused): the configured mean stands in.
        let refused = Load {
            worked: 0,
            work_ms: 0.0,
            ..load
        };
        let s = Schedulability::of(refused, 150.0, 4);
        assert_eq!(s.utilisation, 3.75);
        assert!(s.overloaded());
    }

    #[test]
    fn producers_beyond_the_bound_share_the_row_other() {
        let t0 = Instant::now();
        let mut window = Window::new(t0, Duration::from_millis(100));
        for n in 0..40 {
            let mut event = Event::generated(t0, Duration::from_millis(100));
            event.producer = Some(format!("p{n}").into());
            let status = if n % 2 == 0 {
                Status::OnTime
            } else {
                Status::Failed
            };
            window.record(&Outcome::new(event, status, t0 + Duration::from_millis(5)));
        }
        let rows = window.producers.take(1.0);
        assert_eq!(rows.len(), MAX_PRODUCERS + 1);
        let other = rows.last().expect("other");
        assert_eq!(other.name, "other");
        assert_eq!(other.on_time + other.failed, 40 - MAX_PRODUCERS as u64);
        assert_eq!(
            (rows[0].name.as_str(), rows[0].on_time, rows[0].on_time_pct),
            ("p0", 1, 100.0)
        );
        assert_eq!(
            (rows[1].failed, rows[1].on_time_pct, rows[1].rate),
            (1, 0.0, 1.0)
        );
        assert!(
            (4.99..=5.01).contains(&rows[0].latency_p99_ms),
            "{}",
            rows[0].latency_p99_ms
        );
        assert_eq!(
            window.producers.take(1.0)[0].rate,
            0.0,
            "the window starts afresh"
        );
    }

    #[test]
    fn rates_are_per_second_over_the_window() {
        let before = Totals::default();
        let now = Totals {
            generated: 40,
            on_time: 30,
            ..Totals::default()
        };
        let r = rates(&before, &now, Duration::from_secs(2));
        assert_eq!((r.generated, r.on_time), (20.0, 15.0));
    }

    #[test]
    fn only_late_verdicts_count_how_long_after_the_deadline_they_came() {
        let t0 = Instant::now();
        let deadline = Duration::from_millis(100);
        let mut window = Window::new(t0, deadline);
        let outcome = |status, decided_after_ms: u64| {
            Outcome::new(
                Event::generated(t0, deadline),
                status,
                t0 + Duration::from_millis(decided_after_ms),
            )
        };
        window.record(&outcome(Status::OnTime, 90));
        window.record(&outcome(Status::Dropped(DropReason::Expired), 300));
        assert_eq!(window.latency_percentiles().late_after_deadline_p99, 0.0);
        window.record(&outcome(Status::Late, 103));
        let late = window.latency_percentiles().late_after_deadline_p99;
        assert!((2.99..=3.01).contains(&late), "{late}");
    }
}
