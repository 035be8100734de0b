"""Upgrading an existing SQLite database.

Migration 0003 brings channel.head_sequence and channel.last_event_at, which SQLite used to
leave stale (deriving heads from the history), up to the newest placement of each channel.

Migration 0005 (feeds) gives every channel of a populated database a feed of its own,
`channel:<id>` at offset 0, whose head and rows are the channel's old head and placements,
and keeps a closed channel's head and newest event's time in its row: every history and head
reads as before, and numbering goes on from the old head. The data of that test (OLD_CHANNELS,
old_rows, AFTER_QUERIES, expected_after, assert_recording_carries_on) also serves the
PostgreSQL one (tests/integration/test_migrate_feeds_postgres.py).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from tortoise import Tortoise
from tortoise.migrations.executor import MigrationExecutor, MigrationTarget

from claims_realtime.models import history, ingest
from claims_realtime.models.channel import Channel
from claims_realtime.models.db import close_database, migrate, open_database, tortoise_config
from claims_realtime.models.fields import python_time

#: In-process SQLite (Tortoise cannot switch databases within one test process).
pytestmark = pytest.mark.sqlite

BEFORE_HEADS_IN_THE_ROW = MigrationTarget("models", "0002_placements_without_event_constraint")
BEFORE_FEEDS = MigrationTarget("models", "0004_webhook_fallbacks")
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


async def heads_in_the_model(*channel_ids: str) -> dict[str, tuple[int, datetime | None]]:
    """Each channel's head and newest event's time, as the model reads them (its feed's, or
    its own once closed)."""
    query = Channel.all() if not channel_ids else Channel.filter(id__in=channel_ids)
    return {
        channel.id: (channel.head_sequence, channel.last_event_at)
        for channel in await query.select_related("feed")
    }


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
        assert await heads_in_the_model() == {
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
        assert sorted(sequence for _, sequence in outcome.placements) == [1, 3, 4, 8]
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
        assert await heads_in_the_model("chan_current") == {"chan_current": (2, python_time(T3))}
    finally:
        await close_database()


# Migration 0005: feeds.


def at(second: int) -> datetime:
    return datetime(2026, 3, 26, 8, 0, second, tzinfo=UTC)


@dataclass(frozen=True)
class OldChannel:
    """A user channel as version 0004 stored it: its row's head and newest event's time,
    and its placements (sequence, event_id, recorded_at)."""

    id: str
    user_id: str
    status: str
    head: int
    last_event_at: datetime | None
    placements: tuple[tuple[int, str, datetime], ...] = ()


OPEN = OldChannel(
    id="chan_open",
    user_id="usr_open",
    status="connected",
    head=3,
    last_event_at=at(3),
    placements=((1, "evt_open_1", at(1)), (2, "evt_open_2", at(2)), (3, "evt_open_3", at(3))),
)
#: The same user's, closed; its placements 1 to 3 were pruned (the head is still 5).
CLOSED = OldChannel(
    id="chan_closed",
    user_id="usr_open",
    status="closed",
    head=5,
    last_event_at=at(5),
    placements=((4, "evt_closed_4", at(4)), (5, "evt_closed_5", at(5))),
)
EMPTY = OldChannel(
    id="chan_empty", user_id="usr_empty", status="disconnected", head=0, last_event_at=None
)
#: Its placements name claim events prune has deleted.
DANGLING = OldChannel(
    id="chan_dangling",
    user_id="usr_dangling",
    status="connected",
    head=2,
    last_event_at=at(2),
    placements=((1, "evt_deleted_1", at(1)), (2, "evt_deleted_2", at(2))),
)
#: It has a fallback webhook, and a webhook that failed for good.
WEBHOOK = OldChannel(
    id="chan_webhook",
    user_id="usr_webhook",
    status="connected",
    head=1,
    last_event_at=at(1),
    placements=((1, "evt_webhook_1", at(1)),),
)
#: Its whole history was pruned away: the row is the head.
PRUNED = OldChannel(
    id="chan_pruned", user_id="usr_pruned", status="connected", head=7, last_event_at=at(7)
)
OLD_CHANNELS = (OPEN, CLOSED, EMPTY, DANGLING, WEBHOOK, PRUNED)
EVENT_TYPES = '["comment_added"]'
HOOK_URL = "https://hooks.example.com/claims"


def old_rows() -> list[tuple[str, list[Any]]]:
    """The statements filling a database of version 0004 with OLD_CHANNELS, their
    placements, the claim events prune kept, and WEBHOOK's fallback and failure: SQL with
    `?` parameters, times as aware datetimes."""
    rows: list[tuple[str, list[Any]]] = []
    for channel in OLD_CHANNELS:
        rows.append(
            (
                "INSERT INTO channel (id, subscription_type, user_id, event_types, status, "
                "token_hash, created_at, last_event_at, head_sequence) "
                "VALUES (?, 'user_claims', ?, ?, ?, 'x', ?, ?, ?)",
                [
                    channel.id,
                    channel.user_id,
                    EVENT_TYPES,
                    channel.status,
                    at(0),
                    channel.last_event_at,
                    channel.head,
                ],
            )
        )
        for sequence, event_id, recorded_at in channel.placements:
            if channel is not DANGLING:
                rows.append(
                    (
                        "INSERT INTO claim_event (event_id, event_type, claim_id, "
                        "organisation_id, user_id, occurred_at, recorded_at, data, "
                        "fingerprint, channel_count) "
                        "VALUES (?, 'comment_added', 'clm_1', 'org_1', ?, ?, ?, '{}', '', 1)",
                        [event_id, channel.user_id, recorded_at, recorded_at],
                    )
                )
            rows.append(
                (
                    "INSERT INTO channel_event (channel_id, sequence, event_id, recorded_at) "
                    "VALUES (?, ?, ?, ?)",
                    [channel.id, sequence, event_id, recorded_at],
                )
            )
    rows.append(
        (
            "INSERT INTO webhook_fallback (channel_id, url, after_seconds, event_types, secret, "
            '"cursor", attempts, sent, failed, created_at, updated_at) '
            "VALUES (?, ?, 30, ?, 'sealed', 1, 0, 1, 0, ?, ?)",
            [WEBHOOK.id, HOOK_URL, EVENT_TYPES, at(1), at(1)],
        )
    )
    rows.append(
        (
            "INSERT INTO webhook_failure (channel_id, sequence, event_id, attempts, failed_at) "
            "VALUES (?, 1, 'evt_webhook_1', 5, ?)",
            [WEBHOOK.id, at(1)],
        )
    )
    return rows


#: What the migrated database holds, per table (rows compared sorted).
AFTER_QUERIES = {
    "channels": "SELECT c.id, f.name, c.feed_offset, f.head, f.last_event_at, "
    "c.closed_position, c.closed_event_at FROM channel c LEFT JOIN feed f ON f.id = c.feed_id",
    "feeds": "SELECT name FROM feed",
    "feed events": "SELECT f.name, fe.position, fe.event_id, fe.recorded_at "
    "FROM feed_event fe LEFT JOIN feed f ON f.id = fe.feed_id",
    "webhook fallbacks": 'SELECT channel_id, url, "cursor", sent FROM webhook_fallback',
    "webhook failures": "SELECT channel_id, sequence, event_id FROM webhook_failure",
}


def expected_after(time: Callable[[datetime], Any]) -> dict[str, list[tuple[Any, ...]]]:
    """AFTER_QUERIES' rows, sorted, with times as the database gives them (`time`)."""
    return {
        # (id, feed, offset, feed head, feed's last_event_at, closed_position, closed_event_at)
        "channels": [
            ("chan_closed", "channel:chan_closed", 0, 5, time(at(5)), 5, time(at(5))),
            ("chan_dangling", "channel:chan_dangling", 0, 2, time(at(2)), None, None),
            ("chan_empty", "channel:chan_empty", 0, 0, None, None, None),
            ("chan_open", "channel:chan_open", 0, 3, time(at(3)), None, None),
            ("chan_pruned", "channel:chan_pruned", 0, 7, time(at(7)), None, None),
            ("chan_webhook", "channel:chan_webhook", 0, 1, time(at(1)), None, None),
        ],
        "feeds": sorted((f"channel:{channel.id}",) for channel in OLD_CHANNELS),
        # The old placements exactly: the feed's positions are the channel's sequences.
        "feed events": sorted(
            (f"channel:{channel.id}", sequence, event_id, time(recorded_at))
            for channel in OLD_CHANNELS
            for sequence, event_id, recorded_at in channel.placements
        ),
        "webhook fallbacks": [("chan_webhook", HOOK_URL, 1, 1)],
        "webhook failures": [("chan_webhook", 1, "evt_webhook_1")],
    }


RETENTION = history.Retention(max_events=1000, ttl_seconds=10**9)
NEW_EVENT = {
    "event_id": "evt_new",
    "event_type": "comment_added",
    "claim_id": "clm_1",
    "organisation_id": "org_1",
    "user_id": OPEN.user_id,
}


async def assert_recording_carries_on() -> None:
    """With the migrated database open: a new event of OPEN's user is number 4 on OPEN (old
    head + 1) and nowhere else (CLOSED is the same user's), and both histories read as
    before."""
    (outcome,) = await ingest.record_events([NEW_EVENT], max_data_bytes=65536, batch=False)
    assert not outcome.duplicate
    assert list(outcome.placements) == [(OPEN.id, 4)]

    opened = await history.read_after(OPEN.id, 0, 100, RETENTION)
    assert [(e.sequence, e.event_id) for e in opened] == [
        (1, "evt_open_1"),
        (2, "evt_open_2"),
        (3, "evt_open_3"),
        (4, "evt_new"),
    ]
    assert [e.recorded_at for e in opened[:3]] == [at(1), at(2), at(3)]
    closed = await history.read_after(CLOSED.id, 0, 100, RETENTION)
    assert [(e.sequence, e.event_id) for e in closed] == [(4, "evt_closed_4"), (5, "evt_closed_5")]

    heads = await heads_in_the_model(OPEN.id, CLOSED.id)
    assert heads[OPEN.id][0] == 4
    assert heads[CLOSED.id] == (5, at(5))


def sqlite_time(moment: datetime) -> str:
    """A time as Tortoise stores it in SQLite (and the old rows held it)."""
    return moment.isoformat(sep=" ")


def populated_before_feeds(path: Path) -> None:
    db = sqlite3.connect(path)
    for sql, parameters in old_rows():
        values = [sqlite_time(v) if isinstance(v, datetime) else v for v in parameters]
        db.execute(sql, values)
    db.commit()
    db.close()


def channel_indexes(db: sqlite3.Connection) -> dict[str, tuple[str, ...]]:
    """The channel table's indexes: name -> indexed columns."""
    names = [
        row[0]
        for row in db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'channel'"
        )
    ]
    return {
        name: tuple(row[0] for row in db.execute("SELECT name FROM pragma_index_info(?)", [name]))
        for name in names
    }


async def test_feeds_carry_each_channels_head_and_placements(tmp_path: Path) -> None:
    path = tmp_path / "claims.sqlite3"
    url = f"sqlite://{path}"
    await migrated_up_to(url, BEFORE_FEEDS)
    populated_before_feeds(path)
    db = sqlite3.connect(path)
    indexes_before = channel_indexes(db)
    db.close()
    assert {("organisation_id",), ("user_id",), ("created_at",)} <= set(indexes_before.values())

    assert await migrate(url) == ["models.0005_feeds"]

    db = sqlite3.connect(path)
    try:
        after = {name: sorted(db.execute(sql)) for name, sql in AFTER_QUERIES.items()}
        assert after == expected_after(sqlite_time)
        # The old columns and table are gone.
        columns = {row[1] for row in db.execute("PRAGMA table_info(channel)")}
        assert {"feed_id", "feed_offset", "closed_position", "closed_event_at"} <= columns
        assert not {"head_sequence", "last_event_at"} & columns
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
        assert "channel_event" not in tables
        # Every index of the channel table is still there, and the feed's is added.
        indexes_after = channel_indexes(db)
        assert indexes_before.items() <= indexes_after.items()
        assert indexes_after["idx_channel_feed_id"] == ("feed_id",)
        # Rows reference what exists, except feed_event.event_id, which is no constraint.
        assert db.execute("PRAGMA foreign_key_check").fetchall() == []
        references = {row[2] for row in db.execute("PRAGMA foreign_key_list(feed_event)")}
        assert references == {"feed"}
    finally:
        db.close()


async def test_numbering_and_history_go_on_from_the_old_heads(tmp_path: Path) -> None:
    path = tmp_path / "claims.sqlite3"
    url = f"sqlite://{path}"
    await migrated_up_to(url, BEFORE_FEEDS)
    populated_before_feeds(path)

    await open_database(url)  # migrated on opening, as the server does
    try:
        await assert_recording_carries_on()
    finally:
        await close_database()
