"""Reading the durable per-channel history, within its retention bounds, and keeping the
channel's delivery positions and status.

A channel's events are its feed's after the channel's offset (models.event.Feed): its
sequence n is the feed's position `feed_offset + n`. Retention keeps a channel's newest
`max_events`, which are among its feed's newest `max_events`, so pruning works per feed."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from tortoise import Tortoise
from tortoise.backends.base.client import BaseDBAsyncClient

from claims_realtime.models.backends import Backend, current
from claims_realtime.models.channel import Channel
from claims_realtime.models.clock import utcnow
from claims_realtime.models.event import FeedEvent, StoredEvent
from claims_realtime.models.routing import keeps_routes
from claims_realtime.models.sql import Script, Select, padded
from claims_realtime.models.subscriptions import open_channel


@dataclass(frozen=True)
class Retention:
    """How much history a channel keeps: its newest `max_events`, none older than `ttl`."""

    max_events: int
    ttl_seconds: float

    def cutoff(self, now: datetime | None = None) -> datetime:
        return (now or utcnow()) - timedelta(seconds=self.ttl_seconds)

    def lowest_kept(self, head_sequence: int) -> int:
        return max(1, head_sequence - self.max_events + 1)


@dataclass(frozen=True)
class Resumption:
    """Reading a channel after sequence `after`: where the read starts and what retention
    lost on the way. One rule for a socket's `recovery` and for a REST page of history."""

    after: int
    head: int
    #: The oldest kept sequence (`first_available`; head + 1 when none is kept).
    first_available: int

    @property
    def start(self) -> int:
        """The read continues after this sequence: `after`, or later if history lost some."""
        return max(self.after, self.first_available - 1)

    @property
    def unavailable(self) -> int:
        """Events after `after` that retention no longer holds."""
        return self.start - self.after

    @property
    def recovered(self) -> bool:
        return self.unavailable == 0


async def first_available(channel: Channel, retention: Retention) -> int:
    """The oldest sequence still replayable on `channel` (head + 1 when none is)."""
    head, offset = channel.head_sequence, int(channel.feed_offset)
    row = (
        await FeedEvent.filter(
            feed_id=channel.feed_id,
            position__gte=offset + retention.lowest_kept(head),
            position__lte=offset + head,
            recorded_at__gte=retention.cutoff(),
        )
        .order_by("position")
        .first()
        .values_list("position", flat=True)
    )
    # Tortoise types a flat values_list as a tuple; at run time it is the bare value.
    return int(row) - offset if row is not None else head + 1  # type: ignore[call-overload,no-any-return]


#: The channel's events after sequence `?` up to `?`, as positions of its feed: after its
#: offset, and up to where it was closed.
_CHANNEL_EVENTS = (
    " FROM channel c JOIN feed_event fe ON fe.feed_id = c.feed_id"
    " JOIN claim_event e ON e.event_id = fe.event_id"
    " WHERE c.id = ? AND fe.position > c.feed_offset + ? AND fe.position <= c.feed_offset + ?"
    " AND fe.position <= COALESCE(c.closed_position, fe.position) AND fe.recorded_at >= ?"
    " ORDER BY fe.position LIMIT ?"
)
_READ_AFTER = (
    "SELECT fe.position - c.feed_offset AS sequence, e.event_id, e.event_type, e.claim_id,"
    " e.organisation_id, e.user_id, e.actor_id, e.occurred_at, e.data, fe.recorded_at"
    + _CHANNEL_EVENTS
)
_READ_COLUMNS = (
    "sequence",
    "event_id",
    "event_type",
    "claim_id",
    "organisation_id",
    "user_id",
    "actor_id",
    "occurred_at",
    "data",
    "recorded_at",
)
#: No bound on a read's last sequence (`up_to`): larger than any sequence.
_NO_BOUND = 2**62


async def read_after(
    channel_id: str, after: int, limit: int, retention: Retention, *, up_to: int | None = None
) -> list[StoredEvent]:
    """Up to `limit` kept events of the channel after sequence `after` (and at most `up_to`),
    in order."""
    backend = current()
    parameters = [
        channel_id,
        after,
        _NO_BOUND if up_to is None else up_to,
        backend.bind_time(retention.cutoff()),
        limit,
    ]
    rows = await backend.read(Select(_READ_AFTER, parameters, _READ_COLUMNS))
    read_time = backend.read_time
    return [
        StoredEvent(
            int(r[0]), r[1], r[2], r[3], r[4], r[5], r[6], read_time(r[7]), r[8], read_time(r[9])
        )
        for r in rows
    ]


_WINDOW = (
    "SELECT * FROM (SELECT c.id AS channel_id, fe.position - c.feed_offset AS sequence,"
    " e.event_id, e.event_type, e.claim_id, e.organisation_id, e.user_id, e.actor_id,"
    " e.occurred_at, e.data, fe.recorded_at" + _CHANNEL_EVENTS + ") AS w{index}"
)


async def read_after_each(
    starts: Mapping[str, int], limit: int, retention: Retention
) -> dict[str, list[StoredEvent]]:
    """For each channel, up to `limit` kept events after its start, in order: read_after for
    many channels in one query (the webhook dispatcher reads every channel it leased)."""
    found: dict[str, list[StoredEvent]] = {channel_id: [] for channel_id in starts}
    if not starts:
        return found
    backend = current()
    cutoff = backend.bind_time(retention.cutoff())
    # Padded with a channel that does not exist to a power of two of windows: a few
    # statement texts, each prepared once.
    windows = list(starts.items())
    windows += [("", 0)] * ((1 << (len(windows) - 1).bit_length()) - len(windows))
    sql = " UNION ALL ".join(_WINDOW.format(index=index) for index in range(len(windows)))
    parameters = [
        value
        for channel_id, after in windows
        for value in (channel_id, after, _NO_BOUND, cutoff, limit)
    ]
    rows = await backend.read(Select(sql, parameters, ("channel_id", *_READ_COLUMNS)))
    read_time = backend.read_time
    for r in rows:
        found[r[0]].append(
            StoredEvent(
                int(r[1]),
                r[2],
                r[3],
                r[4],
                r[5],
                r[6],
                r[7],
                read_time(r[8]),
                r[9],
                read_time(r[10]),
            )
        )
    for events in found.values():
        events.sort(key=lambda event: event.sequence)  # a union's rows come in no set order
    return found


@dataclass(frozen=True)
class HistoryPage:
    """One page of a channel's kept events, and where history stands."""

    channel_id: str
    events: list[StoredEvent]
    head_sequence: int
    first_available_sequence: int
    unavailable: int
    #: The `after` of the next page; None when this one reached the head.
    next_after: int | None


async def read_page(channel_id: str, after: int, limit: int, retention: Retention) -> HistoryPage:
    """Up to `limit` kept events after sequence `after` of an open channel (ChannelNotFound,
    ChannelClosed otherwise), events retention lost on the way counted as a socket's
    `recovery` counts them.

    The page stops at the head read first: a channel's head and its placements commit
    together, so every sequence up to it is visible, and events recorded meanwhile are left
    whole to the next page. Paging on with `next_after` sees each kept event exactly once.
    """
    channel = await open_channel(channel_id)
    head = int(channel.head_sequence)
    window = Resumption(after, head, await first_available(channel, retention))
    events = await read_after(channel_id, window.start, limit, retention, up_to=head)
    last = events[-1].sequence if events else None
    more = len(events) == limit and last is not None and last < head
    return HistoryPage(
        channel_id=channel_id,
        events=events,
        head_sequence=head,
        first_available_sequence=window.first_available,
        unavailable=window.unavailable,
        next_after=int(last) if more and last is not None else None,
    )


#: Channels per query when reading heads (bound parameters stay well under any limit).
_HEADS_CHUNK = 512
_HEADS = (
    "SELECT c.id, COALESCE(c.closed_position, f.head) - c.feed_offset AS head, c.closed_at"
    " FROM channel c JOIN feed f ON f.id = c.feed_id WHERE c.id IN ({ids})"
)
_HEADS_COLUMNS = ("id", "head", "closed_at")


async def heads(channel_ids: Sequence[str]) -> dict[str, tuple[int, datetime | None]]:
    """(head sequence, closed_at) of each channel that exists."""
    found: dict[str, tuple[int, datetime | None]] = {}
    ids = list(dict.fromkeys(channel_ids))
    backend = current()
    for start in range(0, len(ids), _HEADS_CHUNK):
        chunk = padded(ids[start : start + _HEADS_CHUNK])
        rows = await backend.read(
            Select(_HEADS.format(ids=", ".join("?" * len(chunk))), chunk, _HEADS_COLUMNS)
        )
        for cid, head, closed in rows:
            found[str(cid)] = (int(head), None if closed is None else backend.read_time(closed))
    return found


async def save_positions(positions: Mapping[str, tuple[int | None, int | None]]) -> None:
    """Move channels' (delivered, confirmed) sequences forward, never back.

    Every flush interval, under load, for every channel: each row rewritten once for both,
    in a transaction shared with ingestion's (on SQLite, one COMMIT and one trip to the
    writer fewer, each of which ingestion would otherwise wait behind)."""
    changed = {cid: pair for cid, pair in positions.items() if pair != (None, None)}
    if not changed:
        return
    await current().run(_positions_script, changed, shared=True)


@keeps_routes
def _positions_script(
    backend: Backend, changed: Mapping[str, tuple[int | None, int | None]]
) -> Script[None]:
    """Positions only: no channel's status, feed or offset, no feed's head."""
    yield [
        *backend.lock_rows("channel", list(changed)),
        *backend.advance_statements(
            "channel", ("delivered_sequence", "confirmed_sequence"), changed
        ),
    ]


#: Rows one prune statement deletes at most: a backlog (the first prune after a long stop)
#: goes in many short write transactions with ingestion's in between, not in one that holds
#: every writer off until it is done.
PRUNE_CHUNK = 5_000


async def prune(retention: Retention, *, chunk: int = PRUNE_CHUNK) -> int:
    """Delete history beyond retention; answer how many feed positions went.

    Reads already ignore what lies beyond the bounds, so this only reclaims space.
    """
    backend = current()
    connection = Tortoise.get_connection("default")
    cutoff = backend.bind_time(retention.cutoff())
    # Each feed's newest position stays, however old, as each channel's newest placement
    # did before feeds: prune removes no more than it did. Reads stop at the cutoff, so no
    # client sees it.
    expired = await _delete_in_chunks(
        backend,
        connection,
        "feed_event",
        "id",
        "SELECT fe.id FROM feed_event fe WHERE fe.recorded_at < ? AND fe.position < "
        "(SELECT f.head FROM feed f WHERE f.id = fe.feed_id)",
        [cutoff],
        chunk,
    )
    await _delete_in_chunks(
        backend,
        connection,
        "claim_event",
        "event_id",
        "SELECT event_id FROM claim_event WHERE recorded_at < ?",
        [cutoff],
        chunk,
    )
    # max_events is an int from settings: formatting it in is safe on any database.
    # Driven from the feeds that have more than that, each one's positions found by
    # (feed_id, position): joined the other way round, SQLite read the whole history's
    # index every run, with the writers waiting. CROSS JOIN is SQLite's way of fixing the
    # order; PostgreSQL plans it as the inner join it is.
    keep = int(retention.max_events)
    overflow = await _delete_in_chunks(
        backend,
        connection,
        "feed_event",
        "id",
        "SELECT fe.id FROM feed f CROSS JOIN feed_event fe "
        f"WHERE fe.feed_id = f.id AND f.head > {keep} AND fe.position <= f.head - {keep}",
        [],
        chunk,
    )
    return expired + overflow


async def _delete_in_chunks(
    backend: Backend,
    connection: BaseDBAsyncClient,
    table: str,
    key: str,
    selection: str,
    parameters: list[Any],
    chunk: int,
) -> int:
    """DELETE the rows `selection` picks (their `key`), `chunk` at a time; answer how many."""
    query = backend.sql(f"DELETE FROM {table} WHERE {key} IN ({selection} LIMIT {int(chunk)})")
    removed = 0
    while True:
        count, _ = await connection.execute_query(query, parameters)
        removed += int(count)
        if count < chunk:
            return removed
        await asyncio.sleep(0)  # ingestion waiting for the database goes first
