// One job in full: what it runs, where it is, how it ended, and the buttons that change it.

import { ACTIVE, badge, clock, duration, el, ms, pretty, queuedAt } from "./dom.js";

function fact(label, value, cls) {
  if (value === null || value === undefined || value === "") return null;
  return [el("dt", { text: label }), el("dd", { class: cls || null, text: value })];
}

function block(title, value, cls) {
  return el("section", { class: "block" }, el("h3", { text: title }), el("pre", { class: cls || null, text: value }));
}

/** Where a job got to (once it finished, it got to the end: nothing to show). */
function progress(record) {
  if (typeof record.progress !== "number" || record.status === "finished") return null;
  const pct = Math.round(Math.min(1, Math.max(0, record.progress)) * 100);
  return el(
    "div",
    { class: "progress", "data-progress": pct },
    el("div", { class: "progress-track" }, el("div", { class: "progress-bar", style: { width: `${pct}%` } })),
    el("div", { class: "small muted", text: record.progress_message ? `${pct}% \u00b7 ${record.progress_message}` : `${pct}%` }),
  );
}

/** A bar from submitted to ended: the wait faint, the run coloured. */
function phases(record) {
  const sub = queuedAt(record);
  const start = ms(record.started);
  const end = ms(record.ended) ?? (record.status === "running" ? Date.now() : null);
  if (sub === null) return null;
  const last = Math.max(end ?? start ?? sub, sub + 1);
  const span = last - sub;
  const part = (from, to, cls) =>
    el("span", { class: cls, style: { left: `${((from - sub) / span) * 100}%`, width: `${Math.max(((to - from) / span) * 100, 0.5)}%` } });
  return el(
    "div",
    { class: "phases", title: "waited, then ran" },
    start !== null ? part(sub, start, "wait") : part(sub, last, "wait"),
    start !== null && end !== null ? part(start, end, `run s-${record.status}`) : null,
  );
}

function history(record) {
  const past = record.history || [];
  if (!past.length) return null;
  return el(
    "section",
    { class: "block" },
    el("h3", { text: `Earlier ends (${past.length})` }),
    el(
      "ol",
      { class: "history" },
      ...past.map((h) =>
        el(
          "li",
          {},
          badge(String(h.status)),
          el("span", { class: "small muted", text: ` after ${h.attempts} attempt${h.attempts === 1 ? "" : "s"}, ended ${clock(h.ended)}, retried ${clock(h.retried)}` }),
          h.error ? el("pre", { class: "error", text: String(h.error) }) : null,
          h.traceback ? el("details", {}, el("summary", { text: "traceback" }), el("pre", { class: "traceback", text: String(h.traceback) })) : null,
        ),
      ),
    ),
  );
}

function relations(record) {
  const rows = [
    ["after", record.after],
    ["exclusive", record.exclusive],
    ["incompatible", record.incompatible],
  ].filter(([, v]) => v && v.length);
  const meta = record.meta && Object.keys(record.meta).length ? record.meta : null;
  if (!rows.length && !meta) return null;
  return el(
    "section",
    { class: "block" },
    el("h3", { text: "Constraints" }),
    rows.length ? el("dl", { class: "facts" }, ...rows.map(([k, v]) => fact(k, v.join(", "), "mono"))) : null,
    meta ? el("pre", { text: pretty(meta) }) : null,
  );
}

/** Draw `record` in `root`; `actions` has cancel(id) and retry(id). */
export function renderDetail(root, record, actions) {
  const queued = queuedAt(record);
  const wait = ms(record.started) !== null && queued !== null ? (ms(record.started) - queued) / 1000 : null;
  const buttons = el(
    "div",
    { class: "actions" },
    ACTIVE.has(record.status)
      ? el("button", { type: "button", class: "danger", id: "cancel", onclick: () => actions.cancel(record.id), text: "Cancel" })
      : null,
    record.status === "failed" || record.status === "cancelled"
      ? el("button", { type: "button", class: "primary", id: "retry", onclick: () => actions.retry(record.id), text: "Retry" })
      : null,
    el("button", { type: "button", class: "ghost", onclick: actions.close, text: "Close" }),
  );
  const parts = [
    el(
      "div",
      { class: "panel-head detail-head" },
      el("div", {}, el("h2", { text: record.task }), el("div", { class: "mono small muted detail-id", text: record.id })),
      badge(record.status),
    ),
    buttons,
    progress(record),
    phases(record),
    el(
      "dl",
      { class: "facts" },
      fact("submitted", clock(record.submitted)),
      fact("retried", (record.history || []).length ? clock(record.history[record.history.length - 1].retried) : null),
      fact("started", clock(record.started)),
      fact("ended", clock(record.ended)),
      fact("waited", duration(wait)),
      fact("runtime", duration(record.runtime)),
      fact("attempts", String(record.attempts)),
      fact("worker", record.worker, "mono"),
      fact("priority", String(record.priority ?? 0)),
      fact("lane", record.lane === null || record.lane === undefined ? null : String(record.lane)),
    ),
    block("Arguments", pretty({ args: record.args || [], kwargs: record.kwargs || {} })),
    record.status === "finished" ? block("Result", pretty(record.result)) : null,
    record.error ? block(record.status === "cancelled" ? "Why cancelled" : "Error", record.error, "error") : null,
    record.traceback ? block("Traceback", record.traceback, "traceback") : null,
    history(record),
    relations(record),
  ];
  root.replaceChildren(...parts.filter(Boolean));
  root.dataset.id = record.id;
  root.dataset.status = record.status;
}

/** The panel with no job picked. */
export function renderNoDetail(root) {
  root.replaceChildren(el("div", { class: "panel-head" }, el("h2", { text: "Job" })), el("p", { class: "hint", text: "Pick a job in the table or the timeline." }));
  delete root.dataset.id;
  delete root.dataset.status;
}
