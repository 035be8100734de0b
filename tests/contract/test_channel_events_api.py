"""`listChannelEvents` and the channel's receipts, through HTTP under both mount points.

GET /realtime-subscriptions/{channel_id}/events pages through a channel's kept history, each
event in the envelope its sockets receive (checked against the AsyncAPI document's message
schemas); GET /realtime-subscriptions/{channel_id} and the list carry the receipts
(`delivered_sequence`, `acknowledged_sequence`, `pending_events`).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

import httpx
import pytest

from claims_realtime.app import BASE_PATHS, CANONICAL_BASE
from claims_realtime.models.channel import Channel
from claims_realtime.settings import Settings
from tests.asyncapi import validate_message
from tests.conftest import in_process
from tests.helpers import PUBLISHER_KEY, age_history, assert_problem
from tests.tokens import JWT_SECRET, bearer, make_token

base_paths = pytest.mark.parametrize("base", BASE_PATHS, ids=["canonical", "contract"])
OWNER = bearer(make_token("usr_owner"))
SOMEONE_ELSE = bearer(make_token("usr_someone_else"))


def subs(base: str) -> str:
    return f"{base}/realtime-subscriptions"


async def create_user_channel(
    api: httpx.AsyncClient, base: str = CANONICAL_BASE, headers: dict[str, str] | None = None
) -> str:
    response = await api.post(f"{subs(base)}/user", json={"user_id": "usr_owner"}, headers=headers)
    assert response.status_code == 201, response.text
    return str(response.json()["channel_id"])


async def publish(api: httpx.AsyncClient, count: int) -> list[dict[str, Any]]:
    """`count` events for usr_owner's channels, in one batch; answers what was sent."""
    events = [
        {
            "event_id": f"evt_page_{i}",
            "event_type": "comment_added" if i % 2 else "status_changed",
            "claim_id": f"clm_{i}",
            "organisation_id": "org_001",
            "user_id": "usr_owner",
            "actor_id": "usr_coord99" if i % 2 else None,
            "occurred_at": "2026-03-26T08:14:22Z",
            "data": {"n": i, "text": "é"},
        }
        for i in range(1, count + 1)
    ]
    sent = [{k: v for k, v in event.items() if v is not None} for event in events]
    response = await api.post(
        "/api/v1/claim-events/batch",
        json={"events": sent},
        headers={"X-Publisher-Key": PUBLISHER_KEY},
    )
    assert response.status_code == 202, response.text
    return events


async def page(
    api: httpx.AsyncClient, channel_id: str, base: str = CANONICAL_BASE, **params: Any
) -> dict[str, Any]:
    response = await api.get(f"{subs(base)}/{channel_id}/events", params=params)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = response.json()
    return body


# -- the page --------------------------------------------------------------------------------


@base_paths
async def test_a_channel_without_events_has_an_empty_history(
    api: httpx.AsyncClient, base: str
) -> None:
    channel_id = await create_user_channel(api, base)

    assert await page(api, channel_id, base) == {
        "data": [],
        "head_sequence": 0,
        "first_available_sequence": 1,
        "unavailable": 0,
        "next_after_sequence": None,
    }


@base_paths
async def test_events_come_in_the_socket_envelope_in_order(
    api: httpx.AsyncClient, base: str
) -> None:
    channel_id = await create_user_channel(api, base)
    sent = await publish(api, 3)

    body = await page(api, channel_id, base)

    assert [event["sequence"] for event in body["data"]] == [1, 2, 3]
    for sequence, (event, published) in enumerate(zip(body["data"], sent, strict=True), 1):
        validate_message(published["event_type"], event)  # the AsyncAPI message schema
        assert event == {
            "channel_id": channel_id,
            "sequence": sequence,
            **published,
            "occurred_at": "2026-03-26T08:14:22.000Z",
        }
        assert list(event)[:3] == ["channel_id", "sequence", "event_id"]
    assert body["head_sequence"] == 3 and body["next_after_sequence"] is None


@base_paths
async def test_paging_with_the_cursor_returns_every_event_once(
    api: httpx.AsyncClient, base: str
) -> None:
    channel_id = await create_user_channel(api, base)
    await publish(api, 5)

    first = await page(api, channel_id, base, limit=2)
    second = await page(api, channel_id, base, limit=2, after_sequence=first["next_after_sequence"])
    last = await page(api, channel_id, base, limit=2, after_sequence=second["next_after_sequence"])

    assert [e["sequence"] for e in first["data"]] == [1, 2] and first["next_after_sequence"] == 2
    assert [e["sequence"] for e in second["data"]] == [3, 4]
    assert second["next_after_sequence"] == 4
    assert [e["sequence"] for e in last["data"]] == [5] and last["next_after_sequence"] is None
    exact = await page(api, channel_id, base, limit=5)
    assert exact["next_after_sequence"] is None, "a full page that reached the head ends it"
    assert len(exact["data"]) == 5


async def test_after_the_head_is_an_empty_page(api: httpx.AsyncClient) -> None:
    channel_id = await create_user_channel(api)
    await publish(api, 2)

    body = await page(api, channel_id, after_sequence=9)

    assert body == {
        "data": [],
        "head_sequence": 2,
        "first_available_sequence": 1,
        "unavailable": 0,
        "next_after_sequence": None,
    }


async def test_events_beyond_the_count_bound_are_counted_unavailable(
    settings: Settings,
) -> None:
    async with in_process(replace(settings, history_max_events=3)) as api:
        channel_id = await create_user_channel(api)
        await publish(api, 5)

        from_start = await page(api, channel_id)
        from_one = await page(api, channel_id, after_sequence=1)
        from_kept = await page(api, channel_id, after_sequence=2)

    assert [e["sequence"] for e in from_start["data"]] == [3, 4, 5]
    assert (from_start["first_available_sequence"], from_start["unavailable"]) == (3, 2)
    assert from_one["unavailable"] == 1
    assert [e["sequence"] for e in from_kept["data"]] == [3, 4, 5]
    assert from_kept["unavailable"] == 0


async def test_events_older_than_the_ttl_are_counted_unavailable(api: httpx.AsyncClient) -> None:
    channel_id = await create_user_channel(api)
    await publish(api, 4)
    channel = await Channel.get(id=channel_id)
    old = channel.created_at - timedelta(days=30)  # beyond the default HISTORY_TTL, 7 days
    await age_history(channel_id, old, up_to=2)

    body = await page(api, channel_id)

    assert [e["sequence"] for e in body["data"]] == [3, 4]
    assert (body["first_available_sequence"], body["unavailable"]) == (3, 2)


# -- refusals ----------------------------------------------------------------------------------


@base_paths
@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"after_sequence": -1}, "after_sequence"),
        ({"after_sequence": "x"}, "after_sequence"),
        ({"after_sequence": 2**63}, "after_sequence"),
        ({"limit": 0}, "limit"),
        ({"limit": 1001}, "limit"),
        ({"limit": "ten"}, "limit"),
    ],
)
async def test_bad_parameters_are_a_400_naming_them(
    api: httpx.AsyncClient, base: str, params: dict[str, Any], field: str
) -> None:
    channel_id = await create_user_channel(api)

    response = await api.get(f"{subs(base)}/{channel_id}/events", params=params)

    assert_problem(response, 400, field=field)


@base_paths
async def test_unknown_channel_is_a_404_and_closed_one_a_410(
    api: httpx.AsyncClient, base: str
) -> None:
    unknown = await api.get(f"{subs(base)}/chan_doesnotexist0000000/events")
    assert_problem(unknown, 404)

    channel_id = await create_user_channel(api)
    closed = await api.delete(f"{subs(base)}/{channel_id}")
    assert closed.status_code == 200, closed.text
    gone = assert_problem(await api.get(f"{subs(base)}/{channel_id}/events"), 410)
    assert gone["closed_at"] == closed.json()["closed_at"]


@base_paths
async def test_jwt_only_the_owner_reads_a_channels_history(settings: Settings, base: str) -> None:
    async with in_process(replace(settings, auth_mode="jwt", jwt_secret=JWT_SECRET)) as api:
        channel_id = await create_user_channel(api, headers=OWNER)
        url = f"{subs(base)}/{channel_id}/events"

        mine = await api.get(url, headers=OWNER)
        theirs = await api.get(url, headers=SOMEONE_ELSE)
        unknown = await api.get(f"{subs(base)}/chan_nosuchchannel/events", headers=SOMEONE_ELSE)
        anonymous = await api.get(url)

    assert mine.status_code == 200, mine.text
    body = assert_problem(theirs, 404)
    assert body["title"] == assert_problem(unknown, 404)["title"], "ids cannot be probed"
    assert_problem(anonymous, 401)


# -- receipts ----------------------------------------------------------------------------------


@base_paths
async def test_receipts_count_what_the_subscriber_has_not_confirmed(
    api: httpx.AsyncClient, base: str
) -> None:
    channel_id = await create_user_channel(api)
    await publish(api, 3)

    detail = (await api.get(f"{subs(base)}/{channel_id}")).json()
    listed = (await api.get(subs(base), params={"user_id": "usr_owner"})).json()["data"]

    receipts = {"delivered_sequence": None, "acknowledged_sequence": None, "pending_events": 3}
    assert {key: detail[key] for key in receipts} == receipts
    assert {key: listed[0][key] for key in receipts} == receipts

    # As the hub's flush writes them back from a socket's deliveries and acks.
    await Channel.filter(id=channel_id).update(delivered_sequence=3, confirmed_sequence=2)
    detail = (await api.get(f"{subs(base)}/{channel_id}")).json()
    listed = (await api.get(subs(base), params={"user_id": "usr_owner"})).json()["data"]

    receipts = {"delivered_sequence": 3, "acknowledged_sequence": 2, "pending_events": 1}
    assert {key: detail[key] for key in receipts} == receipts
    assert {key: listed[0][key] for key in receipts} == receipts
