"""How fan-out reaches the Engine.IO sessions: the `Transport` interface, and python-engineio's
stock implementation of it.

Fan-out (realtime.fanout) decides what each socket gets and in which order; a `Transport`
puts one text packet on one session, says how much is still queued there, and drops a
session that stopped reading. Two implementations, chosen once when the Socket.IO server is
built (realtime.server.choose_transport):

    StockTransport   every packet on the session's queue: python-engineio's writer, ours
                     (realtime.engine) or the next long-poll sends it
    LeanTransport    (realtime.lean) a websocket that our writer serves is written at once
                     through its DirectLine while nothing is queued; everything else as stock

Either way the queue is bounded by the caller's `max_backlog`, not by python-engineio.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Final, Protocol

from engineio import packet as eio_packet

#: What became of a packet given to `Transport.send`: written to the connection now, put on
#: the session's queue, not sent because the session is gone or closed, or not sent because
#: `max_backlog` packets are still unsent there (the caller then drops the session).
WRITTEN: Final = 0
QUEUED: Final = 1
GONE: Final = 2
BACKLOGGED: Final = 3


class Transport(Protocol):
    """Fan-out's view of the sessions, by Engine.IO sid (and Socket.IO sid for `disconnect`)."""

    def send(self, eio_sid: str, text: str, max_backlog: int) -> int:
        """Send Socket.IO packet `text` as an Engine.IO MESSAGE, without awaiting:
        WRITTEN, QUEUED, GONE or BACKLOGGED."""
        ...

    def backlog(self, eio_sid: str) -> int | None:
        """Packets queued for the session and not yet sent; None when it is gone or closed."""
        ...

    def closing(self, eio_sid: str) -> bool:
        """True when the session is gone, closing, or already aborted."""
        ...

    def abort(self, eio_sid: str) -> int:
        """Drop the session (a slow consumer): its connection is cut, its queue emptied, and
        it is closed in the background. Answers how many packets were left unsent."""
        ...

    async def disconnect(self, sid: str, namespace: str) -> None:
        """Disconnect Socket.IO socket `sid` from `namespace` (python-socketio's disconnect)."""
        ...


def _no_cut(eio_sid: str) -> None:
    pass


class StockTransport:
    """python-engineio's own path: every packet goes on the session's queue.

    `sio` is the Socket.IO server. `cut(eio_sid)` ends a session's websocket at once, as far
    as the code serving it can (realtime.engine's reader can; python-engineio's handler and
    long-polling cannot): a writer stuck on a peer that does not read never sees a close.
    """

    def __init__(self, sio: Any, cut: Callable[[str], None] = _no_cut) -> None:
        self._sio = sio
        #: python-engineio's table of sessions (the same dict for the server's lifetime).
        self._sockets: dict[str, Any] = sio.eio.sockets
        self._cut = cut
        #: Sessions aborted whose close has not finished yet.
        self._aborting: set[str] = set()

    def send(self, eio_sid: str, text: str, max_backlog: int) -> int:
        socket = self._sockets.get(eio_sid)
        if socket is None or socket.closed:
            return GONE
        queue = socket.queue
        if queue.qsize() >= max_backlog:
            return BACKLOGGED
        queue.put_nowait(eio_packet.Packet(eio_packet.MESSAGE, data=text))
        return QUEUED

    def backlog(self, eio_sid: str) -> int | None:
        socket = self._sockets.get(eio_sid)
        if socket is None or socket.closed:
            return None
        size: int = socket.queue.qsize()
        return size

    def closing(self, eio_sid: str) -> bool:
        socket = self._sockets.get(eio_sid)
        return socket is None or socket.closing or socket.closed or eio_sid in self._aborting

    def abort(self, eio_sid: str) -> int:
        socket = self._sockets.get(eio_sid)
        if socket is None:
            return 0
        self._aborting.add(eio_sid)
        self._cut(eio_sid)
        # What the client would never read is not kept.
        queue = socket.queue
        unsent: int = queue.qsize()
        while not queue.empty():
            queue.get_nowait()
            queue.task_done()
        asyncio.get_running_loop().create_task(self._close(eio_sid, socket))
        return unsent

    async def _close(self, eio_sid: str, socket: Any) -> None:
        # Closing the Engine.IO session (the cut websocket does it too; polling needs it)
        # disconnects its namespaces, whose detach writes positions back.
        try:
            await socket.close(wait=False, abort=True, reason=self._sio.eio.reason.TRANSPORT_ERROR)
        finally:
            self._aborting.discard(eio_sid)

    async def disconnect(self, sid: str, namespace: str) -> None:
        await self._sio.disconnect(sid, namespace=namespace)
