"""`getClaimEvent` through HTTP: GET /api/v1/claim-events/{event_id}, the event as recorded
and its receipts (one per channel it was placed on), publisher key only, in either AUTH_MODE."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import httpx
import pytest

from claims_realtime.models.channel import Channel
from claims_realtime.settings import Settings
from tests.conftest import in_process
from tests.helpers import PUBLISHER_KEY, assert_problem
from tests.tokens import bearer, make_token

EVENTS = "/api/v1/claim-events"
SUBS = "/api/v1/realtime-subscriptions"
KEY = {"X-Publisher-Key": PUBLISHER_KEY}
EVENT = {
    "event_id": "evt_receipts_1",
    "event_type": "claim_approved",
    "claim_id": "clm_7781",
    "organisation_id": "org_001",
    "user_id": "usr_84cd12ef",
    "actor_id": "usr_coord99",
    "occurred_at": "2026-03-26T08:14:22Z",
    "data": {"amount": 120.5, "note": "é"},
}


async def org_channels(api: httpx.AsyncClient, count: int) -> list[str]:
    ids = []
    for i in range(count):
        response = await api.post(
            f"{SUBS}/organisation", json={"organisation_id": "org_001", "user_id": f"usr_{i}"}
        )
        assert response.status_code == 201, response.text
        ids.append(str(response.json()["channel_id"]))
    return sorted(ids)


async def publish(api: httpx.AsyncClient, event: dict[str, Any] = EVENT) -> None:
    response = await api.post(EVENTS, json=event, headers=KEY)
    assert response.status_code == 202, response.text


async def get_event(api: httpx.AsyncClient, event_id: str, **params: Any) -> dict[str, Any]:
    response = await api.get(f"{EVENTS}/{event_id}", params=params, headers=KEY)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = response.json()
    return body


async def test_the_event_as_recorded_with_a_receipt_per_channel(api: httpx.AsyncClient) -> None:
    ids = await org_channels(api, 2)
    await publish(api)

    body = await get_event(api, EVENT["event_id"])

    recorded_at = body.pop("recorded_at")
    assert recorded_at.endswith("Z")
    assert body == {
        **EVENT,
        "occurred_at": "2026-03-26T08:14:22.000Z",
        "channels": 2,
        "receipts": {
            "data": [
                {
                    "channel_id": channel_id,
                    "subscription_type": "organisation_claims",
                    "user_id": user_id,
                    "sequence": 1,
                    "delivered": False,
                    "acknowledged": False,
                }
                for channel_id, user_id in zip(
                    ids, [await owner(channel_id) for channel_id in ids], strict=True
                )
            ],
            "pagination": {"page": 1, "limit": 100, "total": 2},
        },
    }


async def owner(channel_id: str) -> str:
    return (await Channel.get(id=channel_id)).user_id


async def test_receipts_follow_the_channels_positions(api: httpx.AsyncClient) -> None:
    first, second = await org_channels(api, 2)
    await publish(api)
    await Channel.filter(id=first).update(delivered_sequence=1, confirmed_sequence=1)
    await Channel.filter(id=second).update(delivered_sequence=1)

    data = (await get_event(api, EVENT["event_id"]))["receipts"]["data"]

    assert [(r["delivered"], r["acknowledged"]) for r in data] == [(True, True), (True, False)]


async def test_receipts_come_in_pages(api: httpx.AsyncClient) -> None:
    ids = await org_channels(api, 3)
    await publish(api)

    pages = [
        (await get_event(api, EVENT["event_id"], limit=2, page=page))["receipts"]
        for page in (1, 2, 3)
    ]

    assert [[r["channel_id"] for r in p["data"]] for p in pages] == [ids[:2], ids[2:], []]
    assert [p["pagination"] for p in pages] == [
        {"page": page, "limit": 2, "total": 3} for page in (1, 2, 3)
    ]


async def test_a_server_assigned_id_can_be_read(api: httpx.AsyncClient) -> None:
    event = {k: v for k, v in EVENT.items() if k != "event_id"}
    response = await api.post(EVENTS, json=event, headers=KEY)
    event_id = response.json()["event_id"]

    body = await get_event(api, event_id)

    assert body["event_id"] == event_id and body["receipts"]["pagination"]["total"] == 0


async def test_an_unknown_event_is_a_404_naming_event_id(api: httpx.AsyncClient) -> None:
    response = await api.get(f"{EVENTS}/evt_never_recorded", headers=KEY)
    assert_problem(response, 404, "event_id")


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 1001}, "limit"),
        ({"limit": "x"}, "limit"),
        ({"page": 0}, "page"),
        ({"page": "one"}, "page"),
    ],
)
async def test_bad_paging_is_a_400_naming_the_parameter(
    api: httpx.AsyncClient, params: dict[str, Any], field: str
) -> None:
    await publish(api)
    response = await api.get(f"{EVENTS}/{EVENT['event_id']}", params=params, headers=KEY)
    assert_problem(response, 400, field)


@pytest.mark.parametrize("event_id", ["-leading-dash", "has%20space", "x" * 129])
async def test_a_malformed_event_id_is_a_400_naming_it(
    api: httpx.AsyncClient, event_id: str
) -> None:
    response = await api.get(f"{EVENTS}/{event_id}", headers=KEY)
    assert_problem(response, 400, "event_id")


@pytest.mark.parametrize("headers", [{}, {"X-Publisher-Key": "wrong"}])
async def test_the_publisher_key_is_required(
    api: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    await publish(api)
    response = await api.get(f"{EVENTS}/{EVENT['event_id']}", headers=headers)
    assert_problem(response, 401)


async def test_in_jwt_mode_it_stays_publisher_only(jwt_api: httpx.AsyncClient) -> None:
    await publish(jwt_api)
    url = f"{EVENTS}/{EVENT['event_id']}"
    token = bearer(make_token("usr_84cd12ef"))

    assert_problem(await jwt_api.get(url, headers=token), 401)  # a bearer token is no key
    assert (await jwt_api.get(url, headers=KEY)).status_code == 200
    document = (await jwt_api.get("/api/v1/openapi.json")).json()
    operation = document["paths"]["/claim-events/{event_id}"]["get"]
    assert operation["security"] == [{"PublisherKey": []}]


async def test_wrong_keys_here_count_towards_the_429_as_on_ingestion(settings: Settings) -> None:
    limited = replace(settings, publisher_key_failure_limit=3)
    async with in_process(limited) as api:
        await publish(api)
        url = f"{EVENTS}/{EVENT['event_id']}"
        for _ in range(3):
            assert_problem(await api.get(url, headers={"X-Publisher-Key": "wrong"}), 401)

        refused = await api.get(url, headers=KEY)  # even the right key, until they age out

        assert_problem(refused, 429)
        assert int(refused.headers["retry-after"]) >= 1


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [("POST", "/evt_1", "GET"), ("DELETE", "/evt_1", "GET"), ("GET", "/batch", "POST")],
)
async def test_undeclared_methods_stay_405(
    api: httpx.AsyncClient, method: str, path: str, allowed: str
) -> None:
    # `/claim-events/batch` is a literal path: GET there is not getClaimEvent of "batch".
    response = await api.request(method, f"{EVENTS}{path}", headers=KEY)
    assert_problem(response, 405)
    assert response.headers["allow"] == allowed
