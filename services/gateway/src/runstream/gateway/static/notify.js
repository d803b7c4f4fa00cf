// Telling the user about work that finished out of sight: the tab title's unread count,
// browser notifications (only with the user's permission, asked for by a button), and the
// one polite live region that screen readers hear step changes from.

const PREF_KEY = "runstream.notify";
const BASE_TITLE = "Runstream";
const shown = new Set();

export const notifications = {
  get supported() { return typeof window.Notification === "function"; },
  get permission() { return this.supported ? Notification.permission : "unsupported"; },
  /** On: supported, granted, and not switched off here. */
  get on() {
    return this.permission === "granted" && localStorage.getItem(PREF_KEY) !== "off";
  },
  async enable() {
    if (!this.supported) return false;
    let permission = Notification.permission;
    if (permission === "default") permission = await Notification.requestPermission();
    if (permission === "granted") localStorage.setItem(PREF_KEY, "on");
    return permission === "granted";
  },
  disable() { localStorage.setItem(PREF_KEY, "off"); },
};

/** One notification per settled analysis (`tag` keeps a second tab from repeating it). */
export function notifySettled({ messageId, status, title, question, onClick }) {
  if (!notifications.on || shown.has(messageId)) return null;
  shown.add(messageId);
  const verb = { completed: "finished", failed: "failed", cancelled: "was cancelled",
    expired: "expired" }[status] || status;
  try {
    const n = new Notification(`Analysis ${verb}`, {
      body: [title, question].filter(Boolean).join(": "), tag: `runstream-${messageId}`,
    });
    n.onclick = () => {
      window.focus();
      onClick();
      n.close();
    };
    return n;
  } catch {
    return null;  // e.g. a platform that only allows notifications from a service worker
  }
}

/** "(2) Session 4 · Runstream": the count of sessions with results not seen yet. */
export function setTitle(unread, sessionTitle = "") {
  const name = sessionTitle ? `${sessionTitle} · ${BASE_TITLE}` : BASE_TITLE;
  document.title = unread > 0 ? `(${unread}) ${name}` : name;
}

let region = null;

export function liveRegion() {
  region = document.createElement("div");
  region.className = "visually-hidden";
  region.dataset.testid = "announcer";
  region.setAttribute("role", "status");
  region.setAttribute("aria-live", "polite");
  region.setAttribute("aria-atomic", "true");
  return region;
}

/** Say one short sentence to screen-reader users (the latest wins). */
export function announce(text) {
  if (!region || !text) return;
  // A change of text is what is announced: the same sentence twice must still be heard.
  if (region.textContent === text) region.textContent = "";
  requestAnimationFrame(() => { region.textContent = text; });
}
