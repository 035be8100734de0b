"""The benchmark's soak mode works end to end, briefly: `python -m tools.bench --mode soak` with
tiny knobs (20 clients, 8 s, each client dropping every ~2 s on average).

Asserted: what the soak exists to prove (nothing lost, nothing twice after dedupe, every drop
resumed, no unrecovered resume) and that its memory figures are there. Not asserted: the
memory verdict or any timing (a short run on a shared machine says nothing about either).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests import services
from tests.helpers import ROOT
from tests.integration.test_bench_smoke import require_node
from tools.bench.arguments import build_parser, options_from
from tools.bench.soak import memory_trend

pytestmark = pytest.mark.integration

TIMEOUT = 120  # seconds; the run itself takes about 15


@pytest.fixture(scope="module")
def soak_run(
    tmp_path_factory: pytest.TempPathFactory, postgres_url: str | None
) -> tuple[dict[str, Any], str]:
    require_node()
    output = tmp_path_factory.mktemp("soak") / "r.json"
    command = [
        sys.executable,
        "-m",
        "tools.bench",
        "--mode",
        "soak",
        "--subscribers",
        "20",
        "--orgs",
        "2",
        "--soak-seconds",
        "8",
        "--soak-rate",
        "100",
        "--soak-drop-every",
        "2",
        "--output",
        str(output),
    ]
    if postgres_url is not None:  # the PostgreSQL pass: scratch databases on its server
        command += ["--database-url", services.POSTGRES_ADMIN_URL]
    try:
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the soak did not finish in {TIMEOUT}s:\n{exc.stderr!r}")
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    return dict(json.loads(Path(output).read_text())), done.stdout


def test_soak_runs_briefly(soak_run: tuple[dict[str, Any], str]) -> None:
    results, stdout = soak_run
    assert results["errors"] == []
    soak = results["soak"]
    assert soak["server"] == "ours" and soak["channels"] == 20
    assert soak["passed"], soak["failures"]
    # Every channel's received set is exactly 1..event_count, and the API agrees with what the
    # publisher had accepted.
    assert soak["accepted_events"] > 0
    assert soak["expected_deliveries"] == soak["accepted_events"] * soak["fanout"]
    assert soak["head_mismatch_count"] == 0
    assert soak["lost"] == 0 and soak["gaps_seen_live"] == 0 and soak["beyond_head"] == 0
    assert soak["unique"] == soak["expected_deliveries"], "duplicates after dedupe, or loss"
    assert soak["exact"]
    # Clients did drop, and every drop came back by resuming, with everything recovered.
    assert soak["drops"] > 0
    other = sum(soak["other_disconnects"].values())
    assert soak["drops"] <= soak["resumes"] <= soak["drops"] + other
    assert soak["replayed"] > 0
    assert soak["unrecovered"] == 0 and soak["unavailable"] == 0
    assert soak["attached_at_end"] == soak["channels"]
    # The memory figures are there (their verdict is the long run's business).
    memory = soak["memory"]
    for field in ("start_kb", "end_kb", "max_kb"):
        assert memory[field] > 0, memory
    assert memory["max_kb"] >= max(memory["start_kb"], memory["end_kb"])
    assert memory["slope_kb_per_min"] is not None and memory["verdict"] in ("flat", "growing")
    # Live memory: measured right after full collections the soak asked the server for.
    live = memory["live_blocks"]
    assert live["samples"] >= 5 and live["collect_every_s"] == 0.5, live
    assert live["start"] > 0 and live["end"] > 0 and live["verdict"] == "flat", live
    # The same style as the other modes: a soak section and the summary table.
    assert "Soak (ours)" in stdout and "Summary" in stdout
    assert any(row["name"].startswith("soak") for row in results["summary"])


def test_smoke_and_all_never_include_the_soak() -> None:
    parser = build_parser()
    assert "soak" not in options_from(parser.parse_args(["--smoke"])).modes
    assert "soak" not in options_from(parser.parse_args(["--mode", "all"])).modes
    assert options_from(parser.parse_args(["--mode", "soak"])).modes == ["soak"]


def test_memory_trend_tells_flat_from_growing() -> None:
    flat = [(float(t), 100_000 + (t % 3) * 10) for t in range(0, 61)]
    trend = memory_trend(flat, 60.0)
    assert trend["verdict"] == "flat"
    assert trend["start_kb"] == 100_000 and trend["max_kb"] == 100_020
    assert abs(trend["slope_kb_per_min"]) < 50

    # +200 KB/s over the second half: 6,000 KB on ~106,000 KB, about 5.7%.
    growing = [(float(t), 100_000 + 200 * t) for t in range(0, 61)]
    trend = memory_trend(growing, 60.0)
    assert trend["slope_kb_per_min"] == pytest.approx(12_000)
    assert trend["verdict"] == "growing"
    assert trend["second_half_samples"] == 31
