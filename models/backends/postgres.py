"""PostgreSQL, for scale: a pool of asyncpg connections shared by several server processes,
row locks taken in id order, and transactions retried after a deadlock."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, ClassVar, TypeVar, cast

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.transactions import in_transaction

from claims_realtime.models.backends.base import Backend, with_param
from claims_realtime.models.fields import db_time
from claims_realtime.models.sql import (
    ScriptMaker,
    Select,
    Statement,
    padded,
)

T = TypeVar("T")


class PostgresBackend(Backend):
    """PostgreSQL through Tortoise's asyncpg client: each statement a round trip."""

    name: ClassVar[str] = "postgres"
    # "postgresql" is libpq's own scheme, the one most platforms hand out; Tortoise takes all three.
    schemes: ClassVar[tuple[str, ...]] = ("postgres", "postgresql", "asyncpg")
    # Exact sizes, no padding: PostgreSQL infers a parameter's type from an INSERT's target
    # column, not through a padded SELECT.
    pad_statements = False
    greatest = "GREATEST"

    def connection_url(self, database_url: str, *, pool_size: int) -> str:
        return with_param(with_param(database_url, "maxsize", pool_size), "minsize", 1)

    @classmethod
    def means_unavailable(cls, exc: BaseException) -> bool:
        import asyncpg

        # SQLSTATE class 08 (connection), 53 (resources, e.g. too many connections) and
        # 57 (operator intervention: shutdown, "the database system is starting up").
        down = (
            asyncpg.PostgresConnectionError,
            asyncpg.InsufficientResourcesError,
            asyncpg.OperatorInterventionError,
        )
        if isinstance(exc, down):
            return True
        # "connection is closed", "pool is closed"
        return isinstance(exc, asyncpg.InterfaceError) and "closed" in str(exc)

    # -- SQL text --------------------------------------------------------------------------

    def sql(self, query: str) -> str:
        parts = query.split("?")
        return parts[0] + "".join(f"${i}{part}" for i, part in enumerate(parts[1:], start=1))

    def bind_time(self, moment: datetime) -> Any:
        return db_time(moment)

    def read_time(self, value: Any) -> datetime:
        return value  # type: ignore[no-any-return]  # asyncpg answers timestamptz as datetime

    # -- transactions ----------------------------------------------------------------------

    async def run(self, make: ScriptMaker[T], *args: Any, shared: bool = False) -> T:
        # (`shared` saves nothing here: commits of concurrent connections do not queue.)
        script = make(self, *args)
        async with in_transaction() as connection:
            reply: Any = None
            while True:
                try:
                    step = script.send(reply)
                except StopIteration as done:
                    return cast(T, done.value)
                if isinstance(step, Select):
                    reply = await self._select(connection, step)
                else:
                    for query, parameters in step:
                        await connection.execute_query(self.sql(query), parameters)
                    reply = None

    async def _select(self, connection: BaseDBAsyncClient, select: Select) -> list[Any]:
        query = select.sql + (" FOR UPDATE" if select.lock else "")
        _, rows = await connection.execute_query(self.sql(query), select.parameters)
        # asyncpg's Record gives its values in the query's column order.
        return [tuple(row.values()) for row in rows]

    def lock_rows(self, table: str, ids: Sequence[str]) -> list[Statement]:
        """`SELECT ... ORDER BY id FOR UPDATE`. Seen under load before every writer did this:
        the positions flush, whose UPDATE ... FROM VALUES locks rows in join order, deadlocked
        against ingestion, and PostgreSQL aborted one of them."""
        values = padded(sorted(ids))
        placeholders = ", ".join("?" * len(values))
        query = f"SELECT id FROM {table} WHERE id IN ({placeholders}) ORDER BY id FOR UPDATE"
        return [(query, values)]

    async def lock_until_commit(self, connection: BaseDBAsyncClient, space: int, key: str) -> None:
        await connection.execute_query(
            "SELECT pg_advisory_xact_lock($1, hashtext($2))", [space, key]
        )
