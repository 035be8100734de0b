"""tools.bench's history mode: the page checker its readers trust, and the verdict it prints."""

from __future__ import annotations

from typing import Any

import pytest

from tools.bench.history import history_failures, p99_verdict, render, summary_rows
from tools.bench.readers import check_page, percentile

CHANNEL = "ch_1"


def page(
    sequences: list[int],
    *,
    head: int,
    next_after: int | None,
    unavailable: int = 0,
    channel_id: str = CHANNEL,
) -> dict[str, Any]:
    return {
        "data": [{"channel_id": channel_id, "sequence": s} for s in sequences],
        "head_sequence": head,
        "first_available_sequence": 1 + unavailable,
        "unavailable": unavailable,
        "next_after_sequence": next_after,
    }


def test_a_full_page_short_of_the_head_says_where_to_go_on() -> None:
    assert check_page(CHANNEL, 0, 3, page([1, 2, 3], head=7, next_after=3)) == []


def test_the_last_page_reaches_the_head_and_says_no_more() -> None:
    assert check_page(CHANNEL, 3, 3, page([4, 5], head=5, next_after=None)) == []
    assert check_page(CHANNEL, 3, 2, page([4, 5], head=5, next_after=None)) == []


def test_an_empty_page_at_the_head_is_fine() -> None:
    assert check_page(CHANNEL, 5, 3, page([], head=5, next_after=None)) == []


def test_a_page_starts_after_what_retention_lost() -> None:
    assert check_page(CHANNEL, 0, 3, page([5, 6, 7], head=9, next_after=7, unavailable=4)) == []


@pytest.mark.parametrize(
    ("after", "body", "expected"),
    [
        (0, page([2, 3, 4], head=9, next_after=4), "not from 1"),  # skipped one
        (3, page([3, 4, 5], head=9, next_after=5), "not from 4"),  # repeated one
        (0, page([1, 3, 4], head=9, next_after=4), "not from 1"),  # a gap inside
        (0, page([1, 2, 2], head=9, next_after=2), "not from 1"),  # a duplicate inside
        (0, page([1, 2, 3], head=2, next_after=None), "beyond head"),
        (0, page([1, 2], head=9, next_after=None), "no next page"),
        (0, page([1, 2, 3], head=9, next_after=2), "next_after_sequence 2"),
        (0, page([1, 2], head=9, next_after=2), "next_after_sequence 2"),
        (0, page([1, 2, 3, 4], head=9, next_after=4), "4 events on a page of 3"),
        (0, page([1, 2, 3], head=9, next_after=3, channel_id="ch_2"), "another channel"),
    ],
)
def test_every_way_paging_can_go_wrong_is_named(
    after: int, body: dict[str, Any], expected: str
) -> None:
    problems = check_page(CHANNEL, after, 3, body)
    assert problems and any(expected in problem for problem in problems), problems


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.99) == 99.0
    assert percentile(values, 0.50) == 50.0
    assert percentile([7.0], 0.99) == 7.0
    assert percentile([], 0.99) is None


def test_p99_within_ten_percent() -> None:
    assert p99_verdict(20.0, 22.0, 10.0)["within"] is True
    assert p99_verdict(20.0, 22.1, 10.0)["within"] is False
    assert p99_verdict(20.0, 15.0, 10.0) == {"ratio": 0.75, "limit_ms": 22.0, "within": True}
    assert p99_verdict(None, 15.0, 10.0)["within"] is None
    assert p99_verdict(20.0, None, 10.0)["within"] is None


def step(p99: float, lost: int = 0) -> dict[str, Any]:
    return {
        "achieved_per_s": 5000.0,
        "p50_ms": p99 / 2,
        "p99_ms": p99,
        "lost": lost,
        "duplicated": 0,
        "server_cpu_pct": 50.0,
        "passed": not lost,
        "failures": [f"{lost} lost"] if lost else [],
    }


def reading(violations: int = 0, pages: int = 40) -> dict[str, Any]:
    return {
        "pages": pages,
        "events": pages * 1000,
        "pages_per_s": pages / 8,
        "events_per_s": pages * 125.0,
        "page_p50_ms": 30.0,
        "page_p99_ms": 60.0,
        "violations": violations,
        "http_errors": 0,
        "reader_cpu_pct": 10.0,
    }


def result(
    without_p99: float, with_p99: float, violations: int = 0, lost: int = 0
) -> dict[str, Any]:
    """A finished run's figures, as run_history leaves them (medians already taken)."""
    with_reading = reading(violations)
    history: dict[str, Any] = {
        "target_per_s": 5000,
        "readers": 2,
        "page_limit": 1000,
        "tolerance_pct": 10.0,
        "runs": [
            {"pair": 1, "with_readers": False, "step": step(without_p99), "reading": None},
            {"pair": 1, "with_readers": True, "step": step(with_p99, lost), "reading": reading()},
        ],
        "without": {**step(without_p99)},
        "with": {**step(with_p99, lost), "reading": with_reading},
        "p99": p99_verdict(without_p99, with_p99, 10.0),
    }
    history["failures"] = history_failures(history)
    return history


def test_loss_and_paging_violations_fail_the_run_a_slower_p99_does_not() -> None:
    assert history_failures(result(20.0, 40.0)) == []
    assert history_failures(result(20.0, 21.0, violations=2)) == ["2 paging violations"]
    assert history_failures(result(20.0, 21.0, lost=3)) == ["with readers: 3 lost, 0 duplicated"]


def test_the_table_and_summary_give_both_p99_and_the_verdict() -> None:
    within = result(20.0, 21.0)
    text = render(within)
    assert "#1 without readers" in text and "#1 with readers" in text
    assert "1.05x, within 10%" in text
    rows = summary_rows(within)
    assert rows[0]["ours"] == "20.0 / 21.0 ms" and rows[0]["met"] is True
    assert rows[2]["ours"] == "0 / 0 / 0" and rows[2]["met"] is True
    assert "NOT within 10%" in render(result(20.0, 30.0))
    assert summary_rows(result(20.0, 30.0))[0]["met"] is False
    assert render(None) == "" and summary_rows(None) == []
