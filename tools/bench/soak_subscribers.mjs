// The subscriber side of the soak run: N socket.io-client connections, one per channel, that
// drop and resume at random while events flow, and check what they received by sequence.
//
//   node soak_subscribers.mjs <config.json>
//
// Config: {channels: [{websocket_url, token, key, channel_id}], concurrency?: 100,
//          timeout_s?: 60, drop_every_s: 60, reconnect_min_s: 0.1, reconnect_max_s: 3}
//
// A drop closes the transport abruptly, as a network failure would (`socket.io.engine.close()`:
// no Socket.IO disconnect packet, the server only sees the connection go). After a random
// delay in [reconnect_min_s, reconnect_max_s] the same socket reconnects; its `auth` callback
// sends `last_sequence` = the highest sequence up to which it has everything, so the server
// replays what was missed. Every client keeps a bitmap of the sequences it has seen: it
// dedupes by sequence and can tell a gap (a sequence that skipped ahead: loss) from a
// duplicate (a sequence seen before).
//
// stdout: JSON lines. First {"kind": "attached", ...} once every socket got `recovery` (or the
// timeout passed). Then one line per stdin command (JSON lines):
//   {"cmd": "chaos", "on": true|false}  start/stop dropping -> {"kind": "chaos", on}
//   {"cmd": "progress"}                 -> {"kind": "progress", ...} (cheap counters)
//   {"cmd": "report", "expected": {channel_id: head}}
//                                       -> {"kind": "stats", ...}: the counters plus, against
//                                          each channel's head, what is missing or extra
//   {"cmd": "quit"}                     disconnect everything and exit 0 (so does EOF)
import { readFileSync } from "node:fs";
import { createInterface } from "node:readline";
import { io } from "socket.io-client";

const config = JSON.parse(readFileSync(process.argv[2], "utf8"));
const channels = config.channels;
const n = channels.length;
const timeoutMs = (config.timeout_s ?? 60) * 1000;
const dropEveryMs = (config.drop_every_s ?? 60) * 1000;
const reconnectMinMs = (config.reconnect_min_s ?? 0.1) * 1000;
const reconnectMaxMs = (config.reconnect_max_s ?? 3) * 1000;

const out = (kind, fields = {}) => process.stdout.write(JSON.stringify({ kind, ...fields }) + "\n");

// Per channel.
const seen = new Array(n); // Uint8Array bitmap indexed by sequence (grown by doubling)
const contiguous = new Float64Array(n); // every sequence 1..contiguous[i] has been received
const highest = new Float64Array(n); // the highest sequence received
const attachedNow = new Uint8Array(n); // got `recovery` on the current connection
const everAttached = new Uint8Array(n);
const dropping = new Uint8Array(n); // we closed its transport on purpose
const sockets = new Array(n);
const dropTimers = new Array(n);

// Whole-run counters.
let received = 0; // every event, duplicates included
let unique = 0; // distinct (channel, sequence) pairs
let duplicates = 0; // a sequence this channel had already received (before dedupe)
let gaps = 0; // sequences skipped over when a later one arrived (loss as seen live)
let gapEvents = 0; // how many times a sequence skipped ahead
let filledLate = 0; // a sequence below the highest, not seen before (a gap being filled)
let drops = 0; // transports we closed on purpose
let resumes = 0; // `recovery` received on a reconnection (after a drop or any disconnect)
let recoveries = 0; // every `recovery`, first attach included
let unrecovered = 0; // `recovery` with recovered: false
let unavailable = 0; // sum of `recovery.unavailable`
let replayed = 0; // sum of `recovery.replayed`
let reconnectAttempts = 0;
let connectErrors = 0;
const errorMessages = {};
const otherDisconnects = {}; // disconnects we did not cause, by reason
let connected = 0;
let chaos = false;
let quitting = false;

const uniform = (low, high) => low + Math.random() * (high - low);
// Exponential intervals: drops as a Poisson process, `drop_every_s` apart on average.
const exponential = (mean) => -mean * Math.log(1 - Math.random());

function mark(i, seq) {
  // True if `seq` is new to channel i.
  let bits = seen[i];
  if (seq >= bits.length) {
    let size = bits.length;
    while (size <= seq) size *= 2;
    const grown = new Uint8Array(size);
    grown.set(bits);
    seen[i] = bits = grown;
  }
  if (bits[seq]) return false;
  bits[seq] = 1;
  return true;
}

function onEvent(i, name, args) {
  if (name === "recovery" || name === "channel_closed") return;
  const payload = args[0];
  const ack = typeof args[args.length - 1] === "function" ? args[args.length - 1] : null;
  const seq = payload.sequence;
  received += 1;
  if (!mark(i, seq)) {
    duplicates += 1;
  } else {
    unique += 1;
    if (seq > highest[i] + 1) {
      gaps += seq - highest[i] - 1;
      gapEvents += 1;
    } else if (seq < highest[i]) {
      filledLate += 1;
    }
    if (seq > highest[i]) highest[i] = seq;
    const bits = seen[i];
    let c = contiguous[i];
    while (c + 1 < bits.length && bits[c + 1]) c += 1;
    contiguous[i] = c;
  }
  // Confirm like a real client does (the ack id is the sequence on our server).
  if (ack) ack();
}

let startedAt = 0;
let attachedCount = 0;
let attachedReported = false;
let nextToOpen = 0;
let timer = null;

function open(i) {
  const channel = channels[i];
  seen[i] = new Uint8Array(1024);
  const socket = io(channel.websocket_url, {
    transports: ["websocket"],
    forceNew: true, // one connection per subscriber: never multiplex namespaces
    reconnection: false, // reconnections are ours: after a random delay, see reconnectLater
    // Called on every (re)connection: resume after everything already received.
    auth: (cb) => cb({ token: channel.token, last_sequence: contiguous[i] }),
  });
  sockets[i] = socket;
  socket.on("connect", () => {
    connected += 1;
  });
  socket.on("recovery", (payload) => {
    recoveries += 1;
    if (payload.recovered === false) unrecovered += 1;
    unavailable += payload.unavailable ?? 0;
    replayed += payload.replayed ?? 0;
    attachedNow[i] = 1;
    if (everAttached[i]) {
      resumes += 1;
      return;
    }
    everAttached[i] = 1;
    attachedCount += 1;
    openMore();
    if (attachedCount === n) reportAttached();
  });
  socket.on("disconnect", (reason) => {
    connected -= 1;
    attachedNow[i] = 0;
    if (quitting) return;
    if (dropping[i]) dropping[i] = 0;
    else otherDisconnects[reason] = (otherDisconnects[reason] ?? 0) + 1;
    reconnectLater(i);
  });
  socket.on("connect_error", (err) => {
    connectErrors += 1;
    const key = String(err.message).slice(0, 120);
    errorMessages[key] = (errorMessages[key] ?? 0) + 1;
    if (!quitting) reconnectLater(i);
  });
  socket.onAny((name, ...args) => onEvent(i, name, args));
}

function reconnectLater(i) {
  setTimeout(() => {
    if (quitting || sockets[i].connected) return;
    reconnectAttempts += 1;
    sockets[i].connect();
  }, uniform(reconnectMinMs, reconnectMaxMs));
}

function scheduleDrop(i) {
  dropTimers[i] = setTimeout(() => {
    if (!chaos) return;
    if (attachedNow[i] && sockets[i].connected) {
      drops += 1;
      dropping[i] = 1;
      attachedNow[i] = 0;
      sockets[i].io.engine.close(); // the transport goes, as on a network failure
    }
    scheduleDrop(i);
  }, exponential(dropEveryMs));
}

function setChaos(on) {
  chaos = on;
  for (let i = 0; i < n; i++) {
    clearTimeout(dropTimers[i]);
    if (on) scheduleDrop(i);
  }
}

function openMore() {
  const limit = config.concurrency ?? 100;
  while (nextToOpen < n && nextToOpen - attachedCount < limit) open(nextToOpen++);
}

function reportAttached() {
  if (attachedReported) return;
  attachedReported = true;
  clearTimeout(timer);
  out("attached", {
    channels: n,
    attached: attachedCount,
    failed: n - attachedCount,
    elapsed_ms: Date.now() - startedAt,
    connect_errors: connectErrors,
    error_messages: errorMessages,
  });
}

function counters() {
  let attached = 0;
  for (let i = 0; i < n; i++) attached += attachedNow[i];
  const usage = process.cpuUsage();
  return {
    received,
    unique,
    duplicates,
    gaps,
    gap_events: gapEvents,
    filled_late: filledLate,
    drops,
    resumes,
    recoveries,
    unrecovered,
    unavailable,
    replayed,
    reconnect_attempts: reconnectAttempts,
    connect_errors: connectErrors,
    error_messages: errorMessages,
    other_disconnects: otherDisconnects,
    connected,
    attached_now: attached,
    cpu_ms: (usage.user + usage.system) / 1000,
  };
}

function stats(expected) {
  // Against each channel's head: the received set must be exactly 1..head.
  let missing = 0;
  let beyond = 0;
  let complete = 0;
  const incomplete = [];
  for (let i = 0; i < n; i++) {
    const head = expected[channels[i].channel_id] ?? 0;
    let channelMissing = 0;
    if (contiguous[i] < head) {
      const bits = seen[i];
      for (let s = contiguous[i] + 1; s <= head; s++) if (!(s < bits.length && bits[s])) channelMissing += 1;
    }
    const channelBeyond = highest[i] > head ? highest[i] - head : 0;
    missing += channelMissing;
    beyond += channelBeyond;
    if (channelMissing === 0 && channelBeyond === 0) complete += 1;
    else if (incomplete.length < 5) {
      incomplete.push({ channel_id: channels[i].channel_id, head, contiguous: contiguous[i], highest: highest[i] });
    }
  }
  return { ...counters(), missing, beyond_head: beyond, channels_complete: complete, incomplete };
}

const commands = createInterface({ input: process.stdin });
commands.on("line", (line) => {
  if (!line.trim()) return;
  const command = JSON.parse(line);
  if (command.cmd === "chaos") {
    setChaos(Boolean(command.on));
    out("chaos", { on: chaos });
  } else if (command.cmd === "progress") {
    out("progress", counters());
  } else if (command.cmd === "report") {
    out("stats", stats(command.expected ?? {}));
  } else if (command.cmd === "quit") {
    quit();
  }
});
commands.on("close", quit);

function quit() {
  quitting = true;
  setChaos(false);
  for (const socket of sockets) socket?.disconnect();
  process.stdout.write("", () => process.exit(0));
}

startedAt = Date.now();
timer = setTimeout(reportAttached, timeoutMs);
if (n === 0) reportAttached();
else openMore();
