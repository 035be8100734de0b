"""The transactional-outbox consumer under load (`--mode outbox`, our server only; not in
`all`).

Our server runs with OUTBOX_URL on a scratch PostgreSQL database (`bench_outbox_*`, made with
`claims-realtime outbox init`, dropped afterwards); our own database stays what --database-url
says (SQLite by default). The sweep's workload (`outbox_workload`) subscribes. A writer process
(tools.bench.outbox_writer) INSERTs events at each of `outbox_rates` events/s, a step like a
sweep step: warm-up, measured part, then the wait for every delivery; the steps go on while
the consumer keeps up (outbox_report.kept_up). Per step: events committed per second by the
consumer (its `claims_realtime_outbox_rows_total{outcome="consumed"}` over the measured part),
the rows waiting in the outbox at either end of it, insert -> socket latency as the
subscribers measure it, loss, and where the time goes (the writer's INSERTs, insert -> row
consumed, rows per consumer run, each process's CPU).

Then the drain: `outbox_drain_events` rows in one commit, and the time until the consumer
consumed them all: its ceiling, whatever rate a writer keeps.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

from tools.bench import procstat
from tools.bench.node import SubscriberPool, run_json_process
from tools.bench.options import PUBLISHER_BACKLOG_LIMIT_MS, Options
from tools.bench.outbox_db import CONSUMED, TABLE, OutboxDatabase, Sampler, metrics
from tools.bench.outbox_report import (
    committed_window,
    histogram_mean,
    kept_up,
    run_failures,
    step_failures,
)
from tools.bench.report import Progress
from tools.bench.servers import OurServer
from tools.bench.sweep import Workload, drain, workload

#: Seconds between two samples of the consumed counter and the rows waiting, in a step; and
#: between two samples of the counter alone while the drain runs.
SAMPLE_INTERVAL_S = 0.2
DRAIN_POLL_S = 0.1
#: The drain gives up after this long plus a second per 1,000 rows.
DRAIN_TIMEOUT_S = 30.0


def run_writer(config: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """Run tools.bench.outbox_writer to the end and answer its result."""
    command = [sys.executable, "-m", "tools.bench.outbox_writer", json.dumps(config)]
    return run_json_process(command, "outbox writer", config, **kwargs)


class Meters:
    """CPU of every process in the step, as % of one core, and the machine's busy %."""

    def __init__(self, pids: dict[str, list[int]]) -> None:
        self.meters = {name: procstat.CpuMeter(group) for name, group in pids.items() if group}
        self.machine = procstat.MachineMeter()

    def start(self) -> None:
        for meter in self.meters.values():
            meter.start()
        self.machine.start()

    def stop(self) -> dict[str, float | None]:
        cpu: dict[str, float | None] = {name: meter.stop() for name, meter in self.meters.items()}
        cpu["machine_busy"] = self.machine.stop()
        return cpu


def run_step(
    server: OurServer,
    database: OutboxDatabase,
    pool: SubscriberPool,
    load: Workload,
    rate: int,
    cumulative: dict[str, int],
    pids: dict[str, list[int]],
    options: Options,
    progress: Progress,
) -> dict[str, Any]:
    """One step at `rate` events/s; `cumulative` (events per key) is updated."""
    label = f"outbox ours/{load.name} {rate:,} events/s"
    pool.reset()
    if pids["our_db"]:
        pids["our_db"] = server.database_pids()  # the pool may have opened more since
    meters = Meters(pids)
    before = metrics(server)
    meters.start()
    with Sampler(server, database, SAMPLE_INTERVAL_S) as sampler:
        written = run_writer(
            {
                "mode": "rate",
                "url": database.url,
                "table": TABLE,
                "keys": load.keys,
                "key_field": load.key_field,
                "rate": rate,
                "duration_s": options.step_seconds,
                "warmup_s": options.warmup_seconds,
                "tick_ms": options.tick_ms,
                "connections": options.outbox_connections,
                "backlog_limit_ms": PUBLISHER_BACKLOG_LIMIT_MS,
                "envelope_bytes": options.envelope_bytes,
            },
            on_tick=lambda elapsed: progress.update(label, elapsed / options.step_seconds),
        )
    cpu = meters.stop()
    after = metrics(server)
    for key, count in written.pop("per_key").items():
        cumulative[key] = cumulative.get(key, 0) + int(count)
    stats = drain(pool, cumulative)
    started = float(written["started_at"])
    measure_start = started + options.warmup_seconds * 1000.0
    schedule_end = started + options.step_seconds * 1000.0
    figures = committed_window(sampler.samples, measure_start, schedule_end)
    measured = int(stats["measured"])
    delivered = 0.0
    if measured:
        end = max(float(stats["last_measured_at"]), schedule_end)
        delivered = measured * 1000.0 / max(1.0, end - measure_start)
    written_ms = max(1.0, float(written["ended_at"]) - started)
    cpu["writer"] = 100.0 * float(written["cpu_ms"]) / written_ms
    backend_ms = written.get("backend_cpu_ms")
    cpu["writer_db"] = None if backend_ms is None else 100.0 * float(backend_ms) / written_ms
    known = sum(value or 0.0 for name, value in cpu.items() if name != "machine_busy")
    cpu["other"] = max(0.0, (cpu["machine_busy"] or 0.0) * (os.cpu_count() or 1) - known)
    failures = step_failures(rate, figures, stats, written)
    step = {
        "target_events_per_s": rate,
        "target_deliveries_per_s": rate * load.fanout,
        **figures,
        "inserted": written["inserted"],
        "delivered_per_s": delivered,
        "deliveries": stats["deliveries"],
        "measured_deliveries": measured,
        **{name: stats[name] for name in ("p50_ms", "p90_ms", "p99_ms", "max_ms")},
        "lost": stats["lost"],
        "duplicated": stats["duplicated"],
        # Where the time goes: the writer's INSERT (and commit); insert -> row consumed, i.e.
        # recorded here and deleted from the outbox (the server's histogram, by PostgreSQL's
        # clock and ours); rows per consumer run.
        "insert_p50_ms": written["insert_p50_ms"],
        "insert_p99_ms": written["insert_p99_ms"],
        "rows_per_insert": written["rows_per_insert"],
        "to_consumed_mean_ms": _ms(
            histogram_mean(before, after, "claims_realtime_outbox_latency_seconds")
        ),
        "rows_per_consumer_run": histogram_mean(
            before, after, "claims_realtime_outbox_batch_size_rows"
        ),
        "cpu_pct": cpu,
        "writer": {key: value for key, value in written.items() if key != "backend_pids"},
        "passed": not failures,
        # Steps go on while the consumer keeps up, p99 aside: the two targets are at
        # different rates, and a p99 miss at 5,000/s says nothing of the committed rate.
        "kept_up": kept_up(failures),
        "failures": failures,
    }
    committed = figures["committed_per_s"]
    p99 = "n/a" if stats["p99_ms"] is None else f"{stats['p99_ms']:.1f} ms"
    progress.done(
        label,
        f"committed {'n/a' if committed is None else f'{committed:,.0f}/s'}, backlog "
        f"{figures['backlog_start']} -> {figures['backlog_end']}, p99 {p99} -> "
        + ("ok" if not failures else "FAIL: " + ", ".join(failures)),
    )
    return step


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000.0


def run_drain(
    server: OurServer,
    database: OutboxDatabase,
    pool: SubscriberPool,
    load: Workload,
    cumulative: dict[str, int],
    pids: dict[str, list[int]],
    options: Options,
    progress: Progress,
) -> dict[str, Any]:
    """`outbox_drain_events` rows in one commit, then the time until the consumer consumed
    them all (its counter, not count(*): counting a table of 50,000 rows, dead ones included,
    every 0.1 s would take a good part of a core from the machine under measurement)."""
    count = options.outbox_drain_events
    label = f"outbox ours/{load.name} drain of {count:,} rows"
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    while database.waiting() and time.monotonic() < deadline:
        time.sleep(0.2)  # what an earlier step left behind
    pool.reset()
    before = metrics(server)
    consumed_before = before.get(CONSUMED, 0.0)
    meters = Meters(pids)
    with Sampler(server, database, DRAIN_POLL_S, count_rows=False) as sampler:
        written = run_writer(
            {
                "mode": "bulk",
                "url": database.url,
                "table": TABLE,
                "keys": load.keys,
                "key_field": load.key_field,
                "count": count,
                "envelope_bytes": options.envelope_bytes,
            },
            on_tick=lambda elapsed: progress.update(label, 0.0, "inserting"),
        )
        committed_at = float(written["committed_at"])
        meters.start()  # the consumer's work only, not the INSERT's
        limit = time.monotonic() + DRAIN_TIMEOUT_S + count / 1000
        while time.monotonic() < limit:
            done = sampler.samples[-1][1] - consumed_before if sampler.samples else 0.0
            if done >= count:
                break
            progress.update(label, done / max(1, count), f"{count - done:,.0f} waiting")
            time.sleep(DRAIN_POLL_S)
    cpu = meters.stop()
    rows_per_run = histogram_mean(before, metrics(server), "claims_realtime_outbox_batch_size_rows")
    for key, n in written.pop("per_key").items():
        cumulative[key] = cumulative.get(key, 0) + int(n)
    stats = drain(pool, cumulative)
    since = [(at, consumed - consumed_before) for at, consumed, _ in sampler.samples]
    first = next((at for at, done in since if done > 0), None)
    empty = next((at for at, done in since if done >= count), None)
    last_receipt = stats.get("last_receipt_at")
    result = {
        "events": count,
        "fanout": load.fanout,
        "insert_ms": committed_at - float(written["started_at"]),
        # From the commit of the rows to the last consumed: the consumer's ceiling.
        "committed_per_s": None if empty is None else count * 1000.0 / (empty - committed_at),
        "first_consumed_ms": None if first is None else first - committed_at,
        "drained_s": None if empty is None else (empty - committed_at) / 1000.0,
        # A consumer run's rows, and how long one took on average: read, check, record and
        # deliver, delete (runs are one after the other).
        "rows_per_consumer_run": rows_per_run,
        "ms_per_consumer_run": None
        if empty is None or not rows_per_run
        else rows_per_run * (empty - committed_at) / count,
        "delivered_per_s": None
        if not last_receipt or empty is None
        else stats["deliveries"] * 1000.0 / (float(last_receipt) - committed_at),
        "deliveries": stats["deliveries"],
        "lost": stats["lost"],
        "duplicated": stats["duplicated"],
        "cpu_pct": cpu,
    }
    failures = [] if empty is not None else ["the outbox did not drain"]
    failures += [f"{result[k]} {k}" for k in ("lost", "duplicated") if result[k]]
    result["failures"] = failures
    rate = result["committed_per_s"]
    progress.done(
        label,
        f"{'n/a' if rate is None else f'{rate:,.0f}'} events committed/s, "
        + ("ok" if not failures else "FAIL: " + ", ".join(failures)),
    )
    return result


def run_outbox(
    server: OurServer, database: OutboxDatabase, options: Options, progress: Progress
) -> dict[str, Any]:
    """Attach the workload's subscribers, step the writer's rate up until the consumer no
    longer keeps up, then the drain (see the module docstring)."""
    load = workload(options.outbox_workload, options)
    progress.info(f"outbox ours/{load.name}: creating {len(load.specs)} channels")
    channels = server.create_channels(load.specs)
    # The PostgreSQL backends doing our consumer's work, and our own database's (if there).
    pids = {
        "server": [server.pid],
        "consumer_db": database.consumer_pids(),
        "our_db": server.database_pids(),
    }
    result: dict[str, Any] = {
        "server": server.name,
        "workload": load.name,
        "channels": len(channels),
        "fanout": load.fanout,
        "our_database": "postgresql"
        if (options.database_url or "").startswith(("postgres://", "postgresql://"))
        else "sqlite",
        "writer_connections": options.outbox_connections,
        "rates": options.outbox_rates,
        "steps": [],
        "drain": None,
    }
    with SubscriberPool(channels, ready_event=server.ready_event, ack=options.ack) as pool:
        attached = pool.wait_attached()
        if attached["attached"] < len(channels):
            raise RuntimeError(f"outbox: only {attached['attached']}/{len(channels)} attached")
        time.sleep(options.idle_seconds)
        pids["subscribers"] = [pool.pid]
        cumulative: dict[str, int] = {}
        for rate in options.outbox_rates:
            step = run_step(server, database, pool, load, rate, cumulative, pids, options, progress)
            result["steps"].append(step)
            if not step["kept_up"]:
                break
        if options.outbox_drain_events > 0:
            result["drain"] = run_drain(
                server, database, pool, load, cumulative, pids, options, progress
            )
    result["failures"] = run_failures(result)
    return result
