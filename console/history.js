// A channel's history and its delivery receipts, and one event's receipts on every channel.
//
// History pages forward only (listChannelEvents answers the next page's after_sequence), so
// "Older" walks back through the after_sequence of each page already shown. An event's
// receipts (getClaimEvent) need the publisher key typed in the publish form.
import {
  $, api, describeProblem, h, parameterSchema, publisherKeyHeader, showResult,
} from "./common.js";

const PAGE_FIELDS = ["head_sequence", "first_available_sequence", "unavailable", "next_after_sequence"];
const CHANNEL_RECEIPTS = ["channel_id", "status", "delivered_sequence", "acknowledged_sequence", "pending_events"];
const EVENT_FIELDS = ["event_id", "event_type", "claim_id", "occurred_at", "recorded_at", "channels"];

/** The channel the History panel reads, and its pages: `walk` holds the after_sequence of
 * each page from the first to the one shown; `next` is the shown page's next_after_sequence. */
const history = { channelId: null, walk: [], next: null, loading: 0 };
/** The event whose receipts are shown, and their page. */
const receipts = { eventId: null, page: 1, pages: 1, loading: 0 };

export function setupHistory() {
  // Page sizes are bounded by the operations' own `limit` parameters.
  const sizes = { "history-limit": "listChannelEvents", "event-receipts-limit": "getClaimEvent" };
  for (const [input, operationId] of Object.entries(sizes)) {
    const { minimum, maximum } = parameterSchema(operationId, "limit");
    Object.assign($(input), { min: minimum, max: maximum });
  }
  $("history-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const channelId = $("history-channel").value.trim();
    if (channelId) showHistory(channelId);
  });
  $("history-older").addEventListener("click", () => loadHistory(history.walk.slice(0, -1)));
  $("history-newer").addEventListener("click", () => loadHistory([...history.walk, history.next]));
  $("history-refresh").addEventListener("click", () => {
    loadHistory(history.walk);
    refreshChannelReceipts();
  });
  $("event-receipts-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const eventId = $("event-receipts-id").value.trim();
    if (eventId) showEventReceipts(eventId);
  });
  const turn = (by) => () => showEventReceipts(receipts.eventId, receipts.page + by);
  $("event-receipts-previous").addEventListener("click", turn(-1));
  $("event-receipts-next").addEventListener("click", turn(+1));
  // Event ids are buttons in the history and in the live events alike.
  document.addEventListener("click", (event) => {
    const button = event.target.closest?.("button.event-id");
    if (button) showEventReceipts(button.dataset.eventId);
  });
}

/** An event id that opens the event's receipts when clicked. */
export function eventIdButton(eventId) {
  return h("button", { type: "button", class: "event-id", title: "Show its receipts", dataset: { eventId } }, eventId);
}

// -- a channel's history and receipts ------------------------------------------------------

/** Show `channelId`'s receipts and its history from the oldest kept event. */
export function showHistory(channelId) {
  history.channelId = channelId;
  $("history-channel").value = channelId;
  $("history-refresh").disabled = false;
  refreshChannelReceipts();
  return loadHistory([0]);
}

async function loadHistory(walk) {
  const { channelId } = history;
  const after = walk.at(-1);
  const query = new URLSearchParams({ after_sequence: String(after), limit: $("history-limit").value || "50" });
  const ticket = ++history.loading;
  const answer = await api("GET", `realtime-subscriptions/${encodeURIComponent(channelId)}/events?${query}`);
  if (ticket !== history.loading) return; // a later request owns the panel
  const result = $("history-result");
  if (!answer.ok) {
    Object.assign(history, { walk: [0], next: null });
    $("history-fields").replaceChildren();
    $("history-body").replaceChildren();
    pagingButtons();
    return showResult(result, `${channelId}: ${describeProblem(answer.status, answer.body)}`, "error");
  }
  const page = answer.body;
  Object.assign(history, { walk, next: page.next_after_sequence });
  pagingButtons();
  showFields($("history-fields"), pick(page, PAGE_FIELDS));
  const { data, head_sequence: head, first_available_sequence: first, unavailable } = page;
  $("history-body").replaceChildren(...data.map(historyRow));
  const [from, to] = [data[0]?.sequence, data.at(-1)?.sequence];
  const shown = !data.length
    ? `No kept events after sequence ${after} (head ${head}).`
    : `${from === to ? `Sequence ${from}` : `Sequences ${from}–${to}`} of ${head} (page ${walk.length}).`;
  // Retention may have dropped events this page would have started with: say how many.
  const lost = unavailable
    ? ` ${unavailable} event(s) after sequence ${after} are no longer kept; history starts at ${first}.`
    : "";
  showResult(result, shown + lost, unavailable ? "warning" : "ok");
}

function pagingButtons() {
  $("history-older").disabled = history.walk.length < 2;
  $("history-newer").disabled = history.next === null;
}

function historyRow(event) {
  return h(
    "tr",
    { dataset: { sequence: event.sequence, eventId: event.event_id } },
    h("td", { class: "seq" }, String(event.sequence)),
    h("td", { class: "type" }, event.event_type),
    h("td", { class: "claim" }, event.claim_id),
    h("td", {}, event.occurred_at),
    h("td", {}, eventIdButton(event.event_id)),
  );
}

/** The receipts of the History panel's channel, from a list refresh or getSubscription. */
export function showChannelReceipts(channel) {
  if (!channel || channel.channel_id !== history.channelId) return;
  showFields($("channel-receipts"), pick(channel, CHANNEL_RECEIPTS));
}

async function refreshChannelReceipts() {
  const { channelId } = history;
  const answer = await api("GET", `realtime-subscriptions/${encodeURIComponent(channelId)}`);
  if (answer.ok) return showChannelReceipts(answer.body);
  if (channelId !== history.channelId) return;
  const problem = describeProblem(answer.status, answer.body);
  $("channel-receipts").replaceChildren(h("dt", {}, channelId), h("dd", {}, problem));
}

// -- one event's receipts ------------------------------------------------------------------

async function showEventReceipts(eventId, page = 1) {
  $("event-receipts-id").value = eventId;
  const result = $("event-receipts-result");
  const key = $("publisher-key").value;
  const header = publisherKeyHeader();
  if (!key) {
    const message = `Reading receipts needs the publisher key (${header}): type it in "Publish a test event".`;
    return showResult(result, message, "error");
  }
  const query = new URLSearchParams({ page: String(page), limit: $("event-receipts-limit").value || "20" });
  const ticket = ++receipts.loading;
  const headers = { [header]: key };
  const answer = await api("GET", `claim-events/${encodeURIComponent(eventId)}?${query}`, { headers });
  if (ticket !== receipts.loading) return;
  if (!answer.ok) {
    Object.assign(receipts, { eventId, page: 1, pages: 1 });
    $("event-fields").replaceChildren();
    $("event-receipts-body").replaceChildren();
    receiptButtons();
    return showResult(result, `${eventId}: ${describeProblem(answer.status, answer.body)}`, "error");
  }
  const { receipts: found, ...event } = answer.body;
  const { total, limit } = found.pagination;
  Object.assign(receipts, { eventId, page, pages: Math.max(1, Math.ceil(total / limit)) });
  receiptButtons();
  showFields($("event-fields"), pick(event, EVENT_FIELDS));
  $("event-receipts-body").replaceChildren(...found.data.map(receiptRow));
  showResult(result, `${total} receipt(s) still kept; page ${page} of ${receipts.pages}.`, "ok");
}

function receiptButtons() {
  $("event-receipts-previous").disabled = receipts.page <= 1;
  $("event-receipts-next").disabled = receipts.page >= receipts.pages;
}

function receiptRow(receipt) {
  const flag = (name) => {
    const answer = receipt[name] ? "yes" : "no";
    return h("td", { class: `${name} ${answer}` }, answer);
  };
  return h(
    "tr",
    { dataset: { channelId: receipt.channel_id } },
    h("td", {}, h("code", {}, receipt.channel_id)),
    h("td", {}, receipt.subscription_type),
    h("td", {}, receipt.user_id),
    h("td", { class: "seq" }, String(receipt.sequence)),
    flag("delivered"),
    flag("acknowledged"),
  );
}

const pick = (object, names) => Object.fromEntries(names.map((name) => [name, object[name]]));

/** `fields` as a definition list, each value as JSON (null stays visible as null). */
function showFields(list, fields) {
  list.replaceChildren(
    ...Object.entries(fields).flatMap(([name, value]) => [
      h("dt", {}, name),
      h("dd", { dataset: { field: name } }, JSON.stringify(value ?? null)),
    ]),
  );
}
