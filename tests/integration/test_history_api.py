"""History and receipts over REST against a real server, with a real Python subscriber.

What a socket received is what `listChannelEvents` answers, envelope for envelope; an event the
subscriber confirmed shows as acknowledged over REST within the hub's flush interval; paging
while a publisher runs sees every sequence exactly once.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from claims_realtime.realtime.client import ChannelClient, Recovery
from claims_realtime.settings import Settings
from tests.helpers import unique
from tests.server import Server

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
