// Drives the Runstream web UI in the machine's Chromium (playwright-core, no download).
//
// Environment: RUNSTREAM_URL, RUNSTREAM_TOKEN (an access token), RUNSTREAM_CSV (a small
// sales file with region, product and revenue columns), RUNSTREAM_SCREENSHOT (where the
// finished analysis is saved; the two-dimension chart and the number card are saved
// beside it), RUNSTREAM_EXPECT_TOTAL (optional: the total revenue as the card must show
// it, e.g. "12,345.60"), RUNSTREAM_REQUIRE_MID_ANALYSIS=1 to insist that the reload
// happened mid-analysis, CHROMIUM (default /usr/bin/chromium). Exits 0 on success, 1 with
// a reason otherwise.

import { mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { chromium } from "playwright-core";

const URL = env("RUNSTREAM_URL");
const TOKEN = env("RUNSTREAM_TOKEN");
const CSV = env("RUNSTREAM_CSV");
const SCREENSHOT = env("RUNSTREAM_SCREENSHOT");
const REQUIRE_MID = process.env.RUNSTREAM_REQUIRE_MID_ANALYSIS === "1";
const EXPECT_TOTAL = process.env.RUNSTREAM_EXPECT_TOTAL || "";
const QUESTION = "average revenue by region";
const SENTENCE = "Average of revenue for each region, largest first.";
const TWO_DIMS = "total revenue by region and product";
const TWO_DIMS_SENTENCE = "Sum of revenue for each region and product, largest first.";
const TOTAL = "total revenue";
const TOTAL_SENTENCE = "Sum of revenue.";
// A display form: thousands separators, at most two decimals (never 29671.929999999997).
const DISPLAY_NUMBER = /^-?\d{1,3}(,\d{3})*(\.\d{1,2})?$/;
const STEP_TIMEOUT = 60_000;

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

async function ask(page, question) {
  const cards = page.locator(sel("analysis"));
  const before = await cards.count();
  await page.fill(sel("question-input"), question);
  await page.click(sel("ask"));
  // The new card, not the last of the earlier ones.
  await page.waitForFunction(([s, n]) => document.querySelectorAll(s).length > n,
    [sel("analysis"), before]);
  return cards.last().getAttribute("data-message-id");
}

async function completed(page, mid) {
  await page.waitForSelector(`${analysis(mid)}[data-status="completed"]`);
  const sentence = (await page.locator(`${analysis(mid)} ${sel("interpretation")}`)
    .textContent()).trim();
  return sentence;
}

async function saveCard(page, target, name) {
  const path = join(dirname(SCREENSHOT), name);
  // The composer sticks to the bottom of the list: out of the way while the card is shot.
  const composer = page.locator(sel("composer"));
  await composer.evaluate((el) => { el.style.visibility = "hidden"; });
  try {
    await page.locator(target).screenshot({ path });
  } finally {
    await composer.evaluate((el) => { el.style.visibility = ""; });
  }
  log(`screenshot: ${path}`);
}

const analysis = (mid) => `${sel("analysis")}[data-message-id="${mid}"]`;

async function main() {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  const consoleErrors = [];
  try {
    const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    context.setDefaultTimeout(STEP_TIMEOUT);
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

    // A session with the CSV, and a question.
    const first = await newSessionWithData(page);
    log(`session ${first} has the dataset`);
    const mid = await ask(page, QUESTION);
    if (!mid) fail("the analysis card has no message id");
    await page.waitForSelector(`${sel("user-message")}:has-text("${QUESTION}")`);

    // Steps appear live, over the stream.
    await page.waitForSelector(`${analysis(mid)} ${sel("step")}`);
    await page.waitForSelector(`${analysis(mid)} ${sel("log-line")}`);
    await page.waitForSelector(`${sel("connection")}[data-state="live"]`);
    const logsBefore = await page.locator(`${analysis(mid)} ${sel("log-line")} .log-text`)
      .allTextContents();
    const statusBefore = await page.getAttribute(analysis(mid), "data-status");
    log(`steps live (${await page.locator(`${analysis(mid)} ${sel("step")}`).count()}), `
      + `${logsBefore.length} log lines, status ${statusBefore}; reloading`);

    // Reload in the middle: everything comes back from analysis-status + the stream.
    await page.reload();
    await page.waitForSelector(analysis(mid));
    const statusAfter = await page.getAttribute(analysis(mid), "data-status");
    const mid_analysis = !["completed", "failed", "cancelled", "expired"].includes(statusAfter);
    log(`after the reload the analysis is ${statusAfter}`
      + (mid_analysis ? " (mid-analysis)" : ""));
    if (REQUIRE_MID && !mid_analysis) fail("the reload did not happen mid-analysis");
    // The snapshot may lag the stream by a few events (a loaded projector); the stream
    // opened from its as_of_seq brings the rest: wait for it, then compare.
    const logSel = `${analysis(mid)} ${sel("log-line")} .log-text`;
    await page.waitForFunction(({ s, want }) => {
      const have = [...document.querySelectorAll(s)].map((e) => e.textContent);
      return want.every((line) => have.includes(line));
    }, { s: logSel, want: logsBefore }, { timeout: 15000 }).catch(() => {});
    const logsAfter = await page.locator(logSel).allTextContents();
    for (const line of logsBefore) {
      if (!logsAfter.includes(line)) fail(`log line lost across the reload: ${line}`);
    }
    log(`all ${logsBefore.length} earlier log lines are back (${logsAfter.length} now)`);

    // The analysis finishes with a table and a chart.
    await page.waitForSelector(`${analysis(mid)}[data-status="completed"]`);
    await page.waitForSelector(`${analysis(mid)} ${sel("result-table")} tbody tr`);
    await page.waitForSelector(`${analysis(mid)} ${sel("chart")} svg`);
    const header = await page.locator(`${analysis(mid)} ${sel("result-table")} th`)
      .allTextContents();
    if (!header.some((h) => /region/i.test(h))) fail(`unexpected result columns: ${header}`);
    const steps = await page.locator(`${analysis(mid)} ${sel("step")}`).count();
    const logsFinal = await page.locator(`${analysis(mid)} ${sel("log-line")} .log-text`)
      .allTextContents();
    if (new Set(logsFinal).size !== logsFinal.length) {
      fail(`duplicate log lines after resuming the stream: ${logsFinal.join(" | ")}`);
    }
    log(`finished: ${steps} steps, columns ${header.join(", ")}, chart drawn`);
    mkdirSync(dirname(SCREENSHOT), { recursive: true });
    // Frame the question and its answer (the message list scrolls by itself).
    await page.setViewportSize({ width: 1280, height: 1240 });
    await page.locator(sel("user-message")).last().evaluate((el) => el.scrollIntoView());
    await page.screenshot({ path: SCREENSHOT, fullPage: false });
    log(`screenshot: ${SCREENSHOT}`);
    const sentence = (await page.locator(`${analysis(mid)} ${sel("interpretation")}`)
      .textContent()).trim();
    if (sentence !== SENTENCE) fail(`interpretation ${JSON.stringify(sentence)}, not ${SENTENCE}`);
    log(`interpretation above the table: ${sentence}`);

    // Two dimensions: grouped bars coloured by one of them, with a legend; the table shows
    // display forms (separators, two decimals at most).
    const mid3 = await ask(page, TWO_DIMS);
    const sentence3 = await completed(page, mid3);
    if (sentence3 !== TWO_DIMS_SENTENCE) fail(`interpretation ${JSON.stringify(sentence3)}`);
    const chart3 = `${analysis(mid3)} ${sel("chart")}[data-kind="bar"] svg`;
    await page.waitForSelector(chart3);
    const legend = page.locator(`${chart3} [aria-roledescription="legend"]`);
    if (await legend.count() !== 1) fail("the two-dimension chart has no legend");
    const legendLabel = await legend.getAttribute("aria-label");
    if (!/titled '(Region|Product)'/.test(legendLabel || "")) {
      fail(`the legend is not titled by a dimension: ${legendLabel}`);
    }
    const rows3 = await page.locator(`${analysis(mid3)} ${sel("result-table")} tbody tr`).count();
    const bars = await page.locator(`${chart3} [aria-roledescription="bar"]`).count();
    if (bars !== rows3) fail(`${bars} bars for ${rows3} result rows`);
    const totals = await page.locator(`${analysis(mid3)} ${sel("result-table")} tbody tr`
      + " td:last-child").allTextContents();
    const bad = totals.filter((t) => !DISPLAY_NUMBER.test(t.trim()));
    if (bad.length) fail(`numbers not in their display form: ${bad.join(", ")}`);
    if (!totals.some((t) => t.includes(","))) fail(`no thousands separator in ${totals}`);
    log(`two dimensions: ${bars} grouped bars, legend "${legendLabel}", totals like ${totals[0]}`);
    // The chart alone: the whole card is taller than the message list's viewport.
    await saveCard(page, `${analysis(mid3)} ${sel("chart")}`, "ui-two-dimensions.png");

    // A single number is a big-number card, not a chart.
    const mid4 = await ask(page, TOTAL);
    const sentence4 = await completed(page, mid4);
    if (sentence4 !== TOTAL_SENTENCE) fail(`interpretation ${JSON.stringify(sentence4)}`);
    const value = page.locator(`${analysis(mid4)} ${sel("number-card")} ${sel("number-value")}`);
    await value.first().waitFor();
    const shownTotal = (await value.first().textContent()).trim();
    if (!DISPLAY_NUMBER.test(shownTotal)) fail(`the card shows ${shownTotal}`);
    if (EXPECT_TOTAL && shownTotal !== EXPECT_TOTAL) {
      fail(`the card shows ${shownTotal}, the total is ${EXPECT_TOTAL}`);
    }
    if (await page.locator(`${analysis(mid4)} ${sel("chart")}`).count()) {
      fail("a single number was drawn as a chart");
    }
    log(`number card: ${shownTotal}`);
    await saveCard(page, analysis(mid4), "ui-number-card.png");

    // A second session analyzing in the background while the first is open.
    const second = await newSessionWithData(page);
    const mid2 = await ask(page, "total revenue by region");
    await page.waitForSelector(`${sel("session-item")}[data-session-id="${second}"] `
      + sel("analyzing-marker"));
    // A second question while one runs is refused, clearly.
    if (await page.getAttribute(analysis(mid2), "data-status") !== "completed") {
      await page.fill(sel("question-input"), "max revenue by region");
      await page.click(sel("ask"));
      // The first one may finish between the check above and the click (a loaded
      // machine): then the question is accepted and no notice comes.
      const notice = page.locator(sel("notice"));
      const shown = await notice.waitFor({ timeout: 10000 }).then(() => true, () => false);
      const text = shown ? (await notice.textContent()).trim() : "";
      if (text.includes("An analysis is already running in this session")) {
        log("a second question while one runs is refused with a clear message");
      } else {
        log(`second question not refused (${text || "accepted"})`);
      }
    }
    await page.click(`${sel("session-item")}[data-session-id="${first}"]`);
    await page.waitForSelector(`${sel("session-item")}[data-session-id="${first}"]`
      + `[data-current="true"]`);
    log(`switched back to ${first}; waiting for ${second} to finish in the background`);
    await page.waitForSelector(`${sel("session-item")}[data-session-id="${second}"] `
      + sel("unread-dot"));
    log(`unread dot on ${second}`);
    const firstDot = await page.locator(`${sel("session-item")}[data-session-id="${first}"] `
      + sel("unread-dot")).count();
    if (firstDot) fail("the open session shows an unread dot");

    // Opening it clears the dot.
    await page.click(`${sel("session-item")}[data-session-id="${second}"]`);
    await page.waitForSelector(`${sel("analysis")}[data-status="completed"]`);
    await page.waitForFunction((s) => !document.querySelector(
      `[data-testid="session-item"][data-session-id="${s}"] [data-testid="unread-dot"]`), second);
    log("opening the session cleared its dot");

    const relevant = consoleErrors.filter((e) => !/Failed to load resource.*40[49]/.test(e)
      && !/dev-token/.test(e));
    if (relevant.length) fail(`errors in the page console:\n${relevant.join("\n")}`);
    log("OK");
  } finally {
    await browser.close();
  }
}

main().catch((err) => fail(err && err.stack ? err.stack : String(err)));
