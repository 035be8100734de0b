"""Opening and closing the database (Tortoise ORM); the backend is chosen by the URL's scheme."""

from __future__ import annotations

import logging
from pathlib import Path
from urllib.parse import urlsplit

from tortoise import Tortoise

MODEL_MODULES = ["models.channel", "models.event"]

log = logging.getLogger(__name__)


def sqlite_path(database_url: str) -> Path | None:
    """The file behind a `sqlite://` URL, or None (in-memory, or not SQLite)."""
    if not database_url.startswith("sqlite://"):
        return None
    path = database_url[len("sqlite://") :].split("?", 1)[0]
    if not path or path == ":memory:":
        return None
    return Path(path)


def _with_sqlite_durability(database_url: str) -> str:
    """Ask SQLite to fsync every commit: an event is durable before the API says 202."""
    if not database_url.startswith("sqlite://") or "synchronous=" in database_url:
        return database_url
    return database_url + ("&" if "?" in database_url else "?") + "synchronous=FULL"


async def open_database(database_url: str, *, create_schema: bool = True) -> None:
    """Connect this process to the database and (by default) create missing tables.

    Tortoise keeps its state in a context variable; the global fallback makes that state
    visible to request and Socket.IO tasks, which do not inherit the lifespan's context.
    """
    path = sqlite_path(database_url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    await Tortoise.init(
        db_url=_with_sqlite_durability(database_url),
        modules={"models": MODEL_MODULES},
        _enable_global_fallback=True,
    )
    if create_schema:
        await Tortoise.generate_schemas(safe=True)
    log.info("database ready: %s", _redacted(database_url))


async def close_database() -> None:
    await Tortoise.close_connections()


def _redacted(database_url: str) -> str:
    parts = urlsplit(database_url)
    if parts.password:
        return database_url.replace(f":{parts.password}@", ":***@")
    return database_url
