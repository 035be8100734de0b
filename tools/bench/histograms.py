"""Quantiles of a Prometheus histogram between two scrapes of GET /metrics.

The server's own latency histograms split a delivery's time at the commit: arrival to
commit (`claims_realtime_ingest_latency_seconds`), commit to the sockets' send queues
(`claims_realtime_delivery_latency_seconds`). A quantile read from buckets is only known
to lie at or below a bucket's upper bound, so that bound is what is reported."""

from __future__ import annotations

import math
from collections.abc import Mapping

INGEST = "claims_realtime_ingest_latency_seconds"
DELIVERY = "claims_realtime_delivery_latency_seconds"
GC_PAUSE = "claims_realtime_python_gc_pause_seconds"

#: Cumulative count of observations at or below each upper bound (seconds; inf included).
Buckets = dict[float, float]


def parse_buckets(text: str, name: str, label: str | None = None) -> Buckets:
    """The `<name>_bucket` samples of a Prometheus text exposition, summed over any labels
    other than `le` (one series per process in multiprocess mode); with `label` (such as
    'generation="2"'), only the samples carrying it."""
    prefix = f"{name}_bucket{{"
    buckets: Buckets = {}
    for line in text.splitlines():
        if not line.startswith(prefix):
            continue
        labels, _, value = line[len(prefix) :].rpartition("} ")
        if label is not None and label not in labels.split(","):
            continue
        bound = next((part[4:-1] for part in labels.split(",") if part.startswith('le="')), None)
        if bound is None:
            continue
        upper = math.inf if bound == "+Inf" else float(bound)
        buckets[upper] = buckets.get(upper, 0.0) + float(value)
    return buckets


def quantile_bound_ms(
    before: Mapping[float, float], after: Mapping[float, float], quantile: float
) -> float | None:
    """Upper bound (ms) of the bucket holding `quantile` of the observations made between
    the two scrapes; None if there were none, inf if it lies past the largest bound."""
    counts = sorted((upper, after[upper] - before.get(upper, 0.0)) for upper in after)
    total = counts[-1][1] if counts else 0.0
    if total <= 0:
        return None
    for upper, cumulative in counts:
        if cumulative >= quantile * total:
            return upper * 1000.0
    return math.inf


def observations(before: Mapping[float, float], after: Mapping[float, float]) -> float:
    """How many observations were made between the two scrapes."""
    return after.get(math.inf, 0.0) - before.get(math.inf, 0.0)
