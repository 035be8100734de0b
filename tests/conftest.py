"""Fixtures shared by every layer: settings for an isolated app, and the app itself."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from asgi_lifespan import LifespanManager

from claims_realtime.app import create_app
from claims_realtime.settings import Settings
from models.db import close_database, open_database

PUBLISHER_KEY = "test-publisher-key-0123456789abcdef"
ROOT = Path(__file__).resolve().parent.parent


def unique(prefix: str) -> str:
    """An id no other test uses: tests share servers and databases."""
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


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
