"""SQLite, the embedded zero-setup database: one writer at a time. A database file's write
transactions run in the writer process (models.backends.writer), an in-memory one's in one
trip to aiosqlite's thread; concurrent transactions share their COMMITs (group commit)."""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import sqlite3
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar, TypeVar, cast

import aiosqlite
from tortoise import Tortoise
from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.backends.base.config_generator import expand_db_url
from tortoise.exceptions import IntegrityError, OperationalError

from claims_realtime.models.backends.base import Backend, with_param
from claims_realtime.models.backends.group_commit import GroupCommit
from claims_realtime.models.backends.writer import Writer
from claims_realtime.models.fields import db_time
from claims_realtime.models.sql import Script, ScriptMaker, Select, Statement

T = TypeVar("T")

log = logging.getLogger(__name__)

#: SQLite settings of the service's connection (Tortoise runs `PRAGMA name=value` for each
#: URL parameter; one given in DATABASE_URL wins).
SQLITE_PRAGMAS: dict[str, object] = {
    # fsync every commit: an event is durable before the API says 202.
    "synchronous": "FULL",
    # Wait for a lock rather than failing when a second process (e.g. `migrate`) holds it.
    "busy_timeout": 5000,
    # 16 MiB: each event writes its feed's newest index page, and a thousand busy feeds'
    # pages outgrow the 2 MiB default. Not more: every COMMIT that split a page scans the
    # whole cache (docs/architecture.md, "SQLite 3"), so a bigger one costs every commit.
    "cache_size": -16384,
    # Copy the WAL back into the database every 8,000 pages (32 MiB) rather than 1,000: a
    # page rewritten by many commits is copied once per checkpoint (an organisation event
    # writes so many pages that the default checkpointed after nearly every commit). The
    # writer process turns it off on its connection and checkpoints in a thread
    # (models.backends.checkpoints); it stays for the server's own connections.
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
    whole, between BEGIN IMMEDIATE and COMMIT, in the writer process (a database file) or in
    aiosqlite's thread (in memory).
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
        #: Where a database file's transaction scripts run (None: in memory, in-thread).
        self._writer: Writer | None = None
        self._pragmas: dict[str, object] = {}
        self._starting = asyncio.Lock()

    def connection_url(self, database_url: str, *, pool_size: int) -> str:
        for name, value in SQLITE_PRAGMAS.items():
            database_url = with_param(database_url, name, value)
        return database_url

    def connection_config(self, database_url: str, *, pool_size: int) -> str | dict[str, Any]:
        # Tortoise's SQLite client, its transactions begun IMMEDIATE (the engine's docstring).
        config = expand_db_url(self.connection_url(database_url, pool_size=pool_size))
        config["engine"] = "claims_realtime.models.backends.sqlite_client"
        return config

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
        # The writer's connection gets the settings Tortoise's has (DATABASE_URL's included).
        self._pragmas = dict(getattr(Tortoise.get_connection("default"), "pragmas", {}))
        self._writer = await Writer.start(self._path, self._pragmas)

    async def close(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            await writer.close()
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
        call per row (an organisation event has a hundred), where the script runs."""
        value = db_time(moment)
        adapt = sqlite3.adapters.get((type(value), sqlite3.PrepareProtocol))
        return adapt(value) if adapt is not None else value

    def read_time(self, value: Any) -> datetime:
        return _parse_time(value)

    # -- transactions ----------------------------------------------------------------------

    async def run(self, make: ScriptMaker[T], *args: Any, shared: bool = False) -> T:
        if self._path is not None:
            # Every call shares the writer's transactions: it runs them one after another.
            try:
                return cast(T, await (await self._live_writer()).run(make, args))
            except (sqlite3.IntegrityError, sqlite3.OperationalError) as exc:
                raise translated(exc) from exc
        script = make(self, *args)

        def work(db: sqlite3.Connection) -> T:
            return drive(db, script)

        return await (self.group_transaction(work) if shared else self.transaction(work))

    async def _live_writer(self) -> Writer:
        """The writer process, started again if it exited (the calls it had failed as
        unavailable: none of them committed, or none was told so)."""
        writer = self._writer
        if writer is not None and writer.alive:
            return writer
        async with self._starting:
            if self._writer is None or not self._writer.alive:
                if self._path is None or self._writer is None:
                    raise OperationalError("unable to open database: the database is closed")
                log.error("the SQLite writer process exited; starting another")
                await self._writer.close()
                self._writer = await Writer.start(self._path, self._pragmas)
            return self._writer

    def lock_rows(self, table: str, ids: Sequence[str]) -> list[Statement]:
        return []  # one writer at a time: nothing to order

    async def lock_until_commit(self, connection: BaseDBAsyncClient, space: int, key: str) -> None:
        return None  # every write transaction holds SQLite's one write lock from its BEGIN

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

            try:
                return await in_thread(functools.partial(in_transaction, threaded._conn, work))
            except (sqlite3.IntegrityError, sqlite3.OperationalError) as exc:
                raise translated(exc) from exc

    async def group_transaction(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """`transaction`, sharing the transaction and its COMMIT with the calls that arrive
        while another is running (models.backends.group_commit)."""
        try:
            return await self._group_commit.run(work)
        except (sqlite3.IntegrityError, sqlite3.OperationalError) as exc:
            raise translated(exc) from exc


def in_transaction(db: sqlite3.Connection, work: Callable[[sqlite3.Connection], T]) -> T:
    """`work(db)` between BEGIN IMMEDIATE and COMMIT, rolled back if it raises."""
    db.execute("BEGIN IMMEDIATE")
    try:
        result = work(db)
    except BaseException:
        if db.in_transaction:  # SQLite ends it itself on some errors
            db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
    return result


def drive(db: sqlite3.Connection, script: Script[T]) -> T:
    """Run a transaction script on `db`, inside the transaction."""
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
