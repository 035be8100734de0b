"""The figures of `--mode webhooks` (tools.bench.webhooks): what a step's webhooks owed and
what arrived, how late, how many per second; the two sides' medians, the verdict, the table.

Pure functions of the receiver's arrivals and the steps' results, so that they are tested
without a server.
"""

from __future__ import annotations

import functools
import statistics
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from tools.bench import report
from tools.bench.readers import percentile
from tools.bench.receiver import Arrival

#: Step figures compared between the two sides (medians).
STEP_FIGURES = ("achieved_per_s", "p50_ms", "p99_ms", "server_cpu_pct")
#: Webhook figures of the side with fallbacks: medians of these, sums of the counts.
RATE_FIGURES = ("steady_per_s", "lateness_p50_ms", "lateness_p99_ms", "receiver_cpu_pct")
COUNTS = (
    "expected",
    "received",
    "unique",
    "missing",
    "duplicated",
    "unexpected",
    "early",
    "verified",
    "bad_signatures",
    "malformed",
)


def expected_ids(
    channel_of: Mapping[str, str], before: Mapping[str, int], after: Mapping[str, int]
) -> set[str]:
    """The webhook-ids a step owes: each sequence its events took on a channel with a
    fallback (`channel_of`: routing key -> channel id; `before`/`after`: events per key in
    all, before and after the step)."""
    return {
        f"{channel_of[key]}.{sequence}"
        for key, count in after.items()
        if key in channel_of
        for sequence in range(before.get(key, 0) + 1, count + 1)
    }


def first_arrivals(arrivals: Iterable[Arrival]) -> list[Arrival]:
    """Each webhook once: its first request (retries and duplicates dropped)."""
    seen: set[str] = set()
    first = []
    for arrival in arrivals:
        if arrival.webhook_id not in seen:
            seen.add(arrival.webhook_id)
            first.append(arrival)
    return first


def account(expected: set[str], arrivals: Sequence[Arrival]) -> dict[str, int]:
    """Received against owed: each owed webhook exactly once. `missing`: owed, never came
    (loss, or still on its way when the wait gave up); `duplicated`: requests beyond the
    first for one webhook-id; `unexpected`: webhook-ids not owed by the step."""
    unique = {arrival.webhook_id for arrival in arrivals}
    return {
        "expected": len(expected),
        "received": len(arrivals),
        "unique": len(unique),
        "missing": len(expected - unique),
        "duplicated": len(arrivals) - len(unique),
        "unexpected": len(unique - expected),
    }


def lateness_ms(arrivals: Iterable[Arrival], after_seconds: float) -> list[float]:
    """Per webhook (first request), in ms: arrival - (the event's recorded time + the
    deadline), both on the wall clock of the one machine."""
    return [
        (arrival.arrived_s - arrival.recorded_s - after_seconds) * 1000.0
        for arrival in first_arrivals(arrivals)
    ]


def lateness_figures(late_ms: Sequence[float]) -> dict[str, Any]:
    """p50, p90, p99, max and min of the lateness; `early`: webhooks before their deadline."""
    return {
        "lateness_p50_ms": percentile(late_ms, 0.50),
        "lateness_p90_ms": percentile(late_ms, 0.90),
        "lateness_p99_ms": percentile(late_ms, 0.99),
        "lateness_max_ms": max(late_ms, default=None),
        "lateness_min_ms": min(late_ms, default=None),
        "early": sum(1 for late in late_ms if late < 0),
    }


def steady_rate(
    arrivals: Iterable[Arrival],
    start_ms: float,
    after_seconds: float,
    step_seconds: float,
    warmup_seconds: float,
) -> float | None:
    """Webhooks/s (first requests) while the step's events fall due at the publisher's rate:
    arrivals between the first deadline (plus `warmup_seconds`) and the last; None when that
    window is empty."""
    low = start_ms + (after_seconds + warmup_seconds) * 1000.0
    high = start_ms + (after_seconds + step_seconds) * 1000.0
    if high <= low:
        return None
    count = sum(1 for arrival in first_arrivals(arrivals) if low <= arrival.arrived_ms < high)
    return count * 1000.0 / (high - low)


def _median(values: Iterable[Any]) -> float | None:
    present = [float(value) for value in values if value is not None]
    return statistics.median(present) if present else None


def side(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Medians of one side's steps (with or without fallbacks); counts summed."""
    steps = [run["step"] for run in runs]
    figures: dict[str, Any] = {name: _median(step[name] for step in steps) for name in STEP_FIGURES}
    # Ingestion: the publisher's batch requests, sent to answered.
    figures["ingest_p50_ms"] = _median(step["publisher"]["request_p50_ms"] for step in steps)
    figures["ingest_p99_ms"] = _median(step["publisher"]["request_p99_ms"] for step in steps)
    figures["runs"] = len(steps)
    figures["steps_passed"] = sum(bool(step["passed"]) for step in steps)
    figures["publisher_kept_up"] = all(step["publisher"]["kept_up"] for step in steps)
    figures["lost"] = sum(int(step["lost"]) for step in steps)
    figures["duplicated"] = sum(int(step["duplicated"]) for step in steps)
    figures["strays"] = sum(int(run.get("strays", 0)) for run in runs)
    webhooks = [run["webhooks"] for run in runs if run.get("webhooks")]
    if webhooks:
        figures["webhooks"] = {
            **{name: _median(w[name] for w in webhooks) for name in RATE_FIGURES},
            "lateness_max_ms": max(
                (w["lateness_max_ms"] for w in webhooks if w["lateness_max_ms"] is not None),
                default=None,
            ),
            **{name: sum(int(w[name]) for w in webhooks) for name in COUNTS},
        }
    return figures


def p99_verdict(
    without_ms: float | None, with_ms: float | None, target_ms: float
) -> dict[str, Any]:
    """Delivery p99 with fallbacks against the usual target (and, for information, against
    the p99 without them); `within` None when it is missing."""
    ratio = with_ms / without_ms if with_ms is not None and without_ms else None
    within = None if with_ms is None else with_ms <= target_ms
    return {"target_ms": target_ms, "ratio": ratio, "within": within}


def failures(result: Mapping[str, Any]) -> list[str]:
    """What makes the run wrong, not merely slow: a delivery lost or repeated, a webhook
    missing, repeated, unowed, early, badly signed or malformed, none verified. The p99
    verdict is a target, reported."""
    found = []
    for name in ("without", "with"):
        figures = result[name]
        if figures["lost"] or figures["duplicated"]:
            found.append(
                f"{name} fallbacks: {figures['lost']} deliveries lost, "
                f"{figures['duplicated']} duplicated"
            )
    if result["without"]["strays"]:
        found.append(f"{result['without']['strays']} webhooks during steps without fallbacks")
    webhooks = result["with"].get("webhooks")
    if not webhooks:
        return [*found, "no step with fallbacks"]
    for name, text in (
        ("missing", "webhooks missing"),
        ("duplicated", "webhooks duplicated"),
        ("unexpected", "webhooks not owed"),
        ("early", "webhooks before their deadline"),
        ("bad_signatures", "bad signatures"),
        ("malformed", "malformed webhooks"),
    ):
        if webhooks[name]:
            found.append(f"{webhooks[name]:,} {text}")
    if not webhooks["verified"]:
        found.append("no signature verified")
    return found


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}"


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value / 1000:.2f}"


def _title(result: Mapping[str, Any]) -> str:
    return (
        f"{result['channels']:,} user channels with a fallback after "
        f"{result['after_seconds']} s, {result['channels']:,} without, "
        f"{result['target_per_s']:,} events/s"
    )


def render(result: Mapping[str, Any] | None) -> str:
    """Every step, one line each, then the medians and the verdict."""
    if not result or "p99" not in result:
        return ""
    header = ["run", "achieved/s", "p50", "p99", "ingest p99", "lost", "dup", "srv CPU"]
    header += ["webhooks", "wh dup", "wh/s", "late p50", "late p99", "late max", "result"]

    def line(name: str, step: Mapping[str, Any], hooks: Mapping[str, Any] | None) -> list[str]:
        ingest = step.get("ingest_p99_ms", (step.get("publisher") or {}).get("request_p99_ms"))
        cpu = step["server_cpu_pct"]
        return [
            name,
            "-" if step["achieved_per_s"] is None else f"{step['achieved_per_s']:,.0f}",
            _ms(step["p50_ms"]),
            _ms(step["p99_ms"]),
            _ms(ingest),
            str(step["lost"]),
            str(step["duplicated"]),
            "-" if cpu is None else f"{cpu:.0f}%",
            "-" if not hooks else f"{hooks['unique']:,}/{hooks['expected']:,}",
            "-" if not hooks else str(hooks["duplicated"]),
            "-" if not hooks or hooks["steady_per_s"] is None else f"{hooks['steady_per_s']:,.0f}",
            "-" if not hooks else _s(hooks["lateness_p50_ms"]),
            "-" if not hooks else _s(hooks["lateness_p99_ms"]),
            "-" if not hooks else _s(hooks["lateness_max_ms"]),
        ]

    rows = []
    for run in result["runs"]:
        step = run["step"]
        name = f"#{run['pair']} {'with' if run['fallbacks'] else 'without'} fallbacks"
        verdict = "ok" if step["passed"] else "FAIL " + ", ".join(step["failures"])
        if run.get("strays"):
            verdict += f", {run['strays']} stray webhooks"
        rows.append([*line(name, step, run.get("webhooks")), verdict])
    for name in ("without", "with"):
        rows.append([*line(f"median {name}", result[name], result[name].get("webhooks")), ""])
    verdict = result["p99"]
    mark = {True: "within", False: "NOT within", None: "undecided:"}[verdict["within"]]
    ratio = "n/a" if verdict["ratio"] is None else f"{verdict['ratio']:.2f}x without"
    kept_up = result["with"]["publisher_kept_up"]
    lines = [
        f"Fallback webhooks under load (ours, {_title(result)}; subscribers never confirm; "
        "latency in ms, lateness past the deadline in s, CPU in % of one core)",
        report.table(header, rows),
        f"delivery p99 with fallbacks {_ms(result['with']['p99_ms'])} ms ({ratio}): {mark} "
        f"the {verdict['target_ms']:.0f} ms target; publisher "
        + ("kept up" if kept_up else "FELL BEHIND")
        + ("" if not result["failures"] else "; FAIL: " + ", ".join(result["failures"])),
    ]
    return "\n".join(lines)


def summary_rows(result: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """The headline figures for the summary table (ours only)."""
    if not result or "p99" not in result:
        return []
    what = f"webhooks ({result['channels']:,} channels, {result['target_per_s']:,}/s)"
    without, with_ = result["without"], result["with"]
    hooks = with_.get("webhooks") or {}

    row = functools.partial(report.ours_only_row, what, "no webhooks")

    return [
        row(
            "delivery p99 without / with fallbacks (medians)",
            f"{_ms(without['p99_ms'])} / {_ms(with_['p99_ms'])} ms",
            "",
            f"with <= {result['p99']['target_ms']:.0f} ms, publisher kept up",
            None
            if result["p99"]["within"] is None
            else bool(result["p99"]["within"] and with_["publisher_kept_up"]),
        ),
        row("webhooks received while falling due", hooks.get("steady_per_s"), "/s", None, None),
        row(
            "lateness past the deadline p50 / p99 / max (s)",
            " / ".join(
                _s(hooks.get(name))
                for name in ("lateness_p50_ms", "lateness_p99_ms", "lateness_max_ms")
            ),
            "",
            None,
            None,
        ),
        row(
            "webhooks received / owed, duplicated",
            f"{hooks.get('unique', 0):,} / {hooks.get('expected', 0):,}, "
            f"{hooks.get('duplicated', 0):,}",
            "",
            "all, 0",
            not result["failures"],
        ),
    ]
