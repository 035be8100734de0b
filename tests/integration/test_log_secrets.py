"""No secret reaches the log at any level: a server at LOG_LEVEL=DEBUG in jwt mode serves a
channel (with a fallback webhook, set twice) over websocket and long-polling, ingestion with
the right and a wrong publisher key, and bearer tokens good and bad; then the whole log is
searched for every secret used.

uvicorn's websockets protocol logs every frame at DEBUG, abridged to its head and tail: the
tail of a Socket.IO CONNECT is the channel token (realtime.transport turns that off).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest
import socketio

from claims_realtime.realtime.client import ChannelClient, Recovery
from tests.helpers import PUBLISHER_KEY, WEBHOOK_SECRET_KEY, unique
from tests.server import Server
from tests.tokens import JWT_SECRET, bearer, make_token

pytestmark = pytest.mark.integration

WRONG_PUBLISHER_KEY = "wrong-publisher-key-" + "9" * 24
#: A literal public address: accepted without resolving a name, never sent to in this test.
FALLBACK = {"url": "https://93.184.215.14/claims", "after_seconds": 600}


@pytest.fixture
def server(tmp_path_factory: pytest.TempPathFactory, postgres_url: str | None) -> Iterator[Server]:
    env = {
        "LOG_LEVEL": "DEBUG",
        "AUTH_MODE": "jwt",
        "JWT_SECRET": JWT_SECRET,
        "WEBHOOK_SECRET_KEY": WEBHOOK_SECRET_KEY,
    }
    if postgres_url:
        env["DATABASE_URL"] = postgres_url
    srv = Server(tmp_path_factory.mktemp("secrets"), **env)
    srv.ready_path = "/api/v1/openapi.json"
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


async def test_no_secret_appears_in_a_debug_log(server: Server) -> None:
    user = unique("usr")
    token = make_token(sub=user)
    async with httpx.AsyncClient(base_url=server.base_url, timeout=15) as http:
        created = await http.post(
            "/api/v1/realtime-subscriptions/user",
            json={"user_id": user, "fallback": FALLBACK},
            headers=bearer(token),
        )
        assert created.status_code == 201, created.text
        channel = created.json()
        rotated = await http.put(
            f"/api/v1/realtime-subscriptions/{channel['channel_id']}/fallback",
            json=FALLBACK,
            headers=bearer(token),
        )
        assert rotated.status_code == 200, rotated.text
        forged = make_token(sub=user, key="another-secret-" + "x" * 32)
        refused = await http.get("/api/v1/realtime-subscriptions", headers=bearer(forged))
        assert refused.status_code == 401, refused.text
        wrong = await http.post(
            "/api/v1/claim-events",
            json={
                "event_type": "claim_submitted",
                "claim_id": "clm_1",
                "organisation_id": "org_1",
                "user_id": user,
            },
            headers={"X-Publisher-Key": WRONG_PUBLISHER_KEY},
        )
        assert wrong.status_code == 401, wrong.text

    # The channel over websocket (our lean transport) and over long-polling.
    async with ChannelClient(channel["websocket_url"], channel["channel_token"]) as client:
        assert isinstance(await client.next(timeout=10), Recovery)
        polling = socketio.AsyncClient(reconnection=False)
        received: asyncio.Queue[object] = asyncio.Queue()
        namespace = f"/channels/{channel['channel_id']}"
        polling.on("*", lambda event, *args: received.put_nowait(event), namespace=namespace)
        await polling.connect(
            server.base_url,
            namespaces=[namespace],
            transports=["polling"],
            auth={"token": channel["channel_token"]},
            wait_timeout=10,
        )
        try:
            published = await server.publish(
                event_type="claim_approved",
                claim_id=unique("clm"),
                organisation_id=unique("org"),
                user_id=user,
            )
            event = await client.next(timeout=10)
            assert isinstance(event, dict) and event["event_id"] == published["event_id"]
            seen = [await asyncio.wait_for(received.get(), 10) for _ in range(2)]
            assert "claim_approved" in seen
        finally:
            await polling.disconnect()

    server.stop()  # every line flushed
    log = server.log_path.read_text(errors="replace")
    assert "DEBUG" in log  # the level was in force
    secrets = {
        "channel token": channel["channel_token"],
        "publisher key": PUBLISHER_KEY,
        "wrong publisher key": WRONG_PUBLISHER_KEY,
        "JWT secret": JWT_SECRET,
        "webhook secret": channel["fallback"]["secret"],
        "rotated webhook secret": rotated.json()["secret"],
        "webhook sealing key": WEBHOOK_SECRET_KEY,
        "bearer token": token,
        "forged bearer token": forged,
    }
    for name, secret in secrets.items():
        # Any 16-character stretch of it would be a leak, not only the whole secret.
        for start in range(0, len(secret) - 15, 8):
            assert secret[start : start + 16] not in log, f"the {name} is in the log"
