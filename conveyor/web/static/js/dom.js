// Building the page from job data safely: every value goes in as text (textContent, setAttribute),
// never as markup, so a job's arguments cannot inject anything.

const SVG = "http://www.w3.org/2000/svg";

function fill(node, attrs, children) {
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "text") node.textContent = String(value);
    else if (key === "style") Object.assign(node.style, value); // CSSOM: allowed by the page's CSP
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/** An HTML element: el("td", {class: "num", text: "3"}, ...children). */
export function el(tag, attrs, ...children) {
  return fill(document.createElement(tag), attrs, children);
}

/** An SVG element, the same way. */
export function svg(tag, attrs, ...children) {
  return fill(document.createElementNS(SVG, tag), attrs, children);
}

export const STATUSES = ["waiting", "scheduled", "running", "finished", "failed", "cancelled"];
export const ACTIVE = new Set(["waiting", "scheduled", "running"]);
export const ENDED = new Set(["finished", "failed", "cancelled"]);

/** A status as a coloured badge. */
export function badge(status) {
  return el("span", { class: `badge s-${STATUSES.includes(status) ? status : "unknown"}`, text: status });
}

/** Milliseconds since the epoch of an ISO time (null stays null). */
export function ms(iso) {
  if (!iso) return null;
  const t = Date.parse(iso);
  return Number.isNaN(t) ? null : t;
}

/** When the job's latest run was queued (ms): its last retry, else its submission. */
export function queuedAt(record) {
  const past = record.history || [];
  const retried = past.length ? ms(past[past.length - 1].retried) : null;
  return retried ?? ms(record.submitted);
}

/** A time of day, with the date if it is not today. */
export function clock(iso) {
  const t = ms(iso);
  if (t === null) return "";
  const d = new Date(t);
  const time = d.toLocaleTimeString([], { hour12: false });
  return d.toDateString() === new Date().toDateString() ? time : `${d.toLocaleDateString()} ${time}`;
}

/** Seconds as a short duration: 12 ms, 3.4 s, 2 min 5 s, 1 h 3 min. */
export function duration(seconds) {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return "";
  if (seconds < 1) return `${Math.round(seconds * 1000)} ms`;
  if (seconds < 60) return `${seconds.toFixed(seconds < 10 ? 2 : 1)} s`;
  const m = Math.floor(seconds / 60);
  if (m < 60) return `${m} min ${Math.round(seconds % 60)} s`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}

/** Any JSON value as indented text. */
export function pretty(value) {
  return JSON.stringify(value, null, 2);
}

/** A call's arguments as one short line: task(1, "a", key=2). */
export function callText(record) {
  const parts = (record.args || []).map((a) => JSON.stringify(a));
  for (const [k, v] of Object.entries(record.kwargs || {})) parts.push(`${k}=${JSON.stringify(v)}`);
  return parts.join(", ");
}

/** Shorten a long text with an ellipsis at its end. */
export function clip(text, n) {
  return text.length > n ? `${text.slice(0, n - 1)}\u2026` : text;
}

/** Shorten a long text with an ellipsis in its middle (ids differ at both ends). */
export function clipMiddle(text, n) {
  if (text.length <= n) return text;
  const head = Math.ceil((n - 1) / 2);
  return `${text.slice(0, head)}\u2026${text.slice(text.length - (n - 1 - head))}`;
}
