"""RFC 3339 timestamps as the API writes them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from claims_realtime.models.clock import rfc3339


@pytest.mark.parametrize(
    ("moment", "text"),
    [
        (datetime(2026, 3, 26, 8, 0, tzinfo=UTC), "2026-03-26T08:00:00.000Z"),
        (datetime(2026, 3, 26, 8, 0, 0, 123999, tzinfo=UTC), "2026-03-26T08:00:00.123Z"),
        # Another offset is converted to UTC.
        (
            datetime(2026, 3, 26, 10, 0, 0, 500, tzinfo=timezone(timedelta(hours=2))),
            "2026-03-26T08:00:00.000Z",
        ),
        (
            datetime(2026, 1, 1, 0, 30, tzinfo=timezone(timedelta(hours=1))),
            "2025-12-31T23:30:00.000Z",
        ),
        # Four-digit years always (strftime's %Y would write "999").
        (datetime(999, 1, 2, 3, 4, 5, tzinfo=UTC), "0999-01-02T03:04:05.000Z"),
    ],
)
def test_rfc3339(moment: datetime, text: str) -> None:
    assert rfc3339(moment) == text


def test_rfc3339_remembers_texts_without_mixing_them_up() -> None:
    # rfc3339 keeps recent texts (a batch's events share one time): more times than it
    # keeps, each asked twice, each still gets its own text.
    base = datetime(2026, 3, 26, 8, 0, tzinfo=UTC)
    moments = [base + timedelta(milliseconds=i) for i in range(3000)]
    expected = [f"2026-03-26T08:00:{i // 1000:02d}.{i % 1000:03d}Z" for i in range(3000)]
    assert [rfc3339(moment) for moment in moments] == expected
    assert [rfc3339(moment) for moment in reversed(moments)] == expected[::-1]
    # The same instant given in another offset is the same text.
    assert rfc3339(base.astimezone(timezone(timedelta(hours=-5)))) == expected[0]
