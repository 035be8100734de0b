"""Recording claim events: route each to its channels and give it the next sequence on each,
all in one transaction, committed before anyone is told it was accepted."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from tortoise.exceptions import IntegrityError

from claims_realtime.models.backends import Backend, current
from claims_realtime.models.channel import SubscriptionType
from claims_realtime.models.clock import utcnow
from claims_realtime.models.credentials import new_event_ids
from claims_realtime.models.errors import EventIdConflict
from claims_realtime.models.event import NewEvent
from claims_realtime.models.fields import python_time
from claims_realtime.models.sql import Script, Select, Statement, padded
from claims_realtime.models.submission import new_event

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


class Placement(NamedTuple):
    """The event is number `sequence` on channel `channel_id`. A named tuple: one is built
    per placement (a hundred per organisation event), at a third of a frozen dataclass's
    cost."""

    channel_id: str
    sequence: int


@dataclass(frozen=True)
class Recorded:
    """The outcome for one submitted event."""

    #: The stored event for a duplicate, the one just recorded otherwise.
    event: NewEvent
    duplicate: bool
    #: Where it was placed by this call (empty for a duplicate: it was placed before).
    placements: tuple[Placement, ...] = ()

    @property
    def channels(self) -> int:
        return int(self.event.channel_count)


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
    assigned = new_event_ids(len(submitted) - len(given))
    ids = [str(item["event_id"]) if item.get("event_id") else assigned.pop() for item in submitted]
    # Two processes recording the same new event_id at once: the second insert fails on
    # the primary key; trying again finds the first one's row, a duplicate. A deadlock or
    # serialization failure rolled everything back: trying again is safe too.
    for attempt in range(_ATTEMPTS):
        fresh = [
            new_event(item, prefix, now=now, max_data_bytes=max_data_bytes, event_id=event_id)
            for item, prefix, event_id in zip(submitted, prefixes, ids, strict=True)
        ]
        try:
            return await _record(fresh, given, prefixes, now)
        except Exception as exc:
            retry = isinstance(exc, IntegrityError) or current().is_transient_conflict(exc)
            if not retry or attempt == _ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")


async def _record(
    fresh: list[NewEvent], given: list[str], prefixes: list[str], now: datetime
) -> list[Recorded]:
    # One transaction, shared with concurrent ingestions where that saves commits (SQLite's
    # group commit).
    backend = current()
    return await backend.run(_recording(backend, fresh, given, prefixes, now), shared=True)


def _recording(
    backend: Backend,
    fresh: list[NewEvent],
    given: list[str],
    prefixes: list[str],
    now: datetime,
) -> Script[list[Recorded]]:
    """The transaction: sort out duplicates, place the rest on the channels they route to
    (whose rows it locks), write events, placements and the channels' new heads. Run by the
    backend, on SQLite in its thread: the batch is worked out there too."""
    batch = _Batch(fresh, prefixes, now, backend.bind_time)
    known = _known_query(given)
    batch.sort_out_duplicates((yield known) if known is not None else [])
    candidates = _candidates_query(batch.to_store)
    if candidates is not None:
        batch.place((yield candidates))
    yield batch.writes(backend)
    return batch.results()


class _Batch:
    """What one call records, worked out from what the database holds: which events are
    duplicates, and where the others go. No I/O here."""

    def __init__(
        self,
        fresh: list[NewEvent],
        prefixes: list[str],
        now: datetime,
        bind_time: Callable[[datetime], Any],
    ) -> None:
        self.fresh = fresh
        self.prefixes = prefixes
        self._bind_time = bind_time
        #: Each distinct time of the batch as the statements bind it, converted once: most
        #: events have none of their own, so their occurred_at is the batch's time.
        self._bound_times: dict[datetime, Any] = {}
        self.now = self.bound(now)
        self._results: list[Recorded | None] = [None] * len(fresh)
        #: (index in the call, event) of the events to store.
        self.stored: list[tuple[int, NewEvent]] = []
        self._placements: list[list[Any]] = []
        self._touched: dict[str, _Route] = {}

    def bound(self, moment: datetime) -> Any:
        value = self._bound_times.get(moment)
        if value is None:
            value = self._bound_times[moment] = self._bind_time(moment)
        return value

    @property
    def to_store(self) -> list[NewEvent]:
        return [event for _, event in self.stored]

    def sort_out_duplicates(self, known_rows: Sequence[Sequence[Any]]) -> None:
        """A known event_id sent again: a duplicate if unchanged, else EventIdConflict (also
        within the batch: its first occurrence is the one recorded). `known_rows` as
        `_known_query` selects them."""
        known: dict[str, NewEvent] = {
            event.event_id: event for event in map(_stored_event, known_rows)
        }
        for i, event in enumerate(self.fresh):
            previous = known.get(event.event_id)
            if previous is not None:
                if previous.fingerprint != event.fingerprint:
                    raise EventIdConflict(event.event_id, f"{self.prefixes[i]}event_id")
                self._results[i] = Recorded(event=previous, duplicate=True)
                continue
            known[event.event_id] = event
            self.stored.append((i, event))

    def place(self, candidate_rows: Sequence[Sequence[Any]]) -> None:
        """Give each stored event the next sequence on every open channel it routes to."""
        by_organisation, by_user = _routes(candidate_rows)
        for _, event in self.stored:
            placed = 0
            for route in (
                *by_organisation.get(event.organisation_id, ()),
                *by_user.get(event.user_id, ()),
            ):
                if event.event_type in route.event_types:
                    route.head += 1
                    self._touched[route.id] = route
                    self._placements.append([route.id, route.head, event.event_id, self.now])
                    placed += 1
            event.channel_count = placed

    def writes(self, backend: Backend) -> list[Statement]:
        # Each touched channel's row is updated once, in the same transaction as its
        # placements: channel.head_sequence is the head on every database, and the next
        # ingestion reads it from the row it locks (a locked row is read fresh after the
        # wait, where a subquery of the same SELECT would read the snapshot from before).
        heads = {route.id: route.head for route in self._touched.values()}
        return [
            *backend.insert_statements(
                "claim_event", _EVENT_COLUMNS, [self._event_row(event) for event in self.to_store]
            ),
            *backend.insert_statements("channel_event", _PLACEMENT_COLUMNS, self._placements),
            *backend.update_statements(
                "channel", "head_sequence", heads, also={"last_event_at": self.now}
            ),
        ]

    def _event_row(self, event: NewEvent) -> list[Any]:
        return [
            event.event_id,
            event.event_type,
            event.claim_id,
            event.organisation_id,
            event.user_id,
            event.actor_id,
            self.bound(event.occurred_at),
            self.now,
            event.data_json,
            event.fingerprint,
            event.channel_count,
        ]

    def results(self) -> list[Recorded]:
        placements: dict[str, list[Placement]] = {}
        for channel_id, sequence, event_id, _ in self._placements:
            placements.setdefault(event_id, []).append(Placement(channel_id, sequence))
        for i, event in self.stored:
            self._results[i] = Recorded(
                event=event,
                duplicate=False,
                placements=tuple(placements.get(event.event_id, ())),
            )
        return [result for result in self._results if result is not None]


def _known_query(given: list[str]) -> Select | None:
    """Already recorded events among the publisher's event ids (ids the server assigns are
    new by construction: nothing to look up for them)."""
    if not given:
        return None
    ids = padded(given)
    return Select(
        f"SELECT {', '.join(_EVENT_COLUMNS)} FROM claim_event "
        f"WHERE event_id IN ({', '.join('?' * len(ids))})",
        ids,
        _EVENT_COLUMNS,
    )


def _stored_event(values: Sequence[Any]) -> NewEvent:
    row = dict(zip(_EVENT_COLUMNS, values, strict=True))
    data = row["data"]
    data_json = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    occurred_at, recorded_at = python_time(row["occurred_at"]), python_time(row["recorded_at"])
    assert occurred_at is not None and recorded_at is not None  # NOT NULL columns
    return NewEvent(
        event_id=row["event_id"],
        event_type=row["event_type"],
        claim_id=row["claim_id"],
        organisation_id=row["organisation_id"],
        user_id=row["user_id"],
        actor_id=row["actor_id"],
        occurred_at=occurred_at,
        recorded_at=recorded_at,
        data=json.loads(data_json),
        data_json=data_json,
        fingerprint=row["fingerprint"],
        channel_count=int(row["channel_count"]),
    )


@dataclass(slots=True)
class _Route:
    """What routing needs of an open channel, and its head as this batch advances it."""

    id: str
    event_types: frozenset[str]
    head: int


_CANDIDATE_COLUMNS = (
    "id",
    "subscription_type",
    "organisation_id",
    "user_id",
    "event_types",
    "head",
)

#: Ordered by id: the order every transaction locks channel rows in (Backend.lock_rows).
_CANDIDATES = """
    SELECT id, subscription_type, organisation_id, user_id, event_types, head_sequence AS head
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


def _candidates_query(events: Sequence[NewEvent]) -> Select | None:
    """Open channels any of `events` may route to: rows of (id, subscription_type,
    organisation_id, user_id, event_types, head), locked against concurrent ingestion (the
    transaction updates their heads). One plain query: no model objects for a batch that
    may touch thousands of channels.
    """
    if not events:
        return None
    organisations = padded(sorted({event.organisation_id for event in events}))
    users = padded(sorted({event.user_id for event in events}))
    query = _CANDIDATES.format(
        organisations=", ".join("?" * len(organisations)),
        users=", ".join("?" * len(users)),
    )
    return Select(query, [*organisations, *users], _CANDIDATE_COLUMNS, lock=True)


def _routes(
    rows: Sequence[Sequence[Any]],
) -> tuple[dict[str, list[_Route]], dict[str, list[_Route]]]:
    """The candidate channels (rows as `_candidates_query` selects them) by organisation and
    by user."""
    by_organisation: dict[str, list[_Route]] = {}
    by_user: dict[str, list[_Route]] = {}
    for channel_id, subscription_type, organisation_id, user_id, types, head in rows:
        route = _Route(
            channel_id,
            _event_types(types if isinstance(types, str) else json.dumps(types)),
            int(head),
        )
        if subscription_type == SubscriptionType.ORGANISATION_CLAIMS:
            by_organisation.setdefault(organisation_id, []).append(route)
        else:
            by_user.setdefault(user_id, []).append(route)
    return by_organisation, by_user
