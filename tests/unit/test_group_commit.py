"""Group commit: calls that arrive while a SQLite transaction runs share the next one, each
in its own savepoint, and each caller gets its own result or error."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from typing import Any

import pytest
from tortoise.exceptions import IntegrityError

from claims_realtime.models import backends, ingest, subscriptions
from claims_realtime.models.backends.sqlite import SQLiteBackend
from claims_realtime.models.channel import SubscriptionType
from claims_realtime.models.presence import Node

pytestmark = [pytest.mark.sqlite, pytest.mark.usefixtures("db")]

NOW = "2026-03-26T08:00:00+00:00"


def sqlite_backend() -> SQLiteBackend:
    backend = backends.current()
    assert isinstance(backend, SQLiteBackend)
    return backend


async def sqlite_group_transaction(work: Any) -> Any:
    """The open SQLite database's group commit (SQLiteBackend.group_transaction)."""
    return await sqlite_backend().group_transaction(work)


def insert_node(node_id: str, *, then_sleep: float = 0.0) -> Any:
    def work(db: sqlite3.Connection) -> str:
        db.execute(
            "INSERT INTO node (id, started_at, heartbeat_at) VALUES (?, ?, ?)",
            [node_id, NOW, NOW],
        )
        time.sleep(then_sleep)  # in SQLite's thread: the others arrive meanwhile
        return node_id

    return work


@pytest.fixture
def transactions(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The size of each group that ran, in order."""
    sizes: list[int] = []
    backend = sqlite_backend()
    real = backend.transaction

    async def counting(work: Any) -> Any:
        sizes.append(len(work.keywords["works"]))
        return await real(work)

    monkeypatch.setattr(backend, "transaction", counting)
    return sizes


async def test_calls_arriving_during_a_transaction_share_the_next(transactions: list[int]) -> None:
    first = asyncio.create_task(sqlite_group_transaction(insert_node("n0", then_sleep=0.2)))
    await asyncio.sleep(0.05)  # n0's transaction is running
    rest = [sqlite_group_transaction(insert_node(f"n{i}")) for i in range(1, 5)]
    assert await asyncio.gather(first, *rest) == ["n0", "n1", "n2", "n3", "n4"]
    assert transactions == [1, 4]
    assert sorted(await Node.all().values_list("id", flat=True)) == ["n0", "n1", "n2", "n3", "n4"]


async def test_a_failing_call_rolls_back_alone(transactions: list[int]) -> None:
    def fails(db: sqlite3.Connection) -> None:
        insert_node("bad")(db)
        raise LookupError("this call only")

    first = asyncio.create_task(sqlite_group_transaction(insert_node("n0", then_sleep=0.2)))
    await asyncio.sleep(0.05)
    results = await asyncio.gather(
        first,
        sqlite_group_transaction(insert_node("n1")),
        sqlite_group_transaction(fails),
        sqlite_group_transaction(insert_node("n0")),  # a constraint violation
        sqlite_group_transaction(insert_node("n2")),
        return_exceptions=True,
    )
    assert transactions == [1, 4]
    assert results[:2] == ["n0", "n1"] and results[4] == "n2"
    assert isinstance(results[2], LookupError)
    assert isinstance(results[3], IntegrityError)  # as Tortoise would raise it
    assert sorted(await Node.all().values_list("id", flat=True)) == ["n0", "n1", "n2"]


async def test_concurrent_ingestions_number_a_channel_without_gaps() -> None:
    created = await subscriptions.create_channel(
        SubscriptionType.ORGANISATION_CLAIMS, organisation_id="org_g", user_id="usr_coord"
    )
    event = {"event_type": "status_changed", "claim_id": "c", "organisation_id": "org_g"}
    batches = [[{**event, "user_id": f"usr_{b}_{i}"} for i in range(3)] for b in range(12)]
    outcomes = await asyncio.gather(
        *[ingest.record_events(batch, max_data_bytes=1024, batch=True) for batch in batches]
    )
    sequences = sorted(
        sequence
        for recorded in outcomes
        for outcome in recorded
        for _, sequence in outcome.placements
    )
    assert sequences == list(range(1, 37))
    channel = await subscriptions.find_channel(created.channel.id)
    assert channel.head_sequence == 36
