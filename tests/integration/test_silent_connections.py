"""Connections that go silent are closed by the server at the heartbeat deadline (ping
interval + ping timeout), and everything they held is given back: the TCP connection, its
file descriptor, the Engine.IO session. A client that keeps answering stays.

The server runs with a short heartbeat (PING_INTERVAL=2, PING_TIMEOUT=2) so that the
deadline is 4 s; the margin allowed past it covers a loaded 2-core machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import ClientConnection, connect

from claims_realtime.realtime.client import ChannelClient, Recovery
from tests.helpers import unique
from tests.server import Server

pytestmark = pytest.mark.integration

PING_INTERVAL = 2.0
PING_TIMEOUT = 2.0
DEADLINE = PING_INTERVAL + PING_TIMEOUT
#: Past the deadline: python-engineio's timers, the event loop under 1,000 closes at once.
MARGIN = 6.0
SILENT_CONNECTIONS = 1000


@pytest.fixture
def server(tmp_path_factory: pytest.TempPathFactory, postgres_url: str | None) -> Iterator[Server]:
    env = {"PING_INTERVAL": str(PING_INTERVAL), "PING_TIMEOUT": str(PING_TIMEOUT)}
    if postgres_url:
        env["DATABASE_URL"] = postgres_url
    srv = Server(tmp_path_factory.mktemp("silent"), **env)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


#: The server's database pool may open connections meanwhile (PostgreSQL): up to this many.
POOL_SIZE = 10


def open_descriptors(server: Server) -> int:
    assert server.process is not None
    return len(os.listdir(f"/proc/{server.process.pid}/fd"))


def client_connections(server: Server) -> int:
    """TCP connections the server process holds on its own port (its clients), from /proc:
    sockets among its descriptors whose local port is the server's, the listener left out."""
    assert server.process is not None
    pid = server.process.pid
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    count = 0
    for table in ("tcp", "tcp6"):
        with open(f"/proc/{pid}/net/{table}") as rows:
            for row in list(rows)[1:]:
                fields = row.split()
                local, state, inode = fields[1], fields[3], fields[9]
                listening = state == "0A"
                port = int(local.rsplit(":", 1)[1], 16)
                if inode in inodes and not listening and port == server.port:
                    count += 1
    return count


async def engineio_sessions(server: Server) -> float:
    async with server.client() as http:
        response = await http.get("/metrics")
    for family in text_string_to_metric_families(response.text):
        if family.name == "claims_realtime_engineio_sessions":
            return float(sum(sample.value for sample in family.samples))
    raise AssertionError("no claims_realtime_engineio_sessions metric")


async def open_silent(
    url: str, limit: asyncio.Semaphore, channel: dict[str, Any] | None
) -> ClientConnection:
    """A raw websocket that reads the Engine.IO OPEN, joins `channel` if given, and then
    says nothing, ever (no pong; `websockets`' own keepalive is off too).

    While it waits for its join it answers the server's pings: with a thousand joins queued
    on a loaded machine the answer can come after the heartbeat deadline, and a socket
    closed then was never the joined-and-silent one this is to open."""
    async with limit:
        ws = await connect(url, ping_interval=None, compression=None, open_timeout=30)
        opened = await asyncio.wait_for(ws.recv(), 30)
        assert isinstance(opened, str) and opened.startswith("0"), opened
        if channel is not None:
            namespace = f"/channels/{channel['channel_id']}"
            await ws.send(f"40{namespace}," + json.dumps({"token": channel["channel_token"]}))
            while not (message := str(await asyncio.wait_for(ws.recv(), 30))).startswith(
                f"40{namespace},"
            ):
                if message == "2":
                    await ws.send("3")
        return ws


@pytest.mark.parametrize(
    "joined",
    [
        pytest.param(True, id="joined-a-channel-then-silent"),
        pytest.param(False, id="never-sent-connect"),
    ],
)
async def test_a_thousand_silent_websockets_are_closed_and_give_back_their_descriptors(
    server: Server, joined: bool
) -> None:
    channel = await server.subscribe("user", user_id=unique("usr"))
    async with ChannelClient(channel["websocket_url"], channel["channel_token"]) as client:
        assert isinstance(await client.next(timeout=10), Recovery)
        before = open_descriptors(server)
        connected = client_connections(server)
        assert await engineio_sessions(server) == 1

        url = server.base_url.replace("http://", "ws://") + "/socket.io/?EIO=4&transport=websocket"
        # Few joins in flight at once: each socket's join then waits behind few others,
        # well inside the heartbeat, on a machine that also runs the other test pass.
        limit = asyncio.Semaphore(20)
        silent = await asyncio.gather(
            *(
                open_silent(url, limit, channel if joined else None)
                for _ in range(SILENT_CONNECTIONS)
            )
        )
        all_open = time.monotonic()

        # The server closes each one, TCP included: the client side sees it closed.
        await asyncio.wait_for(
            asyncio.gather(*(ws.wait_closed() for ws in silent)),
            timeout=DEADLINE + MARGIN,
        )
        closed_after = time.monotonic() - all_open
        assert closed_after < DEADLINE + MARGIN

        deadline = time.monotonic() + MARGIN
        while client_connections(server) > connected and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        assert client_connections(server) == connected
        assert open_descriptors(server) <= before + POOL_SIZE
        while await engineio_sessions(server) != 1 and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        assert await engineio_sessions(server) == 1

        # The subscriber that kept answering the heartbeat is still served, well past it.
        published = await server.publish(
            event_type="comment_added",
            claim_id=unique("clm"),
            organisation_id=unique("org"),
            user_id=channel["user_id"],
        )
        event = await client.next(timeout=10)
        assert isinstance(event, dict) and event["event_id"] == published["event_id"]


async def test_a_silent_long_polling_session_ends_at_the_deadline(server: Server) -> None:
    """The polling twin: a session whose client stops polling and never pongs is ended
    (its sid refused afterwards) within the deadline."""
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as http:
        opened = await http.get("/socket.io/", params={"EIO": "4", "transport": "polling"})
        assert opened.status_code == 200, opened.text
        sid = opened.text[opened.text.index('"sid":"') + 7 :].split('"', 1)[0]
        started = time.monotonic()
        await asyncio.sleep(DEADLINE)
        while time.monotonic() - started < DEADLINE + MARGIN:
            poll = await http.get(
                "/socket.io/", params={"EIO": "4", "transport": "polling", "sid": sid}
            )
            if poll.status_code == 400:
                break
            await asyncio.sleep(0.5)
        assert poll.status_code == 400, poll.text
        assert await engineio_sessions(server) == 0
