"""HTTP limits: the request body cap (413), the `data` cap in batches (400 naming the
field), and the cap on a user's active channels (409 naming `user_id`), also under
concurrent creates. And that clients and the AsyncAPI document agree on refusal codes."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import yaml
from asgi_lifespan import LifespanManager

from claims_realtime.app import create_app
from claims_realtime.realtime.client import FATAL_CODES, TRANSIENT_CODES
from claims_realtime.settings import Settings
from tests.helpers import PUBLISHER_KEY, ROOT, assert_problem, unique

SUBSCRIPTIONS = "/api/v1/realtime-subscriptions"
BATCH = "/api/v1/claim-events/batch"
AUTH = {"X-Publisher-Key": PUBLISHER_KEY}
MAX_DATA_BYTES = 16 * 1024
CHUNK = 64 * 1024


@pytest.fixture
async def small_api(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The app with a 1 MiB body cap and at most 5 active channels per user."""
    limited = dataclasses.replace(settings, max_request_bytes=1024 * 1024, max_channels_per_user=5)
    async with LifespanManager(create_app(limited)) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield client


def event(n: int, data_bytes: int = MAX_DATA_BYTES, **overrides: Any) -> dict[str, Any]:
    return {
        "event_id": unique(f"evt{n}"),
        "event_type": "comment_added",
        "claim_id": "clm_7781",
        "organisation_id": "org_001",
        "user_id": "usr_owner",
        "actor_id": "usr_coord99",
        "occurred_at": "2026-03-26T08:14:22Z",
        "data": {"x": "a" * (data_bytes - len('{"x":""}'))},
        **overrides,
    }


# -- request body cap ---------------------------------------------------------------------------


async def test_a_full_batch_of_the_largest_events_fits_under_the_default_cap(
    api: httpx.AsyncClient,
) -> None:
    """500 events with 16 KiB of data each, written with spaces (json= in httpx is compact,
    so send text that is not): the largest legitimate body must not be a 413."""
    events = [event(n) for n in range(500)]
    body = json.dumps({"events": events}, indent=2).encode()
    assert len(body) > 8_000_000

    response = await api.post(
        BATCH, content=body, headers={**AUTH, "Content-Type": "application/json"}
    )

    assert response.status_code == 202, response.text[:500]
    assert len(response.json()["results"]) == 500


async def test_a_declared_content_length_over_the_cap_is_a_413_naming_the_body(
    small_api: httpx.AsyncClient,
) -> None:
    events = [event(n) for n in range(80)]  # ~1.3 MiB

    response = await small_api.post(BATCH, json={"events": events}, headers=AUTH)

    body = assert_problem(response, 413, "body")
    assert "1048576" in body["detail"]


async def test_a_streamed_body_is_refused_once_it_passes_the_cap_without_reading_the_rest(
    small_api: httpx.AsyncClient,
) -> None:
    sent = 0

    async def endless() -> AsyncIterator[bytes]:  # chunked: no Content-Length
        nonlocal sent
        yield b'{"events": ['
        while True:
            sent += 1
            yield b" " * CHUNK

    response = await small_api.post(
        BATCH, content=endless(), headers={**AUTH, "Content-Type": "application/json"}
    )

    assert_problem(response, 413, "body")
    assert sent <= (1024 * 1024) // CHUNK + 2  # stopped at the cap, not at the end


async def test_a_body_under_the_cap_still_gets_its_usual_answers(
    small_api: httpx.AsyncClient,
) -> None:
    ok = await small_api.post(BATCH, json={"events": [event(1, 100)]}, headers=AUTH)
    assert ok.status_code == 202, ok.text

    bad = await small_api.post(BATCH, json={"events": "nope"}, headers=AUTH)
    assert_problem(bad, 400, "events")


async def test_data_over_its_cap_in_a_batch_names_that_events_data(
    api: httpx.AsyncClient,
) -> None:
    events = [event(0), event(1, MAX_DATA_BYTES + 1), event(2)]

    response = await api.post(BATCH, json={"events": events}, headers=AUTH)

    assert_problem(response, 400, "events.1.data")


# -- active channels per user -------------------------------------------------------------------


async def create(api: httpx.AsyncClient, user_id: str, kind: str = "user") -> httpx.Response:
    body: dict[str, Any] = {"user_id": user_id}
    if kind == "organisation":
        body["organisation_id"] = "org_001"
    return await api.post(f"{SUBSCRIPTIONS}/{kind}", json=body)


async def test_one_channel_over_the_cap_is_a_409_naming_user_id(
    small_api: httpx.AsyncClient,
) -> None:
    user = unique("usr")
    kinds = ["user", "organisation", "user", "organisation", "user"]
    for kind in kinds:  # both kinds count towards the same cap
        assert (await create(small_api, user, kind)).status_code == 201

    for kind in ("user", "organisation"):
        body = assert_problem(await create(small_api, user, kind), 409, "user_id")
        assert user in body["detail"] and "5 active channels" in body["detail"]
        assert body["limit"] == 5
    # Other users are not affected.
    assert (await create(small_api, unique("usr"))).status_code == 201


async def test_closing_a_channel_makes_room_for_another(small_api: httpx.AsyncClient) -> None:
    user = unique("usr")
    created = [await create(small_api, user) for _ in range(5)]
    assert_problem(await create(small_api, user), 409, "user_id")

    closed = await small_api.delete(f"{SUBSCRIPTIONS}/{created[0].json()['channel_id']}")
    assert closed.status_code == 200, closed.text

    assert (await create(small_api, user)).status_code == 201
    assert_problem(await create(small_api, user), 409, "user_id")


async def test_the_cap_holds_under_concurrent_creates(small_api: httpx.AsyncClient) -> None:
    user = unique("usr")

    responses = await asyncio.gather(
        *(create(small_api, user, "user" if n % 2 else "organisation") for n in range(20))
    )

    statuses = sorted(response.status_code for response in responses)
    assert statuses == [201] * 5 + [409] * 15, statuses
    listing = await small_api.get(SUBSCRIPTIONS, params={"user_id": user, "limit": 100})
    assert listing.json()["pagination"]["total"] == 5


async def test_no_cap_when_max_channels_per_user_is_zero(settings: Settings) -> None:
    unlimited = dataclasses.replace(settings, max_channels_per_user=0)
    async with LifespanManager(create_app(unlimited)) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            user = unique("usr")
            for _ in range(8):
                assert (await create(client, user)).status_code == 201


# -- refusal codes -------------------------------------------------------------------------------


def test_the_python_client_classifies_every_refusal_code_the_asyncapi_document_lists() -> None:
    document = yaml.safe_load((ROOT / "openapi" / "asyncapi.yaml").read_text(encoding="utf-8"))
    codes = set(document["components"]["schemas"]["ConnectErrorCode"]["enum"])
    assert "rate_limited" in codes
    assert "rate_limited" in TRANSIENT_CODES and "rate_limited" not in FATAL_CODES
    assert FATAL_CODES | TRANSIENT_CODES <= codes
    assert not FATAL_CODES & TRANSIENT_CODES
