"""Integration tests start real server processes (see tests/server.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.raw_engineio import SESSIONS, Session
from tests.server import Server


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/tests/integration/" in str(item.path):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(params=["websocket", "polling"])
async def session(request: pytest.FixtureRequest, server: Server) -> AsyncIterator[Session]:
    """A fresh raw Engine.IO session over each transport, on the test module's `server`."""
    async with SESSIONS[request.param](server) as opened:
        yield opened
