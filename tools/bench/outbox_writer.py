"""The outbox benchmark's writer: the claims service's side, INSERTing events into the outbox.

    python -m tools.bench.outbox_writer '<json config>'

A process of its own, so that its work neither shares the benchmark driver's GIL nor hides in
its CPU. Config: {mode: "rate" | "bulk", url, table, keys, key_field, envelope_bytes?: 300,
    rate mode: rate (events/s), duration_s, warmup_s?, tick_ms?: 10, connections?: 4,
               backlog_limit_ms?: 50
    bulk mode: count}

rate: as publisher.mjs's rate mode, on a fixed schedule: every tick the events due by then
are INSERTed with one multi-row statement (one transaction, one NOTIFY), on whichever of
`connections` connections is free, so one slow commit does not stall the schedule. Events that
find every connection busy wait in a backlog; the longest wait is reported (`max_backlog_ms`,
the database answering too slowly), apart from how late this process's own timer ran.
bulk: `count` events in one statement (one commit), all marked warm-up: the consumer's drain.

Each event's data is {sent_at, w?, pad} as publisher.mjs sends it: sent_at is this machine's
monotonic clock in ms (CLOCK_MONOTONIC, as the Node subscribers read it) taken just before the
INSERT, so subscribers.mjs measures outbox insert -> socket receive unchanged.

stdout: one JSON line with the result.
"""

from __future__ import annotations

import asyncio
import json
import math
import sys
import time
from collections import deque
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import asyncpg

from tools.bench import procstat

#: Seen in pg_stat_activity: the driver tells the writer's backends from the consumer's.
APPLICATION_NAME = "bench_outbox_writer"
EVENT_TYPES = ["status_changed", "claim_submitted", "claim_approved", "claim_rejected"]
#: Most rows per INSERT when a backlog built up (one tick's worth is usually far fewer).
MAX_ROWS_PER_INSERT = 1_000
#: A delivered envelope as the server sends it, to size the padding (as publisher.mjs does).
SAMPLE_ENVELOPE = {
    "channel_id": "chan_" + "x" * 20,
    "sequence": 12345,
    "event_id": "evt_" + "x" * 24,
    "event_type": "claim_submitted",
    "claim_id": "clm_0000001",
    "organisation_id": "org_bench_000",
    "user_id": "usr_bench_0000",
    "actor_id": None,
    "occurred_at": "2026-01-01T00:00:00.000Z",
    "data": {"sent_at": 1234567890.123, "pad": ""},
}


def now_ms() -> float:
    """CLOCK_MONOTONIC in ms: the clock of process.hrtime in the Node subscribers."""
    return time.monotonic() * 1000.0


def insert_sql(table: str) -> str:
    """One statement for a whole tick: the events as text, cast to jsonb by PostgreSQL."""
    return f'INSERT INTO "{table}" (event) SELECT unnest($1::text[])::jsonb'


@dataclass
class Item:
    """One event waiting to be INSERTed: its JSON text around the sent_at still to come."""

    key: str
    head: str
    tail: str
    warmup: bool
    queued: float = 0.0

    def text(self, sent_at: float) -> str:
        return f"{self.head}{sent_at:.3f}{self.tail}"


class Events:
    """Events rotating over the routing keys, each as JSON text with sent_at spliced in late
    (two string joins per event rather than a json.dumps at insert time)."""

    def __init__(self, keys: list[str], key_field: str, envelope_bytes: int) -> None:
        self.keys = keys
        self.key_field = key_field
        pad = max(0, envelope_bytes - len(json.dumps(SAMPLE_ENVELOPE, separators=(",", ":"))))
        self.pad = json.dumps("x" * pad)
        self.counter = 0

    def make(self, warmup: bool) -> Item:
        i = self.counter
        self.counter += 1
        key = self.keys[i % len(self.keys)]
        event = {
            "event_type": EVENT_TYPES[i % len(EVENT_TYPES)],
            "claim_id": f"clm_{i % 1_000_000:07d}",
            "organisation_id": key if self.key_field == "organisation_id" else "org_bench_none",
            "user_id": key if self.key_field == "user_id" else f"usr_bench_{i % 10_000:04d}",
        }
        head = json.dumps(event)[:-1] + ', "data": {"sent_at": '
        tail = (', "w": 1' if warmup else "") + f', "pad": {self.pad}}}}}'
        return Item(key, head, tail, warmup)


def percentile(values: list[float], p: float) -> float | None:
    """The nearest-rank percentile, as subscribers.mjs computes it."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(p * len(ordered)) - 1))]


class Writer:
    """Connections, counters and the INSERT of one batch; shared by both modes."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.sql = insert_sql(config["table"])
        self.events = Events(
            config["keys"], config.get("key_field", "user_id"), config.get("envelope_bytes", 300)
        )
        self.connections: list[asyncpg.Connection] = []
        self.backend_pids: list[int] = []
        self.per_key: dict[str, int] = {}
        self.inserted = 0
        self.measured_inserted = 0
        self.errors = 0
        self.error_samples: list[str] = []
        self.insert_ms: list[float] = []
        self.inserts = 0

    async def connect(self, count: int) -> None:
        for _ in range(count):
            connection = await asyncpg.connect(
                self.config["url"], server_settings={"application_name": APPLICATION_NAME}
            )
            self.connections.append(connection)
            self.backend_pids.append(int(await connection.fetchval("SELECT pg_backend_pid()")))

    async def close(self) -> None:
        for connection in self.connections:
            await connection.close()

    async def insert(self, connection: asyncpg.Connection, items: list[Item]) -> float:
        """INSERT the items in one statement, stamped now; answer when it was sent."""
        sent_at = now_ms()
        texts = [item.text(sent_at) for item in items]
        try:
            await connection.execute(self.sql, texts)
        except (asyncpg.PostgresError, OSError) as exc:
            self.errors += 1
            if len(self.error_samples) < 5:
                self.error_samples.append(f"{type(exc).__name__}: {exc}"[:200])
        else:
            self.inserted += len(items)
            for item in items:
                self.per_key[item.key] = self.per_key.get(item.key, 0) + 1
                self.measured_inserted += not item.warmup
        # Timed over measured events only: the warm-up absorbs the connections' first
        # statements (plans, caches), as the subscribers' latencies do.
        if not items[-1].warmup:
            self.insert_ms.append(now_ms() - sent_at)
        self.inserts += 1
        return sent_at

    def backend_cpu_s(self) -> float | None:
        """CPU of this writer's PostgreSQL backends so far (None: not on this machine)."""
        if urlsplit(self.config["url"]).hostname not in ("127.0.0.1", "localhost", "::1"):
            return None
        return sum(procstat.cpu_seconds(pid) for pid in self.backend_pids)

    def result(self, **fields: Any) -> dict[str, Any]:
        return {
            "mode": self.config["mode"],
            "inserted": self.inserted,
            "measured_inserted": self.measured_inserted,
            "inserts": self.inserts,
            "errors": self.errors,
            "error_samples": self.error_samples,
            "insert_p50_ms": percentile(self.insert_ms, 0.5),
            "insert_p99_ms": percentile(self.insert_ms, 0.99),
            "insert_max_ms": max(self.insert_ms, default=None),
            "rows_per_insert": self.inserted / self.inserts if self.inserts else None,
            "per_key": self.per_key,
            "backend_pids": self.backend_pids,
            **fields,
        }


async def run_rate(writer: Writer) -> dict[str, Any]:
    """The fixed schedule (see the module docstring)."""
    config = writer.config
    rate = float(config["rate"])
    tick_ms = float(config.get("tick_ms", 10))
    warmup_ms = float(config.get("warmup_s", 0)) * 1000
    duration_ms = float(config["duration_s"]) * 1000
    total = math.floor(rate * duration_ms / 1000)
    await writer.connect(int(config.get("connections", 4)))
    free: deque[asyncpg.Connection] = deque(writer.connections)
    backlog: deque[Item] = deque()
    running: set[asyncio.Task[None]] = set()
    generated = 0
    max_backlog_ms = warmup_max_backlog_ms = max_schedule_lag_ms = 0.0

    async def send(connection: asyncpg.Connection, items: list[Item]) -> None:
        try:
            await writer.insert(connection, items)
        finally:
            free.append(connection)

    cpu_start = time.process_time()
    backend_start = writer.backend_cpu_s()
    start = now_ms()
    while generated < total or backlog:
        t = now_ms()
        due = min(total, math.floor(rate * (t - start) / 1000))
        while generated < due:
            # Event k (0-based) falls due when rate x elapsed reaches k + 1.
            due_at = start + (generated + 1) * 1000 / rate
            item = writer.events.make(due_at - start <= warmup_ms + 1e-6)
            item.queued = t
            max_schedule_lag_ms = max(max_schedule_lag_ms, t - due_at)
            backlog.append(item)
            generated += 1
        if backlog:
            waited = t - backlog[0].queued
            if backlog[0].warmup:
                warmup_max_backlog_ms = max(warmup_max_backlog_ms, waited)
            else:
                max_backlog_ms = max(max_backlog_ms, waited)
        while backlog and free:
            items = [backlog.popleft() for _ in range(min(len(backlog), MAX_ROWS_PER_INSERT))]
            task = asyncio.create_task(send(free.popleft(), items))
            running.add(task)
            task.add_done_callback(running.discard)
        # Sleep to the next tick of the schedule, not tick_ms from now.
        await asyncio.sleep((tick_ms - (now_ms() - start) % tick_ms) / 1000)
    send_end = now_ms()
    if running:
        await asyncio.gather(*running)
    end = now_ms()
    cpu_ms = (time.process_time() - cpu_start) * 1000
    backend_end = writer.backend_cpu_s()
    await writer.close()
    late_ms = max(0.0, send_end - (start + duration_ms))
    limit = float(config.get("backlog_limit_ms", 50))
    return writer.result(
        rate=rate,
        scheduled=total,
        started_at=start,
        send_end_at=send_end,
        ended_at=end,
        max_backlog_ms=max_backlog_ms,
        warmup_max_backlog_ms=warmup_max_backlog_ms,
        max_schedule_lag_ms=max_schedule_lag_ms,
        late_ms=late_ms,
        kept_up=max_backlog_ms <= limit and late_ms <= limit and writer.errors == 0,
        cpu_ms=cpu_ms,
        backend_cpu_ms=None
        if backend_start is None or backend_end is None
        else (backend_end - backend_start) * 1000,
    )


async def run_bulk(writer: Writer) -> dict[str, Any]:
    """`count` warm-up-marked events in one statement: one commit the consumer then drains."""
    await writer.connect(1)
    items = [writer.events.make(True) for _ in range(int(writer.config["count"]))]
    cpu_start = time.process_time()
    started = await writer.insert(writer.connections[0], items)
    committed = now_ms()
    await writer.close()
    return writer.result(
        started_at=started,
        committed_at=committed,
        cpu_ms=(time.process_time() - cpu_start) * 1000,
    )


def main() -> None:
    config = json.loads(sys.argv[1])
    writer = Writer(config)
    run = run_bulk if config["mode"] == "bulk" else run_rate
    result = asyncio.run(run(writer))
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
