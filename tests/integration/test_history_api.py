"""History and receipts over REST against a real server, with a real Python subscriber.

What a socket received is what `listChannelEvents` answers, envelope for envelope; an event the
subscriber confirmed shows as acknowledged over REST within the hub's flush interval; paging
while a publisher runs sees every sequence exactly once; and `ChannelClient.history()` walks
the same pages, then hands over to the socket without a gap.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from claims_realtime.realtime.client import (
    ChannelClient,
    ChannelClosed,
    HistoryPage,
    HistoryRefused,
    Recovery,
)
from claims_realtime.settings import Settings
from tests.helpers import unique
from tests.server import Server
from tests.tokens import JWT_SECRET, bearer, make_token

WAIT = 10.0
#: How often positions are written back (the hub's flush interval): the documented bound.
FLUSH_INTERVAL = Settings.flush_interval_seconds
#: Added to the bound for the ack's own trip and the write on a busy two-core test machine.
SLACK = 0.5


def claim_event(user: str, **overrides: Any) -> dict[str, Any]:
    return {
        "event_type": "status_changed",
        "claim_id": unique("clm"),
        "organisation_id": unique("org"),
        "user_id": user,
        **overrides,
    }


async def get(server: Server, path: str, **params: Any) -> dict[str, Any]:
    async with server.client() as http:
        response = await http.get(f"/api/v1/realtime-subscriptions{path}", params=params)
    assert response.status_code == 200, response.text
    return dict(response.json())


async def test_a_confirmed_event_is_acknowledged_over_rest_within_the_flush_interval(
    server: Server,
) -> None:
    user = unique("usr")
    channel = await server.subscribe("user", user_id=user)
    channel_id = channel["channel_id"]
    async with ChannelClient(channel["websocket_url"], channel["channel_token"]) as client:
        assert isinstance(await client.next(WAIT), Recovery)
        for number in range(3):
            await server.publish(**claim_event(user, data={"n": number}))
        received: list[dict[str, Any]] = []
        while len(received) < 3:
            message = await client.next(WAIT)
            assert not isinstance(message, Recovery), message
            received.append(message)
        # ChannelClient confirms each event as its handler returns, right after handing it over.
        confirmed_at = time.monotonic()
        while True:
            detail = await get(server, f"/{channel_id}")
            if detail["acknowledged_sequence"] == 3:
                break
            elapsed = time.monotonic() - confirmed_at
            assert elapsed < FLUSH_INTERVAL + SLACK, f"not acknowledged after {elapsed:.2f} s"
            await asyncio.sleep(0.02)
        assert time.monotonic() - confirmed_at < FLUSH_INTERVAL + SLACK
        assert (detail["delivered_sequence"], detail["pending_events"]) == (3, 0)
        listed = (await get(server, "", user_id=user))["data"]
        assert [item["acknowledged_sequence"] for item in listed] == [3]

        page = await get(server, f"/{channel_id}/events")

    assert page["data"] == received, "REST answers exactly the envelopes the socket received"


async def test_paging_while_events_are_published_sees_every_sequence_once(
    server: Server,
) -> None:
    user = unique("usr")
    channel_id = (await server.subscribe("user", user_id=user))["channel_id"]
    batches, per_batch = 40, 5
    total = batches * per_batch

    async def publisher() -> None:
        for _ in range(batches):
            response = await server.publish_batch([claim_event(user) for _ in range(per_batch)])
            assert response.status_code == 202, response.text

    publishing = asyncio.create_task(publisher())
    seen: list[int] = []
    after = 0
    deadline = time.monotonic() + 60
    try:
        while not (publishing.done() and seen and seen[-1] == total):
            assert time.monotonic() < deadline, f"paging stalled at {after}"
            if publishing.done() and publishing.exception() is not None:
                break  # raised by the `await` below
            page = await get(server, f"/{channel_id}/events", after_sequence=after, limit=7)
            sequences = [event["sequence"] for event in page["data"]]
            assert sequences == list(range(after + 1, after + 1 + len(sequences))), sequences
            assert page["unavailable"] == 0
            assert all(s <= page["head_sequence"] for s in sequences)
            seen += sequences
            if page["next_after_sequence"] is not None:
                after = page["next_after_sequence"]
            else:
                after = sequences[-1] if sequences else after
                await asyncio.sleep(0.01)  # reached the head: let the publisher get ahead
    finally:
        await publishing
    assert seen == list(range(1, total + 1))


async def pages_of(client: ChannelClient, **kwargs: Any) -> list[HistoryPage]:
    return [page async for page in client.history(**kwargs)]


def sequences(pages: list[HistoryPage]) -> list[list[int]]:
    return [[event["sequence"] for event in page.events] for page in pages]


async def test_the_python_client_pages_history_then_resumes_its_socket_after_it(
    server: Server,
) -> None:
    user = unique("usr")
    channel = await server.subscribe("user", user_id=user)
    for number in range(5):
        await server.publish(**claim_event(user, data={"n": number}))

    client = ChannelClient(channel["websocket_url"], channel["channel_token"])
    pages = await pages_of(client, limit=2)
    assert sequences(pages) == [[1, 2], [3, 4], [5]]
    assert [page.next_after_sequence for page in pages] == [2, 4, None]
    assert {(p.head_sequence, p.first_available_sequence, p.unavailable) for p in pages} == {
        (5, 1, 0)
    }
    assert [event["data"] for page in pages for event in page.events] == [
        {"n": n} for n in range(5)
    ]
    assert sequences(await pages_of(client, after_sequence=3)) == [[4, 5]]
    assert sequences(await pages_of(client, after_sequence=5)) == [[]]

    # What history handed over is where the socket starts: nothing replayed twice, no gap.
    client.last_sequence = pages[-1].events[-1]["sequence"]
    async with client:
        recovery = await client.next(WAIT)
        assert isinstance(recovery, Recovery)
        assert (recovery.resumed_from, recovery.replayed) == (5, 0)
        await server.publish(**claim_event(user, data={"n": 5}))
        live = await client.next(WAIT)
        assert not isinstance(live, Recovery)
        assert (live["sequence"], live["data"]) == (6, {"n": 5})


async def test_history_of_an_unknown_or_closed_channel_raises_channel_closed(
    server: Server,
) -> None:
    channel = await server.subscribe("user", user_id=unique("usr"))
    unknown = channel["websocket_url"].rsplit("/", 1)[0] + "/chan_00000000000000000000000000"
    with pytest.raises(ChannelClosed) as refused:
        await pages_of(ChannelClient(unknown, "any-token"))
    assert refused.value.code == "channel_not_found"

    async with server.client() as http:
        deleted = await http.delete(f"/api/v1/realtime-subscriptions/{channel['channel_id']}")
    assert deleted.status_code == 200, deleted.text
    with pytest.raises(ChannelClosed) as closed:
        await pages_of(ChannelClient(channel["websocket_url"], channel["channel_token"]))
    assert closed.value.code == "channel_closed"


@pytest.fixture
def jwt_server(tmp_path: Path, postgres_url: str | None) -> Iterator[Server]:
    env = {"AUTH_MODE": "jwt", "JWT_SECRET": JWT_SECRET}
    if postgres_url:
        env["DATABASE_URL"] = postgres_url
    srv = Server(tmp_path / "jwt", **env)
    srv.ready_path = "/api/v1/openapi.json"
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


async def test_in_jwt_mode_history_needs_the_owners_bearer(jwt_server: Server) -> None:
    user = unique("usr")
    owner = make_token(sub=user)
    async with httpx.AsyncClient(base_url=jwt_server.base_url, timeout=15) as http:
        created = await http.post(
            "/api/v1/realtime-subscriptions/user", json={"user_id": user}, headers=bearer(owner)
        )
    assert created.status_code == 201, created.text
    channel = created.json()
    await jwt_server.publish(**claim_event(user))
    client = ChannelClient(channel["websocket_url"], channel["channel_token"])

    assert sequences(await pages_of(client, bearer=owner)) == [[1]]
    with pytest.raises(HistoryRefused) as missing:
        await pages_of(client)
    assert missing.value.status == 401
    with pytest.raises(ChannelClosed) as other:  # another user's channel: 404, as elsewhere
        await pages_of(client, bearer=make_token(sub=unique("usr")))
    assert other.value.code == "channel_not_found"
