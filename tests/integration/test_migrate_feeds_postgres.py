"""Migration 0005 (feeds) on a populated PostgreSQL database of version 0004: every channel
gets a feed of its own carrying its old head and placements exactly (placements naming
deleted claim events included: feed_event.event_id is no constraint), a closed channel keeps
its head and newest event's time in its row, webhook rows and indexes stay, and numbering
goes on from the old heads. The same data and expectations as SQLite's test
(tests/unit/test_migrations.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import datetime

import asyncpg
import pytest

from claims_realtime.models.backends.postgres import PostgresBackend
from claims_realtime.models.db import close_database, migrate, open_database
from tests import services
from tests.unit.test_migrations import (
    AFTER_QUERIES,
    BEFORE_FEEDS,
    assert_recording_carries_on,
    expected_after,
    migrated_up_to,
    old_rows,
)

#: In-process PostgreSQL: only in the PostgreSQL pass of `make test` (see tests/conftest.py).
pytestmark = pytest.mark.postgres

CHANNEL_INDEXES = "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'channel'"


@pytest.fixture
def scratch_postgres() -> Iterator[str]:
    services.require_postgres()
    url = asyncio.run(services.create_database("crt_feeds"))
    try:
        yield url
    finally:
        asyncio.run(services.drop_database(url))


def same_time(moment: datetime) -> datetime:
    return moment


async def populated_before_feeds(url: str) -> None:
    await migrated_up_to(url, BEFORE_FEEDS)
    connection = await asyncpg.connect(url)
    try:
        async with connection.transaction():
            for sql, parameters in old_rows():
                await connection.execute(PostgresBackend().sql(sql), *parameters)
    finally:
        await connection.close()


async def test_feeds_carry_each_channels_head_and_placements(scratch_postgres: str) -> None:
    url = scratch_postgres
    await populated_before_feeds(url)
    connection = await asyncpg.connect(url)
    try:
        indexes_before = dict(await connection.fetch(CHANNEL_INDEXES))
    finally:
        await connection.close()
    assert len(indexes_before) >= 4  # the primary key's, organisation_id, user_id, created_at

    assert await migrate(url) == ["models.0005_feeds"]

    connection = await asyncpg.connect(url)
    try:
        after = {
            name: sorted(tuple(row) for row in await connection.fetch(sql))
            for name, sql in AFTER_QUERIES.items()
        }
        assert after == expected_after(same_time)
        # The old columns and table are gone.
        columns = {
            row[0]
            for row in await connection.fetch(
                "SELECT column_name FROM information_schema.columns WHERE table_name = 'channel'"
            )
        }
        assert {"feed_id", "feed_offset", "closed_position", "closed_event_at"} <= columns
        assert not {"head_sequence", "last_event_at"} & columns
        assert await connection.fetchval("SELECT to_regclass('channel_event')") is None
        # The channel table keeps its indexes and gains the feed's.
        indexes_after = dict(await connection.fetch(CHANNEL_INDEXES))
        assert indexes_before.items() <= indexes_after.items()
        assert "(feed_id)" in indexes_after["idx_channel_feed_id"]
        # Placements may name deleted claim events: no constraint from feed_event to them.
        event_constraints = await connection.fetchval(
            "SELECT count(*) FROM pg_constraint WHERE contype = 'f' "
            "AND conrelid = 'feed_event'::regclass AND confrelid = 'claim_event'::regclass"
        )
        assert event_constraints == 0
    finally:
        await connection.close()


async def test_numbering_and_history_go_on_from_the_old_heads(scratch_postgres: str) -> None:
    url = scratch_postgres
    await populated_before_feeds(url)
    assert await migrate(url) == ["models.0005_feeds"]  # `claims-realtime migrate`'s work

    await open_database(url)
    try:
        await assert_recording_carries_on()
    finally:
        await close_database()
