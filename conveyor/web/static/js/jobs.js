// The jobs table: one page of /api/jobs, filtered by status and task on the server and by a
// text on this page.

import { badge, callText, clip, clipMiddle, clock, duration, el } from "./dom.js";

/** Whether a record holds `text` in its id, task, arguments, worker or error. */
export function matches(record, text) {
  if (!text) return true;
  const needle = text.toLowerCase();
  const hay = [record.id, record.task, callText(record), record.worker || "", record.error || ""];
  return hay.some((h) => String(h).toLowerCase().includes(needle));
}

function progressCell(record) {
  if (record.status !== "running" || typeof record.progress !== "number") return null;
  const pct = Math.round(Math.min(1, Math.max(0, record.progress)) * 100);
  return el("span", { class: "mini-progress", title: record.progress_message || `${pct}%` },
    el("span", { class: "mini-bar", style: { width: `${pct}%` } }));
}

function row(record, selected, onSelect) {
  const call = callText(record);
  return el(
    "tr",
    {
      "data-id": record.id,
      "data-status": record.status,
      class: record.id === selected ? "selected" : null,
      tabindex: "0",
      onclick: () => onSelect(record.id),
      onkeydown: (e) => {
        if (e.key === "Enter") onSelect(record.id);
      },
    },
    el("td", { class: "mono id", title: record.id, text: clipMiddle(record.id, 20) }),
    el("td", { class: "task" }, el("div", { text: record.task }), call ? el("div", { class: "muted small mono", text: clip(call, 48) }) : null),
    el("td", { class: "status" }, badge(record.status), progressCell(record)),
    el("td", { class: "num", text: record.attempts }),
    el("td", { class: "time", text: clock(record.submitted) }),
    el("td", { class: "num", text: duration(record.runtime) }),
    el("td", { class: "mono small worker-cell", title: record.worker || "", text: record.worker ? clipMiddle(record.worker, 20) : "" }),
  );
}

/** Fill the table's body with the page's rows that match `text`. */
export function renderJobs(tbody, empty, page, text, selected, onSelect) {
  const rows = page.jobs.filter((r) => matches(r, text));
  tbody.replaceChildren(...rows.map((r) => row(r, selected, onSelect)));
  empty.hidden = rows.length > 0;
  return rows.length;
}

/** "51–100 of 240" and whether there are newer/older pages. */
export function pageInfo(page, shown) {
  if (!page.total) return { text: "0 jobs", newer: false, older: false };
  const first = page.offset + 1;
  const last = page.offset + page.jobs.length;
  const filtered = shown < page.jobs.length ? ` (${shown} shown)` : "";
  return {
    text: `${first}\u2013${last} of ${page.total}${filtered}`,
    newer: page.offset > 0,
    older: last < page.total,
  };
}
