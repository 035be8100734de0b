"""Which errors mean "the database is unavailable" (503) rather than a fault of ours (500)."""

from __future__ import annotations

import sqlite3

import asyncpg
import pytest
from tortoise.exceptions import DBConnectionError, IntegrityError, OperationalError

from claims_realtime.models.db import database_unavailable
from claims_realtime.models.errors import Unavailable


def chained(outer: BaseException, cause: BaseException) -> BaseException:
    try:
        try:
            raise cause
        except BaseException:
            raise outer  # noqa: B904 - implicit context, as a failing rollback has
    except BaseException as exc:
        return exc


@pytest.mark.parametrize(
    "error",
    [
        ConnectionRefusedError(111, "Connection refused"),
        ConnectionResetError(104, "Connection reset by peer"),
        TimeoutError(),
        DBConnectionError("Can't establish connection"),
        asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
        asyncpg.CannotConnectNowError("the database system is starting up"),
        asyncpg.AdminShutdownError("terminating connection due to administrator command"),
        asyncpg.TooManyConnectionsError("sorry, too many clients already"),
        asyncpg.InterfaceError("connection is closed"),
        OperationalError("database is locked"),
        sqlite3.OperationalError("database is locked"),
        chained(asyncpg.InterfaceError("cannot rollback"), ConnectionResetError()),
    ],
)
def test_unavailable(error: BaseException) -> None:
    problem = database_unavailable(error)
    assert isinstance(problem, Unavailable)
    assert problem.status == 503 and problem.checks == {"database": "unavailable"}


@pytest.mark.parametrize(
    "error",
    [
        ValueError("bad"),
        IntegrityError("duplicate key value violates unique constraint"),
        OperationalError("no such column: nope"),
        asyncpg.InterfaceError("cannot perform operation: another operation is in progress"),
        asyncpg.UndefinedTableError("relation does not exist"),
    ],
)
def test_not_unavailable(error: BaseException) -> None:
    assert database_unavailable(error) is None
