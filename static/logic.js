// Pure logic of the dashboard: no DOM, no network, no timers, no globals.
// Everything here is deterministic given its arguments, so it can be tested
// under Node (tests/js/logic.test.mjs) as well as used by the page.

/** Seconds of history the charts and the series keep. */
export const WINDOW_S = 300;

/**
 * Seconds the server's health verdict and the stats bar's recent on-time share
 * look back over; stats older than this leave the health "unknown" (a stale stream).
 */
export const HEALTH_WINDOW_S = 5;

/**
 * A fixed-capacity FIFO. Pushing onto a full ring overwrites the oldest item
 * and counts it in `overwritten`; `drain()` returns the items oldest first and
 * empties the ring. Memory is bounded by `capacity` whatever the input rate.
 */
export class Ring {
  constructor(capacity) {
    if (!Number.isInteger(capacity) || capacity < 1) throw new RangeError("capacity must be a positive integer");
    this.capacity = capacity;
    this.items = new Array(capacity);
    this.start = 0;
    this.length = 0;
    this.overwritten = 0;
  }

  push(item) {
    const end = (this.start + this.length) % this.capacity;
    this.items[end] = item;
    if (this.length < this.capacity) {
      this.length++;
    } else {
      this.start = (this.start + 1) % this.capacity;
      this.overwritten++;
    }
  }

  /** Items oldest first, without removing them. */
  toArray() {
    const out = new Array(this.length);
    for (let i = 0; i < this.length; i++) out[i] = this.items[(this.start + i) % this.capacity];
    return out;
  }

  /** Items newest first, at most `n` of them. */
  newest(n = this.length) {
    const count = Math.min(n, this.length);
    const out = new Array(count);
    for (let i = 0; i < count; i++) out[i] = this.items[(this.start + this.length - 1 - i) % this.capacity];
    return out;
  }

  /** Removes and returns every item, oldest first. */
  drain() {
    const out = this.toArray();
    this.clear();
    return out;
  }

  clear() {
    this.items = new Array(this.capacity);
    this.start = 0;
    this.length = 0;
  }
}

/**
 * Reconnect delay before attempt number `attempt` (0 for the first retry):
 * exponential from `baseMs`, capped at `maxMs`, with "equal jitter" — half of
 * the step is fixed, the other half random — so many dashboards that lost the
 * same server do not all come back in the same millisecond.
 * `random` is a number in [0, 1).
 */
export function backoffDelay(attempt, random, baseMs = 500, maxMs = 10_000) {
  const n = Math.max(0, Math.floor(attempt));
  const step = Math.min(maxMs, baseMs * 2 ** Math.min(n, 30));
  const r = Math.min(Math.max(Number(random) || 0, 0), 1);
  return Math.round(step / 2 + (step / 2) * r);
}

/** What the server accepts as a run's epoch. */
const EPOCH = /^[A-Za-z0-9_-]{1,64}$/;

/**
 * The WebSocket URL for a page at `location` ({protocol, host}), resuming
 * after `lastSeq` of the run `epoch` if known. The epoch lets the server tell
 * a position from before a restart (seqs start again at 1) from one in its run.
 */
export function socketUrl(location, lastSeq, epoch) {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  let url = `${scheme}//${location.host}/ws?stats=1`;
  if (Number.isSafeInteger(lastSeq) && lastSeq >= 0) {
    if (typeof epoch === "string" && EPOCH.test(epoch)) url += `&epoch=${epoch}`;
    url += `&since=${lastSeq}`;
  }
  return url;
}

/**
 * What a stream's opening `{"type":"hello","epoch","seq"}` means for a client
 * at `position` = {epoch, lastSeq}. The same run: keep resuming from lastSeq.
 * Another run (the server restarted): lastSeq belongs to the old run and is
 * forgotten. Returns {epoch, lastSeq, restarted}; a hello without a usable
 * epoch changes nothing.
 */
export function afterHello(position, hello) {
  const known = typeof position?.epoch === "string" ? position.epoch : null;
  const lastSeq = Number.isSafeInteger(position?.lastSeq) ? position.lastSeq : null;
  const epoch = typeof hello?.epoch === "string" && EPOCH.test(hello.epoch) ? hello.epoch : null;
  if (epoch === null) return { epoch: known, lastSeq, restarted: false };
  const restarted = known !== null && known !== epoch;
  return { epoch, lastSeq: restarted ? null : lastSeq, restarted };
}

/** The note shown after a `reset`: the outcomes that follow are a new run's. */
export const RESET_TEXT = "the server restarted: outcomes below are its new run's, from the start";

/** A finite number from `v`, or `fallback`. */
export function num(v, fallback = 0) {
  return typeof v === "number" && Number.isFinite(v) ? v : fallback;
}

/**
 * One per-second sample for the charts and the stats bar, taken from a
 * server stats message received at client time `atMs`. Missing or malformed
 * fields become 0, so a partial message never produces NaN downstream.
 */
export function sampleFromStats(stats, atMs) {
  const rates = stats?.rates ?? {};
  const latency = stats?.latencyMs ?? {};
  const config = stats?.config ?? {};
  return {
    t: atMs,
    uptimeS: num(stats?.uptimeS),
    p50: num(latency.p50),
    p99: num(latency.p99),
    deadlineMs: num(config.deadlineMs),
    onTime: num(rates.onTime),
    late: num(rates.late),
    failed: num(rates.failed),
    dropped: num(rates.dropped),
    entered: num(rates.generated) + num(rates.ingested),
    // Where the time went (`spent`), null from a server that does not say.
    queueP99: spentPercentile(stats?.spent, "queueMs", "p99"),
    waitP99: spentPercentile(stats?.spent, "waitMs", "p99"),
    workP99: spentPercentile(stats?.spent, "workMs", "p99"),
  };
}

/** A percentile of one part of `spent` ({queueMs: {p50, p99}, …}), or null when it is not there. */
export function spentPercentile(spent, part, key) {
  const v = spent?.[part]?.[key];
  return typeof v === "number" && Number.isFinite(v) ? Math.max(v, 0) : null;
}

/**
 * Per-second samples of the last `windowS` seconds, oldest first. Samples are
 * kept in arrival order; anything older than the window is dropped on add.
 */
export class Series {
  constructor(windowS = WINDOW_S) {
    this.windowMs = windowS * 1000;
    // A sample a second, plus slack for bursts after a hidden tab wakes up.
    this.ring = new Ring(windowS * 2 + 16);
  }

  add(sample) {
    this.ring.push(sample);
    this.trim(sample.t);
  }

  trim(nowMs) {
    const keep = this.ring.toArray().filter((s) => s.t >= nowMs - this.windowMs);
    if (keep.length !== this.ring.length) {
      this.ring.clear();
      for (const s of keep) this.ring.push(s);
    }
  }

  samples() {
    return this.ring.toArray();
  }

  latest() {
    return this.ring.length ? this.ring.newest(1)[0] : null;
  }

  clear() {
    this.ring.clear();
  }
}

/** The states the server's health verdict takes. */
const HEALTH_STATES = new Set(["healthy", "degraded", "overloaded"]);

/**
 * What the health panel shows: the server's own verdict (`stats.health`, judged
 * once by its hub over its last few seconds) from the newest stats message,
 * which arrived at `receivedAtMs`. The page judges nothing itself; it only says
 * "unknown" when that message is older than `windowS` seconds (a stale stream)
 * or carries no verdict. Returns {state, reasons: [..], rule}: `rule` is the
 * server's rule in words ("" before any).
 */
export function health(stats, receivedAtMs, nowMs, windowS = HEALTH_WINDOW_S) {
  const verdict = stats?.health;
  const rule = typeof verdict?.rule === "string" ? verdict.rule : "";
  if (!stats || !(receivedAtMs > nowMs - windowS * 1000)) {
    return { state: "unknown", reasons: [`no stats in the last ${windowS} s`], rule };
  }
  const reasons = Array.isArray(verdict?.reasons) ? verdict.reasons.filter((r) => typeof r === "string") : [];
  if (!HEALTH_STATES.has(verdict?.state)) return { state: "unknown", reasons: ["the stats carry no health verdict"], rule };
  return { state: verdict.state, reasons, rule };
}

/** The smallest "nice" number (1, 2, 2.5, 5 × 10^k) at or above `v`; at least `min`. */
export function niceCeil(v, min = 1) {
  const x = Math.max(num(v), min);
  const exp = Math.floor(Math.log10(x));
  const base = 10 ** exp;
  for (const m of [1, 2, 2.5, 5, 10]) {
    if (m * base >= x - 1e-9 * base) return m * base;
  }
  return 10 * base;
}

/**
 * Evenly spaced tick values from 0 to `max` inclusive. Without `count`, a
 * scale top from `niceCeil` is split so every tick stays round: 250 and 500
 * into fifths (50, 100 …), 100 and 200 into quarters (25, 50 …).
 */
export function ticks(max, count) {
  let n = count;
  if (!n) {
    const lead = max > 0 ? max / 10 ** Math.floor(Math.log10(max)) : 1;
    n = Math.abs(lead - 2.5) < 1e-9 || Math.abs(lead - 5) < 1e-9 ? 5 : 4;
  }
  const out = [];
  for (let i = 0; i <= n; i++) out.push((max * i) / n);
  return out;
}

/**
 * Maps samples to canvas coordinates inside `box` = {x, y, w, h} for a time
 * axis [t0, t1] and a value axis [0, yMax]. `value(sample)` picks the value.
 * Returns runs of points: a new run starts wherever consecutive samples are
 * more than `gapMs` apart (a disconnection), or after a sample whose value is
 * null (nothing to measure that second), so a line is not drawn across either.
 */
export function toRuns(samples, value, { t0, t1, yMax, box, gapMs = 2500 }) {
  const runs = [];
  let run = null;
  let prevT = -Infinity;
  const span = t1 - t0 || 1;
  const top = yMax > 0 ? yMax : 1;
  for (const s of samples) {
    if (s.t < t0 - gapMs || s.t > t1 + gapMs) continue;
    const raw = value(s);
    if (raw === null || raw === undefined) {
      run = null;
      continue;
    }
    const v = Math.min(Math.max(num(raw), 0), top);
    const pt = {
      x: box.x + ((s.t - t0) / span) * box.w,
      y: box.y + box.h - (v / top) * box.h,
    };
    if (!run || s.t - prevT > gapMs) {
      run = [];
      runs.push(run);
    }
    run.push(pt);
    prevT = s.t;
  }
  return runs;
}

/** A compact axis label: "250 ms", "1.5 s", "7.5k/s". */
export function axisLabel(v, unit) {
  const n = (x) => String(+num(x).toFixed(2));
  if (unit === "ms") return v >= 1000 ? `${n(v / 1000)} s` : `${n(v)} ms`;
  if (v >= 1_000_000) return `${n(v / 1_000_000)}M${unit}`;
  if (v >= 1000) return `${n(v / 1000)}k${unit}`;
  return `${n(v)}${unit}`;
}

/** A sample's latency percentile, or null when nothing was worked on in its second (the server then reports 0). */
export function latencyOf(sample, key) {
  return sample.onTime + sample.late > 0 ? sample[key] : null;
}

/**
 * A sample's p99 of one part of the time (`queueP99`, `waitP99`, `workP99`),
 * or null when the server did not say or nothing was measured in its second
 * (the server then reports 0): queue wait needs an outcome judged that
 * second; credit wait and work need one a worker finished.
 */
export function splitOf(sample, key) {
  const v = sample[key];
  if (v === null || v === undefined) return null;
  const judged = sample.onTime + sample.late + num(sample.failed) + sample.dropped;
  const worked = sample.onTime + sample.late + num(sample.failed);
  return (key === "queueP99" ? judged : worked) > 0 ? v : null;
}

/** The parts of the time drawn on the latency chart, in legend order. */
export const SPLIT_PARTS = Object.freeze(["queueP99", "waitP99", "workP99"]);

/**
 * Which parts of the time the latency chart draws: {queueP99, waitP99,
 * workP99} → boolean. A part is drawn when some sample measured it; the
 * credit wait only when it was ever above 0 (it is 0 outside `--work pull`,
 * and a line on the axis would say nothing).
 */
export function splitShown(samples) {
  const shown = { queueP99: false, waitP99: false, workP99: false };
  for (const s of samples) {
    for (const key of SPLIT_PARTS) {
      const v = splitOf(s, key);
      if (v !== null && (key !== "waitP99" || v > 0)) shown[key] = true;
    }
  }
  return shown;
}

/** The y scale top for the latency chart: covers p99, its parts and the deadline, with headroom. */
export function latencyScaleMax(samples) {
  let max = 0;
  for (const s of samples) {
    max = Math.max(max, s.p99, s.p50, s.deadlineMs, num(s.queueP99), num(s.waitP99), num(s.workP99));
  }
  return niceCeil(max * 1.1, 10);
}

/** The y scale top for the stacked outcomes chart. */
export function outcomesScaleMax(samples) {
  let max = 0;
  for (const s of samples) max = Math.max(max, s.onTime + s.late + num(s.failed) + s.dropped);
  return niceCeil(max * 1.05, 5);
}

// ---- formatting: never "NaN", "undefined" or "Invalid Date" ----

const DASH = "–";

/** "12,345" / "1.2k/s"-free plain grouping; non-numbers become a dash. */
export function formatCount(v) {
  if (typeof v !== "number" || !Number.isFinite(v)) return DASH;
  return Math.round(v).toLocaleString("en-US");
}

/** A per-second rate: one decimal below 10, none above. */
export function formatRate(v) {
  if (typeof v !== "number" || !Number.isFinite(v)) return DASH;
  return v < 10 && v !== Math.round(v) ? v.toFixed(1) : Math.round(v).toLocaleString("en-US");
}

/** A share in [0, 1] as "97.5 %". */
export function formatPercent(share) {
  if (typeof share !== "number" || !Number.isFinite(share)) return DASH;
  const pct = share * 100;
  const digits = pct >= 99.95 || pct === 0 ? 0 : pct < 10 ? 2 : 1;
  return `${pct.toFixed(digits)} %`;
}

/** Milliseconds as "51.6 ms", or "1.25 s" from a second up. */
export function formatMs(v) {
  if (typeof v !== "number" || !Number.isFinite(v)) return DASH;
  if (Math.abs(v) >= 1000) return `${(v / 1000).toFixed(2)} s`;
  return `${v < 10 ? v.toFixed(2) : v.toFixed(1)} ms`;
}

/** Uptime seconds as "45 s", "12 min 03 s", "3 h 04 min", "2 d 03 h". */
export function formatUptime(s) {
  if (typeof s !== "number" || !Number.isFinite(s) || s < 0) return DASH;
  const t = Math.floor(s);
  const pad = (n) => String(n).padStart(2, "0");
  if (t < 60) return `${t} s`;
  if (t < 3600) return `${Math.floor(t / 60)} min ${pad(t % 60)} s`;
  if (t < 86400) return `${Math.floor(t / 3600)} h ${pad(Math.floor((t % 3600) / 60))} min`;
  return `${Math.floor(t / 86400)} d ${pad(Math.floor((t % 86400) / 3600))} h`;
}

/** Epoch milliseconds as local "HH:MM:SS.mmm"; a dash for anything that is not a valid time. */
export function formatClock(epochMs) {
  if (typeof epochMs !== "number" || !Number.isFinite(epochMs) || epochMs <= 0) return DASH;
  const d = new Date(epochMs);
  if (Number.isNaN(d.getTime())) return DASH;
  const p = (n, w = 2) => String(n).padStart(w, "0");
  return `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}.${p(d.getMilliseconds(), 3)}`;
}

/** The first 8 characters of an id. */
export function shortId(id) {
  if (typeof id !== "string" || id.length === 0) return DASH;
  return id.length > 8 ? id.slice(0, 8) : id;
}

/** Every verdict an outcome can carry, in the order the charts stack them. */
export const STATUSES = Object.freeze(["on-time", "late", "failed", "dropped"]);

/** Characters of a failed outcome's error shown in its table cell; the cell's title holds more. */
export const ERROR_SHOWN = 80;
/** Characters of an error kept at all: it is whatever a remote worker sent. */
const ERROR_KEPT = 500;

/**
 * A worker's error text made fit for one line: control and text-direction
 * characters and runs of whitespace become one space, and it is cut to `max` characters with "…".
 * Returned as text; the page only ever sets it as text, never as HTML.
 */
export function errorText(v, max = ERROR_SHOWN) {
  if (typeof v !== "string") return "";
  const flat = v.replace(/[\s\u0000-\u001f\u007f-\u009f\u200e\u200f\u2028-\u202e\u2066-\u2069]+/g, " ").trim();
  const chars = Array.from(flat);
  return chars.length > max ? `${chars.slice(0, Math.max(max - 1, 0)).join("").trimEnd()}…` : flat;
}

// ---- where the time went ----

/**
 * Why a deadline was missed, as the server names it on a late or dropped
 * outcome (`cause`) and counts it in `spent.misses`, in the server's order
 * (which also breaks a tie for the dominant cause). `label` is the cause in
 * a few words; `what` says what happened to one outcome, for its tooltip.
 */
export const CAUSES = Object.freeze({
  queue: { label: "queue wait", what: "most of its time went to waiting in the queue" },
  work: { label: "work", what: "most of its time went to the work" },
  capacity: { label: "queue full", what: "the queue was full when it arrived" },
  admission: { label: "admission", what: "the predicted work did not fit the time left" },
  credit: { label: "credit wait", what: "most of its time went to waiting for a remote worker with credit" },
  transit: { label: "late arrival", what: "most of its time had passed before it reached the daemon (its createdAt)" },
});
const CAUSE_NAMES = Object.keys(CAUSES);

/**
 * Drop reasons that already name their cause: the status cell does not say
 * it twice ("dropped · queue-full", not "… · queue full"); its title does.
 */
const CAUSE_OF_REASON = Object.freeze({ "queue-full": "capacity", infeasible: "admission", panicked: "work" });

/** The cause named by `v`, or null for anything else (a newer server's cause is not guessed at). */
export function causeOf(v) {
  return typeof v === "string" && Object.hasOwn(CAUSES, v) ? v : null;
}

/**
 * Misses by cause from a `spent.misses` or `spent.missesTotal` object:
 * {queue, work, capacity, admission, credit, transit}, each a whole number ≥ 0.
 * null when `m` is not an object (a server that does not say).
 */
export function missCounts(m) {
  if (!m || typeof m !== "object" || Array.isArray(m)) return null;
  const out = {};
  for (const c of CAUSE_NAMES) out[c] = Math.max(0, Math.round(num(m[c])));
  return out;
}

/** Two miss counts added; null only when both are. */
export function addCounts(a, b) {
  if (!a) return b ? { ...b } : null;
  if (!b) return { ...a };
  const out = {};
  for (const c of CAUSE_NAMES) out[c] = num(a[c]) + num(b[c]);
  return out;
}

/**
 * The cause of most misses in `counts`: {cause, count, total, share}, or
 * null when there are none. A tie goes to the cause listed first in CAUSES.
 */
export function dominantCause(counts) {
  if (!counts) return null;
  let best = null;
  let total = 0;
  for (const c of CAUSE_NAMES) {
    const n = num(counts[c]);
    total += n;
    if (n > 0 && (best === null || n > num(counts[best]))) best = c;
  }
  if (best === null) return null;
  const count = num(counts[best]);
  return { cause: best, count, total, share: count / total };
}

/** Misses by cause as "33 queue wait · 7 work", largest first; "" when none. */
export function countsText(counts) {
  if (!counts) return "";
  return CAUSE_NAMES.filter((c) => num(counts[c]) > 0)
    .sort((a, b) => num(counts[b]) - num(counts[a]))
    .map((c) => `${formatCount(num(counts[c]))} ${CAUSES[c].label}`)
    .join(" · ");
}

/**
 * The `misses` of the last few stats messages, overall and per producer, so
 * the page can say what caused the recent misses. Each message's `misses`
 * covers its own window (the last second), so the sum over the messages of
 * the last `windowS` seconds is the misses of those seconds. Bounded: a
 * fixed number of messages, each with the server's bounded producer list.
 */
export class MissHistory {
  constructor(windowS = HEALTH_WINDOW_S) {
    this.windowS = windowS;
    this.windowMs = windowS * 1000;
    // A message a second, plus slack for a burst after a hidden tab wakes up.
    this.ring = new Ring(windowS * 2 + 8);
  }

  /** Records the stats message `stats`, taken at `atMs` (the server's uptime, in ms). */
  add(stats, atMs) {
    const producers = new Map();
    if (Array.isArray(stats?.producers)) {
      for (const p of stats.producers) {
        const counts = typeof p?.name === "string" ? missCounts(p.spent?.misses) : null;
        if (counts) producers.set(p.name, counts);
      }
    }
    this.ring.push({ t: atMs, all: missCounts(stats?.spent?.misses), producers });
  }

  /**
   * Misses by cause over the last `windowS` seconds before `nowMs`: of the
   * producer `name`, or of all when no name is given. null when no message
   * of that time said (an older server, or no stats lately).
   */
  recent(nowMs, name) {
    let sum = null;
    for (const m of this.ring.toArray()) {
      if (m.t <= nowMs - this.windowMs || m.t > nowMs) continue;
      sum = addCounts(sum, name === undefined ? m.all : (m.producers.get(name) ?? null));
    }
    return sum;
  }

  clear() {
    this.ring.clear();
  }
}

/**
 * The Producers panel's cause cell: the dominant cause of a producer's
 * misses over the last `windowS` seconds (`recent`), else since the start
 * (`total`, its `spent.missesTotal`). Returns {text, title, recent}: `text`
 * is "queue wait 83 %" for recent misses, "queue wait (since start)" for
 * older ones, and a dash when there were none or the server does not say.
 */
export function causeCell(recent, total, windowS = HEALTH_WINDOW_S) {
  const now = dominantCause(recent);
  if (now) {
    return {
      text: `${CAUSES[now.cause].label} ${formatPercent(now.share)}`,
      title: `misses in the last ${windowS} s: ${countsText(recent)}`,
      recent: true,
    };
  }
  const ever = dominantCause(total);
  if (ever) {
    return {
      text: `${CAUSES[ever.cause].label} (since start)`,
      title: `no misses in the last ${windowS} s; since start: ${countsText(total)}`,
      recent: false,
    };
  }
  return { text: DASH, title: "", recent: false };
}

/**
 * What to do about the recent misses, from their counts by cause over the
 * last `windowS` seconds and the server's settings (`mode`: its `work.mode`;
 * `schedule`: fifo or edf). Returns {text, title} naming the dominant cause
 * and the advice, or null when there were no misses (or no counts).
 */
export function missAdvice(counts, { mode, schedule } = {}, windowS = HEALTH_WINDOW_S) {
  const top = dominantCause(counts);
  if (!top) return null;
  const share = top.share < 1 ? `${formatPercent(top.share)} of ` : "all ";
  const which = `${share}${formatCount(top.total)} in the last ${windowS} s`;
  let advice;
  switch (top.cause) {
    case "queue":
      advice = schedule === "edf" ? "add workers or send fewer events" : "add workers or switch to edf";
      break;
    case "work":
      advice =
        mode === "http"
          ? "the work endpoint is slow"
          : mode === "pull"
            ? "the remote workers are slow"
            : mode === "simulate"
              ? "the simulated work takes longer than the deadline leaves: less work or a longer deadline"
              : "the work takes longer than the deadline leaves";
      break;
    case "capacity":
      advice = "add workers or a longer queue";
      break;
    case "admission":
      advice = "the predicted work no longer fits the time left: less work or a longer deadline";
      break;
    case "credit":
      advice = "no remote worker had credit free: connect more pull workers or raise their credit";
      break;
    case "transit":
      advice = "events arrive long after their createdAt: the producer posts late (a backlog, or its clock)";
      break;
  }
  return {
    cause: top.cause,
    text: `misses are ${CAUSES[top.cause].label} (${which}): ${advice}`,
    title: `misses in the last ${windowS} s by cause: ${countsText(counts)}`,
  };
}

/**
 * Milliseconds in as few characters as still tell them apart: "0", "0.4",
 * "12", "1.2s". A dash for anything that is not a number.
 */
export function compactMs(v) {
  if (typeof v !== "number" || !Number.isFinite(v)) return DASH;
  const ms = Math.max(v, 0);
  if (ms < 0.05) return "0";
  if (ms < 9.95) return String(+ms.toFixed(1));
  if (ms < 999.5) return String(Math.round(ms));
  return `${+(ms / 1000).toFixed(ms < 9950 ? 1 : 0)}s`;
}

/**
 * An outcome's time cut into queue / credit wait / work, compact for its
 * table cell: "0.2 / 0 / 50" (ms), a dash for work that never started.
 * {text, title}; both empty-ish ("–", "") for an outcome without the split
 * (an older server).
 */
export function splitText(e) {
  const has = (v) => typeof v === "number" && Number.isFinite(v);
  if (!has(e?.queueMs) && !has(e?.waitMs) && !has(e?.workMs)) return { text: DASH, title: "" };
  const text = `${compactMs(e.queueMs)} / ${compactMs(e.waitMs)} / ${compactMs(e.workMs)}`;
  const part = (v) => (has(v) ? formatMs(v) : "none");
  const before = has(e.transitMs) ? `before arrival ${formatMs(e.transitMs)} · ` : "";
  const title = `${before}queue ${part(e.queueMs)} · credit wait ${part(e.waitMs)} · work ${has(e.workMs) ? formatMs(e.workMs) : "not started"}`;
  return { text, title };
}

/**
 * One table row's texts from a wire event; every field falls back to a dash.
 * A dropped outcome names its reason and a failed one its error after the
 * status, and a late or dropped one its cause (unless its drop reason
 * already says it); `statusTitle` is the longer form for the cell's
 * tooltip, always with the cause. `split` is where its time went.
 */
export function eventRow(e) {
  const status = STATUSES.includes(e?.status) ? e.status : "unknown";
  let detail = "";
  let fullDetail = "";
  if (status === "dropped" && typeof e.dropReason === "string") {
    detail = fullDetail = e.dropReason;
  } else if (status === "failed") {
    detail = errorText(e.error);
    fullDetail = errorText(e.error, ERROR_KEPT);
  }
  const cause = status === "late" || status === "dropped" ? causeOf(e?.cause) : null;
  if (cause) {
    const implied = status === "dropped" && CAUSE_OF_REASON[e.dropReason] === cause;
    if (!implied) detail = detail ? `${detail} · ${CAUSES[cause].label}` : CAUSES[cause].label;
    fullDetail = `${fullDetail ? `${fullDetail} · ` : ""}cause: ${CAUSES[cause].label} (${CAUSES[cause].what})`;
  }
  const split = splitText(e);
  return {
    split: split.text,
    splitTitle: split.title,
    seq: Number.isSafeInteger(e?.seq) ? e.seq : -1,
    id: shortId(e?.id),
    fullId: typeof e?.id === "string" ? e.id : "",
    status,
    statusText: detail ? `${status} · ${detail}` : status,
    statusTitle: fullDetail ? `${status} · ${fullDetail}` : "",
    source: typeof e?.source === "string" && e.source ? e.source : DASH,
    producer: producerName(e?.producer),
    producerTitle: typeof e?.producer === "string" ? errorText(e.producer, PRODUCER_KEPT) : "",
    created: formatClock(e?.createdAt),
    processed: formatClock(e?.processedAt),
    latency: formatMs(e?.latencyMs),
    deadline: Number.isInteger(e?.deadlineMs) && e.deadlineMs < 1000 ? `${e.deadlineMs} ms` : formatMs(e?.deadlineMs),
  };
}

/**
 * What the health panel says about where work goes, from a stats snapshot's
 * `work` object. Returns null when there is none (an older daemon), else
 * {mode, text, detail, warning}: `text` names the mode and its target,
 * `detail` its live numbers (empty for simulated work) and `warning` is true
 * when work cannot be done well: no pull worker connected, or http errors.
 */
export function workSummary(work) {
  if (!work || typeof work !== "object" || typeof work.mode !== "string" || !work.mode) return null;
  const mode = work.mode;
  const target = typeof work.target === "string" && work.target ? work.target : "";
  const inFlight = formatCount(num(work.inFlight));
  if (mode === "simulate") return { mode, text: "simulated work", detail: "", warning: false };
  if (mode === "pull") {
    const connected = Math.max(0, Math.floor(num(work.connected)));
    const text = `workers pull from ${target || "/api/work"}`;
    if (connected === 0) return { mode, text, detail: "no workers connected", warning: true };
    const who = connected === 1 ? "1 worker" : `${formatCount(connected)} workers`;
    const detail = `${who} connected (credit ${formatCount(num(work.credit))}, ${inFlight} in flight)`;
    return { mode, text, detail, warning: false };
  }
  if (mode === "http") {
    const rate = Math.min(Math.max(num(work.errorRate), 0), 1);
    const detail = `errors: ${(rate * 100).toFixed(1)} % · ${inFlight} in flight`;
    return { mode, text: `http to ${target || "(no target)"}`, detail, warning: rate > 0 };
  }
  // A mode newer than this page: name it, and show what is known.
  return { mode, text: target ? `${mode} to ${target}` : `${mode} work`, detail: `${inFlight} in flight`, warning: false };
}

/** What U ≥ 1 means: the offered load alone exceeds the workers. */
export const OVERLOADED_BY_DESIGN = "overloaded by design: drops expected";

/** A utilisation as "0.72"; a dash for anything that is not a number. */
export function formatUtilisation(u) {
  if (typeof u !== "number" || !Number.isFinite(u)) return DASH;
  return u.toFixed(2);
}

/**
 * What the health panel says about the offered load, from a stats snapshot's
 * `schedulability`. Returns null when there is none (an older daemon), else
 * {state, text, detail, title, warning}: `state` is "idle" (nothing arriving),
 * "fits" (U < 1) or "overloaded" (U ≥ 1: drops are expected whatever the
 * order); `text` is "U 0.72 (headroom 28 %)"; `title` the figures U comes from.
 */
export function utilisationSummary(sched) {
  if (!sched || typeof sched !== "object" || typeof sched.utilisation !== "number" || !Number.isFinite(sched.utilisation)) {
    return null;
  }
  const u = Math.max(sched.utilisation, 0);
  const headroom = typeof sched.headroom === "number" && Number.isFinite(sched.headroom) ? sched.headroom : 1 - u;
  // Rounded first, so a headroom of -0.001 does not read "-0 %".
  const headroomPct = Math.round(headroom * 100) || 0;
  const text = `U ${formatUtilisation(u)} (headroom ${headroomPct < 0 ? "−" : ""}${Math.abs(headroomPct)} %)`;
  const windowS = num(sched.windowS);
  const title =
    `${formatRate(num(sched.arrivalRate))} events/s × ${formatMs(num(sched.meanWorkMs))} mean work ÷ workers` +
    (windowS > 0 ? `, over the last ${+windowS.toFixed(1)} s` : "");
  if (u >= 1) return { state: "overloaded", text, detail: OVERLOADED_BY_DESIGN, title, warning: true };
  const state = num(sched.arrivalRate) > 0 || u > 0 ? "fits" : "idle";
  return { state, text, detail: "", title, warning: false };
}

/** The queue orders the server knows, for `PUT /api/config`'s `schedule`. */
export const SCHEDULES = Object.freeze({
  fifo: "first in, first out: arrival order",
  edf: "earliest deadline first",
});

/** The schedule named by `v` ("fifo" or "edf"), or null for anything else. */
export function scheduleOf(v) {
  return typeof v === "string" && Object.hasOwn(SCHEDULES, v) ? v : null;
}

// ---- producers ----

/** Characters of a producer's name shown in a cell; the cell's title holds it all. */
export const PRODUCER_SHOWN = 24;
/** The longest name the server keeps: the title never needs more. */
const PRODUCER_KEPT = 64;
/** The row the server gives the producers beyond its bound, shown last. */
export const OTHER_PRODUCER = "other";
/** A producer's on-time share (percent) below which its row is highlighted. */
export const PRODUCER_LOW_PCT = 95;

/**
 * A producer's name fit for one cell: a producer calls itself what it likes,
 * so control and text-direction characters become spaces, and it is cut to
 * `max` characters with "…". A dash when there is no name. Set only as text.
 */
export function producerName(v, max = PRODUCER_SHOWN) {
  return errorText(v, max) || DASH;
}

/** Drops by reason, compact: "3 queue-full · 1 expired"; "none" when there are none. */
export function dropsText(dropped) {
  const d = dropped && typeof dropped === "object" ? dropped : {};
  const parts = [
    ["queueFull", "queue-full"],
    ["expired", "expired"],
    ["infeasible", "infeasible"],
    ["panicked", "panicked"],
  ]
    .filter(([key]) => num(d[key]) > 0)
    .map(([key, label]) => `${formatCount(num(d[key]))} ${label}`);
  return parts.length ? parts.join(" · ") : "none";
}

/**
 * Producers in display order: by name (case aside, then exactly), with the
 * shared row `other` last. Returns a new array; entries without a string
 * name are left out.
 */
export function sortProducers(list) {
  if (!Array.isArray(list)) return [];
  const key = (p) => [p.name === OTHER_PRODUCER ? 1 : 0, p.name.toLowerCase(), p.name];
  return list
    .filter((p) => p && typeof p === "object" && typeof p.name === "string")
    .map((p) => ({ p, k: key(p) }))
    .sort((a, b) => {
      for (let i = 0; i < 3; i++) if (a.k[i] !== b.k[i]) return a.k[i] < b.k[i] ? -1 : 1;
      return 0;
    })
    .map(({ p }) => p);
}

/**
 * One Producers-panel row's texts from a `producers` entry; every field falls
 * back to a dash. `low` is true when its on-time share is below
 * PRODUCER_LOW_PCT; p99 is a dash for a second with nothing worked on (the
 * server then reports 0). `cause` is the dominant cause of its misses over
 * the last few seconds (`recent`, counts by cause from MissHistory), else
 * since the start (see causeCell).
 */
export function producerRow(p, recent = null, windowS = HEALTH_WINDOW_S) {
  const pct = typeof p?.onTimePct === "number" && Number.isFinite(p.onTimePct) ? p.onTimePct : null;
  const p99 = num(p?.latencyP99Ms);
  const cause = causeCell(recent, missCounts(p?.spent?.missesTotal), windowS);
  return {
    cause: cause.text,
    causeTitle: cause.title,
    causeRecent: cause.recent,
    name: producerName(p?.name),
    fullName: typeof p?.name === "string" ? errorText(p.name, PRODUCER_KEPT) : "",
    rate: formatRate(p?.rate),
    onTimePct: pct === null ? DASH : formatPercent(Math.min(Math.max(pct, 0), 100) / 100),
    p99: p99 > 0 ? formatMs(p99) : DASH,
    late: formatCount(p?.late),
    failed: formatCount(p?.failed),
    drops: dropsText(p?.dropped),
    low: pct !== null && pct < PRODUCER_LOW_PCT,
  };
}

/**
 * The Producers panel's rows from a stats snapshot's `producers`, in display
 * order; null when the snapshot has none (an older daemon: the panel hides).
 * `recentOf(name)` gives a producer's recent misses by cause (or null).
 */
export function producerRows(producers, recentOf = () => null, windowS = HEALTH_WINDOW_S) {
  if (!Array.isArray(producers)) return null;
  return sortProducers(producers).map((p) => producerRow(p, recentOf(p.name), windowS));
}

/** The note for a `{"type":"gap","from","to"}` message: outcomes the server no longer kept when we resumed. */
export function gapText(msg) {
  const from = msg?.from;
  const to = msg?.to;
  if (!Number.isSafeInteger(from) || !Number.isSafeInteger(to) || to < from) return "";
  const count = to - from + 1;
  const what = count === 1 ? `outcome ${formatCount(from)}` : `${formatCount(count)} outcomes (${formatCount(from)}–${formatCount(to)})`;
  return `missed ${what} while disconnected: older than the server keeps`;
}

// ---- live knobs ----

/** The knobs PUT /api/config accepts, with the bounds the server enforces. */
export const KNOBS = {
  rate: { min: 0, max: 1_000_000, label: "rate" },
  deadlineMs: { min: 1, max: 3_600_000, label: "deadline" },
  workMs: { min: 0, max: 3_600_000, label: "work" },
  workJitterMs: { min: 0, max: 3_600_000, label: "jitter" },
};

/**
 * Parses a knob's input text. Returns {ok: true, value} or {ok: false, error}.
 * Only whole numbers within the knob's bounds are accepted.
 */
export function parseKnob(name, text) {
  const spec = KNOBS[name];
  if (!spec) return { ok: false, error: `unknown setting ${name}` };
  const s = String(text ?? "").trim();
  if (!/^\d+$/.test(s)) return { ok: false, error: `${spec.label}: enter a whole number` };
  const value = Number(s);
  if (value < spec.min || value > spec.max) {
    return { ok: false, error: `${spec.label}: must be between ${spec.min} and ${spec.max.toLocaleString("en-US")}` };
  }
  return { ok: true, value };
}

/** The message to show for a failed PUT /api/config answer. */
export function configErrorMessage(status, bodyText) {
  let detail = "";
  try {
    const parsed = JSON.parse(bodyText);
    if (parsed && typeof parsed.error === "string") detail = parsed.error;
  } catch {
    // not JSON: fall back to the status line below
  }
  if (status === 401) return detail ? `not authorised: ${detail}` : "not authorised: a valid token is needed";
  if (status === 404 || status === 405) return detail ? `live settings unavailable: ${detail}` : `live settings unavailable (HTTP ${status})`;
  return detail || `the server answered HTTP ${status}`;
}
