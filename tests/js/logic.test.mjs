// Unit tests of static/logic.js, the dashboard's DOM-free logic.
// Run: node --test tests/js/  (tests/browser.rs runs it when node is present)
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";

// static/ has no package.json, so Node would read logic.js as CommonJS;
// loading its text as a data: module keeps it a plain ES module for the page.
const source = readFileSync(new URL("../../static/logic.js", import.meta.url), "utf8");
const L = await import(`data:text/javascript;base64,${Buffer.from(source).toString("base64")}`);

test("a ring keeps the newest items, counts overwrites and empties on drain", () => {
  const r = new L.Ring(3);
  for (const n of [1, 2, 3, 4, 5]) r.push(n);
  assert.equal(r.length, 3);
  assert.equal(r.overwritten, 2);
  assert.deepEqual(r.newest(2), [5, 4]);
  assert.deepEqual(r.drain(), [3, 4, 5]);
  assert.equal(r.length, 0);
  assert.deepEqual(r.drain(), []);
  r.push(6);
  assert.deepEqual(r.toArray(), [6]);
  assert.throws(() => new L.Ring(0), RangeError);
});

test("a ring stays bounded under a flood", () => {
  const r = new L.Ring(1024);
  for (let i = 0; i < 100_000; i++) r.push(i);
  assert.equal(r.length, 1024);
  assert.equal(r.items.length, 1024);
  assert.deepEqual(r.newest(1), [99_999]);
});

test("backoff doubles from the base, is capped, and jitters within its step", () => {
  assert.equal(L.backoffDelay(0, 0), 250);
  assert.equal(L.backoffDelay(0, 1), 500);
  assert.equal(L.backoffDelay(1, 1), 1000);
  assert.equal(L.backoffDelay(3, 1), 4000);
  assert.equal(L.backoffDelay(50, 1), 10_000);
  assert.equal(L.backoffDelay(50, 0), 5000);
  for (let attempt = 0; attempt < 12; attempt++) {
    const lo = L.backoffDelay(attempt, 0);
    const hi = L.backoffDelay(attempt, 0.999999);
    assert.ok(lo <= hi && hi <= 10_000, `attempt ${attempt}: ${lo}..${hi}`);
    assert.ok(L.backoffDelay(attempt + 1, 0) >= lo);
  }
  assert.equal(L.backoffDelay(-3, NaN), 250);
});

test("the socket URL follows the page's scheme and host and resumes after the last seq", () => {
  assert.equal(L.socketUrl({ protocol: "http:", host: "h:8080" }, null), "ws://h:8080/ws?stats=1");
  assert.equal(L.socketUrl({ protocol: "https:", host: "example.test" }, 42), "wss://example.test/ws?stats=1&since=42");
  assert.equal(L.socketUrl({ protocol: "http:", host: "h" }, 0), "ws://h/ws?stats=1&since=0");
  assert.equal(L.socketUrl({ protocol: "http:", host: "h" }, undefined), "ws://h/ws?stats=1");
});

test("the socket URL resumes with the run's epoch and the last seq", () => {
  const h = { protocol: "http:", host: "h" };
  assert.equal(L.socketUrl(h, 191, "0123abcd4567ef89"), "ws://h/ws?stats=1&epoch=0123abcd4567ef89&since=191");
  assert.equal(L.socketUrl(h, null, "0123abcd4567ef89"), "ws://h/ws?stats=1", "no position, no epoch");
  assert.equal(L.socketUrl(h, 5, "bad epoch&x=1"), "ws://h/ws?stats=1&since=5", "an unusable epoch is left out");
});

test("a hello from another run forgets the last seq; one from the same run keeps it", () => {
  const hello = (epoch) => ({ type: "hello", epoch, seq: 400 });
  assert.deepEqual(L.afterHello({ epoch: null, lastSeq: null }, hello("aa")), { epoch: "aa", lastSeq: null, restarted: false });
  assert.deepEqual(L.afterHello({ epoch: "aa", lastSeq: 191 }, hello("aa")), { epoch: "aa", lastSeq: 191, restarted: false });
  assert.deepEqual(L.afterHello({ epoch: "aa", lastSeq: 191 }, hello("bb")), { epoch: "bb", lastSeq: null, restarted: true });
  assert.deepEqual(L.afterHello({ epoch: "aa", lastSeq: 191 }, { type: "hello" }), { epoch: "aa", lastSeq: 191, restarted: false });
  assert.deepEqual(L.afterHello(undefined, hello("cc")), { epoch: "cc", lastSeq: null, restarted: false });
});

function stats(over = {}) {
  return {
    type: "stats",
    uptimeS: 10,
    rates: { generated: 100, ingested: 0, onTime: 100, late: 0, failed: 0, dropped: 0, ...over.rates },
    latencyMs: { p50: 50, p90: 55, p99: 60, max: 70 },
    queue: { depth: 0, capacity: 64, ...over.queue },
    generator: { rate: 100, lagTicks: over.lagTicks ?? 0 },
    clients: { connected: 1, max: 10, droppedMessages: over.clientDropped ?? 0 },
    config: { deadlineMs: 100 },
    ...(over.work ? { work: over.work } : {}),
    ...(over.u !== undefined ? { schedulability: { utilisation: over.u, headroom: 1 - over.u, arrivalRate: 100, meanWorkMs: 10, windowS: 5 } } : {}),
    ...(over.health ? { health: over.health } : {}),
  };
}

function samples(list) {
  return list.map((over, i) => L.sampleFromStats(stats(over), 1000 * (i + 1)));
}

test("a stats message becomes a sample; missing fields become zero, a missing split null", () => {
  const s = L.sampleFromStats(stats(), 5);
  assert.equal(s.t, 5);
  assert.equal(s.p99, 60);
  assert.equal(s.deadlineMs, 100);
  assert.equal(s.onTime, 100);
  const empty = L.sampleFromStats({ type: "stats" }, 7);
  for (const key of L.SPLIT_PARTS) assert.equal(empty[key], null, `${key}: the server did not say`);
  for (const [k, v] of Object.entries(empty)) {
    if (!L.SPLIT_PARTS.includes(k)) assert.ok(Number.isFinite(v), `${k} is ${v}`);
  }
});

const RULE = "Over the last 5 s: overloaded when … healthy otherwise.";

test("health: the page shows the server's verdict, its reasons and its rule as they are", () => {
  const verdict = { state: "overloaded", reasons: ["U 1.40 ≥ 1: overloaded by design, drops expected", "queue 93.8 % full"], rule: RULE };
  // The stats around it say nothing wrong: the page judges nothing itself.
  const h = L.health(stats({ health: verdict }), 1000, 1500);
  assert.deepEqual(h, verdict);
  const calm = L.health(stats({ health: { state: "healthy", reasons: [], rule: RULE } }), 1000, 1500);
  assert.deepEqual(calm, { state: "healthy", reasons: [], rule: RULE });
  // A sick-looking message with a healthy verdict is healthy: the server's word stands.
  const late = stats({ rates: { onTime: 0, late: 100 }, queue: { depth: 64 }, health: { state: "degraded", reasons: ["x"], rule: RULE } });
  assert.equal(L.health(late, 1000, 1500).state, "degraded");
});

test("health: unknown when the newest stats are over 5 s old or none came, keeping the rule", () => {
  const s = stats({ health: { state: "healthy", reasons: [], rule: RULE } });
  assert.deepEqual(L.health(null, 0, 5000), { state: "unknown", reasons: ["no stats in the last 5 s"], rule: "" });
  assert.equal(L.health(s, 1000, 5999).state, "healthy", "4.999 s old is fresh");
  assert.deepEqual(L.health(s, 1000, 6000), { state: "unknown", reasons: ["no stats in the last 5 s"], rule: RULE });
  assert.equal(L.health(s, 1000, 3001, 2).state, "unknown", "the window is a parameter");
  assert.equal(L.HEALTH_WINDOW_S, 5);
});

test("health: stats without a usable verdict are unknown", () => {
  for (const verdict of [undefined, {}, { state: "fine", reasons: [] }, { state: 3 }]) {
    const h = L.health(stats({ health: verdict }), 1000, 1500);
    assert.equal(h.state, "unknown", JSON.stringify(verdict));
  }
  const odd = L.health(stats({ health: { state: "degraded", reasons: ["a", 7, null, "b"] } }), 1000, 1500);
  assert.deepEqual(odd, { state: "degraded", reasons: ["a", "b"], rule: "" }, "only text reasons are shown");
});

test("a stats message's failed rate reaches the sample", () => {
  const s = L.sampleFromStats(stats({ rates: { failed: 7 } }), 1);
  assert.equal(s.failed, 7);
  assert.equal(L.sampleFromStats({ type: "stats" }, 1).failed, 0);
});

test("the outcomes scale covers failed outcomes", () => {
  const s = samples([{ rates: { onTime: 0, failed: 900 } }]);
  assert.ok(L.outcomesScaleMax(s) >= 900, `scale ${L.outcomesScaleMax(s)}`);
});

test("nice scale tops and ticks", () => {
  assert.equal(L.niceCeil(0, 10), 10);
  assert.equal(L.niceCeil(11), 20);
  assert.equal(L.niceCeil(110), 200);
  assert.equal(L.niceCeil(220), 250);
  assert.equal(L.niceCeil(4999), 5000);
  assert.equal(L.niceCeil(100), 100);
  assert.deepEqual(L.ticks(100, 4), [0, 25, 50, 75, 100]);
  assert.deepEqual(L.ticks(100), [0, 25, 50, 75, 100]);
  assert.deepEqual(L.ticks(25), [0, 5, 10, 15, 20, 25]);
  assert.deepEqual(L.ticks(500), [0, 100, 200, 300, 400, 500]);
  assert.deepEqual(L.ticks(200), [0, 50, 100, 150, 200]);
  assert.deepEqual(L.ticks(0), [0, 0, 0, 0, 0]);
});

test("axis labels stay short", () => {
  assert.equal(L.axisLabel(250, "ms"), "250 ms");
  assert.equal(L.axisLabel(1500, "ms"), "1.5 s");
  assert.equal(L.axisLabel(7500, "/s"), "7.5k/s");
  assert.equal(L.axisLabel(10000, "/s"), "10k/s");
  assert.equal(L.axisLabel(2_500_000, "/s"), "2.5M/s");
  assert.equal(L.axisLabel(12.5, "/s"), "12.5/s");
});

test("latency scale covers p99 and the deadline", () => {
  const s = samples([{}, {}]);
  assert.ok(L.latencyScaleMax(s) >= 100);
  s[1].p99 = 900;
  assert.ok(L.latencyScaleMax(s) >= 900);
  assert.equal(L.latencyScaleMax([]), 10);
});

test("samples map onto the plot box, split at gaps", () => {
  const box = { x: 10, y: 0, w: 300, h: 100 };
  const list = [
    { t: 0, v: 0 },
    { t: 1000, v: 50 },
    { t: 2000, v: 100 },
    { t: 9000, v: 200 }, // after a gap; clamped to the top
  ];
  const runs = L.toRuns(list, (s) => s.v, { t0: 0, t1: 10_000, yMax: 100, box });
  assert.equal(runs.length, 2);
  assert.deepEqual(runs[0][0], { x: 10, y: 100 });
  assert.deepEqual(runs[0][1], { x: 40, y: 50 });
  assert.deepEqual(runs[0][2], { x: 70, y: 0 });
  assert.deepEqual(runs[1], [{ x: 280, y: 0 }]);
  // a second with nothing to measure breaks the line
  const holes = L.toRuns([{ t: 0, v: 1 }, { t: 1000, v: null }, { t: 2000, v: 1 }], (s) => s.v, { t0: 0, t1: 10_000, yMax: 1, box });
  assert.equal(holes.length, 2);
  assert.equal(L.latencyOf({ onTime: 0, late: 0, p99: 0 }, "p99"), null);
  assert.equal(L.latencyOf({ onTime: 0, late: 3, p99: 100 }, "p99"), 100);
  // samples far outside the window are skipped
  assert.equal(L.toRuns([{ t: -60_000, v: 1 }], (s) => s.v, { t0: 0, t1: 10_000, yMax: 1, box }).length, 0);
});

test("a series keeps only the window", () => {
  const s = new L.Series(10);
  for (let i = 0; i <= 30; i++) s.add({ t: i * 1000 });
  const kept = s.samples();
  assert.equal(kept[0].t, 20_000);
  assert.equal(kept.at(-1).t, 30_000);
  assert.equal(s.latest().t, 30_000);
});

test("formatting never shows NaN, undefined or Invalid Date", () => {
  const bad = [undefined, null, NaN, Infinity, "x", {}, -1];
  for (const v of bad) {
    for (const f of [L.formatCount, L.formatRate, L.formatPercent, L.formatMs, L.formatUptime, L.formatClock, L.shortId]) {
      const out = f(v);
      assert.equal(typeof out, "string");
      assert.doesNotMatch(out, /NaN|undefined|Invalid|null|object/, `${f.name}(${String(v)}) = ${out}`);
    }
  }
  assert.equal(L.formatCount(12345.4), "12,345");
  assert.equal(L.formatRate(2.5), "2.5");
  assert.equal(L.formatRate(1234), "1,234");
  assert.equal(L.formatPercent(0.975), "97.5 %");
  assert.equal(L.formatPercent(1), "100 %");
  assert.equal(L.formatMs(51.6), "51.6 ms");
  assert.equal(L.formatMs(1500), "1.50 s");
  assert.equal(L.formatUptime(75), "1 min 15 s");
  assert.equal(L.formatUptime(3 * 3600 + 240), "3 h 04 min");
  assert.match(L.formatClock(Date.UTC(2026, 0, 1, 12, 0, 0, 7)), /^\d\d:\d\d:\d\d\.007$/);
  assert.equal(L.shortId("6f1c2a3b-aaaa-bbbb"), "6f1c2a3b");
});

test("an event row falls back to dashes and names the drop reason", () => {
  const row = L.eventRow({
    type: "event",
    seq: 42,
    id: "6f1c2a3b-1111-2222-3333-444455556666",
    source: "generator",
    createdAt: 1_700_000_000_000.5,
    deadlineMs: 100,
    processedAt: 1_700_000_000_052.1,
    latencyMs: 51.6,
    status: "dropped",
    dropReason: "queue-full",
  });
  assert.equal(row.id, "6f1c2a3b");
  assert.equal(row.statusText, "dropped · queue-full");
  assert.equal(row.latency, "51.6 ms");
  assert.equal(row.deadline, "100 ms");
  assert.equal(L.eventRow({ deadlineMs: 2500 }).deadline, "2.50 s");
  const empty = L.eventRow({});
  for (const v of Object.values(empty)) assert.doesNotMatch(String(v), /NaN|undefined|Invalid/);
  assert.equal(L.eventRow({ status: "late", dropReason: "expired" }).statusText, "late");
});

test("a failed event row shows its error where a dropped one shows its reason", () => {
  assert.ok(L.STATUSES.includes("failed"));
  const row = L.eventRow({ seq: 9, id: "abc", status: "failed", error: "HTTP 500", latencyMs: 12 });
  assert.equal(row.status, "failed");
  assert.equal(row.statusText, "failed · HTTP 500");
  assert.equal(row.statusTitle, "failed · HTTP 500");
  assert.equal(row.latency, "12.0 ms");
  assert.equal(L.eventRow({ status: "failed" }).statusText, "failed");
  assert.equal(L.eventRow({ status: "failed", error: 500 }).statusText, "failed", "a non-string error is not shown");
  assert.equal(L.eventRow({ status: "failed", dropReason: "expired" }).statusText, "failed");
  assert.equal(L.eventRow({ status: "dropped", dropReason: "expired", error: "x" }).statusText, "dropped · expired");
  assert.equal(L.eventRow({ status: "late", error: "x" }).statusText, "late");
  assert.equal(L.eventRow({ status: "dropped", dropReason: "expired" }).statusTitle, "dropped · expired");
  assert.equal(L.eventRow({ status: "on-time" }).statusTitle, "");
});

test("a worker's error is kept as literal text on one line, cut to length", () => {
  // Markup stays characters: the page sets it with textContent, never as HTML.
  const markup = '<img src=x onerror="alert(1)">&amp;';
  assert.equal(L.eventRow({ status: "failed", error: markup }).statusText, `failed · ${markup}`);
  assert.equal(L.errorText("worker\n  said:\t\u0000no\u202e"), "worker said: no");
  assert.equal(L.errorText("   "), "");
  assert.equal(L.errorText(undefined), "");
  const long = "x".repeat(1000);
  const row = L.eventRow({ status: "failed", error: long });
  assert.equal(row.statusText, `failed · ${"x".repeat(L.ERROR_SHOWN - 1)}…`);
  assert.ok(row.statusTitle.length > row.statusText.length && row.statusTitle.length < 600, `title of ${row.statusTitle.length}`);
  // characters outside the BMP are not split in half
  assert.equal(L.errorText("😀😀😀", 2), "😀…");
});

test("the work summary names each mode, its target and its live numbers", () => {
  const work = (over) => ({ mode: "simulate", target: null, connected: 0, credit: 0, inFlight: 0, errorRate: 0, ...over });
  assert.equal(L.workSummary(undefined), null, "an older daemon has no work object");
  assert.equal(L.workSummary(null), null);
  assert.equal(L.workSummary({}), null);
  assert.deepEqual(L.workSummary(work({})), { mode: "simulate", text: "simulated work", detail: "", warning: false });

  const http = L.workSummary(work({ mode: "http", target: "http://127.0.0.1:9000/work", errorRate: 0.02, inFlight: 3 }));
  assert.deepEqual(http, { mode: "http", text: "http to http://127.0.0.1:9000/work", detail: "errors: 2.0 % · 3 in flight", warning: true });
  const calm = L.workSummary(work({ mode: "http", target: "http://w/work", errorRate: 0, inFlight: 1200 }));
  assert.equal(calm.detail, "errors: 0.0 % · 1,200 in flight");
  assert.equal(calm.warning, false);
  assert.equal(L.workSummary(work({ mode: "http", errorRate: 7 })).detail, "errors: 100.0 % · 0 in flight", "clamped to 0..1");

  const pull = L.workSummary(work({ mode: "pull", target: "/api/work", connected: 3, credit: 12, inFlight: 5 }));
  assert.deepEqual(pull, { mode: "pull", text: "workers pull from /api/work", detail: "3 workers connected (credit 12, 5 in flight)", warning: false });
  assert.equal(L.workSummary(work({ mode: "pull", target: "/api/work", connected: 1, credit: 1 })).detail, "1 worker connected (credit 1, 0 in flight)");
  const none = L.workSummary(work({ mode: "pull", target: "/api/work", connected: 0 }));
  assert.equal(none.detail, "no workers connected");
  assert.equal(none.warning, true);

  for (const bad of [{ mode: "http", errorRate: "x", inFlight: null, target: 5 }, { mode: "pull", connected: NaN, credit: {} }, { mode: "batch" }]) {
    const out = L.workSummary(bad);
    assert.doesNotMatch(`${out.text} ${out.detail}`, /NaN|undefined|null|object/, JSON.stringify(bad));
  }
});

test("a gap message names what was missed", () => {
  assert.equal(L.gapText({ type: "gap", from: 1201, to: 3400 }), "missed 2,200 outcomes (1,201–3,400) while disconnected: older than the server keeps");
  assert.match(L.gapText({ type: "gap", from: 7, to: 7 }), /missed outcome 7 /);
  assert.equal(L.gapText({ type: "gap" }), "");
  assert.equal(L.gapText({ type: "gap", from: 9, to: 3 }), "");
});

test("knob input is parsed to whole numbers within bounds", () => {
  assert.deepEqual(L.parseKnob("workMs", " 300 "), { ok: true, value: 300 });
  assert.equal(L.parseKnob("deadlineMs", "0").ok, false);
  assert.equal(L.parseKnob("rate", "-5").ok, false);
  assert.equal(L.parseKnob("rate", "1.5").ok, false);
  assert.equal(L.parseKnob("rate", "").ok, false);
  assert.equal(L.parseKnob("rate", "2000000").ok, false);
  assert.equal(L.parseKnob("nope", "1").ok, false);
});

test("server errors are shown from their JSON error field", () => {
  assert.equal(L.configErrorMessage(400, '{"error":"workMs: must be a number"}'), "workMs: must be a number");
  assert.match(L.configErrorMessage(401, '{"error":"missing token"}'), /not authorised: missing token/);
  assert.equal(L.configErrorMessage(500, "oops"), "the server answered HTTP 500");
  assert.match(L.configErrorMessage(404, ""), /unavailable/);
});

test("the utilisation summary per state: missing, idle, fits, overloaded", () => {
  const sched = (over) => ({ utilisation: 0.72, headroom: 0.28, arrivalRate: 120, meanWorkMs: 24, windowS: 5, ...over });
  assert.equal(L.utilisationSummary(undefined), null, "an older daemon has no schedulability");
  assert.equal(L.utilisationSummary({}), null);
  assert.equal(L.utilisationSummary({ utilisation: "high" }), null);

  const fits = L.utilisationSummary(sched({}));
  assert.deepEqual(
    { state: fits.state, text: fits.text, detail: fits.detail, warning: fits.warning },
    { state: "fits", text: "U 0.72 (headroom 28 %)", detail: "", warning: false },
  );
  assert.equal(fits.title, "120 events/s × 24.0 ms mean work ÷ workers, over the last 5 s");

  const idle = L.utilisationSummary(sched({ utilisation: 0, headroom: 1, arrivalRate: 0 }));
  assert.equal(idle.state, "idle");
  assert.equal(idle.text, "U 0.00 (headroom 100 %)");
  assert.equal(idle.warning, false);

  const over = L.utilisationSummary(sched({ utilisation: 1.2, headroom: -0.2 }));
  assert.equal(over.state, "overloaded");
  assert.equal(over.text, "U 1.20 (headroom −20 %)");
  assert.equal(over.detail, "overloaded by design: drops expected");
  assert.equal(over.warning, true);
  const edge = L.utilisationSummary(sched({ utilisation: 1, headroom: 0 }));
  assert.equal(edge.state, "overloaded", "U = 1 counts");
  assert.equal(edge.text, "U 1.00 (headroom 0 %)");
  assert.equal(L.utilisationSummary(sched({ utilisation: 0.999, headroom: 0.001 })).warning, false);
  assert.equal(L.utilisationSummary(sched({ utilisation: 1.004, headroom: -0.004 })).text, "U 1.00 (headroom 0 %)", "no minus zero");

  // headroom missing: taken as 1 − U; other fields garbage: no NaN anywhere
  assert.equal(L.utilisationSummary({ utilisation: 0.4 }).text, "U 0.40 (headroom 60 %)");
  const junk = L.utilisationSummary({ utilisation: 0.5, headroom: "x", arrivalRate: null, meanWorkMs: {}, windowS: NaN });
  assert.doesNotMatch(`${junk.text} ${junk.title}`, /NaN|undefined|null|object/);
});

test("the schedule is fifo or edf, nothing else", () => {
  assert.equal(L.scheduleOf("fifo"), "fifo");
  assert.equal(L.scheduleOf("edf"), "edf");
  for (const bad of ["EDF", "lifo", "", undefined, null, 1, "toString", "__proto__"]) assert.equal(L.scheduleOf(bad), null, String(bad));
  assert.deepEqual(Object.keys(L.SCHEDULES), ["fifo", "edf"]);
});

function producer(over = {}) {
  return {
    name: "generator",
    onTime: 9700,
    late: 200,
    failed: 0,
    dropped: { queueFull: 0, expired: 0, infeasible: 0, panicked: 0 },
    onTimePct: 97,
    rate: 100,
    latencyP99Ms: 61.2,
    ...over,
  };
}

test("a producer row shows its rate, on-time share, p99, counts and drops by reason", () => {
  assert.deepEqual(L.producerRow(producer()), {
    name: "generator",
    fullName: "generator",
    rate: "100",
    onTimePct: "97.0 %",
    p99: "61.2 ms",
    late: "200",
    failed: "0",
    drops: "none",
    low: false,
    cause: "–",
    causeTitle: "",
    causeRecent: false,
  });
  const bad = L.producerRow(producer({ onTimePct: 94.9, rate: 2.5, failed: 1234, dropped: { queueFull: 3, expired: 1, infeasible: 0, panicked: 0 } }));
  assert.equal(bad.low, true, "under 95 % is highlighted");
  assert.equal(bad.onTimePct, "94.9 %");
  assert.equal(bad.rate, "2.5");
  assert.equal(bad.failed, "1,234");
  assert.equal(bad.drops, "3 queue-full · 1 expired");
  assert.equal(L.producerRow(producer({ onTimePct: 95 })).low, false, "95 % exactly is fine");
  assert.equal(L.producerRow(producer({ latencyP99Ms: 0 })).p99, "–", "nothing worked on in the last second");
  assert.equal(L.dropsText({ queueFull: 0, expired: 2, infeasible: 5, panicked: 1 }), "2 expired · 5 infeasible · 1 panicked");
  assert.equal(L.dropsText(undefined), "none");
  const empty = L.producerRow({});
  for (const [k, v] of Object.entries(empty)) assert.doesNotMatch(String(v), /NaN|undefined|null|object/, `${k}: ${v}`);
  assert.equal(empty.low, false, "no share known, nothing to highlight");
});

test("producers are sorted by name with other last", () => {
  const names = (list) => L.sortProducers(list).map((p) => p.name);
  const list = ["other", "ingest", "Zeta", "generator", "alpha"].map((name) => producer({ name }));
  assert.deepEqual(names(list), ["alpha", "generator", "ingest", "Zeta", "other"]);
  assert.equal(list[0].name, "other", "the input is not reordered");
  assert.deepEqual(names([producer({ name: "zz" }), producer({ name: "other" }), producer({ name: "others" })]), ["others", "zz", "other"]);
  assert.deepEqual(names([producer({ name: "b" }), producer({ name: "B" })]), ["B", "b"], "case aside, then exactly: a stable order");
  assert.deepEqual(names([null, { name: 5 }, producer({ name: "x" })]), ["x"]);
  assert.deepEqual(L.sortProducers(undefined), []);
  // the panel's rows: null hides the panel for an older daemon
  assert.equal(L.producerRows(undefined), null);
  assert.deepEqual(L.producerRows([]), []);
  assert.deepEqual(L.producerRows([producer({ name: "other" }), producer({ name: "ingest" })]).map((r) => r.name), ["ingest", "other"]);
});

test("a producer's name is untrusted text: one line, cut with an ellipsis, never markup", () => {
  const markup = '<img src=x onerror="alert(1)">';
  assert.equal(L.producerName(markup, 64), markup, "kept as characters: the page sets it with textContent");
  assert.equal(L.producerName("ci\u202e\tnightly"), "ci nightly");
  const long = "p".repeat(64);
  assert.equal(L.producerName(long), `${"p".repeat(L.PRODUCER_SHOWN - 1)}…`);
  assert.equal(Array.from(L.producerName(long)).length, L.PRODUCER_SHOWN);
  assert.equal(L.producerName("short"), "short");
  assert.equal(L.producerName(undefined), "–");
  assert.equal(L.producerName(""), "–");
  const row = L.producerRow(producer({ name: long }));
  assert.equal(row.name, L.producerName(long));
  assert.equal(row.fullName, long, "the title holds the whole name");
});

test("an outcome row names its producer, cut to fit, with the whole name in its title", () => {
  const row = L.eventRow({ status: "on-time", source: "ingest", producer: "billing-export" });
  assert.equal(row.producer, "billing-export");
  assert.equal(row.producerTitle, "billing-export");
  const long = L.eventRow({ status: "on-time", producer: "x".repeat(64) });
  assert.equal(long.producer, `${"x".repeat(L.PRODUCER_SHOWN - 1)}…`);
  assert.equal(long.producerTitle.length, 64);
  assert.equal(L.eventRow({ status: "late" }).producer, "–", "an older daemon sends no producer");
  assert.equal(L.eventRow({ status: "late" }).producerTitle, "");
});

// ---- where the time went ----

/** A stats `spent` object: p99s per part, misses of the last window and since start. */
function spent({ queue = 1, wait = 0, work = 50, misses = {}, total = {} } = {}) {
  const zero = { queue: 0, work: 0, capacity: 0, admission: 0, credit: 0, transit: 0 };
  return {
    queueMs: { p50: queue / 2, p99: queue },
    waitMs: { p50: wait / 2, p99: wait },
    workMs: { p50: work / 2, p99: work },
    misses: { ...zero, ...misses },
    missesTotal: { ...zero, ...total },
  };
}

test("a stats message's split reaches the sample as the p99 of each part", () => {
  const s = L.sampleFromStats({ ...stats(), spent: spent({ queue: 12.5, wait: 3, work: 48 }) }, 1);
  assert.equal(s.queueP99, 12.5);
  assert.equal(s.waitP99, 3);
  assert.equal(s.workP99, 48);
  // Half a split, or nonsense in it: what is there is used, the rest is null.
  const half = L.sampleFromStats({ ...stats(), spent: { queueMs: { p99: 4 }, workMs: { p99: "x" } } }, 1);
  assert.deepEqual([half.queueP99, half.waitP99, half.workP99], [4, null, null]);
  assert.equal(L.sampleFromStats({ ...stats(), spent: null }, 1).queueP99, null);
  assert.equal(L.spentPercentile({ queueMs: { p99: -1 } }, "queueMs", "p99"), 0, "never below 0");
});

test("the latency chart draws a part only when the server measured it", () => {
  const [calm, idle, dropsOnly, old] = [
    { ...stats(), spent: spent({ queue: 0.2, wait: 0, work: 50 }) },
    { ...stats({ rates: { onTime: 0 } }), spent: spent({ queue: 0, wait: 0, work: 0 }) },
    { ...stats({ rates: { onTime: 0, dropped: 30 } }), spent: spent({ queue: 90, work: 0 }) },
    stats(),
  ].map((m, i) => L.sampleFromStats(m, 1000 * (i + 1)));
  assert.equal(L.splitOf(calm, "queueP99"), 0.2);
  assert.equal(L.splitOf(calm, "workP99"), 50);
  assert.equal(L.splitOf(idle, "queueP99"), null, "a second with nothing judged has no queue wait to show");
  assert.equal(L.splitOf(idle, "workP99"), null);
  assert.equal(L.splitOf(dropsOnly, "queueP99"), 90, "drops in the queue waited there");
  assert.equal(L.splitOf(dropsOnly, "workP99"), null, "no work finished that second");
  assert.equal(L.splitOf(old, "queueP99"), null, "an older server says nothing");
  assert.deepEqual(L.splitShown([calm, idle]), { queueP99: true, waitP99: false, workP99: true }, "credit wait 0: not drawn");
  assert.deepEqual(L.splitShown([old]), { queueP99: false, waitP99: false, workP99: false });
  assert.deepEqual(L.splitShown([]), { queueP99: false, waitP99: false, workP99: false });
  const pull = L.sampleFromStats({ ...stats(), spent: spent({ wait: 7 }) }, 1);
  assert.equal(L.splitShown([calm, pull]).waitP99, true);
  // The parts' lines fit the scale even above the total's p99 (drops in the queue).
  const high = L.sampleFromStats({ ...stats(), spent: spent({ queue: 900 }) }, 1);
  assert.ok(L.latencyScaleMax([high]) >= 900);
});

test("misses by cause are read defensively and added", () => {
  assert.deepEqual(L.missCounts({ queue: 3, work: "x", capacity: -2, admission: 1.6, bogus: 9 }), {
    queue: 3,
    work: 0,
    capacity: 0,
    admission: 2,
    credit: 0,
    transit: 0,
  });
  assert.equal(L.missCounts(undefined), null);
  assert.equal(L.missCounts([1, 2]), null);
  const a = L.missCounts({ queue: 1 });
  assert.deepEqual(L.addCounts(a, L.missCounts({ queue: 2, work: 5 })), { queue: 3, work: 5, capacity: 0, admission: 0, credit: 0, transit: 0 });
  assert.deepEqual(L.addCounts(null, a), a);
  assert.notEqual(L.addCounts(null, a), a, "a copy, never the input");
  assert.equal(L.addCounts(null, null), null);
});

test("the dominant cause is the one with most misses; a tie goes to the server's order", () => {
  assert.deepEqual(L.dominantCause({ queue: 33, work: 7, capacity: 0, admission: 0, credit: 0, transit: 0 }), {
    cause: "queue",
    count: 33,
    total: 40,
    share: 33 / 40,
  });
  assert.equal(L.dominantCause({ queue: 1, work: 5, capacity: 5, admission: 0, credit: 0, transit: 0 }).cause, "work");
  assert.equal(L.dominantCause({ queue: 0, work: 0, capacity: 0, admission: 2, credit: 3 }).cause, "credit");
  assert.equal(L.dominantCause({ queue: 0, work: 0, capacity: 0, admission: 0, credit: 0, transit: 0 }), null, "no misses, no cause");
  assert.equal(L.dominantCause(null), null);
  assert.equal(L.countsText({ queue: 7, work: 33, capacity: 0, admission: 1, credit: 0 }), "33 work · 7 queue wait · 1 admission");
  assert.equal(L.countsText(null), "");
});

test("the miss history sums the last few seconds' windows, overall and per producer", () => {
  const h = new L.MissHistory(5);
  const msg = (misses, perProducer = {}) => ({
    ...stats(),
    spent: spent({ misses }),
    producers: Object.entries(perProducer).map(([name, m]) => ({ name, spent: spent({ misses: m }) })),
  });
  h.add(msg({ work: 9 }, { generator: { work: 9 } }), 1000);
  h.add(msg({ queue: 2 }, { generator: { queue: 2 } }), 6500);
  h.add(msg({ queue: 3, capacity: 1 }, { generator: { queue: 1 }, ingest: { queue: 2, capacity: 1 } }), 7500);
  // At 8 s the window is (3 s, 8 s]: the first message is too old.
  assert.deepEqual(h.recent(8000), { queue: 5, work: 0, capacity: 1, admission: 0, credit: 0, transit: 0 });
  assert.deepEqual(h.recent(8000, "generator"), { queue: 3, work: 0, capacity: 0, admission: 0, credit: 0, transit: 0 });
  assert.deepEqual(h.recent(8000, "ingest"), { queue: 2, work: 0, capacity: 1, admission: 0, credit: 0, transit: 0 });
  assert.equal(h.recent(8000, "nobody"), null);
  assert.equal(h.recent(20_000), null, "nothing lately: nothing to say");
  // An older server: messages without `spent` say nothing.
  const old = new L.MissHistory(5);
  old.add({ ...stats(), producers: [{ name: "generator" }] }, 1000);
  assert.equal(old.recent(1500), null);
  assert.equal(old.recent(1500, "generator"), null);
  old.add(null, 1200);
  assert.equal(old.recent(1500), null);
});

test("the miss history stays bounded whatever the message rate", () => {
  const h = new L.MissHistory(5);
  for (let i = 0; i < 10_000; i++) h.add({ spent: spent({ misses: { queue: 1 } }) }, i);
  assert.ok(h.ring.length <= h.ring.capacity && h.ring.capacity < 32, `${h.ring.length} of ${h.ring.capacity}`);
  h.clear();
  assert.equal(h.recent(10_000), null);
});

test("a producer's cause cell: recent misses first, else since start, else a dash", () => {
  const recent = L.missCounts({ queue: 33, work: 7 });
  assert.deepEqual(L.causeCell(recent, L.missCounts({ work: 900 })), {
    text: "queue wait 82.5 %",
    title: "misses in the last 5 s: 33 queue wait · 7 work",
    recent: true,
  });
  assert.deepEqual(L.causeCell(L.missCounts({}), L.missCounts({ capacity: 12, credit: 1 })), {
    text: "queue full (since start)",
    title: "no misses in the last 5 s; since start: 12 queue full · 1 credit wait",
    recent: false,
  });
  assert.equal(L.causeCell(null, L.missCounts({ admission: 1 })).text, "admission (since start)");
  assert.equal(L.causeCell(L.missCounts({ work: 4 }), null).text, "work 100 %");
  assert.deepEqual(L.causeCell(null, null), { text: "–", title: "", recent: false });
  assert.deepEqual(L.causeCell(L.missCounts({}), L.missCounts({})), { text: "–", title: "", recent: false });

  // In the producers panel: its recent misses come from the history, its total from its own entry.
  const p = producer({ spent: spent({ total: { admission: 40, work: 2 } }) });
  assert.equal(L.producerRow(p).cause, "admission (since start)");
  const row = L.producerRow(p, L.missCounts({ credit: 5 }));
  assert.equal(row.cause, "credit wait 100 %");
  assert.equal(row.causeRecent, true);
  const rows = L.producerRows([p, producer({ name: "ingest" })], (name) => (name === "ingest" ? L.missCounts({ work: 1 }) : null));
  assert.deepEqual(
    rows.map((r) => [r.name, r.cause]),
    [
      ["generator", "admission (since start)"],
      ["ingest", "work 100 %"],
    ],
  );
  assert.equal(L.producerRow(producer({ spent: "nonsense" })).cause, "–", "a processor or an older server: no cause");
});

test("the hint turns the recent causes into advice, and is absent without misses", () => {
  const advice = (counts, ctx) => L.missAdvice(L.missCounts(counts), ctx)?.text ?? null;
  assert.equal(
    advice({ queue: 33, work: 7 }, { mode: "simulate", schedule: "fifo" }),
    "misses are queue wait (82.5 % of 40 in the last 5 s): add workers or switch to edf",
  );
  assert.equal(
    advice({ queue: 4 }, { schedule: "edf" }),
    "misses are queue wait (all 4 in the last 5 s): add workers or send fewer events",
    "already edf: not advised again",
  );
  assert.match(advice({ work: 4 }, { mode: "http" }), /^misses are work \(all 4 in the last 5 s\): the work endpoint is slow$/);
  assert.match(advice({ work: 4 }, { mode: "pull" }), /: the remote workers are slow$/);
  assert.match(advice({ work: 4 }, { mode: "simulate" }), /: the simulated work takes longer than the deadline leaves/);
  assert.match(advice({ work: 4 }, {}), /: the work takes longer than the deadline leaves$/);
  assert.match(advice({ capacity: 4 }), /^misses are queue full .*add workers or a longer queue$/);
  assert.match(advice({ admission: 4 }), /^misses are admission .*the predicted work no longer fits the time left/);
  assert.match(advice({ credit: 4 }), /^misses are credit wait .*connect more pull workers or raise their credit$/);
  assert.equal(advice({}), null, "no recent misses: no hint");
  assert.equal(L.missAdvice(null), null, "an older server: no hint");
  const full = L.missAdvice(L.missCounts({ queue: 1, work: 2 }), {}, 3);
  assert.equal(full.cause, "work");
  assert.equal(full.title, "misses in the last 3 s by cause: 2 work · 1 queue wait");
  assert.match(full.text, /in the last 3 s/);
});

test("milliseconds are compact in the split", () => {
  const cases = [
    [0, "0"],
    [0.04, "0"],
    [0.05, "0.1"],
    [0.4, "0.4"],
    [5, "5"],
    [9.94, "9.9"],
    [9.96, "10"],
    [50.102, "50"],
    [999.4, "999"],
    [999.6, "1s"],
    [1250, "1.3s"],
    [12_345, "12s"],
    [-1, "0"],
  ];
  for (const [v, want] of cases) assert.equal(L.compactMs(v), want, String(v));
  for (const v of [undefined, null, NaN, Infinity, "5"]) assert.equal(L.compactMs(v), "–");
});

test("an outcome row shows where its time went, and a miss its cause beside the status", () => {
  const late = L.eventRow({ status: "late", latencyMs: 100.1, queueMs: 70.25, waitMs: 0, workMs: 29.85, cause: "queue" });
  assert.equal(late.split, "70 / 0 / 30");
  assert.equal(late.splitTitle, "queue 70.3 ms · credit wait 0.00 ms · work 29.9 ms");
  assert.equal(late.statusText, "late · queue wait");
  assert.equal(late.statusTitle, "late · cause: queue wait (most of its time went to waiting in the queue)");

  // Dropped before any work: no work part, and the reason then the cause.
  const expired = L.eventRow({ status: "dropped", dropReason: "expired", queueMs: 100.4, waitMs: 0, cause: "queue" });
  assert.equal(expired.split, "100 / 0 / –");
  assert.match(expired.splitTitle, /work not started$/);
  assert.equal(expired.statusText, "dropped · expired · queue wait");
  assert.equal(expired.statusTitle, "dropped · expired · cause: queue wait (most of its time went to waiting in the queue)");
  // A reason that names its cause is not followed by it again; the title says it.
  const full = L.eventRow({ status: "dropped", dropReason: "queue-full", queueMs: 0, waitMs: 0, cause: "capacity" });
  assert.equal(full.statusText, "dropped · queue-full");
  assert.equal(full.statusTitle, "dropped · queue-full · cause: queue full (the queue was full when it arrived)");
  assert.equal(L.eventRow({ status: "dropped", dropReason: "infeasible", cause: "admission" }).statusText, "dropped · infeasible");
  assert.equal(L.eventRow({ status: "dropped", dropReason: "panicked", cause: "work" }).statusText, "dropped · panicked");
  assert.equal(L.eventRow({ status: "dropped", dropReason: "expired", cause: "credit" }).statusText, "dropped · expired · credit wait");
  assert.equal(L.eventRow({ status: "late", queueMs: 1, waitMs: 60.5, workMs: 40, cause: "credit" }).split, "1 / 61 / 40");

  // On time: the split, no cause (and a cause sent anyway is not shown).
  const ok = L.eventRow({ status: "on-time", queueMs: 0.123, waitMs: 0, workMs: 50.102, cause: "work" });
  assert.equal(ok.split, "0.1 / 0 / 50");
  assert.equal(ok.statusText, "on-time");
  assert.equal(L.eventRow({ status: "failed", error: "HTTP 500", workMs: 3, queueMs: 0, waitMs: 0 }).statusText, "failed · HTTP 500");

  // An older server, or a cause newer than the page: nothing shown for it, nothing broken.
  const old = L.eventRow({ status: "late", latencyMs: 101 });
  assert.equal(old.split, "–");
  assert.equal(old.splitTitle, "");
  assert.equal(old.statusText, "late");
  assert.equal(L.eventRow({ status: "late", cause: "cosmic-rays" }).statusText, "late");
  assert.equal(L.eventRow({ status: "late", cause: "__proto__" }).statusText, "late");
  for (const v of Object.values(L.eventRow({ status: "late", queueMs: "x", waitMs: null, workMs: {} }))) {
    assert.doesNotMatch(String(v), /NaN|undefined|null|object/);
  }
});
