"""The storage backend interface: what differs between the databases the service runs on.

The domain modules (models.ingest, models.history, models.subscriptions) write their SQL
once, with `?` placeholders and transaction scripts (models.sql), and ask the open
database's backend (models.backends.current()) to run it; they never ask which database it
is. A feed's head is `feed.head` on every database, written in the same transaction as the
positions that move it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from tortoise import Tortoise
from tortoise.backends.base.client import BaseDBAsyncClient

from claims_realtime.models import sql
from claims_realtime.models.sql import Script, ScriptMaker, Select, Statement

if TYPE_CHECKING:
    from claims_realtime.models.routing import Routes

T = TypeVar("T")


class Backend(ABC):
    """One database's way of doing what the domain needs done."""

    #: The database's name, as Tortoise's connections report it (`capabilities.dialect`).
    name: ClassVar[str]
    #: DATABASE_URL schemes served by this backend.
    schemes: ClassVar[tuple[str, ...]]
    #: open_database applies pending migrations itself (the zero-setup embedded database)
    #: rather than refusing a database that lacks them.
    migrates_on_open: ClassVar[bool] = False
    #: Multi-row statements padded to a few fixed sizes (see models.sql.chunk_sizes).
    pad_statements: ClassVar[bool]
    #: The database's two-argument maximum, for forward-only updates.
    greatest: ClassVar[str]
    #: Routes kept from one transaction to the next (models.routing), set only where one
    #: connection makes every write that moves them; None: each transaction reads its own.
    kept_routes: Routes | None = None

    # -- connecting ------------------------------------------------------------------------

    @abstractmethod
    def connection_url(self, database_url: str, *, pool_size: int) -> str:
        """The URL Tortoise connects with: DATABASE_URL plus this backend's settings (a
        setting given in DATABASE_URL wins)."""

    def connection_config(self, database_url: str, *, pool_size: int) -> str | dict[str, Any]:
        """Tortoise's connection: the URL above, or its settings where a backend picks its
        own Tortoise client."""
        return self.connection_url(database_url, pool_size=pool_size)

    def prepare(self, database_url: str) -> None:
        """Get ready before the first connection (e.g. create a database file's directory)."""
        return None

    async def opened(self) -> None:
        """The database is open (Tortoise initialised, schema current): set up what else
        this backend needs."""
        return None

    async def close(self) -> None:
        """Release what opened() set up, before Tortoise closes its connections."""
        return None

    async def read(self, select: Select) -> list[Sequence[Any]]:
        """Rows of a read-only query outside any transaction (history for replay, pages and
        webhooks), as value sequences in `select.columns` order."""
        _, rows = await Tortoise.get_connection("default").execute_query(
            self.sql(select.sql), list(select.parameters)
        )
        return [tuple(row) for row in rows]

    @classmethod
    @abstractmethod
    def means_unavailable(cls, exc: BaseException) -> bool:
        """Whether this database's driver raised `exc` because the database cannot be reached
        or cannot take the work now (a class method: asked without an open database)."""

    # -- SQL text --------------------------------------------------------------------------

    def sql(self, query: str) -> str:
        """`query`, written with `?` placeholders, in the driver's parameter style."""
        return query

    def insert_statements(
        self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]
    ) -> list[Statement]:
        """INSERT many rows in a few statements (see models.sql.insert_statements)."""
        return sql.insert_statements(table, columns, rows, pad=self.pad_statements)

    def update_statements(
        self,
        table: str,
        column: str,
        values: Mapping[Any, int],
        *,
        also: Mapping[str, Any] | None = None,
        integer_ids: bool = False,
    ) -> list[Statement]:
        """Set an integer column per row id (see models.sql.update_statements)."""
        return sql.update_statements(
            table, column, values, pad=self.pad_statements, also=also, integer_ids=integer_ids
        )

    def advance_statements(
        self, table: str, columns: Sequence[str], values: Mapping[str, Sequence[int | None]]
    ) -> list[Statement]:
        """Move integer columns forward per row id (see models.sql.advance_statements)."""
        return sql.advance_statements(
            table, columns, values, greatest=self.greatest, pad=self.pad_statements
        )

    @abstractmethod
    def bind_time(self, moment: datetime) -> Any:
        """`moment` as a bound parameter of hand-written SQL, stored as the models'
        DatetimeFields store it."""

    @abstractmethod
    def read_time(self, value: Any) -> datetime:
        """A DatetimeField's value as hand-written SQL reads it back, as an aware datetime."""

    # -- transactions ----------------------------------------------------------------------

    @abstractmethod
    async def run(self, make: ScriptMaker[T], *args: Any, shared: bool = False) -> T:
        """Run the script `make(backend, *args)` in one transaction, committed before this
        returns, rolled back if the script raises; answer what it returns. With `shared`,
        the transaction may also hold concurrent callers' scripts (each rolled back alone if
        it fails) where that saves commits.

        The script is asked for by its maker, a module-level function, and arguments that
        pickle: a backend may run it in another process (SQLite's writer process), with that
        process's backend."""

    async def execute_in_transaction(
        self, statements: Sequence[Statement], *, shared: bool = False
    ) -> None:
        """Run statements, in order, in one transaction, committed before this returns."""
        await self.run(statements_script, list(statements), shared=shared)

    @abstractmethod
    def lock_rows(self, table: str, ids: Sequence[str]) -> list[Statement]:
        """Statements that lock rows by id, in id order, for the rest of the transaction:
        every transaction that updates several channel rows takes their locks this way first,
        as ingestion does, so that two of them never deadlock (empty where writers are
        serialised anyway)."""

    @abstractmethod
    async def lock_until_commit(self, connection: BaseDBAsyncClient, space: int, key: str) -> None:
        """Within `connection`'s transaction, wait for and hold a lock named (`space`, `key`)
        until the transaction ends: concurrent transactions naming the same key run one after
        the other."""

    def is_transient_conflict(self, exc: BaseException) -> bool:
        """Whether `exc`, or one of its causes, rolled back a transaction that is safe to try
        again as it was: a deadlock or a serialization failure (SQLSTATE 40P01, 40001, which
        asyncpg sets as `sqlstate`; SQLite raises neither)."""
        current: BaseException | None = exc
        while current is not None:
            if getattr(current, "sqlstate", None) in ("40P01", "40001"):
                return True
            current = current.__cause__ or current.__context__
        return False


def with_param(database_url: str, name: str, value: object) -> str:
    """`database_url` with the query parameter `name=value`, unless the URL sets it already."""
    if f"{name}=" in database_url:
        return database_url  # set explicitly in the URL: the URL wins
    return database_url + ("&" if "?" in database_url else "?") + f"{name}={value}"


def statements_script(backend: Backend, statements: list[Statement]) -> Script[None]:
    """The script that executes `statements`, in order (on any backend)."""
    yield statements
