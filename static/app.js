// punctual's live dashboard: one WebSocket, a stats bar, two charts, a health
// panel with advice on recent misses, live settings, outcomes by producer and
// the last 50 outcomes, each with where its time went.
//
// Messages are only parsed and buffered as they arrive; the DOM is updated
// once per animation frame from what was buffered since the last frame. The
// buffer is a bounded ring, so a hidden tab (no frames) keeps only the newest
// events and its memory stays flat whatever the event rate.

import {
  HEALTH_WINDOW_S,
  KNOBS,
  MissHistory,
  RESET_TEXT,
  Ring,
  SCHEDULES,
  Series,
  afterHello,
  backoffDelay,
  configErrorMessage,
  eventRow,
  formatCount,
  formatMs,
  formatPercent,
  formatRate,
  formatUptime,
  gapText,
  health,
  missAdvice,
  num,
  parseKnob,
  producerRows,
  sampleFromStats,
  scheduleOf,
  socketUrl,
  splitShown,
  utilisationSummary,
  workSummary,
} from "./logic.js";
import { drawLatency, drawOutcomes, palette } from "./charts.js";

const MAX_ROWS = 50;
/** Events buffered between two frames; older ones are overwritten (only the newest 50 are shown). */
const PENDING_CAPACITY = 1024;
/** An open socket silent for this long is presumed dead (stats arrive every second). */
const STALL_MS = 5000;
const TOKEN_KEY = "punctual.token";
/** How long a settings change may wait for the server's answer before it is sent again. */
const PUT_TIMEOUT_MS = 4000;
/**
 * Least time between two redraws of the table. Events are still drained every
 * frame; at thousands a second the rows could not be read at 60 redraws a
 * second anyway, and re-setting 350 cells every frame costs the frame rate.
 */
const TABLE_INTERVAL_MS = 100;

const $ = (id) => document.getElementById(id);

// ---- state (no DOM here) ----

const pending = new Ring(PENDING_CAPACITY);
const rows = new Ring(MAX_ROWS);
const series = new Series();
/** The last few stats messages' misses by cause: what the hint and the producers' cause say. */
const misses = new MissHistory(HEALTH_WINDOW_S);
let latestStats = null;
/** When the newest stats message arrived (client time): its health verdict goes stale after HEALTH_WINDOW_S. */
let latestStatsAt = 0;
let statsDirty = false;
let healthDirty = true;
let rowsDirty = false;
let tableDrawnAt = 0;
let chartsDirty = true;
let paused = false;
let missedWhilePaused = 0;
/** Restarts seen while watched: a hello naming another run than the one we had. */
let serverRestarts = 0;
/** Set when a resumed stream reports outcomes the server no longer had, or a restart. */
let gapNote = "";

const conn = {
  socket: null,
  attempt: 0,
  /** The run the last outcome came from (from the stream's hello) and its seq: where to resume. */
  epoch: null,
  lastSeq: null,
  retryAt: 0,
  retryTimer: 0,
  lastMessageAt: 0,
  state: "connecting",
  text: "connecting…",
  shownText: "",
};

// ---- connection ----

function connect() {
  clearTimeout(conn.retryTimer);
  conn.retryTimer = 0;
  let socket;
  try {
    socket = new WebSocket(socketUrl(location, conn.lastSeq, conn.epoch));
  } catch (e) {
    scheduleReconnect(`cannot open a WebSocket: ${e.message}`);
    return;
  }
  conn.socket = socket;
  setConnection("connecting", conn.attempt ? `reconnecting… (attempt ${conn.attempt + 1})` : "connecting…");
  socket.onopen = () => {
    if (conn.socket !== socket) return;
    conn.lastMessageAt = Date.now();
    gapNote = "";
    setConnection("live", "live");
  };
  socket.onmessage = (msg) => {
    if (conn.socket === socket) onMessage(msg.data);
  };
  socket.onerror = () => {
    // A close event always follows; it does the reporting and the retry.
  };
  socket.onclose = (ev) => {
    if (conn.socket !== socket) return;
    conn.socket = null;
    const why = ev.code === 1001 ? "server went away" : ev.reason || (ev.code === 1006 ? "connection lost" : `closed (${ev.code})`);
    scheduleReconnect(why);
  };
}

function scheduleReconnect(why) {
  const delay = backoffDelay(conn.attempt, Math.random());
  conn.attempt++;
  conn.retryAt = Date.now() + delay;
  conn.why = why;
  setConnection("retrying", retryText());
  conn.retryTimer = setTimeout(connect, delay);
}

function retryText() {
  const left = Math.max(0, conn.retryAt - Date.now());
  return `${conn.why} — retrying in ${(left / 1000).toFixed(left < 10_000 ? 1 : 0)} s`;
}

/** Drops a socket that stopped delivering without closing (a silent network failure). */
function abandon(why) {
  const socket = conn.socket;
  if (!socket) return;
  conn.socket = null;
  socket.onopen = socket.onmessage = socket.onclose = socket.onerror = null;
  try {
    socket.close();
  } catch {
    // already closing
  }
  scheduleReconnect(why);
}

function setConnection(state, text) {
  conn.state = state;
  conn.text = text;
}

function onMessage(text) {
  let data;
  try {
    data = JSON.parse(text);
  } catch {
    return; // not ours; ignore rather than break the stream
  }
  conn.lastMessageAt = Date.now();
  // A message proves the server is back: the next loss starts the backoff afresh.
  conn.attempt = 0;
  if (data?.type === "event") {
    if (Number.isSafeInteger(data.seq)) conn.lastSeq = data.seq;
    pending.push(data);
  } else if (data?.type === "hello") {
    const next = afterHello(conn, data);
    conn.epoch = next.epoch;
    conn.lastSeq = next.lastSeq;
    if (next.restarted) {
      serverRestarts++;
      forgetOutcomes();
    }
  } else if (data?.type === "reset") {
    // The server could not place our position in its run: what follows is
    // that run from its start, so what we showed belongs to another run.
    forgetOutcomes();
    gapNote = RESET_TEXT;
  } else if (data?.type === "gap") {
    gapNote = gapNote === RESET_TEXT ? `${RESET_TEXT}; ${gapText(data)}` : gapText(data);
  } else if (data?.type === "stats") {
    latestStats = data;
    latestStatsAt = Date.now();
    series.add(sampleFromStats(data, latestStatsAt));
    misses.add(data, num(data.uptimeS) * 1000);
    statsDirty = true;
    chartsDirty = true;
  }
}

/** Drops the outcomes shown and buffered: they are another run's. */
function forgetOutcomes() {
  pending.clear();
  rows.clear();
  misses.clear();
  rowsDirty = true;
  statsDirty = true;
}

// ---- rendering, once per frame ----

const table = { body: null, cells: [], texts: [] };
const CELL_KEYS = ["id", "statusText", "source", "producer", "created", "processed", "latency", "split", "deadline"];
const CELL_CLASSES = ["mono", "status", "c-source", "c-producer", "c-created", "", "num", "num c-split", "num c-deadline"];
/** The producer cell: its title holds the whole name. */
const PRODUCER_CELL = CELL_KEYS.indexOf("producer");
/** The split cell: its title holds the parts to the microsecond. */
const SPLIT_CELL = CELL_KEYS.indexOf("split");

function ensureRows(count) {
  while (table.cells.length < count) {
    const tr = document.createElement("tr");
    const cells = CELL_KEYS.map((_, i) => {
      const td = document.createElement("td");
      if (CELL_CLASSES[i]) td.className = CELL_CLASSES[i];
      tr.appendChild(td);
      return td;
    });
    table.body.appendChild(tr);
    table.cells.push(cells);
    table.texts.push(new Array(CELL_KEYS.length).fill(null));
  }
  // Fewer rows than drawn only after a restart forgot the old run's outcomes.
  while (table.cells.length > count) {
    table.cells.pop()[0].parentElement.remove();
    table.texts.pop();
  }
}

function renderRows() {
  const list = rows.newest(MAX_ROWS);
  ensureRows(list.length);
  list.forEach((row, i) => {
    const cells = table.cells[i];
    const texts = table.texts[i];
    const tr = cells[0].parentElement;
    const cls = `st-${row.status}`;
    if (tr.className !== cls) tr.className = cls;
    tr.dataset.seq = String(row.seq);
    if (cells[0].title !== row.fullId) cells[0].title = row.fullId;
    // A failed outcome's error may be long: the tooltip holds more than the cell.
    if (cells[1].title !== row.statusTitle) cells[1].title = row.statusTitle;
    if (cells[PRODUCER_CELL].title !== row.producerTitle) cells[PRODUCER_CELL].title = row.producerTitle;
    if (cells[SPLIT_CELL].title !== row.splitTitle) cells[SPLIT_CELL].title = row.splitTitle;
    CELL_KEYS.forEach((key, j) => {
      if (texts[j] !== row[key]) {
        cells[j].textContent = row[key];
        texts[j] = row[key];
      }
    });
  });
}

function setText(id, text) {
  const el = $(id);
  if (el && el.textContent !== text) el.textContent = text;
}

function renderStats() {
  const s = latestStats;
  if (!s) return;
  const t = s.totals ?? {};
  const r = s.rates ?? {};
  const d = t.dropped ?? {};
  const n = (v) => (typeof v === "number" && Number.isFinite(v) ? v : 0);
  const dropped = n(d.queueFull) + n(d.expired) + n(d.infeasible) + n(d.panicked);
  const judged = n(t.onTime) + n(t.late) + n(t.failed) + dropped;
  // The server reports latency 0 for a second in which nothing was worked on.
  const worked = n(r.onTime) + n(r.late) > 0;

  setText("s-rate", formatRate(n(r.generated) + n(r.ingested)));
  setText("s-rate-sub", `${formatCount(n(t.generated) + n(t.ingested))} total`);
  setText("s-on-time", formatCount(n(t.onTime)));
  setText("s-on-time-sub", `${formatRate(n(r.onTime))}/s`);
  setText("s-late", formatCount(n(t.late)));
  setText("s-late-sub", `${formatRate(n(r.late))}/s`);
  setText("s-failed", formatCount(n(t.failed)));
  setText("s-failed-sub", `${formatRate(n(r.failed))}/s`);
  setText("s-dropped", formatCount(dropped));
  setText("s-queue-full", formatCount(n(d.queueFull)));
  setText("s-expired", formatCount(n(d.expired)));
  setText("s-infeasible", formatCount(n(d.infeasible)));
  setText("s-on-time-pct", judged > 0 ? formatPercent(n(t.onTime) / judged) : "–");
  const recent = series.samples().filter((x) => x.t > Date.now() - HEALTH_WINDOW_S * 1000);
  let recentOn = 0;
  let recentAll = 0;
  for (const x of recent) {
    recentOn += x.onTime;
    recentAll += x.onTime + x.late + x.failed + x.dropped;
  }
  setText("s-on-time-pct-sub", recentAll > 0 ? `last ${HEALTH_WINDOW_S} s: ${formatPercent(recentOn / recentAll)}` : "since start");
  const c = s.clients ?? {};
  setText("s-clients", formatCount(n(c.connected)));
  setText("s-clients-sub", `of ${formatCount(n(c.max))} max`);
  setText("s-uptime", formatUptime(n(s.uptimeS)));
  setText("s-uptime-sub", serverRestarts ? `restarted ${serverRestarts}× while watched` : `p99 ${worked ? formatMs(n(s.latencyMs?.p99)) : "–"}`);

  const q = s.queue ?? {};
  const w = s.workers ?? {};
  const depth = n(q.depth);
  const cap = n(q.capacity);
  $("h-queue-meter").value = cap > 0 ? Math.min(depth / cap, 1) : 0;
  setText("h-queue", `${formatCount(depth)} / ${formatCount(cap)}`);
  $("h-workers-meter").value = n(w.total) > 0 ? Math.min(n(w.busy) / n(w.total), 1) : 0;
  setText("h-workers", `${formatCount(n(w.busy))} / ${formatCount(n(w.total))}`);
  setText("h-in-flight", formatCount(n(t.inFlight)));
  setText("h-lag", `${formatCount(n(s.generator?.lagTicks))} ticks`);
  setText("h-client-dropped", formatCount(n(c.droppedMessages)));
  renderWork(workSummary(s.work));
  renderSchedule(scheduleOf(s.config?.schedule));
  renderUtilisation(utilisationSummary(s.schedulability));
  const now = serverNow();
  renderProducers(producerRows(s.producers, (name) => misses.recent(now, name), HEALTH_WINDOW_S));

  applyConfig(s.config);
}

/** The work row of the health panel; hidden for a daemon whose stats have no `work`. */
function renderWork(work) {
  const row = $("h-work-row");
  $("h-work-label").hidden = row.hidden = work === null;
  if (work === null) return;
  const cls = work.warning ? "work warning" : "work";
  if (row.className !== cls) row.className = cls;
  setText("h-work", work.text);
  setText("h-work-detail", work.detail);
}

/** The schedule row of the health panel; hidden for a daemon whose settings do not name one. */
function renderSchedule(schedule) {
  $("h-schedule-label").hidden = $("h-schedule-row").hidden = schedule === null;
  if (schedule === null) return;
  setText("h-schedule", schedule);
  setText("h-schedule-detail", SCHEDULES[schedule]);
}

/** The utilisation row of the health panel; hidden for a daemon whose stats have no `schedulability`. */
function renderUtilisation(util) {
  const row = $("h-util-row");
  $("h-util-label").hidden = row.hidden = util === null;
  if (util === null) return;
  const cls = util.warning ? "work warning" : "work";
  if (row.className !== cls) row.className = cls;
  setText("h-util", util.text);
  if (row.title !== util.title) row.title = util.title;
  setText("h-util-detail", util.detail);
}

const PRODUCER_KEYS = ["name", "rate", "onTimePct", "p99", "late", "failed", "drops", "cause"];
const PRODUCER_CLASSES = ["c-name", "num c-rate", "num c-pct", "num c-p99", "num c-late", "num c-failed", "c-drops", "c-cause"];
/** The cause cell: highlighted while its misses are recent, its title holds the counts. */
const CAUSE_CELL = PRODUCER_KEYS.indexOf("cause");

/** The Producers panel; hidden for a daemon whose stats have no `producers`. Names are set as text only. */
function renderProducers(list) {
  const panel = $("producers-panel");
  if (panel.hidden !== (list === null)) panel.hidden = list === null;
  if (list === null) return;
  $("producers-empty").hidden = list.length > 0;
  const body = $("producers");
  while (body.rows.length < list.length) {
    const tr = body.insertRow();
    PRODUCER_CLASSES.forEach((cls) => {
      const td = tr.insertCell();
      if (cls) td.className = cls;
    });
  }
  while (body.rows.length > list.length) body.deleteRow(-1);
  list.forEach((row, i) => {
    const tr = body.rows[i];
    const cls = row.low ? "low" : "";
    if (tr.className !== cls) tr.className = cls;
    if (tr.cells[0].title !== row.fullName) tr.cells[0].title = row.fullName;
    const cause = tr.cells[CAUSE_CELL];
    const causeCls = row.causeRecent ? "c-cause recent" : "c-cause";
    if (cause.className !== causeCls) cause.className = causeCls;
    if (cause.title !== row.causeTitle) cause.title = row.causeTitle;
    PRODUCER_KEYS.forEach((key, j) => {
      if (tr.cells[j].textContent !== row[key]) tr.cells[j].textContent = row[key];
    });
  });
}

/** The server's health verdict, its reasons and its rule; "unknown" once its stats are stale. */
function renderHealth() {
  const h = health(latestStats, latestStatsAt, Date.now());
  const badge = $("health-state");
  const cls = `badge ${h.state}`;
  if (badge.className !== cls) badge.className = cls;
  setText("health-state", h.state);
  let text;
  if (h.state === "unknown") text = conn.state === "live" ? "waiting for stats…" : "no stats: not connected";
  else if (h.reasons.length === 0) text = "everything on time, queue calm";
  else text = h.reasons.join(" · ");
  setText("health-reasons", text);
  setText("health-rule", h.rule);
  renderHint(h.state === "unknown" ? null : missAdvice(misses.recent(serverNow()), adviceContext(latestStats), HEALTH_WINDOW_S));
}

/**
 * The server's uptime now, in ms, as the latest stats message and the time
 * since it arrived tell it. The miss history is kept on the server's clock:
 * a burst of stats messages (a tab waking up, a stream catching up) covers
 * the seconds they were taken in, not the moment they arrived.
 */
function serverNow() {
  return latestStats ? num(latestStats.uptimeS) * 1000 + (Date.now() - latestStatsAt) : 0;
}

/** What the advice depends on: how work is done and the queue's order. */
function adviceContext(s) {
  return { mode: s?.work?.mode, schedule: scheduleOf(s?.config?.schedule) };
}

/** The hint under the verdict: what to do about the recent misses; hidden when there were none. */
function renderHint(advice) {
  const el = $("health-hint");
  if (el.hidden !== (advice === null)) el.hidden = advice === null;
  if (advice === null) return;
  setText("health-hint", advice.text);
  if (el.title !== advice.title) el.title = advice.title;
}

function renderConnection() {
  if (conn.state === "retrying") conn.text = retryText();
  if (conn.text !== conn.shownText) {
    const el = $("connection");
    el.className = `state ${conn.state}`;
    el.textContent = conn.text;
    conn.shownText = conn.text;
  }
}

let colors = null;
let chartsDrawnAt = 0;

function drawCharts(now) {
  colors ??= palette(document.documentElement);
  const samples = series.samples();
  // The parts of the time are drawn, and named in the legend, only once the server measured them.
  const shown = splitShown(samples);
  for (const [key, id] of [["queueP99", "key-queue"], ["waitP99", "key-wait"], ["workP99", "key-work"]]) {
    const el = $(id);
    if (el.hidden !== !shown[key]) el.hidden = !shown[key];
  }
  drawLatency($("latency-chart"), samples, now, colors, shown);
  drawOutcomes($("outcomes-chart"), samples, now, colors);
  chartsDrawnAt = now;
}

function frame() {
  const batch = pending.drain();
  if (batch.length) {
    if (paused) {
      missedWhilePaused += batch.length;
    } else {
      // Only the newest rows can be shown; format just those.
      for (const e of batch.slice(-MAX_ROWS)) rows.push(eventRow(e));
      rowsDirty = true;
    }
  }
  const now = Date.now();
  if (rowsDirty && now - tableDrawnAt >= TABLE_INTERVAL_MS) {
    renderRows();
    rowsDirty = false;
    tableDrawnAt = now;
  }
  setText("events-gap", gapNote);
  if (paused) setText("pause", missedWhilePaused ? `resume (${formatCount(missedWhilePaused)} new)` : "resume");
  if (statsDirty) {
    renderStats();
    statsDirty = false;
    healthDirty = true;
  }
  if (healthDirty) {
    renderHealth();
    healthDirty = false;
  }
  // The charts slide with time even when no stats come (disconnected).
  if (chartsDirty || now - chartsDrawnAt > 1000) {
    drawCharts(now);
    chartsDirty = false;
  }
  renderConnection();
  requestAnimationFrame(frame);
}

// Once a second: notice a silent socket, and let health and charts age.
setInterval(() => {
  if (conn.socket && conn.state === "live" && Date.now() - conn.lastMessageAt > STALL_MS) {
    abandon("no data for 5 s");
  }
  healthDirty = true;
}, 1000);

// ---- live settings ----

const knobInputs = Object.fromEntries(
  Object.keys(KNOBS).map((name) => [
    name,
    {
      number: document.querySelector(`input[type=number][data-knob=${name}]`),
      range: document.querySelector(`input[type=range][data-knob=${name}]`),
    },
  ]),
);
const admissionInput = $("k-admission");
const scheduleInput = $("k-schedule");
/** Knobs the user changed whose change the server has not confirmed yet. */
const editing = new Set();
let lastConfig = null;
let requests = Promise.resolve();

function syncRange(name) {
  const { number, range } = knobInputs[name];
  const v = Number(number.value);
  if (Number.isFinite(v)) range.value = String(Math.min(Math.max(v, Number(range.min)), Number(range.max)));
}

/**
 * Shows the server's effective settings, except in fields being edited;
 * the knobs named in `force` are set whatever their state.
 */
function applyConfig(config, force = []) {
  if (!config || typeof config !== "object") return;
  lastConfig = config;
  for (const [name, { number }] of Object.entries(knobInputs)) {
    const v = config[name];
    if (typeof v !== "number") continue;
    const busy = editing.has(name) || document.activeElement === number || document.activeElement === knobInputs[name].range;
    if ((force.includes(name) || !busy) && number.value !== String(v)) {
      number.value = String(v);
      syncRange(name);
    }
  }
  if (config.admission === "on" || config.admission === "off") {
    if (force.includes("admission") || !editing.has("admission")) {
      admissionInput.checked = config.admission === "on";
      setText("k-admission-text", config.admission);
    }
  }
  const schedule = scheduleOf(config.schedule);
  if (schedule !== null && (force.includes("schedule") || !editing.has("schedule"))) {
    if (scheduleInput.value !== schedule) scheduleInput.value = schedule;
  }
  $("knobs-lock").hidden = config.auth !== true;
}

function showKnobStatus(text, kind) {
  const el = $("knobs-status");
  el.textContent = text;
  el.className = `knobs-status ${kind}`;
}

function describe(change) {
  return Object.entries(change)
    .map(([k, v]) => `${KNOBS[k]?.label ?? k} ${v}${k.endsWith("Ms") ? " ms" : k === "rate" ? "/s" : ""}`)
    .join(", ");
}

/**
 * One PUT /api/config. A request unanswered after PUT_TIMEOUT_MS is abandoned
 * and sent once more: a kept-alive connection to a server that has since
 * restarted can swallow a request silently, and abandoning it makes the
 * browser open a fresh one. PUT is idempotent, so sending twice is safe.
 */
async function put(change, token) {
  const headers = { "Content-Type": "application/json" };
  if (token) headers.Authorization = `Bearer ${token}`;
  const body = JSON.stringify(change);
  for (let attempt = 1; ; attempt++) {
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), PUT_TIMEOUT_MS);
    try {
      const res = await fetch("/api/config", { method: "PUT", headers, body, cache: "no-store", signal: abort.signal });
      return { status: res.status, ok: res.ok, text: await res.text() };
    } catch (e) {
      if (e?.name !== "AbortError") throw e;
      if (attempt >= 2) throw new Error(`no answer within ${PUT_TIMEOUT_MS / 1000} s`);
    } finally {
      clearTimeout(timer);
    }
  }
}

function storedToken() {
  try {
    return sessionStorage.getItem(TOKEN_KEY);
  } catch {
    return null;
  }
}

function storeToken(token) {
  try {
    if (token) sessionStorage.setItem(TOKEN_KEY, token);
    else sessionStorage.removeItem(TOKEN_KEY);
  } catch {
    // storage unavailable: the token lasts for this request only
  }
}

async function sendChange(change) {
  const names = Object.keys(change);
  showKnobStatus(`applying ${describe(change)}…`, "busy");
  let token = storedToken();
  let answer;
  try {
    answer = await put(change, token);
    if (answer.status === 401) {
      // Ask once; a token that was stored but is now refused is forgotten.
      storeToken(null);
      const given = window.prompt(
        `${configErrorMessage(401, answer.text)}\n\nThis server needs its access token to change settings. Token:`,
      );
      token = given ? given.trim() : "";
      if (!token) {
        showKnobStatus("not changed: the server needs a token", "error");
        return;
      }
      storeToken(token);
      answer = await put(change, token);
      if (answer.status === 401) storeToken(null);
    }
  } catch (e) {
    showKnobStatus(`not changed: could not reach the server (${e.message})`, "error");
    return;
  } finally {
    for (const n of names) editing.delete(n);
    if (answer?.ok !== true) applyConfig(lastConfig, names);
  }
  if (answer.ok) {
    let config = null;
    try {
      config = JSON.parse(answer.text);
    } catch {
      // a 200 without JSON: the next stats message shows the effect
    }
    applyConfig(config ?? lastConfig, names);
    showKnobStatus(`applied: ${describe(change)}`, "ok");
  } else {
    showKnobStatus(`not changed: ${configErrorMessage(answer.status, answer.text)}`, "error");
  }
}

function queueChange(change) {
  for (const n of Object.keys(change)) editing.add(n);
  requests = requests.then(() => sendChange(change)).catch(() => {});
}

function commitKnob(name) {
  const parsed = parseKnob(name, knobInputs[name].number.value);
  if (!parsed.ok) {
    showKnobStatus(parsed.error, "error");
    editing.delete(name);
    return;
  }
  if (lastConfig && lastConfig[name] === parsed.value && !editing.has(name)) return;
  queueChange({ [name]: parsed.value });
}

for (const [name, { number, range }] of Object.entries(knobInputs)) {
  range.addEventListener("input", () => {
    editing.add(name);
    number.value = range.value;
  });
  range.addEventListener("change", () => commitKnob(name));
  number.addEventListener("input", () => {
    editing.add(name);
    syncRange(name);
  });
  number.addEventListener("change", () => commitKnob(name));
}
admissionInput.addEventListener("change", () => {
  const value = admissionInput.checked ? "on" : "off";
  setText("k-admission-text", value);
  queueChange({ admission: value });
});
scheduleInput.addEventListener("change", () => {
  const value = scheduleOf(scheduleInput.value);
  if (value !== null) queueChange({ schedule: value });
});
$("knobs").addEventListener("submit", (ev) => {
  ev.preventDefault();
  for (const name of Object.keys(knobInputs)) if (editing.has(name)) commitKnob(name);
});

// ---- table pause ----

$("pause").addEventListener("click", () => {
  paused = !paused;
  missedWhilePaused = 0;
  const button = $("pause");
  button.setAttribute("aria-pressed", String(paused));
  button.textContent = paused ? "resume" : "pause";
  setText("events-note", paused ? "table paused; counters and charts stay live" : "");
});

// ---- start ----

table.body = $("events");
matchMedia("(prefers-color-scheme: dark)").addEventListener("change", () => {
  colors = null;
  chartsDirty = true;
});
window.addEventListener("resize", () => {
  chartsDirty = true;
});
window.addEventListener("online", () => {
  if (!conn.socket) connect();
});
connect();
requestAnimationFrame(frame);
