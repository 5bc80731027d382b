// punctual's plain live page: one WebSocket, counters, the last 50 outcomes.
// Messages are buffered and drawn once per animation frame, never per message.

const MAX_ROWS = 50;
const MAX_BUFFERED = 1000; // while the tab is hidden only the newest matter

const $ = (id) => document.getElementById(id);
const counts = { total: 0, "on-time": 0, late: 0, dropped: 0 };
let pending = [];
let latestStats = null;
let retryMs = 500;

function connect() {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const socket = new WebSocket(`${scheme}//${location.host}/ws?stats=1`);
  setState("connecting", "connecting…");
  socket.onopen = () => { retryMs = 500; setState("open", "live"); };
  socket.onmessage = (msg) => {
    const data = JSON.parse(msg.data);
    if (data.type === "stats") { latestStats = data; return; }
    pending.push(data);
    if (pending.length > MAX_BUFFERED) pending = pending.slice(-MAX_BUFFERED);
  };
  socket.onclose = () => {
    setState("closed", `disconnected — retrying in ${(retryMs / 1000).toFixed(1)} s`);
    setTimeout(connect, retryMs * (0.5 + Math.random()));
    retryMs = Math.min(retryMs * 2, 15000);
  };
}

function setState(cls, text) {
  const el = $("connection");
  el.className = `state ${cls}`;
  el.textContent = text;
}

function row(e) {
  const tr = document.createElement("tr");
  const status = e.dropReason ? `${e.status} (${e.dropReason})` : e.status;
  const cells = [e.seq, e.id.slice(0, 8), status, e.source, `${e.latencyMs.toFixed(1)} ms`,
    `${e.deadlineMs} ms`, new Date(e.processedAt).toLocaleTimeString()];
  for (const text of cells) {
    const td = document.createElement("td");
    td.textContent = text;
    tr.appendChild(td);
  }
  tr.className = e.status;
  return tr;
}

function draw() {
  if (pending.length > 0) {
    const batch = pending;
    pending = [];
    for (const e of batch) { counts.total++; counts[e.status]++; }
    const body = $("events");
    const fragment = document.createDocumentFragment();
    for (const e of batch.slice(-MAX_ROWS).reverse()) fragment.appendChild(row(e));
    body.prepend(fragment);
    while (body.rows.length > MAX_ROWS) body.deleteRow(-1);
  }
  const stats = latestStats;
  if (stats) {
    const t = stats.totals;
    const dropped = t.dropped.queueFull + t.dropped.expired + t.dropped.infeasible;
    $("c-total").textContent = t.generated + t.ingested;
    $("c-on-time").textContent = t.onTime;
    $("c-late").textContent = t.late;
    $("c-dropped").textContent = dropped;
    $("c-rate").textContent = (stats.rates.generated + stats.rates.ingested).toFixed(0);
    $("c-p99").textContent = `${stats.latencyMs.p99.toFixed(1)} ms`;
  } else {
    $("c-total").textContent = counts.total;
    $("c-on-time").textContent = counts["on-time"];
    $("c-late").textContent = counts.late;
    $("c-dropped").textContent = counts.dropped;
  }
  requestAnimationFrame(draw);
}

connect();
requestAnimationFrame(draw);
