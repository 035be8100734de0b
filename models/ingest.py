"""Recording claim events: route each to its feeds, give it the next position on each (and so
the next sequence on each of their channels), all in one transaction, committed before anyone
is told it was accepted."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from tortoise.exceptions import IntegrityError

from claims_realtime.models.backends import Backend, current
from claims_realtime.models.clock import utcnow
from claims_realtime.models.credentials import new_event_ids
from claims_realtime.models.errors import EventIdConflict
from claims_realtime.models.event import NewEvent
from claims_realtime.models.fields import python_time
from claims_realtime.models.routing import (
    RoutedFeed,
    Routes,
    channels_query,
    feeds_query,
    keeps_routes,
)
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
_FEED_EVENT_COLUMNS = ("feed_id", "position", "event_id", "recorded_at")


#: (channel_id, sequence): the event is number `sequence` on channel `channel_id`. A plain
#: tuple: one is built per placement in the writer process and pickled back, and a named
#: tuple costs a Python-level call to build and another to pickle (docs/performance-log.md).
Placement = tuple[str, int]


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
    outcomes = await current().run(_recording, fresh, given, prefixes, now, shared=True)
    return [_recorded(event, outcome) for event, outcome in zip(fresh, outcomes, strict=True)]


#: What the transaction answers for each event submitted, in order: the stored event of a
#: duplicate, or where a new one was placed. No more: the answer may cross from another
#: process (SQLite's writer), and the caller has the new events already.
Outcome = NewEvent | tuple[Placement, ...]


def _recorded(event: NewEvent, outcome: Outcome) -> Recorded:
    if isinstance(outcome, NewEvent):
        return Recorded(event=outcome, duplicate=True)
    event.channel_count = len(outcome)
    return Recorded(event=event, duplicate=False, placements=outcome)


@keeps_routes
def _recording(
    backend: Backend,
    fresh: list[NewEvent],
    given: list[str],
    prefixes: list[str],
    now: datetime,
) -> Script[list[Outcome]]:
    """The transaction: sort out duplicates, place the rest on the feeds they route to (whose
    rows it locks, reading those the backend's kept routes lack), write events, feed
    positions and the feeds' new heads. Run by the backend, on a SQLite file in its writer
    process: the batch is worked out there too."""
    batch = _Batch(fresh, prefixes, now, backend.bind_time)
    known = _known_query(given)
    batch.sort_out_duplicates((yield known) if known is not None else [])
    routes = backend.kept_routes if backend.kept_routes is not None else Routes()
    missing = routes.missing(batch.to_store)
    if missing is not None:
        # The feeds are locked first and their channels read after, in a statement of its
        # own: a channel created meanwhile committed its offset before we got its feed's
        # lock, so it is seen here (PostgreSQL reads each statement afresh); a channel on a
        # feed we did not lock is newer than these events.
        locked = yield feeds_query(*missing)
        channels = (yield channels_query(locked)) if locked else []
        routes.learn(*missing, locked, channels)
    batch.place(routes)
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
        self._outcomes: list[Outcome] = [()] * len(fresh)
        #: (index in the call, event) of the events to store.
        self.stored: list[tuple[int, NewEvent]] = []
        self._positions: list[list[Any]] = []
        self._placements: dict[str, tuple[Placement, ...]] = {}
        self._touched: dict[int, RoutedFeed] = {}

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
                self._outcomes[i] = previous
                continue
            known[event.event_id] = event
            self.stored.append((i, event))

    def place(self, routes: Routes) -> None:
        """Give each stored event the next position on every feed it routes to that has an
        open channel, and so the next sequence on each of those channels."""
        for _, event in self.stored:
            placements: list[Placement] = []
            for feed in routes.feeds(event):
                if event.event_type in feed.event_types:
                    feed.head += 1
                    self._touched[feed.id] = feed
                    self._positions.append([feed.id, feed.head, event.event_id, self.now])
                    placements += [
                        (channel_id, feed.head - offset) for channel_id, offset in feed.channels
                    ]
            event.channel_count = len(placements)
            self._placements[event.event_id] = tuple(placements)

    def writes(self, backend: Backend) -> list[Statement]:
        # Each touched feed's row is updated once, in the same transaction as its positions:
        # feed.head is the head on every database, and the next ingestion reads it from the
        # row it locks (a locked row is read fresh after the wait, where a subquery of the
        # same SELECT would read the snapshot from before).
        heads = {feed.id: feed.head for feed in self._touched.values()}
        return [
            *backend.insert_statements(
                "claim_event", _EVENT_COLUMNS, [self._event_row(event) for event in self.to_store]
            ),
            *backend.insert_statements("feed_event", _FEED_EVENT_COLUMNS, self._positions),
            *backend.update_statements(
                "feed", "head", heads, also={"last_event_at": self.now}, integer_ids=True
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

    def results(self) -> list[Outcome]:
        for i, event in self.stored:
            self._outcomes[i] = self._placements[event.event_id]
        return self._outcomes


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
