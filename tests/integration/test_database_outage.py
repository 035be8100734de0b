"""PostgreSQL briefly unavailable: 503s, never a 202 for what was not stored, never a 500,
and recovery without a restart.

The server reaches PostgreSQL through a TCP proxy (tests/tcp_proxy.py) that the test cuts
and restores: the machine's PostgreSQL keeps running for everyone else.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from claims_realtime.realtime.client import TRANSIENT_CODES, ChannelClient, Recovery
from tests import services
from tests.helpers import PUBLISHER_KEY, assert_problem, connect_refusal, unique
from tests.server import Server
from tests.tcp_proxy import TcpProxy

WAIT = 20.0
KEY = {"X-Publisher-Key": PUBLISHER_KEY}


@pytest.fixture(scope="module")
def outage_db() -> Iterator[str]:
    with services.migrated_database("crt_outage") as url:
        yield url


@pytest.fixture
def proxy() -> Iterator[TcpProxy]:
    parts = urlsplit(services.POSTGRES_ADMIN_URL)
    with TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5432) as running:
        yield running


@pytest.fixture
def behind_proxy(tmp_path: Path, outage_db: str, proxy: TcpProxy) -> Iterator[Server]:
    """A server whose only way to its database is the proxy."""
    url = urlsplit(outage_db)._replace(netloc=f"postgres@127.0.0.1:{proxy.port}").geturl()
    server = Server(tmp_path / "server", DATABASE_URL=url, DATABASE_POOL_SIZE="4")
    server.start()
    try:
        yield server
    finally:
        server.stop()


def claim_event(org: str) -> dict[str, Any]:
    return {
        "event_id": unique("evt"),
        "event_type": "status_changed",
        "claim_id": unique("clm"),
        "organisation_id": org,
        "user_id": "usr_owner",
    }


async def collect(client: ChannelClient, count: int) -> list[dict[str, Any]]:
    received: list[dict[str, Any]] = []
    deadline = time.monotonic() + WAIT
    while len(received) < count:
        message = await client.next(max(0.1, deadline - time.monotonic()))
        if not isinstance(message, Recovery):
            received.append(message)
    return received


async def test_outage_answers_503_then_recovers_by_itself_losing_nothing(
    behind_proxy: Server, proxy: TcpProxy
) -> None:
    server = behind_proxy
    org = unique("org")
    channel = await server.subscribe("organisation", organisation_id=org, user_id="usr_c")
    channel_id = channel["channel_id"]
    accepted: list[str] = []

    async with (
        ChannelClient(
            channel["websocket_url"], channel["channel_token"], reconnection_delay=0.2
        ) as client,
        server.client() as http,
    ):
        for _ in range(3):
            event = claim_event(org)
            response = await http.post("/api/v1/claim-events", json=event, headers=KEY)
            assert response.status_code == 202, response.text
            accepted.append(event["event_id"])

        proxy.cut()

        refused = claim_event(org)
        body = assert_problem(
            await http.post("/api/v1/claim-events", json=refused, headers=KEY), 503
        )
        assert body["checks"] == {"database": "unavailable"}
        assert_problem(
            await http.post(
                "/api/v1/claim-events/batch",
                json={"events": [claim_event(org), claim_event(org)]},
                headers=KEY,
            ),
            503,
        )
        for response in (
            await http.get(f"/api/v1/realtime-subscriptions/{channel_id}"),
            await http.get("/api/v1/realtime-subscriptions"),
            await http.post("/api/v1/realtime-subscriptions/user", json={"user_id": unique("usr")}),
            await http.put(f"/api/v1/realtime-subscriptions/{channel_id}/reconnect"),
        ):
            assert_problem(response, 503)
        ready = await http.get("/api/v1/health/ready")
        assert_problem(ready, 503)
        assert ready.json()["checks"]["database"] == "unavailable"
        assert (await http.get("/api/v1/health/live")).status_code == 200
        # A socket connecting meanwhile is told to come back later, by a code clients retry.
        refusal = await connect_refusal(
            server.base_url, f"/channels/{channel_id}", {"token": channel["channel_token"]}
        )
        assert refusal is not None and refusal["data"] == {"code": "unavailable"}, refusal
        assert "unavailable" in TRANSIENT_CODES

        proxy.restore()

        # The publisher retries the refused event, unchanged, until it is accepted: the
        # server reconnects by itself, no restart.
        deadline = time.monotonic() + WAIT
        while True:
            response = await http.post("/api/v1/claim-events", json=refused, headers=KEY)
            if response.status_code == 202:
                break
            assert_problem(response, 503)
            assert time.monotonic() < deadline, "ingestion never recovered"
            await asyncio.sleep(0.2)
        assert response.json()["duplicate"] is False
        accepted.append(refused["event_id"])
        assert (await http.get("/api/v1/health/ready")).status_code == 200
        after = claim_event(org)
        response = await http.post("/api/v1/claim-events", json=after, headers=KEY)
        assert response.status_code == 202, response.text
        accepted.append(after["event_id"])

        # Every accepted event, once, in order, gap-free: nothing refused slipped in.
        got = await collect(client, len(accepted))
        assert [e["event_id"] for e in got] == accepted
        assert [e["sequence"] for e in got] == list(range(1, len(accepted) + 1))
        with pytest.raises(TimeoutError):
            await client.next(0.3)
        detail = await http.get(f"/api/v1/realtime-subscriptions/{channel_id}")
        assert detail.status_code == 200 and detail.json()["event_count"] == len(accepted)
    assert "unhandled error" not in server.log_path.read_text()


def test_proxy_refuses_while_cut_and_accepts_after_restore(proxy: TcpProxy) -> None:
    """The helper itself: a cut really refuses, a restore really serves again."""
    services.require_postgres()
    with pytest.raises(httpx.ConnectError):
        proxy.cut()
        httpx.get(f"http://127.0.0.1:{proxy.port}/", timeout=2)
    proxy.restore()
    with pytest.raises(httpx.RemoteProtocolError):  # PostgreSQL does not speak HTTP
        httpx.get(f"http://127.0.0.1:{proxy.port}/", timeout=5)
    assert proxy.accepted >= 1
