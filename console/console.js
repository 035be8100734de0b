// The claims-realtime live console: plain ES modules, no build step. This one holds the
// subscribe, channel list, connection and publish panels; common.js the shared helpers;
// history.js a channel's history and the delivery receipts.
//
// Every form is built from the OpenAPI document the service serves (/api/v1/openapi.json):
// the subscribe operations and their request schemas, the list filters, the claim event
// schema and the event types. Channels are watched with the official socket.io-client, the
// npm package's browser bundle served by this service (./vendor/). Channel tokens and the
// publisher key live in this page's memory only.
import { io } from "./vendor/socket.io.esm.min.js";
import {
  $, api, deref, describeProblem, flatten, h, loadSpec, log, operationById,
  publisherKeyHeader, showResult, spec,
} from "./common.js";
import { eventIdButton, setupHistory, showChannelReceipts, showHistory } from "./history.js";

/** The POST operations that create a channel: their 201 answer carries a channel_token. */
function subscribeOperations() {
  const operations = [];
  for (const [path, item] of Object.entries(spec.paths)) {
    const post = item.post;
    const created = post?.responses?.["201"]?.content?.["application/json"];
    if (!created || !flatten(created.schema).properties?.channel_token) continue;
    const requestSchema = post.requestBody.content["application/json"].schema;
    operations.push({
      path,
      type: created.example?.subscription_type ?? post.operationId,
      summary: post.summary ?? path,
      schema: flatten(requestSchema),
    });
  }
  return operations;
}

// -- forms built from schemas --------------------------------------------------------------

/** Fill `form` with one field per property of the object `schema`. */
function buildForm(form, schema, defaults = {}, submitLabel = "Submit") {
  form.replaceChildren();
  const required = new Set(schema.required ?? []);
  for (const [name, raw] of Object.entries(schema.properties ?? {})) {
    const prop = flatten(raw);
    const title = [prop.description?.trim(), required.has(name) ? "required" : "optional"]
      .filter(Boolean)
      .join(" — ");
    const label = `${name}${required.has(name) ? " *" : ""}`;
    const items = prop.type === "array" ? flatten(prop.items) : null;
    let field;
    if (items?.enum) {
      field = h(
        "fieldset",
        { class: "field", title, dataset: { name, kind: "enum-array" } },
        h("legend", {}, `${label} (none ticked: all)`),
        items.enum.map((value) =>
          h("label", {}, h("input", { type: "checkbox", name, value }), ` ${value}`),
        ),
      );
    } else if (prop.enum) {
      const select = h(
        "select",
        { name, dataset: { kind: "enum" } },
        required.has(name) ? [] : [h("option", { value: "" }, "—")],
        prop.enum.map((value) => h("option", { value }, String(value))),
      );
      if (defaults[name] !== undefined) select.value = defaults[name];
      field = h("label", { class: "field", title }, `${label} `, select);
    } else if (prop.type === "object") {
      const area = h("textarea", { name, rows: 2, cols: 40, dataset: { kind: "json" } });
      // An object with required members of its own (a fallback) starts empty, and is left out
      // unless filled in; a free one (an event's data) starts as {}.
      area.value = defaults[name] ?? (prop.required?.length ? "" : "{}");
      field = h("label", { class: "field", title }, `${label} (JSON) `, area);
    } else {
      const input = h("input", {
        name,
        required: required.has(name),
        pattern: prop.pattern,
        maxlength: prop.maxLength,
        placeholder: prop.example ?? (prop.format === "date-time" ? "2026-03-26T08:00:00Z" : ""),
        dataset: { kind: "text" },
      });
      input.value = defaults[name] ?? "";
      field = h("label", { class: "field", title }, `${label} `, input);
    }
    form.append(field);
  }
  form.append(h("button", { type: "submit" }, submitLabel));
}

/** The request body the form describes: empty optional fields are left out. */
function readForm(form) {
  const body = {};
  for (const fieldset of form.querySelectorAll("fieldset[data-kind=enum-array]")) {
    const ticked = [...fieldset.querySelectorAll("input:checked")].map((box) => box.value);
    if (ticked.length) body[fieldset.dataset.name] = ticked;
  }
  for (const input of form.querySelectorAll("[data-kind=text], [data-kind=enum]")) {
    if (input.value.trim() !== "") body[input.name] = input.value.trim();
  }
  for (const area of form.querySelectorAll("[data-kind=json]")) {
    if (area.value.trim() === "") continue;
    try {
      body[area.name] = JSON.parse(area.value);
    } catch (error) {
      throw Object.assign(new Error(`${area.name} is not valid JSON: ${error.message}`), {
        field: area.name,
      });
    }
  }
  return body;
}

function markInvalid(form, field) {
  for (const node of form.querySelectorAll("[aria-invalid]")) node.removeAttribute("aria-invalid");
  const name = field?.split(".")[0];
  const node = name && form.querySelector(`[name="${CSS.escape(name)}"], [data-name="${CSS.escape(name)}"]`);
  if (node) node.setAttribute("aria-invalid", "true");
}

// -- subscriptions and the channel list ----------------------------------------------------

/** channel_id -> channel token, for channels created from this page (never stored). */
const tokens = new Map();
/** channel_id -> the latest representation seen (for websocket_url and defaults). */
const channels = new Map();

function setupSubscribe() {
  const operations = subscribeOperations();
  const select = $("subscribe-operation");
  select.replaceChildren(
    ...operations.map((op) => h("option", { value: op.path }, `${op.type} — ${op.summary}`)),
  );
  const render = () => {
    const op = operations.find((candidate) => candidate.path === select.value);
    buildForm($("subscribe-form"), op.schema, { organisation_id: "org_001", user_id: "usr_console" }, "Subscribe");
  };
  select.addEventListener("change", render);
  render();
  $("subscribe-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = event.currentTarget;
    const result = $("subscribe-result");
    let body;
    try {
      body = readForm(form);
    } catch (error) {
      markInvalid(form, error.field);
      return showResult(result, error.message, "error");
    }
    const answer = await api("POST", select.value, { body });
    if (!answer.ok) {
      markInvalid(form, answer.body?.field);
      return showResult(result, describeProblem(answer.status, answer.body), "error");
    }
    markInvalid(form, null);
    const channel = answer.body;
    tokens.set(channel.channel_id, channel.channel_token);
    channels.set(channel.channel_id, channel);
    showResult(result, `Created ${channel.channel_id} (${channel.subscription_type}); its token is kept in this page only.`, "ok");
    log(`created ${channel.channel_id}`);
    chooseChannel(channel.channel_id);
    await refreshChannels();
  });
}

function setupChannelFilters() {
  const { operation } = operationById("listSubscriptions");
  const filter = $("channels-filter");
  for (const parameter of operation.parameters ?? []) {
    const schema = flatten(deref(parameter).schema);
    if (!schema.enum) continue;
    const name = deref(parameter).name;
    filter.prepend(
      h(
        "label",
        {},
        `${name} `,
        h(
          "select",
          { name, onchange: () => refreshChannels() },
          h("option", { value: "" }, "any"),
          schema.enum.map((value) => h("option", { value }, value)),
        ),
      ),
      " ",
    );
  }
  filter.addEventListener("submit", (event) => {
    event.preventDefault();
    refreshChannels();
  });
}

let refreshing = null;

async function refreshChannels() {
  // One refresh at a time; a request during one runs once it is done.
  if (refreshing) return refreshing.then(() => refreshChannels());
  refreshing = (async () => {
    const query = new URLSearchParams({ limit: "20" });
    for (const select of $("channels-filter").querySelectorAll("select")) {
      if (select.value) query.set(select.name, select.value);
    }
    const list = await api("GET", `realtime-subscriptions?${query}`);
    if (!list.ok) {
      $("channels-total").textContent = describeProblem(list.status, list.body);
      return;
    }
    // The list has status; the detail adds event_count and websocket_url.
    const details = await Promise.all(
      list.body.data.map((row) => api("GET", `realtime-subscriptions/${row.channel_id}`)),
    );
    const rows = list.body.data.map((row, index) => {
      const detail = details[index].ok ? details[index].body : row;
      channels.set(row.channel_id, { ...channels.get(row.channel_id), ...detail });
      return h(
        "tr",
        { dataset: { channelId: row.channel_id, status: detail.status } },
        h("td", {}, h("code", {}, row.channel_id)),
        h("td", {}, row.subscription_type),
        h("td", {}, row.organisation_id ?? "–"),
        h("td", {}, row.user_id),
        h("td", { class: `status ${detail.status}` }, detail.status),
        h("td", { class: "count" }, String(detail.event_count ?? "–")),
        h("td", {}, row.last_event_at ?? "–"),
        // Receipts: how far the subscriber got (null until the first delivery).
        h("td", { class: "delivered" }, String(detail.delivered_sequence ?? "–")),
        h("td", { class: "acknowledged" }, String(detail.acknowledged_sequence ?? "–")),
        h("td", { class: "pending" }, String(detail.pending_events ?? "–")),
        h(
          "td",
          {},
          h("button", { type: "button", class: "choose", onclick: () => chooseChannel(row.channel_id, true) },
            tokens.has(row.channel_id) ? "Connect" : "Use…"),
          " ",
          h("button", { type: "button", class: "close", onclick: () => closeChannel(row.channel_id) }, "Close"),
        ),
      );
    });
    $("channels-body").replaceChildren(...rows);
    for (const row of list.body.data) showChannelReceipts(channels.get(row.channel_id));
    const { page, total } = list.body.pagination;
    $("channels-total").textContent = `${total} channel(s) match; page ${page}.`;
  })();
  try {
    await refreshing;
  } finally {
    refreshing = null;
  }
}

async function closeChannel(channelId) {
  const answer = await api("DELETE", `realtime-subscriptions/${channelId}`);
  log(answer.ok ? `closed ${channelId}` : `close ${channelId}: ${describeProblem(answer.status, answer.body)}`,
    answer.ok ? "info" : "error");
  tokens.delete(channelId);
  await refreshChannels();
}

/** Put a channel in the connection form (and connect when its token is known). */
function chooseChannel(channelId, connectNow = false) {
  const channel = channels.get(channelId);
  $("connect-url").value = channel.websocket_url;
  $("connect-token").value = tokens.get(channelId) ?? "";
  // The publish form routes to this channel by default.
  const publish = $("publish-form");
  if (channel.organisation_id) publish.elements.organisation_id.value = channel.organisation_id;
  publish.elements.user_id.value = channel.user_id;
  showHistory(channelId);
  if (connectNow) {
    if (tokens.has(channelId)) connect();
    else $("connect-token").focus();
  }
}

// -- the Socket.IO connection --------------------------------------------------------------

let eventTypes = new Set();
let socket = null;
let current = null; // {url, channelId}
let lastSequence = null; // the highest sequence received: sent back as auth.last_sequence
let recovery = null; // the recovery message of the connection that is open now
let duplicates = 0;
let dropped = false;

function setState(state, text = state) {
  const node = $("connection-state");
  node.dataset.state = state;
  node.textContent = text;
  const open = socket !== null;
  $("drop").disabled = !(open && socket.connected);
  $("resume").disabled = !(open && !socket.connected && (state === "dropped" || state === "disconnected"));
  $("disconnect").disabled = !(open && (socket.connected || state === "connecting"));
}

function connect() {
  const url = $("connect-url").value.trim();
  const token = $("connect-token").value;
  if (!url || !token) return setState("idle", "websocket_url and token are both needed");
  const channelId = new URL(url).pathname.split("/").pop();
  const sameChannel = current?.channelId === channelId;
  closeSocket();
  if (!sameChannel) {
    // Another channel: its sequences start again at 1.
    lastSequence = null;
    duplicates = 0;
    $("events-body").replaceChildren();
    $("duplicates").textContent = "0";
  }
  current = { url, channelId };
  $("connection-channel").textContent = channelId;
  socket = io(url, {
    // Called on every (re)connection, so each sends the sequence reached so far: the server
    // replays exactly what came after it.
    auth: (cb) => cb(lastSequence === null ? { token } : { token, last_sequence: lastSequence }),
  });
  setState("connecting", "connecting…");

  socket.on("connect", () => {
    dropped = false;
    setState("connected", `connected (${socket.io.engine.transport.name})`);
    log(`connected to ${channelId}${lastSequence === null ? "" : `, last_sequence ${lastSequence}`}`);
    refreshChannels();
  });
  socket.on("recovery", (payload) => {
    recovery = payload;
    showRecovery(payload);
    log(`recovery: resumed from ${payload.resumed_from}, replaying ${payload.replayed}` +
      (payload.recovered ? "" : `, ${payload.unavailable} no longer kept`));
  });
  socket.on("disconnect", (reason) => {
    recovery = null;
    if (dropped) setState("dropped", "dropped (Resume to reconnect and replay)");
    else setState("disconnected", `disconnected: ${reason}`);
    log(`disconnected: ${reason}`);
    refreshChannels();
  });
  socket.on("connect_error", (error) => {
    const code = error.data?.code;
    // socket.io-client does not retry a refusal by the server (error.data is set).
    setState(code ? "refused" : "connecting", code ? `refused: ${error.message} (${code})` : `cannot reach the server: ${error.message}`);
    log(`connect_error: ${error.message}${code ? ` (${code})` : ""}`, "error");
  });
  socket.on("channel_closed", (payload) => {
    log(`channel ${payload.channel_id} closed at ${payload.closed_at}`);
    socket.disconnect();
    setState("closed", `channel closed at ${payload.closed_at}`);
  });
  socket.onAny((name, event, ack) => {
    if (!eventTypes.has(name)) return;
    // Confirm every event, duplicates included: the server's resume point moves past it.
    const confirm = () => typeof ack === "function" && ack();
    if (lastSequence !== null && event.sequence <= lastSequence) {
      duplicates += 1;
      $("duplicates").textContent = String(duplicates);
      return confirm();
    }
    // Replayed: sent from history by the connection that told us its head in `recovery`.
    const replayed = recovery !== null && event.sequence <= recovery.head_sequence;
    lastSequence = event.sequence;
    $("last-sequence").textContent = String(lastSequence);
    addEventRow(name, event, replayed);
    confirm();
  });
}

function closeSocket() {
  if (socket) {
    socket.removeAllListeners();
    socket.offAny();
    socket.disconnect();
    socket = null;
  }
  recovery = null;
}

/** Cut the connection as a network failure would (the server sees the transport close),
 * without socket.io-client's automatic reconnection, so that events are missed until Resume. */
function drop() {
  if (!socket?.connected) return;
  dropped = true;
  socket.io.reconnection(false);
  socket.io.engine.close();
}

function resume() {
  if (!socket || socket.connected) return;
  socket.io.reconnection(true); // a real drop after this one reconnects by itself
  setState("connecting", `resuming from ${lastSequence ?? "the server's resume point"}…`);
  socket.connect();
}

function addEventRow(name, event, replayed) {
  const received = new Date().toISOString().slice(11, 23);
  const row = h(
    "tr",
    { class: replayed ? "replayed" : "live", dataset: { sequence: event.sequence, eventId: event.event_id, replayed: String(replayed) } },
    h("td", { class: "seq" }, String(event.sequence)),
    h("td", { class: "type" }, name),
    h("td", { class: "claim" }, event.claim_id),
    h("td", {}, event.organisation_id),
    h("td", {}, event.user_id),
    h("td", {}, event.occurred_at),
    h("td", {}, received),
    h("td", {}, eventIdButton(event.event_id)),
    h("td", { class: "delivery" }, h("span", { class: "badge" }, replayed ? "replayed" : "live")),
    h("td", {}, h("code", {}, JSON.stringify(event.data))),
  );
  $("events-body").prepend(row);
}

function showRecovery(payload) {
  $("recovery-fields").replaceChildren(
    ...Object.entries(payload).flatMap(([name, value]) => [
      h("dt", {}, name),
      h("dd", { dataset: { field: name } }, JSON.stringify(value)),
    ]),
  );
  const lost = payload.recovered
    ? "nothing lost"
    : `${payload.unavailable} missed event(s) no longer kept; history starts at ${payload.first_available_sequence}`;
  const summary = $("recovery-summary");
  summary.textContent = `Resumed after sequence ${payload.resumed_from}: ${payload.replayed} event(s) replayed, ${lost}.`;
  summary.dataset.recovered = String(payload.recovered);
}

// -- publishing ----------------------------------------------------------------------------

function setupPublish() {
  const { path, operation } = operationById("publishClaimEvent");
  const schema = flatten(operation.requestBody.content["application/json"].schema);
  eventTypes = new Set(flatten(schema.properties.event_type).enum);
  buildForm($("publish-form"), schema, { claim_id: "clm_console", organisation_id: "org_001", user_id: "usr_console" }, "Publish");
  const keyHeader = publisherKeyHeader();
  $("publish-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = event.currentTarget;
    const result = $("publish-result");
    const key = $("publisher-key").value;
    if (!key) return showResult(result, `Type the publisher key first (${keyHeader}).`, "error");
    let body;
    try {
      body = readForm(form);
    } catch (error) {
      markInvalid(form, error.field);
      return showResult(result, error.message, "error");
    }
    const answer = await api("POST", path, { body, headers: { [keyHeader]: key } });
    if (!answer.ok) {
      markInvalid(form, answer.body?.field);
      return showResult(result, describeProblem(answer.status, answer.body), "error");
    }
    markInvalid(form, null);
    const { event_id: eventId, channels: count, duplicate } = answer.body;
    showResult(result, `Accepted ${eventId}: recorded on ${count} channel(s)${duplicate ? " (duplicate)" : ""}.`, "ok");
    log(`published ${body.event_type} ${eventId} to ${count} channel(s)`);
  });
}

// -- start ---------------------------------------------------------------------------------

async function start() {
  const failed = await loadSpec();
  if (failed) {
    showResult($("load-status"), `Cannot load the OpenAPI document: ${describeProblem(failed.status, failed.body)}`, "error");
    return;
  }
  setupSubscribe();
  setupChannelFilters();
  setupPublish();
  setupHistory();
  $("connect-form").addEventListener("submit", (event) => {
    event.preventDefault();
    connect();
  });
  $("drop").addEventListener("click", drop);
  $("resume").addEventListener("click", resume);
  $("disconnect").addEventListener("click", () => {
    dropped = false;
    socket?.disconnect();
  });
  await refreshChannels();
  setInterval(() => document.visibilityState === "visible" && refreshChannels(), 5000);
  showResult($("load-status"), `${spec.info.title} ${spec.info.version} — ready.`, "ok");
  document.body.dataset.ready = "true";
}

start().catch((error) => {
  showResult($("load-status"), `The console failed to start: ${error.message}`, "error");
  throw error;
});
