"""The transactional outbox in the claims service's PostgreSQL database: its tables, its
trigger, and the statements the consumer (realtime.outbox) runs on them.

Plain asyncpg on a connection of its own, not Tortoise: the outbox may live in another
database than ours, and LISTEN and a session advisory lock need one connection held for as
long as the consumer runs.

    <table>            id bigserial, event jsonb, created_at   rows waiting to be consumed
    <table>_rejected   the same, rejected_at, problem           rows that failed validation
    NOTIFY <table>     once per INSERT statement                wakes the consumer

`table` is spliced into the SQL: Settings only accepts a plain identifier
(settings.OUTBOX_TABLE_PATTERN), and every statement here quotes it.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

#: The prefix of the event ids derived from outbox rows (see event_id_for).
DERIVED_EVENT_ID_PREFIX = "evt_outbox_"
#: Base32 digits of the derived ids: 26 are 130 bits of the row identity's hash.
_DERIVED_DIGITS = 26
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class OutboxRow:
    """One waiting row: `event` as the claims service wrote it (any JSON value)."""

    id: int
    event: Any
    created_at: datetime


def rejected_table(table: str) -> str:
    return f"{table}_rejected"


def lock_key(table: str) -> int:
    """The advisory lock key of the consumer of `table`: fixed, so that every process of
    ours asks for the same one, and derived from the name, so that two deployments using two
    outbox tables in one database do not wait on each other (a signed 64-bit integer, as
    pg_try_advisory_lock takes)."""
    digest = hashlib.sha256(f"claims-realtime outbox {table}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def event_id_for(database: str, table: str, row: OutboxRow) -> str:
    """The event id of a row whose event names none: `evt_outbox_` + 26 base32 digits of
    SHA-256 over (database name, table, row id, created_at in microseconds).

    The same row read again (after a crash between our commit and its deletion) gets the
    same id, so it is recorded once. created_at is part of it so that an id reused by the
    sequence (a restored or truncated outbox) names a different event, not a duplicate."""
    micros = (row.created_at - _EPOCH) // timedelta(microseconds=1)
    identity = f"{database}\x00{table}\x00{row.id}\x00{micros}".encode()
    digest = base64.b32encode(hashlib.sha256(identity).digest()).decode("ascii").lower()
    return DERIVED_EVENT_ID_PREFIX + digest[:_DERIVED_DIGITS]


async def create(connection: asyncpg.Connection, table: str) -> None:
    """Create the outbox table, the rejected table and the NOTIFY trigger, or leave them as
    they are: safe to run again."""
    rejected = rejected_table(table)
    notify = f"{table}_notify"
    async with connection.transaction():
        # One deployment at a time: two `outbox init` at once would race on the catalogue.
        await connection.execute("SELECT pg_advisory_xact_lock($1)", lock_key(table))
        await connection.execute(
            f'CREATE TABLE IF NOT EXISTS "{table}" ('
            "id bigserial PRIMARY KEY, event jsonb NOT NULL, "
            "created_at timestamptz NOT NULL DEFAULT now())"
        )
        await connection.execute(
            f'CREATE TABLE IF NOT EXISTS "{rejected}" ('
            "id bigint PRIMARY KEY, event jsonb NOT NULL, created_at timestamptz NOT NULL, "
            "rejected_at timestamptz NOT NULL DEFAULT now(), problem text NOT NULL)"
        )
        # Per statement, not per row: a claims transaction inserting 100 rows sends one
        # notification (PostgreSQL folds identical ones within a transaction anyway).
        await connection.execute(
            f'CREATE OR REPLACE FUNCTION "{notify}"() RETURNS trigger LANGUAGE plpgsql AS '
            f'$$BEGIN NOTIFY "{table}"; RETURN NULL; END$$'
        )
        await connection.execute(f'DROP TRIGGER IF EXISTS "{notify}" ON "{table}"')
        await connection.execute(
            f'CREATE TRIGGER "{notify}" AFTER INSERT ON "{table}" '
            f'FOR EACH STATEMENT EXECUTE FUNCTION "{notify}"()'
        )


async def try_lead(connection: asyncpg.Connection, table: str) -> bool:
    """Take the consumer's session advisory lock if free. Held until the connection closes:
    when a consumer dies, PostgreSQL ends its session and the lock is free again."""
    return bool(await connection.fetchval("SELECT pg_try_advisory_lock($1)", lock_key(table)))


async def read(connection: asyncpg.Connection, table: str, limit: int) -> list[OutboxRow]:
    """The first `limit` waiting rows, in id order."""
    rows = await connection.fetch(
        f'SELECT id, event::text AS event, created_at FROM "{table}" ORDER BY id LIMIT $1', limit
    )
    return [OutboxRow(row["id"], json.loads(row["event"]), row["created_at"]) for row in rows]


async def settle(
    connection: asyncpg.Connection,
    table: str,
    consumed: Sequence[int],
    rejected: Sequence[tuple[int, str]],
) -> None:
    """In one transaction: delete the consumed rows; move the rejected ones, with their
    problem, to the rejected table (a row rejected before keeps its first problem)."""
    async with connection.transaction():
        if consumed:
            await connection.execute(
                f'DELETE FROM "{table}" WHERE id = ANY($1::bigint[])', consumed
            )
        if rejected:
            await connection.execute(
                f'WITH moved AS (DELETE FROM "{table}" WHERE id = ANY($1::bigint[]) '
                "RETURNING id, event, created_at) "
                f'INSERT INTO "{rejected_table(table)}" (id, event, created_at, problem) '
                "SELECT moved.id, moved.event, moved.created_at, problems.problem FROM moved "
                "JOIN unnest($1::bigint[], $2::text[]) AS problems (id, problem) USING (id) "
                "ON CONFLICT (id) DO NOTHING",
                [row_id for row_id, _ in rejected],
                [problem for _, problem in rejected],
            )


async def backlog(connection: asyncpg.Connection, table: str) -> tuple[int, float]:
    """Rows waiting, and the oldest one's age in seconds (0: none) by the outbox database's
    own clock, as created_at was set."""
    row = await connection.fetchrow(
        "SELECT count(*) AS waiting, "
        "coalesce(extract(epoch FROM now() - min(created_at)), 0)::float8 AS oldest "
        f'FROM "{table}"'
    )
    assert row is not None
    return int(row["waiting"]), max(0.0, float(row["oldest"]))
