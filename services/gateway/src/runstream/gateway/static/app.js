// Runstream web UI: sessions, live analyses, results and charts.
//
// State is loaded from read-model snapshots (each with `as_of_seq`) and kept current by
// the session's SSE stream opened at `after_seq=as_of_seq`: exactly what the snapshot
// lacks, no gap, no duplicate. A frame older than a message's own snapshot is skipped.

import { api, auth, devToken, setUnauthorizedHandler } from "./api.js";
import { fmtBytes, fmtCell, fmtDuration, fmtRelative, fmtTime, h, safeSvg } from "./dom.js";
import { LiveStream } from "./live.js";

const TERMINAL = new Set(["completed", "failed", "cancelled", "expired"]);
const STEP_TITLES = {
  context: "Reading the session and the dataset",
  plan: "Planning the query",
  script: "Writing the script",
  execute: "Running the query",
  chart: "Drawing the chart",
};
const POLL_MS = 5000;
const MAX_TABLE_ROWS = 200;

const state = {
  sessions: [],
  sid: null,
  view: null,          // the open session: {sid, order, messages: Map, datasets, asOf}
  sessionStream: null,
  ownerStream: null,
  ownerState: "connecting",
  pollTimer: null,
  notice: null,        // {kind, text, messageId?}
  uploading: false,
  sending: false,
  signingIn: false,
};

const app = document.getElementById("app");

// ---------------------------------------------------------------------------------------
// Sign-in

async function showSignIn(error = "") {
  closeStreams();
  const offered = await devToken();
  const input = h("textarea.token-input", {
    testid: "token-input", rows: 4, spellcheck: false, autocomplete: "off",
    placeholder: "Paste an access token (runstream token <owner>)",
  });
  input.value = offered;
  const message = h("p.form-error", { testid: "signin-error", role: "alert" }, error);
  const submit = async (ev) => {
    ev.preventDefault();
    const token = input.value.trim();
    if (!token) return;
    auth.token = token;
    state.signingIn = true;
    try {
      await api.listSessions();
    } catch (err) {
      auth.token = "";
      message.textContent = err.status === 401
        ? "That token was refused: it may have expired or come from another deployment."
        : `Could not reach the gateway (${err.message}).`;
      return;
    } finally {
      state.signingIn = false;
    }
    start();
  };
  app.replaceChildren(h("main.signin", { testid: "signin" },
    h("form.signin-card", { onsubmit: submit },
      h("div.brand.brand-lg", {}, h("span.brand-mark", {}), "Runstream"),
      h("p.muted", {}, "Ask questions about your data and watch every step of the analysis live."),
      h("label.field-label", { for: "token" }, "Access token"),
      Object.assign(input, { id: "token" }),
      offered
        ? h("p.hint", { testid: "dev-token-hint" },
          "The development token from runstream up is filled in for you.")
        : h("p.hint", {}, "Get one with ", h("code", {}, "runstream token <owner>"), "."),
      message,
      h("button.btn.btn-primary.btn-block", { type: "submit", testid: "signin-submit" },
        "Sign in"),
    )));
  input.focus();
}

function signOut() {
  auth.token = "";
  window.onhashchange = null;
  closeSession();
  state.sessions = [];
  history.replaceState(null, "", location.pathname);
  showSignIn();
}

setUnauthorizedHandler(() => {
  if (!auth.token || state.signingIn) return;
  auth.token = "";
  window.onhashchange = null;
  closeSession();
  showSignIn("Your token has expired or was refused. Sign in again.");
});

// ---------------------------------------------------------------------------------------
// Shell

const shell = {};

function renderShell() {
  shell.conn = h("div.conn", { testid: "connection", role: "status" });
  shell.sessions = h("ul.session-list", { testid: "session-list" });
  shell.main = h("section.main", { testid: "main" });
  app.replaceChildren(h("div.layout", {},
    h("header.topbar", {},
      h("div.brand", {}, h("span.brand-mark", {}), "Runstream"),
      h("div.topbar-right", {},
        shell.conn,
        h("button.btn.btn-ghost", { testid: "sign-out", onclick: signOut }, "Sign out"))),
    h("aside.sidebar", {},
      h("button.btn.btn-primary.btn-block", { testid: "new-session", onclick: newSession },
        "+ New session"),
      h("div.sidebar-title", {}, "Sessions"),
      shell.sessions),
    shell.main));
  renderConnection();
}

async function start() {
  renderShell();
  openOwnerStream();
  await refreshSessions();
  window.onhashchange = route;
  await route();
}

// ---------------------------------------------------------------------------------------
// Sessions sidebar

async function refreshSessions() {
  try {
    const listing = await api.listSessions();
    state.sessions = listing.sessions || [];
  } catch (err) {
    if (err.status === 401) return;
  }
  renderSessions();
}

let refreshTimer = null;
function refreshSessionsSoon() {
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(refreshSessions, 150);
}

function sessionTitle(s) {
  return s.title || "Untitled session";
}

function renderSessions() {
  if (!shell.sessions) return;
  if (!state.sessions.length) {
    shell.sessions.replaceChildren(h("li.empty-hint", {}, "No sessions yet."));
    return;
  }
  shell.sessions.replaceChildren(...state.sessions.map((s) => {
    const current = s.session_id === state.sid;
    const analyzing = s.status === "analyzing";
    const unread = s.has_notification && !current;
    return h("li", {},
      h("a.session-item", {
        href: `#/s/${s.session_id}`, testid: "session-item",
        dataset: { sessionId: s.session_id, current: String(current),
          status: s.status || "idle", unread: String(Boolean(unread)) },
        class: current ? "current" : "",
        "aria-current": current ? "page" : null,
      },
      h("span.session-main", {},
        h("span.session-title", {}, sessionTitle(s)),
        h("span.session-meta", {}, analyzing ? "Analyzing…" : fmtRelative(s.last_activity_at))),
      analyzing ? h("span.analyzing-marker", { testid: "analyzing-marker", title: "Analyzing" })
        : null,
      unread ? h("span.unread-dot", { testid: "unread-dot", title: "New results" }) : null));
  }));
}

async function newSession() {
  try {
    const session = await api.createSession(`Session ${state.sessions.length + 1}`);
    state.sessions = [session, ...state.sessions.filter((s) => s.session_id !== session.session_id)];
    renderSessions();
    location.hash = `#/s/${session.session_id}`;
  } catch (err) {
    setNotice("error", `Could not create a session: ${err.message}`);
  }
}

// The per-owner stream keeps the sidebar current; if it fails, poll instead.
function openOwnerStream() {
  if (state.ownerStream) state.ownerStream.close();
  state.ownerStream = new LiveStream("/api/events", {
    onFrame: () => refreshSessionsSoon(),
    onReset: () => refreshSessionsSoon(),
    onState: (s) => {
      state.ownerState = s;
      if (s === "live") stopPolling();
      else if (s === "reconnecting" || s === "offline") startPolling();
      renderConnection();
    },
  });
  state.ownerStream.open();
}

function startPolling() {
  if (state.pollTimer) return;
  state.pollTimer = setInterval(refreshSessions, POLL_MS);
}

function stopPolling() {
  clearInterval(state.pollTimer);
  state.pollTimer = null;
}

function closeStreams() {
  for (const s of [state.sessionStream, state.ownerStream]) if (s) s.close();
  state.sessionStream = state.ownerStream = null;
  stopPolling();
}

// ---------------------------------------------------------------------------------------
// Connection indicator

function connectionState() {
  if (!navigator.onLine) return "offline";
  const primary = state.sessionStream || state.ownerStream;
  return primary ? primary.state : "offline";
}

function renderConnection() {
  if (!shell.conn) return;
  const s = connectionState();
  const label = { live: "Live", connecting: "Connecting…", reconnecting: "Reconnecting…",
    offline: "Offline" }[s] || s;
  shell.conn.dataset.state = s;
  shell.conn.replaceChildren(h("span.conn-dot", {}), label);
  shell.conn.title = s === "live" ? "Receiving live updates"
    : s === "offline" ? "No connection to the gateway; retrying" : "Reconnecting to the stream";
}

window.addEventListener("online", () => {
  for (const s of [state.sessionStream, state.ownerStream]) if (s) s.kick();
  renderConnection();
});
window.addEventListener("offline", renderConnection);

// ---------------------------------------------------------------------------------------
// Routing

async function route() {
  const m = location.hash.match(/^#\/s\/([^/?#]+)/);
  const sid = m ? decodeURIComponent(m[1]) : null;
  if (sid && sid === state.sid && state.view) return;
  if (sid) {
    await openSession(sid);
  } else if (state.sessions.length) {
    location.replace(`#/s/${state.sessions[0].session_id}`);
  } else {
    closeSession();
    renderEmpty();
  }
}

function renderEmpty() {
  shell.main.replaceChildren(h("div.empty", { testid: "empty-state" },
    h("h2", {}, "Start an analysis"),
    h("p.muted", {}, "Create a session, upload a CSV or Parquet file and ask a question about it."),
    h("button.btn.btn-primary", { onclick: newSession }, "+ New session")));
}

function closeSession() {
  if (state.sessionStream) state.sessionStream.close();
  state.sessionStream = null;
  state.sid = null;
  state.view = null;
  renderConnection();
}

// ---------------------------------------------------------------------------------------
// The open session: snapshot, then stream

async function openSession(sid) {
  closeSession();
  state.sid = sid;
  state.notice = null;
  renderSessions();
  shell.main.replaceChildren(h("div.loading", { testid: "loading" }, "Loading…"));
  let view;
  try {
    view = await loadSnapshot(sid);
  } catch (err) {
    if (state.sid !== sid) return;
    shell.main.replaceChildren(h("div.empty", { testid: "session-error" },
      h("h2", {}, err.status === 404 ? "Session not found" : "Could not load the session"),
      h("p.muted", {}, err.message)));
    return;
  }
  if (state.sid !== sid) return;  // the user moved on meanwhile
  state.view = view;
  renderSession();
  openSessionStream(view.asOf);
  markRead(sid);
}

async function loadSnapshot(sid) {
  const [listing, status, datasets] = await Promise.all([
    api.messages(sid), api.analysisStatus(sid), api.datasets(sid).catch(() => ({ datasets: [] })),
  ]);
  const view = { sid, order: [], messages: new Map(), datasets: datasets.datasets || [],
    asOf: listing.as_of_seq };
  for (const m of listing.messages || []) {
    view.order.push(m.message_id);
    view.messages.set(m.message_id, { ...m, steps: [], logs: [], asOf: listing.as_of_seq,
      detailed: false });
  }
  // The page-refresh call: the active (or latest) analysis with its steps and logs.
  const active = status.message_id && view.messages.get(status.message_id);
  if (active) {
    // Its steps and logs are as of the status snapshot: frames after it fill the rest.
    Object.assign(active, { status: status.status || active.status, steps: status.steps || [],
      logs: status.logs || [], asOf: status.as_of_seq, detailed: true });
  }
  view.asOf = Math.min(listing.as_of_seq, status.as_of_seq);
  // Details (steps, logs, charts) of the other analyses, newest first, a few at a time.
  const others = [...view.messages.values()]
    .filter((m) => m.role === "assistant" && !m.detailed).reverse().slice(0, 20);
  const details = await Promise.all(others.map((m) => api.message(m.message_id).catch(() => null)));
  for (const d of details) if (d) mergeDetail(view, d);
  return view;
}

function mergeDetail(view, detail) {
  const m = view.messages.get(detail.message_id);
  if (!m) return;
  if (m.detailed && detail.as_of_seq < m.asOf) return;  // older than what we show
  Object.assign(m, detail, { asOf: Math.max(m.asOf || 0, detail.as_of_seq), detailed: true });
}

function openSessionStream(afterSeq) {
  const sid = state.sid;
  state.sessionStream = new LiveStream(`/api/sessions/${encodeURIComponent(sid)}/events`, {
    afterSeq,
    onFrame: (type, data, seq) => applyFrame(type, data, seq),
    onReset: () => reloadSession(),
    onState: renderConnection,
  });
  state.sessionStream.open();
  renderConnection();
}

// A reset means the stream could not continue from our cursor: take a fresh snapshot.
async function reloadSession() {
  const sid = state.sid;
  if (!sid) return;
  try {
    const view = await loadSnapshot(sid);
    if (state.sid !== sid) return;
    state.view = view;
    if (state.sessionStream) state.sessionStream.close();
    renderSession();
    openSessionStream(view.asOf);
  } catch { /* the stream's own retry will bring us back */ }
}

async function markRead(sid) {
  try {
    await api.markRead(sid);
  } catch { return; }
  const s = state.sessions.find((x) => x.session_id === sid);
  if (s) s.has_notification = false;
  renderSessions();
}

// ---------------------------------------------------------------------------------------
// Applying frames to the model

function applyFrame(type, ev, seq) {
  const view = state.view;
  if (!view) return;
  view.lastSeq = seq;
  if (type === "analysis_requested") {
    addAnalysis(view, ev.message_id, ev.user_message_id, ev.question, ev.at, seq);
    refreshSessionsSoon();
    return;
  }
  if (type === "dataset_attached") {
    if (!view.datasets.some((d) => d.dataset_id === ev.dataset_id)) {
      view.datasets.push({ dataset_id: ev.dataset_id, name: ev.name, format: ev.format,
        row_count: ev.row_count, size_bytes: ev.size_bytes, columns: ev.columns });
      renderComposer();
      if (!view.order.length) renderMessages();  // the empty-state hint mentions the data
    }
    return;
  }
  if (type === "session_read") return;
  const mid = ev.message_id;
  const m = mid && view.messages.get(mid);
  if (!m || seq <= (m.asOf || 0)) return;  // unknown here, or already in the snapshot
  m.lastSeq = seq;
  const step = (name) => {
    let s = m.steps.find((x) => x.step === name);
    if (!s) {
      s = { step: name, status: "pending", progress: 0 };
      m.steps.push(s);
    }
    return s;
  };
  switch (type) {
    case "analysis_started":
      if (!TERMINAL.has(m.status)) m.status = "running";
      break;
    case "step_started": {
      const s = step(ev.step);
      Object.assign(s, { idx: ev.index, total: ev.total, status: "running", progress: 0,
        eta_ms: ev.eta_ms, started_at: ev.at, ended_at: null, error: null, attempt: ev.attempt });
      m.steps.sort((a, b) => (a.idx || 0) - (b.idx || 0));
      if (!TERMINAL.has(m.status)) m.status = "running";
      break;
    }
    case "step_progressed":
      Object.assign(step(ev.step), { status: "running", progress: ev.progress,
        detail: ev.detail });
      break;
    case "step_completed":
      Object.assign(step(ev.step), { status: "completed", progress: 100,
        duration_ms: ev.duration_ms, ended_at: ev.at });
      break;
    case "step_failed":
      Object.assign(step(ev.step), { status: "failed", error: ev.error, error_code: ev.code,
        ended_at: ev.at });
      break;
    case "log_appended":
      if (!m.logs.some((l) => l.seq === seq)) {
        m.logs.push({ seq, level: ev.level, text: ev.text, step: ev.step, at: ev.at });
      }
      break;
    case "script_generated":
      m.script = { sql: ev.sql, explanation: ev.explanation, planner: ev.planner,
        interpretation: ev.interpretation };
      break;
    case "execution_completed":
      m.result = { columns: ev.columns, rows: ev.rows, row_count: ev.row_count,
        truncated: ev.truncated, markdown: ev.markdown, formats: ev.formats,
        display_rows: ev.display_rows, interpretation: ev.interpretation || undefined };
      break;
    case "execution_failed":
      m.error = { code: ev.kind, message: ev.error };
      break;
    case "chart_started":
    case "chart_progressed":
      m.chartTask = { task_id: ev.task_id, progress: ev.progress || 0,
        current_step: ev.current_step, eta_ms: ev.eta_ms, at: ev.at };
      break;
    case "chart_completed": {
      m.chartTask = null;
      m.charts = m.charts || [];
      const drawn = ev.svg || ev.kind === "number";  // a card has no SVG, only its numbers
      if (drawn && !m.charts.some((c) => c.chart_id === ev.chart_id)) {
        m.charts.push({ chart_id: ev.chart_id, kind: ev.kind, title: ev.title, svg: ev.svg,
          spec: ev.spec });
      }
      break;
    }
    case "chart_failed":
    case "chart_cancelled":
      m.chartTask = null;
      break;
    case "analysis_settled":
      m.status = ev.status;
      if (ev.error) m.error = ev.error;
      if (ev.summary) m.summary = ev.summary;
      for (const s of m.steps) if (s.status === "running") s.status = ev.status === "completed"
        ? "completed" : "failed";
      settle(m, seq);
      break;
    default:
      return;
  }
  renderMessageSoon(mid);
}

function addAnalysis(view, mid, umid, question, at, seq) {
  if (!view.messages.has(umid)) {
    view.order.push(umid);
    view.messages.set(umid, { message_id: umid, role: "user", content: question,
      created_at: at, status: "completed", asOf: seq });
  }
  if (!view.messages.has(mid)) {
    view.order.push(mid);
    view.messages.set(mid, { message_id: mid, role: "assistant", question, status: "pending",
      created_at: at, steps: [], logs: [], charts: [], asOf: seq, detailed: true });
  }
  renderMessages();
}

// After the terminal frame, take the settled message from the read model (it may lag a
// moment behind the stream: wait until its snapshot covers the settle).
async function settle(m, seq) {
  refreshSessionsSoon();
  const sid = state.sid;
  if (document.visibilityState === "visible") markRead(sid);
  for (let attempt = 0; attempt < 20; attempt += 1) {
    let detail;
    try {
      detail = await api.message(m.message_id);
    } catch { return; }
    if (state.sid !== sid || !state.view) return;
    if (detail.as_of_seq >= seq || attempt === 19) {
      const liveStatus = m.status;
      Object.assign(m, detail, { asOf: Math.max(m.asOf || 0, detail.as_of_seq) });
      if (!TERMINAL.has(m.status)) m.status = liveStatus;
      renderMessageSoon(m.message_id);
      return;
    }
    await new Promise((r) => setTimeout(r, 250));
  }
}

// ---------------------------------------------------------------------------------------
// Rendering the session

const dirty = new Set();
let flushTimer = null;

function renderMessageSoon(mid) {
  dirty.add(mid);
  if (!flushTimer) flushTimer = setTimeout(flushMessages, 16);
}

function flushMessages() {
  flushTimer = null;
  const view = state.view;
  if (!view) return dirty.clear();
  for (const mid of dirty) {
    const m = view.messages.get(mid);
    const old = shell.main.querySelector(`[data-message-id="${CSS.escape(mid)}"]`);
    if (m && old) old.replaceWith(renderMessage(m));
  }
  dirty.clear();
  renderComposer();
  scrollToBottomIfNear();
}

function renderSession() {
  const view = state.view;
  const s = state.sessions.find((x) => x.session_id === view.sid);
  shell.messages = h("div.messages", { testid: "messages" });
  shell.composer = h("div.composer-wrap");
  shell.notice = h("div.notice-slot");
  shell.main.replaceChildren(
    h("div.session-header", {},
      h("h1.session-heading", { testid: "session-title" }, s ? sessionTitle(s) : "Session"),
      h("span.muted.small", { testid: "session-id" }, view.sid)),
    shell.messages, shell.notice, shell.composer);
  renderMessages();
  renderComposer();
  renderNotice();
  shell.messages.scrollTop = shell.messages.scrollHeight;
}

function renderMessages() {
  const view = state.view;
  if (!view || !shell.messages) return;
  const items = view.order.map((id) => view.messages.get(id)).filter(Boolean).map(renderMessage);
  if (!items.length) {
    items.push(h("div.empty.empty-inline", { testid: "no-messages" },
      h("h2", {}, "Ask your first question"),
      h("p.muted", {}, view.datasets.length
        ? "Your data is ready. Ask something like “average revenue by region”."
        : "Upload a CSV or Parquet file below, then ask a question about it.")));
  }
  shell.messages.replaceChildren(...items);
  scrollToBottomIfNear(true);
}

function scrollToBottomIfNear(force = false) {
  const el = shell.messages;
  if (!el) return;
  if (force || el.scrollHeight - el.scrollTop - el.clientHeight < 160) {
    el.scrollTop = el.scrollHeight;
  }
}

function renderMessage(m) {
  if (m.role === "user") {
    return h("div.msg.msg-user", { testid: "user-message", dataset: { messageId: m.message_id } },
      h("div.bubble", {}, m.content || m.question || ""),
      h("div.msg-time", {}, fmtTime(m.created_at)));
  }
  return renderAnalysis(m);
}

function statusLabel(status) {
  return { pending: "Queued", running: "Running", completed: "Completed", failed: "Failed",
    cancelled: "Cancelled", expired: "Expired" }[status] || status || "Queued";
}

function renderAnalysis(m) {
  const running = !TERMINAL.has(m.status);
  const total = Math.max(m.steps.reduce((n, s) => Math.max(n, s.total || 0), 0), m.steps.length);
  const done = m.steps.filter((s) => s.status === "completed").length;
  const card = h("article.analysis", {
    testid: "analysis", dataset: { messageId: m.message_id, status: m.status || "pending" },
    class: `status-${m.status || "pending"}`,
  });
  card.append(h("header.analysis-head", {},
    h("span.badge", { testid: "analysis-status", class: `badge-${m.status || "pending"}` },
      running && m.status !== "pending" ? h("span.spinner", {}) : null, statusLabel(m.status)),
    total && running ? h("span.muted.small", {}, `Step ${Math.min(done + 1, total)} of ${total}`)
      : null,
    h("span.spacer"),
    running ? h("button.btn.btn-small", { testid: "cancel", onclick: () => cancel(m) }, "Cancel")
      : null,
    !running ? h("button.btn.btn-small", { testid: "retry", onclick: () => retry(m) }, "Retry")
      : null));

  if (m.status === "pending" && !m.steps.length) {
    card.append(h("p.muted.small.waiting", { testid: "waiting" }, "Waiting for a worker…"));
  }
  if (m.steps.length) card.append(renderSteps(m, running));
  if (m.error && m.status !== "completed") {
    card.append(h("div.alert.alert-error", { testid: "analysis-error", role: "alert" },
      m.error.message || String(m.error)));
  } else if (m.status === "cancelled") {
    card.append(h("div.alert", { testid: "analysis-cancelled" },
      m.summary || "The analysis was cancelled."));
  }
  const sentence = interpretation(m);
  if (sentence && (m.result || m.status === "completed")) {
    card.append(h("p.interpretation", { testid: "interpretation" }, sentence));
  }
  // A one-number answer leads with its card; drawn charts follow the table.
  const charts = m.charts || [];
  for (const chart of charts) if (chart.kind === "number") card.append(renderCards(chart));
  if (m.result) card.append(renderResult(m));
  if (m.chartTask) {
    card.append(h("div.chart-pending.muted.small", { testid: "chart-progress" },
      `Drawing the chart… ${Math.round(m.chartTask.progress || 0)}%`));
  }
  for (const chart of charts) {
    const svg = chart.kind !== "number" && chart.svg ? safeSvg(chart.svg) : null;
    if (!svg) continue;
    // The server-rendered chart carries its own title; keep it for screen readers too.
    card.append(h("figure.chart", { testid: "chart", dataset: { kind: chart.kind || "" },
      role: "img", "aria-label": chart.title || "chart" }, svg));
  }
  if (m.logs && m.logs.length) card.append(renderLogs(m, running));
  if (m.script && m.script.sql) {
    card.append(h("details.script", {},
      h("summary", {}, "SQL"), h("pre", {}, m.script.sql),
      m.script.explanation ? h("p.muted.small", {}, m.script.explanation) : null));
  }
  return card;
}

function renderSteps(m, running) {
  return h("ol.steps", { testid: "steps" }, ...m.steps.map((s) => {
    const progress = s.status === "completed" ? 100 : Math.max(0, Math.min(100, s.progress || 0));
    let right = "";
    if (s.status === "completed") right = fmtDuration(s.duration_ms);
    else if (s.status === "running" && running) right = eta(s);
    else if (s.status === "failed") right = "failed";
    return h("li.step", { testid: "step", dataset: { step: s.step, status: s.status } },
      h("span.step-icon", { class: `icon-${s.status}` }),
      h("div.step-body", {},
        h("div.step-line", {},
          h("span.step-name", {}, STEP_TITLES[s.step] || s.step),
          h("span.step-right", { testid: "step-eta" }, right)),
        s.status === "running" && running
          ? h("div.progress", { testid: "step-progress", role: "progressbar",
            "aria-valuenow": String(Math.round(progress)), "aria-valuemin": "0",
            "aria-valuemax": "100" }, h("div.progress-fill", { style: `width:${progress}%` }))
          : null,
        s.detail && s.status === "running" ? h("div.step-detail.muted.small", {}, s.detail) : null,
        s.error ? h("div.step-detail.error-text.small", {}, s.error) : null));
  }));
}

function eta(s) {
  if (!s.eta_ms) return s.progress ? `${Math.round(s.progress)}%` : "";
  const started = Date.parse(s.started_at || "");
  const elapsed = Number.isFinite(started) ? Date.now() - started : 0;
  const left = s.eta_ms - elapsed;
  return left > 500 ? `about ${fmtDuration(left)} left` : "finishing…";
}

function renderLogs(m, running) {
  const list = h("ol.logs", { testid: "logs" }, ...m.logs.map((l) =>
    h("li.log-line", { testid: "log-line", class: `log-${l.level || "info"}`,
      dataset: { seq: String(l.seq) } },
    l.at ? h("span.log-time", {}, fmtTime(l.at)) : null,
    h("span.log-text", {}, l.text))));
  const open = m.logsOpen ?? running;
  const box = h("details.log-box", { open: open || undefined },
    h("summary", { onclick: () => { m.logsOpen = !box.open; } }, `Log (${m.logs.length})`),
    list);
  if (running) queueMicrotask(() => { list.scrollTop = list.scrollHeight; });
  return box;
}

// The one sentence of what was computed: the result's copy, else the plan's.
function interpretation(m) {
  return (m.result && m.result.interpretation) || (m.script && m.script.interpretation) || "";
}

const NUMERIC_FORMATS = new Set(["integer", "decimal", "percent"]);

// A big-number card per measure of a one-row answer (chart kind "number"): the display
// form computed by the server, so the card, the table and the CSV agree on the number.
function renderCards(chart) {
  const spec = chart.spec || {};
  const context = (spec.context || []).map((c) => c.display).filter(Boolean).join(" · ");
  return h("section.number-cards", { testid: "number-card", "aria-label": chart.title || "" },
    context ? h("div.number-context.muted.small", {}, context) : null,
    h("div.number-row", {}, ...(spec.cards || []).map((c) =>
      h("div.number-card", { class: c.primary ? "primary" : "", dataset: { column: c.column } },
        h("div.number-value", { testid: "number-value" }, c.display),
        h("div.number-label.muted.small", {}, c.label)))));
}

function renderResult(m) {
  const r = m.result;
  const cols = r.columns || [];
  const raw = (r.rows || []).slice(0, MAX_TABLE_ROWS);
  // The server's display form when it sent one (rounded, dates at their grain, %), else
  // the raw values formatted here; the CSV download always has the raw values.
  const display = Array.isArray(r.display_rows) && r.display_rows.length === (r.rows || []).length
    ? r.display_rows.slice(0, MAX_TABLE_ROWS) : null;
  const formats = Array.isArray(r.formats) && r.formats.length === cols.length ? r.formats : null;
  const numeric = cols.map((c, i) => (formats ? NUMERIC_FORMATS.has(formats[i].kind)
    : /int|float|double|decimal|numeric|real|hugeint/i.test(c.type || "")));
  const rows = raw.map((row, i) => row.map((v, j) => (display && display[i] && j < display[i].length
    ? (display[i][j] ?? "—") : fmtCell(v))));
  const shown = rows.length;
  const count = r.row_count ?? (r.rows || []).length;
  return h("section.result", { testid: "result" },
    h("div.table-wrap", {},
      h("table.result-table", { testid: "result-table" },
        h("thead", {}, h("tr", {}, ...cols.map((c, i) =>
          h("th", { class: numeric[i] ? "num" : "", title: c.type || "" }, c.name)))),
        h("tbody", {}, ...rows.map((row, i) => h("tr", {}, ...row.map((text, j) =>
          h("td", { class: numeric[j] ? "num" : "", title: display ? rawTitle(raw[i][j]) : null },
            text))))))),
    h("div.result-foot", {},
      h("span.muted.small", { testid: "row-count" },
        `${count} row${count === 1 ? "" : "s"}`,
        shown < count ? ` · showing ${shown}` : "",
        r.truncated ? " · truncated" : ""),
      h("a.link", { href: "#", testid: "download-csv",
        onclick: (ev) => { ev.preventDefault(); downloadCsv(m); } }, "Download CSV")));
}

// The full-precision value, on hover, where the display form rounded it.
function rawTitle(value) {
  return typeof value === "number" ? String(value) : null;
}

// ---------------------------------------------------------------------------------------
// Composer: dataset upload and the question box

function renderComposer() {
  const view = state.view;
  if (!view || !shell.composer) return;
  const active = [...view.messages.values()].find((m) => m.role === "assistant"
    && !TERMINAL.has(m.status));
  const latest = view.datasets[view.datasets.length - 1];
  const file = h("input", { type: "file", testid: "dataset-input", accept: ".csv,.parquet,text/csv",
    class: "visually-hidden", id: "dataset-file", onchange: (ev) => upload(ev.target) });
  const question = shell.question || h("textarea.question", {
    testid: "question-input", rows: 2, placeholder: "Ask a question about your data…",
    onkeydown: (ev) => {
      if (ev.key === "Enter" && !ev.shiftKey) { ev.preventDefault(); ask(); }
    },
  });
  shell.question = question;
  const datasetInfo = latest
    ? h("span.dataset-chip", { testid: "dataset", dataset: { datasetId: latest.dataset_id } },
      h("span.dataset-name", {}, latest.name),
      h("span.muted", {}, ` · ${latest.row_count ?? "?"} rows`,
        latest.size_bytes ? ` · ${fmtBytes(latest.size_bytes)}` : ""))
    : h("span.muted.small", {}, "No dataset yet");
  shell.composer.replaceChildren(h("form.composer", { testid: "composer",
    onsubmit: (ev) => { ev.preventDefault(); ask(); } },
  h("div.composer-top", {},
    datasetInfo,
    h("label.btn.btn-small", { for: "dataset-file", testid: "upload-button" },
      state.uploading ? "Uploading…" : latest ? "Replace data" : "Upload CSV"),
    file,
    active ? h("span.muted.small.composer-status", {}, "An analysis is running…") : null),
  h("div.composer-row", {},
    question,
    h("button.btn.btn-primary", { type: "submit", testid: "ask",
      disabled: state.sending || undefined }, state.sending ? "Sending…" : "Ask"))));
}

async function upload(input) {
  const file = input.files && input.files[0];
  const sid = state.sid;
  if (!file || !sid) return;
  state.uploading = true;
  renderComposer();
  try {
    const ds = await api.upload(sid, file);
    if (state.view && state.sid === sid
      && !state.view.datasets.some((d) => d.dataset_id === ds.dataset_id)) {
      state.view.datasets.push(ds);
      if (!state.view.order.length) renderMessages();
    }
    setNotice("ok", `Uploaded ${ds.name}: ${ds.row_count} rows, ${ds.columns.length} columns.`);
  } catch (err) {
    setNotice("error", `Upload failed: ${err.message}`);
  } finally {
    state.uploading = false;
    renderComposer();
  }
}

async function ask() {
  const view = state.view;
  const text = shell.question ? shell.question.value.trim() : "";
  if (!view || !text || state.sending) return;
  const latest = view.datasets[view.datasets.length - 1];
  state.sending = true;
  renderComposer();
  try {
    const res = await api.ask(view.sid, text, latest && latest.dataset_id);
    shell.question.value = "";
    setNotice(null);
    if (state.view === view) addAnalysis(view, res.message_id, res.user_message_id, text,
      new Date().toISOString(), res.as_of_seq);
    refreshSessionsSoon();
  } catch (err) {
    if (err.status === 409) {
      setNotice("busy", "An analysis is already running in this session",
        err.body.active_message_id || err.details.active_message_id);
    } else {
      setNotice("error", `Could not start the analysis: ${err.message}`);
    }
  } finally {
    state.sending = false;
    renderComposer();
  }
}

async function cancel(m) {
  try {
    await api.cancel(m.message_id);
  } catch (err) {
    if (err.status !== 409) setNotice("error", `Could not cancel: ${err.message}`);
  }
}

async function retry(m) {
  try {
    const res = await api.retry(m.message_id);
    const view = state.view;
    if (view) addAnalysis(view, res.message_id, res.user_message_id, m.question,
      new Date().toISOString(), res.as_of_seq);
    setNotice(null);
  } catch (err) {
    if (err.status === 409 && err.code !== "not_an_analysis") {
      setNotice("busy", "An analysis is already running in this session",
        err.body.active_message_id || err.details.active_message_id);
    } else {
      setNotice("error", `Could not retry: ${err.message}`);
    }
  }
}

async function downloadCsv(m) {
  try {
    const res = await api.resultCsv(m.message_id);
    const url = URL.createObjectURL(await res.blob());
    const a = h("a", { href: url, download: "result.csv" });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  } catch (err) {
    setNotice("error", `Download failed: ${err.message}`);
  }
}

// ---------------------------------------------------------------------------------------
// Notices

function setNotice(kind, text = "", messageId = null) {
  state.notice = kind ? { kind, text, messageId } : null;
  renderNotice();
}

function renderNotice() {
  if (!shell.notice) return;
  const n = state.notice;
  if (!n) return shell.notice.replaceChildren();
  const goto = n.messageId ? h("a.link", { href: "#", testid: "goto-active",
    onclick: (ev) => { ev.preventDefault(); scrollToMessage(n.messageId); } },
  "Show the running analysis") : null;
  shell.notice.replaceChildren(h("div.notice", { testid: "notice", role: "alert",
    class: `notice-${n.kind}`, dataset: { kind: n.kind } },
  h("span", {}, n.text), goto,
  h("button.notice-close", { "aria-label": "Dismiss", onclick: () => setNotice(null) }, "×")));
}

function scrollToMessage(mid) {
  const el = shell.main.querySelector(`[data-message-id="${CSS.escape(mid)}"]`);
  if (!el) return;
  el.scrollIntoView({ behavior: "smooth", block: "center" });
  el.classList.add("flash");
  setTimeout(() => el.classList.remove("flash"), 1600);
}

// ETA labels count down while something runs.
setInterval(() => {
  const view = state.view;
  if (!view) return;
  for (const m of view.messages.values()) {
    if (m.role === "assistant" && !TERMINAL.has(m.status)
      && m.steps.some((s) => s.status === "running" && s.eta_ms)) renderMessageSoon(m.message_id);
  }
}, 1000);

// ---------------------------------------------------------------------------------------

if (auth.token) start();
else showSignIn();
