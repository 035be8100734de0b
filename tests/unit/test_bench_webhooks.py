"""tools.bench's webhooks mode: what a step owes, how arrivals are counted against it, how
late they were, and the verdict it prints."""

from __future__ import annotations

from typing import Any

from tools.bench.options import Options
from tools.bench.receiver import Arrival
from tools.bench.webhook_report import (
    account,
    expected_ids,
    failures,
    first_arrivals,
    lateness_figures,
    lateness_ms,
    p99_verdict,
    render,
    side,
    steady_rate,
    summary_rows,
)
from tools.bench.webhooks import step_options


def arrival(channel: str, sequence: int, recorded_ms: float, arrived_ms: float) -> Arrival:
    """Times in ms; the wall clock here is the monotonic one plus a day."""
    day = 86_400.0
    return Arrival(
        f"{channel}.{sequence}",
        channel,
        sequence,
        day + recorded_ms / 1000,
        day + arrived_ms / 1000,
        arrived_ms,
    )


def test_a_step_owes_the_sequences_its_events_took_on_channels_with_a_fallback() -> None:
    channel_of = {"usr_a": "chan_a", "usr_b": "chan_b"}
    before = {"usr_a": 2, "usr_plain": 5}
    after = {"usr_a": 4, "usr_b": 1, "usr_plain": 9}
    assert expected_ids(channel_of, before, after) == {"chan_a.3", "chan_a.4", "chan_b.1"}
    assert expected_ids(channel_of, after, after) == set()


def test_every_owed_webhook_once_is_clean() -> None:
    arrivals = [arrival("c", 1, 0.0, 10_100.0), arrival("c", 2, 0.0, 10_200.0)]
    assert account({"c.1", "c.2"}, arrivals) == {
        "expected": 2,
        "received": 2,
        "unique": 2,
        "missing": 0,
        "duplicated": 0,
        "unexpected": 0,
    }


def test_missing_duplicated_and_unowed_webhooks_are_counted_apart() -> None:
    arrivals = [
        arrival("c", 1, 0.0, 10_100.0),
        arrival("c", 1, 0.0, 10_900.0),  # sent again
        arrival("c", 1, 0.0, 11_000.0),  # and again
        arrival("d", 7, 0.0, 10_500.0),  # not owed by this step
    ]
    counts = account({"c.1", "c.2", "c.3"}, arrivals)
    assert counts["missing"] == 2
    assert counts["duplicated"] == 2
    assert counts["unexpected"] == 1
    assert (counts["received"], counts["unique"]) == (4, 2)


def test_lateness_is_from_the_recorded_time_plus_the_deadline_first_request_only() -> None:
    arrivals = [
        arrival("c", 1, 1_000.0, 11_250.0),
        arrival("c", 1, 1_000.0, 15_000.0),  # a duplicate: not a later lateness
        arrival("c", 2, 2_000.0, 12_750.0),
        arrival("c", 3, 3_000.0, 12_500.0),  # before its deadline
    ]
    assert [a.arrived_ms for a in first_arrivals(arrivals)] == [11_250.0, 12_750.0, 12_500.0]
    assert [round(late, 3) for late in lateness_ms(arrivals, 10)] == [250.0, 750.0, -500.0]


def test_lateness_percentiles_and_early_webhooks() -> None:
    late = [float(v) for v in range(1, 101)]
    found = lateness_figures(late)
    assert found["lateness_p50_ms"] == 50.0
    assert found["lateness_p99_ms"] == 99.0
    assert (found["lateness_max_ms"], found["lateness_min_ms"], found["early"]) == (100.0, 1.0, 0)
    assert lateness_figures([-5.0, 3.0])["early"] == 1
    assert lateness_figures([])["lateness_p99_ms"] is None


def test_the_steady_rate_counts_arrivals_while_events_fall_due() -> None:
    # Sent from t=0 for 4 s at 2/s, deadline 10 s: due from 10 s to 14 s.
    arrivals = [arrival("c", i, i * 500.0, 10_000.0 + i * 500.0 + 100.0) for i in range(8)]
    # From 11 s (a second of warm-up) to 14 s: 3 s, six first arrivals.
    assert steady_rate(arrivals, 0.0, 10, 4, 1) == 2.0
    assert steady_rate(arrivals + arrivals, 0.0, 10, 4, 1) == 2.0  # duplicates do not count
    assert steady_rate(arrivals, 0.0, 10, 1, 1) is None


def test_deliveries_are_measured_from_the_deadline_when_the_step_outlasts_it() -> None:
    long = step_options(Options(webhook_after_seconds=10, webhook_step_seconds=30))
    assert (long.step_seconds, long.warmup_seconds) == (30, 10)
    assert Options(webhook_after_seconds=12).webhook_step == 27
    short = step_options(Options(webhook_after_seconds=10, webhook_step_seconds=3))
    assert (short.step_seconds, short.warmup_seconds) == (3, 1)


def test_p99_with_fallbacks_is_judged_against_the_usual_target() -> None:
    assert p99_verdict(20.0, 30.0, 50.0) == {"target_ms": 50.0, "ratio": 1.5, "within": True}
    assert p99_verdict(20.0, 51.0, 50.0)["within"] is False
    assert p99_verdict(None, 30.0, 50.0)["ratio"] is None
    assert p99_verdict(20.0, None, 50.0)["within"] is None


def step(p99: float, lost: int = 0, kept_up: bool = True) -> dict[str, Any]:
    return {
        "achieved_per_s": 1000.0,
        "p50_ms": p99 / 2,
        "p99_ms": p99,
        "lost": lost,
        "duplicated": 0,
        "server_cpu_pct": 40.0,
        "passed": not lost and kept_up,
        "failures": [f"{lost} lost"] if lost else [],
        "publisher": {"request_p50_ms": 3.0, "request_p99_ms": 9.0, "kept_up": kept_up},
    }


def hooks(missing: int = 0, duplicated: int = 0, verified: int = 3) -> dict[str, Any]:
    return {
        "expected": 20_000,
        "received": 20_000 - missing + duplicated,
        "unique": 20_000 - missing,
        "missing": missing,
        "duplicated": duplicated,
        "unexpected": 0,
        "early": 0,
        "verified": verified,
        "bad_signatures": 0,
        "malformed": 0,
        "steady_per_s": 998.0,
        "lateness_p50_ms": 600.0,
        "lateness_p99_ms": 1_400.0,
        "lateness_max_ms": 1_900.0,
        "receiver_cpu_pct": 20.0,
    }


def result(
    without_p99: float, with_p99: float, *, webhooks: dict[str, Any] | None = None, strays: int = 0
) -> dict[str, Any]:
    """A finished run's figures, as run_webhooks leaves them."""
    runs = [
        {"pair": 1, "fallbacks": False, "step": step(without_p99), "strays": strays},
        {"pair": 1, "fallbacks": True, "step": step(with_p99), "webhooks": webhooks or hooks()},
    ]
    found: dict[str, Any] = {
        "channels": 1000,
        "after_seconds": 10,
        "target_per_s": 1000,
        "runs": runs,
        "without": side([runs[0]]),
        "with": side([runs[1]]),
        "p99": p99_verdict(without_p99, with_p99, 50.0),
    }
    found["failures"] = failures(found)
    return found


def test_a_side_takes_medians_of_steps_and_sums_of_counts() -> None:
    runs = [
        {"fallbacks": True, "step": step(10.0), "webhooks": hooks(missing=1)},
        {"fallbacks": True, "step": step(30.0), "webhooks": hooks(duplicated=2)},
    ]
    figures = side(runs)
    assert figures["p99_ms"] == 20.0 and figures["ingest_p99_ms"] == 9.0
    assert figures["webhooks"]["missing"] == 1 and figures["webhooks"]["duplicated"] == 2
    assert figures["webhooks"]["expected"] == 40_000
    assert figures["webhooks"]["lateness_max_ms"] == 1_900.0
    assert figures["publisher_kept_up"] is True


def test_missing_or_repeated_webhooks_fail_the_run_a_slower_p99_does_not() -> None:
    assert failures(result(20.0, 80.0)) == []
    assert failures(result(20.0, 21.0, webhooks=hooks(missing=5))) == ["5 webhooks missing"]
    assert failures(result(20.0, 21.0, webhooks=hooks(duplicated=2))) == ["2 webhooks duplicated"]
    assert failures(result(20.0, 21.0, webhooks=hooks(verified=0))) == ["no signature verified"]
    assert failures(result(20.0, 21.0, strays=4)) == ["4 webhooks during steps without fallbacks"]


def test_the_table_and_summary_give_both_p99_lateness_and_the_verdict() -> None:
    clean = result(20.0, 22.0)
    text = render(clean)
    assert "#1 without fallbacks" in text and "#1 with fallbacks" in text
    assert "20,000/20,000" in text and "1.40" in text
    assert "22.0 ms (1.10x without): within the 50 ms target; publisher kept up" in text
    rows = summary_rows(clean)
    assert rows[0]["ours"] == "20.0 / 22.0 ms" and rows[0]["met"] is True
    assert rows[2]["ours"] == "0.60 / 1.40 / 1.90"
    assert rows[3]["ours"] == "20,000 / 20,000, 0" and rows[3]["met"] is True
    assert "NOT within the 50 ms target" in render(result(20.0, 60.0))
    assert summary_rows(result(20.0, 60.0))[0]["met"] is False
    assert render(None) == "" and summary_rows(None) == []
