"""The delivery-rate sweep: step the rate up until a step fails, on each server and workload.

A step publishes at a fixed rate for `step_seconds` (the first `warmup_seconds` of events are
marked and not measured), waits for the subscribers to drain, and passes only if nothing was
lost or duplicated, p99 stayed within the limit, the publisher kept to its schedule and the
deliveries reached the target.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from typing import Any

from tools.bench import histograms, procstat
from tools.bench.node import SubscriberPool, run_publisher
from tools.bench.options import (
    GENERATOR_SATURATED_PCT,
    P99_STEP_LIMIT_MS,
    PUBLISHER_BACKLOG_LIMIT_MS,
    Options,
)
from tools.bench.report import Progress
from tools.bench.servers import BenchServer, ChannelSpec

#: How long to wait for stragglers after the publisher stopped, at most / without progress.
DRAIN_LIMIT_S = 10.0
DRAIN_STALL_S = 2.0


@dataclass(frozen=True)
class Workload:
    """Who subscribes, and which routing keys the publisher rotates over."""

    name: str
    specs: list[ChannelSpec]
    keys: list[str]
    key_field: str
    #: Channels each event reaches.
    fanout: int


def workload(name: str, options: Options) -> Workload:
    if name == "org":
        per_org = max(1, options.subscribers // options.orgs)
        orgs = [f"org_bench_{o:03d}" for o in range(options.orgs)]
        specs = [
            # Distinct coordinators: one channel each, however channels are keyed.
            ChannelSpec("organisation", f"usr_coord_{o:03d}_{j:04d}", org)
            for o, org in enumerate(orgs)
            for j in range(per_org)
        ]
        return Workload("org", specs, orgs, "organisation_id", per_org)
    if name == "user":
        users = [f"usr_bench_{i:04d}" for i in range(options.subscribers)]
        return Workload("user", [ChannelSpec("user", u) for u in users], users, "user_id", 1)
    raise ValueError(f"unknown workload {name!r}")


def round_order(servers: list[str], round_index: int) -> list[str]:
    """The servers in the order round `round_index` (0-based) runs them: as given, then
    reversed, and so on, so that a machine growing slower or faster hits both alike."""
    return list(servers) if round_index % 2 == 0 else list(reversed(servers))


def cpu_us_per_delivery(step: dict[str, Any]) -> float | None:
    """Server CPU (with its local database backends) per delivered event, in microseconds:
    what each delivery costs, comparable across rates and servers. None if nothing arrived."""
    achieved = float(step.get("achieved_per_s") or 0.0)
    if achieved <= 0:
        return None
    cpu_fraction = (float(step["server_cpu_pct"]) + float(step.get("database_cpu_pct") or 0)) / 100
    return 1e6 * cpu_fraction / achieved


def attach_and_measure_memory(
    server: BenchServer,
    pool: SubscriberPool,
    connections: int,
    idle_seconds: float,
    rss_before_kb: int,
    context: str,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Wait for every subscriber, let them idle, read RSS and the server's CPU meanwhile:
    (attached line, memory record)."""
    attached = pool.wait_attached()
    idle_cpu = procstat.CpuMeter([server.pid])
    idle_cpu.start()
    time.sleep(idle_seconds)
    idle_cpu_pct = idle_cpu.stop()
    rss_after = server.rss_kb()
    attached_n = int(attached["attached"])
    memory = {
        "server": server.name,
        "context": context,
        "connections": attached_n,
        "rss_before_kb": rss_before_kb,
        "rss_after_kb": rss_after,
        # Only a complete set of attached connections gives a per-connection figure.
        "kb_per_connection": (rss_after - rss_before_kb) / attached_n
        if attached_n == connections
        else None,
        # What the connections cost with nothing to deliver (pings, timers, periodic jobs):
        # the floor under every step's CPU.
        "idle_cpu_pct": idle_cpu_pct,
    }
    return attached, memory


def run_sweep(
    server: BenchServer, load: Workload, options: Options, progress: Progress
) -> dict[str, Any]:
    """One server, one workload: create the channels, attach, then step the rate up."""
    label = f"sweep {server.name}/{load.name}"
    progress.info(f"{label}: creating {len(load.specs)} channels")
    channels = server.create_channels(load.specs)
    time.sleep(0.5)  # let the server settle before the memory reading
    rss_before = server.rss_kb()
    result: dict[str, Any] = {
        "server": server.name,
        "workload": load.name,
        "channels": len(channels),
        "fanout": load.fanout,
        "steps": [],
    }
    with SubscriberPool(channels, ready_event=server.ready_event, ack=options.ack) as pool:
        attached, memory = attach_and_measure_memory(
            server, pool, len(channels), options.idle_seconds, rss_before, f"sweep/{load.name}"
        )
        result["attached"] = attached
        result["memory"] = memory
        if attached["attached"] < len(channels):
            result["error"] = f"only {attached['attached']}/{len(channels)} subscribers attached"
            progress.info(f"{label}: {result['error']}")
            return result
        cumulative: dict[str, int] = {}
        for rate in options.rates:
            step = run_step(server, pool, load, rate, cumulative, options, progress, label)
            result["steps"].append(step)
            if not step["passed"]:
                break
    passed = [step for step in result["steps"] if step["passed"]]
    result["max_sustainable"] = (
        {
            "target_per_s": passed[-1]["target_per_s"],
            "achieved_per_s": passed[-1]["achieved_per_s"],
            "server_cpu_pct": passed[-1]["server_cpu_pct"],
            "deliveries_per_cpu_second": passed[-1]["deliveries_per_cpu_second"],
            "cpu_us_per_delivery": passed[-1]["cpu_us_per_delivery"],
        }
        if passed
        else None
    )
    result["all_steps_passed"] = len(passed) == len(options.rates)
    return result


def run_step(
    server: BenchServer,
    pool: SubscriberPool,
    load: Workload,
    rate: int,
    cumulative: dict[str, int],
    options: Options,
    progress: Progress,
    label: str,
) -> dict[str, Any]:
    """One sweep step at `rate` deliveries/s; `cumulative` (events per key) is updated."""
    events_per_s = rate / load.fanout
    step_label = f"{label} {rate:,}/s"
    pool.reset()
    server_cpu = procstat.CpuMeter([server.pid])
    subscriber_cpu = procstat.CpuMeter([pool.pid])
    database_pids = server.database_pids()
    database_cpu = procstat.CpuMeter(database_pids)
    machine = procstat.MachineMeter()
    threads = procstat.ThreadSplitMeter([server.pid])
    latencies_before = server.metrics_text()  # before the meters: a scrape costs the server CPU
    for meter in (server_cpu, subscriber_cpu, database_cpu, machine, threads):
        meter.start()
    published = run_publisher(
        {
            "mode": "rate",
            "url": server.batch_url,
            "headers": server.publish_headers,
            "keys": load.keys,
            "key_field": load.key_field,
            "rate": events_per_s,
            "duration_s": options.step_seconds,
            "warmup_s": options.warmup_seconds,
            "tick_ms": options.tick_ms,
            "max_inflight": options.max_inflight,
            "backlog_limit_ms": PUBLISHER_BACKLOG_LIMIT_MS,
            "envelope_bytes": options.envelope_bytes,
        },
        on_tick=lambda elapsed: progress.update(step_label, elapsed / options.step_seconds),
    )
    server_cpu_pct = server_cpu.stop()
    subscriber_cpu_pct = subscriber_cpu.stop()
    database_cpu_pct = database_cpu.stop() if database_pids else None
    machine_pct = machine.stop()
    loop_cpu_pct, threads_cpu_pct = threads.stop()
    server_split = server_latencies(latencies_before, server.metrics_text())
    for key, count in published["per_key"].items():
        cumulative[key] = cumulative.get(key, 0) + int(count)
    stats = drain(pool, cumulative)

    publish_ms = max(1.0, float(published["ended_at"]) - float(published["started_at"]))
    publisher_cpu_pct = 100.0 * float(published["cpu_ms"]) / publish_ms
    # The measured events are those due after the warm-up, on the publisher's schedule.
    measure_start = float(published["started_at"]) + options.warmup_seconds * 1000.0
    measured = int(stats["measured"])
    expected_measured = int(published["measured_accepted"]) * load.fanout
    achieved = 0.0
    if measured:
        # The measured window ends with the schedule, or later if deliveries lagged behind it.
        schedule_end = float(published["started_at"]) + options.step_seconds * 1000.0
        end = max(float(stats["last_measured_at"]), schedule_end)
        achieved = measured * 1000.0 / max(1.0, end - measure_start)
    failures = []
    if stats["p99_ms"] is None or stats["p99_ms"] > P99_STEP_LIMIT_MS:
        failures.append(f"p99 > {P99_STEP_LIMIT_MS:.0f} ms")
    if stats["lost"]:
        failures.append(f"{stats['lost']} lost")
    if stats["duplicated"]:
        failures.append(f"{stats['duplicated']} duplicated")
    if published["http_errors"]:
        failures.append(f"{published['http_errors']} HTTP errors")
    if not published["kept_up"]:
        failures.append("publisher fell behind")
    if measured < expected_measured or achieved < 0.9 * rate:
        failures.append("deliveries fell short")
    total_server_cpu = server_cpu_pct + (database_cpu_pct or 0.0)
    generator_saturated = max(subscriber_cpu_pct, publisher_cpu_pct) > GENERATOR_SATURATED_PCT
    step = {
        "target_per_s": rate,
        "events_per_s": events_per_s,
        "achieved_per_s": achieved,
        "deliveries": stats["deliveries"],
        "measured_deliveries": measured,
        "expected_measured_deliveries": expected_measured,
        "p50_ms": stats["p50_ms"],
        "p90_ms": stats["p90_ms"],
        "p99_ms": stats["p99_ms"],
        "max_ms": stats["max_ms"],
        "lost": stats["lost"],
        "duplicated": stats["duplicated"],
        "disconnects": stats["disconnects"],
        "server_cpu_pct": server_cpu_pct,
        # Of which the event loops (the server processes' main threads) and the rest
        # (other threads, helper processes: SQLite's writer).
        "server_loop_cpu_pct": loop_cpu_pct,
        "server_threads_cpu_pct": threads_cpu_pct,
        **server_split,
        "subscriber_cpu_pct": subscriber_cpu_pct,
        "publisher_cpu_pct": publisher_cpu_pct,
        # Local PostgreSQL backends of our server (None: SQLite, inside the server process).
        "database_cpu_pct": database_cpu_pct,
        "machine_busy_pct": machine_pct,
        # CPU the rest of the machine used meanwhile (other users' work): figures taken on a
        # busy machine are disturbed, and this says by how much.
        "other_cpu_pct": max(
            0.0,
            machine_pct * (os.cpu_count() or 1)
            - server_cpu_pct
            - subscriber_cpu_pct
            - publisher_cpu_pct
            - (database_cpu_pct or 0.0),
        ),
        "envelope_bytes": stats["envelope_bytes"],
        # Per core: deliveries per CPU-second of the server (and its local database).
        "deliveries_per_cpu_second": achieved / (total_server_cpu / 100)
        if total_server_cpu
        else None,
        "cpu_us_per_delivery": cpu_us_per_delivery(
            {
                "achieved_per_s": achieved,
                "server_cpu_pct": server_cpu_pct,
                "database_cpu_pct": database_cpu_pct,
            }
        ),
        "publisher": {k: v for k, v in published.items() if k != "per_key"},
        "generator_saturated": generator_saturated,
        "publisher_fell_behind": not published["kept_up"],
        "passed": not failures,
        "failures": failures,
    }
    p99 = "n/a" if stats["p99_ms"] is None else f"{stats['p99_ms']:.1f} ms"
    verdict = "ok" if not failures else "FAIL: " + ", ".join(failures)
    note = " (generator saturated)" if generator_saturated else ""
    progress.done(step_label, f"achieved {achieved:,.0f}/s p99 {p99} -> {verdict}{note}")
    return step


def server_latencies(before: str, after: str) -> dict[str, float | None]:
    """The server's own split of the step's latency, from its histograms (bucket upper
    bounds, ms): request arrival -> commit, and commit -> the events queued on every local
    socket. Warm-up included. None for a server without them, and past the largest bucket
    (10 s), which JSON cannot hold as infinity; the step's own p99 then says how far."""
    split: dict[str, float | None] = {}
    for key, name in (("ingest", histograms.INGEST), ("queue", histograms.DELIVERY)):
        start, end = (histograms.parse_buckets(text, name) for text in (before, after))
        for label, quantile in (("p50", 0.5), ("p99", 0.99)):
            bound = histograms.quantile_bound_ms(start, end, quantile)
            split[f"server_{key}_{label}_ms"] = None if bound == math.inf else bound
    # Garbage collections: full ones (which stop the event loop longest) and the longest
    # pause of any generation, a stall's likeliest cause the latencies cannot name.
    full_before, full_after = (
        histograms.parse_buckets(text, histograms.GC_PAUSE, 'generation="2"')
        for text in (before, after)
    )
    split["server_gc_full"] = (
        histograms.observations(full_before, full_after) if full_after else None
    )
    any_before, any_after = (
        histograms.parse_buckets(text, histograms.GC_PAUSE) for text in (before, after)
    )
    longest = histograms.quantile_bound_ms(any_before, any_after, 1.0)
    split["server_gc_max_ms"] = None if longest == math.inf else longest
    return split


def drain(pool: SubscriberPool, expected: dict[str, int]) -> dict[str, Any]:
    """Report once everything expected arrived, or deliveries stopped coming."""
    started = time.monotonic()
    last_count = -1
    last_progress = started
    while True:
        stats = pool.report(expected)
        now = time.monotonic()
        if stats["missing"] == 0:
            return stats
        if stats["deliveries"] != last_count:
            last_count = int(stats["deliveries"])
            last_progress = now
        if now - last_progress > DRAIN_STALL_S or now - started > DRAIN_LIMIT_S:
            return stats
        time.sleep(0.1)
