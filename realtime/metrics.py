"""The service's Prometheus metrics: their definitions, and the text a scrape returns.

Updated where things happen (hub, fanout, ingestion); served at `GET /metrics` by
handlers/metrics.py. Delivery is the hot path (thousands of packets per millisecond under
load): there a metric is touched once per event batch with a count (`inc(n)`), never once per
socket, and labelled series are bound to their children here, at import, not looked up.

One process (`serve`): the metrics live in memory. Several (`serve --workers N`): the CLI sets
PROMETHEUS_MULTIPROC_DIR before the workers start, prometheus-client keeps every value in a
per-process file there, and a scrape of any worker adds up all of them (see docs/metrics.md).
Channels by status are not kept in a process at all: the database is the only place that knows
them for every process, so each scrape counts them there with one GROUP BY.
"""

from __future__ import annotations

import gc
import os
import sys
import time
from collections.abc import Iterable, Mapping
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from tortoise.functions import Count

from claims_realtime.models.channel import Channel

#: The Prometheus text format every scrape is answered in.
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
MULTIPROCESS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
#: Channel statuses, each always exported (0 when there is none).
CHANNEL_STATUSES = ("connected", "disconnected", "closed")

# Latencies on loopback are a few milliseconds; a database under strain, seconds. Finer
# between 10 and 100 ms, where the delivery targets lie (20 and 30 ms at p99).
_LATENCY_BUCKETS = (
    *(0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05, 0.075),
    *(0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
_REPLAY_BUCKETS = (1, 10, 100, 1_000, 10_000, 100_000)

CONNECTED_SOCKETS = Gauge(
    "claims_realtime_connected_sockets",
    "Sockets attached to a channel namespace (/channels/<id>) right now.",
    # Several processes: the sum over the live ones.
    multiprocess_mode="livesum",
)
_EVENTS_INGESTED = Counter(
    "claims_realtime_events_ingested",
    "Claim events accepted by ingestion (202): outcome=recorded for new events, "
    "outcome=duplicate for a known event_id submitted again unchanged (not recorded again).",
    ["outcome"],
)
EVENTS_RECORDED = _EVENTS_INGESTED.labels(outcome="recorded")
EVENTS_DUPLICATE = _EVENTS_INGESTED.labels(outcome="duplicate")
DELIVERIES = Counter(
    "claims_realtime_deliveries",
    "Event packets written to sockets' send queues, live or replayed (one per event per socket).",
)
REPLAYS = Counter(
    "claims_realtime_replays",
    "Socket connections that began by replaying missed events from history "
    "(recovery.replayed > 0).",
)
REPLAY_SIZE = Histogram(
    "claims_realtime_replay_size_events",
    "Events each replay had to send from history (recovery.replayed); _sum is the events "
    "replayed in all, _count the replays.",
    buckets=_REPLAY_BUCKETS,
)
UNRECOVERED_RESUMES = Counter(
    "claims_realtime_unrecovered_resumes",
    "Connections that resumed from a point history no longer held (recovery.recovered false): "
    "their client was told events are unavailable.",
)
INGEST_LATENCY = Histogram(
    "claims_realtime_ingest_latency_seconds",
    "From an ingestion request's arrival to the commit of its events.",
    buckets=_LATENCY_BUCKETS,
)
DELIVERY_LATENCY = Histogram(
    "claims_realtime_delivery_latency_seconds",
    "From the commit of an ingested batch to its events being written to the send queue of "
    "every socket of their channels in the ingesting process (one observation per batch).",
    buckets=_LATENCY_BUCKETS,
)
SLOW_CONSUMER_DROPS = Counter(
    "claims_realtime_slow_consumer_drops",
    "Sockets dropped because they did not read their events: their send queue was full.",
)
PYTHON_ALLOCATED_BLOCKS = Gauge(
    "claims_realtime_python_allocated_blocks",
    "Memory blocks (objects, buffers) the Python allocator has handed out and not freed, "
    "per process: live data. RSS also keeps the allocator's free blocks after a burst, so "
    "this, not RSS, tells a leak (growing) from a high-water mark (flat).",
    multiprocess_mode="liveall",
)
PYTHON_BLOCKS_AFTER_FULL_COLLECTION = Gauge(
    "claims_realtime_python_blocks_after_full_collection",
    "claims_realtime_python_allocated_blocks right after the last full garbage collection, "
    "per process: with no unreachable cycles left, the live data alone. The plain gauge also "
    "counts cyclic garbage awaiting a full collection, which comes every few minutes under "
    "load; a leak shows here as growth from one collection to the next.",
    multiprocess_mode="liveall",
)
PYTHON_FULL_COLLECTIONS = Counter(
    "claims_realtime_python_full_collections",
    "Full (generation 2) garbage collections, the interpreter's own and those asked for with "
    "SIGUSR2 (see README, Metrics).",
)
_GC_PAUSE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
_GC_PAUSES = Histogram(
    "claims_realtime_python_gc_pause_seconds",
    "How long each garbage collection stopped this process's threads, by generation (2: a "
    "full collection, which scans every live object; 0 and 1 only the young ones). A stall "
    "of the event loop shows here when a collection caused it.",
    ["generation"],
    buckets=_GC_PAUSE_BUCKETS,
)
#: Bound at import: the callback runs at every collection, hundreds a second under load.
_GC_PAUSE_BY_GENERATION = tuple(_GC_PAUSES.labels(generation=str(g)) for g in range(3))
ENGINE_SESSIONS = Gauge(
    "claims_realtime_engineio_sessions",
    "Engine.IO sessions this process holds: its connections, and closed ones not yet "
    "released (each holds its queue and connection objects). Close to the connected sockets "
    "when all is well.",
    multiprocess_mode="liveall",
)
_WEBHOOKS = Counter(
    "claims_realtime_webhooks",
    "Fallback webhooks by what became of them: outcome=delivered (2xx), retried (no answer, "
    "408, 425, 429 or 5xx: tried again later), failed (given up on: another 4xx, or retried "
    "for WEBHOOK_RETRY_FOR), disabled (410: the channel's fallback stopped), dropped (owed "
    "but not sent: the channel closed, or history no longer held the event).",
    ["outcome"],
)
WEBHOOKS_DELIVERED = _WEBHOOKS.labels(outcome="delivered")
WEBHOOKS_RETRIED = _WEBHOOKS.labels(outcome="retried")
WEBHOOKS_FAILED = _WEBHOOKS.labels(outcome="failed")
WEBHOOKS_DISABLED = _WEBHOOKS.labels(outcome="disabled")
WEBHOOKS_DROPPED = _WEBHOOKS.labels(outcome="dropped")
WEBHOOK_SECONDS = Histogram(
    "claims_realtime_webhook_request_seconds",
    "How long each fallback webhook request took, answered or not.",
    buckets=_LATENCY_BUCKETS,
)
WEBHOOKS_OWED = Gauge(
    "claims_realtime_webhooks_owed",
    "Events on channels with an active fallback that their subscriber has not confirmed and "
    "that no webhook has dealt with yet, due or not (an upper bound: every event type counts).",
    multiprocess_mode="max",
)
WEBHOOK_OLDEST_DUE = Gauge(
    "claims_realtime_webhook_oldest_due_seconds",
    "How long the longest-waiting channel with owed fallback webhooks has been due (0: none).",
    multiprocess_mode="max",
)

_OUTBOX_BATCH_BUCKETS = (1, 5, 10, 50, 100, 250, 500, 1_000)
# Outbox insert -> our commit includes the claims transaction's own time and the poll.
_OUTBOX_LATENCY_BUCKETS = (*_LATENCY_BUCKETS, 30.0, 60.0, 300.0)
_OUTBOX_ROWS = Counter(
    "claims_realtime_outbox_rows",
    "Transactional outbox rows dealt with: outcome=consumed (recorded, or a duplicate of an "
    "event already recorded, and deleted), rejected (moved to <OUTBOX_TABLE>_rejected).",
    ["outcome"],
)
OUTBOX_CONSUMED = _OUTBOX_ROWS.labels(outcome="consumed")
OUTBOX_REJECTED = _OUTBOX_ROWS.labels(outcome="rejected")
OUTBOX_BATCH_SIZE = Histogram(
    "claims_realtime_outbox_batch_size_rows",
    "Outbox rows read by each consumer run that found some.",
    buckets=_OUTBOX_BATCH_BUCKETS,
)
OUTBOX_WAITING = Gauge(
    "claims_realtime_outbox_rows_waiting",
    "Rows in the outbox table not consumed yet, sampled at each consumer run.",
    multiprocess_mode="max",
)
OUTBOX_OLDEST = Gauge(
    "claims_realtime_outbox_oldest_seconds",
    "Age of the oldest row waiting in the outbox table (0: none), sampled at each run.",
    multiprocess_mode="max",
)
OUTBOX_LATENCY = Histogram(
    "claims_realtime_outbox_latency_seconds",
    "From an outbox row's insert (its created_at, by the outbox database's clock) to the "
    "commit of its event here.",
    buckets=_OUTBOX_LATENCY_BUCKETS,
)


def sample_process(engine_sessions: int | None = None) -> None:
    """Refresh this process's sampled gauges (at each scrape, and each heartbeat so that
    every process of `serve --workers N` stays current)."""
    PYTHON_ALLOCATED_BLOCKS.set(sys.getallocatedblocks())
    if engine_sessions is not None:
        ENGINE_SESSIONS.set(engine_sessions)


def watch_collections() -> None:
    """Time every garbage collection, and sample live memory after every full one (a `gc`
    callback; idempotent)."""
    if _on_collection not in gc.callbacks:
        gc.callbacks.append(_on_collection)


_collection_started = 0.0


def _on_collection(phase: str, info: dict[str, Any]) -> None:
    global _collection_started
    if phase == "start":
        _collection_started = time.perf_counter()
        return
    generation = info["generation"]
    _GC_PAUSE_BY_GENERATION[generation].observe(time.perf_counter() - _collection_started)
    if generation == 2:
        PYTHON_BLOCKS_AFTER_FULL_COLLECTION.set(sys.getallocatedblocks())
        PYTHON_FULL_COLLECTIONS.inc()


def record_slow_consumer_drop(sockets: int = 1) -> None:
    """A slow consumer was dropped (its send queue overflowed)."""
    SLOW_CONSUMER_DROPS.inc(sockets)


def multiprocess_dir() -> str | None:
    """Where the processes of `serve --workers N` share their values (None: one process)."""
    return os.environ.get(MULTIPROCESS_DIR_ENV) or None


def process_exited() -> None:
    """Forget this process's live gauges (connected sockets) in multiprocess mode."""
    if multiprocess_dir() is not None:
        mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]


class _Families:
    """A collector of metric families gathered before the scrape."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self.families = list(families)

    def collect(self) -> list[Metric]:
        return self.families


def channels_family(counts: Mapping[str, int]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(
        "claims_realtime_channels",
        "Channels by status, counted in the database at scrape time (all processes).",
        labels=["status"],
    )
    for status in CHANNEL_STATUSES:
        family.add_metric([status], counts.get(status, 0))
    return family


async def channel_counts() -> dict[str, int]:
    """Channels per status, in one query: a table scan every scrape (seconds apart) costs
    less than keeping a count right across processes, reconnects, closes and reaping."""
    rows = await Channel.annotate(n=Count("id")).group_by("status").values_list("status", "n")
    return {str(status): int(n) for status, n in rows}


def exposition(
    channel_counts: Mapping[str, int] | None, engine_sessions: int | None = None
) -> bytes:
    """The scrape's text: this process's metrics (all processes' in multiprocess mode) and
    the channels counted by status (left out when they could not be counted: None)."""
    sample_process(engine_sessions)
    registry = CollectorRegistry(auto_describe=False)
    if multiprocess_dir() is not None:
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        registry.register(_Families(REGISTRY.collect()))
    if channel_counts is not None:
        registry.register(_Families([channels_family(channel_counts)]))
    return generate_latest(registry)
