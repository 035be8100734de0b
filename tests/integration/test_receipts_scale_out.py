"""Receipts read from the other process: two servers over one PostgreSQL and Redis, the
official JS client on one of them confirming some events and not others, and every receipt
read over REST from the process that holds no socket of the channel.

That process knows only what the first one wrote back, so this is the documented bound:
a confirmation shows within the hub's flush interval, on any process.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from claims_realtime.settings import Settings
from tests import services
from tests.helpers import PUBLISHER_KEY, unique
from tests.programs import run_js_client
from tests.server import Server

pytestmark = [pytest.mark.scaleout, pytest.mark.node]

WAIT = 15.0
FLUSH_INTERVAL = Settings.flush_interval_seconds
#: Added to the bound for the ack's trip and the write back, with two servers and Node
#: sharing a two-core test machine.
SLACK = 1.0


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[Server, Server]]:
    with (
        services.migrated_database("crt_receipts") as url,
        services.server_pair(tmp_path, url) as servers,
    ):
        yield servers


def attached_to(server: Server, channel: dict[str, Any]) -> dict[str, Any]:
    """`channel` with its websocket_url pointing at `server`, whichever process created it."""
    path = channel["websocket_url"].split("/channels/", 1)[1]
    return {**channel, "websocket_url": f"ws://127.0.0.1:{server.port}/channels/{path}"}


async def get(server: Server, path: str, **params: Any) -> dict[str, Any]:
    async with server.client() as http:
        response = await http.get(path, params=params, headers={"X-Publisher-Key": PUBLISHER_KEY})
    assert response.status_code == 200, response.text
    return dict(response.json())


async def test_receipts_on_the_other_process_show_what_the_js_client_confirmed(
    pair: tuple[Server, Server], tmp_path: Path
) -> None:
    near, far = pair  # the client is attached to `near`; receipts are read from `far`
    org, user = unique("org"), unique("usr")
    watched = await far.subscribe("organisation", organisation_id=org, user_id=unique("usr"))
    # A second channel every event also reaches, with no subscriber at all.
    unwatched = await far.subscribe("user", user_id=user)
    channel_id = watched["channel_id"]
    channels = f"/api/v1/realtime-subscriptions/{channel_id}"

    client_channel = attached_to(near, watched)
    async with run_js_client(tmp_path, client_channel, transports=["websocket"], ack_upto=3) as js:
        await js.expect("recovery")
        event_ids = []
        for number in range(5):
            published = await far.publish(
                event_type="status_changed",
                claim_id=unique("clm"),
                organisation_id=org,
                user_id=user,
                data={"n": number},
            )
            assert published["channels"] == 2, published
            event_ids.append(published["event_id"])
        received = await js.events(5, timeout=WAIT)
        assert [event["sequence"] for event in received] == [1, 2, 3, 4, 5]
        confirmed_at = time.monotonic()  # it confirmed 1-3 as each arrived, before printing

        while True:
            detail = await get(far, channels)
            if (detail["delivered_sequence"], detail["acknowledged_sequence"]) == (5, 3):
                break
            elapsed = time.monotonic() - confirmed_at
            assert elapsed < FLUSH_INTERVAL + SLACK, f"receipts after {elapsed:.2f} s: {detail}"
            await asyncio.sleep(0.02)
        assert detail["pending_events"] == 2
        assert detail["status"] == "connected"
        listed = (await get(far, "/api/v1/realtime-subscriptions", organisation_id=org))["data"]
        assert [(c["channel_id"], c["acknowledged_sequence"]) for c in listed] == [(channel_id, 3)]

        # Per event: this channel received all five and confirmed the first three; the other
        # channel, with nobody subscribed, neither.
        for number, event_id in enumerate(event_ids, start=1):
            event = await get(far, f"/api/v1/claim-events/{event_id}")
            receipts = {r["channel_id"]: r for r in event["receipts"]["data"]}
            assert receipts[channel_id] == {
                "channel_id": channel_id,
                "subscription_type": watched["subscription_type"],
                "user_id": watched["user_id"],
                "sequence": number,
                "delivered": True,
                "acknowledged": number <= 3,
            }
            other = receipts[unwatched["channel_id"]]
            assert (other["sequence"], other["delivered"], other["acknowledged"]) == (
                number,
                False,
                False,
            )

        # And history over REST on the far process is what the socket got on the near one.
        assert (await get(far, f"{channels}/events"))["data"] == received
