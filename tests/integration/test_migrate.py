"""`claims-realtime migrate`: creates and upgrades a PostgreSQL schema; servers refuse a
database that lacks migrations instead of failing later."""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import services
from tests.helpers import ROOT
from tests.server import CLI, Server


@pytest.fixture
def empty_postgres() -> Iterator[str]:
    services.require_postgres()
    url = asyncio.run(services.create_database("crt_migrate"))
    try:
        yield url
    finally:
        asyncio.run(services.drop_database(url))


def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CLI, *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={**os.environ, "LOG_LEVEL": "WARNING", **env},
    )


def test_migrate_creates_then_finds_nothing_to_do(empty_postgres: str) -> None:
    first = run("migrate", DATABASE_URL=empty_postgres)
    assert first.returncode == 0, first.stderr
    assert "applied models.0001_initial" in first.stdout
    again = run("migrate", DATABASE_URL=empty_postgres)
    assert again.returncode == 0 and "schema is up to date" in again.stdout


def test_a_server_refuses_an_unmigrated_database_then_serves_it_migrated(
    empty_postgres: str, tmp_path: Path
) -> None:
    server = Server(tmp_path / "server", DATABASE_URL=empty_postgres)
    with pytest.raises(RuntimeError, match="run `claims-realtime migrate` first"):
        server.start()
    server.stop()
    assert run("migrate", DATABASE_URL=empty_postgres).returncode == 0
    server.start()
    server.stop()
