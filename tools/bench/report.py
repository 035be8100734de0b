"""Progress on stderr while running; the machine description, the summary table, the JSON."""

from __future__ import annotations

import functools
import json
import os
import platform
import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from tools.bench.options import (
    INGEST_TARGET_PER_S,
    MEMORY_TARGET_KB,
    PUBLISHER_BACKLOG_LIMIT_MS,
    REPLAY_TARGET_S,
    STORM_TARGET_S,
)

BAR_WIDTH = 24
ROOT = Path(__file__).resolve().parents[2]
SERVER_DIRS = ("claims_realtime", "handlers", "models", "realtime")
_PASSWORD = re.compile(r"(://[^:/@\s]*:)\S*@")
#: Other processes' CPU (% of one core) during a step above which the step is flagged.
OTHER_LOAD_NOTE_PCT = 25.0


class Progress:
    """A one-line bar per step on a terminal; on a pipe, only start/finish lines (no noise)."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty()
        self._open = False
        self._started: set[str] = set()

    def update(self, label: str, fraction: float, note: str = "") -> None:
        fraction = min(1.0, max(0.0, fraction))
        if self.tty:
            filled = int(fraction * BAR_WIDTH)
            bar = "#" * filled + "." * (BAR_WIDTH - filled)
            self.stream.write(f"\r\x1b[2K[{bar}] {fraction:4.0%} {label} {note}")
            self.stream.flush()
            self._open = True
        elif label not in self._started:
            self._started.add(label)
            self.info(f"{label} ... {note}".rstrip())

    def done(self, label: str, note: str) -> None:
        self._close_line()
        self.stream.write(f"[{'#' * BAR_WIDTH}] done {label}: {note}\n")
        self.stream.flush()

    def info(self, text: str) -> None:
        self._close_line()
        self.stream.write(text + "\n")
        self.stream.flush()

    def _close_line(self) -> None:
        if self._open:
            self.stream.write("\r\x1b[2K")
            self._open = False


def machine_info(node_version: str) -> dict[str, Any]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu_count": os.cpu_count(),
        "cpu_model": model,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "node": node_version,
        "git_commit": _git("rev-parse", "HEAD"),
        # Uncommitted changes to the server code: the figures are of the working tree.
        "git_dirty": bool(_git("status", "--porcelain", "--", *SERVER_DIRS)),
    }


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def redact(text: str) -> str:
    """A URL's password replaced by ***, so results can be shared (e.g. --database-url)."""
    return _PASSWORD.sub(r"\1***@", text)


def write_json(path: Path, results: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2, sort_keys=False) + "\n")


# -- the summary ------------------------------------------------------------------------------


def sweep_runs(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Every sweep run of every round (results from before rounds: `sweep` alone)."""
    rounds = results.get("sweep_rounds")
    if not rounds:
        return list(results.get("sweep", []))
    return [run for sweep_round in rounds for run in sweep_round["runs"]]


def _by_server(items: Sequence[dict[str, Any]], server: str) -> dict[str, Any] | None:
    return next((item for item in items if item.get("server") == server), None)


def _ratio(ours: float | None, baseline: float | None) -> float | None:
    if ours is None or not baseline:
        return None
    return ours / baseline


def summarise(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The headline figures but the sweep's (tools.bench.targets): ours, baseline, ratio,
    target and whether ours meets it."""
    rows: list[dict[str, Any]] = []
    storms = results.get("storm", [])
    if storms:
        ours, base = _by_server(storms, "ours"), _by_server(storms, "baseline")
        clients = (ours or base or {}).get("clients")

        def storm_figure(storm: dict[str, Any] | None) -> float | str | None:
            if storm is None or storm["all_attached"]:
                return None if storm is None else storm["elapsed_s"]
            return f"{storm['attached']:,}/{storm['clients']:,} attached"

        rows.append(
            {
                "name": f"storm: {clients:,} clients connect at once, all attached in",
                "ours": storm_figure(ours),
                "baseline": storm_figure(base),
                "ratio": None,
                "unit": "s",
                "target": f"<= {STORM_TARGET_S:.0f} s",
                "met": bool(ours["all_attached"] and ours["elapsed_s"] <= STORM_TARGET_S)
                if ours
                else None,
            }
        )
    replay = results.get("replay")
    if replay:
        ok = replay["in_order"] and replay["elapsed_s"] is not None
        rows.append(
            {
                "name": f"replay: {replay['events']:,} events from history, in order, in",
                "ours": replay["elapsed_s"] if ok else None,
                "baseline": "no history",
                "ratio": None,
                "unit": "s",
                "target": f"<= {REPLAY_TARGET_S:.0f} s",
                "met": bool(ok and replay["elapsed_s"] <= REPLAY_TARGET_S),
            }
        )
    ingests = results.get("ingest", [])
    if ingests:
        ours, base = _by_server(ingests, "ours"), _by_server(ingests, "baseline")
        database = (ours or {}).get("database") or "-"
        rows.append(
            {
                "name": f"ingest ({database}): events/s accepted, no subscribers",
                "ours": (ours or {}).get("accepted_per_s"),
                "baseline": (base or {}).get("accepted_per_s"),
                "ratio": None,
                "unit": "/s",
                "target": f">= {INGEST_TARGET_PER_S:,.0f}/s",
                "met": bool(ours and ours["accepted_per_s"] >= INGEST_TARGET_PER_S)
                if ours
                else None,
            }
        )
    rows.extend(soak_rows(results.get("soak")))
    memory = results.get("memory", [])
    if memory:

        def worst(server: str) -> float | None:
            values = [
                m["kb_per_connection"]
                for m in memory
                if m["server"] == server and m["kb_per_connection"] is not None
            ]
            return max(values) if values else None

        ours_kb = worst("ours")
        rows.append(
            {
                "name": "memory: server RSS per idle connection (worst run)",
                "ours": ours_kb,
                "baseline": worst("baseline"),
                "ratio": _ratio(ours_kb, worst("baseline")),
                "unit": "KB",
                "target": f"<= {MEMORY_TARGET_KB:.0f} KB",
                "met": ours_kb is not None and ours_kb <= MEMORY_TARGET_KB,
            }
        )

        def idle_cpu(server: str) -> float | None:
            values = [m["idle_cpu_pct"] for m in memory if m["server"] == server]
            return max(values) if values else None

        rows.append(
            {
                "name": "server CPU with every connection idle (worst run)",
                "ours": idle_cpu("ours"),
                "baseline": idle_cpu("baseline"),
                "ratio": _ratio(idle_cpu("ours"), idle_cpu("baseline")),
                "unit": "% of a core",
                "target": "-",
                "met": None,
            }
        )
    return rows


def ours_only_row(
    what: str,
    baseline: str | None,
    name: str,
    ours: Any,
    unit: str,
    target: str | None,
    met: bool | None,
) -> dict[str, Any]:
    """A summary row for a figure only our server has (soak, history, webhooks): `baseline`
    says why the baseline has none."""
    return {
        "name": f"{what}: {name}",
        "ours": ours,
        "baseline": baseline,
        "ratio": None,
        "unit": unit,
        "target": target,
        "met": met,
    }


def soak_rows(soak: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The soak's headline figures (ours only): loss, duplicates, resumes, memory."""
    if not soak or "memory" not in soak:
        return []
    what = (
        f"soak ({soak['channels']:,} clients, {soak['seconds']:,.0f} s at "
        f"{soak['target_deliveries_per_s']:,}/s)"
    )
    memory = soak["memory"]

    row = functools.partial(ours_only_row, what, None)

    mb = [
        "-" if memory[k] is None else f"{memory[k] / 1024:,.1f}"
        for k in ("start_kb", "end_kb", "max_kb")
    ]
    growth = memory["second_half_growth_pct"]
    live = memory["live_blocks"]
    live_growth = live["second_half_growth_pct"]
    return [
        row("lost (received set vs 1..head)", soak["lost"], "", "0", soak["lost"] == 0),
        row(
            "duplicates after dedupe / before",
            f"0 / {soak['duplicates_before_dedupe']:,}" if soak["exact"] else "not exact",
            "",
            "0 after",
            bool(soak["exact"]),
        ),
        row(
            "drops / resumes / unrecovered",
            f"{soak['drops']:,} / {soak['resumes']:,} / {soak['unrecovered']}",
            "",
            "resumes >= drops, 0 unrecovered",
            soak["resumes"] >= soak["drops"] and not soak["unrecovered"],
        ),
        row("server RSS start / end / max (MB)", " / ".join(mb), "", None, None),
        row(
            "server RSS slope, 2nd half",
            memory["slope_kb_per_min"],
            "KB/min",
            f"growth < {memory['flat_below_pct']:.0f}% of RSS",
            None if growth is None else growth < memory["flat_below_pct"],
        ),
        row(
            "live Python blocks start / end, 2nd-half growth",
            f"{live['start'] or 0:,} / {live['end'] or 0:,}, "
            + ("n/a" if live_growth is None else f"{live_growth:+.2f}%"),
            "",
            f"growth < {live['flat_below_pct']:.0f}% (no leak)",
            None if live_growth is None else live_growth < live["flat_below_pct"],
        ),
    ]


def render_soak(results: dict[str, Any]) -> str:
    """The soak run in a few lines (the summary has its headline figures)."""
    soak = results.get("soak")
    if not soak or "memory" not in soak:
        return ""
    memory = soak["memory"]
    publisher = soak["publisher"]
    growth = memory["second_half_growth_pct"]
    slope = memory["slope_kb_per_min"]
    lines = [
        f"clients        {soak['channels']:,} ({soak['workload']} workload, each event to "
        f"{soak['fanout']:,}), {soak['seconds']:,.0f} s",
        f"ingestion      {soak['accepted_events']:,} events accepted "
        f"({publisher['achieved_events_per_s']:,.1f}/s = "
        f"{publisher['achieved_events_per_s'] * soak['fanout']:,.0f} deliveries/s), "
        f"{publisher['http_errors']} HTTP errors, publisher kept up: {publisher['kept_up']}",
        f"delivered      {soak['unique']:,} unique of {soak['expected_deliveries']:,} expected "
        f"({soak['received']:,} received, {soak['duplicates_before_dedupe']:,} duplicates "
        "before dedupe)",
        f"checked        lost {soak['lost']}, gaps seen live {soak['gaps_seen_live']}, beyond "
        f"head {soak['beyond_head']}, channels complete {soak['channels_complete']:,}/"
        f"{soak['channels']:,}",
        f"drops          {soak['drops']:,} (each client every ~{soak['drop_every_s']:g} s), "
        f"resumes {soak['resumes']:,}, replayed {soak['replayed']:,}, unrecovered "
        f"{soak['unrecovered']}, unavailable {soak['unavailable']}, other disconnects "
        f"{sum(soak['other_disconnects'].values())}",
        f"server memory  start {memory['start_kb'] / 1024:,.1f} MB, end "
        f"{memory['end_kb'] / 1024:,.1f} MB, max {memory['max_kb'] / 1024:,.1f} MB; slope "
        + ("n/a" if slope is None else f"{slope:+,.1f} KB/min")
        + " over the second half"
        + ("" if growth is None else f" ({growth:+.2f}%): {memory['verdict']}"),
        f"live memory    {memory['live_blocks']['start'] or 0:,} -> "
        f"{memory['live_blocks']['end'] or 0:,} Python blocks; second half: "
        f"{memory['live_blocks']['verdict'] or 'n/a'}",
        f"CPU            server {soak['server_cpu_pct']:.0f}%, subscribers "
        f"{soak['subscriber_cpu_pct']:.0f}% of a core",
        "result         " + ("ok" if soak["passed"] else "FAIL: " + ", ".join(soak["failures"])),
    ]
    return "Soak (ours)\n" + "\n".join(lines)


def _figure(value: Any, unit: str, at_least: bool = False) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    prefix = ">= " if at_least else ""
    if unit == "":
        return f"{prefix}{value:,.0f}"
    if unit == "KB/min":
        return f"{value:+,.1f} KB/min"
    if unit == "/s":
        return f"{prefix}{value:,.0f}/s"
    if unit == "ms":
        return f"{value:.1f} ms"
    if unit == "s":
        return f"{value:.2f} s"
    return f"{value:.1f} {unit}"


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Plain text columns, each as wide as its widest cell."""
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(cell).ljust(width) for cell, width in zip(header, widths, strict=True))]
    lines.append("  ".join("-" * width for width in widths))
    for row in rows:
        lines.append(
            "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True))
        )
    return "\n".join(line.rstrip() for line in lines)


def render_summary(rows: list[dict[str, Any]]) -> str:
    header = ["figure", "ours", "baseline", "ours/baseline", "target", "met"]
    body = []
    for row in rows:
        at_least = row.get("at_least", {})
        mark = {True: "✓", False: "✗", None: ""}[row["met"]]
        body.append(
            [
                row["name"],
                _figure(row["ours"], row["unit"], at_least.get("ours", False)),
                _figure(row["baseline"], row["unit"], at_least.get("baseline", False)),
                # A ratio from a floor is itself a bound (">= 2.10"), as the figures are.
                "-" if row["ratio"] is None else f"{row.get('ratio_bound', '')}{row['ratio']:.2f}",
                row["target"] or "-",
                mark,
            ]
        )
    return "Summary\n" + table(header, body)


def generator_notes(results: dict[str, Any]) -> list[str]:
    """Steps where the load generator, not the server, may have been the limit."""
    notes = []
    for run in sweep_runs(results):
        for step in run.get("steps", []):
            where = f"{run['server']}/{run['workload']} at {step['target_per_s']:,}/s"
            if len(results.get("sweep_rounds") or []) > 1:
                where += f" (round {run.get('round', 1)})"
            if step["generator_saturated"]:
                notes.append(
                    f"{where}: a generator process used > 90% of a core "
                    f"(subscribers {step['subscriber_cpu_pct']:.0f}%, "
                    f"publisher {step['publisher_cpu_pct']:.0f}%): the generator may be the limit"
                )
            if step.get("other_cpu_pct", 0) > OTHER_LOAD_NOTE_PCT:
                notes.append(
                    f"{where}: other processes on the machine used "
                    f"{step['other_cpu_pct']:.0f}% of a core meanwhile: figures disturbed"
                )
            publisher = step["publisher"]
            if step["publisher_fell_behind"]:
                notes.append(
                    f"{where}: the publisher fell behind its schedule (an event waited "
                    f"{publisher['max_backlog_ms']:.0f} ms for a free request slot): the server "
                    "answered batches too slowly, or the generator was saturated"
                )
            retries = publisher.get("stale_socket_retries", 0)
            if retries:
                notes.append(
                    f"{where}: {retries} batch(es) sent again: the server had closed an idle "
                    "kept-alive socket as the batch went out on it (no answer came back)"
                )
            lag = publisher.get("max_schedule_lag_ms", 0.0)
            if lag > PUBLISHER_BACKLOG_LIMIT_MS:
                notes.append(
                    f"{where}: the publisher's own timer ran up to {lag:.0f} ms late (the "
                    "generator's hiccup, not counted against the server; its events' latency "
                    "is measured from when they were sent)"
                )
    return notes
