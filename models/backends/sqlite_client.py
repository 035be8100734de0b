"""Tortoise's SQLite client (engine `claims_realtime.models.backends.sqlite_client`), its
transactions begun with BEGIN IMMEDIATE.

Tortoise begins a transaction with a plain BEGIN, which takes SQLite's write lock at the
first write. Since write transactions also run in the writer process (a second connection,
models.backends.writer), a transaction that reads and then writes would fail at once with
"database is locked" whenever the writer committed in between: its snapshot is older than the
database, and SQLite does not let it wait. BEGIN IMMEDIATE takes the lock first, waiting for
it up to busy_timeout, and then reads what is current.
"""

from __future__ import annotations

import sqlite3

from tortoise.backends.base.client import TransactionContext
from tortoise.backends.sqlite import client as tortoise_sqlite
from tortoise.exceptions import OperationalError


class _ImmediateTransaction(tortoise_sqlite.SqliteTransactionWrapper):
    async def begin(self) -> None:
        try:
            await self._connection.commit()
            await self._connection.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:  # locked past busy_timeout: unavailable (503)
            raise OperationalError(exc) from exc


class SqliteClient(tortoise_sqlite.SqliteClient):
    def _in_transaction(self) -> TransactionContext:
        return tortoise_sqlite.SqliteTransactionContext(_ImmediateTransaction(self), self._lock)


client_class = SqliteClient
