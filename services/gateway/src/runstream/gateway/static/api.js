// The gateway's HTTP API: bearer-authenticated JSON calls and stream tokens.

const TOKEN_KEY = "runstream.token";

export class ApiError extends Error {
  constructor(status, body) {
    const err = (body && body.error) || {};
    super(err.message || `HTTP ${status}`);
    this.status = status;
    this.code = err.code || "http_error";
    this.details = err.details || {};
    this.body = body || {};
  }
}

export const auth = {
  get token() { return localStorage.getItem(TOKEN_KEY) || ""; },
  set token(value) {
    if (value) localStorage.setItem(TOKEN_KEY, value);
    else localStorage.removeItem(TOKEN_KEY);
  },
};

// Called when the gateway says the bearer token is no good (expired, revoked).
let onUnauthorized = () => {};
export function setUnauthorizedHandler(fn) { onUnauthorized = fn; }

export async function request(method, path, { json, body, headers = {}, raw = false } = {}) {
  const init = { method, headers: { ...headers } };
  if (auth.token) init.headers.Authorization = `Bearer ${auth.token}`;
  if (json !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(json);
  } else if (body !== undefined) {
    init.body = body;
  }
  const res = await fetch(path, init);
  if (res.status === 401) onUnauthorized();
  if (!res.ok) {
    let payload = null;
    try { payload = await res.json(); } catch { /* not JSON */ }
    throw new ApiError(res.status, payload);
  }
  if (raw) return res;
  if (res.status === 204) return null;
  return res.json();
}

const seg = encodeURIComponent;

export const api = {
  listSessions: () => request("GET", "/api/sessions"),
  createSession: (title = "") => request("POST", "/api/sessions", { json: { title } }),
  rename: (sid, title) => request("PATCH", `/api/sessions/${seg(sid)}`, { json: { title } }),
  markRead: (sid) => request("POST", `/api/sessions/${seg(sid)}/read`),
  messages: (sid) => request("GET", `/api/sessions/${seg(sid)}/messages`),
  analysisStatus: (sid) => request("GET", `/api/sessions/${seg(sid)}/analysis-status`),
  datasets: (sid) => request("GET", `/api/sessions/${seg(sid)}/datasets`),
  upload: (sid, file) => request("POST",
    `/api/sessions/${seg(sid)}/datasets?name=${seg(file.name)}`,
    { body: file, headers: { "Content-Type": file.type || "application/octet-stream" } }),
  ask: (sid, question, datasetId) => request("POST", `/api/sessions/${seg(sid)}/analyses`,
    { json: datasetId ? { question, dataset_id: datasetId } : { question } }),
  message: (mid) => request("GET", `/api/messages/${seg(mid)}`),
  cancel: (mid) => request("POST", `/api/messages/${seg(mid)}/cancel`),
  retry: (mid) => request("POST", `/api/messages/${seg(mid)}/retry`),
  resultCsv: (mid) => request("GET", `/api/messages/${seg(mid)}/result.csv`, { raw: true }),
  streamToken: () => request("POST", "/api/stream-tokens"),
};

// The dev token `runstream up` writes, when the gateway offers it (localhost only).
export async function devToken() {
  try {
    const res = await fetch("/dev-token", { headers: { Accept: "application/json" } });
    if (!res.ok || !(res.headers.get("content-type") || "").includes("json")) return "";
    const body = await res.json();
    return typeof body.token === "string" ? body.token : "";
  } catch {
    return "";
  }
}
