"""Upgrading an existing SQLite database: migration 0003 brings channel.head_sequence and
channel.last_event_at, which SQLite used to leave stale (deriving heads from the history),
up to the newest placement of each channel."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from tortoise import Tortoise
from tortoise.migrations.executor import MigrationExecutor, MigrationTarget

from claims_realtime.models import ingest
from claims_realtime.models.channel import Channel
from claims_realtime.models.db import close_database, open_database, tortoise_config
from claims_realtime.models.fields import python_time

#: In-process SQLite (Tortoise cannot switch databases within one test process).
pytestmark = pytest.mark.sqlite

BEFORE_HEADS_IN_THE_ROW = MigrationTarget("models", "0002_placements_without_event_constraint")
T0, T1, T2, T3 = (f"2026-03-26 08:00:0{i}+00:00" for i in range(4))


async def migrated_up_to(url: str, target: MigrationTarget) -> None:
    config = tortoise_config(url)
    await Tortoise.init(config=config)
    try:
        executor = MigrationExecutor(Tortoise.get_connection("default"), config["apps"])
        await executor.migrate([target])
    finally:
        await Tortoise.close_connections()


def add_channel(db: sqlite3.Connection, channel_id: str, head: int, last: str | None) -> None:
    db.execute(
        "INSERT INTO channel (id, subscription_type, user_id, event_types, status, token_hash, "
        "created_at, last_event_at, head_sequence) "
        "VALUES (?, 'user_claims', 'usr_1', '[\"comment_added\"]', 'connected', 'x', ?, ?, ?)",
        [channel_id, T0, last, head],
    )


def place(db: sqlite3.Connection, channel_id: str, sequence: int, recorded_at: str) -> None:
    db.execute(
        "INSERT INTO channel_event (channel_id, sequence, event_id, recorded_at) "
        "VALUES (?, ?, ?, ?)",
        [channel_id, sequence, f"evt_{channel_id}_{sequence}", recorded_at],
    )


async def test_stale_heads_are_brought_up_to_the_newest_placement(tmp_path: Path) -> None:
    path = tmp_path / "claims.sqlite3"
    url = f"sqlite://{path}"
    await migrated_up_to(url, BEFORE_HEADS_IN_THE_ROW)
    # As the previous release left it: heads only in the history, columns stale.
    db = sqlite3.connect(path)
    add_channel(db, "chan_stale", 0, None)  # three events, none in its row
    for sequence, at in ((1, T1), (2, T2), (3, T3)):
        place(db, "chan_stale", sequence, at)
    add_channel(db, "chan_lagging", 1, T1)  # its row saw the first of two events
    for sequence, at in ((1, T1), (2, T2)):
        place(db, "chan_lagging", sequence, at)
    add_channel(db, "chan_pruned", 7, T0)  # history pruned away: the row is the head
    add_channel(db, "chan_empty", 0, None)
    db.commit()
    db.close()

    await open_database(url)  # SQLite is migrated on opening, as the server does
    try:
        heads = {
            channel.id: (channel.head_sequence, channel.last_event_at)
            for channel in await Channel.all()
        }
        assert heads == {
            "chan_stale": (3, python_time(T3)),
            "chan_lagging": (2, python_time(T2)),
            "chan_pruned": (7, python_time(T0)),
            "chan_empty": (0, None),
        }
        # Numbering goes on from the head in the row.
        event = {"event_type": "comment_added", "claim_id": "c", "organisation_id": "o"}
        (outcome,) = await ingest.record_events(
            [{**event, "user_id": "usr_1"}], max_data_bytes=1024, batch=False
        )
        assert sorted(p.sequence for p in outcome.placements) == [1, 3, 4, 8]
    finally:
        await close_database()


async def test_heads_already_in_the_row_are_left_as_they_are(tmp_path: Path) -> None:
    path = tmp_path / "claims.sqlite3"
    url = f"sqlite://{path}"
    await migrated_up_to(url, BEFORE_HEADS_IN_THE_ROW)
    db = sqlite3.connect(path)
    add_channel(db, "chan_current", 2, T3)  # as PostgreSQL keeps them: nothing to change
    for sequence, at in ((1, T1), (2, T2)):
        place(db, "chan_current", sequence, at)
    db.commit()
    db.close()

    await open_database(url)
    try:
        channel = await Channel.get(id="chan_current")
        assert (channel.head_sequence, channel.last_event_at) == (2, python_time(T3))
    finally:
        await close_database()
