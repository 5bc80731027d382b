// Hand-drawn canvas charts: latency (p50, p99, deadline, and the p99 of each
// part of the time) and stacked outcomes, both over the last WINDOW_S
// seconds. Coordinates come from logic.js.

import {
  SPLIT_PARTS,
  WINDOW_S,
  axisLabel,
  latencyOf,
  latencyScaleMax,
  num,
  outcomesScaleMax,
  splitOf,
  ticks,
  toRuns,
} from "./logic.js";

const PAD = { left: 48, right: 10, top: 10, bottom: 22 };

/** Colours from the page's CSS variables, so charts follow the theme. */
export function palette(element) {
  const css = getComputedStyle(element);
  const v = (name, fallback) => css.getPropertyValue(name).trim() || fallback;
  return {
    text: v("--muted", "#5b6575"),
    grid: v("--grid", "#e3e6ea"),
    onTime: v("--on-time", "#1f8a45"),
    late: v("--late", "#d97706"),
    failed: v("--failed", "#b5179e"),
    dropped: v("--dropped", "#c62828"),
    p50: v("--p50", "#2f6fd6"),
    p99: v("--p99", "#7b3fc4"),
    deadline: v("--deadline", "#c62828"),
    queueP99: v("--queue", "#0f8f86"),
    waitP99: v("--wait", "#64748b"),
    workP99: v("--work", "#8c5a2b"),
  };
}

/**
 * Sizes the canvas backing store to its CSS box times the pixel ratio and
 * returns a context scaled to CSS pixels, with the plot box.
 */
function prepare(canvas) {
  const ratio = window.devicePixelRatio || 1;
  const cssW = Math.max(canvas.clientWidth, 100);
  const cssH = Math.max(canvas.clientHeight, 80);
  const w = Math.round(cssW * ratio);
  const h = Math.round(cssH * ratio);
  if (canvas.width !== w || canvas.height !== h) {
    canvas.width = w;
    canvas.height = h;
  }
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, cssW, cssH);
  const box = {
    x: PAD.left,
    y: PAD.top,
    w: Math.max(cssW - PAD.left - PAD.right, 10),
    h: Math.max(cssH - PAD.top - PAD.bottom, 10),
  };
  return { ctx, box };
}

function axes(ctx, box, yMax, unit, colors) {
  ctx.font = "11px system-ui, sans-serif";
  ctx.lineWidth = 1;
  ctx.strokeStyle = colors.grid;
  ctx.fillStyle = colors.text;
  ctx.textAlign = "right";
  ctx.textBaseline = "middle";
  for (const t of ticks(yMax)) {
    const y = Math.round(box.y + box.h - (t / yMax) * box.h) + 0.5;
    ctx.beginPath();
    ctx.moveTo(box.x, y);
    ctx.lineTo(box.x + box.w, y);
    ctx.stroke();
    ctx.fillText(axisLabel(t, unit), box.x - 4, y);
  }
  ctx.textAlign = "center";
  ctx.textBaseline = "top";
  const minutes = WINDOW_S / 60;
  // Narrow plots get short labels so they do not run into each other.
  const narrow = box.w / minutes < 60;
  for (let m = 0; m <= minutes; m++) {
    const x = Math.round(box.x + (m / minutes) * box.w) + 0.5;
    ctx.beginPath();
    ctx.moveTo(x, box.y);
    ctx.lineTo(x, box.y + box.h);
    ctx.stroke();
    const label = m === minutes ? "now" : narrow ? `−${minutes - m}m` : `−${minutes - m} min`;
    ctx.textAlign = m === 0 ? "left" : m === minutes ? "right" : "center";
    ctx.fillText(label, x, box.y + box.h + 5);
  }
}

function strokeRuns(ctx, runs, color, width, dash = []) {
  ctx.save();
  ctx.strokeStyle = color;
  ctx.lineWidth = width;
  ctx.lineJoin = "round";
  ctx.setLineDash(dash);
  for (const run of runs) {
    ctx.beginPath();
    if (run.length === 1) {
      // A lone sample: a dot, so it is still visible.
      ctx.fillStyle = color;
      ctx.arc(run[0].x, run[0].y, width + 0.5, 0, 2 * Math.PI);
      ctx.fill();
      continue;
    }
    run.forEach((p, i) => (i ? ctx.lineTo(p.x, p.y) : ctx.moveTo(p.x, p.y)));
    ctx.stroke();
  }
  ctx.restore();
}

/**
 * Draws p50 and p99 latency with the deadline as a dashed step line, and
 * where the time went: the p99 of queue wait, credit wait and work, dashed,
 * for the parts `shown` (from splitShown; none from an older server).
 *
 * Why p99 lines of the parts rather than a stack of their p50s: a deadline
 * is missed in the tail, and the chart already shows the tail against the
 * deadline. A part's p99 line climbing towards the deadline says at a glance
 * which part eats it (queue wait under overload, work when the work is
 * slow), while p50s would sit calmly below the deadline as events miss it.
 * Percentiles do not add either: a stack of the parts' p50s (or p99s) need
 * not meet the total's, so its top would be a height no event had, beside
 * a total line saying otherwise. Dashed and thinner, on top of
 * the solid totals, so a part that is all of the time (work with an empty
 * queue) shows over its total without hiding it.
 */
export function drawLatency(canvas, samples, nowMs, colors, shown = {}) {
  const { ctx, box } = prepare(canvas);
  const yMax = latencyScaleMax(samples);
  axes(ctx, box, yMax, "ms", colors);
  const frame = { t0: nowMs - WINDOW_S * 1000, t1: nowMs, yMax, box };
  ctx.save();
  ctx.beginPath();
  ctx.rect(box.x, box.y - 2, box.w, box.h + 4);
  ctx.clip();
  // Deadline as a step line across the whole plot: it can change through the
  // live settings; before the first sample and up to now the nearest known value holds.
  const known = samples.filter((s) => s.deadlineMs > 0);
  if (known.length) {
    const steps = [{ t: frame.t0, deadlineMs: known[0].deadlineMs }];
    for (const s of known) {
      steps.push({ t: s.t, deadlineMs: steps[steps.length - 1].deadlineMs });
      steps.push({ t: s.t, deadlineMs: s.deadlineMs });
    }
    steps.push({ t: frame.t1, deadlineMs: known[known.length - 1].deadlineMs });
    const runs = toRuns(steps, (s) => s.deadlineMs, { ...frame, gapMs: Infinity });
    strokeRuns(ctx, runs, colors.deadline, 1.5, [6, 4]);
  }
  strokeRuns(ctx, toRuns(samples, (s) => latencyOf(s, "p50"), frame), colors.p50, 2);
  strokeRuns(ctx, toRuns(samples, (s) => latencyOf(s, "p99"), frame), colors.p99, 2);
  for (const key of SPLIT_PARTS) {
    if (!shown[key]) continue;
    const dash = key === "waitP99" ? [2, 3] : [5, 3];
    strokeRuns(ctx, toRuns(samples, (s) => splitOf(s, key), frame), colors[key], 1.5, dash);
  }
  ctx.restore();
}

/** Draws on-time, late, failed and dropped per second, stacked in that order from the bottom. */
export function drawOutcomes(canvas, samples, nowMs, colors) {
  const { ctx, box } = prepare(canvas);
  const yMax = outcomesScaleMax(samples);
  axes(ctx, box, yMax, "/s", colors);
  const frame = { t0: nowMs - WINDOW_S * 1000, t1: nowMs, yMax, box };
  const layers = [
    { color: colors.onTime, top: (s) => s.onTime },
    { color: colors.late, top: (s) => s.onTime + s.late },
    { color: colors.failed, top: (s) => s.onTime + s.late + num(s.failed) },
    { color: colors.dropped, top: (s) => s.onTime + s.late + num(s.failed) + s.dropped },
  ];
  ctx.save();
  ctx.beginPath();
  ctx.rect(box.x, box.y, box.w, box.h);
  ctx.clip();
  // Each band is filled between its own top and the top of the band below it.
  let below = (s) => 0;
  for (const layer of layers) {
    const bottom = below;
    const upper = toRuns(samples, layer.top, frame);
    const lower = toRuns(samples, bottom, frame);
    ctx.fillStyle = layer.color;
    upper.forEach((run, i) => {
      const base = lower[i] ?? [];
      ctx.beginPath();
      if (run.length === 1) {
        // A lone sample: a bar one second wide.
        const w = Math.max(box.w / WINDOW_S, 2);
        ctx.rect(run[0].x - w / 2, run[0].y, w, (base[0]?.y ?? box.y + box.h) - run[0].y);
      } else {
        run.forEach((p, j) => (j ? ctx.lineTo(p.x, p.y) : ctx.moveTo(p.x, p.y)));
        for (let j = base.length - 1; j >= 0; j--) ctx.lineTo(base[j].x, base[j].y);
        ctx.closePath();
      }
      ctx.fill();
    });
    below = layer.top;
  }
  ctx.restore();
}
