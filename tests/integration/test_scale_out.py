"""Several server processes over one PostgreSQL and one Redis: the same guarantees.

Clients attached to either process get every event of their channels exactly once, in
sequence order, whichever process recorded it; a client that leaves one process and comes
back on the other is replayed exactly what it missed; a channel is `disconnected` only when
no process holds a socket of it; and when Redis goes away, nothing accepted is lost.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import socketio

from claims_realtime.realtime.client import ChannelClient, Recovery
from tests import services
from tests.helpers import ROOT, connect_refusal, unique
from tests.server import Server, free_port

pytestmark = pytest.mark.scaleout

WAIT = 15.0


@pytest.fixture(scope="module")
def scale_db() -> Iterator[str]:
    with services.migrated_database("crt_scale") as url:
        yield url


class RedisServer:
    """A private redis-server on a free port, to stop and start at will."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while (
            subprocess.run(
                ["redis-cli", "-p", str(self.port), "ping"], capture_output=True, text=True
            ).stdout.strip()
            != "PONG"
        ):
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()
            self.process = None


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    services.require_program("redis-server")
    redis = RedisServer()
    redis.start()
    try:
        yield redis
    finally:
        redis.stop()


@pytest.fixture
def pair(tmp_path: Path, scale_db: str) -> Iterator[tuple[Server, Server]]:
    """Two processes on two ports: one PostgreSQL, the machine's Redis."""
    with services.server_pair(tmp_path, scale_db) as servers:
        yield servers


def claim_event(org: str, user: str) -> dict[str, Any]:
    return {
        "event_type": "status_changed",
        "claim_id": unique("clm"),
        "organisation_id": org,
        "user_id": user,
    }


def on(server: Server, channel: dict[str, Any]) -> ChannelClient:
    """A client of `channel` attached to `server` (whichever process created it)."""
    path = channel["websocket_url"].split("/channels/", 1)[1]
    return ChannelClient(
        f"ws://127.0.0.1:{server.port}/channels/{path}",
        channel["channel_token"],
        reconnection_delay=0.2,
    )


async def collect(client: ChannelClient, count: int) -> list[dict[str, Any]]:
    received: list[dict[str, Any]] = []
    deadline = time.monotonic() + WAIT
    while len(received) < count:
        message = await client.next(max(0.1, deadline - time.monotonic()))
        if not isinstance(message, Recovery):
            received.append(message)
    return received


async def status_of(server: Server, channel_id: str) -> str:
    async with server.client() as http:
        response = await http.get(f"/api/v1/realtime-subscriptions/{channel_id}")
    return str(response.json()["status"])


async def eventually(server: Server, channel_id: str, status: str) -> None:
    deadline = time.monotonic() + WAIT
    while await status_of(server, channel_id) != status:
        assert time.monotonic() < deadline, f"{channel_id} never became {status}"
        await asyncio.sleep(0.1)


async def test_concurrent_ingestion_on_both_processes_reaches_every_client_once_in_order(pair):
    a, b = pair
    org, owner = unique("org"), unique("usr")
    org_channels = [
        await (a if i % 2 else b).subscribe("organisation", organisation_id=org, user_id="usr_c")
        for i in range(4)
    ]
    owner_channels = [await a.subscribe("user", user_id=owner) for _ in range(2)]
    clients = [
        on(a, org_channels[0]),
        on(b, org_channels[1]),
        on(a, org_channels[2]),
        on(b, org_channels[3]),
        on(a, owner_channels[0]),
        on(b, owner_channels[1]),
    ]
    for client in clients:
        await client.connect()

    async def publish(server: Server, count: int) -> list[dict[str, Any]]:
        events = [claim_event(org, owner if i % 3 == 0 else unique("usr")) for i in range(count)]
        for start in range(0, count, 10):
            response = await server.publish_batch(events[start : start + 10])
            assert response.status_code == 202, response.text
        return events

    batches = await asyncio.gather(publish(a, 150), publish(b, 150))
    published = [event for batch in batches for event in batch]
    for_owner = {e["claim_id"] for e in published if e["user_id"] == owner}

    try:
        for client in clients[:4]:
            got = await collect(client, 300)
            assert [e["sequence"] for e in got] == list(range(1, 301))
            assert {e["claim_id"] for e in got} == {e["claim_id"] for e in published}
        for client in clients[4:]:
            got = await collect(client, len(for_owner))
            assert [e["sequence"] for e in got] == list(range(1, len(for_owner) + 1))
            assert {e["claim_id"] for e in got} == for_owner
    finally:
        for client in clients:
            await client.close()


async def test_a_client_that_left_one_process_is_replayed_exactly_on_the_other(pair):
    a, b = pair
    org = unique("org")
    channel = await a.subscribe("organisation", organisation_id=org, user_id="usr_c")
    async with on(a, channel) as first:
        await a.publish(**claim_event(org, "u"))
        await b.publish(**claim_event(org, "u"))
        assert [e["sequence"] for e in await collect(first, 2)] == [1, 2]
    missed = [await server.publish(**claim_event(org, "u")) for server in (a, b, a)]
    async with b.client() as http:
        reconnect = await http.put(
            f"/api/v1/realtime-subscriptions/{channel['channel_id']}/reconnect"
        )
    assert reconnect.json()["missed_events"] == 3

    async with on(b, channel) as second:
        recovery = await second.next(WAIT)
        assert isinstance(recovery, Recovery) and recovery.resumed_from == 2
        replayed = await collect(second, 3)
        assert [e["sequence"] for e in replayed] == [3, 4, 5]
        assert [e["event_id"] for e in replayed] == [m["event_id"] for m in missed]
        await a.publish(**claim_event(org, "u"))  # live, announced by the other process
        assert [e["sequence"] for e in await collect(second, 1)] == [6]


async def test_disconnected_only_when_no_process_holds_a_socket(pair):
    a, b = pair
    channel = await a.subscribe("user", user_id=unique("usr"))
    channel_id = channel["channel_id"]
    on_a, on_b = on(a, channel), on(b, channel)
    await on_a.connect()
    await on_b.connect()
    await eventually(a, channel_id, "connected")
    await on_a.close()
    await asyncio.sleep(0.5)
    assert await status_of(b, channel_id) == "connected"  # b still holds one
    await on_b.close()
    await eventually(a, channel_id, "disconnected")


async def test_a_crashed_process_does_not_keep_its_channels_connected(pair):
    a, b = pair
    channel = await a.subscribe("user", user_id=unique("usr"))
    # A plain client that does not try to reconnect to the process about to die.
    sio = socketio.AsyncClient(reconnection=False)
    namespace = "/channels/" + channel["channel_id"]
    await sio.connect(
        b.base_url,
        namespaces=[namespace],
        auth={"token": channel["channel_token"]},
        transports=["websocket"],
    )
    await eventually(a, channel["channel_id"], "connected")
    b.stop(kill=True)  # no goodbye: its presence rows stay until a reaps them
    try:
        await eventually(a, channel["channel_id"], "disconnected")
    finally:
        await sio.disconnect()


async def test_delete_on_one_process_closes_the_sockets_on_the_other(pair):
    a, b = pair
    channel = await a.subscribe("user", user_id=unique("usr"))
    client = on(b, channel)
    await client.connect()
    async with a.client() as http:
        await http.delete(f"/api/v1/realtime-subscriptions/{channel['channel_id']}")
    deadline = time.monotonic() + WAIT
    with pytest.raises(Exception, match="closed"):
        while True:
            message = await client.next(max(0.1, deadline - time.monotonic()))
            assert isinstance(message, Recovery), message
    await client.close()


async def test_bad_credentials_count_against_an_address_in_every_process(
    tmp_path: Path, scale_db: str
) -> None:
    """Four bad tokens allowed per address: two on each process block it on both. Counted
    per process, each would have seen two and let the right token in."""
    with services.server_pair(tmp_path, scale_db, CONNECT_FAILURE_LIMIT="4") as (a, b):
        channel = await a.subscribe("user", user_id=unique("usr"))
        namespace = f"/channels/{channel['channel_id']}"
        for server in (a, a, b, b):
            refusal = await connect_refusal(server.base_url, namespace, {"token": "guess"})
            assert refusal is not None and refusal["data"]["code"] == "invalid_token", refusal
        good = {"token": channel["channel_token"]}
        for server in (a, b):
            # The other process's failures arrive over Redis pub/sub, within moments.
            deadline = time.monotonic() + WAIT
            while (refusal := await connect_refusal(server.base_url, namespace, good)) is None:
                assert time.monotonic() < deadline, f"{server.base_url} never counted the others'"
                await asyncio.sleep(0.1)
            assert refusal["data"]["code"] == "rate_limited", refusal


async def test_redis_outage_loses_nothing_and_recovers_by_itself(
    tmp_path: Path, scale_db: str, redis_server: RedisServer
):
    env = {"DATABASE_URL": scale_db, "REDIS_URL": redis_server.url}
    a, b = Server(tmp_path / "a", **env), Server(tmp_path / "b", **env)
    a.start()
    b.start()
    try:
        org = unique("org")
        channel = await a.subscribe("organisation", organisation_id=org, user_id="usr_c")
        async with on(b, channel) as client:
            await a.publish(**claim_event(org, "u"))
            assert [e["sequence"] for e in await collect(client, 1)] == [1]

            redis_server.stop()
            during = [await a.publish(**claim_event(org, "u")) for _ in range(5)]  # still 202
            async with b.client() as http:
                ready = await http.get("/api/v1/health/ready")
            assert ready.status_code == 503 and ready.json()["checks"]["redis"] == "unavailable"
            # Recorded, and delivered by reconciliation with the database meanwhile.
            got = await collect(client, 5)
            assert [e["event_id"] for e in got] == [d["event_id"] for d in during]

            redis_server.start()
            async with b.client() as http:
                deadline = time.monotonic() + WAIT
                while (await http.get("/api/v1/health/ready")).status_code != 200:
                    assert time.monotonic() < deadline, "readiness never recovered"
                    await asyncio.sleep(0.2)
            await a.publish(**claim_event(org, "u"))
            assert [e["sequence"] for e in await collect(client, 1)] == [7]
        with pytest.raises(TimeoutError):
            await client.next(0.3)
        assert "Redis fan-out lost" in (a.log_path.read_text() + b.log_path.read_text())
    finally:
        a.stop()
        b.stop()


@pytest.fixture
async def workers(tmp_path: Path, scale_db: str) -> AsyncIterator[Server]:
    services.require_redis()
    server = Server(
        tmp_path / "w", "--workers", "2", DATABASE_URL=scale_db, REDIS_URL=services.REDIS_URL
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def test_serve_workers_runs_processes_that_share_delivery(workers: Server, scale_db: str):
    org = unique("org")
    channels = [
        await workers.subscribe("organisation", organisation_id=org, user_id="usr_c")
        for _ in range(6)
    ]
    # --workers shares one port without sticky sessions: websocket only (see README).
    clients = [
        ChannelClient(c["websocket_url"], c["channel_token"], transports=["websocket"])
        for c in channels
    ]
    for client in clients:
        await client.connect()
    try:
        for _ in range(5):
            await workers.publish(**claim_event(org, "u"))
        for client in clients:
            assert [e["sequence"] for e in await collect(client, 5)] == [1, 2, 3, 4, 5]
        connection = await asyncpg.connect(scale_db)
        try:
            worker_nodes = await connection.fetchval(
                "SELECT count(*) FROM node WHERE started_at >= $1", workers.started_at
            )
        finally:
            await connection.close()
        assert worker_nodes == 2  # two processes serve this port, each a node
    finally:
        for client in clients:
            await client.close()


def test_workers_refuse_to_start_without_redis_and_postgresql(tmp_path: Path) -> None:
    from tests.server import CLI

    result = subprocess.run(
        [CLI, "serve", "--workers", "2"],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "DATA_DIR": str(tmp_path)},
    )
    assert result.returncode != 0 and "needs REDIS_URL" in result.stderr
