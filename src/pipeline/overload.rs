//! The overload rule: the hub's verdict on the last few seconds — healthy,
//! degraded or overloaded, and why — published in every snapshot as
//! `health`. It is judged here once; the dashboard shows it as it is.
//!
//! Owns: [`Recent`], the tallies of the last [`HEALTH_WINDOWS`] windows,
//! kept by the hub's window. Reads and writes no channel.
//!
//! Must not know: who shows the verdict, and `/healthz` / `/readyz`
//! (`ops::health`: whether the daemon is alive and ready, not how it copes).

use std::borrow::Cow;
use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::pipeline::ledger::Totals;

/// Windows (of a second each) the rule looks back over.
pub const HEALTH_WINDOWS: usize = 5;
/// Share of the outcomes that were late, failed or dropped above which the
/// daemon is overloaded.
pub const OVERLOADED_BAD_SHARE: f64 = 0.05;
/// Queue fill (of its capacity) above which the daemon is overloaded.
pub const OVERLOADED_QUEUE_FILL: f64 = 0.9;
/// Queue fill above which the daemon is degraded.
pub const DEGRADED_QUEUE_FILL: f64 = 0.5;
/// Offered utilisation U at or above which the daemon is overloaded by
/// design: the workers cannot serve what is offered, whatever the order.
pub const OVERLOADED_UTILISATION: f64 = 1.0;

/// The rule in words, shown beside the verdict. `the_rule_in_words_names_every_threshold`
/// keeps it in step with the constants above.
///
/// It travels in every snapshot (`health.rule`, about 400 bytes a second per
/// stats client) rather than only in the docs, so the page shows the words of
/// the rule that decided, from the one place its thresholds are named, and
/// keeps no copy that could drift from them.
pub const RULE: &str = "Over the last 5 s: overloaded when late + failed + dropped exceed 5 % of outcomes, \
    the queue is over 90 % full or U ≥ 1 (arrivals × mean work ÷ workers: overloaded by design, drops expected \
    whatever the order); degraded when anything was late, failed or dropped, the queue is over 50 % full, \
    no worker is connected to pull work, the generator lagged or a client missed messages; healthy otherwise.";

/// The verdict's states.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Nothing the rule looks at is wrong.
    Healthy,
    /// Something was missed or is filling up, within the overload thresholds.
    Degraded,
    /// Past an overload threshold.
    Overloaded,
}

/// The hub's verdict on the last few seconds, as published in a snapshot.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Health {
    /// The state the rule gives.
    pub state: State,
    /// Every sign the rule saw, in words, in the rule's order (empty when healthy).
    pub reasons: Vec<String>,
    /// The rule, in words ([`RULE`]): so whoever shows the verdict shows what
    /// decided it without a copy of its own.
    pub rule: Cow<'static, str>,
}

/// What one window adds to the rule: its outcomes, and how much two
/// counters grew in it.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(super) struct Tally {
    /// Outcomes judged (on time, late, failed, dropped).
    pub(super) judged: u64,
    /// Of which late, failed or dropped.
    pub(super) bad: u64,
    /// Generator ticks skipped.
    pub(super) lag_ticks: u64,
    /// Messages clients missed.
    pub(super) missed_messages: u64,
}

impl Tally {
    fn plus(self, other: Tally) -> Tally {
        Tally {
            judged: self.judged + other.judged,
            bad: self.bad + other.bad,
            lag_ticks: self.lag_ticks + other.lag_ticks,
            missed_messages: self.missed_messages + other.missed_messages,
        }
    }
}

/// What the rule reads from the newest snapshot alone: a queue, a worker
/// count and U are states, not sums (U is already an average over seconds).
#[derive(Clone, Copy, Debug)]
pub(super) struct Now {
    pub(super) queue_depth: usize,
    pub(super) queue_capacity: usize,
    /// `--work pull` and no worker connected.
    pub(super) no_workers: bool,
    pub(super) utilisation: f64,
}

/// The counters a window's tally is the growth of.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Counters {
    pub(super) totals: Totals,
    pub(super) lag_ticks: u64,
    pub(super) missed_messages: u64,
}

/// The tallies of the last [`HEALTH_WINDOWS`] windows and the counters at
/// the end of the newest. Owned by the hub's window.
#[derive(Debug, Default)]
pub(super) struct Recent {
    windows: VecDeque<Tally>,
    last: Counters,
}

impl Recent {
    /// Closes a window whose end the counters `now` describe; the oldest
    /// window is forgotten once there are [`HEALTH_WINDOWS`].
    pub(super) fn close(&mut self, now: Counters) {
        let before = self.last;
        let bad = |t: &Totals| t.late + t.failed + t.dropped.total();
        // Counters only grow within a run; saturating keeps a surprise from panicking.
        let tally = Tally {
            judged: now.totals.judged().saturating_sub(before.totals.judged()),
            bad: bad(&now.totals).saturating_sub(bad(&before.totals)),
            lag_ticks: now.lag_ticks.saturating_sub(before.lag_ticks),
            missed_messages: now.missed_messages.saturating_sub(before.missed_messages),
        };
        if self.windows.len() == HEALTH_WINDOWS {
            self.windows.pop_front();
        }
        self.windows.push_back(tally);
        self.last = now;
    }

    /// The verdict on the windows kept and the newest snapshot's `now`.
    pub(super) fn judge(&self, now: Now) -> Health {
        let sum = self
            .windows
            .iter()
            .fold(Tally::default(), |a, b| a.plus(*b));
        verdict(sum, now)
    }
}

/// The rule: `recent` summed over the last windows, `now` from the newest.
fn verdict(recent: Tally, now: Now) -> Health {
    let bad_share = if recent.judged > 0 {
        recent.bad as f64 / recent.judged as f64
    } else {
        0.0
    };
    let fill = if now.queue_capacity > 0 {
        now.queue_depth as f64 / now.queue_capacity as f64
    } else {
        0.0
    };
    let by_design = now.utilisation >= OVERLOADED_UTILISATION;
    let lagged = recent.lag_ticks > 0;
    let missed = recent.missed_messages > 0;
    let state = if bad_share > OVERLOADED_BAD_SHARE || fill > OVERLOADED_QUEUE_FILL || by_design {
        State::Overloaded
    } else if recent.bad > 0 || fill > DEGRADED_QUEUE_FILL || now.no_workers || lagged || missed {
        State::Degraded
    } else {
        State::Healthy
    };
    let signs = [
        by_design.then(|| {
            format!(
                "U {:.2} ≥ {OVERLOADED_UTILISATION}: overloaded by design, drops expected",
                now.utilisation
            )
        }),
        (recent.bad > 0).then(|| format!("{} late, failed or dropped", percent(bad_share))),
        (fill > DEGRADED_QUEUE_FILL).then(|| format!("queue {} full", percent(fill))),
        now.no_workers.then(|| "no workers connected".to_owned()),
        lagged.then(|| "generator falling behind".to_owned()),
        missed.then(|| "clients missing messages".to_owned()),
    ];
    Health {
        state,
        reasons: signs.into_iter().flatten().collect(),
        rule: Cow::Borrowed(RULE),
    }
}

/// A share in [0, 1] as "97.5 %": two decimals below 10 %, one above, none
/// at 0 or from 99.95 % up (the dashboard's `formatPercent`, whose words
/// these reasons were).
fn percent(share: f64) -> String {
    let pct = share * 100.0;
    let digits = if pct >= 99.95 || pct == 0.0 {
        0
    } else if pct < 10.0 {
        2
    } else {
        1
    };
    format!("{pct:.digits$} %")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::ledger::Dropped;

    const CALM: Now = Now {
        queue_depth: 0,
        queue_capacity: 64,
        no_workers: false,
        utilisation: 0.5,
    };

    fn outcomes(on_time: u64, bad: u64) -> Tally {
        Tally {
            judged: on_time + bad,
            bad,
            ..Tally::default()
        }
    }

    fn said(recent: Tally, now: Now) -> (State, Vec<String>) {
        let health = verdict(recent, now);
        (health.state, health.reasons)
    }

    #[test]
    fn all_on_time_with_a_calm_queue_is_healthy_and_says_nothing() {
        assert_eq!(said(outcomes(500, 0), CALM), (State::Healthy, vec![]));
        assert_eq!(said(Tally::default(), CALM), (State::Healthy, vec![]));
    }

    #[test]
    fn any_bad_outcome_is_degraded_and_more_than_5_percent_is_overloaded() {
        assert_eq!(
            said(outcomes(499, 1), CALM),
            (
                State::Degraded,
                vec!["0.20 % late, failed or dropped".to_owned()]
            )
        );
        // Exactly 5 % is not more than 5 %.
        assert_eq!(said(outcomes(95, 5), CALM).0, State::Degraded);
        assert_eq!(
            said(outcomes(470, 30), CALM),
            (
                State::Overloaded,
                vec!["6.00 % late, failed or dropped".to_owned()]
            )
        );
        assert_eq!(
            said(outcomes(0, 30), CALM).1,
            vec!["100 % late, failed or dropped".to_owned()]
        );
    }

    #[test]
    fn a_queue_over_half_full_is_degraded_and_over_90_percent_overloaded() {
        let queue = |depth| Now {
            queue_depth: depth,
            ..CALM
        };
        assert_eq!(said(outcomes(100, 0), queue(32)).0, State::Healthy);
        assert_eq!(
            said(outcomes(100, 0), queue(40)),
            (State::Degraded, vec!["queue 62.5 % full".to_owned()])
        );
        assert_eq!(said(outcomes(100, 0), queue(57)).0, State::Degraded);
        // Exactly 90 % is not over 90 %.
        let nine_of_ten = Now {
            queue_depth: 9,
            queue_capacity: 10,
            ..CALM
        };
        assert_eq!(said(outcomes(100, 0), nine_of_ten).0, State::Degraded);
        assert_eq!(
            said(outcomes(100, 0), queue(60)),
            (State::Overloaded, vec!["queue 93.8 % full".to_owned()])
        );
        let no_queue = Now {
            queue_capacity: 0,
            ..queue(5)
        };
        assert_eq!(said(outcomes(1, 0), no_queue).0, State::Healthy);
    }

    #[test]
    fn u_of_1_or_more_is_overloaded_by_design_and_said_first() {
        let u = |utilisation| Now {
            utilisation,
            ..CALM
        };
        assert_eq!(said(outcomes(100, 0), u(0.99)).0, State::Healthy);
        assert_eq!(
            said(outcomes(100, 0), u(1.0)),
            (
                State::Overloaded,
                vec!["U 1.00 ≥ 1: overloaded by design, drops expected".to_owned()]
            )
        );
        assert_eq!(
            said(outcomes(50, 50), u(2.0)).1,
            vec![
                "U 2.00 ≥ 1: overloaded by design, drops expected".to_owned(),
                "50.0 % late, failed or dropped".to_owned(),
            ]
        );
    }

    #[test]
    fn a_pull_daemon_without_workers_is_degraded_and_says_so() {
        let none = Now {
            no_workers: true,
            ..CALM
        };
        assert_eq!(
            said(Tally::default(), none),
            (State::Degraded, vec!["no workers connected".to_owned()])
        );
    }

    #[test]
    fn generator_lag_and_missed_client_messages_are_degraded() {
        let lag = Tally {
            lag_ticks: 1,
            ..outcomes(100, 0)
        };
        assert_eq!(
            said(lag, CALM),
            (State::Degraded, vec!["generator falling behind".to_owned()])
        );
        let missed = Tally {
            missed_messages: 3,
            ..outcomes(100, 0)
        };
        assert_eq!(
            said(missed, CALM),
            (State::Degraded, vec!["clients missing messages".to_owned()])
        );
    }

    fn counters(on_time: u64, late: u64, lag_ticks: u64, missed_messages: u64) -> Counters {
        Counters {
            totals: Totals {
                generated: on_time + late,
                on_time,
                late,
                ..Totals::default()
            },
            lag_ticks,
            missed_messages,
        }
    }

    #[test]
    fn the_verdict_sums_the_last_5_windows_and_forgets_older_ones() {
        let mut recent = Recent::default();
        // Window 1: 100 on time, 30 late, the generator lagged, a client missed 2.
        recent.close(counters(100, 30, 4, 2));
        // Windows 2–5: 100 on time each, nothing else.
        for n in 2..=5 {
            recent.close(counters(100 * n, 30, 4, 2));
        }
        let health = recent.judge(CALM);
        // 30 of 530: 5.66 % over the five windows.
        assert_eq!(health.state, State::Overloaded);
        assert_eq!(
            health.reasons,
            [
                "5.66 % late, failed or dropped",
                "generator falling behind",
                "clients missing messages"
            ]
        );
        // Window 6 pushes window 1 out: nothing bad, no lag, nothing missed.
        recent.close(counters(600, 30, 4, 2));
        assert_eq!(recent.judge(CALM).state, State::Healthy);
        // A drop counts as bad like a late verdict.
        let mut dropped = counters(700, 30, 4, 2);
        dropped.totals.dropped = Dropped {
            expired: 1,
            ..Dropped::default()
        };
        recent.close(dropped);
        assert_eq!(recent.judge(CALM).state, State::Degraded);
    }

    #[test]
    fn the_verdict_is_published_as_lowercase_state_reasons_and_rule() {
        let json = serde_json::to_value(verdict(outcomes(499, 1), CALM)).expect("serialises");
        assert_eq!(
            json,
            serde_json::json!({
                "state": "degraded",
                "reasons": ["0.20 % late, failed or dropped"],
                "rule": RULE,
            })
        );
    }

    #[test]
    fn the_rule_in_words_names_every_threshold() {
        let pct = |share: f64| format!("{} %", share * 100.0);
        for words in [
            format!("Over the last {HEALTH_WINDOWS} s"),
            format!("exceed {} of outcomes", pct(OVERLOADED_BAD_SHARE)),
            format!(
                "over {} full or U ≥ {OVERLOADED_UTILISATION}",
                pct(OVERLOADED_QUEUE_FILL)
            ),
            format!("over {} full, no worker", pct(DEGRADED_QUEUE_FILL)),
        ] {
            assert!(RULE.contains(&words), "the rule lacks {words:?}: {RULE}");
        }
    }
}
