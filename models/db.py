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
import logging
import os
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar, cast
from urllib.parse import urlsplit

from tortoise import Tortoise
from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.exceptions import DBConnectionError, IntegrityError, OperationalError
from tortoise.migrations.executor import MigrationExecutor
from tortoise.transactions import in_transaction

from claims_realtime.models.errors import Unavailable

MODEL_MODULES = [
    "claims_realtime.models.channel",
    "claims_realtime.models.event",
    "claims_realtime.models.presence",
]
MIGRATIONS_MODULE = "claims_realtime.models.migrations"

log = logging.getLogger(__name__)

T = TypeVar("T")


class SchemaOutOfDate(RuntimeError):
    """The database lacks migrations this code needs: run `claims-realtime migrate`."""


def sqlite_path(database_url: str) -> Path | None:
    """The file behind a `sqlite://` URL, or None (in-memory, or not SQLite)."""
    if not database_url.startswith("sqlite://"):
        return None
    path = database_url[len("sqlite://") :].split("?", 1)[0]
    if not path or path == ":memory:":
        return None
    return Path(path)


def _with_param(database_url: str, name: str, value: object) -> str:
    if f"{name}=" in database_url:
        return database_url  # set explicitly in the URL: the URL wins
    return database_url + ("&" if "?" in database_url else "?") + f"{name}={value}"


#: SQLite settings of the service's connection (Tortoise runs `PRAGMA name=value` for each
#: URL parameter; one given in DATABASE_URL wins).
SQLITE_PRAGMAS: dict[str, object] = {
    # fsync every commit: an event is durable before the API says 202.
    "synchronous": "FULL",
    # Wait for a lock rather than failing when a second process (e.g. `migrate`) holds it.
    "busy_timeout": 5000,
    # 64 MiB: each placement writes its channel's newest index page, and a thousand busy
    # channels' pages outgrow the 2 MiB default (docs/performance-log.md#the-sqlite-connection).
    "cache_size": -65536,
    # Copy the WAL back into the database every 8,000 pages (32 MiB) rather than 1,000: a
    # page rewritten by many commits is copied once per checkpoint (an organisation event
    # writes ~140 pages, so the default checkpointed after nearly every commit).
    "wal_autocheckpoint": 8000,
    # Keep the WAL file's space between checkpoints (Tortoise sets 16 KiB: the file was
    # truncated after every checkpoint and regrown by the next commits).
    "journal_size_limit": 64 * 1024 * 1024,
    # Keep statement and savepoint journals in memory: every call of a group commit runs in a
    # SAVEPOINT (models.group_commit), whose journal past 64 KiB otherwise goes to a temporary
    # file created and unlinked per commit.
    "temp_store": "MEMORY",
}


def connection_url(database_url: str, *, pool_size: int = 10) -> str:
    """The URL Tortoise connects with: durable SQLite commits, a bounded PostgreSQL pool."""
    if database_url.startswith("sqlite://"):
        for name, value in SQLITE_PRAGMAS.items():
            database_url = _with_param(database_url, name, value)
        return database_url
    return _with_param(_with_param(database_url, "maxsize", pool_size), "minsize", 1)


def tortoise_config(database_url: str, *, pool_size: int = 10) -> dict[str, Any]:
    return {
        "connections": {"default": connection_url(database_url, pool_size=pool_size)},
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


#: For Tortoise's own CLI (`python -m tortoise -c models.db.TORTOISE_ORM ...`).
TORTOISE_ORM = tortoise_config(os.environ.get("DATABASE_URL", "sqlite://:memory:"))


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
    _create_parent_dir(database_url)
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

    SQLite (the zero-setup default) is migrated on the spot; any other database must have
    been migrated with `claims-realtime migrate`, or SchemaOutOfDate is raised.
    Tortoise keeps its state in a context variable; the global fallback makes that state
    visible to request and Socket.IO tasks, which do not inherit the lifespan's context.
    """
    _create_parent_dir(database_url)
    await Tortoise.init(
        config=tortoise_config(database_url, pool_size=pool_size), _enable_global_fallback=True
    )
    if database_url.startswith("sqlite://"):
        await _migrate_connected()
    pending = await pending_migrations()
    if pending:
        await Tortoise.close_connections()
        raise SchemaOutOfDate(
            f"the database at {_redacted(database_url)} lacks migrations {', '.join(pending)}: "
            "run `claims-realtime migrate` first"
        )
    log.info("database ready: %s", _redacted(database_url))


def sql_for(connection: BaseDBAsyncClient, query: str) -> str:
    """`query`, written with `?` placeholders, in the connection's parameter style."""
    if connection.capabilities.dialect == "sqlite":
        return query
    parts = query.split("?")
    return parts[0] + "".join(f"${i}{part}" for i, part in enumerate(parts[1:], start=1))


# Bulk writes as few, large statements rather than executemany: executemany takes the GIL
# back for every row, while one statement binds its parameters and then runs without it, and
# under load each hand-off from the busy event loop waits out the switch interval
# (docs/performance-log.md#sqlite-statements). So on SQLite a batch is padded to one
# statement per table (see insert_statements). PostgreSQL keeps exact sizes: it infers a
# parameter's type from an INSERT's target column, not through a padded SELECT.
#: Bound parameters per statement: SQLite allows 32,766, PostgreSQL 32,767.
_PARAMETERS_PER_STATEMENT = 30_000

#: A statement written with `?` placeholders, and its parameters.
Statement = tuple[str, list[Any]]


def chunk_sizes(count: int, largest: int, *, pad: bool = False) -> list[int]:
    """Statement sizes (in rows) for `count` rows: powers of two no larger than `largest`,
    largest first, adding up to `count`; with `pad`, what is left after the full chunks is
    one statement rounded up to a power of two (the caller pads its rows, see
    insert_statements).

    Statements are built for that many rows: a handful of distinct SQL texts, each
    prepared once and then found in the connection's statement cache. A text per batch
    size missed the cache every time, and preparing a statement of a few hundred rows cost
    a few hundred microseconds (docs/performance-log.md#sqlite-statements)."""
    top = 1 << (max(1, largest).bit_length() - 1)
    sizes = []
    while count > 0:
        size = min(top, 1 << (count.bit_length() - 1))
        if pad and size < count < top:
            size = 1 << count.bit_length()  # the rest, in one padded statement
        sizes.append(size)
        count -= min(size, count)
    return sizes


def padded(values: Sequence[Any]) -> list[Any]:
    """`values` repeated at the end up to a power of two long, for an `IN (...)` list:
    the same few statement texts whatever the count (see chunk_sizes); duplicates in IN
    change nothing."""
    values = list(values)
    if not values:
        return values
    size = 1 << (len(values) - 1).bit_length()
    return values + [values[-1]] * (size - len(values))


def insert_statements(
    dialect: str, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]
) -> list[Statement]:
    """INSERT many rows in a few statements of cacheable sizes (see chunk_sizes).

    On SQLite the rows after the last full chunk go in one statement, padded with rows of
    NULLs that its `WHERE column1 IS NOT NULL` leaves out: the first column of a row must
    never be NULL."""
    pad = dialect == "sqlite"
    row_sql = "(" + ", ".join("?" * len(columns)) + ")"
    into = f"INSERT INTO {table} ({', '.join(columns)}) "
    statements = []
    start = 0
    for size in chunk_sizes(len(rows), _PARAMETERS_PER_STATEMENT // len(columns), pad=pad):
        chunk = rows[start : start + size]
        start += size
        values = "VALUES " + ", ".join([row_sql] * size)
        parameters = [value for row in chunk for value in row]
        if len(chunk) < size:
            assert all(row[0] is not None for row in chunk), "the first column is the filter"
            parameters += [None] * (len(columns) * (size - len(chunk)))
        query = (
            f"{into}SELECT * FROM ({values}) WHERE column1 IS NOT NULL" if pad else into + values
        )
        statements.append((query, parameters))
    return statements


def update_statements(
    dialect: str,
    table: str,
    column: str,
    values: Mapping[str, int],
    *,
    forward_only: bool = False,
    also: Mapping[str, Any] | None = None,
) -> list[Statement]:
    """Set an integer `column` per row id, joining a VALUES list (statements of cacheable
    sizes, see chunk_sizes; on SQLite padded with (NULL, NULL) pairs, which match no row);
    with `forward_only`, never lower it (NULL counts as lower than anything).

    A join, not `CASE id WHEN ... END`: a CASE is evaluated arm by arm for every row, so
    writing back 1,000 channels' positions cost a million comparisons (py-spy: 6% of
    SQLite's thread on the user workload). UPDATE ... FROM needs SQLite 3.33."""
    items = list(values.items())
    greatest = "max" if dialect == "sqlite" else "GREATEST"
    new = f"{greatest}(COALESCE({column}, 0), v.value)" if forward_only else "v.value"
    assignments = ", ".join([f"{column} = {new}", *(f"{name} = ?" for name in (also or {}))])
    statements = []
    start = 0
    largest = (_PARAMETERS_PER_STATEMENT - len(also or {})) // 2
    for size in chunk_sizes(len(items), largest, pad=dialect == "sqlite"):
        chunk = items[start : start + size]
        start += size
        rows = ", ".join(["(?, CAST(? AS BIGINT))"] * size)
        query = (
            f"WITH v(id, value) AS (VALUES {rows}) "
            f"UPDATE {table} SET {assignments} FROM v WHERE {table}.id = v.id"
        )
        parameters: list[Any] = [value for pair in chunk for value in pair]
        parameters += [None, None] * (size - len(chunk))
        statements.append((query, parameters + list((also or {}).values())))
    return statements


def lock_rows_statement(table: str, ids: Sequence[str]) -> Statement:
    """PostgreSQL: lock rows by id in id order (`SELECT ... ORDER BY id FOR UPDATE`).

    Every transaction that updates several channel rows takes their locks this way first,
    as ingestion does (its candidates query): two transactions locking overlapping rows in
    different orders deadlock, and PostgreSQL then aborts one of them (seen under load:
    the positions flush, whose UPDATE ... FROM VALUES locks rows in join order, against
    ingestion)."""
    values = padded(sorted(ids))
    placeholders = ", ".join("?" * len(values))
    return f"SELECT id FROM {table} WHERE id IN ({placeholders}) ORDER BY id FOR UPDATE", values


def is_transient_conflict(exc: BaseException) -> bool:
    """A PostgreSQL deadlock or serialization failure: the transaction was rolled back and
    trying it again is safe (SQLSTATE 40P01, 40001; asyncpg sets `sqlstate`)."""
    current: BaseException | None = exc
    while current is not None:
        if getattr(current, "sqlstate", None) in ("40P01", "40001"):
            return True
        current = current.__cause__ or current.__context__
    return False


async def execute_all(connection: BaseDBAsyncClient, statements: Sequence[Statement]) -> None:
    """Run statements, in order, on a Tortoise connection (e.g. a transaction's)."""
    for query, parameters in statements:
        await connection.execute_query(sql_for(connection, query), parameters)


async def execute_in_transaction(statements: Sequence[Statement]) -> None:
    """Run statements, in order, in one transaction, committed before this returns."""
    if dialect() == "sqlite":
        await sqlite_transaction(lambda db: _execute_sync(db, statements))
        return
    async with in_transaction() as connection:
        await execute_all(connection, statements)


def _execute_sync(db: sqlite3.Connection, statements: Sequence[Statement]) -> None:
    for query, parameters in statements:
        db.execute(query, parameters)


def dialect() -> str:
    """The default connection's SQL dialect: `sqlite` or `postgres`."""
    return str(Tortoise.get_connection("default").capabilities.dialect)


async def sqlite_transaction(work: Callable[[sqlite3.Connection], T]) -> T:
    """SQLite: run `work(db)` in one transaction, in one trip to aiosqlite's thread (where
    `work` runs, between BEGIN IMMEDIATE and COMMIT), and answer what it returns; rolled
    back if it raises. Committed (fsynced: synchronous=FULL) before this returns.

    Why not Tortoise's `in_transaction()`: it makes the BEGIN, every statement and the
    COMMIT (after a no-op commit) a trip of their own, each resumed by the event loop only
    when its turn comes, with the connection's lock held all along. Under load a trip took
    ~1 ms, seven per ingestion, and that lock's queue, not SQLite, capped ingestion.
    This holds the same lock (Tortoise's, around every use of its one connection), so it
    never interleaves with Tortoise's own queries. It reaches into Tortoise's SQLite client
    and aiosqlite (both pinned in pyproject.toml): tests/unit/test_db.py checks the contract.
    """
    client: Any = Tortoise.get_connection("default")
    async with client._lock:
        if client._connection is None:
            await client.create_connection(with_db=True)
        threaded = client._connection  # aiosqlite.Connection

        def transaction() -> T:
            db: sqlite3.Connection = threaded._conn
            db.execute("BEGIN IMMEDIATE")
            try:
                result = work(db)
            except BaseException:
                if db.in_transaction:  # SQLite ends it itself on some errors
                    db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
            return result

        try:
            return cast(T, await threaded._execute(transaction))
        except (sqlite3.IntegrityError, sqlite3.OperationalError) as exc:
            raise translated_sqlite_error(exc) from exc


def translated_sqlite_error(exc: BaseException) -> BaseException:
    """sqlite3's IntegrityError and OperationalError as Tortoise's, which the callers (and
    the 503 mapping, and ingestion's retry) know; any other exception as it is."""
    if isinstance(exc, sqlite3.IntegrityError):
        return IntegrityError(exc)
    if isinstance(exc, sqlite3.OperationalError):
        return OperationalError(exc)
    return exc


#: SQLite errors that mean "not now" rather than "wrong": another writer, a full disk.
_SQLITE_UNAVAILABLE = (
    "database is locked",
    "database table is locked",
    "unable to open database",
    "disk i/o error",
    "database or disk is full",
)


def _means_unavailable(exc: BaseException) -> bool:
    if isinstance(exc, DBConnectionError | OSError):  # refused, reset, timed out
        return True
    try:
        import asyncpg
    except ImportError:  # pragma: no cover - asyncpg is a dependency
        asyncpg = None
    if asyncpg is not None:
        # SQLSTATE class 08 (connection), 53 (resources, e.g. too many connections) and
        # 57 (operator intervention: shutdown, "the database system is starting up").
        postgres_down = (
            asyncpg.PostgresConnectionError,
            asyncpg.InsufficientResourcesError,
            asyncpg.OperatorInterventionError,
        )
        if isinstance(exc, postgres_down):
            return True
        if isinstance(exc, asyncpg.InterfaceError) and "closed" in str(exc):
            return True  # "connection is closed", "pool is closed"
    message = str(exc).lower()
    return isinstance(exc, OperationalError | sqlite3.OperationalError) and any(
        text in message for text in _SQLITE_UNAVAILABLE
    )


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
    await Tortoise.close_connections()


def _create_parent_dir(database_url: str) -> None:
    path = sqlite_path(database_url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)


def _redacted(database_url: str) -> str:
    parts = urlsplit(database_url)
    if parts.password:
        return database_url.replace(f":{parts.password}@", ":***@")
    return database_url
