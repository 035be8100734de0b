"""Crash safety: `kill -9` a server while a publisher ingests and clients receive.

Every event that got a 202 is in history after the restart, each channel's sequences are
gap-free (event_count counts exactly the accepted events routed to it), and every client
that resumes gets every event it missed exactly once, in order. On one process (SQLite, or
PostgreSQL with `--database=postgres`), and with one of two processes over PostgreSQL and
Redis killed, its clients resuming on the other.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from claims_realtime.realtime.client import ChannelClient, Recovery
from tests import services
from tests.helpers import PUBLISHER_KEY, unique
from tests.server import Server

WAIT = 30.0
BATCH = 10


class Publisher:
    """Publishes numbered batches, retrying each one unchanged (same event_ids) until it
    gets a 202, across crashes and restarts, like a careful producer."""

    def __init__(self, targets: list[Server], org: str, owner: str) -> None:
        self.targets = targets
        self.org, self.owner = org, owner
        #: Every event that got a 202, in the order accepted.
        self.accepted: list[dict[str, Any]] = []
        #: Attempts answered by anything but a 202 (connection refused or reset, 503).
        self.failures = 0
        self.batches = 0
        #: Set once the crash happened: past `hold_at` batches the publisher waits for it, so
        #: that the stream is never over before the kill, however slow the machine.
        self.crashed = asyncio.Event()
        self.hold_at = 0

    def batch(self) -> list[dict[str, Any]]:
        return [
            {
                "event_id": unique("evt"),
                "event_type": "status_changed",
                "claim_id": unique("clm"),
                "organisation_id": self.org,
                "user_id": self.owner if i % 3 == 0 else unique("usr"),
            }
            for i in range(BATCH)
        ]

    async def run(self, batches: int) -> None:
        deadline = time.monotonic() + 4 * WAIT
        self.hold_at = batches * 2 // 3
        for number in range(batches):
            if number == self.hold_at:
                await self.crashed.wait()
            events = self.batch()
            while True:
                assert time.monotonic() < deadline, "publishing never got through"
                target = self.targets[(number + self.failures) % len(self.targets)]
                try:
                    async with target.client() as http:
                        response = await http.post(
                            "/api/v1/claim-events/batch",
                            json={"events": events},
                            headers={"X-Publisher-Key": PUBLISHER_KEY},
                        )
                except httpx.TransportError:
                    response = None
                if response is not None and response.status_code == 202:
                    break
                assert response is None or response.status_code == 503, response.text
                self.failures += 1
                await asyncio.sleep(0.05)
            self.accepted.extend(events)
            self.batches += 1

    def for_owner(self) -> list[str]:
        return [e["event_id"] for e in self.accepted if e["user_id"] == self.owner]

    def for_org(self) -> list[str]:
        return [e["event_id"] for e in self.accepted]


async def collect(client: ChannelClient, count: int) -> list[dict[str, Any]]:
    """The next `count` events; fails on a timeout."""
    received: list[dict[str, Any]] = []
    deadline = time.monotonic() + WAIT
    while len(received) < count:
        message = await client.next(max(0.1, deadline - time.monotonic()))
        if not isinstance(message, Recovery):
            received.append(message)
    return received


async def event_count(server: Server, channel_id: str) -> int:
    async with server.client() as http:
        response = await http.get(f"/api/v1/realtime-subscriptions/{channel_id}")
    assert response.status_code == 200, response.text
    return int(response.json()["event_count"])


async def wait_until(condition: Any, what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


def client_on(
    server: Server, channel: dict[str, Any], last_sequence: int | None = None
) -> ChannelClient:
    path = channel["websocket_url"].split("/channels/", 1)[1]
    return ChannelClient(
        f"ws://127.0.0.1:{server.port}/channels/{path}",
        channel["channel_token"],
        last_sequence=last_sequence,
        reconnection_delay=0.2,
    )


async def test_kill_9_mid_stream_loses_nothing_accepted_and_clients_resume_exactly(
    own_server: Server,
) -> None:
    server = own_server
    server.env.update(NODE_HEARTBEAT="1", NODE_STALE_AFTER="3")
    server.start()
    org, owner = unique("org"), unique("usr")
    channels = [
        await server.subscribe("organisation", organisation_id=org, user_id="usr_c"),
        await server.subscribe("organisation", organisation_id=org, user_id="usr_d"),
        await server.subscribe("user", user_id=owner),
    ]
    clients = [client_on(server, channel) for channel in channels]
    for client in clients:
        await client.connect()
    publisher = Publisher([server], org, owner)
    publishing = asyncio.create_task(publisher.run(batches=60))
    try:
        # Kill it while the publisher is sending and the clients are receiving.
        await wait_until(lambda: publisher.batches >= 20, "20 batches")
        await wait_until(lambda: clients[0].last_sequence, "the first deliveries")
        server.stop(kill=True)
        publisher.crashed.set()
        before_restart = [client.last_sequence or 0 for client in clients]
        await asyncio.to_thread(server.start)  # same port, same database
        await publishing
        assert publisher.failures > 0, "the crash was not mid-stream"

        expected = [publisher.for_org(), publisher.for_org(), publisher.for_owner()]
        for channel, client, ids, had in zip(
            channels, clients, expected, before_restart, strict=True
        ):
            # History holds every accepted event of the channel, sequences gap-free.
            assert await event_count(server, channel["channel_id"]) == len(ids)
            # The client, reconnecting by itself with its last_sequence, got every event
            # of the channel across the crash: each exactly once, in order.
            got = await collect(client, len(ids))
            assert [e["sequence"] for e in got] == list(range(1, len(ids) + 1))
            assert [e["event_id"] for e in got] == ids
            with pytest.raises(TimeoutError):
                await client.next(0.3)
            first, resumed = client.recoveries  # connected, then resumed once after restart
            assert first.resumed_from == 0
            # From where it was (frames already on their way were still read after the
            # kill), with nothing beyond history's reach.
            assert resumed.resumed_from >= had and resumed.recovered
            assert resumed.unavailable == 0

        # A client that was away through all of it, resuming from sequence 0.
        async with client_on(server, channels[2], last_sequence=0) as late:
            replayed = await collect(late, len(expected[2]))
            assert [e["event_id"] for e in replayed] == expected[2]
    finally:
        publishing.cancel()
        for client in clients:
            await client.close()


@pytest.fixture(scope="module")
def crash_db() -> Iterator[str]:
    with services.migrated_database("crt_crash") as url:
        yield url


@pytest.fixture
def pair(tmp_path: Path, crash_db: str) -> Iterator[tuple[Server, Server]]:
    with services.server_pair(tmp_path, crash_db) as servers:
        yield servers


@pytest.mark.scaleout
async def test_one_of_two_processes_killed_its_clients_resume_on_the_other(
    pair: tuple[Server, Server],
) -> None:
    a, b = pair
    org, owner = unique("org"), unique("usr")
    channels = [
        await a.subscribe("organisation", organisation_id=org, user_id="usr_c"),
        await b.subscribe("organisation", organisation_id=org, user_id="usr_d"),
        await a.subscribe("user", user_id=owner),
    ]
    on_b = [client_on(b, channel) for channel in channels]
    for client in on_b:
        await client.connect()
    publisher = Publisher([a, b], org, owner)  # ingests on both processes
    publishing = asyncio.create_task(publisher.run(batches=50))
    survivors: list[ChannelClient] = []
    try:
        await wait_until(lambda: publisher.batches >= 15, "15 batches")
        await wait_until(lambda: on_b[0].last_sequence, "the first deliveries")
        b.stop(kill=True)
        publisher.crashed.set()
        had = [client.last_sequence or 0 for client in on_b]
        for client in on_b:
            await client.close()  # it would only retry the dead process
        survivors = [
            client_on(a, channel, last_sequence=last)
            for channel, last in zip(channels, had, strict=True)
        ]
        for client in survivors:
            await client.connect()
        await publishing
        assert publisher.failures > 0, "the kill was not mid-stream"

        expected = [publisher.for_org(), publisher.for_org(), publisher.for_owner()]
        for channel, client, ids, last in zip(channels, survivors, expected, had, strict=True):
            assert await event_count(a, channel["channel_id"]) == len(ids)
            rest = await collect(client, len(ids) - last)
            assert [e["sequence"] for e in rest] == list(range(last + 1, len(ids) + 1))
            assert [e["event_id"] for e in rest] == ids[last:]
            with pytest.raises(TimeoutError):
                await client.next(0.3)
            assert client.recoveries[0].resumed_from == last and client.recoveries[0].recovered
    finally:
        publishing.cancel()
        for client in on_b + survivors:
            await client.close()
