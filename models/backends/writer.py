"""SQLite's write transactions in a process of their own: the server's side.

In the server's process a transaction ran in aiosqlite's thread, and sqlite3 lets the GIL go
around every statement: under load each statement then waited for the busy event loop to
give it back, and the script's own Python took turns with the loop's (docs/benchmarks.md,
"where the cost and the tail come from"). The writer process (models.backends.writer_process)
has its own interpreter and its own connection to the same file; SQLite's locks keep one
writer at a time across both, and the server's own Tortoise transactions begin IMMEDIATE
(models.backends.sqlite_client) so that they wait for it rather than fail.

A call is a transaction script's maker and arguments (models.sql.ScriptMaker), pickled over a
socket pair: (call id, maker, args) in, (call id, ok, value or error) out, each a
length-prefixed pickle. The child runs the calls waiting when it is free in one transaction
(each in its own savepoint), commits (fsync) and only then answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import pickle
import socket
import sqlite3
import struct
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from claims_realtime.models.sql import ScriptMaker

_LENGTH = struct.Struct("!I")
#: How long a stopping writer may take to finish its transaction and exit.
_STOP_SECONDS = 30
#: An error as it crosses: its type, args and attributes (domain errors' __init__ takes other
#: arguments than their args, so pickling the exception itself would not rebuild them).
ErrorParts = tuple[type[BaseException], tuple[Any, ...], dict[str, Any]]


class WriterExited(sqlite3.OperationalError):
    """The writer process is gone: the call's transaction may not have committed, and if it
    did nobody was told. SQLite's 'unable to open database' text: answered 503."""

    def __init__(self) -> None:
        super().__init__("unable to open database: the SQLite writer process exited")


def frame(message: object) -> bytes:
    body = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return _LENGTH.pack(len(body)) + body


def error_parts(exc: BaseException) -> ErrorParts:
    return type(exc), exc.args, dict(getattr(exc, "__dict__", {}))


def rebuilt_error(parts: ErrorParts) -> BaseException:
    kind, args, attributes = parts
    exc = kind.__new__(kind)
    exc.args = args
    exc.__dict__.update(attributes)
    return exc


def frames(buffer: bytearray) -> list[Any]:
    """The whole messages at the front of `buffer`, taken off it."""
    messages, offset = [], 0
    while len(buffer) - offset >= _LENGTH.size:
        (length,) = _LENGTH.unpack_from(buffer, offset)
        end = offset + _LENGTH.size + length
        if end > len(buffer):
            break
        messages.append(pickle.loads(buffer[offset + _LENGTH.size : end]))
        offset = end
    del buffer[:offset]
    return messages


class Writer:
    """A running writer process on one database file."""

    def __init__(
        self,
        process: subprocess.Popen[bytes],
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        self._process = process
        self._reader = reader
        self._writer = writer
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._replies = asyncio.get_running_loop().create_task(self._read_replies())

    @classmethod
    async def start(cls, path: Path, pragmas: Mapping[str, object]) -> Writer:
        """Start a writer process on `path`, its connection set with `pragmas`; answer once
        it has the database open."""
        ours, theirs = socket.socketpair()
        with theirs:
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "claims_realtime.models.backends.writer_process",
                    str(theirs.fileno()),
                    str(path),
                    *(f"{name}={value}" for name, value in pragmas.items()),
                ],
                pass_fds=(theirs.fileno(),),
            )
        reader, writer = await asyncio.open_connection(sock=ours)
        try:
            (length,) = _LENGTH.unpack(await reader.readexactly(_LENGTH.size))
            ready = pickle.loads(await reader.readexactly(length))
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            writer.close()
            await asyncio.to_thread(_stop, process)
            raise WriterExited() from exc
        assert ready == "ready", ready
        return cls(process, reader, writer)

    @property
    def alive(self) -> bool:
        return not self._replies.done() and self._process.poll() is None

    async def run(self, make: ScriptMaker[Any], args: tuple[Any, ...]) -> Any:
        """The value of the script `make(backend, *args)`, run by the writer process in a
        transaction committed before this returns; its error if it raised (nothing of it
        stored); WriterExited if the process is gone."""
        if not self.alive:
            raise WriterExited()
        call = next(self._ids)
        future = asyncio.get_running_loop().create_future()
        self._pending[call] = future
        try:
            self._writer.write(frame((call, make, args)))
            return await future
        finally:
            self._pending.pop(call, None)

    async def _read_replies(self) -> None:
        buffer = bytearray()
        try:
            while chunk := await self._reader.read(1 << 20):
                buffer += chunk
                for call, ok, value in frames(buffer):
                    future = self._pending.get(call)
                    if future is None or future.done():
                        continue  # its caller went away: what it wrote stands
                    if ok:
                        future.set_result(value)
                    else:
                        future.set_exception(rebuilt_error(value))
        except ConnectionError:
            pass
        finally:
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(WriterExited())

    async def close(self) -> None:
        """Stop the process once it has answered what it was sent: it stops at the end of
        its input."""
        with contextlib.suppress(OSError):
            self._writer.write_eof()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._replies), timeout=_STOP_SECONDS)
        self._writer.close()
        await asyncio.to_thread(_stop, self._process)
        self._replies.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._replies


def _stop(process: subprocess.Popen[bytes]) -> None:
    try:
        process.wait(timeout=_STOP_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
