"""The transactional outbox: a database playing the claims service writes its events into the
outbox in the transactions that change its claims, and a real `claims-realtime serve` with
OUTBOX_URL set delivers exactly the committed ones, in order, once.

Every test here needs PostgreSQL for both databases (ours, and the claims service's with
the outbox): they make their own, so they run once, in the SQLite pass of `make test`.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import httpx
import pytest

from claims_realtime.models.outbox import lock_key
from tests import services
from tests.helpers import unique
from tests.programs import run_js_client
from tests.server import CLI, Server
from tests.tcp_proxy import TcpProxy

pytestmark = [pytest.mark.integration]

WAIT = 15.0
TABLE = "claims_realtime_outbox"
ORG = "org_outbox"


@pytest.fixture(scope="module")
def ours() -> Iterator[str]:
    """Our own database (history), on PostgreSQL, shared by the module's servers."""
    with services.migrated_database("crt_outbox") as url:
        yield url


def outbox_init(url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CLI, "outbox", "init"],
        env={**os.environ, "OUTBOX_URL": url},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )


@pytest.fixture
def claims_url() -> Iterator[str]:
    """The claims service's database: a `claims` table, and the outbox made by the CLI."""
    services.require_postgres()
    url = asyncio.run(services.create_database("crt_claims"))
    try:
        outbox_init(url)
        asyncio.run(_create_claims(url))
        yield url
    finally:
        asyncio.run(services.drop_database(url))


async def _create_claims(url: str) -> None:
    connection = await asyncpg.connect(url)
    try:
        await connection.execute(
            "CREATE TABLE claims (id text PRIMARY KEY, status text NOT NULL, version int NOT NULL)"
        )
    finally:
        await connection.close()


@pytest.fixture
async def claims(claims_url: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(claims_url)
    try:
        yield connection
    finally:
        await connection.close()


def outbox_server(path: Path, ours: str, claims_url: str, **env: str) -> Server:
    return Server(path, DATABASE_URL=ours, OUTBOX_URL=claims_url, **env)


def event(user: str, claim: str, n: int, **fields: Any) -> dict[str, Any]:
    return {
        "event_type": "status_changed",
        "claim_id": claim,
        "organisation_id": ORG,
        "user_id": user,
        "data": {"n": n},
        **fields,
    }


async def change_claim(
    claims: asyncpg.Connection, claim: str, new_event: dict[str, Any], *, commit: bool = True
) -> None:
    """What the claims service does: change the claim and write its event, in one
    transaction (committed, or rolled back)."""
    transaction = claims.transaction()
    await transaction.start()
    await claims.execute(
        "INSERT INTO claims (id, status, version) VALUES ($1, $2, 1) "
        "ON CONFLICT (id) DO UPDATE SET status = $2, version = claims.version + 1",
        claim,
        f"status {new_event['data']['n']}",
    )
    await claims.execute(f"INSERT INTO {TABLE} (event) VALUES ($1::jsonb)", json.dumps(new_event))
    if commit:
        await transaction.commit()
    else:
        await transaction.rollback()


async def history(server: Server, channel_id: str) -> list[dict[str, Any]]:
    async with server.client() as http:
        response = await http.get(
            f"/api/v1/realtime-subscriptions/{channel_id}/events", params={"limit": 1000}
        )
    assert response.status_code == 200, response.text
    return list(response.json()["data"])


async def wait_for_history(server: Server, channel_id: str, count: int) -> list[dict[str, Any]]:
    """The channel's history once it holds `count` events (or fail at the deadline)."""
    deadline = time.monotonic() + WAIT
    while len(events := await history(server, channel_id)) < count:
        assert time.monotonic() < deadline, f"{len(events)} events, not {count}: {events}"
        await asyncio.sleep(0.1)
    return events


async def wait_until_empty(claims: asyncpg.Connection) -> None:
    deadline = time.monotonic() + WAIT
    while waiting := await claims.fetchval(f"SELECT count(*) FROM {TABLE}"):
        assert time.monotonic() < deadline, f"{waiting} outbox rows still waiting"
        await asyncio.sleep(0.1)


async def test_outbox_init_is_idempotent_and_notifies_once_per_statement(
    claims_url: str, claims: asyncpg.Connection
) -> None:
    outbox_init(claims_url)  # the fixture ran it once already
    tables = await claims.fetch(
        "SELECT table_name FROM information_schema.tables WHERE table_name LIKE $1",
        f"{TABLE}%",
    )
    assert sorted(row["table_name"] for row in tables) == [TABLE, f"{TABLE}_rejected"]
    triggers = await claims.fetch(
        "SELECT tgname, tgtype FROM pg_trigger WHERE tgrelid = $1::regclass AND NOT tgisinternal",
        TABLE,
    )
    assert [row["tgname"] for row in triggers] == [f"{TABLE}_notify"]
    assert triggers[0]["tgtype"] & 1 == 0, "FOR EACH STATEMENT (bit 0 set means per row)"
    notified: list[str] = []
    await claims.add_listener(TABLE, lambda *args: notified.append(args[2]))
    writer = await asyncpg.connect(claims_url)
    try:
        await writer.execute(
            f"INSERT INTO {TABLE} (event) SELECT '{{}}'::jsonb FROM generate_series(1, 3)"
        )
    finally:
        await writer.close()
    deadline = time.monotonic() + WAIT
    while not notified:
        assert time.monotonic() < deadline, "no NOTIFY"
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.2)  # a second notification, were there one, would be here by now
    assert notified == [TABLE]


@pytest.mark.node
async def test_exactly_the_committed_events_reach_the_js_client_in_order_woken_by_notify(
    tmp_path: Path, ours: str, claims_url: str, claims: asyncpg.Connection
) -> None:
    # A poll interval longer than the wait: only the NOTIFY can deliver in time.
    with outbox_server(tmp_path / "server", ours, claims_url, OUTBOX_POLL_INTERVAL="60") as server:
        user, claim = unique("usr"), unique("clm")
        channel = await server.subscribe("user", user_id=user)
        async with run_js_client(tmp_path, channel, transports=["websocket"]) as js:
            await js.expect("recovery")
            committed = []
            for n in range(12):
                commit = n % 3 != 1
                await change_claim(claims, claim, event(user, claim, n), commit=commit)
                committed += [n] if commit else []
            received = await js.events(len(committed), timeout=WAIT)
        assert [payload["data"]["n"] for payload in received] == committed
        assert [payload["sequence"] for payload in received] == list(range(1, len(committed) + 1))
        kept = await history(server, channel["channel_id"])
        assert [item["data"]["n"] for item in kept] == committed
        assert all(item["event_id"].startswith("evt_outbox_") for item in kept)
        await wait_until_empty(claims)


async def test_invalid_rows_are_rejected_with_their_problem_and_the_rest_consumed_in_order(
    tmp_path: Path, ours: str, claims_url: str, claims: asyncpg.Connection
) -> None:
    with outbox_server(tmp_path / "server", ours, claims_url, OUTBOX_POLL_INTERVAL="0.5") as server:
        user, claim = unique("usr"), unique("clm")
        channel = await server.subscribe("user", user_id=user)
        rows = [
            event(user, claim, 0),
            event(user, claim, 1, event_type="claim_exploded"),  # the schema refuses it
            event(user, claim, 2, data={"blob": "x" * 20_000}),  # the domain refuses it
            {key: value for key, value in event(user, claim, 3).items() if key != "user_id"},
            event(user, claim, 4, event_id=unique("evt")),
            event(user, claim, 5),
        ]
        # One statement, one transaction: the bad rows sit between the good ones.
        await claims.execute(
            f"INSERT INTO {TABLE} (event) SELECT unnest($1::jsonb[])",
            [json.dumps(row) for row in rows],
        )
        kept = await wait_for_history(server, channel["channel_id"], 3)
        assert [item["data"].get("n") for item in kept] == [0, 4, 5]
        assert [item["sequence"] for item in kept] == [1, 2, 3]
        assert kept[1]["event_id"] == rows[4]["event_id"], "the row's own event_id is kept"
        await wait_until_empty(claims)
        rejected = await claims.fetch(
            f"SELECT id, event, problem FROM {TABLE}_rejected ORDER BY id"
        )
        assert [json.loads(row["event"]) for row in rejected] == rows[1:4]
        problems = [row["problem"] for row in rejected]
        assert problems[0].startswith("event_type:"), problems
        assert problems[1].startswith("data is larger than"), problems
        assert problems[2].startswith("user_id:"), problems
        async with server.client() as http:
            ready = (await http.get("/api/v1/health/ready")).json()
            scrape = (await http.get("/metrics")).text
        assert ready["checks"]["outbox"] == "ok", ready
        assert 'claims_realtime_outbox_rows_total{outcome="consumed"} 3.0' in scrape
        assert 'claims_realtime_outbox_rows_total{outcome="rejected"} 3.0' in scrape


async def test_a_lost_notify_is_picked_up_by_polling(
    tmp_path: Path, ours: str, claims_url: str, claims: asyncpg.Connection
) -> None:
    with outbox_server(tmp_path / "server", ours, claims_url, OUTBOX_POLL_INTERVAL="0.5") as server:
        user, claim = unique("usr"), unique("clm")
        channel = await server.subscribe("user", user_id=user)
        await claims.execute(f"ALTER TABLE {TABLE} DISABLE TRIGGER {TABLE}_notify")
        await change_claim(claims, claim, event(user, claim, 7))
        kept = await wait_for_history(server, channel["channel_id"], 1)
        assert [item["data"]["n"] for item in kept] == [7]


async def consumed(server: Server) -> float:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=5) as http:
        scrape = (await http.get("/metrics")).text
    for line in scrape.splitlines():
        if line.startswith('claims_realtime_outbox_rows_total{outcome="consumed"}'):
            return float(line.split()[-1])
    return 0.0


@pytest.mark.scaleout
async def test_two_processes_consume_once_in_order_and_one_takes_over_when_the_other_is_killed(
    tmp_path: Path, ours: str, claims_url: str, claims: asyncpg.Connection
) -> None:
    env = {"OUTBOX_URL": claims_url, "OUTBOX_POLL_INTERVAL": "0.5"}
    with services.server_pair(tmp_path, ours, **env) as (first, second):
        user, claim = unique("usr"), unique("clm")
        channel = await first.subscribe("user", user_id=user)
        for n in range(20):
            await change_claim(claims, claim, event(user, claim, n))
        await wait_for_history(second, channel["channel_id"], 20)
        counts = [await consumed(server) for server in (first, second)]
        assert sorted(counts) == [0.0, 20.0], "exactly one process consumed"
        leader, survivor = (first, second) if counts[0] else (second, first)
        key = lock_key(TABLE) & 0xFFFFFFFFFFFFFFFF  # a bigint key: classid, objid its halves
        holders = await claims.fetchval(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
            "AND classid::text::bigint = $1 AND objid::text::bigint = $2",
            key >> 32,
            key & 0xFFFFFFFF,
        )
        assert holders == 1

        async def write(first_n: int, count: int) -> None:
            for n in range(first_n, first_n + count):
                await change_claim(claims, claim, event(user, claim, n))
                await asyncio.sleep(0.01)

        writer = asyncio.create_task(write(20, 40))
        await asyncio.sleep(0.15)  # some consumed by the leader, some waiting
        leader.stop(kill=True)
        await writer
        kept = await wait_for_history(survivor, channel["channel_id"], 60)
        await asyncio.sleep(1)  # a duplicate delivery, were there one, would show by now
        kept = await history(survivor, channel["channel_id"])
        assert [item["data"]["n"] for item in kept] == list(range(60))
        assert [item["sequence"] for item in kept] == list(range(1, 61))
        assert await consumed(survivor) > 0
        await wait_until_empty(claims)


SAME_DATABASE_TABLE = "claims_outbox_here"


@pytest.fixture
def shared_url() -> Iterator[str]:
    """Our database holding the outbox too, under a table name of its own."""
    with services.migrated_database("crt_outbox_same") as url:
        subprocess.run(
            [CLI, "outbox", "init"],
            env={**os.environ, "OUTBOX_URL": url, "OUTBOX_TABLE": SAME_DATABASE_TABLE},
            capture_output=True,
            timeout=60,
            check=True,
        )
        yield url


async def test_the_outbox_may_live_in_our_own_database_under_another_name(
    tmp_path: Path, shared_url: str
) -> None:
    table = SAME_DATABASE_TABLE
    with outbox_server(tmp_path / "server", shared_url, shared_url, OUTBOX_TABLE=table) as server:
        user, claim = unique("usr"), unique("clm")
        channel = await server.subscribe("user", user_id=user)
        connection = await asyncpg.connect(shared_url)
        try:
            async with connection.transaction():
                await connection.execute(
                    f"INSERT INTO {table} (event) SELECT unnest($1::jsonb[])",
                    [json.dumps(event(user, claim, n)) for n in range(3)],
                )
        finally:
            await connection.close()
        kept = await wait_for_history(server, channel["channel_id"], 3)
        assert [item["data"]["n"] for item in kept] == [0, 1, 2]
        assert [item["sequence"] for item in kept] == [1, 2, 3]


async def ready_checks(server: Server) -> dict[str, str]:
    async with server.client() as http:
        response = await http.get("/api/v1/health/ready")
    body = response.json()
    return dict(body["checks"])


async def test_while_our_database_is_down_every_row_waits_and_is_consumed_once_it_is_back(
    tmp_path: Path, ours: str, claims_url: str, claims: asyncpg.Connection
) -> None:
    parts = urlsplit(services.POSTGRES_ADMIN_URL)
    with TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5432) as proxy:
        through_proxy = urlsplit(ours)._replace(netloc=f"postgres@127.0.0.1:{proxy.port}")
        with Server(
            tmp_path / "server",
            DATABASE_URL=through_proxy.geturl(),
            OUTBOX_URL=claims_url,
            OUTBOX_POLL_INTERVAL="0.2",
        ) as server:
            user, claim = unique("usr"), unique("clm")
            channel = await server.subscribe("user", user_id=user)
            proxy.cut()
            deadline = time.monotonic() + WAIT
            while (await ready_checks(server))["database"] != "unavailable":
                assert time.monotonic() < deadline, "the server did not notice the outage"
                await asyncio.sleep(0.1)
            for n in range(3):
                await change_claim(claims, claim, event(user, claim, n))
            await asyncio.sleep(1.0)  # five polls: a consumer that dropped rows would have
            assert await claims.fetchval(f"SELECT count(*) FROM {TABLE}") == 3
            assert await claims.fetchval(f"SELECT count(*) FROM {TABLE}_rejected") == 0
            proxy.restore()
            kept = await wait_for_history(server, channel["channel_id"], 3)
            assert [item["data"]["n"] for item in kept] == [0, 1, 2]
            assert [item["sequence"] for item in kept] == [1, 2, 3]
            await wait_until_empty(claims)


async def test_an_unreachable_outbox_is_reported_not_fatal_and_consumed_again_once_back(
    tmp_path: Path, ours: str, claims_url: str, claims: asyncpg.Connection
) -> None:
    parts = urlsplit(services.POSTGRES_ADMIN_URL)
    with TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5432) as proxy:
        through_proxy = urlsplit(claims_url)._replace(netloc=f"postgres@127.0.0.1:{proxy.port}")
        with outbox_server(
            tmp_path / "server", ours, through_proxy.geturl(), OUTBOX_POLL_INTERVAL="0.2"
        ) as server:
            user, claim = unique("usr"), unique("clm")
            channel = await server.subscribe("user", user_id=user)
            deadline = time.monotonic() + WAIT
            while (await ready_checks(server)).get("outbox") != "ok":
                assert time.monotonic() < deadline, await ready_checks(server)
                await asyncio.sleep(0.1)
            proxy.cut()
            while (await ready_checks(server))["outbox"] != "unavailable":
                assert time.monotonic() < deadline, await ready_checks(server)
                await asyncio.sleep(0.1)
            async with server.client() as http:
                assert (await http.get("/api/v1/health/ready")).status_code == 200
            for n in range(3):
                await change_claim(claims, claim, event(user, claim, n))
            proxy.restore()
            kept = await wait_for_history(server, channel["channel_id"], 3)
            assert [item["data"]["n"] for item in kept] == [0, 1, 2]
            deadline = time.monotonic() + WAIT
            while (await ready_checks(server))["outbox"] != "ok":
                assert time.monotonic() < deadline, await ready_checks(server)
                await asyncio.sleep(0.1)


async def wait_for_blocked(url: str, statement: str) -> None:
    """Until a session in the database at `url` waits on a lock in `statement`."""
    watcher = await asyncpg.connect(url)
    try:
        deadline = time.monotonic() + WAIT
        while not await watcher.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock' AND query ILIKE $1",
            f"{statement}%",
        ):
            assert time.monotonic() < deadline, f"no {statement} waiting on a lock"
            await asyncio.sleep(0.05)
    finally:
        await watcher.close()


@pytest.mark.parametrize(
    "database, lock, statement",
    [
        # Killed before our commit: recording waits on our table.
        ("ours", "LOCK TABLE claim_event IN EXCLUSIVE MODE", "INSERT"),
        # Killed after our commit, before the rows were deleted: the DELETE waits on them.
        ("claims", f"SELECT id FROM {TABLE} FOR UPDATE", "DELETE"),
    ],
    ids=["before-our-commit", "after-our-commit"],
)
async def test_a_consumer_killed_mid_batch_loses_nothing_and_records_each_event_once(
    tmp_path: Path,
    ours: str,
    claims_url: str,
    claims: asyncpg.Connection,
    database: str,
    lock: str,
    statement: str,
) -> None:
    user, claim = unique("usr"), unique("clm")
    with Server(tmp_path / "plain", DATABASE_URL=ours) as plain:
        channel = await plain.subscribe("user", user_id=user)
    for n in range(10):  # no consumer runs yet: ten rows wait, one batch
        await change_claim(claims, claim, event(user, claim, n))
    locked_url = ours if database == "ours" else claims_url
    locker = await asyncpg.connect(locked_url)
    transaction = locker.transaction()
    await transaction.start()
    await locker.execute(lock)
    server = outbox_server(tmp_path / "server", ours, claims_url, OUTBOX_POLL_INTERVAL="0.2")
    server.start()
    try:
        await wait_for_blocked(locked_url, statement)
        recorded = await history(server, channel["channel_id"])
        assert len(recorded) == (0 if database == "ours" else 10)
        server.stop(kill=True)
    finally:
        await transaction.rollback()
        await locker.close()
    assert await claims.fetchval(f"SELECT count(*) FROM {TABLE}") == 10, "every row kept"
    with server:  # the same process again: reads the batch again, records what is missing
        await wait_until_empty(claims)
        await asyncio.sleep(0.5)  # a duplicate, were there one, would be recorded by now
        kept = await history(server, channel["channel_id"])
        assert [item["data"]["n"] for item in kept] == list(range(10))
        assert [item["sequence"] for item in kept] == list(range(1, 11))
        assert await consumed(server) == 10.0


async def test_batch_after_batch_is_consumed_in_order_with_the_invalid_rows_rejected(
    tmp_path: Path, ours: str, claims_url: str, claims: asyncpg.Connection
) -> None:
    env = {"OUTBOX_POLL_INTERVAL": "0.5", "OUTBOX_BATCH_SIZE": "7"}
    with outbox_server(tmp_path / "server", ours, claims_url, **env) as server:
        user, claim = unique("usr"), unique("clm")
        channel = await server.subscribe("user", user_id=user)
        rows = [
            event(user, claim, n, event_type="claim_exploded")
            if n % 9 == 4
            else event(user, claim, n)
            for n in range(100)
        ]
        # One commit of 100 rows: 15 batches of 7, one run after another.
        await claims.execute(
            f"INSERT INTO {TABLE} (event) SELECT unnest($1::jsonb[])",
            [json.dumps(row) for row in rows],
        )
        valid = [n for n in range(100) if n % 9 != 4]
        kept = await wait_for_history(server, channel["channel_id"], len(valid))
        await wait_until_empty(claims)
        await asyncio.sleep(0.5)  # a duplicate, were there one, would be recorded by now
        kept = await history(server, channel["channel_id"])
        assert [item["data"]["n"] for item in kept] == valid
        assert [item["sequence"] for item in kept] == list(range(1, len(valid) + 1))
        rejected = await claims.fetch(f"SELECT event FROM {TABLE}_rejected ORDER BY id")
        assert [json.loads(row["event"])["data"]["n"] for row in rejected] == [
            n for n in range(100) if n % 9 == 4
        ]
        async with server.client() as http:
            scrape = (await http.get("/metrics")).text
        assert f'claims_realtime_outbox_rows_total{{outcome="consumed"}} {len(valid)}.0' in scrape
        assert "claims_realtime_outbox_batch_size_rows_count 15.0" in scrape
