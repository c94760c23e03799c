// The live timeline: an SVG Gantt chart of the last minutes, one bar per job (its wait faint,
// its run coloured by status), fed by the records the event stream brings.

import { STATUSES, clip, clipMiddle, duration, el, ms, queuedAt, svg } from "./dom.js";

const ROW = 16; // px per job
const GAP = 3;
const LABEL = 170; // px of the labels column
const AXIS = 22; // px of the time axis
const MAX_ROWS = 40; // the most recent jobs drawn
const KEEP = 15 * 60 * 1000; // ms a job stays known after it ended
const MIN_FIT = 10 * 1000; // ms: the narrowest window that fits the jobs

const STEPS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600].map((s) => s * 1000);

/** A tick's label: the time of day (seconds shown when the ticks are closer than a minute). */
function tick(t, step) {
  const d = new Date(t);
  const two = (n) => String(n).padStart(2, "0");
  const hm = `${two(d.getHours())}:${two(d.getMinutes())}`;
  return step < 60000 ? `${hm}:${two(d.getSeconds())}` : hm;
}

export class Timeline {
  constructor(root, legend, onSelect) {
    this.root = root;
    this.onSelect = onSelect;
    this.records = new Map();
    this.windowMs = 0; // 0: fit the window to the jobs drawn
    this.selected = null;
    this.pending = false;
    legend.replaceChildren(...STATUSES.map((s) => el("span", { class: "key" }, el("span", { class: `swatch s-${s}` }), s)));
    new ResizeObserver(() => this.draw()).observe(root);
  }

  /** Take the latest record of a job. */
  update(record) {
    if (!record || !record.id) return;
    this.records.set(record.id, record);
    this.schedule();
  }

  setWindow(seconds) {
    this.windowMs = seconds * 1000;
    this.draw();
  }

  select(id) {
    this.selected = id;
    this.schedule();
  }

  schedule() {
    if (this.pending) return;
    this.pending = true;
    window.requestAnimationFrame(() => {
      this.pending = false;
      this.draw();
    });
  }

  /** The jobs to draw: seen in the last `span` ms, the most recently submitted last. */
  visible(now, span) {
    const from = now - span;
    const shown = [];
    for (const [id, r] of this.records) {
      const end = ms(r.ended);
      if (end !== null && end < now - KEEP) {
        this.records.delete(id);
        continue;
      }
      const sub = ms(r.submitted) ?? ms(r.started);
      if (sub === null) continue;
      if (end === null || end >= from) shown.push(r);
    }
    shown.sort((a, b) => (ms(a.submitted) ?? 0) - (ms(b.submitted) ?? 0) || a.id.localeCompare(b.id));
    return shown.slice(-MAX_ROWS);
  }

  draw() {
    const now = Date.now();
    const jobs = this.visible(now, this.windowMs || KEEP);
    let span = this.windowMs;
    if (!span) {
      // fit: from the first drawn job's submission (at least 10 s), with a little room
      const first = Math.min(now, ...jobs.map((r) => ms(r.submitted) ?? ms(r.started) ?? now));
      span = Math.min(Math.max((now - first) * 1.04, MIN_FIT), KEEP);
    }
    const width = Math.max(this.root.clientWidth, 360);
    const plot = width - LABEL - 12;
    const height = AXIS + Math.max(jobs.length, 1) * (ROW + GAP) + 6;
    const from = now - span;
    const x = (t) => LABEL + ((Math.min(Math.max(t, from), now) - from) / span) * plot;
    const chart = svg("svg", { width, height, viewBox: `0 0 ${width} ${height}`, class: "gantt", role: "img", "aria-label": "timeline of recent jobs" });

    const step = STEPS.find((s) => span / s <= 8) || STEPS[STEPS.length - 1];
    for (let t = Math.ceil(from / step) * step; t <= now; t += step) {
      chart.append(
        svg("line", { x1: x(t), x2: x(t), y1: AXIS - 4, y2: height, class: "grid" }),
        svg("text", { x: x(t), y: 12, class: "tick", "text-anchor": x(t) > LABEL + plot - 30 ? "end" : "middle", text: tick(t, step) }),
      );
    }
    chart.append(svg("line", { x1: x(now), x2: x(now), y1: AXIS - 4, y2: height, class: "now" }));
    if (!jobs.length) {
      chart.append(svg("text", { x: LABEL + plot / 2, y: AXIS + ROW - 2, class: "tick", "text-anchor": "middle", text: "no job in this window" }));
    }

    jobs.forEach((r, i) => {
      const y = AXIS + i * (ROW + GAP);
      const sub = queuedAt(r) ?? ms(r.started);
      const start = ms(r.started);
      const end = ms(r.ended);
      const runEnd = end ?? (r.status === "running" ? now : null);
      const waitEnd = start ?? end ?? now;
      const runtime = start !== null ? ((runEnd ?? now) - start) / 1000 : null;
      const g = svg("g", {
        class: `job${r.id === this.selected ? " selected" : ""}`,
        "data-id": r.id,
        "data-status": r.status,
        onclick: () => this.onSelect(r.id),
      });
      g.append(
        svg("title", { text: `${r.task} (${r.id}): ${r.status}${runtime !== null ? `, ran ${duration(runtime)}` : ""}` }),
        svg("rect", { x: 0, y: y - 1, width, height: ROW + 2, class: "row-hit" }),
        svg("text", { x: LABEL - 8, y: y + ROW - 4, class: "label", "text-anchor": "end", text: `${clip(r.task, 12)} ${clipMiddle(r.id, 13)}` }),
      );
      if (waitEnd > from) {
        g.append(svg("rect", { x: x(sub), y: y + 4, width: Math.max(x(waitEnd) - x(sub), 1), height: ROW - 8, rx: 2, class: `wait s-${r.status}` }));
      }
      if (start !== null && runEnd !== null && runEnd >= from) {
        g.append(svg("rect", { x: x(start), y, width: Math.max(x(runEnd) - x(start), 2), height: ROW, rx: 3, class: `bar s-${r.status}` }));
      } else if (start === null && end !== null && end >= from) {
        // ended without running (cancelled while waiting): a tick at its end
        g.append(svg("rect", { x: x(end) - 1, y, width: 2, height: ROW, class: `bar s-${r.status}` }));
      }
      chart.append(g);
    });
    this.root.replaceChildren(chart);
  }
}
