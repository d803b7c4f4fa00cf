// Time as the server sees it, and the ETAs computed from the read model.
//
// A step row carries `started_at` (the worker's clock) and the page-refresh call
// (`GET /analysis-status`) carries `server_time` and `step_estimates` (the running mean
// duration of each step). Elapsed time is measured on the server's clock — its last
// reading advanced by the page's monotonic clock — so the time left is the same before
// and after a reload, and a wrong clock on the user's machine does not matter.

export const PIPELINE = ["context", "plan", "script", "execute", "chart"];

const anchor = { server: null, perf: 0 };
const estimates = new Map();

/** Learn the server's clock and the step means from an analysis-status answer. */
export function learn(status) {
  const t = Date.parse((status && status.server_time) || "");
  if (Number.isFinite(t)) {
    anchor.server = t;
    anchor.perf = performance.now();
  }
  if (status && status.step_estimates) {
    for (const [step, ms] of Object.entries(status.step_estimates)) {
      if (Number.isFinite(ms)) estimates.set(step, ms);
    }
  }
}

/** Now, on the server's clock (the page's own clock until the server has told its time). */
export function serverNow() {
  return anchor.server === null ? Date.now() : anchor.server + (performance.now() - anchor.perf);
}

export function estimate(step) {
  return estimates.has(step) ? estimates.get(step) : null;
}

export function ms(iso) {
  const t = Date.parse(iso || "");
  return Number.isFinite(t) ? t : null;
}

/** A step's timing: {start, end, elapsed, expected, left} in ms (null where unknown). */
export function timing(step, now = serverNow()) {
  const start = ms(step.started_at);
  const expected = estimate(step.step) ?? (step.expected_ms ?? null);
  if (start === null) return { start: null, end: null, elapsed: null, expected, left: null };
  let end = ms(step.ended_at);
  if (end === null && step.status !== "running" && Number.isFinite(step.duration_ms)) {
    end = start + step.duration_ms;
  }
  const running = step.status === "running";
  const stop = running || end === null ? now : end;
  const elapsed = Math.max(0, stop - start);
  const left = running && expected !== null ? expected - elapsed : null;
  return { start, end: running ? null : end, elapsed, expected, left };
}

/** The whole analysis: the running step's time left plus the mean of each step to come. */
export function analysisLeft(steps, now = serverNow()) {
  const byName = new Map(steps.map((s) => [s.step, s]));
  let left = 0;
  let running = false;
  for (const name of PIPELINE) {
    const s = byName.get(name);
    if (s && (s.status === "completed" || s.status === "failed" || s.status === "cancelled")) continue;
    if (s && s.status === "running") {
      const t = timing(s, now);
      if (t.left === null) return null;
      left += Math.max(0, t.left);
      running = true;
    } else {
      const e = estimate(name);
      if (e === null) return null;
      left += e;
    }
  }
  return running ? left : null;
}

/** "about 3 s left", or what can honestly be said when the mean is passed or unknown. */
export function leftText(left, elapsed) {
  if (left === null || left === undefined) {
    return elapsed ? `running for ${Math.max(1, Math.round(elapsed / 1000))} s` : "";
  }
  if (left >= 1000) {
    const s = Math.ceil(left / 1000);
    return s < 90 ? `about ${s} s left` : `about ${Math.round(s / 60)} min left`;
  }
  if (left > -2000) return "almost done";
  return "taking longer than usual";
}
