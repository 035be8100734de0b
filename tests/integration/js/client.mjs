// A scriptable socket.io-client subscriber driven by tests/integration/test_js_client.py.
//
//   node client.mjs '<json config>'
//
// Config: {websocket_url, token, transports?, ack?: "callback" | "emit" | "none",
//          ack_upto?: number, reconnection_delay?: number}
//
// Every observation is one JSON line on stdout ({"kind": ...}); commands are lines on stdin:
//   drop       close the underlying Engine.IO connection (a network drop). socket.io-client
//              reconnects by itself, but the CONNECT of the next connection is held until...
//   release    ...this command, so the test can publish while the client is surely away.
//   disconnect a clean client disconnect (socket.disconnect()).
//   quit       disconnect and exit 0 (so does the end of stdin).
// The client prints every event it receives (no dedupe), so the test can see duplicates.
import { createInterface } from "node:readline";
import { io } from "socket.io-client";

const config = JSON.parse(process.argv[2]);
const ackMode = config.ack ?? "callback";
const emit = (kind, fields = {}) => process.stdout.write(JSON.stringify({ kind, ...fields }) + "\n");
const exit = (code) => process.stdout.write("", () => process.exit(code));

let lastSequence = null; // highest sequence received: what a resuming client sends back
let hold = null; // a promise that holds the next CONNECT until "release"
let release = () => {};

const socket = io(config.websocket_url, {
  transports: config.transports ?? ["polling", "websocket"],
  reconnectionDelay: config.reconnection_delay ?? 100,
  reconnectionDelayMax: config.reconnection_delay ?? 100,
  // Called by socket.io-client on every (re)connection.
  auth: (cb) => {
    const auth = { token: config.token };
    if (lastSequence !== null) auth.last_sequence = lastSequence;
    emit("auth", { auth: { ...auth, token: undefined } });
    (hold ?? Promise.resolve()).then(() => cb(auth));
  },
});

socket.on("connect", () => emit("connect", { transport: socket.io.engine.transport.name }));
socket.on("disconnect", (reason) => emit("disconnect", { reason }));
socket.on("connect_error", (err) => emit("connect_error", { message: err.message, data: err.data ?? null }));
socket.on("recovery", (payload) => emit("recovery", { payload }));
socket.on("channel_closed", (payload) => emit("channel_closed", { payload }));

const EVENT_TYPES = ["status_changed", "claim_submitted", "claim_approved", "claim_rejected", "comment_added"];
socket.onAny((name, ...args) => {
  if (!EVENT_TYPES.includes(name)) return;
  const ack = typeof args.at(-1) === "function" ? args.pop() : null;
  const payload = args[0];
  emit("event", { name, payload, has_ack: ack !== null });
  lastSequence = Math.max(lastSequence ?? 0, payload.sequence);
  if (config.ack_upto != null && payload.sequence > config.ack_upto) return;
  if (ackMode === "callback" && ack) ack();
  if (ackMode === "emit") socket.emit("ack", { sequence: payload.sequence });
});

const commands = createInterface({ input: process.stdin });
commands.on("close", () => {
  socket.disconnect(); // stdin closed: the test is gone
  exit(0);
});
commands.on("line", (line) => {
  const command = line.trim();
  if (command === "drop") {
    hold = new Promise((resolve) => (release = resolve));
    emit("dropping");
    socket.io.engine.close(); // emits "disconnect" at once: socket.io-client will reconnect
  } else if (command === "release") {
    hold = null;
    release();
  } else if (command === "disconnect") {
    socket.disconnect();
  } else if (command === "quit") {
    socket.disconnect();
    exit(0);
  }
});
