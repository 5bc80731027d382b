//! The once-a-second snapshot: its wire schema ([`Snapshot`] and its parts,
//! served at `/api/stats` and sent to clients that ask for stats) and its
//! log lines. The hub's window builds it (`window`); the counting itself is
//! in `ledger` and `meters`.
//!
//! Reads and writes no channel.

use std::borrow::Cow;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::Settings;
use crate::ops::faults::PanicCounts;
use crate::pipeline::event::Cause;
use crate::pipeline::ledger::{Dropped, Totals};
use crate::pipeline::overload::{Health, OVERLOADED_UTILISATION};

/// Latency percentiles of the outcomes judged in the last window, in ms.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
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

/// The 50th and 99th percentiles of one part of the outcomes' time in the
/// last window, ms (0 when the window had none).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Quantiles {
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
}

/// Misses (late and dropped outcomes) by cause (see `event::Cause`). A
/// count a processor of another version does not send reads as 0.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Causes {
    /// Most of the time was spent waiting in the queue.
    pub queue: u64,
    /// The work ran past what was left (or its worker panicked).
    pub work: u64,
    /// The queue was full (`queue-full`).
    pub capacity: u64,
    /// Admission saw it could not finish in time (`infeasible`).
    pub admission: u64,
    /// Most of the time was spent waiting for a pull worker with room.
    pub credit: u64,
    /// Most of the time had passed before the event arrived (its producer's
    /// `createdAt`).
    pub transit: u64,
}

impl Causes {
    /// Counts one miss.
    pub fn count(&mut self, cause: Cause) {
        *self.of_mut(cause) += 1;
    }

    /// `(cause's wire name, misses)` of every cause, in `Cause::ALL`'s order.
    pub fn named(&self) -> [(&'static str, u64); Cause::ALL.len()] {
        Cause::ALL.map(|cause| (cause.name(), self.of(cause)))
    }

    /// The misses of `cause`.
    pub fn of(&self, cause: Cause) -> u64 {
        match cause {
            Cause::Queue => self.queue,
            Cause::Work => self.work,
            Cause::Capacity => self.capacity,
            Cause::Admission => self.admission,
            Cause::Credit => self.credit,
            Cause::Transit => self.transit,
        }
    }

    fn of_mut(&mut self, cause: Cause) -> &mut u64 {
        match cause {
            Cause::Queue => &mut self.queue,
            Cause::Work => &mut self.work,
            Cause::Capacity => &mut self.capacity,
            Cause::Admission => &mut self.admission,
            Cause::Credit => &mut self.credit,
            Cause::Transit => &mut self.transit,
        }
    }
}

/// Where the outcomes' time went (`queueMs`, `waitMs`, `workMs` on the wire)
/// and why deadlines were missed: overall in [`Snapshot::spent`], and per
/// producer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Spent {
    /// Queue wait, from arrival, of the last window's outcomes but
    /// `queue-full` ones (refused at the door, or pushed out by `edf`).
    pub queue_ms: Quantiles,
    /// Credit wait of the last window's outcomes a worker took (0 unless `pull`).
    pub wait_ms: Quantiles,
    /// Work of the last window's outcomes whose work started.
    pub work_ms: Quantiles,
    /// The last window's misses by cause.
    pub misses: Causes,
    /// Misses by cause since start.
    pub misses_total: Causes,
}

/// Per-second rates over the last window.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
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
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Snapshot {
    /// Always `"stats"`.
    #[serde(rename = "type")]
    pub kind: Cow<'static, str>,
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
    /// Where the time went and why deadlines were missed.
    #[serde(default)]
    pub spent: Spent,
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
    /// The hub's verdict on the last few seconds: healthy, degraded or
    /// overloaded, why, and the rule (see `overload`).
    pub health: Health,
    /// Outcomes by producer (at most `MAX_PRODUCERS` rows, the rest as `other`).
    pub producers: Vec<ProducerStats>,
    /// Threads that panicked.
    pub threads: ThreadState,
    /// Effective settings.
    pub config: Settings,
    /// The link to Redis (`--role processor` or `edge`; absent on one node).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterState>,
    /// Latency of every event worked on since start, for `/metrics`.
    #[serde(skip)]
    pub cumulative_latency: CumulativeLatency,
}

/// A cumulative latency histogram with fixed buckets placed around the
/// deadline in force at start (Prometheus needs buckets that never change).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
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

    pub(super) fn record(&mut self, latency: Duration) {
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
            .zip(self.counts.iter().scan(0u64, |total, n| {
                *total = total.saturating_add(*n);
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
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct QueueState {
    /// Events waiting now.
    pub depth: usize,
    /// Most events it holds.
    pub capacity: usize,
}

/// Worker pool use.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
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
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
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
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
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
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
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

/// What one window offered and what its work took.
#[derive(Clone, Copy, Debug)]
pub(super) struct Load {
    pub(super) seconds: f64,
    pub(super) arrivals: u64,
    pub(super) worked: u64,
    pub(super) work_ms: f64,
}

impl Schedulability {
    pub(super) fn of(load: Load, configured_work_ms: f64, workers: usize) -> Self {
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
        self.utilisation >= OVERLOADED_UTILISATION
    }
}

/// Where the work runs (`--work`) and how the workers it is handed to do.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkState {
    /// `simulate`, `http` or `pull`.
    pub mode: Cow<'static, str>,
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
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
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
    pub config: Settings,
    /// The run's epoch.
    pub epoch: String,
    /// The link to Redis, on a processor.
    pub cluster: Option<ClusterState>,
}

/// One producer's outcomes: cumulative counts, and the last window's rate and p99.
#[derive(Clone, Debug, Serialize, Deserialize)]
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
    /// Where its events' time went and why its deadlines were missed.
    #[serde(default)]
    pub spent: Spent,
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
}

/// `cluster` in the stats of a processor or an edge (absent on `--role all`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterState {
    /// This node's role.
    pub role: crate::config::NodeRole,
    /// `connected` or `unreachable`.
    pub redis: String,
    /// Outcomes published (processor) or read (edge).
    pub outcomes: u64,
    /// Outcomes never published (processor) or missing from the stream (edge).
    pub missed: u64,
    /// Times the link to Redis was lost.
    pub disconnects: u64,
    /// Stream entries this node could not read, skipped.
    #[serde(default)]
    pub unreadable: u64,
    /// The last error talking to Redis.
    pub last_error: Option<String>,
    /// Events posted at edges, on their way through Redis.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingest: Option<IngestState>,
    /// On a processor: where it stands in the processor lease.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<LeaseState>,
    /// On an edge: the processor's own `cluster` section, as last published.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processor: Option<Box<ClusterState>>,
}

/// `cluster.lease`: which of the processors sharing a prefix is active.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LeaseState {
    /// `active`, `standby` or `lost`.
    pub state: String,
    /// The id (epoch) of the processor holding the lease, when known.
    pub holder: Option<String>,
    /// The lease's time to live, ms.
    pub ttl_ms: u64,
}

/// `cluster.ingest`: events posted at edges on their way to the processor.
/// An edge fills in `forwarded` and `refused`; a processor the rest, where
/// `accepted` and `enteredAll` are the deployment's counters in Redis, so
/// `accepted = enteredAll + waiting`.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IngestState {
    /// Events this edge put in the stream.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub forwarded: u64,
    /// Batches this edge refused (Redis unreachable, or too many waiting).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub refused: u64,
    /// Events this processor entered from the stream.
    #[serde(default)]
    pub entered: u64,
    /// Stream entries this processor removed as not a batch of events.
    #[serde(default)]
    pub malformed: u64,
    /// Events every edge put in the stream, ever.
    #[serde(default)]
    pub accepted: u64,
    /// Events every processor took out of it, ever.
    #[serde(default)]
    pub entered_all: u64,
    /// Events in the stream now: `accepted - enteredAll`.
    #[serde(default)]
    pub waiting: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}
