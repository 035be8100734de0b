"""The soak run (`--mode soak`, our server only, never part of `all` or CI).

N clients (the org workload by default: `orgs` organisations, each event to every channel of
its organisation) attach, then the batch API is fed at a steady `soak_rate` deliveries/s for
`soak_seconds` while clients drop their transport at random (each one on average every
`soak_drop_every_s`) and resume with `auth.last_sequence`. Server RSS is sampled all along,
and live Python memory right after full collections the server is asked for (SIGUSR2).
At the end, once everything drained, every channel's received set must be exactly
1..head, head being the channel's `event_count` from the REST API: nothing lost, nothing
beyond, and after dedupe by sequence nothing twice.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx

from tools.bench import procstat
from tools.bench.node import SOAK_SUBSCRIBERS, SubscriberPool, run_publisher
from tools.bench.options import PUBLISHER_BACKLOG_LIMIT_MS, SOAK_FLAT_GROWTH_PCT, Options
from tools.bench.report import Progress
from tools.bench.servers import Channel, OurServer
from tools.bench.sweep import workload

#: After the publisher stopped: how long to wait for every client to be back and complete,
#: at most / without any progress.
DRAIN_LIMIT_S = 120.0
DRAIN_STALL_S = 15.0
ATTACH_TIMEOUT_S = 120.0


def sample_every(seconds: float) -> float:
    """RSS sampling interval: every 5 s, more often on a short run (at least ~40 samples)."""
    return min(5.0, max(0.2, seconds / 40))


def collection_every(seconds: float) -> float:
    """How often the server is asked for a full collection to measure live memory: every
    30 s, more often on a short run (at least ~20 points). Each one stops the server's event
    loop for a moment (about 150 ms with 1,000 sockets), so not as often as RSS samples."""
    return min(30.0, max(0.5, seconds / 20))


def memory_trend(samples: list[tuple[float, int]], window_s: float) -> dict[str, Any]:
    """Start, end, max, and the least-squares slope (KB/min) over the second half of the
    window; `samples` are (seconds since the start, RSS KiB)."""
    second_half = [(t, kb) for t, kb in samples if t >= window_s / 2]
    slope_kb_per_min: float | None = None
    growth_pct: float | None = None
    if len(second_half) >= 2:
        n = len(second_half)
        mean_t = sum(t for t, _ in second_half) / n
        mean_kb = sum(kb for _, kb in second_half) / n
        var_t = sum((t - mean_t) ** 2 for t, _ in second_half)
        if var_t > 0:
            slope_per_s = sum((t - mean_t) * (kb - mean_kb) for t, kb in second_half) / var_t
            slope_kb_per_min = slope_per_s * 60
            # Growth the fitted line shows across the half, against its value where it began.
            first_t, last_t = second_half[0][0], second_half[-1][0]
            at_start = mean_kb + slope_per_s * (first_t - mean_t)
            growth_pct = 100.0 * slope_per_s * (last_t - first_t) / max(1.0, at_start)
    verdict = None
    if growth_pct is not None:
        verdict = "flat" if growth_pct < SOAK_FLAT_GROWTH_PCT else "growing"
    values = [kb for _, kb in samples]
    return {
        "start_kb": values[0] if values else None,
        "end_kb": values[-1] if values else None,
        "max_kb": max(values) if values else None,
        "samples": len(values),
        "second_half_samples": len(second_half),
        "slope_kb_per_min": slope_kb_per_min,
        "second_half_growth_pct": growth_pct,
        "flat_below_pct": SOAK_FLAT_GROWTH_PCT,
        "verdict": verdict,
    }


def channel_heads(server: OurServer, channels: list[Channel]) -> dict[str, int]:
    """Each channel's `event_count` (its head sequence) from GET /realtime-subscriptions/{id}."""

    async def fetch() -> dict[str, int]:
        limit = asyncio.Semaphore(16)
        async with httpx.AsyncClient(base_url=server.base_url, timeout=60) as http:

            async def one(channel: Channel) -> tuple[str, int]:
                async with limit:
                    response = await http.get(
                        f"/api/v1/realtime-subscriptions/{channel.channel_id}"
                    )
                if response.status_code != 200:
                    raise RuntimeError(
                        f"soak: GET channel {channel.channel_id} gave {response.status_code}"
                    )
                return channel.channel_id, int(response.json()["event_count"])

            return dict(await asyncio.gather(*(one(channel) for channel in channels)))

    return asyncio.run(fetch())


class SoakPool(SubscriberPool):
    """soak_subscribers.mjs: clients that drop and resume, and check their sequences."""

    def chaos(self, on: bool) -> None:
        self._send({"cmd": "chaos", "on": on})
        self._expect("chaos", 30)

    def progress(self) -> dict[str, Any]:
        self._send({"cmd": "progress"})
        return self._expect("progress", 30)

    def verify(self, expected: dict[str, int]) -> dict[str, Any]:
        self._send({"cmd": "report", "expected": expected})
        return self._expect("stats", 60)


def drain(pool: SoakPool, heads: dict[str, int], channels: int) -> dict[str, Any]:
    """Verify once every client is back and complete, or progress stopped."""
    started = time.monotonic()
    last_state: tuple[int, int] | None = None
    last_progress = started
    while True:
        stats = pool.verify(heads)
        now = time.monotonic()
        if stats["channels_complete"] == channels and stats["attached_now"] == channels:
            return stats
        state = (int(stats["unique"]), int(stats["attached_now"]))
        if state != last_state:
            last_state, last_progress = state, now
        if now - last_progress > DRAIN_STALL_S or now - started > DRAIN_LIMIT_S:
            return stats
        time.sleep(0.2)


def run_soak(server: OurServer, options: Options, progress: Progress) -> dict[str, Any]:
    load = workload("org" if "org" in options.workloads else options.workloads[0], options)
    label = f"soak {server.name}/{load.name}"
    progress.info(f"{label}: creating {len(load.specs)} channels")
    channels = server.create_channels(load.specs)
    result: dict[str, Any] = {
        "server": server.name,
        "workload": load.name,
        "channels": len(channels),
        "fanout": load.fanout,
        "seconds": options.soak_seconds,
        "target_deliveries_per_s": options.soak_rate,
        "events_per_s": options.soak_rate / load.fanout,
        "drop_every_s": options.soak_drop_every_s,
        "reconnect_delay_s": [options.soak_reconnect_min_s, options.soak_reconnect_max_s],
    }
    with SoakPool(
        channels,
        ready_event=server.ready_event,
        timeout_s=ATTACH_TIMEOUT_S,
        script=SOAK_SUBSCRIBERS,
        extra={
            "drop_every_s": options.soak_drop_every_s,
            "reconnect_min_s": options.soak_reconnect_min_s,
            "reconnect_max_s": options.soak_reconnect_max_s,
        },
    ) as pool:
        attached = pool.wait_attached()
        result["attached"] = attached
        if attached["attached"] < len(channels):
            raise RuntimeError(f"soak: only {attached['attached']}/{len(channels)} attached")
        time.sleep(options.idle_seconds)
        every = sample_every(options.soak_seconds)
        samples: list[tuple[float, int]] = [(0.0, server.rss_kb())]
        blocks: list[tuple[float, int]] = []
        collect_every = collection_every(options.soak_seconds)

        def sample_blocks(elapsed: float) -> None:
            count = server.live_blocks_after_collection()
            if count is not None:
                blocks.append((elapsed, count))

        sample_blocks(0.0)
        timeline: list[dict[str, Any]] = []
        server_cpu = procstat.CpuMeter([server.pid])
        subscriber_cpu = procstat.CpuMeter([pool.pid])
        server_cpu.start()
        subscriber_cpu.start()
        pool.chaos(True)
        started = time.monotonic()

        def on_tick(_: float) -> None:
            # The publisher's clock starts a little after ours; RSS is timed by ours.
            elapsed = time.monotonic() - started
            if elapsed - samples[-1][0] < every:
                return
            samples.append((elapsed, server.rss_kb()))
            if not blocks or elapsed - blocks[-1][0] >= collect_every:
                sample_blocks(elapsed)
            seen = pool.progress()
            timeline.append(
                {
                    "t_s": round(elapsed, 2),
                    "rss_kb": samples[-1][1],
                    "allocated_blocks": server.allocated_blocks(),
                    "live_blocks": blocks[-1][1] if blocks else None,
                    **{k: seen[k] for k in ("unique", "drops", "resumes", "gaps", "attached_now")},
                }
            )
            progress.update(
                label,
                elapsed / options.soak_seconds,
                f"RSS {samples[-1][1] / 1024:,.1f} MB, {seen['unique']:,} received, "
                f"{seen['drops']:,} drops, {seen['resumes']:,} resumes, {seen['gaps']} lost",
            )

        published = run_publisher(
            {
                "mode": "rate",
                "url": server.batch_url,
                "headers": server.publish_headers,
                "keys": load.keys,
                "key_field": load.key_field,
                "rate": options.soak_rate / load.fanout,
                "duration_s": options.soak_seconds,
                "warmup_s": 0,
                "tick_ms": options.tick_ms,
                "max_inflight": options.max_inflight,
                "backlog_limit_ms": PUBLISHER_BACKLOG_LIMIT_MS,
                "envelope_bytes": options.envelope_bytes,
            },
            on_tick=on_tick,
        )
        window_s = time.monotonic() - started
        samples.append((window_s, server.rss_kb()))
        sample_blocks(window_s)
        pool.chaos(False)
        server_cpu_pct = server_cpu.stop()
        subscriber_cpu_pct = subscriber_cpu.stop()
        progress.info(f"{label}: publisher done; waiting for every client to resume and drain")
        heads = channel_heads(server, channels)
        stats = drain(pool, heads, len(channels))
        end_kb = server.rss_kb()

    per_key = {key: int(count) for key, count in published["per_key"].items()}
    head_mismatches = [
        {
            "channel_id": c.channel_id,
            "event_count": heads[c.channel_id],
            "accepted": per_key.get(c.key, 0),
        }
        for c in channels
        if heads[c.channel_id] != per_key.get(c.key, 0)
    ]
    expected_total = sum(heads.values())
    memory = memory_trend(samples, window_s)
    memory["end_kb"] = end_kb  # after the drain, as the run ends
    memory["max_kb"] = max(memory["max_kb"], end_kb)
    memory["end_of_load_kb"] = samples[-1][1]
    # RSS keeps the allocator's high-water mark (free blocks in pools it cannot return after
    # a burst of reconnections), and the plain block count the cyclic garbage of dropped
    # connections until a full collection (every few minutes under load, so it rises in a
    # sawtooth for that long); what is live right after a full collection grows only with
    # a leak.
    memory["live_blocks"] = {
        key.replace("_kb", ""): value for key, value in memory_trend(blocks, window_s).items()
    }
    memory["live_blocks"]["collect_every_s"] = collect_every
    result.update(
        {
            "publisher": {k: v for k, v in published.items() if k != "per_key"},
            "accepted_events": int(published["accepted"]),
            "expected_deliveries": expected_total,
            "received": stats["received"],
            "unique": stats["unique"],
            "duplicates_before_dedupe": stats["duplicates"],
            # After dedupe by sequence, each channel's set is compared with 1..head: whatever
            # is not in it is lost, whatever is above head should not exist.
            "lost": stats["missing"],
            "beyond_head": stats["beyond_head"],
            "gaps_seen_live": stats["gaps"],
            "gap_events": stats["gap_events"],
            "channels_complete": stats["channels_complete"],
            "incomplete_samples": stats["incomplete"],
            "exact": stats["missing"] == 0
            and stats["beyond_head"] == 0
            and stats["unique"] == expected_total,
            "drops": stats["drops"],
            "resumes": stats["resumes"],
            "recoveries": stats["recoveries"],
            "unrecovered": stats["unrecovered"],
            "unavailable": stats["unavailable"],
            "replayed": stats["replayed"],
            "other_disconnects": stats["other_disconnects"],
            "reconnect_attempts": stats["reconnect_attempts"],
            "connect_errors": stats["connect_errors"],
            "connect_error_messages": stats["error_messages"],
            "attached_at_end": stats["attached_now"],
            "head_mismatches": head_mismatches[:5],
            "head_mismatch_count": len(head_mismatches),
            "server_cpu_pct": server_cpu_pct,
            "subscriber_cpu_pct": subscriber_cpu_pct,
            "memory": memory,
            "timeline": timeline,
        }
    )
    result["failures"] = soak_failures(result)
    result["passed"] = not result["failures"]
    verdict = "ok" if result["passed"] else "FAIL: " + ", ".join(result["failures"])
    progress.done(
        label,
        f"{result['unique']:,}/{expected_total:,} delivered, {result['lost']} lost, "
        f"{result['drops']:,} drops / {result['resumes']:,} resumes, memory "
        f"{memory['verdict'] or 'n/a'} -> {verdict}",
    )
    return result


def soak_failures(result: dict[str, Any]) -> list[str]:
    """What makes the soak fail: any loss, anything beyond head, an unrecovered resume, an HTTP
    error, a client not back at the end, live memory growing through the second half. RSS is
    reported with its verdict, not judged: it keeps the allocator's high-water mark."""
    failures = []
    if result["lost"] or result["gaps_seen_live"]:
        failures.append(f"{result['lost']} lost ({result['gaps_seen_live']} gaps seen live)")
    if result["beyond_head"]:
        failures.append(f"{result['beyond_head']} beyond head")
    if not result["exact"]:
        failures.append("received set != 1..head")
    if result["unrecovered"] or result["unavailable"]:
        failures.append(
            f"{result['unrecovered']} unrecovered resumes, {result['unavailable']} unavailable"
        )
    if result["publisher"]["http_errors"]:
        failures.append(f"{result['publisher']['http_errors']} HTTP errors")
    if result["head_mismatch_count"]:
        failures.append(f"{result['head_mismatch_count']} channels' event_count != accepted")
    if result["attached_at_end"] < result["channels"]:
        failures.append(f"{result['channels'] - result['attached_at_end']} clients not back")
    if result["resumes"] < result["drops"]:
        failures.append(f"{result['drops'] - result['resumes']} drops without a resume")
    if result["memory"]["live_blocks"]["verdict"] == "growing":
        failures.append("live Python memory kept growing (a leak)")
    return failures
