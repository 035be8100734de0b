"""Wrong `X-Publisher-Key` values are counted per client address (in-process app).

Past PUBLISHER_KEY_FAILURE_LIMIT wrong keys within PUBLISHER_KEY_FAILURE_WINDOW, every
ingestion request from that address, even with the right key, is a 429 problem with
`Retry-After` (whole seconds, rounded up) until the failures age out; other addresses are
unaffected, a right key forgives nothing, and a limit of 0 counts nothing. The limiter's
clock is a fake one here, moved by hand.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager

from claims_realtime import app as app_module
from claims_realtime.app import create_app, load_spec
from claims_realtime.realtime.limits import FailureLimiter
from claims_realtime.settings import Settings
from tests.helpers import PUBLISHER_KEY, assert_problem

EVENTS = "/api/v1/claim-events"
BATCH = "/api/v1/claim-events/batch"
SUBSCRIPTIONS = "/api/v1/realtime-subscriptions"
RIGHT = {"X-Publisher-Key": PUBLISHER_KEY}
WRONG = {"X-Publisher-Key": "not-the-publisher-key-0123456789abcdef"}
EVENT = {
    "event_type": "status_changed",
    "claim_id": "clm_7781",
    "organisation_id": "org_001",
    "user_id": "usr_owner",
}
ATTACKER = "203.0.113.7"
NEIGHBOUR = "198.51.100.9"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    """The publisher key limiter of every app built in the test runs on this clock."""
    fake = Clock()

    def limiter(settings: Settings) -> FailureLimiter:
        return FailureLimiter(
            settings.publisher_key_failure_limit,
            settings.publisher_key_failure_window_seconds,
            clock=fake,
        )

    monkeypatch.setattr(app_module, "publisher_key_failures", limiter)
    return fake


Clients = Callable[[str], httpx.AsyncClient]


@asynccontextmanager
async def service(settings: Settings) -> AsyncIterator[Clients]:
    """A running app, and a maker of clients that reach it from a given address."""
    app = create_app(settings)
    async with LifespanManager(app) as manager:
        clients: list[httpx.AsyncClient] = []

        def client_from(address: str) -> httpx.AsyncClient:
            transport = httpx.ASGITransport(app=manager.app, client=(address, 40000))
            client = httpx.AsyncClient(transport=transport, base_url="http://testserver")
            clients.append(client)
            return client

        try:
            yield client_from
        finally:
            for client in clients:
                await client.aclose()


async def publish(client: httpx.AsyncClient, headers: dict[str, str], path: str = EVENTS):
    body: Any = EVENT if path == EVENTS else {"events": [EVENT]}
    return await client.post(path, json=body, headers=headers)


async def fail(client: httpx.AsyncClient, times: int) -> None:
    for _ in range(times):
        assert_problem(await publish(client, WRONG), 401)


async def event_count(client: httpx.AsyncClient, channel_id: str) -> int:
    response = await client.get(f"{SUBSCRIPTIONS}/{channel_id}")
    assert response.status_code == 200, response.text
    return int(response.json()["event_count"])


def assert_too_many(response: httpx.Response, retry_after: int | None = None) -> int:
    assert_problem(response, 429)
    seconds = int(response.headers["Retry-After"])
    assert str(seconds) == response.headers["Retry-After"]  # a whole number of seconds
    assert 1 <= seconds <= 60
    if retry_after is not None:
        assert seconds == retry_after
    return seconds


async def test_defaults_are_20_wrong_keys_per_minute(settings: Settings) -> None:
    assert settings.publisher_key_failure_limit == 20
    assert settings.publisher_key_failure_window_seconds == 60


async def test_after_20_wrong_keys_even_the_right_key_is_a_429(
    settings: Settings, clock: Clock
) -> None:
    async with service(settings) as client_from:
        attacker = client_from(ATTACKER)
        org = await attacker.post(
            f"{SUBSCRIPTIONS}/organisation", json={"organisation_id": "org_001", "user_id": "u1"}
        )
        channel_id = org.json()["channel_id"]
        await fail(attacker, 20)

        for path in (EVENTS, BATCH):
            assert_too_many(await publish(attacker, RIGHT, path), retry_after=60)
        assert_too_many(await publish(attacker, WRONG), retry_after=60)
        assert await event_count(attacker, channel_id) == 0
        # The management API is not behind the publisher key: unaffected.
        assert (await attacker.get(SUBSCRIPTIONS)).status_code == 200


async def test_retry_after_is_rounded_up_to_whole_seconds(settings: Settings, clock: Clock) -> None:
    async with service(settings) as client_from:
        attacker = client_from(ATTACKER)
        await fail(attacker, 20)

        clock.now += 30.2
        assert_too_many(await publish(attacker, RIGHT), retry_after=30)  # 29.8 s left
        clock.now += 29.75
        assert_too_many(await publish(attacker, RIGHT), retry_after=1)  # 0.05 s left


async def test_another_address_is_unaffected(settings: Settings, clock: Clock) -> None:
    async with service(settings) as client_from:
        await fail(client_from(ATTACKER), 20)
        assert_too_many(await publish(client_from(ATTACKER), RIGHT))

        neighbour = client_from(NEIGHBOUR)
        assert (await publish(neighbour, RIGHT)).status_code == 202
        assert_problem(await publish(neighbour, WRONG), 401)


async def test_the_right_key_works_again_once_the_failures_age_out(
    settings: Settings, clock: Clock
) -> None:
    async with service(settings) as client_from:
        attacker = client_from(ATTACKER)
        await fail(attacker, 10)
        clock.now += 30
        await fail(attacker, 10)

        clock.now += 29.5  # the first ten are 59.5 s old
        assert_too_many(await publish(attacker, RIGHT), retry_after=1)
        clock.now += 0.5  # they age out; ten remain, under the limit
        assert (await publish(attacker, RIGHT)).status_code == 202
        await fail(attacker, 10)  # twenty again
        assert_too_many(await publish(attacker, RIGHT), retry_after=30)
        clock.now += 60
        assert (await publish(attacker, RIGHT)).status_code == 202


async def test_a_right_key_forgives_nothing(settings: Settings, clock: Clock) -> None:
    async with service(settings) as client_from:
        attacker = client_from(ATTACKER)
        await fail(attacker, 19)
        assert (await publish(attacker, RIGHT)).status_code == 202
        await fail(attacker, 1)

        assert_too_many(await publish(attacker, RIGHT))


async def test_a_missing_key_is_not_a_wrong_one(settings: Settings, clock: Clock) -> None:
    async with service(settings) as client_from:
        attacker = client_from(ATTACKER)
        for _ in range(25):
            assert_problem(await publish(attacker, {}), 401)

        assert (await publish(attacker, RIGHT)).status_code == 202


async def test_the_limit_is_configurable(settings: Settings, clock: Clock) -> None:
    limited = dataclasses.replace(
        settings, publisher_key_failure_limit=3, publisher_key_failure_window_seconds=5
    )
    async with service(limited) as client_from:
        attacker = client_from(ATTACKER)
        await fail(attacker, 3)

        assert_too_many(await publish(attacker, RIGHT), retry_after=5)


async def test_a_limit_of_0_counts_nothing(settings: Settings, clock: Clock) -> None:
    unlimited = dataclasses.replace(settings, publisher_key_failure_limit=0)
    async with service(unlimited) as client_from:
        attacker = client_from(ATTACKER)
        await fail(attacker, 100)

        assert (await publish(attacker, RIGHT)).status_code == 202


def test_the_document_declares_the_429_on_both_ingestion_operations() -> None:
    document = load_spec()
    for path in ("/claim-events", "/claim-events/batch"):
        reference = document["paths"][path]["post"]["responses"]["429"]["$ref"]
        response = document["components"]["responses"][reference.rsplit("/", 1)[1]]
        assert response["headers"]["Retry-After"]["required"] is True
        assert response["headers"]["Retry-After"]["schema"]["type"] == "integer"
        schema = response["content"]["application/problem+json"]["schema"]
        assert schema == {"$ref": "#/components/schemas/Problem"}
