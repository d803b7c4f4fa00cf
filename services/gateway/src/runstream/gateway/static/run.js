// The run view: one analysis as it runs — a timeline of its steps, the current step's
// progress and time left, the SQL that ran, and its log (level filter, follow/pause,
// separators between attempts).

import { fmtDuration, fmtTime, h } from "./dom.js";
import { PIPELINE, analysisLeft, estimate, leftText, serverNow, timing } from "./eta.js";

export const TERMINAL = new Set(["completed", "failed", "cancelled", "expired"]);
export const RETRYABLE = new Set(["failed", "cancelled", "expired"]);
export const STEP_TITLES = {
  context: "Reading the session and the dataset",
  plan: "Planning the query",
  script: "Writing the script",
  execute: "Running the query",
  chart: "Drawing the chart",
};
// Short names for the timeline's rows (the full title is in the current-step box).
const SHORT_TITLES = {
  context: "Read data", plan: "Plan", script: "Write SQL", execute: "Run query", chart: "Draw chart",
};
const LEVELS = {
  all: { text: "All levels", keep: () => true },
  warning: { text: "Warnings and errors", keep: (l) => l.level === "warning" || l.level === "error" },
  error: { text: "Errors only", keep: (l) => l.level === "error" },
};
// A worker's own retry of a step says so in its warning ("... (attempt 2 of 5)").
const DELIVERY_RETRY = /\(attempt (\d+) of (\d+)\)\s*$/;

export function statusLabel(status) {
  return { pending: "Queued", running: "Running", completed: "Completed", failed: "Failed",
    cancelled: "Cancelled", expired: "Expired" }[status] || status || "Queued";
}

export function stepTitle(name) {
  return STEP_TITLES[name] || name;
}

/** The steps in pipeline order, with a placeholder for each one not started yet. */
export function allSteps(m) {
  const have = new Map((m.steps || []).map((s) => [s.step, s]));
  const names = [...PIPELINE, ...[...have.keys()].filter((n) => !PIPELINE.includes(n))];
  return names.map((name, i) => have.get(name) || { step: name, idx: i + 1, status: "pending",
    progress: 0, placeholder: true });
}

export function currentStep(m) {
  return (m.steps || []).find((s) => s.status === "running") || null;
}

/** "Step 4 of 5 · Running the query · about 3 s left" for a running analysis. */
export function progressLine(m) {
  const cur = currentStep(m);
  if (!cur) return "";
  const total = Math.max(cur.total || 0, PIPELINE.length);
  const idx = cur.idx || PIPELINE.indexOf(cur.step) + 1;
  const left = analysisLeft(m.steps || []);
  const eta = left !== null ? leftText(left) : "";
  return [`Step ${idx} of ${total}`, stepTitle(cur.step), eta].filter(Boolean).join(" · ");
}

/** The run view's head: status, time left or taken, Cancel or Retry. */
export function renderRunHead(m, { chain = [], locked, actions, closable }) {
  const running = !TERMINAL.has(m.status);
  const attempt = chain.length + 1;
  return h("header.run-head", {},
    h("div.run-title-row", {},
      h("h2.run-title", { id: "run-title", tabindex: "-1" }, "Run"),
      h("span.badge", { testid: "run-status", class: `badge-${m.status || "pending"}` },
        statusLabel(m.status)),
      attempt > 1 ? h("span.muted.small", { testid: "run-attempt" }, `attempt ${attempt}`) : null,
      h("span.spacer"),
      closable ? h("button.btn.btn-small.btn-ghost", { type: "button", testid: "run-close",
        onclick: actions.close, dataset: { fk: "run-close" } }, "Close") : null),
    h("p.run-question", { title: m.question || "" }, m.question || ""),
    h("div.run-meta", {},
      renderOverall(m, running),
      h("span.spacer"),
      running
        ? h("button.btn.btn-small", { type: "button", testid: "run-cancel",
          dataset: { fk: "run-cancel" }, onclick: () => actions.cancel(m) }, "Cancel")
        : null,
      RETRYABLE.has(m.status)
        ? h("button.btn.btn-small", { type: "button", testid: "run-retry",
          dataset: { fk: "run-retry", fkAlt: "run-cancel" }, disabled: locked || undefined,
          title: locked ? "An analysis is running in this session" : null,
          onclick: () => actions.retry(m) }, "Retry")
        : null));
}

function renderOverall(m, running) {
  if (running) {
    const left = analysisLeft(m.steps || []);
    const text = m.status === "pending" ? "Waiting for a worker…"
      : left !== null ? leftText(left) : "Estimating…";
    return h("span.run-eta", { testid: "run-eta", dataset: { etaMs: left === null ? "" : String(Math.round(left)) } },
      text);
  }
  const total = totalDuration(m);
  return h("span.run-eta.muted", { testid: "run-eta" },
    total ? `${statusLabel(m.status)} in ${fmtDuration(total)}` : statusLabel(m.status));
}

function totalDuration(m) {
  const starts = (m.steps || []).map((s) => timing(s).start).filter((t) => t !== null);
  const ends = (m.steps || []).map((s) => timing(s).end).filter((t) => t !== null);
  if (!starts.length || !ends.length) return null;
  return Math.max(...ends) - Math.min(...starts);
}

// --- timeline ----------------------------------------------------------------------------
export function renderTimeline(m, running) {
  const now = serverNow();
  const steps = allSteps(m);
  const timed = steps.map((s) => ({ s, t: s.placeholder ? null : timing(s, now) }));
  const starts = timed.filter((x) => x.t && x.t.start !== null).map((x) => x.t.start);
  const t0 = starts.length ? Math.min(...starts) : null;
  // Bars of steps still to come are drawn where the means put them (while running).
  let cursor = t0;
  const bars = timed.map(({ s, t }) => {
    if (t && t.start !== null) {
      const end = t.end ?? now;
      const expectedEnd = s.status === "running" && t.expected !== null ? t.start + t.expected : end;
      cursor = Math.max(cursor ?? end, end, expectedEnd);
      return { s, t, from: t.start, to: end, ghostTo: s.status === "running" ? expectedEnd : null };
    }
    if (running && cursor !== null && estimate(s.step) !== null && s.status === "pending") {
      const from = cursor;
      cursor += estimate(s.step);
      return { s, t, from, to: null, ghostFrom: from, ghostTo: cursor };
    }
    return { s, t, from: null, to: null };
  });
  const span = t0 === null ? 0 : Math.max(1000, ...bars.map((b) => Math.max(b.to ?? 0, b.ghostTo ?? 0) - t0));
  const pct = (t) => `${Math.max(0, Math.min(100, ((t - t0) / span) * 100)).toFixed(2)}%`;
  const width = (a, b) => `${Math.max(0.8, Math.min(100, ((b - a) / span) * 100)).toFixed(2)}%`;
  return h("section.timeline", { testid: "timeline", "aria-label": "Steps" },
    h("ol.steps", { testid: "steps" }, ...bars.map((b) => {
      const s = b.s;
      const t = b.t;
      let right = "";
      let spoken = "not started";
      if (s.status === "completed") {
        right = fmtDuration(s.duration_ms ?? t?.elapsed);
        spoken = `completed in ${right}`;
      } else if (s.status === "running" && running) {
        right = leftText(t ? t.left : null, t ? t.elapsed : 0);
        spoken = `running, ${right || "started"}`;
      } else if (s.status === "failed") {
        right = "failed";
        spoken = "failed";
      } else if (s.status === "cancelled" || (s.status === "running" && !running)) {
        right = "stopped";
        spoken = "stopped";
      }
      const track = h("div.track", { "aria-hidden": "true" },
        b.ghostTo !== null && b.ghostTo !== undefined && t0 !== null
          ? h("div.bar.bar-ghost", { style: `left:${pct(b.ghostFrom ?? b.from)};width:${width(b.ghostFrom ?? b.from, b.ghostTo)}` })
          : null,
        b.from !== null && b.to !== null && t0 !== null
          ? h("div.bar", { class: `bar-${s.status}`, style: `left:${pct(b.from)};width:${width(b.from, b.to)}` })
          : null);
      return h("li.step", { testid: "step", dataset: { step: s.step, status: s.status } },
        h("span.step-icon", { class: `icon-${s.status}`, "aria-hidden": "true" }),
        h("span.step-name", { title: stepTitle(s.step) }, SHORT_TITLES[s.step] || stepTitle(s.step),
          s.attempt > 1 ? h("span.muted.small", {}, ` · attempt ${s.attempt}`) : null),
        track,
        h("span.step-right", { testid: "step-eta",
          dataset: { etaMs: s.status === "running" && t && t.left !== null ? String(Math.round(t.left)) : "" } },
        right),
        h("span.visually-hidden", {}, `: ${spoken}`));
    })),
    t0 !== null ? h("div.axis", { "aria-hidden": "true" },
      h("span", {}, "0 s"), h("span", {}, fmtDuration(span))) : null);
}

export function renderCurrent(m, running) {
  const cur = running ? currentStep(m) : null;
  if (!cur) return null;
  const progress = Math.max(0, Math.min(100, cur.progress || 0));
  const t = timing(cur);
  const total = Math.max(cur.total || 0, PIPELINE.length);
  return h("section.current", { testid: "current-step" },
    h("div.current-line", {},
      h("span", {}, h("strong", {}, `Step ${cur.idx || PIPELINE.indexOf(cur.step) + 1} of ${total}: `),
        stepTitle(cur.step)),
      h("span.muted.small", {}, `${Math.round(progress)}%`)),
    h("div.progress", { testid: "step-progress", role: "progressbar",
      "aria-label": `${stepTitle(cur.step)}: progress`,
      "aria-valuenow": String(Math.round(progress)), "aria-valuemin": "0", "aria-valuemax": "100",
      "aria-valuetext": `${Math.round(progress)}%, ${leftText(t.left, t.elapsed) || "started"}` },
    h("div.progress-fill", { style: `width:${progress}%` })),
    cur.detail ? h("div.muted.small", {}, cur.detail) : null);
}

// --- SQL ---------------------------------------------------------------------------------
export function renderSql(m, ui, actions) {
  const sql = m.script && m.script.sql;
  if (!sql) return null;
  const box = h("details.sql", { testid: "sql", open: ui.sqlOpen || undefined,
    ontoggle: () => { ui.sqlOpen = box.open; } },
  h("summary", { dataset: { fk: "sql-summary" } }, "SQL that ran"),
  h("div.sql-body", {},
    h("pre", { testid: "sql-text", tabindex: "0", "aria-label": "SQL" }, sql),
    h("div.sql-actions", {},
      m.script.planner ? h("span.muted.small", {}, `planner: ${m.script.planner}`) : null,
      h("span.spacer"),
      h("button.btn.btn-small", { type: "button", testid: "copy-sql", dataset: { fk: "copy-sql" },
        onclick: (ev) => actions.copySql(sql, ev.currentTarget) }, ui.copied ? "Copied" : "Copy"))));
  return box;
}

// --- logs --------------------------------------------------------------------------------
function logEntries(m, chain, keep) {
  const attempts = [...chain, m];
  const out = [];
  attempts.forEach((a, i) => {
    if (attempts.length > 1) {
      out.push(h("li.attempt-separator", { testid: "attempt-separator", dataset: { kind: "retry" } },
      h("span", {}, `Attempt ${i + 1}`),
      h("span.muted", {}, ` · ${statusLabel(a.status)}${a.created_at ? ` · ${fmtTime(a.created_at)}` : ""}`)));
    }
    for (const l of a.logs || []) {
      if (keep(l)) {
        out.push(h("li.log-line", { testid: "log-line", class: `log-${l.level || "info"}`,
          dataset: { seq: String(l.seq), level: l.level || "info" } },
        h("span.log-time", {}, fmtTime(l.at)),
        h("span.log-level", {}, l.level || "info"),
        h("span.log-text", {}, l.text)));
      }
      const retry = l.level === "warning" && DELIVERY_RETRY.exec(l.text || "");
      if (retry && Number(retry[1]) < Number(retry[2])) {
        out.push(h("li.attempt-separator", { testid: "attempt-separator", dataset: { kind: "delivery" } },
          `Trying again: delivery ${Number(retry[1]) + 1} of ${retry[2]}`));
      }
    }
  });
  return out;
}

/** The log's lines (and separators) for the current level filter. */
export function logLines(m, chain, ui) {
  const level = LEVELS[ui.level] ? ui.level : "all";
  const entries = logEntries(m, chain, LEVELS[level].keep);
  const count = logCount(m, chain);
  return entries.length ? entries : [h("li.muted.small.log-empty", {},
    count ? "No lines at this level." : "No log lines yet.")];
}

export function logCount(m, chain) {
  return [...chain, m].reduce((n, a) => n + (a.logs || []).length, 0);
}

/** The log box: a toolbar (level filter, follow/pause) and the list, kept across updates so
 * that focus, an open drop-down and the scroll position survive every new line. */
export function renderLogBox(ui, onLevel) {
  const list = h("ol.logs", { testid: "logs", tabindex: "0", "aria-label": "Log lines" });
  list.addEventListener("scroll", () => {
    if (ui.programmatic) return;
    // Scrolling up pauses following; scrolling back to the bottom resumes it.
    const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 8;
    if (ui.follow !== atBottom) {
      ui.follow = atBottom;
      setFollowButton(follow, ui.follow);
    }
    ui.scrollTop = list.scrollTop;
  }, { passive: true });
  const level = LEVELS[ui.level] ? ui.level : "all";
  const select = h("select.select", { id: "log-level", testid: "log-filter",
    onchange: (ev) => { ui.level = ev.target.value; onLevel(); } },
  ...Object.entries(LEVELS).map(([value, o]) =>
    h("option", { value, selected: value === level || undefined }, o.text)));
  const follow = h("button.btn.btn-small", { type: "button", testid: "log-follow",
    onclick: () => {
      ui.follow = !ui.follow;
      setFollowButton(follow, ui.follow);
      if (ui.follow) scrollToEnd(list, ui);
    } });
  setFollowButton(follow, ui.follow);
  const title = h("h3.log-title", { testid: "log-title" }, "Log");
  const box = h("section.log-box", { "aria-labelledby": "log-title" },
    h("div.log-toolbar", {},
      Object.assign(title, { id: "log-title" }),
      h("span.spacer"),
      h("label.visually-hidden", { for: "log-level" }, "Show log levels"),
      select, follow),
    list);
  return { box, list, title };
}

/** Put new lines in the list; follow them, or keep the reader's place when paused. */
export function fillLogs(list, title, m, chain, ui) {
  const keep = ui.follow ? null : list.scrollTop;
  list.replaceChildren(...logLines(m, chain, ui));
  title.textContent = `Log (${logCount(m, chain)})`;
  if (ui.follow) scrollToEnd(list, ui);
  else if (keep !== null) list.scrollTop = keep;
}

function setFollowButton(btn, on) {
  btn.setAttribute("aria-pressed", String(Boolean(on)));
  btn.textContent = on ? "Following" : "Paused";
  btn.title = on ? "New lines scroll into view: press to pause" : "Press to follow new lines";
}

function scrollToEnd(list, ui) {
  ui.programmatic = true;
  list.scrollTop = list.scrollHeight;
  ui.scrollTop = list.scrollTop;
  requestAnimationFrame(() => { ui.programmatic = false; });
}
