"""CORS_ALLOWED_ORIGINS, for the HTTP API (preflight and actual requests) and for Socket.IO
(an Engine.IO polling handshake), with the same-origin-only default."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import replace

import httpx
import pytest
from asgi_lifespan import LifespanManager

from claims_realtime.app import create_app
from claims_realtime.settings import Settings

ALLOWED = "https://app.example.com"
FOREIGN = "https://evil.example.com"
SUBS = "/api/v1/realtime-subscriptions"
HANDSHAKE = "/socket.io/?EIO=4&transport=polling"

AppFactory = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]


@pytest.fixture
def app_with(settings: Settings) -> AppFactory:
    @asynccontextmanager
    async def start(*origins: str) -> AsyncIterator[httpx.AsyncClient]:
        app = create_app(replace(settings, cors_allowed_origins=origins))
        async with LifespanManager(app) as manager:
            transport = httpx.ASGITransport(app=manager.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
                yield c

    return start


def preflight(origin: str, method: str = "POST") -> dict[str, str]:
    return {
        "Origin": origin,
        "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": "authorization, content-type",
    }


async def handshake(client: httpx.AsyncClient, origin: str) -> httpx.Response:
    """Open an Engine.IO session by polling, then close it again (a `1` CLOSE packet)."""
    response = await client.get(HANDSHAKE, headers={"Origin": origin})
    if response.status_code == 200:
        sid = response.text.split('"sid":"', 1)[1].split('"', 1)[0]
        await client.post(f"{HANDSHAKE}&sid={sid}", content="1", headers={"Origin": origin})
    return response


async def test_allowed_origin_gets_cors_headers_over_http(app_with: AppFactory) -> None:
    async with app_with(ALLOWED, "http://localhost:3000") as client:
        response = await client.options(f"{SUBS}/user", headers=preflight(ALLOWED))
        assert response.status_code == 200, response.text
        assert response.headers["access-control-allow-origin"] == ALLOWED
        assert "POST" in response.headers["access-control-allow-methods"]
        allowed_headers = response.headers["access-control-allow-headers"].lower()
        assert "authorization" in allowed_headers and "content-type" in allowed_headers
        assert "access-control-allow-credentials" not in response.headers

        created = await client.post(
            f"{SUBS}/user", json={"user_id": "usr_cors"}, headers={"Origin": ALLOWED}
        )
        assert created.status_code == 201, created.text
        assert created.headers["access-control-allow-origin"] == ALLOWED
        assert "x-request-id" in created.headers["access-control-expose-headers"].lower()


async def test_foreign_origin_gets_no_cors_headers_over_http(app_with: AppFactory) -> None:
    async with app_with(ALLOWED) as client:
        response = await client.options(f"{SUBS}/user", headers=preflight(FOREIGN))
        assert response.status_code == 400
        assert "access-control-allow-origin" not in response.headers

        listed = await client.get(SUBS, headers={"Origin": FOREIGN})
        assert listed.status_code == 200  # the browser, not us, withholds it from the page
        assert "access-control-allow-origin" not in listed.headers


async def test_default_is_same_origin_only_over_http(app_with: AppFactory) -> None:
    async with app_with() as client:
        response = await client.options(f"{SUBS}/user", headers=preflight(ALLOWED))
        assert "access-control-allow-origin" not in response.headers
        assert response.status_code == 405  # no CORS layer: OPTIONS is not an operation

        listed = await client.get(SUBS, headers={"Origin": ALLOWED})
        assert "access-control-allow-origin" not in listed.headers


async def test_wildcard_allows_any_origin(app_with: AppFactory) -> None:
    async with app_with("*") as client:
        response = await client.options(f"{SUBS}/user", headers=preflight(FOREIGN))
        assert response.status_code == 200
        assert response.headers["access-control-allow-origin"] in ("*", FOREIGN)
        assert (await handshake(client, FOREIGN)).status_code == 200


async def test_socketio_handshake_honours_allowed_origins(app_with: AppFactory) -> None:
    async with app_with(ALLOWED) as client:
        allowed = await handshake(client, ALLOWED)
        assert allowed.status_code == 200, allowed.text
        assert allowed.headers["access-control-allow-origin"] == ALLOWED

        # Our own origin stays allowed next to the configured ones.
        own = await handshake(client, "http://testserver")
        assert own.status_code == 200, own.text

        refused = await handshake(client, FOREIGN)
        assert refused.status_code == 400
        assert "access-control-allow-origin" not in refused.headers


async def test_socketio_default_is_same_origin_only(app_with: AppFactory) -> None:
    async with app_with() as client:
        own = await handshake(client, "http://testserver")
        assert own.status_code == 200, own.text

        refused = await handshake(client, ALLOWED)
        assert refused.status_code == 400
        assert "access-control-allow-origin" not in refused.headers
