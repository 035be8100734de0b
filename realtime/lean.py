"""The lean `Transport` (realtime.sockets): a websocket served by our reader and writer
(realtime.engine) is written at once through its `DirectLine` while nothing is queued
before the packet and the connection is not pushing back; otherwise, and for every session
our writer does not serve (long-polling, a polling session still upgrading), the packet
takes the stock path: the session's queue.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from engineio import packet as eio_packet

from claims_realtime.realtime.engine import Wire
from claims_realtime.realtime.sockets import BACKLOGGED, GONE, QUEUED, WRITTEN, StockTransport


class LeanTransport(StockTransport):
    """`StockTransport`, with direct writes to the websockets in `wires` (the engine server's
    table of the websockets it serves, kept by realtime.engine)."""

    def __init__(self, sio: Any, wires: dict[str, Wire], cut: Callable[[str], None]) -> None:
        super().__init__(sio, cut)
        self._wires = wires

    def send(self, eio_sid: str, text: str, max_backlog: int) -> int:
        wire = self._wires.get(eio_sid)
        if wire is None:  # not a websocket our writer serves: the stock path
            return StockTransport.send(self, eio_sid, text, max_backlog)
        # A served session is in python-engineio's table until it is closed: its own
        # `closed` is the stock path's check.
        socket = wire.socket
        if socket.closed:
            return GONE
        line = wire.line
        if line is not None and line.send(text):
            return WRITTEN
        queue = socket.queue
        if queue.qsize() >= max_backlog:
            return BACKLOGGED
        queue.put_nowait(eio_packet.Packet(eio_packet.MESSAGE, data=text))
        return QUEUED
