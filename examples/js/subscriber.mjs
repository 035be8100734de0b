// A resuming claims-realtime subscriber: copy it and replace `handle` with your own code.
//
//   npm install socket.io-client@4
//   node subscriber.mjs <websocket_url> <channel_token> [last_sequence]
//
// websocket_url and channel_token come from POST /api/v1/realtime-subscriptions/{organisation,user}.
// Each event is printed as one JSON line on stdout; diagnostics go to stderr.
import { io } from "socket.io-client";

const [url, token, resumeFrom] = process.argv.slice(2);
if (!url || !token) {
  console.error("usage: node subscriber.mjs <websocket_url> <channel_token> [last_sequence]");
  process.exit(2);
}

const EVENT_TYPES = new Set([
  "status_changed", "claim_submitted", "claim_approved", "claim_rejected", "comment_added",
]);
// Refusals that retrying cannot fix.
const FATAL = new Set([
  "invalid_token", "channel_not_found", "channel_closed", "token_required", "last_sequence_ahead",
]);

// The last sequence processed. Persist it with your data to resume across restarts; without
// it, the server resumes after the last sequence the channel confirmed (acked).
let lastSequence = resumeFrom ? Number(resumeFrom) : null;

function handle(event) {
  process.stdout.write(JSON.stringify(event) + "\n");
}

const socket = io(url, {
  // A function, called on every (re)connection, so that each sends the sequence reached so
  // far: the server replays exactly what came after it, in order, then goes live.
  auth: (cb) => cb(lastSequence === null ? { token } : { token, last_sequence: lastSequence }),
});

socket.on("recovery", (r) => {
  const lost = r.unavailable ? ` (${r.unavailable} older events no longer kept)` : "";
  console.error(`recovery: resumed from ${r.resumed_from}, replaying ${r.replayed}${lost}`);
});

socket.onAny((name, event, ack) => {
  if (!EVENT_TYPES.has(name)) return;
  if (lastSequence === null || event.sequence > lastSequence) { // skip what was already seen
    handle(event);
    lastSequence = event.sequence;
  }
  if (typeof ack === "function") ack(); // confirm it: the server's resume point moves past it
});

socket.on("channel_closed", (c) => {
  console.error(`channel ${c.channel_id} closed at ${c.closed_at}`);
  socket.disconnect(); // nothing else keeps the process alive: it exits with code 0
});

socket.on("connect_error", (err) => {
  const code = err.data?.code;
  if (FATAL.has(code)) {
    console.error(`cannot subscribe: ${err.message} (${code})`);
    process.exitCode = 1; // socket.io-client does not retry a refusal: the process exits
  } else if (code) {
    setTimeout(() => socket.connect(), 2000); // refused for a passing reason: try again
  } // no code: the server is unreachable, and socket.io-client keeps retrying by itself
});

// After a drop, socket.io-client reconnects by itself (unless we or the server closed it).
socket.on("disconnect", (reason) => console.error(`disconnected: ${reason}`));
