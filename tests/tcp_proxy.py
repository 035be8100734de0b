"""A TCP proxy to put between a server process and PostgreSQL, and cut at will.

    with TcpProxy("127.0.0.1", 5432) as proxy:   # listens on 127.0.0.1:proxy.port
        proxy.cut()       # close every connection and refuse new ones: the database is "down"
        proxy.restore()   # accept again, on the same port

It runs its own event loop in a thread, so that synchronous code (tests/server.py's start(),
which polls the server until it is up) and async tests can both drive it. The machine's
PostgreSQL is never touched: others use it.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from types import TracebackType

from tests.server import free_port


class TcpProxy:
    """Forwards 127.0.0.1:`port` to `target_host`:`target_port`."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        #: Connections accepted since the start (each restore adds to it).
        self.accepted = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    # -- control (from any thread but the proxy's) -------------------------------------------

    def start(self) -> None:
        self._thread.start()
        self._call(self._listen())

    def cut(self) -> None:
        """Refuse new connections and reset every open one, as a database crash would."""
        self._call(self._cut())

    def restore(self) -> None:
        self._call(self._listen())

    def close(self) -> None:
        if self._thread.is_alive():
            self._call(self._cut())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
        self._loop.close()

    def __enter__(self) -> TcpProxy:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _call(self, coroutine: object) -> None:
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)  # type: ignore[arg-type]
        future.result(10)

    # -- in the proxy's loop -----------------------------------------------------------------

    async def _listen(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(
                self._accept, "127.0.0.1", self.port, reuse_address=True
            )

    async def _cut(self) -> None:
        if self._server is not None:
            self._server.close()  # refuse new connections
        for writer in list(self._writers):
            writer.transport.abort()  # a reset, not a polite close
        self._writers.clear()
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def _accept(
        self, client_reader: asyncio.StreamReader, client: asyncio.StreamWriter
    ) -> None:
        self.accepted += 1
        try:
            upstream_reader, upstream = await asyncio.open_connection(*self.target)
        except OSError:
            client.transport.abort()
            return
        self._writers |= {client, upstream}
        await asyncio.gather(
            self._pipe(client_reader, upstream), self._pipe(upstream_reader, client)
        )
        self._writers -= {client, upstream}

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.transport.abort()
