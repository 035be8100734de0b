"""Time in one shape: aware UTC datetimes inside, RFC 3339 with `Z` outside."""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    return datetime.now(UTC)


def rfc3339(moment: datetime) -> str:
    """`2026-03-26T08:00:00.123Z`: UTC, millisecond precision, `Z` suffix."""
    if moment.tzinfo is not UTC:
        moment = moment.astimezone(UTC)
    # isoformat (C) is twice as fast as strftime, and pads years below 1000 as RFC 3339 asks.
    return moment.isoformat(timespec="milliseconds")[:-6] + "Z"


def rfc3339_or_none(moment: datetime | None) -> str | None:
    return None if moment is None else rfc3339(moment)
