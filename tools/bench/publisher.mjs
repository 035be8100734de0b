// The publisher side of the benchmark: posts claim event batches to a batch endpoint.
//
//   node publisher.mjs '<json config>'
//
// Config: {mode: "rate" | "ingest", url, headers?, keys: [...], key_field: "organisation_id" |
//          "user_id", duration_s, envelope_bytes?: 300,
//          rate mode:   rate (events/s), warmup_s?, tick_ms?: 10, max_inflight?: 4,
//                       backlog_limit_ms?: 50
//          ingest mode: concurrency?: 4, batch_size?: 500}
//
// rate: every tick, the events due by then (rate x elapsed, a fixed schedule) are sent in
// batches of at most 500, at most `max_inflight` requests at a time. Events that cannot be sent
// because every request slot is busy wait in a backlog; the publisher never lowers the rate
// silently: it reports the longest wait of an event for a free slot (`max_backlog_ms`: the
// server answering too slowly) and whether it kept up. How late its own timer ran is reported
// apart (`max_schedule_lag_ms`): a tick that fires 50 ms late (this process descheduled, a GC
// pause) is the generator's hiccup, not the server's, and is not counted as falling behind.
// Each event carries data {sent_at, w?, pad}: sent_at is the send time in ms on the
// machine's monotonic clock (CLOCK_MONOTONIC, as the subscribers measure), w: 1 marks warm-up
// events (not measured), pad brings the delivered envelope to about `envelope_bytes`.
// ingest: `concurrency` loops each posting `batch_size` events back to back for the duration.
//
// stdout: one JSON line with the result.
import http from "node:http";

const config = JSON.parse(process.argv[2]);
// The machine's monotonic clock in ms, the subscribers' too (see subscribers.mjs).
const now = () => Number(process.hrtime.bigint()) / 1e6;
const EVENT_TYPES = ["status_changed", "claim_submitted", "claim_approved", "claim_rejected", "comment_added"];
const keys = config.keys;
const keyField = config.key_field ?? "organisation_id";
const headers = { "content-type": "application/json", ...(config.headers ?? {}) };
const durationMs = config.duration_s * 1000;

// A representative envelope as the server will deliver it, to size the padding once.
const SAMPLE = {
  channel_id: "chan_" + "x".repeat(20),
  sequence: 12345,
  event_id: "evt_" + "x".repeat(24),
  event_type: "claim_submitted",
  claim_id: "clm_0000001",
  organisation_id: "org_bench_000",
  user_id: "usr_bench_0000",
  actor_id: null,
  occurred_at: "2026-01-01T00:00:00.000Z",
  data: { sent_at: 1234567890.123, pad: "" },
};
const padLength = Math.max(0, (config.envelope_bytes ?? 300) - JSON.stringify(SAMPLE).length);
const PAD = "x".repeat(padLength);

let counter = 0;
function makeEvent(warmup) {
  const i = counter++;
  const key = keys[i % keys.length];
  const event = {
    event_type: EVENT_TYPES[i % EVENT_TYPES.length],
    claim_id: `clm_${(i % 1000000).toString().padStart(7, "0")}`,
    organisation_id: keyField === "organisation_id" ? key : "org_bench_none",
    user_id: keyField === "user_id" ? key : `usr_bench_${(i % 10000).toString().padStart(4, "0")}`,
    data: warmup ? { sent_at: 0, w: 1, pad: PAD } : { sent_at: 0, pad: PAD },
  };
  return { key, event };
}

const requestTimes = [];
const perKey = {};
let accepted = 0;
let attempted = 0;
let httpErrors = 0;
let staleRetries = 0;
const errorSamples = [];

// node:http with a keep-alive agent, not fetch(): a third of fetch's CPU per request, so that
// the publisher stays a small part of the load it generates.
const agent = new http.Agent({ keepAlive: true, maxSockets: 64 });

function requestOnce(body) {
  return new Promise((resolve, reject) => {
    const req = http.request(
      config.url,
      { method: "POST", headers: { ...headers, "content-length": Buffer.byteLength(body) }, agent },
      (response) => {
        const chunks = [];
        response.setEncoding("utf8");
        response.on("data", (chunk) => chunks.push(chunk));
        response.on("end", () => resolve({ status: response.statusCode, text: chunks.join("") }));
        response.on("error", reject);
      },
    );
    req.setTimeout(30000, () => req.destroy(new Error("request timed out after 30 s")));
    req.on("error", (err) => {
      // Closed with no answer on a kept-alive socket: the server had timed it out.
      const reset = err.code === "ECONNRESET" || err.message === "socket hang up";
      err.staleSocket = req.reusedSocket && !req.res && reset;
      reject(err);
    });
    req.end(body);
  });
}

// A kept-alive socket the server closes (uvicorn: idle for 5 s) just as a request goes out on
// it ends with no answer ("socket hang up", ECONNRESET): sent again once, as Node's
// documentation advises, and counted (`stale_socket_retries`, noted in the report). Any other
// failure, or a second one, counts as an HTTP error.
async function request(body) {
  try {
    return await requestOnce(body);
  } catch (err) {
    if (!err.staleSocket) throw err;
    staleRetries += 1;
    return await requestOnce(body);
  }
}

// One POST; stamps sent_at at send time. Returns true if the batch was accepted.
async function post(items) {
  const sentAt = now();
  for (const item of items) item.event.data.sent_at = sentAt;
  const body = JSON.stringify({ events: items.map((item) => item.event) });
  attempted += items.length;
  try {
    const response = await request(body);
    requestTimes.push(now() - sentAt);
    if (response.status !== 202) {
      httpErrors += 1;
      if (errorSamples.length < 5) errorSamples.push(`${response.status} ${response.text.slice(0, 200)}`);
      return false;
    }
    accepted += items.length;
    for (const item of items) perKey[item.key] = (perKey[item.key] ?? 0) + 1;
    return true;
  } catch (err) {
    requestTimes.push(now() - sentAt);
    httpErrors += 1;
    if (errorSamples.length < 5) errorSamples.push(String(err).slice(0, 200));
    return false;
  }
}

function percentile(sorted, p) {
  if (sorted.length === 0) return null;
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil(p * sorted.length) - 1));
  return sorted[rank];
}

// CPU used from the start of the run on (Node's own start-up is not the load generator's work).
let cpuAtStart = process.cpuUsage();

function finish(fields) {
  const sorted = Float64Array.from(requestTimes).sort();
  const usage = process.cpuUsage(cpuAtStart);
  const result = {
    mode: config.mode,
    attempted,
    accepted,
    http_errors: httpErrors,
    stale_socket_retries: staleRetries,
    error_samples: errorSamples,
    requests: requestTimes.length,
    request_p50_ms: percentile(sorted, 0.5),
    request_p99_ms: percentile(sorted, 0.99),
    request_max_ms: sorted.length ? sorted[sorted.length - 1] : null,
    per_key: perKey,
    envelope_pad: padLength,
    cpu_ms: (usage.user + usage.system) / 1000,
    ...fields,
  };
  process.stdout.write(JSON.stringify(result) + "\n", () => process.exit(0));
}

async function runRate() {
  const rate = config.rate;
  const tickMs = config.tick_ms ?? 10;
  const maxInflight = config.max_inflight ?? 4;
  const warmupMs = (config.warmup_s ?? 0) * 1000;
  const backlogLimitMs = config.backlog_limit_ms ?? 50;
  const total = Math.floor((rate * durationMs) / 1000);
  const backlog = []; // {key, event, due, queued}
  let generated = 0;
  let inflight = 0;
  // Waits for a free request slot, over measured events only (warm-up absorbs start-up
  // transients); and how far behind its schedule this process's own timer ran.
  let maxBacklogMs = 0;
  let warmupMaxBacklogMs = 0;
  let maxScheduleLagMs = 0;
  let slowRequests = 0;
  let measuredAccepted = 0;
  let measureStart = null;
  const start = now();

  const pump = () => {
    const t = now();
    // Everything due by now on the fixed schedule joins the backlog.
    const due = Math.min(total, Math.floor((rate * (t - start)) / 1000));
    while (generated < due) {
      // Event k (0-based) falls due when rate x elapsed reaches k + 1.
      const dueAt = start + ((generated + 1) * 1000) / rate;
      // Measured: the events due in (warm-up, duration], rate x (duration - warm-up) of them.
      const item = makeEvent(dueAt - start <= warmupMs + 1e-6);
      item.due = dueAt;
      // From here on its wait is for a request slot; until here, for this timer.
      item.queued = t;
      maxScheduleLagMs = Math.max(maxScheduleLagMs, t - dueAt);
      backlog.push(item);
      generated += 1;
    }
    if (backlog.length) {
      const waited = t - backlog[0].queued;
      if (backlog[0].event.data.w === 1) warmupMaxBacklogMs = Math.max(warmupMaxBacklogMs, waited);
      else maxBacklogMs = Math.max(maxBacklogMs, waited);
    }
    while (backlog.length && inflight < maxInflight) {
      const items = backlog.splice(0, 500);
      const measuredHere = items.filter((item) => item.event.data.w !== 1).length;
      if (measuredHere && measureStart === null) measureStart = now();
      inflight += 1;
      const sentAt = now();
      post(items).then((ok) => {
        inflight -= 1;
        if (now() - sentAt > tickMs) slowRequests += 1;
        if (ok) measuredAccepted += measuredHere;
      });
    }
  };

  await new Promise((resolve) => {
    const timer = setInterval(() => {
      pump();
      if (generated >= total && backlog.length === 0) {
        clearInterval(timer);
        resolve();
      }
    }, tickMs);
  });
  const sendEnd = now();
  // The schedule ended at start + duration: sending much later means we fell behind.
  const lateMs = Math.max(0, sendEnd - (start + durationMs));
  while (inflight > 0) await new Promise((resolve) => setTimeout(resolve, 2));
  const end = now();
  const keptUp = maxBacklogMs <= backlogLimitMs && lateMs <= backlogLimitMs && httpErrors === 0;
  finish({
    rate,
    scheduled: total,
    measured_accepted: measuredAccepted,
    measure_start_at: measureStart,
    started_at: start,
    send_end_at: sendEnd,
    ended_at: end,
    achieved_events_per_s: (accepted * 1000) / (sendEnd - start),
    max_backlog_ms: maxBacklogMs,
    warmup_max_backlog_ms: warmupMaxBacklogMs,
    max_schedule_lag_ms: maxScheduleLagMs,
    late_ms: lateMs,
    slow_requests: slowRequests,
    kept_up: keptUp,
  });
}

async function runIngest() {
  const concurrency = config.concurrency ?? 4;
  const batchSize = Math.min(500, config.batch_size ?? 500);
  const start = now();
  const deadline = start + durationMs;
  const loop = async () => {
    while (now() < deadline) {
      const items = [];
      for (let i = 0; i < batchSize; i++) items.push(makeEvent(false));
      await post(items);
    }
  };
  await Promise.all(Array.from({ length: concurrency }, loop));
  const end = now();
  finish({
    concurrency,
    batch_size: batchSize,
    started_at: start,
    ended_at: end,
    accepted_per_s: (accepted * 1000) / (end - start),
  });
}

// Open a keep-alive connection and warm the HTTP machinery up before the clock starts: the
// first request of a process is much slower than the others. An empty batch is refused (400).
try {
  await request('{"events": []}');
} catch {
  // the run itself will report the server unreachable
}
cpuAtStart = process.cpuUsage();

if (config.mode === "ingest") await runIngest();
else await runRate();
