"""`python -m tools.bench`: the measurements its command line (tools.bench.arguments) asks
for, run one after another, then the report: a table on stdout and the JSON results."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import httpx

from tools.bench import history, outbox_report, report, targets, webhook_report
from tools.bench.arguments import build_parser, options_from, validate
from tools.bench.node import GeneratorError, node_executable, node_version
from tools.bench.options import (
    OUTBOX_DEFAULT_ADMIN_URL,
    Options,
)
from tools.bench.outbox import run_outbox
from tools.bench.outbox_db import OutboxDatabase
from tools.bench.receiver import WebhookReceiver
from tools.bench.report import Progress
from tools.bench.scenarios import run_ingest, run_replay, run_storm
from tools.bench.servers import ROOT, BaselineServer, BenchServer, OurServer
from tools.bench.soak import run_soak
from tools.bench.sweep import round_order, run_sweep, workload
from tools.bench.webhooks import run_webhooks, server_env

#: What can go wrong in one measurement without invalidating the others.
SCENARIO_ERRORS = (RuntimeError, GeneratorError, httpx.HTTPError, OSError, ValueError, KeyError)


def make_server(name: str, options: Options) -> BenchServer:
    if name == "ours":
        return OurServer(options.database_url, options.redis_url, options.workers)
    return BaselineServer()


def _sweep(
    name: str,
    load_name: str,
    round_index: int,
    options: Options,
    progress: Progress,
    results: dict[str, Any],
) -> None:
    with make_server(name, options) as server:
        outcome = run_sweep(server, workload(load_name, options), options, progress)
    outcome["round"] = round_index + 1
    results["sweep_rounds"][round_index]["runs"].append(outcome)
    results["memory"].append(outcome["memory"])


def _storm(name: str, options: Options, progress: Progress, results: dict[str, Any]) -> None:
    with make_server(name, options) as server:
        outcome = run_storm(server, options, progress)
    results["storm"].append(outcome)
    results["memory"].append(outcome["memory"])


def _replay(options: Options, progress: Progress, results: dict[str, Any]) -> None:
    # Retention must hold every event the client missed (the default keeps 10,000 a channel).
    keep = {"HISTORY_MAX_EVENTS": str(max(10_000, options.replay_events))}
    with OurServer(options.database_url, options.redis_url, options.workers, keep) as server:
        assert isinstance(server, OurServer)
        results["replay"] = run_replay(server, options, progress)


def _ingest(name: str, options: Options, progress: Progress, results: dict[str, Any]) -> None:
    with make_server(name, options) as server:
        results["ingest"].append(run_ingest(server, options, progress))


def _soak(options: Options, progress: Progress, results: dict[str, Any]) -> None:
    with OurServer(options.database_url, options.redis_url, options.workers) as server:
        assert isinstance(server, OurServer)
        results["soak"] = run_soak(server, options, progress)
    if results["soak"]["failures"]:
        raise RuntimeError("; ".join(results["soak"]["failures"]))


def _history(options: Options, progress: Progress, results: dict[str, Any]) -> None:
    with OurServer(options.database_url, options.redis_url, options.workers) as server:
        assert isinstance(server, OurServer)
        results["history"] = history.run_history(server, options, progress)
    if results["history"]["failures"]:
        raise RuntimeError("; ".join(results["history"]["failures"]))


def _webhooks(options: Options, progress: Progress, results: dict[str, Any]) -> None:
    with (
        WebhookReceiver() as receiver,
        OurServer(
            options.database_url, options.redis_url, options.workers, env=server_env(options)
        ) as server,
    ):
        assert isinstance(server, OurServer)
        results["webhooks"] = run_webhooks(server, receiver, options, progress)
    if results["webhooks"]["failures"]:
        raise RuntimeError("; ".join(results["webhooks"]["failures"]))


def _outbox(options: Options, progress: Progress, results: dict[str, Any]) -> None:
    with (
        OutboxDatabase(options.outbox_url or OUTBOX_DEFAULT_ADMIN_URL) as database,
        OurServer(
            options.database_url,
            options.redis_url,
            options.workers,
            env={"OUTBOX_URL": database.url},
        ) as server,
    ):
        assert isinstance(server, OurServer)
        results["outbox"] = run_outbox(server, database, options, progress)
    if results["outbox"]["failures"]:
        raise RuntimeError("; ".join(results["outbox"]["failures"]))


def run(options: Options, results: dict[str, Any], progress: Progress) -> None:
    """Every requested measurement; each failure is recorded and the others still run.

    Each measurement starts its server fresh and stops it afterwards; within a workload the
    servers run one after the other, so their figures sit side by side.
    """

    def attempt(mode: str, server: str, measure: Callable[[], None]) -> None:
        try:
            measure()
        except SCENARIO_ERRORS as exc:
            results["errors"].append({"mode": mode, "server": server, "error": str(exc)})
            progress.info(f"ERROR in {mode} on {server}: {exc}")

    common = (options, progress, results)
    if "sweep" in options.modes:
        for index, sweep_round in enumerate(results["sweep_rounds"]):
            label = f" round {index + 1}" if options.rounds > 1 else ""
            for load_name in options.workloads:
                for name in sweep_round["server_order"]:
                    measure = partial(_sweep, name, load_name, index, *common)
                    attempt("sweep", f"{name}/{load_name}{label}", measure)
    if "storm" in options.modes:
        for name in options.servers:
            attempt("storm", name, partial(_storm, name, *common))
    if "replay" in options.modes:
        if "ours" in options.servers:
            attempt("replay", "ours", partial(_replay, *common))
        if "baseline" in options.servers:
            progress.info("replay: not run on the baseline, which keeps no history")
    if "ingest" in options.modes:
        for name in options.servers:
            attempt("ingest", name, partial(_ingest, name, *common))
    if "soak" in options.modes:  # ours only: the baseline keeps no history to resume from
        attempt("soak", "ours", partial(_soak, *common))
    if "history" in options.modes:
        if "ours" in options.servers:
            attempt("history", "ours", partial(_history, *common))
        if "baseline" in options.servers:
            progress.info("history: not run on the baseline, which keeps no history")
    if "webhooks" in options.modes:
        if "ours" in options.servers:
            attempt("webhooks", "ours", partial(_webhooks, *common))
        if "baseline" in options.servers:
            progress.info("webhooks: not run on the baseline, which has no fallbacks")
    if "outbox" in options.modes:
        if "ours" in options.servers:
            attempt("outbox", "ours", partial(_outbox, *common))
        if "baseline" in options.servers:
            progress.info("outbox: not run on the baseline, which has no outbox")


def default_output() -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return ROOT / "bench-results" / f"bench-{stamp}.json"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    options = options_from(args)
    if problem := validate(options):
        parser.error(problem)
    try:
        node_executable()
    except GeneratorError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    output: Path = args.output or default_output()
    progress = Progress()
    results: dict[str, Any] = {
        "tool": "tools.bench",
        "format": 1,
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "command_line": [
            report.redact(arg)
            for arg in [
                sys.executable,
                "-m",
                "tools.bench",
                *(sys.argv[1:] if argv is None else argv),
            ]
        ],
        "options": {
            name: report.redact(value) if isinstance(value, str) else value
            for name, value in asdict(options).items()
        },
        "machine": report.machine_info(node_version()),
        # Which ack mode the sweep ran in: the two are two invocations, judged apart.
        "sweep_ack": options.ack,
        # Every round's runs; `sweep` is round 1's (what a one-round run always had).
        "sweep_rounds": [
            {"round": index + 1, "server_order": round_order(options.servers, index), "runs": []}
            for index in range(options.rounds if "sweep" in options.modes else 0)
        ],
        "sweep": [],
        "storm": [],
        "replay": None,
        "ingest": [],
        "soak": None,
        "history": None,
        "webhooks": None,
        "outbox": None,
        "memory": [],
        "errors": [],
    }
    if results["sweep_rounds"]:
        results["sweep"] = results["sweep_rounds"][0]["runs"]  # the same list, filled as it runs
    started = time.monotonic()
    interrupted = False
    try:
        run(options, results, progress)
    except KeyboardInterrupt:
        interrupted = True
        results["errors"].append({"mode": "all", "server": "-", "error": "interrupted"})
    results["finished_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    results["duration_s"] = round(time.monotonic() - started, 1)
    results["summary"] = (
        targets.summary_rows(results)
        + report.summarise(results)
        + history.summary_rows(results["history"])
        + webhook_report.summary_rows(results["webhooks"])
        + outbox_report.summary_rows(results["outbox"])
    )
    results["generator_notes"] = report.generator_notes(results)
    report.write_json(output, results)

    sections = [
        targets.render_steps(results),
        report.render_soak(results),
        history.render(results["history"]),
        webhook_report.render(results["webhooks"]),
        outbox_report.render(results["outbox"]),
        report.render_summary(results["summary"]),
    ]
    if results["generator_notes"]:
        notes = results["generator_notes"]
        sections.append("Generator notes\n" + "\n".join(f"- {note}" for note in notes))
    if results["errors"]:
        sections.append(
            "Errors\n"
            + "\n".join(f"- {e['mode']} on {e['server']}: {e['error']}" for e in results["errors"])
        )
    print("\n\n".join(section for section in sections if section))
    print(f"\nresults: {output}")
    if interrupted:
        return 130
    return 1 if results["errors"] else 0
