"""Storage backends, one per database, chosen by DATABASE_URL's scheme when the database is
opened (models.db.open_database):

    sqlite://...            SQLiteBackend   (models.backends.sqlite: the embedded default)
    postgres://, postgresql://, asyncpg://
                            PostgresBackend (models.backends.postgres: for scale)

The domain gets the open database's backend from `current()`; the interface is
models.backends.base.Backend. Each implementation is imported only when asked for.
"""

from __future__ import annotations

from tortoise.backends.base.client import BaseDBAsyncClient

from claims_realtime.models.backends.base import Backend

__all__ = ["Backend", "backend_classes", "backend_for", "backend_of", "current", "use"]

_current: Backend | None = None


def backend_classes() -> list[type[Backend]]:
    """Every backend there is."""
    from claims_realtime.models.backends.postgres import PostgresBackend
    from claims_realtime.models.backends.sqlite import SQLiteBackend

    return [SQLiteBackend, PostgresBackend]


def backend_for(database_url: str) -> Backend:
    """A new backend for the database DATABASE_URL names (by its scheme)."""
    scheme = database_url.partition("://")[0].lower()
    for backend in backend_classes():
        if scheme in backend.schemes:
            return backend()
    known = ", ".join(f"{s}://" for backend in backend_classes() for s in backend.schemes)
    raise ValueError(f"DATABASE_URL must start with one of {known}: got {scheme}://")


def backend_of(connection: BaseDBAsyncClient) -> Backend:
    """A new backend for the database behind a Tortoise connection: for migrations, which
    are handed a connection, and may run under Tortoise's own CLI (no open_database)."""
    for backend in backend_classes():
        if backend.name == connection.capabilities.dialect:
            return backend()
    raise ValueError(f"no backend for {connection.capabilities.dialect} connections")


def use(backend: Backend) -> Backend:
    """Make `backend` the open database's (open_database and migrate call this)."""
    global _current
    _current = backend
    return backend


def current() -> Backend:
    """The backend of the open database."""
    if _current is None:
        raise RuntimeError("no database is open: call models.db.open_database first")
    return _current
