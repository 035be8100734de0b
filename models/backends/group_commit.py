"""Group commit on SQLite: concurrent write transactions share one COMMIT.

SQLite has one writer at a time, and every COMMIT (synchronous=FULL) appends the pages the
transaction touched to the WAL and fsyncs it. An ingestion touches the rows of every channel
its events reach (each organisation event reaches many), so one-event transactions each
rewrote the same pages of the channel table, and their COMMITs kept SQLite's thread busy
(docs/performance-log.md).

Here (an in-memory database, whose writes run in aiosqlite's thread; the writer process groups
a database file's calls the same way, with `run_group`) a caller's work waits while a
transaction is running, and every call that arrived meanwhile runs in the next transaction
together, each inside its own SAVEPOINT: one call's
error rolls back that call's writes only, and it alone gets the exception; the others commit.
Nobody is answered before the shared COMMIT returns (durable, as before). What SQLite itself
refuses at COMMIT (a full disk, an I/O error) fails every call of the group: none was stored.
"""

from __future__ import annotations

import asyncio
import functools
import sqlite3
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar, cast

T = TypeVar("T")
Work = Callable[[sqlite3.Connection], Any]


class Transactions(Protocol):
    """What runs a group: `transaction(work)` runs `work(db)` in one SQLite transaction, in
    the database's thread (models.backends.sqlite.SQLiteBackend.transaction)."""

    async def transaction(self, work: Callable[[sqlite3.Connection], T]) -> T: ...


@dataclass
class _Queue:
    """Calls waiting for the next transaction of one event loop."""

    waiting: list[tuple[Work, asyncio.Future[Any]]] = field(default_factory=list)
    running: bool = False


class GroupCommit:
    """The group commit of one SQLite database: one queue of calls per event loop."""

    def __init__(self, transactions: Transactions) -> None:
        # Asked for its `transaction` per group, not bound once: a test may wrap it.
        self._transactions = transactions
        self._queues: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Queue] = (
            weakref.WeakKeyDictionary()
        )

    async def run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run `work(db)` as `transactions.transaction` does, sharing the transaction and
        its COMMIT with the calls that arrive while another is running. A call's own error
        reaches it as sqlite3 raised it."""
        loop = asyncio.get_running_loop()
        queue = self._queues.setdefault(loop, _Queue())
        future: asyncio.Future[Any] = loop.create_future()
        queue.waiting.append((work, future))
        if not queue.running:
            queue.running = True
            loop.create_task(self._drain(queue))
        return cast(T, await future)

    async def _drain(self, queue: _Queue) -> None:
        try:
            while queue.waiting:
                group, queue.waiting = queue.waiting, []
                group = [(work, future) for work, future in group if not future.done()]
                if not group:
                    continue  # every caller went away before its turn: nothing to write
                try:
                    outcomes = await self._transactions.transaction(
                        functools.partial(run_group, works=[work for work, _ in group])
                    )
                except BaseException as exc:  # the transaction itself failed: nothing stored
                    for _, future in group:
                        if not future.done():
                            future.set_exception(exc)
                    if isinstance(exc, asyncio.CancelledError):
                        raise
                    continue
                for (_, future), (ok, value) in zip(group, outcomes, strict=True):
                    if future.done():  # its caller went away (cancelled): the writes stand
                        continue
                    if ok:
                        future.set_result(value)
                    else:
                        future.set_exception(value)
        finally:
            queue.running = False
            for _, future in queue.waiting:  # only when cancelled (the loop is shutting down)
                if not future.done():
                    future.cancel()
            queue.waiting = []


def run_group(db: sqlite3.Connection, works: list[Work]) -> list[tuple[bool, Any]]:
    """Inside the transaction, where it runs (the writer process, or aiosqlite's thread):
    each call in a savepoint of its own; answer (True, its value) or (False, its error) per
    call.

    A call alone in its transaction needs none: if it fails, the transaction is rolled back
    and the error reaches that call (through `_drain`), as from its savepoint. Two
    statements fewer, and on SQLite each is a wait for the GIL under load (models.sql)."""
    if len(works) == 1:
        return [(True, works[0](db))]
    outcomes: list[tuple[bool, Any]] = []
    for work in works:
        db.execute("SAVEPOINT call")
        try:
            value = work(db)
        except Exception as exc:
            if not db.in_transaction:
                raise  # SQLite abandoned the whole transaction: the group fails
            db.execute("ROLLBACK TO call")
            db.execute("RELEASE call")
            outcomes.append((False, exc))
        else:
            db.execute("RELEASE call")
            outcomes.append((True, value))
    return outcomes
