"""Fixtures shared by every layer: an isolated app in-process, or a real server process."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from asgi_lifespan import LifespanManager

from claims_realtime.app import create_app
from claims_realtime.settings import Settings
from models.db import close_database, open_database
from tests.helpers import PUBLISHER_KEY
from tests.server import Server


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        database_url="sqlite://:memory:",
        data_dir=tmp_path / "data",
        publisher_key=PUBLISHER_KEY,
        public_url="https://realtime.example.com",
    )


@pytest.fixture
async def db() -> AsyncIterator[None]:
    """An empty in-memory database for domain-level tests."""
    await open_database("sqlite://:memory:")
    try:
        yield
    finally:
        await close_database()


@pytest.fixture
async def api(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client talking to a fresh app in-process (lifespan included)."""
    app = create_app(settings)
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield client


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server shared by one test module (tests use unique ids, so they don't interfere)."""
    srv = Server(tmp_path_factory.mktemp("server"))
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[Server]:
    """A server for one test that reconfigures or restarts it. Set `own_server.env` before
    calling `own_server.start()`."""
    srv = Server(tmp_path / "server")
    try:
        yield srv
    finally:
        srv.stop()
