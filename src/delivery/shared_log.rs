//! The shared log: every serialised message of this run, once, in order.
//!
//! Owns: the bounded ring of [`Broadcast`]s (outcomes and stats), each at a
//! position that counts up from 0; the run's [`Epoch`]; and where a client's
//! wishes (`since`, `replay`, live) start in it, with the notices a stream
//! opens with (`hello`, then `reset` and `gap` when needed).
//!
//! Written only by the fan-out thread ([`Log::append`]); read by every
//! client's cursor, by `GET /api/events` and, on a processor, by the
//! publisher (`cluster`). A full ring (in messages or in bytes) forgets its
//! oldest message: the writer never waits on a reader.
//!
//! On an edge the run changes while the log lives (the processor restarted):
//! the feed appends a [`run_switch`] message, after which positions and seqs
//! are the new run's. Messages of the old run stay until the ring forgets
//! them, so a cursor reading through the switch sees the old run's tail, the
//! `reset` notice, then the new run; resuming looks in the current run only.
//!
//! Must not know: clients, sockets, deadlines.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;

use super::message::{Broadcast, Kind};
use crate::epoch::{Epoch, Position};

/// Messages the log holds beyond `--history`: room for the stats messages
/// between outcomes and for live clients a little behind, when the history
/// asked for is small.
pub const LOG_SLACK: usize = 4096;

/// Which outcomes a client wants replayed before the live stream.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Resume {
    /// Live only.
    #[default]
    Live,
    /// Every retained outcome after this position (a client resuming); a
    /// position from another run replays this run from its start.
    Since(Position),
    /// The last N retained outcomes.
    Last(usize),
}

/// Retained outcomes after a position, and what the client must be told first.
#[derive(Debug, Default)]
pub struct Replay {
    /// Outcomes, oldest first.
    pub messages: Vec<Broadcast>,
    /// `(from, to)`: outcomes asked for but already gone from the log.
    pub gap: Option<(u64, u64)>,
    /// Set when the position is not from this run: the replay then starts at
    /// this run's first outcome.
    pub reset: Option<Reset>,
}

/// A resuming client's position is from another run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reset {
    /// The run the client named; `None` when it named none and its `seq` is
    /// beyond anything this run has handed out.
    pub previous: Option<Epoch>,
}

/// Where a new client starts reading, and what it is told first.
#[derive(Debug)]
pub struct Start {
    /// The first position it reads.
    pub position: u64,
    /// Positions before this one are replay: stats among them are skipped.
    pub live_from: u64,
    /// The last `seq` before its first outcome (for gap notices later).
    pub last_seq: u64,
    /// `hello`, then `reset` and `gap` when needed.
    pub notices: Vec<Broadcast>,
}

/// What a cursor found in the log.
#[derive(Debug, PartialEq)]
pub enum Read {
    /// Messages from the cursor on were copied out; the next position to read.
    Messages(u64),
    /// The cursor fell off the tail: the oldest retained position, and the
    /// `seq` of the oldest retained outcome of the current run (or the next
    /// one to come); `switch` when the cursor was in an earlier run.
    Behind {
        oldest: u64,
        oldest_seq: u64,
        switch: Option<Switch>,
    },
    /// Nothing after the cursor yet.
    CaughtUp,
}

/// The last run switch in the log, for a cursor that fell off across it.
#[derive(Clone, Debug, PartialEq)]
pub struct Switch {
    /// The `reset` notice that started the current run.
    pub message: Broadcast,
    /// The last `seq` of the run before it.
    pub previous_newest: u64,
}

/// The log of this run.
#[derive(Debug)]
pub struct Log {
    ring: Mutex<Ring>,
    /// Signalled after every append, for readers that wait instead of being
    /// handed batches (the cluster publisher).
    appended: Condvar,
    capacity: usize,
    /// Most bytes of JSON the ring holds (`--history-bytes`): big payloads
    /// shorten the history instead of growing the daemon.
    max_bytes: usize,
    /// Outcomes kept for replay (`--history`); the ring may hold more.
    history: usize,
}

#[derive(Debug)]
struct Ring {
    /// The run whose seqs the newest messages carry.
    epoch: Epoch,
    /// Position of the first message of the current run: seqs increase from
    /// there on (older positions may hold an earlier run's tail).
    run_start: u64,
    /// The switch that started the current run (none in a node's first run).
    switch: Option<Switch>,
    messages: VecDeque<Broadcast>,
    /// Position of `messages[0]`.
    first: u64,
    /// The last `seq` handed out.
    newest: u64,
    /// Bytes of JSON in `messages`.
    bytes: usize,
    /// Nothing more will be appended (the fan-out ended).
    closed: bool,
}

impl Ring {
    fn new(epoch: Epoch) -> Self {
        Ring {
            epoch,
            run_start: 0,
            switch: None,
            messages: VecDeque::new(),
            first: 0,
            newest: 0,
            bytes: 0,
            closed: false,
        }
    }

    fn head(&self) -> u64 {
        self.first + self.messages.len() as u64
    }

    /// How many retained messages are from an earlier run.
    fn earlier_runs(&self) -> usize {
        usize::try_from(self.run_start.saturating_sub(self.first)).unwrap_or(usize::MAX)
    }

    /// The retained messages of the current run.
    fn this_run(&self) -> impl Iterator<Item = &Broadcast> {
        self.messages.iter().skip(self.earlier_runs())
    }

    /// Position of the first retained outcome of this run with a `seq` above
    /// `seq` (seqs never decrease within a run; stats carry the last outcome's).
    fn position_after(&self, seq: u64) -> u64 {
        // A binary search over the current run's part of the ring.
        let (mut low, mut high) = (
            self.earlier_runs().min(self.messages.len()),
            self.messages.len(),
        );
        while low < high {
            let middle = low + (high - low) / 2;
            if self.messages[middle].seq <= seq {
                low = middle + 1;
            } else {
                high = middle;
            }
        }
        self.first + low as u64
    }

    fn begin_run(&mut self, epoch: Epoch, message: &Broadcast) {
        self.switch = Some(Switch {
            message: message.clone(),
            previous_newest: self.newest,
        });
        self.epoch = epoch;
        self.run_start = self.head();
        self.newest = 0;
    }

    fn forget_oldest(&mut self) {
        if let Some(oldest) = self.messages.pop_front() {
            self.bytes -= oldest.json.len();
            self.first += 1;
        }
    }

    /// The `seq` of the oldest outcome a replay may still serve.
    fn oldest_replayable(&self, history: usize) -> u64 {
        let oldest_held = self
            .this_run()
            .find(|m| m.kind == Kind::Event)
            .map_or(self.newest.saturating_add(1), |m| m.seq);
        let window = self.newest.saturating_sub(history as u64).saturating_add(1);
        oldest_held.max(window)
    }
}

impl Log {
    /// A log of the run `epoch` that keeps `history` outcomes for replay,
    /// in at most `max_bytes` of JSON (the newest message is always kept).
    pub fn new(history: usize, max_bytes: usize, epoch: Epoch) -> Self {
        Log {
            ring: Mutex::new(Ring::new(epoch)),
            appended: Condvar::new(),
            capacity: history + LOG_SLACK,
            max_bytes,
            history,
        }
    }

    /// The run whose messages this log holds now.
    pub fn epoch(&self) -> Epoch {
        self.lock().epoch.clone()
    }

    /// Appends `batch` and returns the position of its first message.
    pub fn append(&self, batch: &[Broadcast]) -> u64 {
        let mut ring = self.lock();
        let start = ring.head();
        for message in batch {
            match message.kind {
                Kind::Event => ring.newest = message.seq,
                Kind::Reset => {
                    if let Some(epoch) = switched_to(message) {
                        ring.begin_run(epoch, message);
                    }
                }
                _ => {}
            }
            while !ring.messages.is_empty()
                && (ring.messages.len() == self.capacity
                    || ring.bytes + message.json.len() > self.max_bytes)
            {
                ring.forget_oldest();
            }
            ring.bytes += message.json.len();
            ring.messages.push_back(message.clone());
        }
        drop(ring);
        self.appended.notify_all();
        start
    }

    /// Waits until something is appended at or after `position` or the log
    /// is closed, at most `timeout`. Returns `false` once the log is closed
    /// and `position` is its head: nothing more will come.
    pub fn wait_past(&self, position: u64, timeout: Duration) -> bool {
        let ring = self.lock();
        let (ring, _) = self
            .appended
            .wait_timeout_while(ring, timeout, |ring| {
                ring.head() <= position && !ring.closed
            })
            .unwrap_or_else(|e| e.into_inner());
        !(ring.closed && ring.head() <= position)
    }

    /// The last outcome `seq` of the current run.
    pub fn newest_seq(&self) -> u64 {
        self.lock().newest
    }

    /// Whether appends have ended.
    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// Marks the end of appends (the fan-out ended) and wakes every waiter.
    pub fn close(&self) {
        self.lock().closed = true;
        self.appended.notify_all();
    }

    /// The position the next message will take.
    #[cfg(test)]
    fn head(&self) -> u64 {
        self.lock().head()
    }

    /// Copies up to `max` messages from position `from` on into `into`,
    /// stopping once they come to `max_bytes` (at least one is copied).
    pub fn read(&self, from: u64, max: usize, max_bytes: usize, into: &mut Vec<Broadcast>) -> Read {
        let ring = self.lock();
        if from < ring.first {
            let oldest_seq = ring
                .this_run()
                .find(|m| m.kind == Kind::Event)
                .map_or(ring.newest.saturating_add(1), |m| m.seq);
            return Read::Behind {
                oldest: ring.first,
                oldest_seq,
                switch: (from < ring.run_start)
                    .then(|| ring.switch.clone())
                    .flatten(),
            };
        }
        let skip = usize::try_from(from - ring.first).unwrap_or(usize::MAX);
        if skip >= ring.messages.len() {
            return Read::CaughtUp;
        }
        let before = into.len();
        into.extend(within_bytes(ring.messages.iter().skip(skip).take(max), max_bytes).cloned());
        Read::Messages(from + (into.len() - before) as u64)
    }

    /// Whether position `at` is the head: nothing after it yet.
    pub fn is_head(&self, at: u64) -> bool {
        self.lock().head() == at
    }

    /// Where a client that asked for `resume` starts, and what it is told
    /// first. Called on the fan-out thread between two appends, so the
    /// replay and the live stream meet without gap or duplicate.
    pub fn start(&self, resume: &Resume) -> Start {
        let ring = self.lock();
        let head = ring.head();
        let mut notices = vec![hello_message(&ring.epoch, ring.newest)];
        let live = Start {
            position: head,
            live_from: head,
            last_seq: ring.newest,
            notices: Vec::new(),
        };
        let mut start = match resume {
            Resume::Live => live,
            Resume::Last(n) => {
                let oldest = ring.oldest_replayable(self.history);
                let since = ring.newest.saturating_sub(*n as u64).max(oldest - 1);
                Start {
                    position: ring.position_after(since),
                    last_seq: since,
                    ..live
                }
            }
            Resume::Since(position) => {
                let replay = self.replay_of(&ring, position);
                let since = if replay.reset.is_some() {
                    0
                } else {
                    position.seq
                };
                if let Some(reset) = &replay.reset {
                    notices.push(reset_message(&ring.epoch, reset));
                }
                if let Some((from, to)) = replay.gap {
                    notices.push(gap_message(from, to));
                }
                let resumed = since.max(ring.oldest_replayable(self.history) - 1);
                Start {
                    position: ring.position_after(resumed),
                    last_seq: resumed,
                    ..live
                }
            }
        };
        start.notices = notices;
        start
    }

    /// Up to `limit` retained outcomes after `position`, for `GET /api/events`,
    /// stopping once they come to `max_bytes` (at least one is given).
    ///
    /// A position names its run by epoch; one from another run is answered
    /// with a [`Reset`] and this run from its start, never with the outcomes
    /// after its `seq` (which would skip this run's first ones). A position
    /// without an epoch cannot be checked and is taken to be from this run,
    /// unless its `seq` is beyond the newest one handed out: that can only
    /// come from an earlier run.
    pub fn after(&self, position: &Position, limit: usize, max_bytes: usize) -> Replay {
        let ring = self.lock();
        let mut replay = self.replay_of(&ring, position);
        let since = if replay.reset.is_some() {
            0
        } else {
            position.seq
        };
        let oldest = ring.oldest_replayable(self.history);
        let outcomes = ring
            .this_run()
            .filter(|m| m.kind == Kind::Event && m.seq > since && m.seq >= oldest)
            .take(limit);
        replay.messages = within_bytes(outcomes, max_bytes).cloned().collect();
        replay
    }

    /// Whether `position` is from this run, and what it missed. A position
    /// that names this run is from it even past the newest `seq` here (on an
    /// edge a little behind another, the client has seen more than this log;
    /// what it has is not sent again, see `Client::join`); one without an
    /// epoch past the newest `seq` can only be from an earlier run.
    fn replay_of(&self, ring: &Ring, position: &Position) -> Replay {
        let from_this_run = match &position.epoch {
            Some(epoch) => *epoch == ring.epoch,
            None => position.seq <= ring.newest,
        };
        let (since, reset) = if from_this_run {
            (position.seq, None)
        } else {
            let previous = position.epoch.clone();
            (0, Some(Reset { previous }))
        };
        let oldest = ring.oldest_replayable(self.history);
        let gap = (since.saturating_add(1) < oldest).then(|| (since + 1, oldest - 1));
        Replay {
            messages: Vec::new(),
            gap,
            reset,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Ring> {
        self.ring.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The first of `messages` whose JSON comes to at most `max_bytes`, and
/// always the first one: a budget never stops a reader for good.
fn within_bytes<'a>(
    messages: impl Iterator<Item = &'a Broadcast>,
    max_bytes: usize,
) -> impl Iterator<Item = &'a Broadcast> {
    let mut taken = 0usize;
    messages.take_while(move |m| {
        let first = taken == 0;
        taken = taken.saturating_add(m.json.len().max(1));
        first || taken <= max_bytes
    })
}

/// The first message of every stream: which run this is, and the newest
/// `seq` at the moment the client joined (replayed and live outcomes follow).
fn hello_message(epoch: &Epoch, newest: u64) -> Broadcast {
    // An epoch is letters, digits, '-' and '_' only (see `Epoch::parse`):
    // nothing in it needs escaping.
    let json = format!(r#"{{"type":"hello","epoch":"{epoch}","seq":{newest}}}"#);
    notice(Kind::Hello, newest, json)
}

/// The message telling a client its position is from another run: what
/// follows is this run from its start.
fn reset_message(epoch: &Epoch, reset: &Reset) -> Broadcast {
    let previous = match &reset.previous {
        Some(previous) => format!(r#""{previous}""#),
        None => "null".to_owned(),
    };
    let json = format!(r#"{{"type":"reset","epoch":"{epoch}","previousEpoch":{previous}}}"#);
    notice(Kind::Reset, 0, json)
}

/// The message that starts a new run in the log (an edge's feed appends it
/// when the processor's epoch changes): clients that asked for control
/// messages read it as the `reset` notice a resuming client gets.
pub fn run_switch(epoch: &Epoch, previous: &Epoch) -> Broadcast {
    let previous = Some(previous.clone());
    reset_message(epoch, &Reset { previous })
}

/// The run a `reset` message names (a [`run_switch`] in the log, or the
/// notice a resuming client gets); `None` for any other message.
pub fn switched_to(message: &Broadcast) -> Option<Epoch> {
    if message.kind != Kind::Reset {
        return None;
    }
    #[derive(serde::Deserialize)]
    struct Switch<'a> {
        epoch: &'a str,
    }
    let switch: Switch<'_> = serde_json::from_slice(&message.json).ok()?;
    Epoch::parse(switch.epoch).ok()
}

/// The message telling a client that outcomes `from..=to` are no longer retained.
pub fn gap_message(from: u64, to: u64) -> Broadcast {
    let json = format!(r#"{{"type":"gap","from":{from},"to":{to}}}"#);
    notice(Kind::Gap, to, json)
}

fn notice(kind: Kind, seq: u64, json: String) -> Broadcast {
    Broadcast {
        kind,
        seq,
        status: "",
        json: Bytes::from(json),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn event(seq: u64) -> Broadcast {
        Broadcast {
            kind: Kind::Event,
            seq,
            status: if seq.is_multiple_of(2) {
                "late"
            } else {
                "on-time"
            },
            json: Bytes::from(format!(r#"{{"seq":{seq}}}"#)),
        }
    }

    const RUN: &str = "00000000000000aa";

    fn log_with(history: usize, outcomes: u64) -> Log {
        let log = Log::new(history, usize::MAX, Epoch::parse(RUN).expect("valid epoch"));
        let batch: Vec<_> = (1..=outcomes).map(event).collect();
        log.append(&batch);
        log
    }

    fn since(epoch: Option<&str>, seq: u64) -> Resume {
        Resume::Since(Position {
            epoch: epoch.map(|e| Epoch::parse(e).expect("valid epoch")),
            seq,
        })
    }

    fn seqs_from(log: &Log, start: &Start) -> Vec<u64> {
        let mut got = Vec::new();
        log.read(start.position, usize::MAX, usize::MAX, &mut got);
        got.iter().map(|m| m.seq).collect()
    }

    fn kinds(start: &Start) -> Vec<Kind> {
        start.notices.iter().map(|m| m.kind).collect()
    }

    #[test]
    fn a_run_switch_starts_the_next_run_in_the_same_log() {
        let log = log_with(100, 10);
        let old = Epoch::parse(RUN).expect("valid epoch");
        let new = Epoch::parse("00000000000000bb").expect("valid epoch");
        let mut batch = vec![run_switch(&new, &old)];
        batch.extend((1..=3).map(event));
        log.append(&batch);
        assert_eq!(log.epoch(), new);

        // A cursor reading through the switch sees the old tail, the reset, the new run.
        let mut all = Vec::new();
        log.read(0, usize::MAX, usize::MAX, &mut all);
        assert_eq!(all[10].kind, Kind::Reset);
        assert_eq!(
            all[11..].iter().map(|m| m.seq).collect::<Vec<_>>(),
            [1, 2, 3]
        );

        // Positions are read in the new run only.
        let start = log.start(&since(Some("00000000000000bb"), 1));
        assert_eq!(kinds(&start), [Kind::Hello]);
        assert_eq!(seqs_from(&log, &start), [2, 3]);
        let start = log.start(&since(Some(RUN), 8));
        assert_eq!(kinds(&start), [Kind::Hello, Kind::Reset]);
        assert_eq!(seqs_from(&log, &start), [1, 2, 3]);
        let live = log.start(&Resume::Live);
        assert!(String::from_utf8_lossy(&live.notices[0].json).contains("00000000000000bb"));
        assert_eq!(live.last_seq, 3);
        let replay = log.after(
            &Position {
                epoch: Some(new),
                seq: 0,
            },
            10,
            usize::MAX,
        );
        assert_eq!(
            replay.messages.iter().map(|m| m.seq).collect::<Vec<_>>(),
            [1, 2, 3]
        );
    }

    #[test]
    fn a_client_ahead_of_this_log_in_its_run_resumes_live_with_no_reset() {
        // An edge a little behind another: the client has seen seq 12.
        let log = log_with(100, 10);
        let start = log.start(&since(Some(RUN), 12));
        assert_eq!(kinds(&start), [Kind::Hello]);
        assert_eq!(start.position, log.head());
        assert_eq!(start.last_seq, 12, "seqs up to 12 are not sent again");
        let replay = log.after(
            &Position {
                epoch: Some(Epoch::parse(RUN).expect("valid epoch")),
                seq: 12,
            },
            10,
            usize::MAX,
        );
        assert!(replay.reset.is_none() && replay.messages.is_empty());
    }

    #[test]
    fn a_cursor_that_falls_off_across_a_run_switch_is_handed_the_switch() {
        let log = Log::new(4, usize::MAX, Epoch::parse(RUN).expect("valid epoch"));
        log.append(&(1..=5).map(event).collect::<Vec<_>>());
        let new = Epoch::parse("00000000000000bb").expect("valid epoch");
        let mut batch = vec![run_switch(&new, &Epoch::parse(RUN).expect("valid epoch"))];
        batch.extend((1..=LOG_SLACK as u64 + 10).map(event));
        log.append(&batch);
        match log.read(2, 10, usize::MAX, &mut Vec::new()) {
            Read::Behind {
                switch: Some(switch),
                ..
            } => {
                assert_eq!(switch.previous_newest, 5);
                assert_eq!(switch.message.kind, Kind::Reset);
            }
            other => panic!("expected Behind with the switch, got {other:?}"),
        }
    }

    #[test]
    fn a_resuming_client_starts_right_after_its_seq() {
        let log = log_with(100, 10);
        let start = log.start(&since(Some(RUN), 7));
        assert_eq!(kinds(&start), [Kind::Hello]);
        assert_eq!(seqs_from(&log, &start), [8, 9, 10]);
        assert_eq!(start.live_from, log.head());
    }

    #[test]
    fn resuming_from_before_the_history_is_announced_as_a_gap() {
        let log = log_with(5, 20);
        let start = log.start(&since(None, 3));
        assert_eq!(kinds(&start), [Kind::Hello, Kind::Gap]);
        assert_eq!(start.notices[1].seq, 15);
        assert_eq!(seqs_from(&log, &start), [16, 17, 18, 19, 20]);
        let replay = log.after(
            &Position {
                epoch: Some(Epoch::parse(RUN).expect("valid")),
                seq: 3,
            },
            usize::MAX,
            usize::MAX,
        );
        assert_eq!(replay.gap, Some((4, 15)));
        assert_eq!(replay.messages.len(), 5);
    }

    #[test]
    fn a_position_from_another_run_is_reset_and_replayed_from_this_runs_start() {
        let log = log_with(100, 30);
        let start = log.start(&since(Some("00000000000000bb"), 20));
        assert_eq!(kinds(&start), [Kind::Hello, Kind::Reset]);
        assert_eq!(seqs_from(&log, &start).len(), 30);
        assert_eq!(
            start.notices[1].json,
            format!(r#"{{"type":"reset","epoch":"{RUN}","previousEpoch":"00000000000000bb"}}"#)
        );
    }

    #[test]
    fn a_seq_without_an_epoch_is_trusted_unless_this_run_never_reached_it() {
        let log = log_with(100, 10);
        assert!(
            log.after(&since_position(None, 5), 100, usize::MAX)
                .reset
                .is_none()
        );
        let beyond = log.after(&since_position(None, 50), 100, usize::MAX);
        assert_eq!(beyond.reset, Some(Reset { previous: None }));
        assert_eq!(beyond.messages.len(), 10);
    }

    fn since_position(epoch: Option<&str>, seq: u64) -> Position {
        Position {
            epoch: epoch.map(|e| Epoch::parse(e).expect("valid epoch")),
            seq,
        }
    }

    #[test]
    fn replay_of_the_last_n_starts_n_outcomes_back() {
        let log = log_with(100, 10);
        let start = log.start(&Resume::Last(3));
        assert_eq!(seqs_from(&log, &start), [8, 9, 10]);
        let all = log.start(&Resume::Last(1000));
        assert_eq!(seqs_from(&log, &all).len(), 10);
    }

    #[test]
    fn a_full_log_forgets_its_oldest_and_a_cursor_behind_it_is_told() {
        let log = Log::new(0, usize::MAX, Epoch::parse(RUN).expect("valid"));
        let batch: Vec<_> = (1..=(LOG_SLACK as u64 + 10)).map(event).collect();
        log.append(&batch);
        let mut got = Vec::new();
        assert_eq!(
            log.read(0, 10, usize::MAX, &mut got),
            Read::Behind {
                switch: None,
                oldest: 10,
                oldest_seq: 11
            }
        );
        assert!(got.is_empty());
        assert_eq!(
            log.read(log.head(), 10, usize::MAX, &mut got),
            Read::CaughtUp
        );
    }

    #[test]
    fn the_log_holds_at_most_its_bytes_and_reads_stop_at_theirs() {
        let log = Log::new(100, 40, Epoch::parse(RUN).expect("valid"));
        // Each message is 9 or 10 bytes: four fit in 40.
        let batch: Vec<_> = (1..=20).map(event).collect();
        log.append(&batch);
        let mut got = Vec::new();
        assert_eq!(log.read(16, 100, usize::MAX, &mut got), Read::Messages(20));
        assert!(matches!(
            log.read(0, 10, usize::MAX, &mut got),
            Read::Behind { oldest: 16, .. }
        ));
        got.clear();
        assert_eq!(log.read(16, 100, 25, &mut got), Read::Messages(18));
        got.clear();
        assert_eq!(
            log.read(16, 100, 1, &mut got),
            Read::Messages(17),
            "one message at least"
        );
        let page = log.after(&since_position(None, 0), 100, 25);
        assert_eq!(page.messages.len(), 2);
        assert_eq!(page.gap, Some((1, 16)));
    }

    #[test]
    fn with_no_history_kept_a_resume_gets_a_gap_and_the_live_stream() {
        let log = log_with(0, 10);
        let start = log.start(&since(Some(RUN), 2));
        assert_eq!(kinds(&start), [Kind::Hello, Kind::Gap]);
        assert_eq!(start.position, log.head());
        assert!(
            log.after(&since_position(None, 0), 100, usize::MAX)
                .messages
                .is_empty()
        );
    }

    #[test]
    fn every_stream_opens_with_a_hello_naming_the_run_and_the_newest_seq() {
        let log = log_with(10, 4);
        let start = log.start(&Resume::Live);
        assert_eq!(
            start.notices[0].json,
            format!(r#"{{"type":"hello","epoch":"{RUN}","seq":4}}"#)
        );
        assert_eq!(start.position, log.head());
    }
}
