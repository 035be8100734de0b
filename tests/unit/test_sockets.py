"""The transport between fan-out and the sessions (realtime.sockets): which one the server
chooses, and what each does with a packet and with a slow consumer."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from engineio import async_socket

from claims_realtime.realtime import fastpaths
from claims_realtime.realtime.engine import Wire
from claims_realtime.realtime.lean import LeanTransport
from claims_realtime.realtime.server import create_socket_server
from claims_realtime.realtime.sockets import (
    BACKLOGGED,
    GONE,
    QUEUED,
    WRITTEN,
    StockTransport,
)


class Session:
    """A stand-in for python-engineio's session socket."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[Any] = asyncio.Queue()
        self.closing = self.closed = False
        self.closes: list[dict[str, Any]] = []

    async def close(self, **kwargs: Any) -> None:
        self.closes.append(kwargs)
        self.closed = True


class Line:
    """A stand-in DirectLine: writes while `open`."""

    def __init__(self, open: bool) -> None:
        self.open = open
        self.written: list[str] = []

    def send(self, text: str) -> bool:
        if self.open:
            self.written.append(text)
        return self.open


# -- the choice ------------------------------------------------------------------------------


def test_the_lean_transport_when_the_engine_fast_path_matches_and_fast_paths_is_on() -> None:
    assert type(create_socket_server().transport) is LeanTransport


def test_the_stock_transport_when_fast_paths_is_off() -> None:
    server = create_socket_server(fast_paths=False)
    assert type(server.transport) is StockTransport
    assert server.eio.adopts_sockets  # our reader and writer still serve websockets


def test_the_stock_transport_on_another_python_engineio(monkeypatch: pytest.MonkeyPatch) -> None:
    real = fastpaths.installed_version
    monkeypatch.setattr(
        fastpaths,
        "installed_version",
        lambda name: "4.16.0" if name == "python-engineio" else real(name),
    )
    assert type(create_socket_server().transport) is StockTransport


def test_the_stock_transport_when_python_engineio_lacks_what_ours_relies_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delattr(async_socket.AsyncSocket, "_websocket_handler")
    assert type(create_socket_server().transport) is StockTransport


# -- sending ---------------------------------------------------------------------------------


async def test_the_lean_transport_writes_at_once_where_the_line_takes_it() -> None:
    server = create_socket_server()
    websocket, polling = Session(), Session()
    server.eio.sockets.update({"ws": websocket, "poll": polling})
    line = Line(open=True)
    server.eio.wires["ws"] = Wire(websocket, line)  # type: ignore[arg-type]
    transport = server.transport

    assert transport.send("ws", '2["a"]', 10) == WRITTEN
    assert line.written == ['2["a"]'] and websocket.queue.empty()
    line.open = False  # pushing back, or something is queued before it
    assert transport.send("ws", '2["b"]', 10) == QUEUED
    assert websocket.queue.get_nowait().data == '2["b"]'
    assert transport.send("poll", '2["c"]', 10) == QUEUED  # no wire: long-polling
    assert polling.queue.get_nowait().data == '2["c"]'
    assert transport.backlog("ws") == transport.backlog("poll") == 0


@pytest.mark.parametrize("fast_paths", [True, False])
async def test_a_full_queue_is_backlogged_and_a_closed_session_gone(fast_paths: bool) -> None:
    server = create_socket_server(fast_paths=fast_paths)
    session = Session()
    server.eio.sockets["s"] = session
    server.eio.wires["s"] = Wire(session, Line(open=False))  # type: ignore[arg-type]
    transport = server.transport

    assert [transport.send("s", "x", 2) for _ in range(3)] == [QUEUED, QUEUED, BACKLOGGED]
    assert transport.backlog("s") == 2
    session.closed = True
    assert transport.send("s", "x", 2) == GONE
    assert transport.send("unknown", "x", 2) == GONE
    assert transport.backlog("s") is None and transport.closing("s")


# -- dropping a slow consumer ----------------------------------------------------------------


@pytest.mark.parametrize("fast_paths", [True, False])
async def test_abort_cuts_a_websocket_our_reader_serves_with_either_transport(
    fast_paths: bool,
) -> None:
    """With FAST_PATHS off our reader and writer still serve websockets, and only they can
    end one whose peer stopped reading: the stock transport cuts it through the engine too."""
    server = create_socket_server(fast_paths=fast_paths)
    session = Session()
    server.eio.sockets["s"] = session
    wire = server.eio.wires["s"] = Wire(session, Line(open=False))  # type: ignore[arg-type]
    transport = server.transport
    for _ in range(3):
        transport.send("s", "x", 10)

    with pytest.raises(TimeoutError):
        async with asyncio.timeout(60) as deadline:  # the reader's heartbeat deadline
            wire.deadline = deadline
            assert not transport.closing("s")
            assert transport.abort("s") == 3
            assert transport.closing("s")  # already going: not dropped twice
            await asyncio.sleep(30)
    assert wire.aborted and wire.line is None and session.queue.empty()
    await asyncio.sleep(0)
    assert session.closes == [
        {"wait": False, "abort": True, "reason": server.eio.reason.TRANSPORT_ERROR}
    ]
    assert transport.closing("s")


async def test_abort_of_a_session_our_reader_does_not_serve_closes_it() -> None:
    server = create_socket_server()
    session = Session()
    server.eio.sockets["poll"] = session
    session.queue.put_nowait("x")
    assert server.transport.abort("poll") == 1
    await asyncio.sleep(0)
    assert session.queue.empty() and len(session.closes) == 1
