// Drives the Runstream web UI in the machine's Chromium (playwright-core, no download) and
// audits every main state with axe-core.
//
// Environment: RUNSTREAM_URL, RUNSTREAM_TOKEN (an access token), RUNSTREAM_CSV (a small
// sales file with order_date, region, product, units and revenue columns),
// RUNSTREAM_ARTIFACTS (the folder for screenshots and axe reports), RUNSTREAM_EXPECT_TOTAL
// (optional: the total revenue as the card must show it, e.g. "12,345.60"),
// RUNSTREAM_REQUIRE_MID_ANALYSIS=1 to insist that the reloads happen mid-analysis (the
// pytest wrapper stretches each query by 3 s and makes that certain), CHROMIUM (default
// /usr/bin/chromium). Exits 0 on success, 1 with a reason otherwise. Every wait is on a
// condition of the page, with a timeout; nothing sleeps and hopes.

import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { join } from "node:path";
import { chromium } from "playwright-core";

const require = createRequire(import.meta.url);
const AXE = require.resolve("axe-core/axe.min.js");

const URL = env("RUNSTREAM_URL");
const TOKEN = env("RUNSTREAM_TOKEN");
const CSV = env("RUNSTREAM_CSV");
const ARTIFACTS = env("RUNSTREAM_ARTIFACTS");
const REQUIRE_MID = process.env.RUNSTREAM_REQUIRE_MID_ANALYSIS === "1";
const EXPECT_TOTAL = process.env.RUNSTREAM_EXPECT_TOTAL || "";
const EXAMPLES = ["total revenue by region", "total revenue by month", "top 5 regions by revenue"];
const BY_REGION_SENTENCE = "Sum of revenue for each region, largest first.";
const TWO_DIMS = "total revenue by region and product";
const TWO_DIMS_SENTENCE = "Sum of revenue for each region and product, largest first.";
const TOTAL = "total revenue";
const TOTAL_SENTENCE = "Sum of revenue.";
const REFUSED = "why is the sky blue";
const TO_CANCEL = "average revenue by region";
// A display form: thousands separators, at most two decimals (never 29671.929999999997).
const DISPLAY_NUMBER = /^-?\d{1,3}(,\d{3})*(\.\d{1,2})?$/;
const ETA_SECONDS = /^about \d+ s left$/;
const STEP_TIMEOUT = 60_000;
const LOCKED_REASON = "An analysis is running in this session";

function env(name) {
  const value = process.env[name];
  if (!value) fail(`${name} is not set`);
  return value;
}

function fail(message) {
  console.error(`FAIL: ${message}`);
  process.exit(1);
}

function log(message) {
  console.log(`[ui] ${message}`);
}

const sel = (testid, extra = "") => `[data-testid="${testid}"]${extra}`;
const analysis = (mid) => `${sel("analysis")}[data-message-id="${mid}"]`;
const run = (mid) => `${sel("run-view")}[data-message-id="${mid}"]`;
const TERMINAL = ["completed", "failed", "cancelled", "expired"];

// --- axe-core ----------------------------------------------------------------------------
const audits = [];

async function audit(page, state) {
  if (!(await page.evaluate(() => Boolean(window.axe)))) await page.addScriptTag({ path: AXE });
  const result = await page.evaluate(() => window.axe.run(document, {
    resultTypes: ["violations"],
    runOnly: { type: "tag", values: ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "best-practice"] },
  }));
  const brief = result.violations.map((v) => ({ id: v.id, impact: v.impact, help: v.help,
    nodes: v.nodes.map((n) => n.target.join(" ")).slice(0, 5) }));
  writeFileSync(join(ARTIFACTS, `axe-${state}.json`), JSON.stringify(brief, null, 2));
  const bad = brief.filter((v) => v.impact === "serious" || v.impact === "critical");
  audits.push({ state, serious: bad.length, other: brief.length - bad.length });
  log(`axe ${state}: ${bad.length} serious/critical, ${brief.length - bad.length} moderate/minor`
    + (brief.length ? ` (${brief.map((v) => `${v.id}:${v.impact}`).join(", ")})` : ""));
  if (bad.length) {
    fail(`axe found serious or critical violations in the ${state} state:\n`
      + bad.map((v) => `  ${v.id} (${v.impact}): ${v.help}\n    ${v.nodes.join("\n    ")}`).join("\n"));
  }
}

async function shot(page, name, target = null) {
  const path = join(ARTIFACTS, name);
  if (!target) await page.screenshot({ path });
  // The app rebuilds a card whole when anything about its message changes (app.js,
  // flushMessages): one rebuilt during the capture is taken again, as it now stands.
  for (let attempt = 1; target; attempt++) {
    try {
      await page.locator(target).screenshot({ path });
      break;
    } catch (err) {
      if (attempt >= 3 || !String(err).includes("not attached")) throw err;
    }
  }
  log(`screenshot: ${path}`);
}

// --- steps of the scenario -----------------------------------------------------------------
async function currentSession(page) {
  const hash = await page.evaluate(() => location.hash);
  const m = hash.match(/^#\/s\/(.+)$/);
  if (!m) fail(`no session in the URL (hash ${hash})`);
  return decodeURIComponent(m[1]);
}

async function newSessionWithData(page) {
  const before = await page.evaluate(() => location.hash);
  await page.click(sel("new-session"));
  await page.waitForFunction((prev) => /^#\/s\/.+/.test(location.hash) && location.hash !== prev,
    before);
  await page.waitForSelector(sel("composer"));
  const sid = await currentSession(page);
  await page.setInputFiles(sel("dataset-input"), CSV);
  await page.waitForSelector(`${sel("dataset")}:has-text("${CSV.split("/").pop()}")`);
  return sid;
}

async function cardsCount(page) {
  return page.locator(sel("analysis")).count();
}

async function newCard(page, before) {
  await page.waitForFunction(([s, n]) => document.querySelectorAll(s).length > n,
    [sel("analysis"), before]);
  return page.locator(sel("analysis")).last().getAttribute("data-message-id");
}

/** Type a question and press Enter (the keyboard way). */
async function ask(page, question) {
  const before = await cardsCount(page);
  await page.fill(sel("question-input"), question);
  await page.focus(sel("question-input"));
  await page.keyboard.press("Enter");
  const mid = await newCard(page, before);
  await expectFocus(page, "question-input", "after a question is sent");
  return mid;
}

async function expectFocus(page, testid, when) {
  await page.waitForFunction((t) => document.activeElement
    && document.activeElement.dataset.testid === t, testid, { timeout: 5000 })
    .catch(async () => fail(`focus is on ${await page.evaluate(() => document.activeElement
      && (document.activeElement.dataset.testid || document.activeElement.tagName))}, `
      + `not ${testid}, ${when}`));
}

async function settled(page, mid, status = "completed") {
  await page.waitForSelector(`${analysis(mid)}[data-status="${status}"]`);
}

async function sentenceOf(page, mid) {
  return (await page.locator(`${analysis(mid)} ${sel("interpretation")}`).textContent()).trim();
}

async function expectLocked(page, locked, when) {
  await page.waitForFunction((want) => {
    const form = document.querySelector('[data-testid="composer"]');
    const askBtn = document.querySelector('[data-testid="ask"]');
    const reason = document.querySelector('[data-testid="composer-reason"]');
    return form && askBtn && reason && form.dataset.locked === String(want)
      && askBtn.disabled === want && reason.hidden === !want;
  }, locked, { timeout: 10000 }).catch(() => fail(`the composer is not ${locked ? "locked" : "free"} ${when}`));
  if (locked) {
    const text = await page.textContent(sel("composer-reason"));
    if (!text.includes(LOCKED_REASON)) fail(`the composer gives no reason: ${text}`);
  }
}

async function expectNoBusyNotice(page, when) {
  const text = (await page.locator(sel("notice")).allTextContents()).join(" ");
  if (text.includes("already running")) fail(`a stale "already running" notice ${when}: ${text}`);
}

async function expectChartInView(page, mid) {
  await page.waitForFunction((s) => {
    const chart = document.querySelector(s);
    const list = document.querySelector('[data-testid="messages"]');
    if (!chart || !list) return false;
    const c = chart.getBoundingClientRect();
    const b = list.getBoundingClientRect();
    return c.top >= b.top - 2 && c.bottom <= b.bottom + 2;
  }, `${analysis(mid)} ${sel("chart")}`, { timeout: 10000 })
    .catch(() => fail("the chart that arrived was not brought into view"));
}

async function logTexts(page, mid) {
  return page.locator(`${run(mid)} ${sel("log-line")} .log-text`).allTextContents();
}

async function etaOf(page, mid, step) {
  const loc = page.locator(`${run(mid)} ${sel("step")}[data-step="${step}"] ${sel("step-eta")}`);
  return { text: (await loc.textContent()).trim(), ms: Number(await loc.getAttribute("data-eta-ms")) };
}

// --- the scenario --------------------------------------------------------------------------
async function main() {
  mkdirSync(ARTIFACTS, { recursive: true });
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  const consoleErrors = [];
  try {
    const context = await browser.newContext({ viewport: { width: 1360, height: 900 },
      acceptDownloads: true });
    context.setDefaultTimeout(STEP_TIMEOUT);
    await context.grantPermissions(["notifications"], { origin: new globalThis.URL(URL).origin });
    // Notifications shown are recorded (a headless browser has no tray to show them in).
    await context.addInitScript(() => {
      const Real = window.Notification;
      if (!Real) return;
      window.__notes = [];
      class Recorded extends Real {
        constructor(title, options) {
          super(title, options);
          window.__notes.push({ title, body: (options && options.body) || "" });
        }
      }
      window.Notification = Recorded;
    });
    const page = await context.newPage();
    page.on("console", (msg) => { if (msg.type() === "error") consoleErrors.push(msg.text()); });
    page.on("pageerror", (err) => consoleErrors.push(String(err)));

    // Sign in with the token.
    await page.goto(URL);
    await page.waitForSelector(sel("signin"));
    await page.fill(sel("token-input"), TOKEN);
    await page.click(sel("signin-submit"));
    await page.waitForSelector(sel("new-session"));
    log("signed in");

    // The empty session: the data's columns with their types, three examples to click.
    const first = await newSessionWithData(page);
    await page.waitForSelector(sel("example-question"));
    const columns = await page.locator(`${sel("dataset-column")} td:first-child`).allTextContents();
    const types = await page.locator(`${sel("dataset-column")} td:last-child`).allTextContents();
    if (columns.join(",") !== "order_date,region,product,units,revenue") fail(`columns ${columns}`);
    if (types.join(",") !== "date,text,text,whole number,decimal") fail(`column types ${types}`);
    const examples = await page.locator(sel("example-question")).allTextContents();
    if (examples.join("|") !== EXAMPLES.join("|")) fail(`examples ${examples.join(" | ")}`);
    log(`empty state: ${columns.length} columns with types, examples ${examples.join(" | ")}`);
    await shot(page, "ui-empty.png");
    await audit(page, "empty");

    // An example, by keyboard: it is asked at once.
    let before = await cardsCount(page);
    await page.focus(sel("example-question"));
    await page.keyboard.press("Enter");
    const mid = await newCard(page, before);
    await page.waitForSelector(`${sel("user-message")}:has-text("${EXAMPLES[0]}")`);
    await expectFocus(page, "question-input", "after an example is asked");
    await expectLocked(page, true, "while the first analysis runs");
    if (await page.locator(`${analysis(mid)} ${sel("retry")}`).count()) fail("Retry on a running card");

    // Steps appear live in the run view, over the stream; the live region says which.
    await page.waitForSelector(`${run(mid)} ${sel("step")}[data-step="execute"][data-status="running"]`);
    await page.waitForSelector(`${run(mid)} ${sel("log-line")}`);
    await page.waitForSelector(`${sel("connection")}[data-state="live"]`);
    await page.waitForFunction(() => document.querySelector('[data-testid="announcer"]')
      .textContent.includes("Running the query"), null, { timeout: 5000 })
      .catch(() => fail("the live region did not announce the running step"));
    const bars = await page.locator(`${run(mid)} ${sel("timeline")} .bar`).count();
    if (bars < 4) fail(`the timeline draws ${bars} bars for 4 started steps`);
    await page.waitForSelector(`${run(mid)} ${sel("step-progress")}[aria-valuenow]`);
    const logsBefore = await logTexts(page, mid);
    await shot(page, "ui-running.png");
    await audit(page, "running");
    log(`running: timeline with ${bars} bars, ${logsBefore.length} log lines; reloading`);

    // Reload in the middle: everything comes back from analysis-status + the stream.
    await page.reload();
    await page.waitForSelector(analysis(mid));
    const statusAfter = await page.getAttribute(analysis(mid), "data-status");
    const midAnalysis = !TERMINAL.includes(statusAfter);
    log(`after the reload the analysis is ${statusAfter}${midAnalysis ? " (mid-analysis)" : ""}`);
    if (REQUIRE_MID && !midAnalysis) fail("the reload did not happen mid-analysis");
    await page.waitForFunction(({ s, want }) => {
      const have = [...document.querySelectorAll(s)].map((e) => e.textContent);
      return want.every((line) => have.includes(line));
    }, { s: `${run(mid)} ${sel("log-line")} .log-text`, want: logsBefore }, { timeout: 15000 })
      .catch(() => {});
    const logsAfter = await logTexts(page, mid);
    for (const line of logsBefore) {
      if (!logsAfter.includes(line)) fail(`log line lost across the reload: ${line}`);
    }
    log(`all ${logsBefore.length} earlier log lines are back (${logsAfter.length} now)`);

    // It finishes: table, chart, interpretation; the composer is free, Retry is not offered.
    await settled(page, mid);
    await page.waitForSelector(`${analysis(mid)} ${sel("result-table")} tbody tr`);
    await page.waitForSelector(`${analysis(mid)} ${sel("chart")} svg`);
    if (await sentenceOf(page, mid) !== BY_REGION_SENTENCE) fail(`interpretation ${await sentenceOf(page, mid)}`);
    const logsFinal = await logTexts(page, mid);
    if (new Set(logsFinal).size !== logsFinal.length) {
      fail(`duplicate log lines after resuming the stream: ${logsFinal.join(" | ")}`);
    }
    await expectLocked(page, false, "once the analysis completed");
    if (await page.locator(`${analysis(mid)} ${sel("retry")}, ${run(mid)} ${sel("run-retry")}`).count()) {
      fail("a completed analysis offers Retry");
    }
    if (await page.locator(`${analysis(mid)} ${sel("cancel")}`).count()) fail("Cancel on a completed card");

    // A session nobody named is called by its first question; the owner renames it by
    // keyboard, and the sidebar follows.
    await page.waitForFunction((q) => document.querySelector('[data-testid="session-title"]')
      ?.textContent === q, EXAMPLES[0], { timeout: 10000 })
      .catch(() => fail("the unnamed session is not titled by its first question"));
    await page.focus(sel("rename"));
    await page.keyboard.press("Enter");
    await page.waitForSelector(sel("rename-input"));
    await page.keyboard.press("Control+A");
    await page.keyboard.type("Revenue by region");
    await page.keyboard.press("Enter");
    await page.waitForFunction(() => document.querySelector('[data-testid="session-title"]')
      ?.textContent === "Revenue by region", null, { timeout: 10000 })
      .catch(() => fail("the heading does not show the new name"));
    await page.waitForSelector(`${sel("session-item")}:has-text("Revenue by region")`,
      { timeout: 10000 }).catch(() => fail("the sidebar does not show the new name"));
    await expectFocus(page, "rename", "after renaming");
    if ((await page.textContent("body")).includes("Could not rename")) fail("rename reported an error");
    log("titled by its first question, renamed by keyboard");

    // The SQL that ran: collapsible, copyable.
    await page.click(`${run(mid)} ${sel("sql")} summary`);
    const sql = (await page.textContent(`${run(mid)} ${sel("sql-text")}`)).trim();
    if (!/^SELECT/i.test(sql)) fail(`the SQL shown is ${sql}`);
    await context.grantPermissions(["notifications", "clipboard-read", "clipboard-write"],
      { origin: new globalThis.URL(URL).origin });
    await page.click(`${run(mid)} ${sel("copy-sql")}`);
    await page.waitForFunction(() => document.querySelector('[data-testid="announcer"]')
      .textContent.startsWith("SQL"), null, { timeout: 5000 });
    const clip = await page.evaluate(() => navigator.clipboard.readText().catch(() => null));
    if (clip !== null && clip.trim() !== sql) fail("Copy did not put the SQL on the clipboard");
    log(`SQL shown and copied (${sql.length} characters)`);

    // Download CSV: the raw values, as a file.
    const [download] = await Promise.all([page.waitForEvent("download"),
      page.click(`${analysis(mid)} ${sel("download-csv")}`)]);
    if (download.suggestedFilename() !== "result.csv") fail(`downloaded ${download.suggestedFilename()}`);
    const csv = readFileSync(await download.path(), "utf8").trim().split(/\r?\n/);
    if (csv[0] !== "region,total_revenue" || csv.length !== 5) fail(`the CSV is ${csv.join(" / ")}`);
    log(`Download CSV: result.csv, ${csv.length - 1} rows`);
    await page.setViewportSize({ width: 1360, height: 1100 });
    await page.locator(sel("user-message")).last().evaluate((el) => el.scrollIntoView());
    await shot(page, "ui-finished.png");
    await audit(page, "completed");
    await page.setViewportSize({ width: 1360, height: 900 });

    // Log level filter and follow/pause, by keyboard.
    await page.focus(`${run(mid)} ${sel("log-filter")}`);
    await page.keyboard.press("ArrowDown");
    await page.waitForFunction((s) => [...document.querySelectorAll(s)]
      .every((e) => e.dataset.level === "warning" || e.dataset.level === "error"),
    `${run(mid)} ${sel("log-line")}`, { timeout: 5000 })
      .catch(() => fail("the level filter still shows info lines"));
    await page.selectOption(`${run(mid)} ${sel("log-filter")}`, "all");
    await page.focus(`${run(mid)} ${sel("log-follow")}`);
    await page.keyboard.press("Enter");
    if (await page.getAttribute(`${run(mid)} ${sel("log-follow")}`, "aria-pressed") !== "false") {
      fail("follow did not pause");
    }
    await page.keyboard.press("Enter");
    if (await page.getAttribute(`${run(mid)} ${sel("log-follow")}`, "aria-pressed") !== "true") {
      fail("follow did not resume");
    }
    log("log: level filter and follow/pause work from the keyboard");

    // Two dimensions, with a reload mid-query: the ETA is seconds, and steady.
    const mid3 = await ask(page, TWO_DIMS);
    await page.waitForSelector(`${run(mid3)} ${sel("step")}[data-step="execute"][data-status="running"]`);
    await page.waitForFunction((s) => document.querySelector(s)?.dataset.etaMs, 
      `${run(mid3)} ${sel("step")}[data-step="execute"] ${sel("step-eta")}`, { timeout: 5000 });
    const etaBefore = await etaOf(page, mid3, "execute");
    const t0 = Date.now();
    await page.reload();
    await page.waitForSelector(`${run(mid3)} ${sel("step")}[data-step="execute"]`);
    const reloadedRunning = await page.locator(
      `${run(mid3)} ${sel("step")}[data-step="execute"][data-status="running"]`).count();
    if (REQUIRE_MID && !reloadedRunning) fail("the query finished before the page was back");
    if (reloadedRunning) {
      const etaAfter = await etaOf(page, mid3, "execute");
      const waited = Date.now() - t0;
      log(`ETA before the reload "${etaBefore.text}" (${etaBefore.ms} ms), after it `
        + `"${etaAfter.text}" (${etaAfter.ms} ms), ${waited} ms later`);
      if (!ETA_SECONDS.test(etaBefore.text)) fail(`ETA before the reload: ${etaBefore.text}`);
      if (!ETA_SECONDS.test(etaAfter.text)) fail(`ETA after the reload: ${etaAfter.text}`);
      // The same clock and means before and after: only the time that passed is gone.
      const drift = Math.abs(etaBefore.ms - waited - etaAfter.ms);
      if (drift > 1500) fail(`the ETA jumped by ${drift} ms across the reload`);
      const overall = (await page.textContent(`${run(mid3)} ${sel("run-eta")}`)).trim();
      if (!ETA_SECONDS.test(overall)) fail(`the analysis' ETA reads ${overall}`);
      await expectLocked(page, true, "after a reload mid-analysis");
    }
    await settled(page, mid3);
    if (await sentenceOf(page, mid3) !== TWO_DIMS_SENTENCE) fail(`interpretation ${await sentenceOf(page, mid3)}`);
    const chart3 = `${analysis(mid3)} ${sel("chart")}[data-kind="bar"] svg`;
    await page.waitForSelector(chart3);
    await expectChartInView(page, mid3);
    const legend = page.locator(`${chart3} [aria-roledescription="legend"]`);
    if (await legend.count() !== 1) fail("the two-dimension chart has no legend");
    const legendLabel = await legend.getAttribute("aria-label");
    if (!/titled '(Region|Product)'/.test(legendLabel || "")) fail(`legend ${legendLabel}`);
    const rows3 = await page.locator(`${analysis(mid3)} ${sel("result-table")} tbody tr`).count();
    const bars3 = await page.locator(`${chart3} [aria-roledescription="bar"]`).count();
    if (bars3 !== rows3) fail(`${bars3} bars for ${rows3} result rows`);
    const totals = await page.locator(`${analysis(mid3)} ${sel("result-table")} tbody tr`
      + " td:last-child").allTextContents();
    const bad = totals.filter((t) => !DISPLAY_NUMBER.test(t.trim()));
    if (bad.length) fail(`numbers not in their display form: ${bad.join(", ")}`);
    if (!totals.some((t) => t.includes(","))) fail(`no thousands separator in ${totals}`);
    log(`two dimensions: ${bars3} bars for ${rows3} rows, the chart brought into view`);
    await shot(page, "ui-two-dimensions.png", `${analysis(mid3)} ${sel("chart")}`);

    // A single number is a big-number card, not a chart.
    const mid4 = await ask(page, TOTAL);
    await settled(page, mid4);
    if (await sentenceOf(page, mid4) !== TOTAL_SENTENCE) fail(`interpretation ${await sentenceOf(page, mid4)}`);
    const value = page.locator(`${analysis(mid4)} ${sel("number-card")} ${sel("number-value")}`);
    await value.first().waitFor();
    const shownTotal = (await value.first().textContent()).trim();
    if (!DISPLAY_NUMBER.test(shownTotal)) fail(`the card shows ${shownTotal}`);
    if (EXPECT_TOTAL && shownTotal !== EXPECT_TOTAL) fail(`the card shows ${shownTotal}, not ${EXPECT_TOTAL}`);
    if (await page.locator(`${analysis(mid4)} ${sel("chart")}`).count()) fail("a number drawn as a chart");
    log(`number card: ${shownTotal}`);
    await shot(page, "ui-number-card.png", analysis(mid4));

    // A refusal: said once, with the questions that work offered as buttons; Retry offered.
    const mid5 = await ask(page, REFUSED);
    await settled(page, mid5, "failed");
    const error = (await page.textContent(`${analysis(mid5)} ${sel("analysis-error")} p`)).trim();
    const probe = error.slice(0, 40);
    const times = await page.evaluate(({ probe, run }) => {
      // Everywhere on the page but the log, which records it as a log line.
      const all = [...document.querySelectorAll("body *")].filter((el) =>
        !el.closest('[data-testid="logs"]') && [...el.childNodes].some((n) =>
          n.nodeType === 3 && n.textContent.includes(probe)));
      return all.length;
    }, { probe, run: run(mid5) });
    if (times !== 1) fail(`the refusal is shown ${times} times: ${error}`);
    if (await page.locator(`${analysis(mid5)} ${sel("refusal-example")}`).count() !== 3) {
      fail("the refusal offers no questions that work");
    }
    await page.waitForSelector(`${analysis(mid5)} ${sel("retry")}:not([disabled])`);
    await page.waitForSelector(`${run(mid5)} ${sel("step")}[data-status="failed"]`);
    log(`refusal shown once: ${error.slice(0, 70)}…`);
    await shot(page, "ui-failed.png");
    await audit(page, "failed");

    // Locked from elsewhere (another tab asks): the composer says so; Cancel frees it at once.
    before = await cardsCount(page);
    const elsewhere = await page.evaluate(async ({ sid, token, q }) => {
      const r = await fetch(`/api/sessions/${sid}/analyses`, { method: "POST",
        headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" },
        body: JSON.stringify({ question: q }) });
      return r.status;
    }, { sid: first, token: TOKEN, q: TO_CANCEL });
    if (elsewhere !== 202) fail(`the other tab's question got ${elsewhere}`);
    const mid6 = await newCard(page, before);
    await expectLocked(page, true, "while another tab's analysis runs");
    if (await page.locator(`${analysis(mid5)} ${sel("retry")}:not([disabled])`).count()) {
      fail("Retry is offered while the session is locked");
    }
    await page.fill(sel("question-input"), "max revenue by region");
    await page.focus(sel("question-input"));
    await page.keyboard.press("Enter");  // refused here, without a 409
    await expectNoBusyNotice(page, "after Enter while locked");
    await page.waitForSelector(`${run(mid6)} ${sel("step")}[data-step="execute"][data-status="running"]`);
    await page.click(`${analysis(mid6)} ${sel("cancel")}`);
    await settled(page, mid6, "cancelled");
    await expectLocked(page, false, "right after Cancel");
    await expectNoBusyNotice(page, "after Cancel");
    await expectFocus(page, "retry", "after Cancel (its Retry takes the place)");
    if (await page.locator(`${run(mid6)} ${sel("run-cancel")}`).count()) fail("Cancel after cancelling");
    await page.waitForSelector(`${run(mid6)} ${sel("step")}[data-step="execute"][data-status="cancelled"]`);
    log("locked while another tab's analysis ran; Cancel freed the composer at once, no banner");
    await shot(page, "ui-cancelled.png");
    await audit(page, "cancelled");

    // Retry: a new attempt; its log is the story of both, with a separator between them.
    before = await cardsCount(page);
    await page.click(`${analysis(mid6)} ${sel("retry")}`);
    const mid7 = await newCard(page, before);
    await expectLocked(page, true, "while the retry runs");
    await page.waitForSelector(`${run(mid7)} ${sel("attempt-separator")}[data-kind="retry"]`);
    const separators = await page.locator(`${run(mid7)} ${sel("attempt-separator")}`).allTextContents();
    if (separators.length !== 2 || !/Attempt 1.*Cancelled/.test(separators[0])) {
      fail(`attempt separators ${separators.join(" | ")}`);
    }
    await settled(page, mid7);
    await expectLocked(page, false, "after the retry completed");
    log(`retry completed; separators: ${separators.join(" | ")}`);
    await shot(page, "ui-retried.png", sel("run-view"));

    // Notifications (with permission) for a session that is not on screen.
    // Permission is granted to this origin (as a user would in the prompt): the toggle is
    // on at once; otherwise pressing it asks.
    if (await page.getAttribute(sel("notify-toggle"), "data-state") !== "on") {
      await page.click(sel("notify-toggle"));
    }
    await page.waitForSelector(`${sel("notify-toggle")}[data-state="on"]`);
    const second = await newSessionWithData(page);
    const mid2 = await ask(page, EXAMPLES[0]);
    await page.waitForSelector(`${sel("session-item")}[data-session-id="${second}"] ${sel("analyzing-marker")}`);
    await page.click(`${sel("session-item")}[data-session-id="${first}"]`);
    await page.waitForSelector(`${sel("session-item")}[data-session-id="${first}"][data-current="true"]`);
    log(`switched back to ${first}; waiting for ${mid2} to finish in the background`);
    await page.waitForSelector(`${sel("session-item")}[data-session-id="${second}"] ${sel("unread-dot")}`);
    await page.waitForFunction(() => /^\(1\) /.test(document.title), null, { timeout: 10000 })
      .catch(async () => fail(`the tab title has no unread count: ${await page.title()}`));
    await page.waitForFunction(() => (window.__notes || []).length > 0, null, { timeout: 10000 })
      .catch(() => fail("no browser notification when the background analysis finished"));
    const notes = await page.evaluate(() => window.__notes);
    if (notes[0].title !== "Analysis finished" || !notes[0].body.includes(EXAMPLES[0])) {
      fail(`notification ${JSON.stringify(notes[0])}`);
    }
    if (await page.locator(`${sel("session-item")}[data-session-id="${first}"] ${sel("unread-dot")}`).count()) {
      fail("the open session shows an unread dot");
    }
    log(`unread dot, title "${await page.title()}", notification "${notes[0].title}: ${notes[0].body}"`);
    await page.click(`${sel("session-item")}[data-session-id="${second}"]`);
    await page.waitForSelector(`${sel("analysis")}[data-status="completed"]`);
    await page.waitForFunction((s) => !document.querySelector(
      `[data-testid="session-item"][data-session-id="${s}"] [data-testid="unread-dot"]`)
      && !/^\(\d+\)/.test(document.title), second);
    log("opening the session cleared its dot and the count in the title");

    // A phone: the chat, then the run view as a panel, opened and closed by keyboard.
    const phone = await browser.newContext({ viewport: { width: 390, height: 844 },
      isMobile: true, hasTouch: true });
    phone.setDefaultTimeout(STEP_TIMEOUT);
    await phone.addInitScript((t) => localStorage.setItem("runstream.token", t), TOKEN);
    const mobile = await phone.newPage();
    mobile.on("pageerror", (err) => consoleErrors.push(String(err)));
    await mobile.goto(`${URL}/#/s/${first}`);
    await mobile.waitForSelector(`${analysis(mid7)}[data-status="completed"]`);
    await shot(mobile, "ui-mobile.png");
    await audit(mobile, "mobile");
    await mobile.focus(sel("run-toggle"));
    await mobile.keyboard.press("Enter");
    await mobile.waitForSelector(`${sel("run-view")}.open`);
    await expectFocusOn(mobile, ".run-title", "when the run panel opens");
    await shot(mobile, "ui-mobile-run.png");
    await audit(mobile, "mobile-run");
    await mobile.keyboard.press("Escape");
    await mobile.waitForSelector(`${sel("run-view")}:not(.open)`, { state: "attached" });
    await expectFocus(mobile, "run-toggle", "when the run panel closes");
    log("mobile: chat, run panel opened and closed from the keyboard");
    await phone.close();

    const relevant = consoleErrors.filter((e) => !/Failed to load resource.*40[49]/.test(e)
      && !/dev-token/.test(e));
    if (relevant.length) fail(`errors in the page console:\n${relevant.join("\n")}`);
    log(`axe: ${audits.map((a) => `${a.state} ${a.serious} serious/critical`).join(", ")}`);
    log("OK");
  } finally {
    await browser.close();
  }
}

async function expectFocusOn(page, css, when) {
  await page.waitForFunction((c) => document.activeElement && document.activeElement.matches(c),
    css, { timeout: 5000 }).catch(() => fail(`focus is not on ${css} ${when}`));
}

main().catch((err) => fail(err && err.stack ? err.stack : String(err)));
