"""The figures of `--mode outbox` (tools.bench.outbox): a step's committed rate and backlog,
its verdict, the table and the summary rows.

Pure functions of samples and results, so that they are tested without a server.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

from tools.bench import report
from tools.bench.options import (
    GENERATOR_SATURATED_PCT,
    OUTBOX_BACKLOG_GROWTH_S,
    OUTBOX_COMMITTED_PCT,
    OUTBOX_LATENCY_RATE,
    OUTBOX_P99_LIMIT_MS,
    OUTBOX_TARGET_PER_S,
)

#: (monotonic ms, rows consumed so far, rows waiting in the outbox)
Sample = tuple[float, float, int]


def histogram_mean(
    before: Mapping[str, float], after: Mapping[str, float], name: str
) -> float | None:
    """The mean of what histogram `name` observed between two /metrics readings."""
    count = after.get(f"{name}_count", 0.0) - before.get(f"{name}_count", 0.0)
    total = after.get(f"{name}_sum", 0.0) - before.get(f"{name}_sum", 0.0)
    return total / count if count > 0 else None


def committed_window(samples: Sequence[Sample], start_ms: float, end_ms: float) -> dict[str, Any]:
    """Over the samples within [start_ms, end_ms] (the measured part of a step): rows
    committed per second by the consumer, and the rows waiting at the first and the last."""
    inside = [sample for sample in samples if start_ms <= sample[0] <= end_ms]
    if len(inside) < 2:
        return {"committed_per_s": None, "backlog_start": None, "backlog_end": None}
    (t0, c0, w0), (t1, c1, w1) = inside[0], inside[-1]
    return {
        "committed_per_s": (c1 - c0) * 1000.0 / (t1 - t0),
        "backlog_start": w0,
        "backlog_end": w1,
    }


def step_failures(
    rate: float,
    figures: Mapping[str, Any],
    stats: Mapping[str, Any],
    written: Mapping[str, Any],
) -> list[str]:
    """Why a step failed (none: it passed): loss, duplicates, a consumer short of the rate or
    a backlog growing, p99 over the limit, a writer that could not keep its schedule."""
    failures = []
    if stats["lost"]:
        failures.append(f"{stats['lost']} lost")
    if stats["duplicated"]:
        failures.append(f"{stats['duplicated']} duplicated")
    committed = figures["committed_per_s"]
    if committed is None or committed < rate * OUTBOX_COMMITTED_PCT / 100:
        failures.append(f"committed < {OUTBOX_COMMITTED_PCT:.0f}% of the rate")
    start, end = figures["backlog_start"], figures["backlog_end"]
    if start is None or end - start > rate * OUTBOX_BACKLOG_GROWTH_S:
        failures.append("backlog growing")
    if stats["p99_ms"] is None or stats["p99_ms"] > OUTBOX_P99_LIMIT_MS:
        failures.append(f"p99 > {OUTBOX_P99_LIMIT_MS:.0f} ms")
    if written["errors"]:
        failures.append(f"{written['errors']} INSERT errors")
    elif not written["kept_up"]:
        failures.append("writer fell behind")
    return failures


def kept_up(failures: Sequence[str]) -> bool:
    """Whether the consumer kept up with a step's rate: it failed, if at all, on p99 alone."""
    return all(failure.startswith("p99") for failure in failures)


def run_failures(result: Mapping[str, Any]) -> list[str]:
    """What makes the run exit 1: loss, duplicates or INSERT errors in a step, a drain that
    lost or did not finish. A step short of its rate only marks the limit, as in the sweep."""
    steps = [
        f"{step['target_events_per_s']:,}/s: {failure}"
        for step in result["steps"]
        for failure in step["failures"]
        if failure.endswith(("lost", "duplicated", "errors"))
    ]
    return steps + list((result.get("drain") or {}).get("failures", []))


def _n(value: float | None, fmt: str = ",.0f") -> str:
    return "-" if value is None else format(value, fmt)


def _cpu(cpu: Mapping[str, float | None], *names: str) -> str:
    values = [cpu.get(name) for name in names]
    if all(value is None for value in values):
        return "-"
    return "+".join(f"{value:.0f}" for value in values if value is not None) + "%"


def notes(result: Mapping[str, Any]) -> list[str]:
    """Steps whose figures the generator or the rest of the machine may have bent."""
    found = []
    for step in result["steps"]:
        cpu = step["cpu_pct"]
        where = f"outbox at {step['target_events_per_s']:,} events/s"
        busiest = max(cpu.get("writer") or 0.0, cpu.get("subscribers") or 0.0)
        if busiest > GENERATOR_SATURATED_PCT:
            found.append(
                f"{where}: a generator process used {busiest:.0f}% of a core (writer "
                f"{cpu.get('writer') or 0:.0f}%, subscribers {cpu.get('subscribers') or 0:.0f}%): "
                "the generator may be the limit"
            )
        if (cpu.get("other") or 0.0) > report.OTHER_LOAD_NOTE_PCT:
            found.append(
                f"{where}: other processes on the machine used {cpu['other']:.0f}% of a core "
                "meanwhile: figures disturbed"
            )
    return found


def title(result: Mapping[str, Any]) -> str:
    return (
        f"Outbox consumer (ours, {result['workload']} workload: {result['channels']:,} "
        f"channels, each event to {result['fanout']:,}; our database {result['our_database']}; "
        f"writer on {result['writer_connections']} connections)"
    )


def render(result: Mapping[str, Any] | None) -> str:
    """The steps, one line each, and the drain."""
    if not result:
        return ""
    header = [
        "events/s",
        "deliv/s",
        "committed/s",
        "backlog",
        "delivered/s",
        "p50",
        "p99",
        "max",
        "lost",
        "dup",
        "INSERT p99",
        "->done",
        "rows/run",
        "srv CPU",
        "pg CPU",
        "writer CPU",
        "sub CPU",
        "other",
        "result",
    ]
    rows = []
    for step in result["steps"]:
        cpu = step["cpu_pct"]
        verdict = "ok" if step["passed"] else "FAIL " + ", ".join(step["failures"])
        rows.append(
            [
                f"{step['target_events_per_s']:,}",
                f"{step['target_deliveries_per_s']:,}",
                _n(step["committed_per_s"]),
                f"{_n(step['backlog_start'])} -> {_n(step['backlog_end'])}",
                _n(step["delivered_per_s"]),
                _n(step["p50_ms"], ".1f"),
                _n(step["p99_ms"], ".1f"),
                _n(step["max_ms"], ".1f"),
                str(step["lost"]),
                str(step["duplicated"]),
                _n(step["insert_p99_ms"], ".1f"),
                _n(step["to_consumed_mean_ms"], ".1f"),
                _n(step["rows_per_consumer_run"], ".0f"),
                _cpu(cpu, "server"),
                _cpu(cpu, "consumer_db", "our_db"),
                _cpu(cpu, "writer", "writer_db"),
                _cpu(cpu, "subscribers"),
                _cpu(cpu, "other"),
                verdict,
            ]
        )
    lines = [
        title(result),
        "Steps (latency: outbox INSERT -> socket, ms; ->done: mean INSERT -> row consumed "
        "(recorded here, deleted there), ms; "
        "CPU: % of one core; pg: consumer's backend + our database's, writer: process + "
        "its backends; other: the rest of the machine)",
        report.table(header, rows) if rows else "(no step ran)",
    ]
    drain = result.get("drain")
    if drain:
        lines.append(
            f"Drain: {drain['events']:,} rows in one commit ({_n(drain['insert_ms'])} ms to "
            f"insert), first consumed after {_n(drain['first_consumed_ms'])} ms, all consumed "
            f"after {_n(drain['drained_s'], '.2f')} s: {_n(drain['committed_per_s'])} events "
            f"committed/s ({_n(drain['rows_per_consumer_run'])} rows per consumer run, "
            f"{_n(drain['ms_per_consumer_run'])} ms each), {_n(drain['delivered_per_s'])} "
            "deliveries/s; lost "
            f"{drain['lost']}, duplicated {drain['duplicated']}; CPU server "
            f"{_cpu(drain['cpu_pct'], 'server')}, pg {_cpu(drain['cpu_pct'], 'consumer_db')}"
            + ("" if not drain["failures"] else "; FAIL: " + ", ".join(drain["failures"]))
        )
    lines += [f"- {note}" for note in notes(result)]
    return "\n".join(lines)


def summary_rows(result: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """Committed events/s (steps and drain) and p99 at OUTBOX_LATENCY_RATE, when measured."""
    if not result:
        return []
    what = f"outbox ({result['workload']}, {result['channels']:,} channels)"
    row = functools.partial(report.ours_only_row, what, "no outbox")
    rows = []
    steps = result["steps"]
    rates = len(result["rates"])

    def highest(which: list[dict[str, Any]]) -> int | str | None:
        """The rate of the highest step in `which` (as the sweep's maximum: what it committed
        is within 2% of it); ">= rate" when every step of the run is in it."""
        if not which:
            return None
        best = int(which[-1]["target_events_per_s"])
        return f">= {best:,}/s" if len(which) == len(steps) == rates else best

    def _met(figure: int | str | None, rate: float | None) -> bool | None:
        """Undecided for a floor below the target (the run stopped short of it, e.g. the
        latency run at 1,000 events/s alone), as in the sweep's summary."""
        if figure is None or rate is None:
            return None
        if rate >= OUTBOX_TARGET_PER_S:
            return True
        return None if isinstance(figure, str) else False

    def rate_of(figure: int | str | None) -> float | None:
        return None if figure is None else float(str(figure).strip(">= /s").replace(",", ""))

    if steps:
        kept = highest([step for step in steps if step["kept_up"]])
        rows.append(
            row(
                "events/s the consumer kept up with (committed >= "
                f"{OUTBOX_COMMITTED_PCT:.0f}%, backlog steady, none lost)",
                kept,
                "/s",
                f">= {OUTBOX_TARGET_PER_S:,.0f}/s",
                _met(kept, rate_of(kept)),
            )
        )
        rows.append(
            row(
                f"events/s of the highest step passed (p99 <= {OUTBOX_P99_LIMIT_MS:.0f} ms too)",
                highest([step for step in steps if step["passed"]]),
                "/s",
                None,
                None,
            )
        )
    drain = result.get("drain")
    if drain:
        rate = drain["committed_per_s"]
        rows.append(
            row(
                f"drain of {drain['events']:,} rows, events committed/s",
                rate,
                "/s",
                f">= {OUTBOX_TARGET_PER_S:,.0f}/s",
                None if rate is None else rate >= OUTBOX_TARGET_PER_S and not drain["failures"],
            )
        )
    at = next((s for s in result["steps"] if s["target_events_per_s"] == OUTBOX_LATENCY_RATE), None)
    if at is not None:
        rows.append(
            row(
                f"p99 insert -> receive at {OUTBOX_LATENCY_RATE:,} events/s "
                f"({at['target_deliveries_per_s']:,} deliveries/s)",
                at["p99_ms"],
                "ms",
                f"<= {OUTBOX_P99_LIMIT_MS:.0f} ms",
                at["p99_ms"] is not None and at["p99_ms"] <= OUTBOX_P99_LIMIT_MS,
            )
        )
    return rows
