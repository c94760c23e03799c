// The dashboard: wires the API, the live event stream and the parts of the page.

import { ApiError, EVENTS, adoptTokenFromUrl, api, getToken, setToken } from "./api.js";
import { renderDetail, renderNoDetail } from "./detail.js";
import { pageInfo, renderJobs } from "./jobs.js";
import { renderCounts, renderWorkers } from "./overview.js";
import { Timeline } from "./timeline.js";

const $ = (id) => document.getElementById(id);

const state = {
  status: "",
  task: "",
  text: "",
  limit: 50,
  offset: 0,
  page: { jobs: [], total: 0, limit: 50, offset: 0 },
  selected: null,
};

let timeline;

// ------------------------------------------------------------------ messages
let toastTimer = null;
function toast(message, kind = "info") {
  const box = $("toast");
  box.textContent = message;
  box.dataset.kind = kind;
  box.hidden = false;
  window.clearTimeout(toastTimer);
  toastTimer = window.setTimeout(() => {
    box.hidden = true;
  }, 5000);
}

function failure(what, error) {
  if (error instanceof ApiError && (error.status === 401 || error.status === 403)) {
    toast(`${what}: ${error.message} \u2014 set the token at the top right`, "error");
    $("token").focus();
  } else {
    toast(`${what}: ${error.message}`, "error");
  }
}

// ------------------------------------------------------------------ loading
/** Run `fn` at most once per `wait` ms, at the end of a burst of calls. */
function throttle(fn, wait) {
  let timer = null;
  let again = false;
  return () => {
    if (timer) {
      again = true;
      return;
    }
    fn();
    timer = window.setTimeout(function done() {
      timer = null;
      if (again) {
        again = false;
        fn();
        timer = window.setTimeout(done, wait);
      }
    }, wait);
  };
}

async function loadCounts() {
  try {
    renderCounts($("counts"), await api.counts(), pickStatus);
  } catch (error) {
    failure("counts", error);
  }
}

async function loadWorkers() {
  try {
    renderWorkers($("workers"), $("workers-summary"), await api.workers());
  } catch (error) {
    failure("workers", error);
  }
}

let jobsRequest = 0;
async function loadJobs() {
  const ticket = ++jobsRequest;
  try {
    const page = await api.jobs(state);
    if (ticket !== jobsRequest) return; // a newer request is on its way
    if (!page.jobs.length && state.offset > 0) {
      // past the end (jobs were purged): go to the last page there is
      state.offset = Math.max(0, Math.ceil(page.total / state.limit) - 1) * state.limit;
      if (page.total > 0) return loadJobs();
    }
    state.page = page;
    drawJobs();
  } catch (error) {
    failure("jobs", error);
  }
}

function drawJobs() {
  const shown = renderJobs($("jobs").tBodies[0], $("jobs-empty"), state.page, state.text, state.selected, select);
  const info = pageInfo(state.page, shown);
  $("page-info").textContent = info.text;
  $("prev").disabled = !info.newer;
  $("next").disabled = !info.older;
}

async function loadDetail() {
  const id = state.selected;
  if (id === null) return;
  try {
    const record = await api.job(id);
    if (state.selected === id) renderDetail($("detail"), record, actions);
    timeline.update(record);
  } catch (error) {
    if (error instanceof ApiError && error.status === 404 && state.selected === id) {
      renderNoDetail($("detail"));
      state.selected = null;
      toast(`job ${id} is gone (purged)`);
    } else failure("job", error);
  }
}

async function seedTimeline() {
  try {
    const page = await api.jobs({ status: "", task: "", limit: 200, offset: 0 });
    for (const record of page.jobs) timeline.update(record);
  } catch (error) {
    failure("timeline", error);
  }
}

const refreshJobs = throttle(loadJobs, 300);
const refreshCounts = throttle(loadCounts, 300);
const refreshWorkers = throttle(loadWorkers, 2000);

// ------------------------------------------------------------------ actions
function select(id) {
  state.selected = id;
  timeline.select(id);
  drawJobs();
  loadDetail();
}

const actions = {
  async cancel(id) {
    try {
      const answer = await api.cancel(id);
      toast(answer.cancelled ? `cancelled ${id}` : `${id} had already ended`);
    } catch (error) {
      failure("cancel", error);
    }
    loadDetail();
    refreshJobs();
    refreshCounts();
  },
  async retry(id) {
    try {
      const answer = await api.retry(id);
      toast(`retried ${answer.id}: ${answer.status}`);
    } catch (error) {
      failure("retry", error);
    }
    loadDetail();
    refreshJobs();
    refreshCounts();
  },
  close() {
    state.selected = null;
    timeline.select(null);
    renderNoDetail($("detail"));
    drawJobs();
  },
};

function pickStatus(status) {
  $("filter-status").value = state.status === status ? "" : status;
  filtersChanged();
}

function filtersChanged() {
  state.status = $("filter-status").value;
  state.task = $("filter-task").value.trim();
  state.offset = 0;
  loadJobs();
}

// ------------------------------------------------------------------ live
function setLive(kind, text) {
  $("live").dataset.state = kind;
  $("live-text").textContent = text;
}

function connect() {
  const source = new EventSource("/api/events");
  source.addEventListener("open", () => {
    setLive("live", "live");
    // catch up on what changed before the stream (re)opened
    refreshJobs();
    refreshCounts();
    refreshWorkers();
    loadDetail();
    seedTimeline();
  });
  source.addEventListener("error", () => setLive("down", "reconnecting\u2026"));
  for (const name of EVENTS) {
    source.addEventListener(name, (event) => {
      let record;
      try {
        record = JSON.parse(event.data);
      } catch {
        return;
      }
      timeline.update(record);
      if (record.id === state.selected) renderDetail($("detail"), record, actions);
      if (name !== "progress") {
        refreshCounts();
        refreshJobs();
        if (name === "started") refreshWorkers();
      } else if (state.page.jobs.some((r) => r.id === record.id)) {
        state.page.jobs = state.page.jobs.map((r) => (r.id === record.id ? record : r));
        drawJobs();
      }
    });
  }
}

// ------------------------------------------------------------------ start
function start() {
  adoptTokenFromUrl();
  $("token").value = getToken();
  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    setToken($("token").value.trim());
    toast(getToken() ? "token saved for this tab" : "token cleared");
  });

  let tasks = [];
  try {
    tasks = JSON.parse(document.body.dataset.tasks || "[]");
  } catch {
    tasks = [];
  }
  $("task-names").replaceChildren(...tasks.map((name) => Object.assign(document.createElement("option"), { value: name })));

  $("filters").addEventListener("submit", (event) => event.preventDefault());
  $("filter-status").addEventListener("change", filtersChanged);
  let typing = null;
  $("filter-task").addEventListener("input", () => {
    window.clearTimeout(typing);
    typing = window.setTimeout(filtersChanged, 300);
  });
  $("filter-task").addEventListener("change", filtersChanged);
  $("filter-text").addEventListener("input", () => {
    state.text = $("filter-text").value.trim();
    drawJobs();
  });
  $("page-size").addEventListener("change", () => {
    state.limit = Number($("page-size").value);
    state.offset = 0;
    loadJobs();
  });
  $("prev").addEventListener("click", () => {
    state.offset = Math.max(0, state.offset - state.limit);
    loadJobs();
  });
  $("next").addEventListener("click", () => {
    state.offset += state.limit;
    loadJobs();
  });

  timeline = new Timeline($("timeline"), $("legend"), select);
  $("window").addEventListener("change", () => timeline.setWindow(Number($("window").value)));
  window.setInterval(() => timeline.draw(), 1000);
  window.setInterval(refreshWorkers, 2000); // a worker turns lost by silence: no event says so

  loadCounts();
  loadWorkers();
  loadJobs();
  seedTimeline();
  connect();
}

start();
