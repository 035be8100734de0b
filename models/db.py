"""Opening the database (Tortoise ORM; the backend is chosen by the URL's scheme) and keeping
its schema current with Tortoise's migrations (`models/migrations/`).

    claims-realtime migrate        apply pending migrations (what PostgreSQL deployments run)
    open_database(url)             connect; SQLite databases are migrated on the spot, other
                                   databases must be current or the server refuses to start

To change the schema: edit the models, then
`DATABASE_URL=sqlite://:memory: python -m tortoise -c models.db.TORTOISE_ORM makemigrations`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from typing import Any
from urllib.parse import urlsplit

from tortoise import Tortoise
from tortoise.context import set_global_context
from tortoise.exceptions import DBConnectionError
from tortoise.migrations.executor import MigrationExecutor

from claims_realtime.models.backends import backend_classes, backend_for, current, use
from claims_realtime.models.errors import Unavailable

MODEL_MODULES = [
    "claims_realtime.models.channel",
    "claims_realtime.models.event",
    "claims_realtime.models.presence",
    "claims_realtime.models.fallback",
]
MIGRATIONS_MODULE = "claims_realtime.models.migrations"

log = logging.getLogger(__name__)


class SchemaOutOfDate(RuntimeError):
    """The database lacks migrations this code needs: run `claims-realtime migrate`."""


def tortoise_config(database_url: str, *, pool_size: int = 10) -> dict[str, Any]:
    """Tortoise's configuration: the database's backend adds its connection settings to the
    URL (SQLite: durable commits and the write path's tuning; PostgreSQL: a bounded pool)."""
    connection = backend_for(database_url).connection_config(database_url, pool_size=pool_size)
    return {
        "connections": {"default": connection},
        "apps": {
            "models": {
                "models": MODEL_MODULES,
                "default_connection": "default",
                "migrations": MIGRATIONS_MODULE,
            }
        },
        "use_tz": True,
        "timezone": "UTC",
    }


def __getattr__(name: str) -> Any:
    # TORTOISE_ORM, for Tortoise's own CLI (`python -m tortoise -c models.db.TORTOISE_ORM`):
    # built when asked for, so that importing this module neither reads DATABASE_URL nor
    # fails on a URL no backend serves.
    if name == "TORTOISE_ORM":
        return tortoise_config(os.environ.get("DATABASE_URL") or "sqlite://:memory:")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _executor() -> MigrationExecutor:
    apps: dict[str, dict[str, Any]] = tortoise_config("sqlite://:memory:")["apps"]
    return MigrationExecutor(Tortoise.get_connection("default"), apps)


async def _migrate_connected() -> list[str]:
    applied: list[str] = []

    def progress(event: str, app_label: str, name: str) -> None:
        if event == "apply_done":
            applied.append(f"{app_label}.{name}")
            log.info("applied migration %s.%s", app_label, name)

    await _executor().migrate(progress=progress)
    return applied


async def migrate(database_url: str) -> list[str]:
    """Apply pending migrations; answer their names. Safe to run when nothing is pending."""
    use(backend_for(database_url)).prepare(database_url)
    await Tortoise.init(config=tortoise_config(database_url))
    try:
        return await _migrate_connected()
    finally:
        await Tortoise.close_connections()


async def pending_migrations() -> list[str]:
    """Migrations not yet applied to the connected database."""
    plan = await _executor().plan(None)
    return [
        f"{step.migration.app_label}.{step.migration.name}" for step in plan if not step.backward
    ]


async def open_database(database_url: str, *, pool_size: int = 10) -> None:
    """Connect this process to the database, with its schema current.

    The URL's scheme picks the storage backend (models.backends) the domain uses from then
    on. SQLite (the zero-setup default) is migrated on the spot; any other database must have
    been migrated with `claims-realtime migrate`, or SchemaOutOfDate is raised.
    Tortoise keeps its state in a context variable; the global fallback makes that state
    visible to request and Socket.IO tasks, which do not inherit the lifespan's context.
    """
    backend = use(backend_for(database_url))
    backend.prepare(database_url)
    context = await Tortoise.init(config=tortoise_config(database_url, pool_size=pool_size))
    set_global_context(context)
    try:
        if backend.migrates_on_open:
            await _migrate_connected()
        pending = await pending_migrations()
        if pending:
            raise SchemaOutOfDate(
                f"the database at {_redacted(database_url)} lacks migrations "
                f"{', '.join(pending)}: run `claims-realtime migrate` first"
            )
        await backend.opened()
    except BaseException:
        await Tortoise.close_connections()
        raise
    log.info("database ready: %s", _redacted(database_url))


def _means_unavailable(exc: BaseException) -> bool:
    if isinstance(exc, DBConnectionError | OSError):  # refused, reset, timed out
        return True
    return any(backend.means_unavailable(exc) for backend in backend_classes())


def database_unavailable(exc: BaseException) -> Unavailable | None:
    """The Unavailable (503) an error means when the database cannot be reached or cannot
    take the work now (connection refused or lost, PostgreSQL restarting, SQLite locked),
    or None for any other error. The one place such errors are recognised: the HTTP error
    handler asks it about every unexpected exception.

    The exception's causes are examined too: a transaction whose connection died raises
    from its rollback, with the original failure as context.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if _means_unavailable(current):
            return Unavailable(
                "The database is unavailable; retry later. An ingestion retried with the "
                "same event_id is recorded at most once.",
                {"database": "unavailable"},
            )
        current = current.__cause__ or current.__context__
    return None


async def database_reachable(timeout: float = 2.0) -> bool:
    try:
        connection = Tortoise.get_connection("default")
        await asyncio.wait_for(connection.execute_query("SELECT 1"), timeout)
    except Exception:
        return False
    return True


async def close_database() -> None:
    try:
        with contextlib.suppress(RuntimeError):  # no database was opened
            await current().close()
    finally:
        await Tortoise.close_connections()


def _redacted(database_url: str) -> str:
    parts = urlsplit(database_url)
    if parts.password:
        return database_url.replace(f":{parts.password}@", ":***@")
    return database_url
