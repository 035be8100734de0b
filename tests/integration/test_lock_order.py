"""On PostgreSQL every transaction that writes several rows of a table locks them in id
order: two transactions taking overlapping row locks in different orders deadlock, and
PostgreSQL aborts one (under load this turned ingestion requests into 500s, the positions
flush locking channel rows in its UPDATE ... FROM VALUES join order). The positions flush
locks channel rows; ingestion locks the rows of the feeds it appends to.

The check is deterministic: a blocker holds the lower row's lock; the transaction under
test, given the higher row first, must be seen waiting for the lower one while the higher
one is still free (a NOWAIT lock on it succeeds).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import pytest

from claims_realtime.models import history, ingest, subscriptions
from claims_realtime.models.channel import Channel, SubscriptionType
from claims_realtime.models.db import close_database, open_database
from tests import services

#: In-process PostgreSQL: only in the PostgreSQL pass of `make test` (see tests/conftest.py).
pytestmark = pytest.mark.postgres

WAIT = 10.0


@pytest.fixture(scope="module")
def locks_db() -> Iterator[str]:
    with services.migrated_database("crt_locks") as url:
        yield url


@contextlib.asynccontextmanager
async def on_postgres(url: str) -> AsyncIterator[None]:
    """Tortoise on `url` for this task (and the tasks it starts). Opened in the test's own
    task, not in a fixture: Tortoise keeps its state in a context variable, and a fixture's
    context is not the test's (the test would fall back to another app's database)."""
    await open_database(url)
    try:
        yield
    finally:
        await close_database()


async def two_channels() -> tuple[str, str]:
    ids = [
        (
            await subscriptions.create_channel(SubscriptionType.USER_CLAIMS, user_id="usr_l")
        ).channel.id
        for _ in range(2)
    ]
    low, high = sorted(ids)
    return low, high


async def waiting_for_a_lock(url: str) -> None:
    """Until some other backend of this database waits for a row lock."""
    observer = await asyncpg.connect(url)
    try:
        deadline = time.monotonic() + WAIT
        while not await observer.fetchval(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND wait_event_type = 'Lock'"
        ):
            assert time.monotonic() < deadline, "nobody ever waited for the lock"
            await asyncio.sleep(0.02)
    finally:
        await observer.close()


async def lock_is_free(url: str, table: str, row_id: object) -> bool:
    probe = await asyncpg.connect(url)
    try:
        async with probe.transaction():
            await probe.execute(f"SELECT 1 FROM {table} WHERE id = $1 FOR UPDATE NOWAIT", row_id)
        return True
    except asyncpg.exceptions.LockNotAvailableError:
        return False
    finally:
        await probe.close()


async def while_lower_row_is_held(
    url: str, low: object, high: object, work: Any, table: str = "channel"
) -> bool:
    """Run `work` while another transaction holds the lock of `table`'s row `low`; answer
    whether row `high` was still free once `work` waited; then let `work` finish."""
    blocker = await asyncpg.connect(url)
    try:
        transaction = blocker.transaction()
        await transaction.start()
        await blocker.execute(f"SELECT 1 FROM {table} WHERE id = $1 FOR UPDATE", low)
        task = asyncio.ensure_future(work)
        await waiting_for_a_lock(url)
        free = await lock_is_free(url, table, high)
        await transaction.rollback()
        await asyncio.wait_for(task, WAIT)
        return free
    finally:
        await blocker.close()


async def test_the_positions_flush_locks_channels_in_id_order(locks_db: str) -> None:
    async with on_postgres(locks_db):
        low, high = await two_channels()
        # Delivered on the higher id, confirmed on the lower: two statements, and in that
        # order the flush used to lock `high` first, then wait for `low`.
        flush = history.save_positions({high: (5, None), low: (None, 3)})
        assert await while_lower_row_is_held(locks_db, low, high, flush)
        stored = {c.id: c for c in await Channel.filter(id__in=[low, high])}
        assert stored[high].delivered_sequence == 5 and stored[low].confirmed_sequence == 3


async def test_ingestion_locks_feeds_in_id_order(locks_db: str) -> None:
    async with on_postgres(locks_db):
        # The claimant's channel and a coordinator's: two feeds the event is appended to.
        owner = await subscriptions.create_channel(SubscriptionType.USER_CLAIMS, user_id="usr_f")
        coordinator = await subscriptions.create_channel(
            SubscriptionType.ORGANISATION_CLAIMS, organisation_id="org_f", user_id="usr_c"
        )
        channels = [owner.channel, coordinator.channel]
        low, high = sorted(int(channel.feed_id or 0) for channel in channels)
        assert low != high
        event = {
            "event_type": "comment_added",
            "claim_id": "c1",
            "organisation_id": "org_f",
            "user_id": "usr_f",
        }
        recording = ingest.record_events([event], max_data_bytes=1024, batch=False)
        assert await while_lower_row_is_held(locks_db, low, high, recording, table="feed")
        heads = await history.heads([channel.id for channel in channels])
        assert [heads[channel.id][0] for channel in channels] == [1, 1]
