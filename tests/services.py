"""PostgreSQL and Redis for the tests: throwaway databases, and a clear failure (under CI)
or a skip with the reason (elsewhere) when a service is not there."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import asyncpg
import pytest

if TYPE_CHECKING:
    from tests.server import Server

#: An administrative connection: the tests create and drop their own databases through it.
POSTGRES_ADMIN_URL = os.environ.get(
    "TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
TABLES = (
    "feed_event",
    "claim_event",
    "presence",
    "node",
    "webhook_failure",
    "webhook_fallback",
    "webhook_key_check",
    "channel",
    "feed",
)


def _reachable(url: str) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 0), 1):
            return True
    except OSError:
        return False


def require(name: str, url: str) -> None:
    """Fail under CI (the machine is meant to have it), skip with the reason elsewhere."""
    if _reachable(url):
        return
    message = f"{name} is not reachable at {url} (CI starts it: see .ci/run)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def require_program(name: str) -> None:
    if shutil.which(name) is None:
        message = f"{name} is not installed (the machine's Redis package provides it)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


def require_postgres() -> None:
    require("PostgreSQL", POSTGRES_ADMIN_URL)


def require_redis() -> None:
    require("Redis", REDIS_URL)


def _url_for(name: str) -> str:
    parts = urlsplit(POSTGRES_ADMIN_URL)
    return parts._replace(path=f"/{name}").geturl()


async def create_database(prefix: str = "crt_test") -> str:
    """A new empty database; answers its URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    connection = await asyncpg.connect(POSTGRES_ADMIN_URL)
    try:
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()
    return _url_for(name)


async def drop_database(url: str) -> None:
    name = urlsplit(url).path.lstrip("/")
    connection = await asyncpg.connect(POSTGRES_ADMIN_URL)
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await connection.close()


async def empty_tables(url: str) -> None:
    """Every table emptied: an in-process test starts from nothing, as on SQLite."""
    connection = await asyncpg.connect(url)
    try:
        await connection.execute(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE")
    finally:
        await connection.close()


@contextlib.contextmanager
def migrated_database(prefix: str) -> Iterator[str]:
    """A fresh PostgreSQL database with the current schema, dropped afterwards."""
    from claims_realtime.models.db import migrate

    require_postgres()
    url = asyncio.run(create_database(prefix))
    asyncio.run(migrate(url))
    try:
        yield url
    finally:
        asyncio.run(drop_database(url))


@contextlib.contextmanager
def server_pair(tmp_path: Path, database_url: str, **env: str) -> Iterator[tuple[Server, Server]]:
    """Two server processes on two ports over one PostgreSQL and the machine's Redis, quick
    to notice each other's death (heartbeat 1 s, stale after 3 s); `env` adds settings."""
    from tests.server import Server

    require_redis()
    servers = tuple(
        Server(
            tmp_path / name,
            DATABASE_URL=database_url,
            REDIS_URL=REDIS_URL,
            NODE_HEARTBEAT="1",
            NODE_STALE_AFTER="3",
            **env,
        )
        for name in ("a", "b")
    )
    try:
        for server in servers:
            server.start()
        yield servers[0], servers[1]
    finally:
        for server in servers:
            server.stop()
