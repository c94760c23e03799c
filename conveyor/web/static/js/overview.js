// The counts by status and the workers.

import { STATUSES, clock, el } from "./dom.js";

/** Draw one card per status; a click on one filters the table by it. */
export function renderCounts(root, counts, onPick) {
  const total = STATUSES.reduce((n, s) => n + (counts[s] || 0), 0);
  root.replaceChildren(
    el("div", { class: "count total" }, el("span", { class: "n", text: total }), el("span", { class: "k", text: "jobs" })),
    ...STATUSES.map((status) =>
      el(
        "button",
        {
          type: "button",
          class: `count c-${status}`,
          "data-status": status,
          title: `show the ${status} jobs`,
          onclick: () => onPick(status),
        },
        el("span", { class: "n", text: counts[status] || 0 }),
        el("span", { class: "k", text: status }),
      ),
    ),
  );
}

/** Draw the workers, alive ones first. */
export function renderWorkers(list, summary, workers) {
  const alive = workers.filter((w) => w.state !== "lost");
  summary.textContent = workers.length ? `${alive.length} alive, ${workers.length - alive.length} lost` : "";
  if (!workers.length) {
    list.replaceChildren(el("li", { class: "muted", text: "No worker has registered." }));
    return;
  }
  const sorted = [...workers].sort((a, b) => (a.state === "lost") - (b.state === "lost") || a.id.localeCompare(b.id));
  list.replaceChildren(
    ...sorted.map((w) =>
      el(
        "li",
        { class: `worker w-${w.state === "lost" ? "lost" : "alive"}`, "data-id": w.id, "data-pid": w.pid, "data-state": w.state },
        el("span", { class: "dot", title: w.state }),
        el(
          "div",
          { class: "worker-main" },
          el("div", { class: "mono", text: w.id }),
          el("div", {
            class: "muted small",
            text: `${w.host} \u00b7 pid ${w.pid} \u00b7 ${w.mode} \u00b7 ${w.slots} slot${w.slots === 1 ? "" : "s"} \u00b7 seen ${clock(w.last_seen)}`,
          }),
        ),
        el("span", { class: `state ${w.state === "lost" ? "lost" : "alive"}`, text: w.state }),
      ),
    ),
  );
}
