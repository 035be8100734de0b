"""A SQLite database file's write transactions run in the writer process
(models.backends.writer): committed there before the caller hears, errors back intact, the
process started again if it dies, and the server's own Tortoise transactions waiting for it
rather than failing."""

from __future__ import annotations

import asyncio
import os
import pickle
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from tortoise.transactions import in_transaction

from claims_realtime.models import backends, ingest, subscriptions
from claims_realtime.models.backends.base import Backend
from claims_realtime.models.backends.sqlite import SQLiteBackend
from claims_realtime.models.channel import SubscriptionType
from claims_realtime.models.clock import utcnow
from claims_realtime.models.db import close_database, database_unavailable, open_database
from claims_realtime.models.errors import InvalidInput
from claims_realtime.models.event import NewEvent
from claims_realtime.models.presence import Node
from claims_realtime.models.routing import keeps_routes
from claims_realtime.models.sql import Script
from claims_realtime.models.submission import new_event

pytestmark = pytest.mark.sqlite

NOW = "2026-03-26T08:00:00+00:00"


def insert_node(node_id: str) -> tuple[str, list[Any]]:
    return "INSERT INTO node (id, started_at, heartbeat_at) VALUES (?, ?, ?)", [node_id, NOW, NOW]


# Script makers: the writer process imports them by name, as it does the domain's.


def node_then_pid(
    backend: Backend, node_id: str, hold_seconds: float = 0.0, started: str = ""
) -> Script[int]:
    """Insert a node, hold the transaction open a while, answer the process that ran it.
    With `started`, that file is created once the node is inserted (the lock is held)."""
    yield [insert_node(node_id)]
    if started:
        Path(started).touch()
    time.sleep(hold_seconds)
    return os.getpid()


def node_then_invalid(backend: Backend, node_id: str) -> Script[None]:
    yield [insert_node(node_id)]
    raise InvalidInput("events.3.data", "events.3.data is larger than 64 bytes of JSON")


@keeps_routes
def recorded_then_invalid(backend: Backend, fresh: list[NewEvent]) -> Script[None]:
    """Ingestion's script for `fresh`, heads moved and rows written, then an error."""
    yield from ingest._recording(backend, fresh, [], [""] * len(fresh), utcnow())
    raise InvalidInput("events.0.data", "events.0.data is larger than 64 bytes of JSON")


def test_a_new_event_crosses_to_the_writer_whole() -> None:
    # NewEvent pickles through its own __reduce__: every field, each set here to a value of
    # its own (a field added later must be added here too), must make the trip.
    values: dict[str, Any] = {
        "event_id": "evt_1",
        "event_type": "status_changed",
        "claim_id": "clm_1",
        "organisation_id": "org_1",
        "user_id": "usr_1",
        "actor_id": "usr_2",
        "occurred_at": datetime(2026, 3, 26, 8, 0, tzinfo=UTC),
        "recorded_at": datetime(2026, 3, 26, 8, 1, tzinfo=UTC),
        "data": {"status": "approved"},
        "data_json": '{"status":"approved"}',
        "fingerprint": "ab" * 32,
        "channel_count": 3,
    }
    assert set(values) == {field.name for field in fields(NewEvent)}
    event = NewEvent(**values)
    assert pickle.loads(pickle.dumps(event)) == event


@pytest.fixture
async def file_database(tmp_path: Path) -> AsyncIterator[SQLiteBackend]:
    await open_database(f"sqlite://{tmp_path / 'claims.sqlite3'}")
    try:
        backend = backends.current()
        assert isinstance(backend, SQLiteBackend)
        yield backend
    finally:
        await close_database()


async def stored_nodes() -> list[str]:
    return sorted(await Node.all().values_list("id", flat=True))


async def test_a_file_database_commits_in_another_process_before_answering(
    file_database: SQLiteBackend,
) -> None:
    pid = await file_database.run(node_then_pid, "n1")
    assert pid != os.getpid()
    assert await stored_nodes() == ["n1"]  # committed: this process's connection sees it
    assert await file_database.run(node_then_pid, "n2") == pid  # the same process, still


async def test_an_error_comes_back_as_raised_and_only_its_call_is_rolled_back(
    file_database: SQLiteBackend,
) -> None:
    slow = asyncio.create_task(file_database.run(node_then_pid, "first", 0.3))
    await asyncio.sleep(0.1)  # the writer is busy: the next two wait, and run together
    failing = file_database.run(node_then_invalid, "failed")
    fine = file_database.run(node_then_pid, "second", shared=True)
    results = await asyncio.gather(slow, failing, fine, return_exceptions=True)

    error = results[1]
    assert isinstance(error, InvalidInput)
    assert (error.field, error.detail) == (
        "events.3.data",
        "events.3.data is larger than 64 bytes of JSON",
    )
    assert await stored_nodes() == ["first", "second"]


async def test_a_dead_writer_fails_its_call_as_unavailable_and_the_next_call_starts_another(
    file_database: SQLiteBackend,
) -> None:
    pid = await file_database.run(node_then_pid, "before")
    held = asyncio.create_task(file_database.run(node_then_pid, "lost", 5.0))
    await asyncio.sleep(0.3)  # inside its transaction, uncommitted
    os.kill(pid, signal.SIGKILL)

    with pytest.raises(Exception) as failed:
        await asyncio.wait_for(held, timeout=5)
    assert database_unavailable(failed.value)  # answered 503, never 500

    assert await file_database.run(node_then_pid, "after") != pid
    assert await stored_nodes() == ["after", "before"]  # the killed transaction rolled back


async def test_a_transaction_of_this_process_reading_before_it_writes_waits_for_the_writer(
    file_database: SQLiteBackend, tmp_path: Path
) -> None:
    # A plain BEGIN would read a snapshot older than the writer's commit, then fail to
    # write ("database is locked") without waiting; BEGIN IMMEDIATE waits, then reads.
    started = tmp_path / "writer-started"
    writing = asyncio.create_task(file_database.run(node_then_pid, "writer", 0.5, str(started)))
    # The writer holds SQLite's write lock. Waited for, not slept on: its first call imports
    # this module in the writer process, which has taken longer than a fixed sleep.
    for _ in range(500):
        if started.exists():
            break
        await asyncio.sleep(0.01)
    assert started.exists(), "the writer never started its transaction"
    async with in_transaction():
        seen = await Node.all().count()
        await Node.create(id=f"after-{seen}", started_at=NOW, heartbeat_at=NOW)
    await writing
    assert await stored_nodes() == ["after-1", "writer"]


async def test_closing_the_database_stops_the_writer_after_its_last_answer(
    tmp_path: Path,
) -> None:
    await open_database(f"sqlite://{tmp_path / 'claims.sqlite3'}")
    backend = backends.current()
    pid = await backend.run(node_then_pid, "last")
    await close_database()
    for _ in range(100):
        if not _running(pid):
            break
        await asyncio.sleep(0.05)
    assert not _running(pid)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie until reaped: the writer's parent (this process) reaps it in close.
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split(")")[-1].split()[0] != "Z"


async def record_for(user_id: str) -> tuple[ingest.Placement, ...]:
    event = {"event_type": "status_changed", "claim_id": "clm_1", "organisation_id": "org_1"}
    (outcome,) = await ingest.record_events(
        [{**event, "user_id": user_id}], max_data_bytes=1024, batch=False
    )
    return outcome.placements


def an_event_for(user_id: str) -> NewEvent:
    submitted = {"event_type": "status_changed", "claim_id": "clm_1", "organisation_id": "org_1"}
    return new_event(
        {**submitted, "user_id": user_id},
        "",
        now=utcnow(),
        max_data_bytes=1024,
        event_id=f"evt_{user_id}_failed",
    )


async def test_heads_a_failed_call_moved_are_not_kept(file_database: SQLiteBackend) -> None:
    # The writer keeps routes (feeds and heads) between transactions; a call rolled back
    # must not leave its heads there, or the next event would skip a sequence.
    made = await subscriptions.create_channel(SubscriptionType.USER_CLAIMS, user_id="usr_1")
    channel_id = made.channel.id
    assert await record_for("usr_1") == ((channel_id, 1),)
    with pytest.raises(InvalidInput):
        await file_database.run(recorded_then_invalid, [an_event_for("usr_1")])
    assert await record_for("usr_1") == ((channel_id, 2),)


async def test_a_script_not_marked_as_keeping_routes_leaves_none_kept(
    file_database: SQLiteBackend,
) -> None:
    # A channel closed by a statement on the writer's own connection: SQLite counts no
    # commit of another connection, so only dropping the routes after it keeps the closed
    # channel from getting the next event.
    made = await subscriptions.create_channel(SubscriptionType.USER_CLAIMS, user_id="usr_2")
    assert await record_for("usr_2") == ((made.channel.id, 1),)
    await file_database.execute_in_transaction(
        [("UPDATE channel SET status = 'closed' WHERE id = ?", [made.channel.id])]
    )
    assert await record_for("usr_2") == ()
