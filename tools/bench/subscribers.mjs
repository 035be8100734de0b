// The subscriber side of the benchmark: N socket.io-client connections, one per channel.
//
//   node subscribers.mjs <config.json>
//
// Config (a file: 1,000 tokens do not fit in one argv string):
//   {channels: [{websocket_url, token, key}], ready_event: "recovery" | "connect",
//    connect: "storm" | "paced", concurrency?: 100, last_sequence?: number | null,
//    ack?: true, timeout_s?: 60}
//
// stdout: JSON lines. First {"kind": "attached", ...} once every socket got its ready event
// (`recovery` on our server, `connect` on the bare baseline, which has no recovery) or the
// timeout passed. Then one line per stdin command (JSON lines):
//   {"cmd": "reset"}                       clear the step counters -> {"kind": "reset"}
//   {"cmd": "report", "expected": {key: n}} -> {"kind": "stats", ...}; `expected` is how many
//                                          events each routing key has had in all (the last
//                                          sequence each of its channels should have seen)
//   {"cmd": "quit"}                        disconnect everything and exit 0 (so does EOF)
//
// Kept light so that the generator is not what is measured: per delivery one subtraction and
// one array push; sorting happens only on report.
import { readFileSync } from "node:fs";
import { createInterface } from "node:readline";
import { io } from "socket.io-client";

const config = JSON.parse(readFileSync(process.argv[2], "utf8"));
const channels = config.channels;
const n = channels.length;
const readyEvent = config.ready_event ?? "recovery";
const doAck = config.ack ?? true;
const timeoutMs = (config.timeout_s ?? 60) * 1000;

// The machine's monotonic clock (CLOCK_MONOTONIC on Linux) in ms, as the publisher stamps
// `sent_at`: one clock for every process, which the wall clock is not here. Each process's
// performance.timeOrigin is the wall clock at its start; when the wall clock was slewed
// during a run, publishers started later disagreed with these long-lived subscribers by tens
// of ms more at each step, and latencies came out negative.
const now = () => Number(process.hrtime.bigint()) / 1e6;
const out = (kind, fields = {}) => process.stdout.write(JSON.stringify({ kind, ...fields }) + "\n");

// Per channel: the highest sequence seen (sequences start at 1, so 0 = none yet).
const last = new Float64Array(n);
const readyAt = new Float64Array(n); // 0 = not attached yet
const sockets = new Array(n);
let firstRecovery = null; // the first `recovery` payload, for single-channel runs (replay)

// Step counters, cleared by "reset".
let latencies = []; // ms, measured (non warm-up) events only
let deliveries = 0; // every event received, warm-up included
let measured = 0;
let gaps = 0; // events skipped over: a sequence arrived above last + 1
let dups = 0; // a sequence at or below one already seen (repeat or out of order)
let firstMeasuredAt = 0;
let lastMeasuredAt = 0;
let lastReceiptAt = 0;
let envelopeBytes = null; // size of the first envelope received, as JSON

// Whole-run counters.
let connectErrors = 0;
const errorMessages = {};
let disconnects = 0;
let connected = 0;

function onEvent(i, name, args) {
  if (name === "recovery" || name === "channel_closed") return;
  const t = now();
  const payload = args[0];
  const ack = typeof args[args.length - 1] === "function" ? args[args.length - 1] : null;
  const seq = payload.sequence;
  const prev = last[i];
  if (seq > prev) {
    if (seq > prev + 1) gaps += seq - prev - 1;
    last[i] = seq;
  } else {
    dups += 1;
  }
  deliveries += 1;
  lastReceiptAt = t;
  if (envelopeBytes === null) envelopeBytes = JSON.stringify(payload).length; // once
  const data = payload.data;
  if (data && data.w !== 1 && typeof data.sent_at === "number") {
    latencies.push(t - data.sent_at);
    measured += 1;
    if (firstMeasuredAt === 0) firstMeasuredAt = t;
    lastMeasuredAt = t;
  }
  // Confirm like a real client does (the ack id is the sequence on our server).
  if (doAck && ack) ack();
}

let startedAt = 0;
let attachedCount = 0;
let attachedReported = false;
let nextToOpen = 0;
let timer = null;

function markReady(i) {
  if (readyAt[i] !== 0) return;
  readyAt[i] = now();
  attachedCount += 1;
  if (config.connect !== "storm") openMore();
  if (attachedCount === n) reportAttached();
}

function open(i) {
  const channel = channels[i];
  const socket = io(channel.websocket_url, {
    transports: ["websocket"],
    forceNew: true, // one connection per subscriber: never multiplex namespaces
    reconnectionDelay: 200,
    reconnectionDelayMax: 1000,
    // Called on every (re)connection: a resumed client says where it is.
    auth: (cb) => {
      const auth = { token: channel.token };
      if (last[i] > 0) auth.last_sequence = last[i];
      else if (config.last_sequence != null) auth.last_sequence = config.last_sequence;
      cb(auth);
    },
  });
  sockets[i] = socket;
  socket.on("connect", () => {
    connected += 1;
    if (readyEvent === "connect") markReady(i);
  });
  socket.on("recovery", (payload) => {
    if (firstRecovery === null) firstRecovery = payload;
    if (readyEvent === "recovery") markReady(i);
  });
  socket.on("disconnect", () => {
    connected -= 1;
    disconnects += 1;
  });
  socket.on("connect_error", (err) => {
    connectErrors += 1;
    const key = String(err.message).slice(0, 120);
    errorMessages[key] = (errorMessages[key] ?? 0) + 1;
  });
  socket.onAny((name, ...args) => onEvent(i, name, args));
}

function openMore() {
  const limit = config.concurrency ?? 100;
  while (nextToOpen < n && nextToOpen - attachedCount < limit) open(nextToOpen++);
}

function reportAttached() {
  if (attachedReported) return;
  attachedReported = true;
  clearTimeout(timer);
  const times = [];
  for (let i = 0; i < n; i++) if (readyAt[i] !== 0) times.push(readyAt[i] - startedAt);
  const sorted = Float64Array.from(times).sort();
  out("attached", {
    channels: n,
    attached: attachedCount,
    failed: n - attachedCount,
    started_at: startedAt,
    elapsed_ms: sorted.length ? sorted[sorted.length - 1] : null,
    attach_p50_ms: percentile(sorted, 0.5),
    attach_p99_ms: percentile(sorted, 0.99),
    connected, // Socket.IO `connect` received: more than `attached` if `recovery` is missing
    connect_errors: connectErrors,
    error_messages: errorMessages,
    recovery: firstRecovery,
  });
}

function percentile(sorted, p) {
  if (sorted.length === 0) return null;
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil(p * sorted.length) - 1));
  return sorted[rank];
}

function stats(expected) {
  // Missing at the tail: events a channel should have by now (per its routing key) but has
  // not received. Gaps in the middle are counted as they happen.
  let missing = 0;
  let extra = 0;
  if (expected) {
    for (let i = 0; i < n; i++) {
      const want = expected[channels[i].key] ?? 0;
      if (last[i] < want) missing += want - last[i];
      else if (last[i] > want) extra += last[i] - want;
    }
  }
  const sorted = Float64Array.from(latencies).sort();
  const usage = process.cpuUsage();
  return {
    deliveries,
    measured,
    p50_ms: percentile(sorted, 0.5),
    p90_ms: percentile(sorted, 0.9),
    p99_ms: percentile(sorted, 0.99),
    max_ms: sorted.length ? sorted[sorted.length - 1] : null,
    gaps,
    missing,
    lost: gaps + missing,
    duplicated: dups,
    beyond_expected: extra,
    first_measured_at: firstMeasuredAt || null,
    last_measured_at: lastMeasuredAt || null,
    last_receipt_at: lastReceiptAt || null,
    highest_sequence: n === 1 ? last[0] : null,
    envelope_bytes: envelopeBytes,
    connected,
    disconnects,
    connect_errors: connectErrors,
    cpu_ms: (usage.user + usage.system) / 1000,
  };
}

const commands = createInterface({ input: process.stdin });
commands.on("line", (line) => {
  if (!line.trim()) return;
  const command = JSON.parse(line);
  if (command.cmd === "reset") {
    latencies = [];
    deliveries = measured = gaps = dups = 0;
    firstMeasuredAt = lastMeasuredAt = lastReceiptAt = 0;
    out("reset");
  } else if (command.cmd === "report") {
    out("stats", stats(command.expected ?? null));
  } else if (command.cmd === "quit") {
    quit();
  }
});
commands.on("close", quit);

function quit() {
  for (const socket of sockets) socket?.disconnect();
  process.stdout.write("", () => process.exit(0));
}

startedAt = now();
timer = setTimeout(reportAttached, timeoutMs);
if (n === 0) reportAttached();
else if (config.connect === "storm") for (let i = 0; i < n; i++) open(i);
else {
  nextToOpen = 0;
  openMore();
}
