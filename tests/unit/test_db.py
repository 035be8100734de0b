"""The backends' transactions: the SQLite one-trip transaction keeps Tortoise's guarantees
(atomic, committed before it returns, errors translated, never interleaved with Tortoise's own
use of the connection), and statements run in one transaction on either database."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime
from typing import Any

import pytest
from tortoise.exceptions import IntegrityError
from tortoise.transactions import in_transaction

from claims_realtime.models import backends
from claims_realtime.models.backends.postgres import PostgresBackend
from claims_realtime.models.backends.sqlite import SQLiteBackend
from claims_realtime.models.event import ClaimEvent
from claims_realtime.models.presence import Node
from claims_realtime.models.sql import chunk_sizes, padded

NOW = "2026-03-26T08:00:00+00:00"


def insert_node(db: sqlite3.Connection, node_id: str) -> None:
    db.execute(
        "INSERT INTO node (id, started_at, heartbeat_at) VALUES (?, ?, ?)", [node_id, NOW, NOW]
    )


#: sqlite_transaction is the SQLite path: its tests run in the SQLite pass only.
sqlite_only = pytest.mark.sqlite


async def sqlite_transaction(work: Any) -> Any:
    """The open SQLite database's one-trip transaction (SQLiteBackend.transaction)."""
    backend = backends.current()
    assert isinstance(backend, SQLiteBackend)
    return await backend.transaction(work)


async def execute_in_transaction(statements: Any) -> None:
    await backends.current().execute_in_transaction(statements)


@sqlite_only
@pytest.mark.usefixtures("db")
async def test_a_transaction_commits_what_it_wrote_and_answers_its_result() -> None:
    def work(db: sqlite3.Connection) -> int:
        insert_node(db, "node_a")
        insert_node(db, "node_b")
        return int(db.execute("SELECT count(*) FROM node").fetchone()[0])

    assert await sqlite_transaction(work) == 2
    assert sorted(await Node.all().values_list("id", flat=True)) == ["node_a", "node_b"]


@sqlite_only
@pytest.mark.usefixtures("db")
async def test_an_error_rolls_everything_back_and_reaches_the_caller() -> None:
    def work(db: sqlite3.Connection) -> None:
        insert_node(db, "node_a")
        raise LookupError("no")

    with pytest.raises(LookupError):
        await sqlite_transaction(work)
    assert await Node.all().count() == 0
    # The connection is usable afterwards, by Tortoise and by us.
    await sqlite_transaction(lambda db: insert_node(db, "node_c"))
    assert await Node.all().values_list("id", flat=True) == ["node_c"]


@sqlite_only
@pytest.mark.usefixtures("db")
async def test_constraint_violations_are_tortoises_integrity_error() -> None:
    """Ingestion retries on IntegrityError (a concurrent insert of the same event_id)."""
    await sqlite_transaction(lambda db: insert_node(db, "node_a"))

    def again(db: sqlite3.Connection) -> None:
        insert_node(db, "node_b")
        insert_node(db, "node_a")

    with pytest.raises(IntegrityError):
        await sqlite_transaction(again)
    assert await Node.all().values_list("id", flat=True) == ["node_a"]


@sqlite_only
@pytest.mark.usefixtures("db")
async def test_it_waits_for_a_tortoise_transaction_in_progress() -> None:
    """One connection: a Tortoise transaction and ours must not interleave."""
    order: list[str] = []
    inside = asyncio.Event()

    async def tortoise_side() -> None:
        async with in_transaction() as connection:
            await Node.create(id="node_t", started_at=NOW, heartbeat_at=NOW, using_db=connection)
            inside.set()
            await asyncio.sleep(0.2)  # ours is waiting meanwhile
            order.append("tortoise done")

    def ours(db: sqlite3.Connection) -> int:
        order.append("ours runs")
        return int(db.execute("SELECT count(*) FROM node").fetchone()[0])

    task = asyncio.create_task(tortoise_side())
    await inside.wait()
    seen = await sqlite_transaction(ours)
    await task
    assert order == ["tortoise done", "ours runs"]
    assert seen == 1  # it saw the other transaction's committed row


@pytest.mark.usefixtures("db")
async def test_statements_run_in_one_transaction_on_either_database() -> None:
    insert = "INSERT INTO node (id, started_at, heartbeat_at) VALUES (?, ?, ?)"
    now = datetime.now(UTC)
    await execute_in_transaction([(insert, ["n1", now, now])])
    with pytest.raises(IntegrityError):
        await execute_in_transaction(
            [
                ("UPDATE node SET id = ? WHERE id = ?", ["n2", "n1"]),
                (insert, ["n3", now, now]),
                (insert, ["n3", now, now]),
            ]
        )
    # What ran before the failure was rolled back with it.
    assert await Node.all().values_list("id", flat=True) == ["n1"]
    assert await ClaimEvent.all().count() == 0


@pytest.mark.parametrize("count", [0, 1, 2, 3, 7, 20, 300, 500, 5000])
def test_statements_come_in_few_sizes_that_add_up(count: int) -> None:
    sizes = chunk_sizes(count, largest=2727)
    assert sum(sizes) == count
    assert all(size & (size - 1) == 0 and size <= 2048 for size in sizes)  # powers of two
    rows = [[i, i] for i in range(count)]
    statements = PostgresBackend().insert_statements("t", ["a", "b"], rows)
    assert [value for _, parameters in statements for value in parameters] == [
        value for row in rows for value in row
    ]


@pytest.mark.parametrize(
    ("count", "statement_count"),
    [(1, 1), (2, 1), (3, 1), (7, 1), (50, 1), (64, 1), (300, 1), (5000, 1), (20_000, 3)],
)
def test_sqlite_inserts_the_rest_after_full_chunks_in_one_padded_statement(
    count: int, statement_count: int
) -> None:
    """On SQLite every statement is a wait for the GIL under load: 50 rows are one
    statement, not 32 + 16 + 2; the padding rows are left out, NULLs of real rows kept."""
    sizes = chunk_sizes(count, largest=2727, pad=True)
    assert all(size & (size - 1) == 0 and size <= 2048 for size in sizes)
    assert sizes[:-1] == [2048] * (len(sizes) - 1)  # full chunks, then one for the rest
    assert count <= sum(sizes) < 2 * count
    rows = [[f"k{i}", None if i % 3 else i] for i in range(count)]
    statements = SQLiteBackend().insert_statements("t", ["a", "b"], rows)
    assert len(statements) == statement_count  # 8,192 rows of two columns fit in one
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE t (a TEXT NOT NULL, b INTEGER)")
    for query, parameters in statements:
        db.execute(query, parameters)
    assert [list(row) for row in db.execute("SELECT a, b FROM t ORDER BY rowid")] == rows


@pytest.mark.parametrize("count", [1, 3, 50, 300])
def test_sqlite_updates_come_padded_with_pairs_that_match_no_row(count: int) -> None:
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE c (id TEXT PRIMARY KEY, head INTEGER, at TEXT)")
    db.executemany("INSERT INTO c VALUES (?, 0, NULL)", [(f"c{i}",) for i in range(count + 5)])
    values = {f"c{i}": i + 1 for i in range(count)}
    statements = SQLiteBackend().update_statements("c", "head", values, also={"at": "now"})
    assert len(statements) == 1
    for query, parameters in statements:
        db.execute(query, parameters)
    rows = {row[0]: (row[1], row[2]) for row in db.execute("SELECT id, head, at FROM c")}
    assert rows == {
        **{f"c{i}": (i + 1, "now") for i in range(count)},
        **{f"c{i}": (0, None) for i in range(count, count + 5)},  # untouched
    }


@pytest.mark.parametrize("count", [1, 3, 300])
def test_sqlite_advances_move_each_column_forward_only_and_none_leaves_it(count: int) -> None:
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE c (id TEXT PRIMARY KEY, d INTEGER, k INTEGER)")
    db.executemany("INSERT INTO c VALUES (?, NULL, 5)", [(f"c{i}",) for i in range(count + 5)])
    values: dict[str, tuple[int | None, int | None]] = {
        f"c{i}": ((i % 3 or None), (9 if i % 2 else 2)) for i in range(count)
    }
    statements = SQLiteBackend().advance_statements("c", ("d", "k"), values)
    assert len(statements) == 1  # one pass over the rows for both columns
    for query, parameters in statements:
        db.execute(query, parameters)
    rows = {row[0]: (row[1], row[2]) for row in db.execute("SELECT id, d, k FROM c")}
    assert rows == {
        # d: NULL stays NULL when given None, else the value; k: never back from 5.
        **{f"c{i}": ((i % 3 or None), (9 if i % 2 else 5)) for i in range(count)},
        **{f"c{i}": (None, 5) for i in range(count, count + 5)},  # untouched
    }


def test_in_lists_are_padded_to_a_power_of_two_with_their_last_value() -> None:
    assert padded([]) == []
    assert padded(["a"]) == ["a"]
    assert padded(["a", "b", "c"]) == ["a", "b", "c", "c"]
    assert len(padded(list(range(17)))) == 32


@sqlite_only
@pytest.mark.usefixtures("db")
async def test_the_sqlite_connection_runs_with_the_services_settings() -> None:
    """Durable commits, and the cache, checkpoint and journal settings the write path was
    tuned with."""

    def settings(db: sqlite3.Connection) -> dict[str, int]:
        names = (
            "synchronous",
            "busy_timeout",
            "cache_size",
            "wal_autocheckpoint",
            "journal_size_limit",
            "temp_store",
        )
        return {name: int(db.execute(f"PRAGMA {name}").fetchone()[0]) for name in names}

    assert await sqlite_transaction(settings) == {
        "synchronous": 2,  # FULL
        "busy_timeout": 5000,
        "cache_size": -16384,
        "wal_autocheckpoint": 8000,
        "journal_size_limit": 64 * 1024 * 1024,
        "temp_store": 2,  # MEMORY
    }


def test_a_setting_given_in_the_url_wins() -> None:
    url = SQLiteBackend().connection_url("sqlite:///tmp/x.sqlite3?cache_size=-1024", pool_size=10)
    assert "cache_size=-1024" in url
    assert "cache_size=-16384" not in url
    assert "synchronous=FULL" in url


@sqlite_only
async def test_history_reads_use_their_own_read_only_connection_and_see_every_commit(
    tmp_path: Any,
) -> None:
    from claims_realtime.models import ingest, subscriptions
    from claims_realtime.models.channel import SubscriptionType
    from claims_realtime.models.db import close_database, open_database
    from claims_realtime.models.history import read_after
    from tests.unit.test_history import KEEP_ALL

    await open_database(f"sqlite://{tmp_path / 'file.sqlite3'}")
    try:
        backend = backends.current()
        assert isinstance(backend, SQLiteBackend) and backend._reader is not None
        created = await subscriptions.create_channel(SubscriptionType.USER_CLAIMS, user_id="u")
        for n in range(3):  # each committed after the reader opened
            event = {"event_type": "claim_approved", "claim_id": f"c{n}", "organisation_id": "o"}
            await ingest.record_events([{**event, "user_id": "u"}], max_data_bytes=64, batch=False)
            rows = await read_after(created.channel.id, 0, 10, KEEP_ALL)
            assert [row.sequence for row in rows] == list(range(1, n + 2))
        with pytest.raises(sqlite3.OperationalError, match="readonly|read-only"):
            await backend._reader.execute("DELETE FROM feed_event")
    finally:
        await close_database()
    assert backend._reader is None


@sqlite_only
async def test_a_webhook_poll_with_nothing_due_does_not_wait_for_the_writer(
    tmp_path: Any,
) -> None:
    """Pollers look for due webhooks outside any write transaction: while another writer
    holds the database (under load, ingestion), a poll with nothing due answers at once
    rather than queueing for the write lock."""
    from datetime import UTC, datetime

    from claims_realtime.models import subscriptions, webhook_queue
    from claims_realtime.models.channel import SubscriptionType
    from claims_realtime.models.db import close_database, open_database

    path = tmp_path / "file.sqlite3"
    await open_database(f"sqlite://{path}")
    try:
        await subscriptions.create_channel(SubscriptionType.USER_CLAIMS, user_id="u")
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # the write lock, held for the whole poll
        try:
            now = datetime.now(UTC)
            leases = await asyncio.wait_for(webhook_queue.lease_due("node", now, 8, 30), 2)
            assert leases == []
        finally:
            other.execute("ROLLBACK")
            other.close()
    finally:
        await close_database()
