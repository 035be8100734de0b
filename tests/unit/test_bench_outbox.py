"""tools.bench's outbox mode: the writer's event texts, a step's committed rate and backlog,
its verdict, what fails the run, the table and summary it prints, and when it runs at all."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tools.bench.arguments import build_parser, options_from, validate
from tools.bench.outbox_report import (
    committed_window,
    histogram_mean,
    kept_up,
    notes,
    render,
    run_failures,
    step_failures,
    summary_rows,
)
from tools.bench.outbox_writer import Events, insert_sql, percentile

FIGURES_OK = {"committed_per_s": 1_000.0, "backlog_start": 10, "backlog_end": 12}
STATS_OK = {"lost": 0, "duplicated": 0, "p99_ms": 20.0}
WRITTEN_OK = {"errors": 0, "kept_up": True}


def test_an_event_is_the_ingestion_apis_json_with_sent_at_spliced_in() -> None:
    events = Events(["usr_a", "usr_b"], "user_id", envelope_bytes=400)
    warm, measured = events.make(True), events.make(False)
    first = json.loads(warm.text(1234.5))
    second = json.loads(measured.text(99.25))
    assert (warm.key, measured.key) == ("usr_a", "usr_b")
    assert first["user_id"] == "usr_a" and first["organisation_id"] == "org_bench_none"
    assert first["data"]["sent_at"] == 1234.5 and first["data"]["w"] == 1
    assert second["data"]["sent_at"] == 99.25 and "w" not in second["data"]
    # Padded as publisher.mjs pads: the delivered envelope near 400 bytes.
    assert len(second["data"]["pad"]) == 400 - 318
    assert {"event_type", "claim_id"} <= set(second)


def test_org_events_carry_the_organisation_as_their_key() -> None:
    event = json.loads(Events(["org_1"], "organisation_id", 300).make(False).text(1.0))
    assert event["organisation_id"] == "org_1" and event["user_id"].startswith("usr_bench_")


def test_a_tick_is_one_statement_casting_text_to_jsonb() -> None:
    assert insert_sql("t") == 'INSERT INTO "t" (event) SELECT unnest($1::text[])::jsonb'


def test_percentile_is_nearest_rank() -> None:
    assert percentile([], 0.99) is None
    assert percentile([3.0, 1.0, 2.0], 0.5) == 2.0
    assert percentile([float(v) for v in range(1, 101)], 0.99) == 99.0


def test_the_committed_rate_spans_the_samples_inside_the_window() -> None:
    samples = [(900.0, 0.0, 5), (1_100.0, 100.0, 7), (2_100.0, 1_100.0, 9), (3_500.0, 9e9, 0)]
    assert committed_window(samples, 1_000.0, 3_000.0) == {
        "committed_per_s": 1_000.0,
        "backlog_start": 7,
        "backlog_end": 9,
    }
    assert committed_window(samples[:2], 1_000.0, 3_000.0)["committed_per_s"] is None


def test_a_histograms_mean_between_two_readings() -> None:
    before = {"h_count": 2.0, "h_sum": 1.0}
    after = {"h_count": 6.0, "h_sum": 3.0}
    assert histogram_mean(before, after, "h") == 0.5
    assert histogram_mean(after, after, "h") is None


def test_a_clean_step_passes() -> None:
    assert step_failures(1_000, FIGURES_OK, STATS_OK, WRITTEN_OK) == []


@pytest.mark.parametrize(
    ("figures", "stats", "written", "failure"),
    [
        ({}, {"lost": 3}, {}, "3 lost"),
        ({}, {"duplicated": 1}, {}, "1 duplicated"),
        ({"committed_per_s": 979.0}, {}, {}, "committed < 98% of the rate"),
        ({"committed_per_s": None}, {}, {}, "committed < 98% of the rate"),
        # 100 ms of the rate: 100 rows more at the end than at the start is still steady.
        ({"backlog_end": 111}, {}, {}, "backlog growing"),
        ({"backlog_start": None}, {}, {}, "backlog growing"),
        ({}, {"p99_ms": 100.5}, {}, "p99 > 100 ms"),
        ({}, {"p99_ms": None}, {}, "p99 > 100 ms"),
        ({}, {}, {"kept_up": False}, "writer fell behind"),
        ({}, {}, {"errors": 2, "kept_up": False}, "2 INSERT errors"),
    ],
)
def test_a_step_fails_for_each_reason_on_its_own(
    figures: dict[str, Any], stats: dict[str, Any], written: dict[str, Any], failure: str
) -> None:
    failures = step_failures(
        1_000, {**FIGURES_OK, **figures}, {**STATS_OK, **stats}, {**WRITTEN_OK, **written}
    )
    assert failures == [failure]


def test_the_backlog_may_grow_by_a_tenth_of_a_second_of_the_rate() -> None:
    assert step_failures(1_000, {**FIGURES_OK, "backlog_end": 110}, STATS_OK, WRITTEN_OK) == []


def step(rate: int, failures: list[str], **fields: Any) -> dict[str, Any]:
    return {
        "target_events_per_s": rate,
        "target_deliveries_per_s": rate * 5,
        "committed_per_s": rate * 1.001,
        "backlog_start": 4,
        "backlog_end": 6,
        "delivered_per_s": rate * 4.99,
        "p50_ms": 5.0,
        "p99_ms": 30.0,
        "max_ms": 40.0,
        "lost": 0,
        "duplicated": 0,
        "insert_p99_ms": 3.0,
        "to_consumed_mean_ms": 9.0,
        "rows_per_consumer_run": 12.0,
        "cpu_pct": {"server": 50.0, "consumer_db": 5.0, "writer": 8.0, "writer_db": 4.0},
        "passed": not failures,
        "kept_up": kept_up(failures),
        "failures": failures,
        **fields,
    }


def result(steps: list[dict[str, Any]], drain: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "server": "ours",
        "workload": "org",
        "channels": 1_000,
        "fanout": 5,
        "our_database": "sqlite",
        "writer_connections": 4,
        "steps": steps,
        "drain": drain,
        "rates": [1_000, 5_000, 7_500],
    }


DRAIN = {
    "events": 50_000,
    "fanout": 5,
    "insert_ms": 400.0,
    "committed_per_s": 7_000.0,
    "first_consumed_ms": 90.0,
    "drained_s": 7.1,
    "rows_per_consumer_run": 500.0,
    "ms_per_consumer_run": 71.0,
    "delivered_per_s": 34_000.0,
    "deliveries": 250_000,
    "lost": 0,
    "duplicated": 0,
    "cpu_pct": {"server": 99.0, "consumer_db": 8.0},
    "failures": [],
}


def test_only_loss_duplicates_errors_and_an_unfinished_drain_fail_the_run() -> None:
    steps = [step(1_000, []), step(5_000, ["committed < 98% of the rate", "p99 > 100 ms"])]
    assert run_failures(result(steps, DRAIN)) == []
    lossy = [step(1_000, ["2 lost", "1 duplicated"])]
    drain = {**DRAIN, "failures": ["the outbox did not drain"]}
    assert run_failures(result(lossy, drain)) == [
        "1,000/s: 2 lost",
        "1,000/s: 1 duplicated",
        "the outbox did not drain",
    ]


def test_the_table_shows_events_and_deliveries_per_second_and_the_drain() -> None:
    text = render(result([step(1_000, []), step(5_000, ["p99 > 100 ms"])], DRAIN))
    assert "org workload: 1,000 channels, each event to 5" in text
    lines = text.splitlines()
    assert any(line.startswith("1,000     5,000") and line.endswith("ok") for line in lines)
    assert any("FAIL p99 > 100 ms" in line for line in lines)
    assert "50,000 rows in one commit" in text and "7,000 events committed/s" in text
    assert "500 rows per consumer run, 71 ms each" in text
    assert render(None) == ""


def test_a_saturated_generator_and_a_busy_machine_are_noted() -> None:
    quiet = step(1_000, [])
    busy = step(5_000, [], cpu_pct={"writer": 95.0, "subscribers": 40.0, "other": 60.0})
    found = notes(result([quiet, busy]))
    assert len(found) == 2 and all(note.startswith("outbox at 5,000 events/s") for note in found)
    assert "writer 95%" in found[0] and "60% of a core" in found[1]
    assert "- outbox at 5,000 events/s" in render(result([quiet, busy]))


def test_a_step_failing_on_p99_alone_still_kept_up() -> None:
    assert kept_up([]) and kept_up(["p99 > 100 ms"])
    assert not kept_up(["p99 > 100 ms", "backlog growing"])
    assert not kept_up(["1 lost"])


def test_the_summary_judges_the_rate_kept_up_with_the_drain_and_p99_at_1000() -> None:
    steps = [step(1_000, []), step(5_000, ["p99 > 100 ms"]), step(7_500, ["backlog growing"])]
    rows = summary_rows(result(steps, DRAIN))
    by_name = {row["name"].split(": ", 1)[1]: row for row in rows}
    kept = by_name[
        "events/s the consumer kept up with (committed >= 98%, backlog steady, none lost)"
    ]
    assert kept["ours"] == 5_000 and kept["met"] is True
    passed = by_name["events/s of the highest step passed (p99 <= 100 ms too)"]
    assert passed["ours"] == 1_000 and passed["met"] is None
    assert by_name["drain of 50,000 rows, events committed/s"]["met"] is True
    p99 = by_name["p99 insert -> receive at 1,000 events/s (5,000 deliveries/s)"]
    assert p99["ours"] == 30.0 and p99["met"] is True
    assert all(row["baseline"] == "no outbox" for row in rows)
    assert summary_rows(None) == []


def test_a_floor_is_shown_when_every_step_of_the_run_kept_up() -> None:
    steps = [step(1_000, []), step(5_000, []), step(7_500, ["p99 > 100 ms"])]
    kept, passed = summary_rows(result(steps))[:2]
    assert kept["ours"] == ">= 7,500/s" and kept["met"] is True
    assert passed["ours"] == 5_000
    short = summary_rows(result([step(1_000, []), step(2_000, ["backlog growing"])]))
    assert short[0]["ours"] == 1_000 and short[0]["met"] is False
    # The latency run: one step, below the committed-rate target, which it did not test.
    alone = {**result([step(1_000, [])]), "rates": [1_000]}
    assert summary_rows(alone)[0]["ours"] == ">= 1,000/s"
    assert summary_rows(alone)[0]["met"] is None


def parse(*argv: str) -> Any:
    return options_from(build_parser().parse_args(list(argv)))


def test_the_outbox_runs_in_smoke_only_with_a_postgresql_and_never_in_all() -> None:
    assert "outbox" not in parse("--smoke").modes
    assert "outbox" not in parse("--mode", "all").modes
    named = parse("--smoke", "--outbox-url", "postgres://pg/postgres")
    assert "outbox" in named.modes and named.outbox_url == "postgres://pg/postgres"
    beside = parse("--smoke", "--database-url", "postgresql://pg/postgres")
    assert "outbox" in beside.modes and beside.outbox_url == "postgresql://pg/postgres"
    assert parse("--mode", "outbox").modes == ["outbox"]
    assert parse("--mode", "outbox").outbox_url is None  # the default admin URL, later


def test_outbox_options_are_checked() -> None:
    assert validate(parse("--mode", "outbox", "--outbox-rates", "0")) is not None
    assert validate(parse("--mode", "outbox", "--outbox-connections", "0")) is not None
    assert validate(parse("--mode", "outbox", "--outbox-drain-events", "-1")) is not None
    options = parse("--mode", "outbox", "--outbox-workload", "org", "--outbox-rates", "1000")
    assert validate(options) is None
    assert (options.outbox_workload, options.outbox_rates) == ("org", [1000])
