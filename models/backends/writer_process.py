"""The writer process (models.backends.writer): `python -m` this module with the socket's
file descriptor, the database file and its pragmas (`name=value`). It runs until the server
closes its end of the socket."""

from __future__ import annotations

import functools
import signal
import socket
import sqlite3
import sys
from collections.abc import Mapping
from typing import Any

from claims_realtime.models.backends import use
from claims_realtime.models.backends.checkpoints import Checkpointer
from claims_realtime.models.backends.group_commit import Work, run_group
from claims_realtime.models.backends.sqlite import SQLiteBackend, drive, in_transaction
from claims_realtime.models.backends.writer import error_parts, frame, frames
from claims_realtime.models.routing import Routes, marked_keeps_routes
from claims_realtime.models.sql import ScriptMaker

Call = tuple[int, ScriptMaker[Any], tuple[Any, ...]]


class _Calls:
    """Calls read off the socket: waits for the first, then takes every whole one in."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._buffer = bytearray()

    def next_group(self) -> list[Call] | None:
        """The calls to run together next; None once the server closed its end."""
        calls = frames(self._buffer)
        while not calls:
            chunk = self._sock.recv(1 << 20)
            if not chunk:
                return None
            self._buffer += chunk
            calls = frames(self._buffer)
        self._sock.setblocking(False)
        try:
            while chunk := self._sock.recv(1 << 20):
                self._buffer += chunk
        except BlockingIOError:
            pass
        finally:
            self._sock.setblocking(True)
        return calls + frames(self._buffer)


def serve(sock: socket.socket, path: str, pragmas: Mapping[str, str]) -> None:
    db = sqlite3.connect(path, isolation_level=None)
    for name, value in pragmas.items():
        db.execute(f"PRAGMA {name}={value}")
    # Checkpoints by a thread of ours, not inside a commit (models.backends.checkpoints).
    db.execute("PRAGMA wal_autocheckpoint=0")
    checkpointer = Checkpointer(path, pragmas)
    try:
        _serve(sock, db, checkpointer)
    finally:
        checkpointer.close()


def _serve(sock: socket.socket, db: sqlite3.Connection, checkpointer: Checkpointer) -> None:
    # The scripts ask their backend for SQL and bound values, and the domain for current().
    # This connection makes every write of ingestion's: its routes can be kept.
    backend = SQLiteBackend()
    routes = backend.kept_routes = Routes()
    use(backend)
    sock.sendall(frame("ready"))
    calls = _Calls(sock)
    while (group := calls.next_group()) is not None:
        works = [_work(backend, routes, make, args) for _, make, args in group]
        try:
            outcomes = in_transaction(db, functools.partial(_run, works=works, routes=routes))
        except Exception as exc:  # the transaction itself failed: nothing of it stored
            routes.clear()  # nor the heads it moved
            outcomes = [(False, exc)] * len(group)
        sock.sendall(
            b"".join(
                _reply(call, ok, value)
                for (call, _, _), (ok, value) in zip(group, outcomes, strict=True)
            )
        )
        checkpointer.after_answering(db)


def _run(db: sqlite3.Connection, works: list[Work], routes: Routes) -> list[tuple[bool, Any]]:
    # Another connection's commit (a channel created, closed or reopened through Tortoise)
    # may have changed the routes: SQLite counts those commits in data_version. Read under
    # this transaction's write lock, so none can come before it ends.
    (version,) = db.execute("PRAGMA data_version").fetchone()
    routes.still_valid(version)
    return run_group(db, works)


def _work(
    backend: SQLiteBackend, routes: Routes, make: ScriptMaker[Any], args: tuple[Any, ...]
) -> Work:
    def work(db: sqlite3.Connection) -> Any:
        try:
            value = drive(db, make(backend, *args))
        except BaseException:
            routes.clear()  # its rollback undoes heads it may have moved
            raise
        if not marked_keeps_routes(make):
            routes.clear()
        return value

    return work


def _reply(call: int, ok: bool, value: Any) -> bytes:
    try:
        return frame((call, ok, value if ok else error_parts(value)))
    except Exception as exc:  # a value or error that does not pickle: say what it was
        failure = RuntimeError(f"the writer process could not send back {value!r}: {exc}")
        return frame((call, False, error_parts(failure)))


if __name__ == "__main__":
    # Ctrl-C reaches the whole process group: the server stops this process itself, once
    # what it was sent is committed and answered.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    fd, database, *settings = sys.argv[1:]
    with socket.socket(fileno=int(fd)) as connection:
        try:
            serve(connection, database, dict(s.split("=", 1) for s in settings))
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server is gone: nobody to answer
