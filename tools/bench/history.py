"""Reading history during delivery (`--mode history`, our server only; not in `all`).

The org workload (the sweep's) runs at a fixed `history_rate` deliveries/s for a step, once
without readers and once with `history_readers` paging `listChannelEvents` (tools.bench.readers),
`history_pairs` times; the two orders alternate (without/with, then with/without, ...) so a
drift of a shared machine, or of the growing database, favours neither side. Medians of each
side are compared: delivery p99 with readers must stay within HISTORY_P99_TOLERANCE_PCT of the
p99 without. Every step is a sweep step (`sweep.run_step`), judged and reported the same way.

The readers page channels of their own: one more organisation channel per organisation, never
attached, created and filled with `history_events` events before the workload's channels exist
(so only they carry that history), then fed by the workload like the others, so that readers
page channels whose head moves while they read.
"""

from __future__ import annotations

import functools
import statistics
import time
from typing import Any

from tools.bench import report
from tools.bench.node import SubscriberPool
from tools.bench.options import HISTORY_P99_TOLERANCE_PCT, HISTORY_PAGE_LIMIT, Options
from tools.bench.readers import HistoryReaders
from tools.bench.report import Progress
from tools.bench.scenarios import record_events
from tools.bench.servers import ChannelSpec, OurServer
from tools.bench.sweep import Workload, run_step, workload


def p99_verdict(
    without_ms: float | None, with_ms: float | None, tolerance_pct: float
) -> dict[str, Any]:
    """p99 with readers against p99 without: the ratio, the limit, and whether it holds
    (None when either is missing)."""
    if without_ms is None or with_ms is None or without_ms <= 0:
        return {"ratio": None, "limit_ms": None, "within": None}
    limit = without_ms * (1 + tolerance_pct / 100)
    return {"ratio": with_ms / without_ms, "limit_ms": limit, "within": with_ms <= limit}


def _median(values: list[Any]) -> float | None:
    present = [float(v) for v in values if v is not None]
    return statistics.median(present) if present else None


def _side(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians of one side's steps (without or with readers); loss and duplicates summed."""
    steps = [run["step"] for run in runs]
    side: dict[str, Any] = {
        name: _median([step[name] for step in steps])
        for name in ("achieved_per_s", "p50_ms", "p99_ms", "server_cpu_pct")
    }
    side["runs"] = len(steps)
    side["steps_passed"] = sum(bool(step["passed"]) for step in steps)
    side["lost"] = sum(int(step["lost"]) for step in steps)
    side["duplicated"] = sum(int(step["duplicated"]) for step in steps)
    readings = [run["reading"] for run in runs if run["reading"] is not None]
    if readings:
        side["reading"] = {
            **{
                name: _median([reading[name] for reading in readings])
                for name in (
                    "pages_per_s",
                    "full_pages_per_s",
                    "events_per_s",
                    "page_p50_ms",
                    "page_p99_ms",
                    "reader_cpu_pct",
                )
            },
            **{
                name: sum(int(reading[name]) for reading in readings)
                for name in ("pages", "events", "http_errors", "violations", "unavailable")
            },
        }
    return side


def _one_run(
    server: OurServer,
    pool: SubscriberPool,
    load: Workload,
    reader_ids: list[str],
    reading: bool,
    cumulative: dict[str, int],
    options: Options,
    progress: Progress,
    label: str,
) -> dict[str, Any]:
    rate = options.history_rate
    if not reading:
        step = run_step(server, pool, load, rate, cumulative, options, progress, label)
        return {"with_readers": False, "step": step, "reading": None}
    with HistoryReaders(
        server.base_url,
        reader_ids,
        readers=options.history_readers,
        limit=HISTORY_PAGE_LIMIT,
        pages_per_s=options.history_pages_per_s,
    ) as readers:
        step = run_step(server, pool, load, rate, cumulative, options, progress, label)
    figures = readers.figures()
    # The readers run in this process, not among "other users' work" on the machine.
    step["other_cpu_pct"] = max(0.0, step["other_cpu_pct"] - figures["reader_cpu_pct"])
    progress.info(
        f"  readers: {figures['pages_per_s']:,.1f} pages/s, {figures['events_per_s']:,.0f} "
        f"events/s, {figures['violations']} violations, {figures['http_errors']} HTTP errors"
    )
    return {"with_readers": True, "step": step, "reading": figures}


def run_history(server: OurServer, options: Options, progress: Progress) -> dict[str, Any]:
    """Alternate steps without and with history readers; compare their delivery p99."""
    load = workload("org", options)
    label = f"history {server.name}/{load.name}"
    reader_specs = [
        ChannelSpec("organisation", f"usr_reader_{o:03d}", org) for o, org in enumerate(load.keys)
    ]
    reader_ids = [channel.channel_id for channel in server.create_channels(reader_specs)]
    total = options.history_events * len(reader_ids)
    record_events(
        server,
        total,
        load.keys,
        "usr_history",
        options,
        lambda done: progress.update(f"{label} recording history", done / total),
    )
    progress.info(f"{label}: creating {len(load.specs)} channels")
    channels = server.create_channels(load.specs)
    result: dict[str, Any] = {
        "server": server.name,
        "workload": load.name,
        "channels": len(channels),
        "fanout": load.fanout,
        "target_per_s": options.history_rate,
        "pairs": options.history_pairs,
        "reader_channels": len(reader_ids),
        "events_per_reader_channel": options.history_events,
        "readers": options.history_readers,
        "page_limit": HISTORY_PAGE_LIMIT,
        "pages_per_s_target": options.history_pages_per_s,
        "tolerance_pct": HISTORY_P99_TOLERANCE_PCT,
        "runs": [],
    }
    with SubscriberPool(channels, ready_event=server.ready_event, ack=options.ack) as pool:
        attached = pool.wait_attached()
        if attached["attached"] < len(channels):
            raise RuntimeError(f"history: only {attached['attached']}/{len(channels)} attached")
        time.sleep(options.idle_seconds)
        cumulative: dict[str, int] = {}
        for pair in range(options.history_pairs):
            for reading in (False, True) if pair % 2 == 0 else (True, False):
                where = f"{label} #{pair + 1} {'with' if reading else 'without'} readers"
                run = _one_run(
                    server, pool, load, reader_ids, reading, cumulative, options, progress, where
                )
                result["runs"].append({"pair": pair + 1, **run})
    result["without"] = _side([run for run in result["runs"] if not run["with_readers"]])
    result["with"] = _side([run for run in result["runs"] if run["with_readers"]])
    result["p99"] = p99_verdict(
        result["without"]["p99_ms"], result["with"]["p99_ms"], HISTORY_P99_TOLERANCE_PCT
    )
    result["failures"] = history_failures(result)
    result["passed"] = not result["failures"] and bool(result["p99"]["within"])
    return result


def history_failures(result: dict[str, Any]) -> list[str]:
    """What makes the run wrong, not merely slow: loss, duplicates, a paging violation, a
    reader's HTTP error, readers that read nothing. The p99 verdict is a target, reported."""
    failures = []
    for side in ("without", "with"):
        if result[side]["lost"] or result[side]["duplicated"]:
            failures.append(
                f"{side} readers: {result[side]['lost']} lost, "
                f"{result[side]['duplicated']} duplicated"
            )
    reading = result["with"].get("reading") or {}
    if reading.get("violations"):
        failures.append(f"{reading['violations']} paging violations")
    if reading.get("http_errors"):
        failures.append(f"{reading['http_errors']} HTTP errors reading history")
    if not reading.get("pages"):
        failures.append("the readers read no page")
    return failures


def summary_rows(history: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The headline figures for the summary table (ours only)."""
    if not history or "p99" not in history:
        return []
    what = f"history (org at {history['target_per_s']:,}/s, {history['readers']} readers)"
    without, with_ = history["without"], history["with"]
    reading = with_.get("reading") or {}
    ms = [None if v is None else f"{v:.1f}" for v in (without["p99_ms"], with_["p99_ms"])]

    row = functools.partial(report.ours_only_row, what, "no history")

    return [
        row(
            "delivery p99 without / with readers (medians)",
            f"{ms[0] or '-'} / {ms[1] or '-'} ms",
            "",
            f"with <= {1 + history['tolerance_pct'] / 100:.2f}x without",
            history["p99"]["within"],
        ),
        row(
            f"pages of {history['page_limit']:,} read",
            reading.get("pages_per_s"),
            "/s",
            None,
            None,
        ),
        row(
            "paging violations / lost / duplicated",
            f"{reading.get('violations', 0)} / {without['lost'] + with_['lost']} / "
            f"{without['duplicated'] + with_['duplicated']}",
            "",
            "0",
            not history["failures"],
        ),
    ]


def render(history: dict[str, Any] | None) -> str:
    """Every step of the history run, one line each, then the medians and the verdict."""
    if not history or "p99" not in history:
        return ""

    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:.1f}"

    def line(
        name: str, step: dict[str, Any], reading: dict[str, Any] | None, result: str
    ) -> list[str]:
        reading = reading or {}
        return [
            name,
            f"{step['achieved_per_s']:,.0f}",
            ms(step["p50_ms"]),
            ms(step["p99_ms"]),
            str(step["lost"]),
            str(step["duplicated"]),
            "-" if not reading else f"{reading['pages_per_s']:,.1f}",
            "-" if not reading else f"{reading['events_per_s']:,.0f}",
            ms(reading.get("page_p50_ms")),
            ms(reading.get("page_p99_ms")),
            "-" if not reading else str(reading["violations"]),
            "-" if reading.get("reader_cpu_pct") is None else f"{reading['reader_cpu_pct']:.0f}%",
            "-" if step["server_cpu_pct"] is None else f"{step['server_cpu_pct']:.0f}%",
            result,
        ]

    header = ["run", "achieved/s", "p50", "p99", "lost", "dup", "pages/s", "events/s"]
    header += ["page p50", "page p99", "violations", "rd CPU", "srv CPU", "result"]
    rows = []
    for run in history["runs"]:
        step = run["step"]
        name = f"#{run['pair']} {'with' if run['with_readers'] else 'without'} readers"
        verdict = "ok" if step["passed"] else "FAIL " + ", ".join(step["failures"])
        rows.append(line(name, step, run["reading"], verdict))
    for side in ("without", "with"):
        figures = history[side]
        rows.append(line(f"median {side}", figures, figures.get("reading"), ""))
    verdict = history["p99"]
    shown = "n/a" if verdict["ratio"] is None else f"{verdict['ratio']:.2f}x"
    mark = {True: "within", False: "NOT within", None: "undecided:"}[verdict["within"]]
    title = (
        f"History reads during delivery (ours, org at {history['target_per_s']:,}/s, "
        f"{history['readers']} readers, pages of {history['page_limit']:,}; latency in ms, "
        "CPU in % of one core)"
    )
    lines = [
        title,
        report.table(header, rows),
        f"p99 with readers / without: {shown}, {mark} {history['tolerance_pct']:.0f}%"
        + ("" if not history["failures"] else "; FAIL: " + ", ".join(history["failures"])),
    ]
    return "\n".join(lines)
