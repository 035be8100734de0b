"""Fixtures shared by every layer: an isolated app in-process, or a real server process.

`pytest --database=postgres` runs the same tests on a PostgreSQL database created for the
run (and dropped after it) instead of SQLite.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
import tortoise.context
from asgi_lifespan import LifespanManager

from claims_realtime.app import create_app
from claims_realtime.models.db import close_database, migrate, open_database
from claims_realtime.settings import Settings
from tests import services
from tests.helpers import PUBLISHER_KEY, WEBHOOK_SECRET_KEY
from tests.server import Server
from tests.tokens import JWT_SECRET


def _uses_the_pass_database(item: pytest.Item) -> bool:
    """Whether the test reaches the pass's database (through `postgres_url`, which every
    database fixture and every server given the pass's database depends on)."""
    return "postgres_url" in getattr(item, "fixturenames", ())


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Each pass leaves out the in-process tests of the other database's code (they run in
    the other pass): one process cannot use both, Tortoise caches each model's SQL for the
    first. `--database=postgres` drops the `sqlite` ones, the SQLite pass the `postgres` ones.

    The PostgreSQL pass also leaves out the tests that never reach its database (pure units,
    servers on a SQLite file of their own, the wheel, the benchmark's smoke run): they ran,
    identically, in the SQLite pass."""
    on_postgres = config.getoption("--database") == "postgres"
    other = "sqlite" if on_postgres else "postgres"
    kept = [
        item
        for item in items
        if item.get_closest_marker(other) is None
        and (
            not on_postgres
            or item.get_closest_marker("postgres") is not None
            or item.get_closest_marker("scaleout") is not None
            or (_uses_the_pass_database(item) and item.get_closest_marker("sqlite_pass") is None)
        )
    ]
    if len(kept) < len(items):
        config.hook.pytest_deselected(items=[item for item in items if item not in kept])
        items[:] = kept


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--database",
        choices=["sqlite", "postgres"],
        default="sqlite",
        help="where the tests keep their data (postgres: a database created for the run)",
    )


@pytest.fixture(autouse=True)
def database_closed_after() -> Iterator[None]:
    """Fail the test that leaves a database open, and close it: Tortoise keeps one global
    context per process, so the leak would otherwise fail every later test instead."""
    yield
    leaked = tortoise.context.get_current_context()
    if leaked is None:
        return
    with contextlib.suppress(Exception):  # its connections may belong to a closed loop
        asyncio.run(leaked.close_connections())
    tortoise.context._global_context = None
    pytest.fail("the test left its database open (a lifespan or fixture did not close it)")


@pytest.fixture(scope="session")
def postgres_url(request: pytest.FixtureRequest) -> Iterator[str | None]:
    """The run's PostgreSQL database (migrated), or None when testing on SQLite."""
    if request.config.getoption("--database") != "postgres":
        yield None
        return
    services.require_postgres()
    url = asyncio.run(services.create_database())
    asyncio.run(migrate(url))
    try:
        yield url
    finally:
        asyncio.run(services.drop_database(url))


@pytest.fixture
def database_url(postgres_url: str | None) -> str:
    """An empty database for one in-process test."""
    if postgres_url is None:
        return "sqlite://:memory:"
    asyncio.run(services.empty_tables(postgres_url))
    return postgres_url


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return Settings(
        database_url=database_url,
        data_dir=tmp_path / "data",
        publisher_key=PUBLISHER_KEY,
        public_url="https://realtime.example.com",
        webhook_secret_key=WEBHOOK_SECRET_KEY,
    )


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[None]:
    """An empty database for domain-level tests."""
    await open_database(database_url)
    try:
        yield
    finally:
        await close_database()


@contextlib.asynccontextmanager
async def in_process(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client talking to a fresh app built from `settings`, in-process (lifespan
    included)."""
    app = create_app(settings)
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield client


@pytest.fixture
async def api(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client talking to a fresh app in-process (lifespan included)."""
    async with in_process(settings) as client:
        yield client


@pytest.fixture
async def jwt_api(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The same in AUTH_MODE=jwt with the tests' HS256 secret (tests.tokens)."""
    async with in_process(replace(settings, auth_mode="jwt", jwt_secret=JWT_SECRET)) as client:
        yield client


def _server_env(postgres_url: str | None) -> dict[str, str]:
    return {"DATABASE_URL": postgres_url} if postgres_url else {}


@pytest.fixture(scope="module")
def module_postgres_url(postgres_url: str | None) -> Iterator[str | None]:
    """With --database=postgres, a database of the module's own (migrated, dropped after):
    for modules whose servers Schemathesis floods with channels of the examples' users
    (usr_coord99 would reach its limit of 100 active channels and later tests, the README
    tour among them, would get 409). None on SQLite, where every server has its own file."""
    if postgres_url is None:
        yield None
        return
    with services.migrated_database("crt_module") as url:
        yield url


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, postgres_url: str | None) -> Iterator[Server]:
    """A server shared by one test module (tests use unique ids, so they don't interfere)."""
    srv = Server(tmp_path_factory.mktemp("server"), **_server_env(postgres_url))
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def own_server(tmp_path: Path, postgres_url: str | None) -> Iterator[Server]:
    """A server for one test that reconfigures or restarts it. Set `own_server.env` before
    calling `own_server.start()`."""
    srv = Server(tmp_path / "server", **_server_env(postgres_url))
    try:
        yield srv
    finally:
        srv.stop()
