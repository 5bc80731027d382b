//! The hub's window: latency histograms, rates, per-producer rows, the
//! offered utilisation and the overload verdict's tallies of the last second,
//! owned by the hub thread, which closes it once a second into a [`Snapshot`]
//! built from the ledger's totals and the other readings.
//!
//! Reads and writes no channel.
//!
//! Must not know: who reads the snapshot.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::config::WorkMode;
use crate::pipeline::event::{Cause, DropReason, Outcome, Split, Status};
use crate::pipeline::ledger::Totals;
use crate::pipeline::meters::{MAX_TRACKED_LATENCY_US, micros_histogram, p99_ms, record_micros};
use crate::pipeline::overload::{Counters, Health, Now, Recent};
use crate::pipeline::stats::{
    Causes, CumulativeLatency, LatencyMs, Load, ProducerStats, Quantiles, Rates, Readings,
    Schedulability, Snapshot, Spent, WorkState,
};

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
    /// The last few windows' tallies, for the overload verdict.
    recent: Recent,
    producers: Producers,
    spent: SpentWindow,
}

/// Where the time of one window's outcomes went, and its misses by cause
/// (the window's and since start): overall in the hub's window, and in each
/// producer's row.
struct SpentWindow {
    queue_us: Histogram<u64>,
    wait_us: Histogram<u64>,
    work_us: Histogram<u64>,
    misses: Causes,
    misses_total: Causes,
}

impl SpentWindow {
    fn new() -> Self {
        SpentWindow {
            queue_us: part_histogram(),
            wait_us: part_histogram(),
            work_us: part_histogram(),
            misses: Causes::default(),
            misses_total: Causes::default(),
        }
    }

    fn record(&mut self, outcome: &Outcome, split: &Split, cause: Option<Cause>) {
        let queued = outcome.status != Status::Dropped(DropReason::QueueFull);
        if queued {
            record_part(&mut self.queue_us, split.queue);
        }
        if outcome.stages.dequeued.is_some() {
            record_part(&mut self.wait_us, split.wait);
        }
        if let Some(work) = split.work {
            record_part(&mut self.work_us, work);
        }
        if let Some(cause) = cause {
            self.misses.count(cause);
            self.misses_total.count(cause);
        }
    }

    /// The window's figures; starts the next window.
    fn take(&mut self) -> Spent {
        let spent = Spent {
            queue_ms: quantiles(&self.queue_us),
            wait_ms: quantiles(&self.wait_us),
            work_ms: quantiles(&self.work_us),
            misses: self.misses,
            misses_total: self.misses_total,
        };
        self.queue_us.reset();
        self.wait_us.reset();
        self.work_us.reset();
        self.misses = Causes::default();
        spent
    }
}

/// A histogram of one part of the outcomes' time, in µs, to two significant
/// digits: a p50 or p99 within 1 % says where the time went, and at a
/// seventh of a latency histogram's memory (26 KiB), three of them per
/// producer row stay small (2.7 MB for all 33 rows).
fn part_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_TRACKED_LATENCY_US, 2)
        .expect("constant histogram bounds are valid")
}

/// Records `part` in whole microseconds, clamped at the ceiling. Unlike a
/// latency, a part is often exactly zero (no credit wait outside `pull`), and
/// is shown as 0, not as the 1 µs floor of a latency histogram.
fn record_part(histogram: &mut Histogram<u64>, part: Duration) {
    let micros = crate::time::whole_micros(part);
    histogram.saturating_record(micros.min(MAX_TRACKED_LATENCY_US));
}

fn quantiles(histogram: &Histogram<u64>) -> Quantiles {
    if histogram.is_empty() {
        return Quantiles::default();
    }
    let ms = |q: f64| histogram.value_at_quantile(q) as f64 / 1000.0;
    Quantiles {
        p50: ms(0.50),
        p99: ms(0.99),
    }
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
    spent: SpentWindow,
}

impl Producers {
    fn record(&mut self, outcome: &Outcome, split: &Split, cause: Option<Cause>) {
        let row = self.row(outcome.event.producer());
        let row = &mut self.rows[row];
        row.verdicts.count_verdict(outcome.status);
        row.window_verdicts += 1;
        if matches!(outcome.status, Status::OnTime | Status::Late) {
            record_micros(&mut row.window_latency_us, outcome.latency());
        }
        row.spent.record(outcome, split, cause);
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
            spent: SpentWindow::new(),
        });
        self.index.insert(name.into(), self.rows.len() - 1);
        self.rows.len() - 1
    }

    /// Every row's figures for a window of `seconds`; starts the next window.
    fn take(&mut self, seconds: f64) -> Vec<ProducerStats> {
        self.rows
            .iter_mut()
            .map(|row| {
                let stats = ProducerStats {
                    spent: row.spent.take(),
                    ..ProducerStats::of(row, seconds)
                };
                row.window_verdicts = 0;
                row.window_latency_us.reset();
                stats
            })
            .collect()
    }
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
            spent: Spent::default(),
        }
    }
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
            recent: Recent::default(),
            producers: Producers::default(),
            spent: SpentWindow::new(),
        }
    }

    /// Adds an outcome's latency when it was worked on (on-time or late).
    /// Drops are excluded: their "latency" is time-to-drop and would flatter the chart.
    pub fn record(&mut self, outcome: &Outcome) {
        let split = outcome.split;
        let cause = outcome.cause();
        self.producers.record(outcome, &split, cause);
        self.spent.record(outcome, &split, cause);
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
        let health = self.health(&readings, &schedulability);
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
            kind: "stats".into(),
            epoch: readings.epoch,
            uptime_s: now.saturating_duration_since(self.started).as_secs_f64(),
            totals: readings.totals,
            rates,
            latency_ms,
            spent: self.spent.take(),
            queue: readings.queue,
            workers: readings.workers,
            clients: readings.clients,
            generator: readings.generator,
            work,
            schedulability,
            health,
            producers: self.producers.take(elapsed.as_secs_f64()),
            threads: readings.threads,
            config: readings.config,
            cluster: readings.cluster,
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

    /// Closes this window's tallies and judges the last few windows, with
    /// the queue, the workers and U as they are now.
    fn health(&mut self, readings: &Readings, schedulability: &Schedulability) -> Health {
        self.recent.close(Counters {
            totals: readings.totals,
            lag_ticks: readings.generator.lag_ticks,
            missed_messages: readings.clients.dropped_messages,
        });
        self.recent.judge(Now {
            queue_depth: readings.queue.depth,
            queue_capacity: readings.queue.capacity,
            no_workers: readings.work.mode == WorkMode::Pull.name() && readings.work.connected == 0,
            utilisation: schedulability.utilisation,
        })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, Knobs};
    use crate::ops::limits::Caps;
    use crate::pipeline::event::{DropReason, Event};
    use crate::pipeline::ledger::Dropped;
    use crate::pipeline::overload::State;
    use crate::pipeline::stats::{
        ClientState, GeneratorState, QueueState, ThreadState, WorkerState,
    };

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

    /// Readings of a quiet simulating daemon with nothing judged yet.
    fn quiet_readings() -> Readings {
        Readings {
            totals: Totals::default(),
            queue: QueueState {
                depth: 0,
                capacity: 64,
            },
            workers: WorkerState {
                busy: 0,
                total: 4,
                work_ms_total: 0.0,
            },
            clients: ClientState {
                connected: 0,
                websocket: 0,
                sse: 0,
                max: 10,
                dropped_messages: 0,
                slow: 0,
                slow_turns: 0,
                backlog: 0,
                connections: 0,
                max_connections: 10,
                accept_errors: 0,
            },
            generator: GeneratorState {
                rate: 0,
                lag_ticks: 0,
                tick_jitter_ms_p99: 0.0,
            },
            work: WorkState {
                mode: "simulate".into(),
                target: None,
                connected: 0,
                credit: 0,
                in_flight: 0,
                error_rate: 0.0,
            },
            configured_work_ms: 10.0,
            threads: ThreadState {
                panics: Default::default(),
            },
            config: {
                let config = Config::for_tests();
                let caps = Caps {
                    connections: 10,
                    clients: 10,
                };
                config.effective(&Knobs::new(&config), caps)
            },
            epoch: "e".into(),
            cluster: None,
        }
    }

    #[test]
    fn each_snapshot_carries_the_verdict_on_its_own_readings() {
        let t0 = Instant::now();
        let mut window = Window::new(t0, Duration::from_millis(100));
        let first = window.snapshot(t0 + Duration::from_secs(1), quiet_readings());
        assert_eq!(
            (first.health.state, first.health.reasons.len()),
            (State::Healthy, 0)
        );
        let mut readings = quiet_readings();
        readings.queue.depth = 60;
        readings.work.mode = WorkMode::Pull.name().into();
        readings.generator.lag_ticks = 3;
        readings.clients.dropped_messages = 7;
        let second = window.snapshot(t0 + Duration::from_secs(2), readings);
        assert_eq!(second.health.state, State::Overloaded);
        assert_eq!(
            second.health.reasons,
            [
                "queue 93.8 % full",
                "no workers connected",
                "generator falling behind",
                "clients missing messages"
            ]
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
