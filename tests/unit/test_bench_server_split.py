"""tools.bench's split of our server's cost and latency per sweep step: CPU by thread (event
loops against the rest) and the server's own latency histograms read between two scrapes."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import threading
import time
from typing import Any

from tools.bench import histograms, procstat
from tools.bench.sweep import server_latencies
from tools.bench.targets import render_steps

INGEST = histograms.INGEST


def exposition(counts: dict[str, tuple[int, int]], name: str = INGEST) -> str:
    """A multiprocess scrape: two processes' series of `name`, cumulative per bound."""
    lines = [f"# TYPE {name} histogram"]
    for bound, (first, second) in counts.items():
        lines.append(f'{name}_bucket{{le="{bound}",pid="1"}} {float(first)}')
        lines.append(f'{name}_bucket{{le="{bound}",pid="2"}} {float(second)}')
    return "\n".join(lines) + "\n"


def test_buckets_are_summed_over_processes() -> None:
    text = exposition({"0.01": (3, 4), "0.02": (5, 6), "+Inf": (5, 7)})
    assert histograms.parse_buckets(text, INGEST) == {0.01: 7.0, 0.02: 11.0, math.inf: 12.0}
    assert histograms.parse_buckets(text, histograms.DELIVERY) == {}


def test_a_quantile_is_the_bound_of_its_bucket_among_the_new_observations() -> None:
    before = {0.01: 100.0, 0.02: 100.0, 0.05: 100.0, math.inf: 100.0}
    # 100 new: 90 at or below 10 ms, 9 more by 20 ms, the last by 50 ms.
    after = {0.01: 190.0, 0.02: 199.0, 0.05: 200.0, math.inf: 200.0}
    assert histograms.quantile_bound_ms(before, after, 0.5) == 10.0
    assert histograms.quantile_bound_ms(before, after, 0.99) == 20.0
    assert histograms.quantile_bound_ms(before, after, 1.0) == 50.0
    assert histograms.quantile_bound_ms(after, after, 0.5) is None  # nothing new
    past = {0.01: 0.0, math.inf: 10.0}
    assert histograms.quantile_bound_ms({}, past, 0.99) == math.inf


def test_the_step_split_comes_from_both_histograms_and_is_empty_without_them() -> None:
    before = exposition({"0.01": (0, 0), "0.03": (0, 0), "+Inf": (0, 0)})
    after = exposition({"0.01": (40, 40), "0.03": (49, 50), "+Inf": (50, 50)})
    queued = exposition({"0.001": (10, 10), "+Inf": (10, 10)}, name=histograms.DELIVERY)
    split = server_latencies(before, after + queued)
    assert split["server_ingest_p50_ms"] == 10.0
    assert split["server_ingest_p99_ms"] == 30.0
    assert split["server_queue_p99_ms"] == 1.0
    # Past the largest bucket: not a number JSON can hold, so unknown.
    stuck = exposition({"0.01": (0, 0), "+Inf": (5, 5)})
    assert server_latencies(before, stuck)["server_ingest_p99_ms"] is None
    # The baseline has no /metrics: every figure unknown, none invented.
    assert set(server_latencies("", "").values()) == {None}


def gc_exposition(counts: dict[str, dict[str, int]]) -> str:
    """One process's garbage collection pauses: per generation, the count per bound."""
    lines = [f"# TYPE {histograms.GC_PAUSE} histogram"]
    for generation, buckets in counts.items():
        for bound, count in buckets.items():
            labels = f'generation="{generation}",le="{bound}"'
            lines.append(f"{histograms.GC_PAUSE}_bucket{{{labels}}} {float(count)}")
    return "\n".join(lines) + "\n"


def test_the_step_counts_its_full_collections_and_bounds_its_longest_pause() -> None:
    before = gc_exposition(
        {"0": {"0.001": 50, "0.05": 50, "+Inf": 50}, "2": {"0.001": 0, "0.05": 0, "+Inf": 0}}
    )
    # Two young collections (one of 1-50 ms), and one full collection of 1-50 ms.
    after = gc_exposition(
        {"0": {"0.001": 51, "0.05": 52, "+Inf": 52}, "2": {"0.001": 0, "0.05": 1, "+Inf": 1}}
    )
    split = server_latencies(before, after)
    assert split["server_gc_full"] == 1.0
    assert split["server_gc_max_ms"] == 50.0
    # No collection between the scrapes: none counted, no pause bound invented.
    quiet = server_latencies(after, after)
    assert quiet["server_gc_full"] == 0.0 and quiet["server_gc_max_ms"] is None


def test_thread_split_puts_a_worker_threads_cpu_apart_from_the_main_thread() -> None:
    def burn() -> None:
        started = time.thread_time()
        while time.thread_time() - started < 0.3:
            pass

    meter = procstat.ThreadSplitMeter([os.getpid()])
    wall_started = time.monotonic()
    meter.start()
    worker = threading.Thread(target=burn)
    worker.start()
    worker.join()  # the main thread waits, using next to nothing
    main, other = meter.stop()
    wall = time.monotonic() - wall_started
    # /proc counts in clock ticks (10 ms): allow one either way.
    assert other >= 100 * (0.3 - 0.02) / wall
    assert main < other


def test_thread_split_counts_a_helper_process_whole_apart_from_the_event_loop() -> None:
    # As SQLite's writer process: a child of the server running no event loop of ours. It
    # stays alive until the meter stops (a process already gone counts as last seen).
    burn = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass\n"
    meter = procstat.ThreadSplitMeter([os.getpid()])
    wall_started = time.monotonic()
    meter.start()
    with subprocess.Popen(
        [sys.executable, "-c", burn + "print('burnt', flush=True)\ntime.sleep(30)"],
        stdout=subprocess.PIPE,
        text=True,
    ) as helper:
        assert helper.stdout is not None and helper.stdout.readline() == "burnt\n"
        main, other = meter.stop()
        helper.kill()
    wall = time.monotonic() - wall_started
    assert other >= 100 * (0.3 - 0.02) / wall
    assert main < other


def test_the_step_table_shows_the_split_and_dashes_where_it_is_unknown() -> None:
    step: dict[str, Any] = {
        "target_per_s": 5_000,
        "achieved_per_s": 5_000.0,
        **{key: 10.0 for key in ("p50_ms", "p90_ms", "p99_ms", "max_ms")},
        "lost": 0,
        "duplicated": 0,
        "server_cpu_pct": 80.0,
        "server_loop_cpu_pct": 50.0,
        "server_threads_cpu_pct": 30.0,
        "server_ingest_p50_ms": 15.0,
        "server_ingest_p99_ms": None,
        "server_queue_p99_ms": 2.5,
        "subscriber_cpu_pct": 30.0,
        "publisher_cpu_pct": 5.0,
        "generator_saturated": False,
        "passed": True,
        "failures": [],
    }
    runs = [{"server": "ours", "workload": "user", "steps": [step]}]
    row = render_steps({"sweep_rounds": [{"runs": runs}]}).splitlines()[-1]
    assert "50+30%" in row and "<=15/-" in row and "<=2.5" in row
    step.update(server_gc_full=1.0, server_gc_max_ms=250.0)
    row = render_steps({"sweep_rounds": [{"runs": runs}]}).splitlines()[-1]
    assert "1 full, <=250" in row
    older = {k: v for k, v in step.items() if not k.startswith(("server_loop", "server_thr"))}
    older = {k: v for k, v in older.items() if not k.startswith(("server_ingest", "server_q"))}
    older_runs = [{"server": "ours", "workload": "user", "steps": [older]}]
    row = render_steps({"sweep_rounds": [{"runs": older_runs}]}).splitlines()[-1]
    assert "-/-" in row  # results from before the split: no figures invented
