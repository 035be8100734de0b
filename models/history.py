"""Reading the durable per-channel history, within its retention bounds, and keeping the
channel's delivery positions and status."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from tortoise import connections
from tortoise.backends.base.client import BaseDBAsyncClient

from claims_realtime.models.channel import Channel
from claims_realtime.models.clock import utcnow
from claims_realtime.models.db import (
    dialect,
    execute_in_transaction,
    lock_rows_statement,
    sql_for,
    update_statements,
)
from claims_realtime.models.event import ChannelEvent


@dataclass(frozen=True)
class Retention:
    """How much history a channel keeps: its newest `max_events`, none older than `ttl`."""

    max_events: int
    ttl_seconds: float

    def cutoff(self, now: datetime | None = None) -> datetime:
        return (now or utcnow()) - timedelta(seconds=self.ttl_seconds)

    def lowest_kept(self, head_sequence: int) -> int:
        return max(1, head_sequence - self.max_events + 1)


async def first_available(channel: Channel, retention: Retention) -> int:
    """The oldest sequence still replayable on `channel` (head + 1 when none is)."""
    row = (
        await ChannelEvent.filter(
            channel_id=channel.id,
            sequence__gte=retention.lowest_kept(channel.head_sequence),
            recorded_at__gte=retention.cutoff(),
        )
        .order_by("sequence")
        .first()
        .values_list("sequence", flat=True)
    )
    # Tortoise types a flat values_list as a tuple; at run time it is the bare value.
    return int(row) if row is not None else channel.head_sequence + 1  # type: ignore[call-overload,no-any-return]


async def read_after(
    channel_id: str, after: int, limit: int, retention: Retention
) -> list[ChannelEvent]:
    """Up to `limit` kept events of the channel after sequence `after`, in order."""
    return list(
        await ChannelEvent.filter(
            channel_id=channel_id, sequence__gt=after, recorded_at__gte=retention.cutoff()
        )
        .order_by("sequence")
        .limit(limit)
        .select_related("event")
    )


def head_sql(dialect: str, channel: str = "c") -> str:
    """SQL for the head sequence of the channel row aliased `channel`.

    On SQLite a channel's head is its newest placement's sequence: history keeps every
    channel's newest placement whatever its age (see `prune`), so no column needs
    rewriting by every ingestion, which cost a channel row per channel per batch
    (models.ingest). The `head_sequence` column still counts there as a floor: the head of
    a channel whose every placement was pruned before history kept the newest one. On
    PostgreSQL ingestion keeps the column current (its row lock is what serialises
    concurrent ingestions), so the column is the head."""
    if dialect != "sqlite":
        return f"{channel}.head_sequence"
    newest = f"(SELECT max(ce.sequence) FROM channel_event ce WHERE ce.channel_id = {channel}.id)"
    return f"max({channel}.head_sequence, coalesce({newest}, 0))"


def last_event_sql(dialect: str, channel: str = "c") -> str:
    """SQL for when the newest event of the channel row aliased `channel` was recorded
    (as `head_sql`: on SQLite from the newest placement, on PostgreSQL the column)."""
    if dialect != "sqlite":
        return f"{channel}.last_event_at"
    return (
        "coalesce((SELECT ce.recorded_at FROM channel_event ce "
        f"WHERE ce.channel_id = {channel}.id ORDER BY ce.sequence DESC LIMIT 1), "
        f"{channel}.last_event_at)"
    )


#: Channels per query when reading heads (bound parameters stay well under any limit).
_HEADS_CHUNK = 500


async def heads(channel_ids: Sequence[str]) -> dict[str, tuple[int, datetime | None]]:
    """(head sequence, closed_at) of each channel."""
    return {cid: (head, closed) for cid, (head, _, closed) in (await _heads(channel_ids)).items()}


async def with_current_heads(channels: Sequence[Channel]) -> None:
    """Set the `head_sequence` and `last_event_at` of channels just loaded to what their
    history says: on SQLite the columns may lag (see `head_sql`); on PostgreSQL they are
    current as loaded, and nothing is read again."""
    if not channels or connections.get("default").capabilities.dialect != "sqlite":
        return
    current = await _heads([channel.id for channel in channels])
    for channel in channels:
        if channel.id in current:  # (channels are closed, never deleted)
            channel.head_sequence, channel.last_event_at, _ = current[channel.id]


async def _heads(
    channel_ids: Sequence[str],
) -> dict[str, tuple[int, datetime | None, datetime | None]]:
    """(head sequence, last_event_at, closed_at) of each channel that exists."""
    connection = connections.get("default")
    sql = connection.capabilities.dialect
    as_time = Channel._meta.fields_map["last_event_at"].to_python_value  # a DatetimeField
    found: dict[str, tuple[int, datetime | None, datetime | None]] = {}
    ids = list(dict.fromkeys(channel_ids))
    for start in range(0, len(ids), _HEADS_CHUNK):
        chunk = ids[start : start + _HEADS_CHUNK]
        query = sql_for(
            connection,
            f"SELECT c.id, {head_sql(sql)}, {last_event_sql(sql)}, c.closed_at FROM channel c "
            f"WHERE c.id IN ({', '.join('?' * len(chunk))})",
        )
        _, rows = await connection.execute_query(query, chunk)
        for row in rows:
            # A sqlite3.Row unpacks to its values; asyncpg's Record (like a dict) gives
            # them by .values().
            cid, head, last, closed = row if isinstance(row, sqlite3.Row) else row.values()
            found[str(cid)] = (int(head), as_time(last), as_time(closed))
    return found


async def save_positions(positions: Mapping[str, tuple[int | None, int | None]]) -> None:
    """Move channels' (delivered, confirmed) sequences forward, never back."""
    delivered = {cid: d for cid, (d, _) in positions.items() if d is not None}
    confirmed = {cid: c for cid, (_, c) in positions.items() if c is not None}
    if not delivered and not confirmed:
        return
    sql = dialect()
    statements = [
        statement
        for column, values in (
            ("delivered_sequence", delivered),
            ("confirmed_sequence", confirmed),
        )
        for statement in update_statements(sql, "channel", column, values, forward_only=True)
    ]
    if sql != "sqlite":  # (SQLite has one writer at a time: nothing to order)
        statements.insert(0, lock_rows_statement("channel", [*delivered, *confirmed]))
    await execute_in_transaction(statements)


#: Rows one prune statement deletes at most: a backlog (the first prune after a long stop)
#: goes in many short write transactions with ingestion's in between, not in one that holds
#: every writer off until it is done.
PRUNE_CHUNK = 5_000


async def prune(retention: Retention, *, chunk: int = PRUNE_CHUNK) -> int:
    """Delete history beyond retention; answer how many placements went.

    Reads already ignore what lies beyond the bounds, so this only reclaims space.
    """
    connection = connections.get("default")
    cutoff = ChannelEvent._meta.fields_map["recorded_at"].to_db_value(
        retention.cutoff(), ChannelEvent
    )
    # Each channel's newest placement stays, however old: it is the channel's head (see
    # head_sql). Reads stop at the cutoff, so a client never sees it.
    expired = await _delete_in_chunks(
        connection,
        "channel_event",
        "id",
        "SELECT ce.id FROM channel_event ce WHERE ce.recorded_at < ? AND ce.sequence < "
        "(SELECT max(n.sequence) FROM channel_event n WHERE n.channel_id = ce.channel_id)",
        [cutoff],
        chunk,
    )
    await _delete_in_chunks(
        connection,
        "claim_event",
        "event_id",
        "SELECT event_id FROM claim_event WHERE recorded_at < ?",
        [cutoff],
        chunk,
    )
    # max_events is an int from settings: formatting it in is safe and dialect-neutral.
    # Driven from the channels that have more than that, each one's placements found by
    # (channel_id, sequence): joined the other way round, SQLite read the whole history's
    # index every run, with the writers waiting.
    # (MATERIALIZED: each channel's head worked out once, not once per placement joined.)
    keep = int(retention.max_events)
    head = head_sql(connection.capabilities.dialect)
    overflow = await _delete_in_chunks(
        connection,
        "channel_event",
        "id",
        f"WITH h AS MATERIALIZED (SELECT c.id, {head} AS head FROM channel c) "
        "SELECT ce.id FROM h JOIN channel_event ce ON ce.channel_id = h.id "
        f"WHERE h.head > {keep} AND ce.sequence <= h.head - {keep}",
        [],
        chunk,
    )
    return expired + overflow


async def _delete_in_chunks(
    connection: BaseDBAsyncClient,
    table: str,
    key: str,
    selection: str,
    parameters: list[Any],
    chunk: int,
) -> int:
    """DELETE the rows `selection` picks (their `key`), `chunk` at a time; answer how many."""
    query = sql_for(
        connection, f"DELETE FROM {table} WHERE {key} IN ({selection} LIMIT {int(chunk)})"
    )
    removed = 0
    while True:
        count, _ = await connection.execute_query(query, parameters)
        removed += int(count)
        if count < chunk:
            return removed
        await asyncio.sleep(0)  # ingestion waiting for the database goes first
