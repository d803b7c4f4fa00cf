// One SSE stream with a short-lived stream token (EventSource cannot send headers).
//
// The browser reconnects by itself with Last-Event-ID after a network error. When the
// stream is closed for good (token expired, gateway answered an error), it is reopened
// here with a fresh token from the last sequence seen, so no frame is lost.

import { api } from "./api.js";

export const EVENT_TYPES = [
  // session aggregate
  "session_created", "dataset_attached", "analysis_requested", "lock_renewed",
  "analysis_settled", "session_read", "session_renamed",
  // message aggregate
  "analysis_started", "step_started", "step_progressed", "step_completed", "step_failed",
  "log_appended", "script_generated", "execution_started", "execution_completed",
  "execution_failed", "cancel_requested",
  // chart tasks
  "chart_requested", "chart_started", "chart_progressed", "chart_completed", "chart_failed",
  "chart_cancel_requested", "chart_cancelled",
];

const OFFLINE_AFTER_FAILURES = 3;

export class LiveStream {
  /**
   * @param {string} path  stream route, e.g. /api/sessions/<sid>/events
   * @param {{afterSeq?: number, onFrame: Function, onReset?: Function,
   *          onState?: Function}} options
   */
  constructor(path, { afterSeq = null, onFrame, onReset = () => {}, onState = () => {} }) {
    this.path = path;
    this.lastSeq = afterSeq;
    this.onFrame = onFrame;
    this.onReset = onReset;
    this.onState = onState;
    this.state = "connecting";
    this.failures = 0;
    this.es = null;
    this.timer = null;
    this.closed = false;
  }

  async open() {
    if (this.closed) return;
    clearTimeout(this.timer);
    let token;
    try {
      token = (await api.streamToken()).token;
    } catch (err) {
      if (err && err.status === 401) return this.close();  // signed out
      return this.retryLater();
    }
    if (this.closed) return;
    const params = new URLSearchParams({ token });
    if (this.lastSeq !== null) params.set("after_seq", String(this.lastSeq));
    const es = new EventSource(`${this.path}?${params}`);
    this.es = es;
    es.onopen = () => {
      this.failures = 0;
      this.setState("live");
    };
    es.onerror = () => {
      if (es !== this.es) return;
      if (es.readyState === EventSource.CONNECTING) {
        this.setState(navigator.onLine ? "reconnecting" : "offline");
        return;  // the browser retries by itself, sending Last-Event-ID
      }
      es.close();
      this.retryLater();
    };
    const handle = (type) => (ev) => {
      if (es !== this.es) return;
      const seq = Number(ev.lastEventId);
      let data;
      try { data = JSON.parse(ev.data); } catch { return; }
      if (Number.isFinite(seq) && seq > 0) {
        if (this.lastSeq !== null && seq <= this.lastSeq && type !== "reset") return;
        this.lastSeq = seq;
      }
      if (type === "reset") this.onReset(data, seq);
      else this.onFrame(type, data, seq);
    };
    for (const type of EVENT_TYPES) es.addEventListener(type, handle(type));
    es.addEventListener("reset", handle("reset"));
  }

  retryLater() {
    if (this.closed) return;
    this.failures += 1;
    this.setState(!navigator.onLine || this.failures >= OFFLINE_AFTER_FAILURES
      ? "offline" : "reconnecting");
    const delay = Math.min(30000, 1000 * 2 ** Math.min(this.failures, 5));
    this.timer = setTimeout(() => this.open(), delay);
  }

  /** Reopen now (e.g. the browser came back online). */
  kick() {
    if (this.closed) return;
    if (!this.es || this.es.readyState === EventSource.CLOSED) this.open();
  }

  setState(state) {
    if (state === this.state) return;
    this.state = state;
    this.onState(state);
  }

  close() {
    this.closed = true;
    clearTimeout(this.timer);
    if (this.es) this.es.close();
    this.es = null;
  }
}
