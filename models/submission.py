"""A claim event as submitted, checked and made ready to record: times parsed, `data`
serialised once (as stored and as delivered), the submission fingerprinted."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from claims_realtime.models.errors import InvalidInput
from claims_realtime.models.event import NewEvent
from claims_realtime.models.json_text import compact_json

#: json.dumps with these options builds an encoder per call: built once here (same output).
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)
_COMPACT_UTF8 = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


#: The fingerprint of an event whose id the server assigned. A submission naming that id
#: later is never the same submission (the first named none), so it is an EventIdConflict
#: either way; not working one out saves the canonical JSON of every such event and its
#: hash, a visible share of the event loop's time under load.
NO_FINGERPRINT = ""


def _fingerprint(submitted: Mapping[str, Any]) -> str:
    if not submitted.get("event_id"):
        return NO_FINGERPRINT
    canonical = _CANONICAL.encode(submitted)
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()


def _parse_time(value: str, field: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value.replace("z", "Z").replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInput(field, f"{field}: {value!r} is not an RFC 3339 date-time") from None
    if moment.tzinfo is None:
        raise InvalidInput(field, f"{field}: {value!r} has no UTC offset")
    try:
        return moment.astimezone(UTC)
    except OverflowError:  # e.g. 0001-01-01T00:00:00+03:04 falls before year 1 in UTC
        raise InvalidInput(field, f"{field}: {value!r} is out of range in UTC") from None


def _data_json(data: Any, field: str, max_data_bytes: int) -> str:
    """`data` as stored (compact ASCII JSON), or InvalidInput if its UTF-8 JSON is too big."""
    text = compact_json(data)
    # Without \u escapes the ASCII text is the UTF-8 text: its length is the size.
    size = (
        len(text)
        if "\\u" not in text
        else len(_COMPACT_UTF8.encode(data).encode("utf-8", "surrogatepass"))
    )
    if size > max_data_bytes:
        raise InvalidInput(
            f"{field}data", f"{field}data is larger than {max_data_bytes} bytes of JSON"
        )
    return text


def new_event(
    submitted: Mapping[str, Any], field: str, *, now: datetime, max_data_bytes: int, event_id: str
) -> NewEvent:
    """`submitted` as recorded at `now` with id `event_id`; InvalidInput names the field
    wrong, prefixed with `field` (`events.<i>.` in a batch)."""
    data = submitted.get("data") or {}
    data_json = _data_json(data, field, max_data_bytes)
    occurred = submitted.get("occurred_at")
    return NewEvent(
        event_id=event_id,
        event_type=submitted["event_type"],
        claim_id=submitted["claim_id"],
        organisation_id=submitted["organisation_id"],
        user_id=submitted["user_id"],
        actor_id=submitted.get("actor_id"),
        occurred_at=_parse_time(occurred, f"{field}occurred_at") if occurred else now,
        recorded_at=now,
        data=data,
        data_json=data_json,
        fingerprint=_fingerprint(submitted),
    )
