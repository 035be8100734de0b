"""Recording claim events: route each to its channels and give it the next sequence on each,
all in one transaction, committed before anyone is told it was accepted."""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.exceptions import IntegrityError
from tortoise.transactions import in_transaction

from models.channel import SubscriptionType
from models.clock import utcnow
from models.credentials import new_event_id
from models.db import insert_rows, sql_for, update_by_id
from models.errors import EventIdConflict, InvalidInput
from models.event import ClaimEvent, NewEvent

_ATTEMPTS = 3
_EVENT_COLUMNS = (
    "event_id",
    "event_type",
    "claim_id",
    "organisation_id",
    "user_id",
    "actor_id",
    "occurred_at",
    "recorded_at",
    "data",
    "fingerprint",
    "channel_count",
)
_PLACEMENT_COLUMNS = ("channel_id", "sequence", "event_id", "recorded_at")


@dataclass(frozen=True)
class Placement:
    """The event is number `sequence` on channel `channel_id`."""

    channel_id: str
    sequence: int


@dataclass(frozen=True)
class Recorded:
    """The outcome for one submitted event."""

    #: The stored event for a duplicate, the one just recorded otherwise.
    event: ClaimEvent | NewEvent
    duplicate: bool
    #: Where it was placed by this call (empty for a duplicate: it was placed before).
    placements: tuple[Placement, ...] = ()

    @property
    def channels(self) -> int:
        return int(self.event.channel_count)


def _fingerprint(submitted: Mapping[str, Any]) -> str:
    canonical = json.dumps(submitted, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()


def _parse_time(value: str, field: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value.replace("z", "Z").replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInput(field, f"{field}: {value!r} is not an RFC 3339 date-time") from None
    if moment.tzinfo is None:
        raise InvalidInput(field, f"{field}: {value!r} has no UTC offset")
    return moment.astimezone(UTC)


def _data_json(data: Any, field: str, max_data_bytes: int) -> str:
    """`data` as stored (compact ASCII JSON), or InvalidInput if its UTF-8 JSON is too big."""
    text = json.dumps(data, separators=(",", ":"))
    # Without \u escapes the ASCII text is the UTF-8 text: its length is the size.
    size = (
        len(text)
        if "\\u" not in text
        else len(
            json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode(
                "utf-8", "surrogatepass"
            )
        )
    )
    if size > max_data_bytes:
        raise InvalidInput(
            f"{field}data", f"{field}data is larger than {max_data_bytes} bytes of JSON"
        )
    return text


def _new_event(
    submitted: Mapping[str, Any], field: str, *, now: datetime, max_data_bytes: int
) -> NewEvent:
    data = submitted.get("data") or {}
    data_json = _data_json(data, field, max_data_bytes)
    occurred = submitted.get("occurred_at")
    return NewEvent(
        event_id=submitted.get("event_id") or new_event_id(),
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


async def record_events(
    submitted: Sequence[Mapping[str, Any]], *, max_data_bytes: int, batch: bool
) -> list[Recorded]:
    """Record events atomically: all of them, or (on any error) none.

    A known `event_id` submitted again unchanged is a duplicate (recorded once); reused for
    different content it is an EventIdConflict. Errors name the field, prefixed with
    `events.<i>.` for a batch.
    """
    now = utcnow()
    prefixes = [f"events.{i}." if batch else "" for i in range(len(submitted))]
    given = [str(item["event_id"]) for item in submitted if item.get("event_id")]
    # Two processes recording the same new event_id at once: the second insert fails on
    # the primary key; trying again finds the first one's row, a duplicate.
    for attempt in range(_ATTEMPTS):
        fresh = [
            _new_event(item, prefix, now=now, max_data_bytes=max_data_bytes)
            for item, prefix in zip(submitted, prefixes, strict=True)
        ]
        try:
            return await _record(fresh, given, prefixes, now)
        except IntegrityError:
            if attempt == _ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")


async def _record(
    fresh: list[NewEvent], given: list[str], prefixes: list[str], now: datetime
) -> list[Recorded]:
    # Every await below is a round trip to the database (through aiosqlite's thread on
    # SQLite) while the transaction holds the write lock: keep them few and fixed in number.
    async with in_transaction() as connection:
        results: list[Recorded | None] = [None] * len(fresh)
        to_store: list[tuple[int, NewEvent]] = []
        known: dict[str, ClaimEvent | NewEvent] = dict(await _known_events(given))
        for i, event in enumerate(fresh):
            previous = known.get(event.event_id)
            if previous is not None:
                if previous.fingerprint != event.fingerprint:
                    raise EventIdConflict(event.event_id, f"{prefixes[i]}event_id")
                results[i] = Recorded(event=previous, duplicate=True)
                continue
            known[event.event_id] = event
            to_store.append((i, event))

        by_organisation, by_user = await _candidate_channels(
            connection, [event for _, event in to_store]
        )
        rows: list[list[Any]] = []
        touched: dict[str, _Route] = {}
        for i, event in to_store:
            placements = []
            for route in (
                *by_organisation.get(event.organisation_id, ()),
                *by_user.get(event.user_id, ()),
            ):
                if event.event_type in route.event_types:
                    route.head += 1
                    touched[route.id] = route
                    placements.append(Placement(route.id, route.head))
                    rows.append([route.id, route.head, event.event_id, now])
            event.channel_count = len(placements)
            results[i] = Recorded(event=event, duplicate=False, placements=tuple(placements))

        events = [_event_row(event) for _, event in to_store]
        await insert_rows(connection, "claim_event", _EVENT_COLUMNS, events)
        await insert_rows(connection, "channel_event", _PLACEMENT_COLUMNS, rows)
        heads = {route.id: route.head for route in touched.values()}
        await update_by_id(
            connection, "channel", "head_sequence", heads, also={"last_event_at": now}
        )
    return [result for result in results if result is not None]


async def _known_events(given: list[str]) -> dict[str, ClaimEvent]:
    """Already recorded events among the publisher's event ids (ids the server assigns are
    new by construction: nothing to look up for them)."""
    if not given:
        return {}
    return {event.event_id: event for event in await ClaimEvent.filter(event_id__in=given)}


def _event_row(event: NewEvent) -> list[Any]:
    fields_map = ClaimEvent._meta.fields_map
    return [
        event.event_id,
        event.event_type,
        event.claim_id,
        event.organisation_id,
        event.user_id,
        event.actor_id,
        fields_map["occurred_at"].to_db_value(event.occurred_at, ClaimEvent),
        fields_map["recorded_at"].to_db_value(event.recorded_at, ClaimEvent),
        event.data_json,
        event.fingerprint,
        event.channel_count,
    ]


@dataclass(slots=True)
class _Route:
    """What routing needs of an open channel, and its head as this batch advances it."""

    id: str
    event_types: frozenset[str]
    head: int


_CANDIDATES = """
    SELECT id, subscription_type, organisation_id, user_id, event_types, head_sequence
    FROM channel
    WHERE status <> 'closed' AND (
        (subscription_type = 'organisation_claims' AND organisation_id IN ({organisations}))
        OR (subscription_type = 'user_claims' AND user_id IN ({users})))
    ORDER BY id
"""


@functools.lru_cache(maxsize=64)
def _event_types(raw: str) -> frozenset[str]:
    # Most channels share a handful of event_types lists: parse each one once.
    return frozenset(json.loads(raw))


async def _candidate_channels(
    connection: BaseDBAsyncClient, events: Sequence[NewEvent]
) -> tuple[dict[str, list[_Route]], dict[str, list[_Route]]]:
    """Open channels any of `events` may route to, by organisation and by user.

    Locked against concurrent ingestion (row locks, in id order, on PostgreSQL; SQLite
    serialises writers anyway). One plain query: no model objects for a batch that may
    touch thousands of channels.
    """
    by_organisation: dict[str, list[_Route]] = {}
    by_user: dict[str, list[_Route]] = {}
    if not events:
        return by_organisation, by_user
    organisations = sorted({event.organisation_id for event in events})
    users = sorted({event.user_id for event in events})
    query = _CANDIDATES.format(
        organisations=", ".join("?" * len(organisations)), users=", ".join("?" * len(users))
    )
    if connection.capabilities.dialect != "sqlite":
        query += " FOR UPDATE"
    _, rows = await connection.execute_query(sql_for(connection, query), [*organisations, *users])
    for row in rows:
        types = row["event_types"]
        route = _Route(
            row["id"],
            _event_types(types if isinstance(types, str) else json.dumps(types)),
            int(row["head_sequence"]),
        )
        if row["subscription_type"] == SubscriptionType.ORGANISATION_CLAIMS:
            by_organisation.setdefault(row["organisation_id"], []).append(route)
        else:
            by_user.setdefault(row["user_id"], []).append(route)
    return by_organisation, by_user
