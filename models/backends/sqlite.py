"""SQLite, the embedded zero-setup database: one connection, one writer at a time, and write
transactions run in one trip to aiosqlite's thread, sharing their COMMITs (group commit)."""

from __future__ import annotations

import functools
import json
import sqlite3
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar, TypeVar, cast

import aiosqlite
from tortoise import Tortoise
from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.exceptions import IntegrityError, OperationalError

from claims_realtime.models.backends.base import Backend, with_param
from claims_realtime.models.backends.group_commit import GroupCommit
from claims_realtime.models.fields import db_time
from claims_realtime.models.sql import (
    Script,
    Select,
    Statement,
)

T = TypeVar("T")

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
    # writes so many pages that the default checkpointed after nearly every commit).
    "wal_autocheckpoint": 8000,
    # Keep the WAL file's space between checkpoints (Tortoise sets 16 KiB: the file was
    # truncated after every checkpoint and regrown by the next commits).
    "journal_size_limit": 64 * 1024 * 1024,
    # Keep statement and savepoint journals in memory: every call of a group commit runs in a
    # SAVEPOINT (models.backends.group_commit), whose journal past 64 KiB otherwise goes to a
    # temporary file created and unlinked per commit.
    "temp_store": "MEMORY",
}

#: SQLite errors that mean "not now" rather than "wrong": another writer, a full disk.
_UNAVAILABLE = (
    "database is locked",
    "database table is locked",
    "unable to open database",
    "disk i/o error",
    "database or disk is full",
)


def sqlite_path(database_url: str) -> Path | None:
    """The file behind a `sqlite://` URL, or None (in-memory)."""
    path = database_url.partition("://")[2].split("?", 1)[0]
    if not path or path == ":memory:":
        return None
    return Path(path)


class SQLiteBackend(Backend):
    """SQLite through Tortoise's one aiosqlite connection.

    Write transactions (`run`) are not Tortoise's `in_transaction()`: that makes the BEGIN,
    every statement and the COMMIT a trip of their own to aiosqlite's thread, each resumed by
    the event loop only when its turn comes, with the connection's lock held all along. Under
    load that lock's queue, not SQLite, capped ingestion. Here a transaction script runs
    whole in SQLite's thread, between BEGIN IMMEDIATE and COMMIT.
    """

    name: ClassVar[str] = "sqlite"
    schemes: ClassVar[tuple[str, ...]] = ("sqlite",)
    # A batch is padded to one statement per table: on SQLite every statement is a wait for
    # the GIL under load (models.sql).
    pad_statements = True
    greatest = "max"
    migrates_on_open: ClassVar[bool] = True

    def __init__(self) -> None:
        self._group_commit = GroupCommit(self)
        self._path: Path | None = None
        #: History reads' own connection: in WAL mode a reader never waits for the writer
        #: nor holds it up, while Tortoise's one connection would queue them with ingestion.
        self._reader: aiosqlite.Connection | None = None

    def connection_url(self, database_url: str, *, pool_size: int) -> str:
        for name, value in SQLITE_PRAGMAS.items():
            database_url = with_param(database_url, name, value)
        return database_url

    def prepare(self, database_url: str) -> None:
        path = sqlite_path(database_url)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._path = path.resolve()

    async def opened(self) -> None:
        if self._path is None:
            return  # in memory: no second connection can see it; reads share the one
        reader = await aiosqlite.connect(f"{self._path.as_uri()}?mode=ro", uri=True)
        await reader.execute("PRAGMA query_only = ON")
        await reader.execute(f"PRAGMA busy_timeout = {SQLITE_PRAGMAS['busy_timeout']}")
        self._reader = reader

    async def close(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            await reader.close()

    async def read(self, select: Select) -> list[Sequence[Any]]:
        if self._reader is None:
            return await super().read(select)
        # One row holding them all, as in transactions (_select): a thousand-row page
        # otherwise took the GIL back from the event loop a thousand times.
        ((rows,),) = await self._reader.execute_fetchall(_as_one_row(select), select.parameters)
        return cast(list[Sequence[Any]], json.loads(rows))

    @classmethod
    def means_unavailable(cls, exc: BaseException) -> bool:
        message = str(exc).lower()
        return isinstance(exc, OperationalError | sqlite3.OperationalError) and any(
            text in message for text in _UNAVAILABLE
        )

    # -- SQL text --------------------------------------------------------------------------

    def bind_time(self, moment: datetime) -> Any:
        """Tortoise's conversion, then the sqlite3 adapter Tortoise registers for datetimes,
        done once per distinct time of a batch: bound as a datetime, the adapter is a Python
        call per row (an organisation event has a hundred), in SQLite's thread."""
        value = db_time(moment)
        adapt = sqlite3.adapters.get((type(value), sqlite3.PrepareProtocol))
        return adapt(value) if adapt is not None else value

    def read_time(self, value: Any) -> datetime:
        return _parse_time(value)

    # -- transactions ----------------------------------------------------------------------

    async def run(self, script: Script[T], *, shared: bool = False) -> T:
        def work(db: sqlite3.Connection) -> T:
            return self._drive(db, script)

        return await (self.group_transaction(work) if shared else self.transaction(work))

    def lock_rows(self, table: str, ids: Sequence[str]) -> list[Statement]:
        return []  # one writer at a time: nothing to order

    async def lock_until_commit(self, connection: BaseDBAsyncClient, space: int, key: str) -> None:
        return None  # Tortoise runs one transaction at a time on its one SQLite connection

    async def transaction(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run `work(db)` in one transaction, in one trip to aiosqlite's thread (where `work`
        runs, between BEGIN IMMEDIATE and COMMIT), and answer what it returns; rolled back if
        it raises. Committed (fsynced: synchronous=FULL) before this returns.

        It holds Tortoise's lock around the one connection (acquire_connection), so it never
        interleaves with Tortoise's own queries. tests/unit/test_db.py checks the contract
        with the pinned aiosqlite."""
        client = Tortoise.get_connection("default")
        async with client.acquire_connection() as connection:
            threaded = cast(aiosqlite.Connection, connection)
            # aiosqlite has no public way to run a function in its thread, nor (below) a
            # public handle on its sqlite3 connection: the one trip needs both.
            in_thread: Callable[[Callable[[], T]], Awaitable[T]] = threaded._execute

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
                return await in_thread(transaction)
            except (sqlite3.IntegrityError, sqlite3.OperationalError) as exc:
                raise translated(exc) from exc

    async def group_transaction(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """`transaction`, sharing the transaction and its COMMIT with the calls that arrive
        while another is running (models.backends.group_commit)."""
        try:
            return await self._group_commit.run(work)
        except (sqlite3.IntegrityError, sqlite3.OperationalError) as exc:
            raise translated(exc) from exc

    def _drive(self, db: sqlite3.Connection, script: Script[T]) -> T:
        """Run a transaction script in SQLite's thread, inside the transaction."""
        reply: Any = None
        while True:
            try:
                step = script.send(reply)
            except StopIteration as done:
                return cast(T, done.value)
            if isinstance(step, Select):
                reply = _select(db, step)
            else:
                for query, parameters in step:
                    db.execute(query, parameters)
                reply = None


def _select(db: sqlite3.Connection, select: Select) -> list[Any]:
    """A Select's rows, read as one row holding them as a JSON array: sqlite3 lets the GIL go
    for every row it steps to, and under load each time cost a wait for the event loop thread
    to give it back (docs/performance-log.md#sqlite-statements). Nothing to lock: SQLite
    serialises writers."""
    (rows,) = db.execute(_as_one_row(select), select.parameters).fetchone()
    return cast(list[Any], json.loads(rows))


def _as_one_row(select: Select) -> str:
    """`select` as a query answering one row: its rows as a JSON array of arrays."""
    return f"SELECT json_group_array(json_array({', '.join(select.columns)})) FROM ({select.sql})"


def translated(exc: BaseException) -> BaseException:
    """sqlite3's IntegrityError and OperationalError as Tortoise's, which the callers (and
    the 503 mapping, and ingestion's retry) know; any other exception as it is."""
    if isinstance(exc, sqlite3.IntegrityError):
        return IntegrityError(exc)
    if isinstance(exc, sqlite3.OperationalError):
        return OperationalError(exc)
    return exc


@functools.lru_cache(maxsize=1024)
def _parse_time(text: str) -> datetime:
    """Stored `2026-03-26 08:14:22.153000+00:00` text -> datetime; the events of a batch
    share their times, so most rows of a page hit the cache."""
    return datetime.fromisoformat(text)
