"""Recording claim events: route each to its channels and give it the next sequence on each,
all in one transaction, committed before anyone is told it was accepted."""

from __future__ import annotations

import functools
import hashlib
import json
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.exceptions import IntegrityError
from tortoise.transactions import in_transaction

from claims_realtime.models.channel import SubscriptionType
from claims_realtime.models.clock import utcnow
from claims_realtime.models.credentials import new_event_ids
from claims_realtime.models.db import (
    Statement,
    dialect,
    execute_all,
    insert_statements,
    is_transient_conflict,
    padded,
    sql_for,
    update_statements,
)
from claims_realtime.models.errors import EventIdConflict, InvalidInput
from claims_realtime.models.event import ClaimEvent, NewEvent
from claims_realtime.models.group_commit import sqlite_group_transaction
from claims_realtime.models.history import head_sql

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


#: json.dumps with these options builds an encoder per call: built once here (same output).
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)
_COMPACT = json.JSONEncoder(separators=(",", ":"))
_COMPACT_UTF8 = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


#: The fingerprint of an event whose id the server assigned. A submission naming that id
#: later is never the same submission (the first named none), so it is an EventIdConflict
#: either way; not working one out saves the canonical JSON of every such event and its
#: hash (py-spy, user workload at 5,000 deliveries/s: 5% of the GIL's samples).
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
    return moment.astimezone(UTC)


def _data_json(data: Any, field: str, max_data_bytes: int) -> str:
    """`data` as stored (compact ASCII JSON), or InvalidInput if its UTF-8 JSON is too big."""
    text = _COMPACT.encode(data)
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


def _new_event(
    submitted: Mapping[str, Any], field: str, *, now: datetime, max_data_bytes: int, event_id: str
) -> NewEvent:
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
    # the primary key; trying again finds the first one's row, a duplicate. A PostgreSQL
    # deadlock or serialization failure rolled everything back: trying again is safe too.
    for attempt in range(_ATTEMPTS):
        fresh = [
            _new_event(item, prefix, now=now, max_data_bytes=max_data_bytes, event_id=event_id)
            for item, prefix, event_id in zip(submitted, prefixes, ids, strict=True)
        ]
        try:
            return await _record(fresh, given, prefixes, now)
        except Exception as exc:
            retry = isinstance(exc, IntegrityError) or is_transient_conflict(exc)
            if not retry or attempt == _ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")


async def _record(
    fresh: list[NewEvent], given: list[str], prefixes: list[str], now: datetime
) -> list[Recorded]:
    if dialect() == "sqlite":
        # In SQLite's thread, in one trip, sharing its COMMIT with concurrent ingestions
        # (see models.group_commit).
        return await sqlite_group_transaction(
            lambda db: _record_sync(db, fresh, given, prefixes, now)
        )
    # PostgreSQL: the same steps, each statement a round trip.
    async with in_transaction() as connection:
        batch = _Batch(fresh, prefixes, now, _field_value)
        known = _known_query(given)
        if known is not None:
            batch.sort_out_duplicates((await connection.execute_query(*_pg(connection, known)))[1])
        else:
            batch.sort_out_duplicates([])
        candidates = _candidates_query(batch.to_store, "postgres")
        if candidates is not None:
            rows = (await connection.execute_query(*_pg(connection, candidates)))[1]
            batch.place([list(row.values()) for row in rows])  # in the query's column order
        await execute_all(connection, batch.writes("postgres"))
    return batch.results()


def _record_sync(
    db: sqlite3.Connection,
    fresh: list[NewEvent],
    given: list[str],
    prefixes: list[str],
    now: datetime,
) -> list[Recorded]:
    """`_record` on SQLite, run in its thread inside the transaction."""
    batch = _Batch(fresh, prefixes, now, _sqlite_value)
    known = _known_query(given)
    batch.sort_out_duplicates(db.execute(*known).fetchall() if known is not None else [])
    candidates = _candidates_query(batch.to_store, "sqlite")
    if candidates is not None:
        (rows,) = db.execute(*candidates).fetchone()
        batch.place(json.loads(rows))
    for statement in batch.writes("sqlite"):
        db.execute(*statement)
    return batch.results()


def _pg(connection: BaseDBAsyncClient, statement: Statement) -> Statement:
    return sql_for(connection, statement[0]), statement[1]


class _Batch:
    """What one call records, worked out from what the database holds: which events are
    duplicates, and where the others go. No I/O here: both paths above share it."""

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

    def sort_out_duplicates(self, known_rows: Sequence[Mapping[str, Any]]) -> None:
        """A known event_id sent again: a duplicate if unchanged, else EventIdConflict (also
        within the batch: its first occurrence is the one recorded)."""
        known: dict[str, NewEvent] = {
            str(row["event_id"]): _stored_event(row) for row in known_rows
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

    def writes(self, dialect: str) -> list[Statement]:
        statements = [
            *insert_statements(
                dialect,
                "claim_event",
                _EVENT_COLUMNS,
                [self._event_row(event) for event in self.to_store],
            ),
            *insert_statements(dialect, "channel_event", _PLACEMENT_COLUMNS, self._placements),
        ]
        if dialect == "sqlite":
            # The placements are the heads (models.history.head_sql): no channel row is
            # rewritten, an UPDATE that was ~15% of SQLite's time per event
            # (docs/performance-log.md#sqlite-statements).
            return statements
        # PostgreSQL: the column stays current. The candidates' row locks serialise
        # ingestions there, and a locked row is read fresh after the wait, where a
        # subquery in the same SELECT would read the snapshot from before it.
        heads = {route.id: route.head for route in self._touched.values()}
        return [
            *statements,
            *update_statements(
                dialect, "channel", "head_sequence", heads, also={"last_event_at": self.now}
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


def _known_query(given: list[str]) -> Statement | None:
    """Already recorded events among the publisher's event ids (ids the server assigns are
    new by construction: nothing to look up for them)."""
    if not given:
        return None
    ids = padded(given)
    return (
        f"SELECT {', '.join(_EVENT_COLUMNS)} FROM claim_event "
        f"WHERE event_id IN ({', '.join('?' * len(ids))})",
        ids,
    )


def _stored_event(row: Mapping[str, Any]) -> NewEvent:
    fields_map = ClaimEvent._meta.fields_map
    data = row["data"]
    data_json = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    return NewEvent(
        event_id=row["event_id"],
        event_type=row["event_type"],
        claim_id=row["claim_id"],
        organisation_id=row["organisation_id"],
        user_id=row["user_id"],
        actor_id=row["actor_id"],
        occurred_at=fields_map["occurred_at"].to_python_value(row["occurred_at"]),
        recorded_at=fields_map["recorded_at"].to_python_value(row["recorded_at"]),
        data=json.loads(data_json),
        data_json=data_json,
        fingerprint=row["fingerprint"],
        channel_count=int(row["channel_count"]),
    )


def _sqlite_value(moment: datetime) -> Any:
    """`moment` as SQLite gets it bound: Tortoise's field conversion, then the sqlite3
    adapter Tortoise registers for datetimes. Done once per distinct time of a batch: bound
    as a datetime, the adapter is a Python call per row, in SQLite's thread (2.3 against
    0.55 us per placement row in a microbenchmark; an organisation event has a hundred)."""
    value = _field_value(moment)
    adapt = sqlite3.adapters.get((type(value), sqlite3.PrepareProtocol))
    return adapt(value) if adapt is not None else value


def _field_value(moment: datetime) -> Any:
    """`moment` as Tortoise converts a DatetimeField's value for the database."""
    return ClaimEvent._meta.fields_map["recorded_at"].to_db_value(moment, ClaimEvent)


@dataclass(slots=True)
class _Route:
    """What routing needs of an open channel, and its head as this batch advances it."""

    id: str
    event_types: frozenset[str]
    head: int


_CANDIDATES = """
    SELECT id, subscription_type, organisation_id, user_id, event_types, {head} AS head
    FROM channel c
    WHERE status <> 'closed' AND (
        (subscription_type = 'organisation_claims' AND organisation_id IN ({organisations}))
        OR (subscription_type = 'user_claims' AND user_id IN ({users})))
    ORDER BY id
"""

#: SQLite: the candidates as one row, a JSON array of their rows. sqlite3 lets the GIL go
#: for every row it steps to, and under load each time cost a wait for the event loop
#: thread to give it back (docs/performance-log.md#sqlite-statements). The order within does
#: not matter on SQLite (ORDER BY is for PostgreSQL's row locks).
_CANDIDATES_AS_ONE_ROW = """
    SELECT json_group_array(json_array(
        id, subscription_type, organisation_id, user_id, event_types, head))
    FROM ({candidates})
"""


@functools.lru_cache(maxsize=64)
def _event_types(raw: str) -> frozenset[str]:
    # Most channels share a handful of event_types lists: parse each one once.
    return frozenset(json.loads(raw))


def _candidates_query(events: Sequence[NewEvent], dialect: str) -> Statement | None:
    """Open channels any of `events` may route to: rows of (id, subscription_type,
    organisation_id, user_id, event_types, head); on SQLite one row holding them as JSON.

    Locked against concurrent ingestion (row locks, in id order, on PostgreSQL; SQLite
    serialises writers anyway). One plain query: no model objects for a batch that may
    touch thousands of channels.
    """
    if not events:
        return None
    organisations = padded(sorted({event.organisation_id for event in events}))
    users = padded(sorted({event.user_id for event in events}))
    query = _CANDIDATES.format(
        head=head_sql(dialect),
        organisations=", ".join("?" * len(organisations)),
        users=", ".join("?" * len(users)),
    )
    if dialect == "sqlite":
        query = _CANDIDATES_AS_ONE_ROW.format(candidates=query)
    else:
        query += " FOR UPDATE"
    return query, [*organisations, *users]


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
