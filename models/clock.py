"""Time in one shape: aware UTC datetimes inside, RFC 3339 with `Z` outside."""

from __future__ import annotations

import functools
from datetime import UTC, datetime


def utcnow() -> datetime:
    return datetime.now(UTC)


def rfc3339(moment: datetime) -> str:
    """`2026-03-26T08:00:00.123Z`: UTC, millisecond precision, `Z` suffix."""
    if moment.tzinfo is not UTC:
        moment = moment.astimezone(UTC)
    return _utc_text(moment)


@functools.lru_cache(maxsize=1024)
def _utc_text(moment: datetime) -> str:
    """rfc3339 of a UTC datetime, remembered: the events of a batch share one time (their
    recording time, and their occurred_at unless the publisher gave one), written into every
    event's envelope; formatting it cost ~2.8 us a time, a lookup ~0.15 us. Only UTC
    datetimes come here, and equal UTC datetimes have equal fields: the same text."""
    # isoformat (C) is twice as fast as strftime, and pads years below 1000 as RFC 3339 asks.
    return moment.isoformat(timespec="milliseconds")[:-6] + "Z"


def rfc3339_or_none(moment: datetime | None) -> str | None:
    return None if moment is None else rfc3339(moment)
