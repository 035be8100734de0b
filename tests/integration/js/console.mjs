// Drives the live console (/console/) in a real headless Chromium, for
// tests/integration/test_console.py.
//
//   node console.mjs '<json config>'
//
// Config: {base_url, chromium, publisher_key, organisation_id, user_id, claim_id, artifacts,
//          scenario, channel_id}
// scenario "tour" (the default) walks every panel from a new subscription on; "retention"
// reads the history of config.channel_id, which the server keeps only in part.
// Every step is one JSON line on stdout ({"kind": ...}); the test answers on stdin:
//   resume     (tour) after "dropped", once the test has published what the page must miss
//   closed     (retention) after "missing", once the test has closed the channel
// Screenshots go to <artifacts>/console-*.png. Any failure prints {"kind": "error"}, takes
// console-failure.png and exits 1.
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { chromium } from "playwright-core";

const config = JSON.parse(process.argv[2]);
const STEP_TIMEOUT = 10_000; // ms: the bound of every single wait in the page
const emit = (kind, fields = {}) => process.stdout.write(JSON.stringify({ kind, ...fields }) + "\n");

const pending = [];
const waiters = [];
createInterface({ input: process.stdin }).on("line", (line) => {
  const waiter = waiters.shift();
  if (waiter) waiter(line.trim());
  else pending.push(line.trim());
});
const command = () =>
  pending.length ? Promise.resolve(pending.shift()) : new Promise((resolve) => waiters.push(resolve));

mkdirSync(config.artifacts, { recursive: true });
const browser = await chromium.launch({ executablePath: config.chromium, headless: true });
const context = await browser.newContext({ viewport: { width: 1400, height: 1100 } });
const page = await context.newPage();
page.setDefaultTimeout(STEP_TIMEOUT);

// What the page must not do: throw, log errors, or load anything from another origin.
const problems = [];
const foreign = [];
const origin = new URL(config.base_url).host;
page.on("pageerror", (error) => problems.push(`pageerror: ${error.message}`));
page.on("console", (message) => {
  if (message.type() === "error") problems.push(`console.error: ${message.text()}`);
});
page.on("request", (request) => {
  if (new URL(request.url()).host !== origin) foreign.push(request.url());
});
const websockets = [];
page.on("websocket", (socket) => websockets.push(socket.url()));

const shot = (name) => page.screenshot({ path: join(config.artifacts, `console-${name}.png`), fullPage: true });
const text = (selector) => page.locator(selector).innerText();

/** The event rows as the page shows them, oldest first. */
async function eventRows() {
  return page.locator("#events-body tr").evaluateAll((rows) =>
    rows.reverse().map((row) => ({
      sequence: Number(row.dataset.sequence),
      event_id: row.dataset.eventId,
      replayed: row.dataset.replayed === "true",
      type: row.querySelector(".type").textContent,
      claim_id: row.querySelector(".claim").textContent,
      badge: row.querySelector(".badge").textContent,
    })),
  );
}

/** The recovery panel: each field as shown (JSON), and the summary line. */
async function recoveryPanel() {
  const fields = await page.locator("#recovery-fields dd[data-field]").evaluateAll((nodes) =>
    Object.fromEntries(nodes.map((node) => [node.dataset.field, JSON.parse(node.textContent)])),
  );
  return { fields, summary: await text("#recovery-summary") };
}

/** A definition list of the page (`dd[data-field]`, JSON) as an object. */
async function fields(selector) {
  return page.locator(`${selector} dd[data-field]`).evaluateAll((nodes) =>
    Object.fromEntries(nodes.map((node) => [node.dataset.field, JSON.parse(node.textContent)])),
  );
}

/** Retry `action` until `check` holds, within one step's bound. */
async function until(check, action) {
  const deadline = Date.now() + STEP_TIMEOUT;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`not reached within ${STEP_TIMEOUT} ms: ${check}`);
    await action();
    await page.waitForTimeout(250);
  }
}

async function historyRows() {
  return page.locator("#history-body tr").evaluateAll((rows) =>
    rows.map((row) => ({
      sequence: Number(row.querySelector(".seq").textContent),
      type: row.querySelector(".type").textContent,
      claim_id: row.querySelector(".claim").textContent,
      event_id: row.querySelector("button.event-id").textContent,
    })),
  );
}

/** The history page once it shows `count` rows from sequence `first` on. */
async function historyPage(first, count) {
  await page.waitForFunction(
    ([from, rows]) => {
      const shown = [...document.querySelectorAll("#history-body tr")].map((row) => Number(row.dataset.sequence));
      return shown.length === rows && shown[0] === from && document.querySelector("#history-result").dataset.kind !== "error";
    },
    [first, count],
  );
  return {
    rows: await historyRows(),
    fields: await fields("#history-fields"),
    result: await text("#history-result"),
    kind: await page.getAttribute("#history-result", "data-kind"),
    older_disabled: await page.locator("#history-older").isDisabled(),
    newer_disabled: await page.locator("#history-newer").isDisabled(),
  };
}

async function receiptRows() {
  return page.locator("#event-receipts-body tr").evaluateAll((rows) =>
    rows.map((row) => {
      const cells = row.querySelectorAll("td");
      return {
        channel_id: row.dataset.channelId,
        subscription_type: cells[1].textContent,
        user_id: cells[2].textContent,
        sequence: Number(cells[3].textContent),
        delivered: row.querySelector("td.delivered").textContent === "yes",
        acknowledged: row.querySelector("td.acknowledged").textContent === "yes",
      };
    }),
  );
}

/** The receipts of `eventId` once page `number` of them is shown. */
async function receiptPage(eventId, number) {
  await page.waitForFunction(
    ([id, n]) =>
      document.querySelector('#event-fields dd[data-field="event_id"]')?.textContent === JSON.stringify(id) &&
      document.querySelector("#event-receipts-result").textContent.includes(`; page ${n} of`),
    [eventId, number],
  );
  return { rows: await receiptRows(), result: await text("#event-receipts-result") };
}

async function optionTexts(selector) {
  return page.locator(`${selector} option`).evaluateAll((options) =>
    options.map((option) => ({ value: option.value, text: option.textContent })),
  );
}

/** The whole console, from a new subscription to the receipts of a replayed event. */
async function tour() {
    // 1. The page, reached without its trailing slash; the forms come from the OpenAPI document.
    await page.goto(`${config.base_url}/console`);
    await page.waitForSelector("body[data-ready=true]");
    emit("ready", {
      url: page.url(),
      operations: await optionTexts("#subscribe-operation"),
      event_types: (await optionTexts("#publish-form select[name=event_type]")).map((o) => o.value),
      status_filter: (await optionTexts("#channels-filter select[name=status]")).map((o) => o.value),
      type_filter: (await optionTexts("#channels-filter select[name=subscription_type]")).map((o) => o.value),
      subscribe_fields: await page.locator("#subscribe-form [name]").evaluateAll((nodes) => [...new Set(nodes.map((n) => n.name))]),
    });
    await shot("1-ready");

    // 2. An organisation subscription, created in the page.
    const operations = await optionTexts("#subscribe-operation");
    const organisation = operations.find((option) => option.text.startsWith("organisation_claims"));
    await page.selectOption("#subscribe-operation", organisation.value);
    // A bad id first: the API's problem+json is shown and the field it names is marked.
    await page.fill("#subscribe-form [name=organisation_id]", "not valid");
    await page.fill("#subscribe-form [name=user_id]", config.user_id);
    await page.click("#subscribe-form button[type=submit]");
    await page.waitForSelector("#subscribe-result[data-kind=error]");
    emit("refused", {
      result: await text("#subscribe-result"),
      invalid: await page.locator("#subscribe-form [aria-invalid=true]").evaluateAll((nodes) => nodes.map((n) => n.name)),
    });
    await page.fill("#subscribe-form [name=organisation_id]", config.organisation_id);
    await page.fill("#subscribe-form [name=user_id]", config.user_id);
    await page.click("#subscribe-form button[type=submit]");
    await page.waitForSelector("#subscribe-result[data-kind=ok]");
    const websocketUrl = await page.inputValue("#connect-url");
    const channelId = new URL(websocketUrl).pathname.split("/").pop();
    emit("subscribed", { channel_id: channelId, websocket_url: websocketUrl, result: await text("#subscribe-result") });

    // 3. Connect from the channel list.
    await page.click(`#channels-body tr[data-channel-id="${channelId}"] button.choose`);
    await page.waitForSelector("#connection-state[data-state=connected]");
    await page.waitForSelector("#recovery-fields dd[data-field=replayed]");
    emit("connected", { state: await text("#connection-state"), recovery: await recoveryPanel() });

    // 4. Publish from the page, with the publisher key typed in.
    await page.fill("#publisher-key", config.publisher_key);
    await page.selectOption("#publish-form select[name=event_type]", "claim_submitted");
    await page.fill("#publish-form [name=claim_id]", config.claim_id);
    await page.fill("#publish-form [name=data]", '{"amount": 120.5}');
    await page.click("#publish-form button[type=submit]");
    await page.waitForSelector("#publish-result[data-kind=ok]");
    await page.waitForSelector('#events-body tr[data-sequence="1"]');
    emit("published", {
      result: await text("#publish-result"),
      publish_form: {
        organisation_id: await page.inputValue("#publish-form [name=organisation_id]"),
        user_id: await page.inputValue("#publish-form [name=user_id]"),
      },
      rows: await eventRows(),
    });
    await shot("2-live");

    // 5. Drop; the test publishes while the page is away.
    await page.click("#drop");
    await page.waitForSelector("#connection-state[data-state=dropped]");
    emit("dropped", { state: await text("#connection-state") });
    await shot("3-dropped");
    const next = await command();
    if (next !== "resume") throw new Error(`expected "resume" on stdin, got ${JSON.stringify(next)}`);

    // 6. Resume: the recovery panel and the replayed rows.
    await page.click("#resume");
    await page.waitForSelector("#connection-state[data-state=connected]");
    await page.waitForSelector('#events-body tr[data-sequence="3"]');
    emit("resumed", {
      recovery: await recoveryPanel(),
      rows: await eventRows(),
      last_sequence: await text("#last-sequence"),
      duplicates: await text("#duplicates"),
    });

    // 7. The channel list: refreshed, it shows the channel's status and its three events.
    const row = `#channels-body tr[data-channel-id="${channelId}"]`;
    await page.click("#channels-refresh");
    // (The status is written by the server as the socket attaches; the page refreshes every 5 s.)
    // Its receipts too: the page confirmed all three (written back within the flush interval).
    await page.waitForFunction(
      (selector) =>
        document.querySelector(`${selector} td.count`)?.textContent === "3" &&
        document.querySelector(`${selector} td.acknowledged`)?.textContent === "3" &&
        document.querySelector(selector)?.dataset.status === "connected",
      row,
    );
    emit("channel_row", {
      status: await page.locator(row).getAttribute("data-status"),
      count: await text(`${row} td.count`),
      receipts: await page.locator(`${row} td.delivered, ${row} td.acknowledged, ${row} td.pending`)
        .evaluateAll((cells) => Object.fromEntries(cells.map((cell) => [cell.className, cell.textContent]))),
      total: await text("#channels-total"),
    });
    await shot("4-resumed");

  // 8. History, two events a page: Newer follows next_after_sequence, Older walks back.
  await page.fill("#history-limit", "2");
  await page.click("#history-load");
  const pages = [await historyPage(1, 2)];
  await page.click("#history-newer");
  pages.push(await historyPage(3, 1));
  await page.click("#history-older");
  pages.push(await historyPage(1, 2));
  emit("history", { pages });

  // 9. The channel's receipts beside its history, refreshed on demand.
  await until(
    async () => (await fields("#channel-receipts")).acknowledged_sequence === 3,
    () => page.click("#history-refresh"),
  );
  emit("channel_receipts", { fields: await fields("#channel-receipts") });
  await shot("5-history");

  // 10. An event's receipts need the publisher key: without it the page says so.
  const secondEvent = page.locator('#history-body tr[data-sequence="2"] button.event-id');
  await page.fill("#publisher-key", "");
  await secondEvent.click();
  await page.waitForSelector("#event-receipts-result[data-kind=error]");
  emit("no_key", { result: await text("#event-receipts-result"), rows: await receiptRows() });

  // 11. With it, one receipt a page: the replayed event was placed on two channels.
  await page.fill("#publisher-key", config.publisher_key);
  await page.fill("#event-receipts-limit", "1");
  const eventId = await secondEvent.getAttribute("data-event-id");
  await secondEvent.click();
  const receiptPages = [await receiptPage(eventId, 1)];
  await page.click("#event-receipts-next");
  receiptPages.push(await receiptPage(eventId, 2));
  emit("event_receipts", {
    event_id: eventId,
    fields: await fields("#event-fields"),
    pages: receiptPages,
    next_disabled: await page.locator("#event-receipts-next").isDisabled(),
  });

  // 12. A live row's event id opens its receipts as well.
  const liveEventId = await page.locator('#events-body tr[data-sequence="1"]').getAttribute("data-event-id");
  await page.click('#events-body tr[data-sequence="1"] button.event-id');
  emit("live_event_receipts", { event_id: liveEventId, page: await receiptPage(liveEventId, 1) });
  await shot("6-receipts");
}

/** History of a channel whose oldest events retention dropped, then a missing and a closed one. */
async function retention() {
  await page.goto(`${config.base_url}/console/`);
  await page.waitForSelector("body[data-ready=true]");
  await page.fill("#history-channel", config.channel_id);
  await page.fill("#history-limit", "1");
  await page.click("#history-load");
  const first = await historyPage(4, 1);
  await page.click("#history-newer");
  emit("retained", { pages: [first, await historyPage(5, 1)] });

  // Problems: an unknown channel (404), then the same channel once closed (410).
  await page.fill("#history-channel", "chan_missing0");
  await page.click("#history-load");
  await page.waitForSelector("#history-result[data-kind=error]");
  emit("missing", { result: await text("#history-result"), rows: await historyRows() });
  const next = await command();
  if (next !== "closed") throw new Error(`expected "closed" on stdin, got ${JSON.stringify(next)}`);
  await page.fill("#history-channel", config.channel_id);
  await page.click("#history-load");
  await page.waitForFunction(
    (channelId) =>
      document.querySelector("#history-result").textContent.startsWith(`${channelId}: 410`) &&
      document.querySelector("#channel-receipts").textContent.includes("410"),
    config.channel_id,
  );
  emit("gone", {
    result: await text("#history-result"),
    receipts: await text("#channel-receipts"),
    rows: await historyRows(),
  });
  await shot("retention");
}

try {
  if (config.scenario === "retention") await retention();
  else await tour();
  emit("done", { problems, foreign, websockets });
} catch (error) {
  emit("error", { message: String(error?.stack ?? error), problems, foreign });
  await shot("failure").catch(() => {});
  process.exitCode = 1;
} finally {
  await browser.close();
  process.stdin.destroy();
}
