// Runstream web UI: sessions, live analyses, the run view, results and charts.
//
// State is loaded from read-model snapshots (each with `as_of_seq`) and kept current by
// the session's SSE stream opened at `after_seq=as_of_seq`: exactly what the snapshot
// lacks, no gap, no duplicate. A frame older than a message's own snapshot is skipped.

import { api, auth, devToken, setUnauthorizedHandler } from "./api.js";
import { fmtBytes, fmtCell, fmtRelative, fmtTime, h, safeSvg } from "./dom.js";
import { learn, serverNow } from "./eta.js";
import { exampleQuestions, typeLabel } from "./examples.js";
import { LiveStream } from "./live.js";
import { announce, liveRegion, notifications, notifySettled, setTitle } from "./notify.js";
import {
  RETRYABLE, TERMINAL, fillLogs, progressLine, renderCurrent, renderLogBox, renderRunHead,
  renderSql, renderTimeline, statusLabel, stepTitle,
} from "./run.js";

const POLL_MS = 5000;
const MAX_TABLE_ROWS = 200;
const NARROW = window.matchMedia("(max-width: 1099px)");
const REDUCED_MOTION = window.matchMedia("(prefers-reduced-motion: reduce)");
const LOCKED_REASON = "An analysis is running in this session. You can ask again when it "
  + "finishes, or cancel it.";

const state = {
  sessions: [],
  sid: null,
  view: null,          // the open session: {sid, order, messages: Map, datasets, asOf, selected}
  sessionStream: null,
  ownerStream: null,
  ownerState: "connecting",
  pollTimer: null,
  notice: null,        // {kind, text, messageId?}
  uploading: false,
  sending: false,
  signingIn: false,
  runOpen: false,      // the run view on a narrow screen (always shown on a wide one)
};

const app = document.getElementById("app");

// ---------------------------------------------------------------------------------------
// Sign-in

async function showSignIn(error = "") {
  closeStreams();
  setTitle(0);
  const offered = await devToken();
  const input = h("textarea.token-input", {
    testid: "token-input", rows: 4, spellcheck: false, autocomplete: "off",
    placeholder: "Paste an access token (runstream token --sub <owner>)",
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
      h("h1.brand.brand-lg", {}, h("span.brand-mark", { "aria-hidden": "true" }), "Runstream"),
      h("p.muted", {}, "Ask questions about your data and watch every step of the analysis live."),
      h("label.field-label", { for: "token" }, "Access token"),
      Object.assign(input, { id: "token" }),
      offered
        ? h("p.hint", { testid: "dev-token-hint" },
          "The development token from runstream up is filled in for you.")
        : h("p.hint", {}, "Get one with ", h("code", {}, "runstream token --sub <owner>"), "."),
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
  shell.main = h("main.main", { testid: "main", id: "main" });
  shell.notify = h("button.btn.btn-ghost", { type: "button", testid: "notify-toggle",
    onclick: toggleNotifications });
  app.replaceChildren(h("div.layout", {},
    h("a.skip-link", { href: "#main", onclick: (ev) => {
      ev.preventDefault();
      (shell.question || shell.main).focus();
    } }, "Skip to the conversation"),
    h("header.topbar", {},
      h("div.brand", {}, h("span.brand-mark", { "aria-hidden": "true" }), "Runstream"),
      h("div.topbar-right", {},
        shell.conn,
        shell.notify,
        h("button.btn.btn-ghost", { type: "button", testid: "sign-out", onclick: signOut },
          "Sign out"))),
    h("nav.sidebar", { "aria-label": "Sessions" },
      h("button.btn.btn-primary.btn-block", { type: "button", testid: "new-session",
        onclick: newSession }, "+ New session"),
      h("h2.sidebar-title", {}, "Sessions"),
      shell.sessions),
    shell.main,
    liveRegion()));
  renderConnection();
  renderNotifyToggle();
}

async function start() {
  renderShell();
  openOwnerStream();
  await refreshSessions();
  window.onhashchange = route;
  await route();
}

// ---------------------------------------------------------------------------------------
// Notifications and the tab title

function renderNotifyToggle() {
  const b = shell.notify;
  if (!b) return;
  const p = notifications.permission;
  b.hidden = p === "unsupported";
  b.disabled = p === "denied";
  b.dataset.state = notifications.on ? "on" : p === "denied" ? "blocked" : "off";
  b.setAttribute("aria-pressed", String(notifications.on));
  b.textContent = notifications.on ? "Notifications on" : p === "denied"
    ? "Notifications blocked" : "Notify me";
  b.title = notifications.on
    ? "You are told when an analysis finishes out of sight. Press to stop."
    : p === "denied" ? "Notifications are blocked in this browser's site settings"
      : "Be told when an analysis finishes while you look elsewhere";
}

async function toggleNotifications() {
  if (notifications.on) notifications.disable();
  else await notifications.enable();
  renderNotifyToggle();
  announce(notifications.on ? "Notifications on" : "Notifications off");
}

function unreadCount() {
  const here = document.visibilityState === "visible" ? state.sid : null;
  return state.sessions.filter((s) => s.has_notification && s.session_id !== here).length;
}

function renderTitle() {
  const s = state.sessions.find((x) => x.session_id === state.sid);
  setTitle(unreadCount(), s ? sessionTitle(s) : "");
}

// An analysis settled somewhere: a notification when it is not on screen.
async function onOwnerSettled(ev) {
  const onScreen = ev.session_id === state.sid && document.visibilityState === "visible";
  if (onScreen || !notifications.on) return;
  const s = state.sessions.find((x) => x.session_id === ev.session_id);
  let question = "";
  try {
    question = (await api.message(ev.message_id)).question || "";
  } catch { /* the title alone will do */ }
  notifySettled({ messageId: ev.message_id, status: ev.status,
    title: s ? sessionTitle(s) : "", question,
    onClick: () => { location.hash = `#/s/${ev.session_id}`; } });
}

document.addEventListener("visibilitychange", () => {
  renderTitle();
  if (document.visibilityState !== "visible" || !state.sid) return;
  const s = state.sessions.find((x) => x.session_id === state.sid);
  if (s && s.has_notification) markRead(state.sid);
});

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
  // The open session's heading follows its title (named, or its first question).
  const open = state.view && state.sessions.find((x) => x.session_id === state.view.sid);
  if (open && shell.heading && shell.heading.isConnected) shell.heading.textContent = sessionTitle(open);
}

let refreshTimer = null;
function refreshSessionsSoon() {
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(refreshSessions, 150);
}

// A session nobody named is titled by the projector with its first question; until
// then it is a new session.
function sessionTitle(s) {
  return s.title || "New session";
}

function renderSessions() {
  if (!shell.sessions) return;
  renderTitle();
  if (!state.sessions.length) {
    shell.sessions.replaceChildren(h("li.empty-hint", {}, "No sessions yet."));
    return;
  }
  const focused = document.activeElement && shell.sessions.contains(document.activeElement)
    ? document.activeElement.dataset.sessionId : null;
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
      analyzing ? h("span.analyzing-marker", { testid: "analyzing-marker", title: "Analyzing",
        "aria-hidden": "true" }) : null,
      unread ? h("span.unread-dot", { testid: "unread-dot", title: "New results" },
        h("span.visually-hidden", {}, "new results")) : null));
  }));
  if (focused) {
    const el = shell.sessions.querySelector(`[data-session-id="${CSS.escape(focused)}"]`);
    if (el) el.focus();
  }
}

function setSessionTitle(sid, title) {
  const s = state.sessions.find((x) => x.session_id === sid);
  if (s) s.title = title;
  renderSessions();
  if (state.view && state.view.sid === sid && shell.heading && shell.heading.isConnected) {
    shell.heading.textContent = title;
  }
}

// Rename in place: the heading becomes a field; Enter saves, Escape puts it back.
function startRename(sid) {
  const heading = shell.heading;
  if (!heading || !heading.isConnected) return;
  const input = h("input.rename-input", { type: "text", testid: "rename-input",
    "aria-label": "Session name", maxlength: "200", value: heading.textContent });
  let finished = false;  // once: putting the heading back blurs the field
  const done = (title) => {
    if (finished) return;
    finished = true;
    input.replaceWith(heading);
    if (title !== null) heading.textContent = title;
    heading.parentElement.querySelector('[data-testid="rename"]')?.focus();
  };
  input.addEventListener("keydown", async (e) => {
    if (e.key === "Escape") { e.preventDefault(); done(null); return; }
    if (e.key !== "Enter") return;
    e.preventDefault();
    const title = input.value.trim();
    if (!title) { done(null); return; }
    try {
      const session = await api.rename(sid, title);
      done(session.title);
      setSessionTitle(sid, session.title);
    } catch (err) {
      done(null);
      setNotice("error", `Could not rename the session: ${err.message}`);
    }
  });
  input.addEventListener("blur", () => done(null));
  heading.replaceWith(input);
  input.focus();
  input.select();
}

async function newSession() {
  try {
    const session = await api.createSession();
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
    onFrame: (type, data) => {
      if (type === "analysis_settled") onOwnerSettled(data);
      refreshSessionsSoon();
    },
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
  shell.conn.replaceChildren(h("span.conn-dot", { "aria-hidden": "true" }), label);
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
    h("h1", {}, "Start an analysis"),
    h("p.muted", {}, "Create a session, upload a CSV or Parquet file and ask a question about it."),
    h("button.btn.btn-primary", { type: "button", onclick: newSession }, "+ New session")));
}

function closeSession() {
  if (state.sessionStream) state.sessionStream.close();
  state.sessionStream = null;
  state.sid = null;
  state.view = null;
  state.runOpen = false;
  shell.question = null;
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
      h("h1", {}, err.status === 404 ? "Session not found" : "Could not load the session"),
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
  learn(status);
  const view = { sid, order: [], messages: new Map(), datasets: datasets.datasets || [],
    asOf: listing.as_of_seq, selected: null, ui: new Map() };
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
    view.selected = active.message_id;
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

// The clock and the step means again (a new analysis is about to need them).
async function refreshEstimates(sid) {
  try {
    learn(await api.analysisStatus(sid));
  } catch { /* the ones we have will do */ }
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
    addAnalysis(view, ev.message_id, ev.user_message_id, ev.question, ev.at, seq, ev.retry_of);
    refreshSessionsSoon();
    return;
  }
  if (type === "dataset_attached") {
    if (!view.datasets.some((d) => d.dataset_id === ev.dataset_id)) {
      view.datasets.push({ dataset_id: ev.dataset_id, name: ev.name, format: ev.format,
        row_count: ev.row_count, size_bytes: ev.size_bytes, columns: ev.columns,
        sample_rows: ev.sample_rows || [] });
      renderComposer();
      if (!view.order.length) renderMessages();  // the empty state shows the columns
    }
    return;
  }
  if (type === "session_read") return;
  if (type === "session_renamed") {
    setSessionTitle(view.sid, ev.title);
    return;
  }
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
        expected_ms: ev.eta_ms ?? null, started_at: ev.at, ended_at: null, error: null,
        attempt: ev.attempt });
      m.steps.sort((a, b) => (a.idx || 0) - (b.idx || 0));
      if (!TERMINAL.has(m.status)) {
        m.status = "running";
        announce(`${stepTitle(ev.step)}: step ${ev.index} of ${ev.total}`);
      }
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
        ended_at: ev.at, duration_ms: ev.duration_ms });
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
        if (ev.svg) m.revealChart = true;  // brought into view once drawn
      }
      break;
    }
    case "chart_failed":
    case "chart_cancelled":
      m.chartTask = null;
      break;
    case "analysis_settled": {
      const was = m.status;
      m.status = ev.status;
      if (ev.error) m.error = ev.error;
      if (ev.summary) m.summary = ev.summary;
      for (const s of m.steps) {
        if (s.status === "running") {
          Object.assign(s, { status: ev.status === "completed" ? "completed" : "cancelled",
            ended_at: s.ended_at || ev.at });
        }
      }
      if (!TERMINAL.has(was)) announceSettled(m);
      settle(m, seq);
      break;
    }
    default:
      return;
  }
  if (type === "log_appended" || type === "step_progressed") renderRunSoon(mid);
  else renderMessageSoon(mid);
}

function announceSettled(m) {
  const free = activeAnalysis(state.view) ? "" : " You can ask a new question.";
  announce(`Analysis ${statusLabel(m.status).toLowerCase()}.${free}`);
}

function addAnalysis(view, mid, umid, question, at, seq, retryOf = null) {
  let added = false;
  if (!view.messages.has(umid)) {
    view.order.push(umid);
    view.messages.set(umid, { message_id: umid, role: "user", content: question,
      created_at: at, status: "completed", asOf: seq });
  }
  if (!view.messages.has(mid)) {
    view.order.push(mid);
    view.messages.set(mid, { message_id: mid, role: "assistant", question, status: "pending",
      created_at: at, steps: [], logs: [], charts: [], asOf: seq, detailed: true,
      retry_of: retryOf });
    view.selected = mid;  // the run view follows the newest analysis
    added = true;
    refreshEstimates(view.sid);
  }
  if (added) {
    renderMessages();
    renderRun();
    renderComposer();
    renderNotice();
  }
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

/** The analysis holding the session's lock, as this page knows it. */
function activeAnalysis(view) {
  if (!view) return null;
  for (const id of view.order) {
    const m = view.messages.get(id);
    if (m && m.role === "assistant" && !TERMINAL.has(m.status)) return m;
  }
  return null;
}

// ---------------------------------------------------------------------------------------
// Rendering the session

const dirty = new Set();      // cards to rebuild (and their run view)
const dirtyRun = new Set();   // run views only (a log line, a progress tick)
let flushTimer = null;

function renderMessageSoon(mid) {
  dirty.add(mid);
  if (!flushTimer) flushTimer = setTimeout(flushMessages, 16);
}

function renderRunSoon(mid) {
  dirtyRun.add(mid);
  if (!flushTimer) flushTimer = setTimeout(flushMessages, 16);
}

/** Replace `old` by `neu`, keeping the keyboard focus on the same control. */
function swapKeepingFocus(old, neu) {
  const active = document.activeElement;
  const key = active && old.contains(active) ? active.closest("[data-fk]")?.dataset.fk : null;
  old.replaceWith(neu);
  if (!key) return;
  (findFocusable(neu, key) || neu).focus({ preventScroll: true });
}

// The control with this key, or the one that took its place (Retry for a Cancel).
function findFocusable(root, key) {
  const k = CSS.escape(key);
  return root.querySelector(`[data-fk="${k}"]:not([disabled]), [data-fk-alt="${k}"]:not([disabled])`);
}

function flushMessages() {
  flushTimer = null;
  const view = state.view;
  if (!view) {
    dirtyRun.clear();
    return dirty.clear();
  }
  let reveal = null;
  for (const mid of dirty) {
    const m = view.messages.get(mid);
    const old = shell.messages && shell.messages.querySelector(
      `[data-message-id="${CSS.escape(mid)}"]`);
    if (m && old) {
      swapKeepingFocus(old, renderMessage(m));
      if (m.revealChart) {
        m.revealChart = false;
        reveal = mid;
      }
    }
  }
  const runDirty = view.selected && (dirty.has(view.selected) || dirtyRun.has(view.selected));
  dirty.clear();
  dirtyRun.clear();
  if (runDirty) updateRun();
  renderComposer();
  renderNotice();
  if (reveal) revealChart(reveal);
  else scrollToBottomIfNear();
}

// A chart that arrives is brought into view, unless the reader is elsewhere in the list.
function revealChart(mid) {
  const card = shell.messages.querySelector(`[data-message-id="${CSS.escape(mid)}"]`);
  const chart = card && card.querySelector("[data-testid=chart]");
  if (!chart) return;
  const box = shell.messages.getBoundingClientRect();
  const c = card.getBoundingClientRect();
  const cardOnScreen = c.bottom > box.top && c.top < box.bottom;
  if (!cardOnScreen && !isLastAnalysis(mid)) return;
  chart.scrollIntoView({ block: "nearest", behavior: REDUCED_MOTION.matches ? "auto" : "smooth" });
}

function isLastAnalysis(mid) {
  const view = state.view;
  const last = [...view.order].reverse().find((id) => view.messages.get(id)?.role === "assistant");
  return last === mid;
}

function renderSession() {
  const view = state.view;
  const s = state.sessions.find((x) => x.session_id === view.sid);
  shell.messages = h("section.messages", { testid: "messages", "aria-label": "Conversation" });
  shell.composer = h("div.composer-wrap");
  shell.notice = h("div.notice-slot");
  shell.run = h("aside.run-view", { testid: "run-view", id: "run-view",
    "aria-labelledby": "run-title" });
  shell.runToggle = h("button.btn.btn-small.run-toggle", { type: "button", testid: "run-toggle",
    "aria-controls": "run-view", onclick: () => setRunOpen(!state.runOpen) }, "Run details");
  const draft = shell.question ? shell.question.value : "";  // a reset keeps the draft
  shell.question = null;
  shell.main.replaceChildren(
    h("div.session-header", {},
      shell.heading = h("h1.session-heading", { testid: "session-title" },
        s ? sessionTitle(s) : "Session"),
      h("button.btn.btn-small.rename", { type: "button", testid: "rename",
        "aria-label": "Rename this session", onclick: () => startRename(view.sid) }, "Rename"),
      h("span.muted.small.session-id", { testid: "session-id" }, view.sid),
      h("span.spacer"),
      shell.runToggle),
    h("div.session-body", {},
      h("div.chat", {}, shell.messages, shell.notice, shell.composer),
      shell.run));
  buildComposer();
  shell.question.value = draft;
  renderMessages();
  renderRun();
  renderComposer();
  renderNotice();
  renderTitle();
  shell.messages.scrollTop = shell.messages.scrollHeight;
}

function renderMessages() {
  const view = state.view;
  if (!view || !shell.messages) return;
  const items = view.order.map((id) => view.messages.get(id)).filter(Boolean).map(renderMessage);
  if (!items.length) items.push(renderFirstQuestion(view));
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

// The empty session: the data's columns and questions that work on it.
function renderFirstQuestion(view) {
  const latest = view.datasets[view.datasets.length - 1];
  if (!latest) {
    return h("div.empty.empty-inline", { testid: "no-messages" },
      h("h2", {}, "Ask your first question"),
      h("p.muted", {}, "Upload a CSV or Parquet file below, then ask a question about it."));
  }
  const columns = latest.columns || [];
  const examples = exampleQuestions(columns, latest.sample_rows || []);
  return h("section.first-question", { testid: "no-messages", "aria-labelledby": "first-q" },
    h("h2", { id: "first-q" }, "Ask your first question"),
    h("p.muted", {}, `${latest.name} has ${latest.row_count ?? "?"} rows and `
      + `${columns.length} column${columns.length === 1 ? "" : "s"}.`),
    h("div.first-grid", {},
      h("div", {},
        h("h3.subhead", {}, "Try one of these"),
        h("ul.examples", { testid: "examples" }, ...examples.map((q) => h("li", {},
          h("button.btn.example", { type: "button", testid: "example-question",
            dataset: { fk: `example:${q}` }, onclick: () => askQuestion(q) }, q))))),
      h("div", {},
        h("h3.subhead", { id: "columns-title" }, "Columns"),
        h("table.columns-table", { testid: "dataset-columns", "aria-labelledby": "columns-title" },
          h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Name"),
            h("th", { scope: "col" }, "Type"))),
          h("tbody", {}, ...columns.map((c) => h("tr", { testid: "dataset-column" },
            h("td", {}, h("code", {}, c.name)),
            h("td", { title: c.type }, typeLabel(c.type)))))))));
}

function renderMessage(m) {
  if (m.role === "user") {
    return h("div.msg.msg-user", { testid: "user-message", dataset: { messageId: m.message_id } },
      h("div.bubble", {}, m.content || m.question || ""),
      h("div.msg-time", {}, fmtTime(m.created_at)));
  }
  return renderAnalysis(m);
}

function renderAnalysis(m) {
  const running = !TERMINAL.has(m.status);
  const locked = Boolean(activeAnalysis(state.view));
  const selected = state.view && state.view.selected === m.message_id;
  const card = h("article.analysis", {
    testid: "analysis", tabindex: "-1", "aria-label": `Analysis: ${m.question || ""}`,
    dataset: { messageId: m.message_id, status: m.status || "pending",
      selected: String(Boolean(selected)) },
    class: `status-${m.status || "pending"}${selected ? " selected" : ""}`,
  });
  const line = running ? progressLine(m) : "";
  card.append(h("header.analysis-head", {},
    h("span.badge", { testid: "analysis-status", class: `badge-${m.status || "pending"}` },
      running && m.status !== "pending" ? h("span.spinner", { "aria-hidden": "true" }) : null,
      statusLabel(m.status)),
    line ? h("span.muted.small.card-progress", { testid: "card-progress" }, line) : null,
    h("span.spacer"),
    h("button.btn.btn-small.btn-ghost", { type: "button", testid: "show-run",
      dataset: { fk: `show-run:${m.message_id}` }, "aria-controls": "run-view",
      "aria-pressed": String(Boolean(selected)), onclick: () => selectRun(m.message_id, true) },
    "Run details"),
    running ? h("button.btn.btn-small", { type: "button", testid: "cancel",
      dataset: { fk: `cancel:${m.message_id}` }, onclick: () => cancel(m) }, "Cancel") : null,
    RETRYABLE.has(m.status) ? h("button.btn.btn-small", { type: "button", testid: "retry",
      dataset: { fk: `retry:${m.message_id}`, fkAlt: `cancel:${m.message_id}` },
      disabled: locked || undefined,
      title: locked ? "An analysis is running in this session" : null,
      onclick: () => retry(m) }, "Retry") : null));

  if (m.status === "pending" && !m.steps.length) {
    card.append(h("p.muted.small.waiting", { testid: "waiting" }, "Waiting for a worker…"));
  }
  if (running && m.steps.some((s) => s.status === "running")) {
    const done = m.steps.filter((s) => s.status === "completed").length;
    card.append(h("div.progress.progress-thin", { "aria-hidden": "true" },
      h("div.progress-fill", { style: `width:${Math.round((done / 5) * 100)}%` })));
  }
  // The error is said once, here, in the answer (the run view marks the step failed).
  if (m.error && m.status !== "completed") card.append(renderError(m));
  else if (m.status === "cancelled") {
    card.append(h("div.alert", { testid: "analysis-cancelled" },
      "The analysis was cancelled."));
  } else if (m.status === "expired") {
    card.append(h("div.alert.alert-error", { testid: "analysis-error" },
      "The analysis stopped: it held the session longer than allowed."));
  }
  const sentence = interpretation(m);
  if (sentence && (m.result || m.status === "completed")) {
    card.append(h("p.interpretation", { testid: "interpretation" }, sentence));
  }
  // A one-number answer leads with its card; drawn charts follow the table.
  const charts = m.charts || [];
  for (const chart of charts) if (chart.kind === "number") card.append(renderCards(chart, m));
  if (m.result) card.append(renderResult(m));
  if (m.chartTask) {
    card.append(h("div.chart-pending.muted.small", { testid: "chart-progress" },
      `Drawing the chart… ${Math.round(m.chartTask.progress || 0)}%`));
  }
  for (const chart of charts) {
    const svg = chart.kind !== "number" && chart.svg ? safeSvg(chart.svg) : null;
    if (!svg) continue;
    svg.setAttribute("aria-hidden", "true");
    // The server-rendered chart carries its own title; keep it for screen readers too.
    card.append(h("figure.chart", { testid: "chart", dataset: { kind: chart.kind || "" },
      role: "img", "aria-label": chart.title || "chart" }, svg));
  }
  return card;
}

// A refusal names the questions that work on the table: offer them as buttons.
const WORKS = /\s*Questions that work on this table: (.+?)\.?\s*$/s;

function renderError(m) {
  const text = (m.error && (m.error.message || String(m.error))) || "The analysis failed.";
  const found = WORKS.exec(text);
  const examples = found ? [...found[1].matchAll(/'([^']+)'/g)].map((x) => x[1]) : [];
  const main = examples.length ? text.slice(0, found.index) : text;
  return h("div.alert.alert-error", { testid: "analysis-error", role: "alert" },
    h("p.error-text-main", {}, main),
    examples.length ? h("div.refusal-examples", {},
      h("span.small", {}, "Questions that work on this table:"),
      h("ul.examples.examples-inline", {}, ...examples.map((q) => h("li", {},
        h("button.btn.btn-small.example", { type: "button", testid: "refusal-example",
          dataset: { fk: `refusal:${m.message_id}:${q}` },
          onclick: () => askQuestion(q) }, q))))) : null);
}

// The one sentence of what was computed: the result's copy, else the plan's.
function interpretation(m) {
  return (m.result && m.result.interpretation) || (m.script && m.script.interpretation) || "";
}

const NUMERIC_FORMATS = new Set(["integer", "decimal", "percent"]);

// A big-number card per measure of a one-row answer (chart kind "number"): the display
// form computed by the server, so the card, the table and the CSV agree on the number.
function renderCards(chart, m) {
  const spec = chart.spec || {};
  const context = (spec.context || []).map((c) => c.display).filter(Boolean).join(" · ");
  return h("section.number-cards", { testid: "number-card",
    "aria-label": `Answer: ${m.question || chart.title || ""}` },
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
  return h("section.result", { testid: "result", "aria-label": `Result: ${m.question || ""}` },
    h("div.table-wrap", { tabindex: "0", role: "region",
      "aria-label": `Result table: ${m.question || ""}` },
      h("table.result-table", { testid: "result-table" },
        h("thead", {}, h("tr", {}, ...cols.map((c, i) =>
          h("th", { scope: "col", class: numeric[i] ? "num" : "", title: c.type || "" }, c.name)))),
        h("tbody", {}, ...rows.map((row, i) => h("tr", {}, ...row.map((text, j) =>
          h("td", { class: numeric[j] ? "num" : "", title: display ? rawTitle(raw[i][j]) : null },
            text))))))),
    h("div.result-foot", {},
      h("span.muted.small", { testid: "row-count" },
        `${count} row${count === 1 ? "" : "s"}`,
        shown < count ? ` · showing ${shown}` : "",
        r.truncated ? " · truncated" : ""),
      h("button.btn.btn-small.btn-link", { type: "button", testid: "download-csv",
        dataset: { fk: `csv:${m.message_id}` }, onclick: () => downloadCsv(m) },
      "Download CSV")));
}

// The full-precision value, on hover, where the display form rounded it.
function rawTitle(value) {
  return typeof value === "number" ? String(value) : null;
}

// ---------------------------------------------------------------------------------------
// The run view

function runUi(mid) {
  const view = state.view;
  if (!view.ui.has(mid)) {
    view.ui.set(mid, { level: "all", follow: true, sqlOpen: false, scrollTop: 0, copied: false });
  }
  return view.ui.get(mid);
}

/** The earlier attempts of a retried analysis, oldest first. */
function attemptsBefore(m) {
  const view = state.view;
  const chain = [];
  let prev = m.retry_of && view.messages.get(m.retry_of);
  while (prev && chain.length < 10) {
    chain.unshift(prev);
    prev = prev.retry_of && view.messages.get(prev.retry_of);
  }
  return chain;
}

function selectedAnalysis() {
  const view = state.view;
  if (!view) return null;
  let m = view.selected && view.messages.get(view.selected);
  if (!m) {
    const last = [...view.order].reverse().map((id) => view.messages.get(id))
      .find((x) => x && x.role === "assistant");
    m = last || null;
    view.selected = m ? m.message_id : null;
  }
  return m;
}

async function selectRun(mid, fromUser = false) {
  const view = state.view;
  if (!view) return;
  const changed = view.selected !== mid;
  view.selected = mid;
  const m = view.messages.get(mid);
  if (changed) {
    renderRun();
    for (const id of view.order) {
      const x = view.messages.get(id);
      if (x && x.role === "assistant") renderMessageSoon(id);
    }
  }
  if (fromUser) {
    if (NARROW.matches) setRunOpen(true);
    else if (shell.runTitle) shell.runTitle.focus();
  }
  if (m && !m.detailed) {
    try {
      mergeDetail(view, await api.message(mid));
      if (state.view === view) renderMessageSoon(mid);
    } catch { /* shown as far as known */ }
  }
}

function setRunOpen(open) {
  state.runOpen = open;
  if (!shell.run) return;
  shell.run.classList.toggle("open", open);
  shell.runToggle.setAttribute("aria-expanded", String(open));
  if (NARROW.matches) {
    if (open && shell.runTitle) shell.runTitle.focus();
    else if (!open) shell.runToggle.focus();
  }
}

document.addEventListener("keydown", (ev) => {
  if (ev.key === "Escape" && state.runOpen && NARROW.matches) setRunOpen(false);
});

/** Build the run view for the selected analysis (on a change of selection). */
function renderRun() {
  if (!shell.run) return;
  const m = selectedAnalysis();
  if (!m) {
    shell.runTitle = h("h2.run-title", { id: "run-title", tabindex: "-1" }, "Run");
    shell.run.replaceChildren(h("div.run-empty", {}, shell.runTitle,
      h("p.muted.small", {}, "Each step of an analysis shows here as it runs: a timeline, "
        + "the time left, the SQL and the log.")));
    shell.runParts = null;
    return;
  }
  shell.run.dataset.messageId = m.message_id;
  const ui = runUi(m.message_id);
  const log = renderLogBox(ui, () => updateRun());
  shell.runParts = { mid: m.message_id, head: h("div"), timeline: h("div"), current: h("div"),
    sql: h("div"), sqlKey: null, log };
  shell.run.replaceChildren(shell.runParts.head, shell.runParts.timeline, shell.runParts.current,
    shell.runParts.sql, log.box);
  shell.runToggle.setAttribute("aria-expanded", String(state.runOpen));
  shell.run.classList.toggle("open", state.runOpen);
  updateRun();
}

/** Bring the run view up to date with its analysis (every frame, and every second). */
function updateRun() {
  const parts = shell.runParts;
  const m = selectedAnalysis();
  if (!parts || !m || parts.mid !== m.message_id) return renderRun();
  const running = !TERMINAL.has(m.status);
  const chain = attemptsBefore(m);
  const ui = runUi(m.message_id);
  const locked = Boolean(activeAnalysis(state.view));
  shell.run.dataset.status = m.status || "pending";
  const head = renderRunHead(m, { chain, locked, closable: NARROW.matches,
    actions: { cancel, retry, close: () => setRunOpen(false) } });
  // Rebuilt only when a control changes; the time left is updated in place, so a focused
  // Cancel is not re-announced every second.
  const headKey = `${m.status}|${locked}|${chain.length}|${NARROW.matches}|${m.question}`;
  if (parts.headKey !== headKey) {
    parts.headKey = headKey;
    replaceKeepingFocus(parts.head, head);
    shell.runTitle = parts.head.querySelector(".run-title");
  } else {
    const eta = parts.head.querySelector("[data-testid=run-eta]");
    const fresh = head.querySelector("[data-testid=run-eta]");
    if (eta && fresh) eta.replaceWith(fresh);
  }
  parts.timeline.replaceChildren(renderTimeline(m, running));
  const current = renderCurrent(m, running);
  parts.current.replaceChildren(...(current ? [current] : []));
  const sqlKey = `${m.script && m.script.sql}|${ui.copied}`;
  if (parts.sqlKey !== sqlKey) {
    parts.sqlKey = sqlKey;
    const sql = renderSql(m, ui, { copySql });
    replaceKeepingFocus(parts.sql, sql);
  }
  fillLogs(parts.log.list, parts.log.title, m, chain, ui);
}

function replaceKeepingFocus(slot, child) {
  const active = document.activeElement;
  const key = active && slot.contains(active) ? active.closest("[data-fk]")?.dataset.fk : null;
  slot.replaceChildren(...(child ? [child] : []));
  if (!key) return;
  const again = findFocusable(slot, key);
  if (again) again.focus({ preventScroll: true });
  else if (shell.runTitle) shell.runTitle.focus({ preventScroll: true });
}

async function copySql(sql, button) {
  const m = selectedAnalysis();
  const ui = m && runUi(m.message_id);
  let ok = false;
  try {
    await navigator.clipboard.writeText(sql);
    ok = true;
  } catch {
    // No clipboard permission (an http origin): select the text so Ctrl+C copies it.
    const pre = button.closest(".sql").querySelector("pre");
    const range = document.createRange();
    range.selectNodeContents(pre);
    const sel = window.getSelection();
    sel.removeAllRanges();
    sel.addRange(range);
  }
  announce(ok ? "SQL copied" : "SQL selected: press Ctrl+C to copy it");
  if (ok && ui) {
    ui.copied = true;
    updateRun();
    setTimeout(() => { ui.copied = false; if (shell.runParts) updateRun(); }, 2000);
  }
}

// ---------------------------------------------------------------------------------------
// Composer: dataset upload and the question box

function buildComposer() {
  const file = h("input", { type: "file", testid: "dataset-input", accept: ".csv,.parquet,text/csv",
    class: "visually-hidden", id: "dataset-file", tabindex: "-1",
    "aria-label": "A CSV or Parquet file to ask about",
    onchange: (ev) => upload(ev.target) });
  shell.question = h("textarea.question", {
    testid: "question-input", rows: 2, id: "question", placeholder: "Ask a question about your data…",
    "aria-describedby": "composer-reason",
    onkeydown: (ev) => {
      if (ev.key === "Enter" && !ev.shiftKey) { ev.preventDefault(); ask(); }
    },
  });
  shell.datasetInfo = h("span.dataset-slot");
  shell.uploadLabel = h("button.btn.btn-small", { type: "button", testid: "upload-button",
    onclick: () => file.click() }, "Upload CSV");
  shell.reason = h("p.composer-reason.small", { id: "composer-reason", testid: "composer-reason" });
  shell.ask = h("button.btn.btn-primary", { type: "submit", testid: "ask" }, "Ask");
  shell.form = h("form.composer", { testid: "composer", "aria-label": "Ask a question",
    onsubmit: (ev) => { ev.preventDefault(); ask(); } },
  h("div.composer-top", {}, shell.datasetInfo, shell.uploadLabel, file),
  h("div.composer-row", {},
    h("label.visually-hidden", { for: "question" }, "Question"),
    shell.question, shell.ask),
  shell.reason);
  shell.composer.replaceChildren(shell.form);
}

/** Update the composer in place (never rebuilt: typing and focus are never disturbed). */
function renderComposer() {
  const view = state.view;
  if (!view || !shell.form) return;
  const active = activeAnalysis(view);
  const latest = view.datasets[view.datasets.length - 1];
  const locked = Boolean(active);
  const key = latest ? `${latest.dataset_id}` : "";
  if (shell.datasetInfo.dataset.key !== key) {
    shell.datasetInfo.dataset.key = key;
    shell.datasetInfo.replaceChildren(latest
      ? h("span.dataset-chip", { testid: "dataset", dataset: { datasetId: latest.dataset_id },
        title: (latest.columns || []).map((c) => `${c.name} (${typeLabel(c.type)})`).join(", ") },
      h("span.dataset-name", {}, latest.name),
      h("span.muted", {}, ` · ${latest.row_count ?? "?"} rows`,
        latest.size_bytes ? ` · ${fmtBytes(latest.size_bytes)}` : ""))
      : h("span.muted.small", {}, "No dataset yet"));
  }
  shell.uploadLabel.textContent = state.uploading ? "Uploading…" : latest ? "Replace data" : "Upload CSV";
  shell.form.dataset.locked = String(locked);
  shell.form.setAttribute("aria-busy", String(state.sending));
  const disabled = locked || state.sending;
  if (shell.ask.disabled !== disabled) shell.ask.disabled = disabled;
  shell.ask.textContent = state.sending ? "Sending…" : "Ask";
  const reason = locked ? LOCKED_REASON : "";
  if (shell.reason.dataset.text !== reason) {
    shell.reason.dataset.text = reason;
    shell.reason.replaceChildren(...(locked ? [reason, " ",
      h("button.btn-link.small", { type: "button", testid: "goto-active-inline",
        onclick: () => scrollToMessage(active.message_id) }, "Show it")] : []));
  }
  shell.reason.hidden = !locked;
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
    input.value = "";
    renderComposer();
  }
}

function askQuestion(text) {
  if (!shell.question) return;
  shell.question.value = text;
  ask();
}

async function ask() {
  const view = state.view;
  const text = shell.question ? shell.question.value.trim() : "";
  if (!view || !text || state.sending) return;
  if (activeAnalysis(view)) {
    announce(LOCKED_REASON);
    return;
  }
  const latest = view.datasets[view.datasets.length - 1];
  state.sending = true;
  renderComposer();
  try {
    const res = await api.ask(view.sid, text, latest && latest.dataset_id);
    shell.question.value = "";
    setNotice(null);
    if (state.view === view) addAnalysis(view, res.message_id, res.user_message_id, text,
      new Date().toISOString(), res.as_of_seq);
    announce("Question sent. The analysis is queued.");
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
    // Focus stays in (or comes back to) the question box, ready for the next question.
    if (state.view === view && shell.question) shell.question.focus();
  }
}

async function cancel(m) {
  try {
    await api.cancel(m.message_id);
  } catch (err) {
    if (err.status !== 409) {
      setNotice("error", `Could not cancel: ${err.message}`);
      return;
    }
  }
  // The gateway settled it `cancelled` before answering: the session is free now.
  if (!TERMINAL.has(m.status)) {
    m.status = "cancelled";
    const now = new Date(serverNow()).toISOString();
    for (const s of m.steps) {
      if (s.status === "running") Object.assign(s, { status: "cancelled", ended_at: now });
    }
  }
  refreshSessionsSoon();
  announceSettled(m);
  renderMessageSoon(m.message_id);
  // The Cancel button goes; its Retry takes the focus (swapKeepingFocus), else the question.
  setTimeout(() => {
    if (!document.activeElement || document.activeElement === document.body) {
      if (shell.question) shell.question.focus();
    }
  }, 50);
}

async function retry(m) {
  try {
    const res = await api.retry(m.message_id);
    const view = state.view;
    if (view) addAnalysis(view, res.message_id, res.user_message_id, m.question,
      new Date().toISOString(), res.as_of_seq, m.message_id);
    setNotice(null);
    announce("Retrying the analysis.");
    const card = shell.messages && shell.messages.querySelector(
      `[data-message-id="${CSS.escape(res.message_id)}"]`);
    if (card) card.focus();
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
  // "Already running" is true only while it runs: it goes when the lock does.
  if (state.notice && state.notice.kind === "busy" && !activeAnalysis(state.view)) {
    state.notice = null;
  }
  const n = state.notice;
  const key = n ? `${n.kind}|${n.text}|${n.messageId}` : "";
  if (shell.notice.dataset.key === key) return;
  shell.notice.dataset.key = key;
  if (!n) return shell.notice.replaceChildren();
  const goto = n.messageId ? h("button.btn-link", { type: "button", testid: "goto-active",
    onclick: () => scrollToMessage(n.messageId) }, "Show the running analysis") : null;
  shell.notice.replaceChildren(h("div.notice", { testid: "notice",
    role: n.kind === "error" || n.kind === "busy" ? "alert" : "status",
    class: `notice-${n.kind}`, dataset: { kind: n.kind } },
  h("span", {}, n.text), goto,
  h("button.notice-close", { type: "button", "aria-label": "Dismiss",
    onclick: () => setNotice(null) }, "×")));
}

function scrollToMessage(mid) {
  const el = shell.main.querySelector(`.messages [data-message-id="${CSS.escape(mid)}"]`);
  if (!el) return;
  el.scrollIntoView({ behavior: REDUCED_MOTION.matches ? "auto" : "smooth", block: "center" });
  el.focus({ preventScroll: true });
  el.classList.add("flash");
  setTimeout(() => el.classList.remove("flash"), 1600);
  selectRun(mid);
}

// Times count on while something runs: the ETAs and the timeline's growing bar.
setInterval(() => {
  const view = state.view;
  if (!view) return;
  const active = activeAnalysis(view);
  if (!active || !active.steps.some((s) => s.status === "running")) return;
  if (view.selected === active.message_id) updateRun();
  // The card's one line of progress, in place (the card itself is not rebuilt each second).
  const line = shell.messages && shell.messages.querySelector(
    `[data-message-id="${CSS.escape(active.message_id)}"] [data-testid=card-progress]`);
  if (line) line.textContent = progressLine(active);
}, 1000);

NARROW.addEventListener("change", () => { if (state.view) renderRun(); });

// ---------------------------------------------------------------------------------------

if (auth.token) start();
else showSignIn();
