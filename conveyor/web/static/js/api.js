// The HTTP API of the same server, and the bearer token the changes need.

const KEY = "conveyor.token";

/** Take `?token=` from the address once: keep it for this tab, drop it from the address bar. */
export function adoptTokenFromUrl() {
  const url = new URL(window.location.href);
  const token = url.searchParams.get("token");
  if (token !== null) {
    setToken(token);
    url.searchParams.delete("token");
    window.history.replaceState(null, "", url.pathname + url.search + url.hash);
  }
}

export function getToken() {
  return window.sessionStorage.getItem(KEY) || "";
}

export function setToken(token) {
  if (token) window.sessionStorage.setItem(KEY, token);
  else window.sessionStorage.removeItem(KEY);
}

/** An error the API answered, with its `detail`. */
export class ApiError extends Error {
  constructor(status, detail) {
    super(detail);
    this.status = status;
  }
}

async function call(method, path, body) {
  const headers = { Accept: "application/json" };
  if (method !== "GET") {
    const token = getToken();
    if (token) headers.Authorization = `Bearer ${token}`;
  }
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    cache: "no-store",
  });
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!response.ok) {
    let detail = data && data.detail !== undefined ? data.detail : text || response.statusText;
    if (typeof detail !== "string") detail = JSON.stringify(detail);
    throw new ApiError(response.status, detail);
  }
  return data;
}

export const api = {
  jobs: ({ status, task, limit, offset }) => {
    const q = new URLSearchParams({ limit: String(limit), offset: String(offset) });
    if (status) q.set("status", status);
    if (task) q.set("task", task);
    return call("GET", `/api/jobs?${q}`);
  },
  job: (id) => call("GET", `/api/jobs/${encodeURIComponent(id)}`),
  counts: () => call("GET", "/api/counts"),
  workers: () => call("GET", "/api/workers"),
  cancel: (id) => call("POST", `/api/jobs/${encodeURIComponent(id)}/cancel`),
  retry: (id) => call("POST", `/api/jobs/${encodeURIComponent(id)}/retry`),
};

export const EVENTS = ["queued", "started", "finished", "failed", "retrying", "cancelled", "progress"];
