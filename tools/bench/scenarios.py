"""The one-shot measurements: connect storm, history replay, ingestion throughput."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx

from tools.bench import procstat
from tools.bench.node import SubscriberPool, run_publisher
from tools.bench.options import Options
from tools.bench.report import Progress
from tools.bench.servers import BenchServer, ChannelSpec, OurServer
from tools.bench.sweep import attach_and_measure_memory

STORM_TIMEOUT_S = 60.0
REPLAY_TIMEOUT_S = 60.0


def database_kind(server: BenchServer) -> str | None:
    """What our server stores into; None for the baseline (nothing)."""
    if not isinstance(server, OurServer):
        return None
    return "postgresql" if server.database_url else "sqlite"


def run_storm(server: BenchServer, options: Options, progress: Progress) -> dict[str, Any]:
    """`storm_clients` clients connect at once; time until every one is attached."""
    n = options.storm_clients
    label = f"storm {server.name}"
    progress.info(f"{label}: creating {n} channels")
    channels = server.create_channels([ChannelSpec("user", f"usr_storm_{i:05d}") for i in range(n)])
    time.sleep(0.5)
    rss_before = server.rss_kb()
    progress.update(label, 0.0, f"{n} clients connecting at once")
    with SubscriberPool(
        channels, ready_event=server.ready_event, storm=True, timeout_s=STORM_TIMEOUT_S
    ) as pool:
        attached, memory = attach_and_measure_memory(
            server, pool, n, options.idle_seconds, rss_before, "storm"
        )
    last_s = attached["elapsed_ms"] / 1000 if attached["elapsed_ms"] is not None else None
    # The storm's figure only when every client made it; otherwise when the last one that did.
    elapsed_s = last_s if attached["attached"] == n else None
    result = {
        "server": server.name,
        "clients": n,
        "attached": attached["attached"],
        "failed": attached["failed"],
        # Sockets whose Socket.IO connect succeeded (at the deadline, if not all attached).
        "connected": attached["connected"],
        "all_attached": attached["attached"] == n,
        # Ours: token-authenticated and `recovery` received; baseline: `connect` received.
        "attached_on": server.ready_event,
        "elapsed_s": elapsed_s,
        "last_attached_s": last_s,
        "timeout_s": STORM_TIMEOUT_S,
        "attach_p50_ms": attached["attach_p50_ms"],
        "attach_p99_ms": attached["attach_p99_ms"],
        "connect_errors": attached["connect_errors"],
        "error_messages": attached["error_messages"],
        "memory": memory,
    }
    if elapsed_s is not None:
        shown = f"{elapsed_s:.2f} s"
    else:
        shown = f"{STORM_TIMEOUT_S:.0f} s (timed out; {attached['connected']} had connected)"
    progress.done(label, f"{attached['attached']}/{n} attached in {shown}")
    return result


def record_events(
    server: OurServer,
    count: int,
    organisation_ids: list[str],
    user_id: str,
    options: Options,
    on_progress: Callable[[int], None],
) -> None:
    """`count` events through the batch API, 500 a request, rotating over the organisations:
    history recorded before anyone reads it. `on_progress(recorded so far)` after each batch."""
    pad = "x" * max(0, options.envelope_bytes - 280)
    with httpx.Client(base_url=server.base_url, timeout=60) as http:
        sent = 0
        while sent < count:
            size = min(500, count - sent)
            events = [
                {
                    "event_type": "comment_added",
                    "claim_id": f"clm_{sent + i:07d}",
                    "organisation_id": organisation_ids[(sent + i) % len(organisation_ids)],
                    "user_id": user_id,
                    # w: 1 keeps these out of the subscribers' latency figures.
                    "data": {"w": 1, "pad": pad},
                }
                for i in range(size)
            ]
            response = http.post(
                "/api/v1/claim-events/batch",
                json={"events": events},
                headers=server.publish_headers,
            )
            if response.status_code != 202:
                raise RuntimeError(f"recording: batch gave {response.status_code}: {response.text}")
            sent += size
            on_progress(sent)


def run_replay(server: OurServer, options: Options, progress: Progress) -> dict[str, Any]:
    """Record `replay_events` on one channel with nobody attached, then connect one client
    from sequence 0 and time until all of them arrived in order."""
    n = options.replay_events
    label = "replay ours"
    (channel,) = server.create_channels([ChannelSpec("user", "usr_replay")])
    record_events(
        server,
        n,
        ["org_replay"],
        "usr_replay",
        options,
        lambda done: progress.update(f"{label} recording", done / n),
    )
    with httpx.Client(base_url=server.base_url, timeout=60) as http:
        detail = http.get(f"/api/v1/realtime-subscriptions/{channel.channel_id}").json()
    progress.update(f"{label} replaying", 0.0)
    with SubscriberPool(
        [channel], ready_event=server.ready_event, last_sequence=0, timeout_s=REPLAY_TIMEOUT_S
    ) as pool:
        attached = pool.wait_attached()
        deadline = time.monotonic() + REPLAY_TIMEOUT_S
        stats = pool.report({channel.key: n})
        while stats["missing"] and time.monotonic() < deadline:
            time.sleep(0.05)
            stats = pool.report({channel.key: n})
    elapsed_s = None
    if stats["last_receipt_at"] is not None:
        elapsed_s = (float(stats["last_receipt_at"]) - float(attached["started_at"])) / 1000
    in_order = (
        stats["lost"] == 0
        and stats["duplicated"] == 0
        and stats["deliveries"] == n
        and stats["highest_sequence"] == n
    )
    result = {
        "server": server.name,
        "events": n,
        "recorded_event_count": detail.get("event_count"),
        "received": stats["deliveries"],
        "highest_sequence": stats["highest_sequence"],
        "lost": stats["lost"],
        "duplicated": stats["duplicated"],
        "in_order": in_order,
        "recovery": attached.get("recovery"),
        # From the client's connect() call to the last event received.
        "elapsed_s": elapsed_s,
        "note": "ours only: the baseline keeps no history, so it has nothing to replay",
    }
    shown = "n/a" if elapsed_s is None else f"{elapsed_s:.2f} s"
    progress.done(label, f"{stats['deliveries']}/{n} received in {shown}, in order: {in_order}")
    return result


def run_ingest(server: BenchServer, options: Options, progress: Progress) -> dict[str, Any]:
    """Events/s accepted through the batch API with no subscribers."""
    label = f"ingest {server.name}"
    cpu = procstat.CpuMeter([server.pid])
    cpu.start()
    published = run_publisher(
        {
            "mode": "ingest",
            "url": server.batch_url,
            "headers": server.publish_headers,
            "keys": [f"org_ingest_{o:03d}" for o in range(10)],
            "key_field": "organisation_id",
            "duration_s": options.ingest_seconds,
            "concurrency": options.ingest_concurrency,
            "batch_size": 500,
            "envelope_bytes": options.envelope_bytes,
        },
        on_tick=lambda elapsed: progress.update(label, elapsed / options.ingest_seconds),
    )
    server_cpu_pct = cpu.stop()
    result = {
        "server": server.name,
        "database": database_kind(server),
        "accepted_per_s": published["accepted_per_s"],
        "accepted": published["accepted"],
        "http_errors": published["http_errors"],
        "error_samples": published["error_samples"],
        "concurrency": published["concurrency"],
        "batch_size": published["batch_size"],
        "request_p50_ms": published["request_p50_ms"],
        "request_p99_ms": published["request_p99_ms"],
        "server_cpu_pct": server_cpu_pct,
        "publisher_cpu_pct": 100.0
        * float(published["cpu_ms"])
        / max(1.0, float(published["ended_at"]) - float(published["started_at"])),
    }
    if not isinstance(server, OurServer):
        result["note"] = "reference only: the baseline stores nothing and has no subscribers"
    progress.done(label, f"{published['accepted_per_s']:,.0f} events/s accepted")
    return result
